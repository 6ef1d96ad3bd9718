//! Partitioned tables from the config: the spec is in the metadata, data files are split by
//! partition with their values in the manifests (checked by filtered scans, which prune by
//! them), and position deletes stay exact. Both readers compare full rows with a model.

mod common;

use std::collections::BTreeMap;

use common::*;
use inlet_core::{Position, TableSchema};
use inlet_sink_iceberg::IcebergTarget;

async fn load_and_upsert(
    target: &IcebergTarget,
    t: &TableSchema,
    rows: i64,
    rounds: usize,
) -> (BTreeMap<i64, Row>, u64) {
    let mut model: BTreeMap<i64, Row> = (0..rows).map(|i| (i, Row::make(i, 0))).collect();
    let load = target.full_load(t).await.unwrap();
    let all: Vec<Row> = model.values().cloned().collect();
    // Two writers, as the daemon's parallel workers.
    for part in all.chunks(all.len() / 2 + 1) {
        let mut w = load.writer();
        for chunk in part.chunks(250) {
            w.write(&load_batch(t, chunk)).await.unwrap();
        }
        w.close().await.unwrap();
    }
    load.finish(Some(Position(100))).await.unwrap();

    let mut rng = Rng(0xBEEF);
    let (mut next_id, mut lsn) = (5_000i64, 100u64);
    let mut sink = target.upsert_table(t).await.unwrap();
    for round in 0..rounds {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 250);
        apply_model(&mut model, &changes);
        let (a, b) = changes.split_at(changes.len() / 3);
        sink.apply(t, &change_batch(t, a)).await.unwrap();
        sink.apply(t, &change_batch(t, b)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
        if round == rounds / 2 {
            drop(sink);
            sink = target.upsert_table(t).await.unwrap();
            assert_eq!(sink.indexed_rows(), model.len());
        }
    }
    (model, lsn)
}

