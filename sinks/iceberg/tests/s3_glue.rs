//! The Iceberg sink on S3 (moto), with the folder catalog and with the Glue catalog (moto's Glue
//! API on the same server). Tables are read back by pyiceberg (through its Glue catalog for
//! Glue tables) and by DuckDB, and compared with a model row by row.

mod common;

use std::collections::BTreeMap;

use common::*;
use inlet_core::{Position, TableSchema};
use inlet_sink_iceberg::{IcebergError, IcebergTarget};

/// Full load of 800 rows at position 100, then `rounds` commits of random changes, reopening
/// the table halfway. Returns the model and the last position.
async fn load_and_upsert(
    target: &IcebergTarget,
    t: &TableSchema,
    rounds: usize,
) -> (BTreeMap<i64, Row>, u64) {
    let mut model: BTreeMap<i64, Row> = (0..800).map(|i| (i, Row::make(i, 0))).collect();
    let load = target.full_load(t).await.unwrap();
    let mut w = load.writer();
    let rows: Vec<Row> = model.values().cloned().collect();
    for chunk in rows.chunks(300) {
        w.write(&load_batch(t, chunk)).await.unwrap();
    }
    w.close().await.unwrap();
    load.finish(Some(Position(100))).await.unwrap();

    let mut rng = Rng(0xA11CE);
    let (mut next_id, mut lsn) = (10_000i64, 100u64);
    let mut sink = target.upsert_table(t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(100)));
    for round in 0..rounds {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 200);
        apply_model(&mut model, &changes);
        sink.apply(t, &change_batch(t, &changes)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
        if round == rounds / 2 {
            drop(sink);
            sink = target.upsert_table(t).await.unwrap();
            assert_eq!(sink.committed_position(), Some(Position(lsn)));
            assert_eq!(sink.indexed_rows(), model.len());
        }
    }
    (model, lsn)
}

/// Two writers of one table: the second commit on the same version must be refused.
async fn assert_second_writer_loses(target: &IcebergTarget, t: &TableSchema, lsn: u64) {
    let mut a = target.upsert_table(t).await.unwrap();
    let mut b = target.upsert_table(t).await.unwrap();
    let change = |id: i64, lsn: u64| Change {
        op: "U",
        lsn,
        row: Row::make(id, lsn),
    };
    a.apply(t, &change_batch(t, &[change(1, lsn + 1)]))
        .await
        .unwrap();
    b.apply(t, &change_batch(t, &[change(2, lsn + 1)]))
        .await
        .unwrap();
    a.commit(Position(lsn + 1)).await.unwrap();
    let err = b.commit(Position(lsn + 1)).await.unwrap_err();
    assert!(
        matches!(err, IcebergError::CommitConflict { .. }),
        "expected a conflict, got {err}"
    );
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_folder_catalog_full_load_and_upserts_read_back() {
    let mut moto = inlet_testkit::Moto::start();
    moto.create_bucket("lake");
    let target = s3_target(&moto.endpoint, "s3://lake/wh", "cdc_file_size_mb = 1");
    // check() proves moto refuses a create-if-absent write over an existing object
    // (If-None-Match: *): it fails otherwise.
    target.check().await.expect("check");
    assert_eq!(target.describe(), "iceberg s3://lake/wh (folder catalog)");

    let t = table("orders", true);
    let (mut model, lsn) = load_and_upsert(&target, &t, 6).await;
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    assert!(
        meta.starts_with("s3://lake/wh/public/orders/metadata/v"),
        "{meta}"
    );
    let env = moto_env(&moto.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let got = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(
        got["pyiceberg"]["summary"]["inlet.position"],
        format!("{lsn:016X}")
    );

    assert_second_writer_loses(&target, &t, lsn).await;
    model.insert(1, Row::make(1, lsn + 1));
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_catalog_registers_commits_and_pyiceberg_reads_through_glue() {
    let mut moto = inlet_testkit::Moto::start();
    moto.create_bucket("lake");
    let extra = format!(
        "namespace = \"replica\"\n[catalog]\nkind = \"glue\"\nendpoint = \"{}\"\n",
        moto.endpoint
    );
    let target = s3_target(&moto.endpoint, "s3://lake/glue", &extra);
    target.check().await.expect("check");
    assert!(target.describe().contains("glue"), "{}", target.describe());

    let t = table("customers", true);
    let (mut model, lsn) = load_and_upsert(&target, &t, 4).await;
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    assert!(
        meta.starts_with("s3://lake/glue/replica/customers/metadata/000"),
        "{meta}"
    );
    let mut env = moto_env(&moto.endpoint);
    env.push(("INLET_GLUE_TABLE", "replica.customers".into()));
    env.push(("INLET_GLUE_ENDPOINT", moto.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let got = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    // pyiceberg found the table through Glue, at the location inlet committed last.
    assert_eq!(got["pyiceberg"]["metadata_location"], meta.as_str());
    assert_eq!(
        got["pyiceberg"]["summary"]["inlet.position"],
        format!("{lsn:016X}")
    );

    assert_second_writer_loses(&target, &t, lsn).await;
    model.insert(1, Row::make(1, lsn + 1));
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    let got = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(got["pyiceberg"]["metadata_location"], meta.as_str());

    // A second target (a restart) finds the table through Glue and resumes.
    let again = s3_target(&moto.endpoint, "s3://lake/glue", &extra);
    assert_eq!(
        again.committed_position(&t.id).await.unwrap(),
        Some(Position(lsn + 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_errors_name_the_catalog_and_classify() {
    // Nothing listens: unreachable is transient, and the message names the endpoint.
    let port = inlet_testkit::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let extra = format!("[catalog]\nkind = \"glue\"\nendpoint = \"{endpoint}\"\n");
    let dir = tempfile::tempdir().unwrap();
    let target = s3_target(
        &endpoint,
        &format!("file://{}", dir.path().display()),
        &extra,
    );
    let err = target.check().await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_transient(), "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(!msg.contains("testing"), "no secret in errors: {msg}");
}