fn env<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hour_and_bucket_partitions_with_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(
        dir.path(),
        "cdc_file_size_mb = 1\n\
         partition = { \"public.events\" = [\"hour(ts)\", \"bucket[4](id)\"] }",
    );
    let t = table("events", true);
    let (model, _) = load_and_upsert(&target, &t, 1500, 6).await;
    let meta = metadata_file(dir.path(), "public", "events");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let py = &got["pyiceberg"];
    let spec = py["partition_spec"].as_str().unwrap();
    assert!(
        spec.contains("ts_hour") && spec.contains("hour") && spec.contains("bucket[4]"),
        "{spec}"
    );
    // Files are split by partition: every data file holds one partition, and there are many.
    let files = py["files"].as_array().unwrap();
    let partitions: std::collections::BTreeSet<&str> = files
        .iter()
        .filter(|f| f["content"] == 0)
        .map(|f| f["partition"].as_str().unwrap())
        .collect();
    assert!(partitions.len() > 40, "{} partitions", partitions.len());
    assert!(
        files.iter().any(|f| f["content"] == 1),
        "position-delete files expected"
    );

    // Filtered scans prune by the partition values in the manifests: a wrong value would
    // lose rows here.
    let ids: Vec<i64> = model.keys().copied().step_by(37).collect();
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let want: Vec<_> = ids.iter().map(|i| model[i].canonical()).collect();
    let filter = [
        ("INLET_FILTER", format!("id in ({list})")),
        ("INLET_FILTER_SQL", format!("id in ({list})")),
    ];
    assert_rows_env(
        &meta,
        &env(&filter),
        &COLUMNS,
        want,
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    // An hour range: rows with ts in [t0 + 3 h, t0 + 5 h).
    let t0 = 1_700_000_000_000_000i64;
    let (lo, hi) = (t0 + 3 * 3_600_000_000, t0 + 5 * 3_600_000_000);
    let want: Vec<_> = model
        .values()
        .filter(|r| r.ts.is_some_and(|ts| ts >= lo && ts < hi))
        .map(Row::canonical)
        .collect();
    assert!(!want.is_empty());
    let iso = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
            .to_string()
    };
    let filter = [
        (
            "INLET_FILTER",
            format!("ts >= '{}' and ts < '{}'", iso(lo), iso(hi)),
        ),
        (
            "INLET_FILTER_SQL",
            format!(
                "ts >= TIMESTAMPTZ '{}' AND ts < TIMESTAMPTZ '{}'",
                iso(lo),
                iso(hi)
            ),
        ),
    ];
    assert_rows_env(
        &meta,
        &env(&filter),
        &COLUMNS,
        want,
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

/// pyiceberg's reading of the partition spec names every field in `parts`.
fn assert_spec_names(got: &serde_json::Value, parts: &[&str]) {
    let spec = got["pyiceberg"]["partition_spec"].as_str().unwrap();
    for part in parts {
        assert!(spec.contains(part), "{part} missing from {spec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_truncate_month_day_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(
        dir.path(),
        "partition = { \"public.mixed\" = [\"flag\", \"truncate[6](name)\", \"month(day)\", \
         \"day(ts)\", \"truncate[1000](qty)\"] }",
    );
    let t = table("mixed", true);
    let (model, _) = load_and_upsert(&target, &t, 600, 4).await;
    let meta = metadata_file(dir.path(), "public", "mixed");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_spec_names(
        &got,
        &["flag", "name_trunc", "day_month", "ts_day", "qty_trunc"],
    );
    // Identity and truncate prune on equality.
    let want: Vec<_> = model
        .values()
        .filter(|r| r.flag == Some(true))
        .map(Row::canonical)
        .collect();
    let filter = [
        ("INLET_FILTER", "flag == true".to_string()),
        ("INLET_FILTER_SQL", "flag = true".to_string()),
    ];
    assert_rows_env(
        &meta,
        &env(&filter),
        &COLUMNS,
        want,
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let some = model.values().find(|r| r.name.is_some()).unwrap().clone();
    let name = some.name.clone().unwrap();
    let want: Vec<_> = model
        .values()
        .filter(|r| r.name.as_deref() == Some(name.as_str()))
        .map(Row::canonical)
        .collect();
    let filter = [
        ("INLET_FILTER", format!("name == '{name}'")),
        ("INLET_FILTER_SQL", format!("name = '{name}'")),
    ];
    assert_rows_env(
        &meta,
        &env(&filter),
        &COLUMNS,
        want,
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

/// `year()` of a date and of a zoned timestamp, and `month()` of the timestamp (arrow computes
/// both through `date_part`, which must not choke on the `UTC` zone name), read back by both
/// engines after upserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn year_and_month_partitions_of_zoned_timestamps() {
    for (name, fields, parts) in [
        (
            "yearly",
            "[\"year(day)\", \"year(ts)\"]",
            &["day_year", "ts_year"][..],
        ),
        ("monthly", "[\"month(ts)\"]", &["ts_month"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let target = target_with(
            dir.path(),
            &format!("partition = {{ \"public.{name}\" = {fields} }}"),
        );
        let t = table(name, true);
        let (model, _) = load_and_upsert(&target, &t, 400, 3).await;
        let meta = metadata_file(dir.path(), "public", name);
        let got = assert_rows(
            &meta,
            &COLUMNS,
            expected(&model),
            &PYICEBERG_TYPES,
            &DUCKDB_TYPES,
        );
        assert_spec_names(&got, parts);
    }
}

#[test]
fn a_bad_partition_column_or_transform_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "warehouse = \"file://{}\"\npartition = {{ \"public.t\" = [\"week(ts)\"] }}",
        dir.path().display()
    );
    let config: inlet_sink_iceberg::IcebergTargetConfig = toml::from_str(&text).unwrap();
    let err = IcebergTarget::new(&config, "t").unwrap_err().to_string();
    assert!(err.contains("partition.\"public.t\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_on_a_missing_or_wrong_column_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("bad", true);
    for (fields, says) in [
        ("[\"day(nope)\"]", "not a column"),
        ("[\"day(name)\"]", "cannot be applied"),
    ] {
        let target = target_with(
            dir.path(),
            &format!("partition = {{ \"public.bad\" = {fields} }}"),
        );
        let Err(err) = target.full_load(&t).await else {
            panic!("{fields} was accepted");
        };
        let err = err.to_string();
        assert!(
            err.contains("partition.\"public.bad\"") && err.contains(says),
            "{err}"
        );
    }
}
