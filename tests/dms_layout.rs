//! The Parquet layout under AWS DMS's S3 endpoint settings, end to end: PostgreSQL 15 → `inlet
//! run` (full-load-and-cdc) → a folder, read back by pyarrow (Parquet schema: names, order,
//! physical and logical types, codec of every column chunk; values) and DuckDB (its column
//! types). Four tasks follow the same source side by side, so one workload serves all of them:
//!
//! - `default`: today's layout, unchanged (zstd, `_inlet_*` change columns, microseconds);
//! - `dms`: `dms_compatible = true`: what a DMS task with a Parquet endpoint writes (gzip, LOAD
//!   files without `Op`, change files `Op` + the table's columns);
//! - `ms`: `timestamp_column` (DMS's string), `timestamp_unit = "ms"`, gzip,
//!   `include_op_for_full_load`, `inlet_columns = false`;
//! - `typed`: `timestamp_column_type = "timestamp"` in milliseconds, no compression, the
//!   `_inlet_*` columns kept.
//!
//! The commit time each task writes is the same transaction's, so the DMS text and the
//! millisecond forms are checked against the default task's `_inlet_commit_ts`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{inlet, pg_stream, python, spawn_run, stop_run, task_file, PgServer};
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE t (id int PRIMARY KEY, name text, at timestamptz, ats timestamptz[], lt timestamp);
INSERT INTO t VALUES
  (1, 'a', '2024-01-02 03:04:05.123456+00', '{\"2024-01-02 03:04:05.999999+00\"}',
   '2024-01-02 03:04:05.000999'),
  (2, 'b', '1969-12-31 23:59:59.9995+00', NULL, NULL);";

/// One transaction: an insert, an update and a delete, in this order.
const CHANGES: &str = "
BEGIN;
INSERT INTO t VALUES (3, 'c', '2025-06-07 08:09:10.654321+00', '{}', '2025-06-07 08:09:10.5');
UPDATE t SET name = 'a2' WHERE id = 1;
DELETE FROM t WHERE id = 2;
COMMIT;";

fn task(name: &str, url: &str, out: &Path, target: &str) -> String {
    format!(
        r#"
[task]
name = "{name}"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
{target}
[tables]
include = ["public.t"]
[cdc]
flush_interval_ms = 200
"#,
        out.display()
    )
}

/// Per file: its Parquet columns (name, physical type, logical type), the codecs of its column
/// chunks, DuckDB's column types, and its rows as pyarrow reads them (values as text).
const READER: &str = r#"
import json, sys
import duckdb, pyarrow.parquet as pq
out = []
for path in sys.argv[1:]:
    f = pq.ParquetFile(path)
    md = f.metadata
    columns = [[c.path, c.physical_type, str(c.logical_type)]
               for c in (f.schema.column(i) for i in range(len(f.schema)))]
    codecs = sorted({md.row_group(r).column(i).compression
                     for r in range(md.num_row_groups) for i in range(md.num_columns)})
    duck = [[r[0], r[1]] for r in duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
    rows = [{k: (None if v is None else str(v) if not isinstance(v, list)
                 else [str(x) for x in v]) for k, v in r.items()}
            for r in f.read().to_pylist()]
    out.append({"file": path.rsplit("/", 1)[1], "columns": columns, "codecs": codecs,
                "duckdb": duck, "rows": rows})
print(json.dumps(out))
"#;

/// What pyarrow and DuckDB say of every Parquet file of `table_dir`, LOAD files first.
fn read(table_dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(table_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", table_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    // LOAD files first, then change files in name (commit) order: the replay order.
    files.sort_by_key(|p| {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        (!name.starts_with("LOAD"), name)
    });
    let out = Command::new(python())
        .arg("-c")
        .arg(READER)
        .args(&files)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array().expect("a list").clone()
}

fn names(file: &Value) -> Vec<&str> {
    file["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c[0].as_str().expect("name"))
        .collect()
}

fn column<'a>(file: &'a Value, name: &str) -> (&'a str, &'a str) {
    let c = file["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c[0] == name)
        .unwrap_or_else(|| panic!("no column {name} in {}", file["file"]));
    (
        c[1].as_str().expect("physical"),
        c[2].as_str().expect("logical"),
    )
}

fn codecs(file: &Value) -> Vec<&str> {
    file["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .map(|c| c.as_str().expect("codec"))
        .collect()
}

fn duck_type<'a>(file: &'a Value, name: &str) -> &'a str {
    file["duckdb"]
        .as_array()
        .expect("duckdb")
        .iter()
        .find(|c| c[0] == name)
        .and_then(|c| c[1].as_str())
        .unwrap_or_else(|| panic!("DuckDB has no column {name} in {}", file["file"]))
}

/// A column's values, in row order.
fn values(file: &Value, name: &str) -> Vec<Value> {
    file["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[name].clone())
        .collect()
}

fn texts(file: &Value, name: &str) -> Vec<Option<String>> {
    values(file, name)
        .into_iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

const TS_MICROS_UTC: &str = "Timestamp(isAdjustedToUTC=true, timeUnit=microseconds, is_from_converted_type=false, force_set_converted_type=false)";
const TS_MILLIS_UTC: &str = "Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds, is_from_converted_type=false, force_set_converted_type=false)";
const TS_MICROS: &str = "Timestamp(isAdjustedToUTC=false, timeUnit=microseconds, is_from_converted_type=false, force_set_converted_type=false)";
const TS_MILLIS: &str = "Timestamp(isAdjustedToUTC=false, timeUnit=milliseconds, is_from_converted_type=false, force_set_converted_type=false)";

/// The table's columns as every task writes them in microseconds, and their values in the
/// LOAD file and after the changes (pyarrow's text of each).
fn assert_table_columns_micros(file: &Value) {
    assert_eq!(column(file, "id"), ("INT32", "None"));
    assert_eq!(column(file, "name"), ("BYTE_ARRAY", "String"));
    assert_eq!(column(file, "at"), ("INT64", TS_MICROS_UTC));
    assert_eq!(column(file, "ats.list.element"), ("INT64", TS_MICROS_UTC));
    assert_eq!(column(file, "lt"), ("INT64", TS_MICROS));
    assert_eq!(duck_type(file, "at"), "TIMESTAMP WITH TIME ZONE");
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

/// DMS's text of a time: `yyyy-MM-dd HH:mm:ss.SSSSSS`, parsed back to µs since the epoch.
fn parse_dms_text(text: &str) -> i64 {
    assert_eq!(text.len(), 26, "{text:?} is not yyyy-MM-dd HH:mm:ss.SSSSSS");
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .and_utc()
        .timestamp_micros()
}

/// pyarrow's text of a UTC timestamp (`2024-01-02 03:04:05.123000+00:00`), as µs.
fn parse_arrow_text(text: &str) -> i64 {
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z")
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%:z"))
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .timestamp_micros()
}

#[tokio::test(flavor = "multi_thread")]
async fn dms_settings_shape_the_files_and_the_default_is_unchanged() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");

    // A setting DMS cannot produce is refused, naming the key.
    let bad = task_file(
        dir.path(),
        "bad",
        &task(
            "bad",
            &url,
            &dir.path().join("bad"),
            "dms_compatible = true\ncompression = \"zstd\"",
        ),
    );
    let (code, stdout, stderr) = inlet(&["full-load", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "a config error: {stdout}{stderr}");
    assert!(
        stderr.contains("compression = \"zstd\" is not one of DMS's")
            && stderr.contains("dms_compatible"),
        "{stderr}"
    );

    let tasks = [
        ("default", ""),
        ("dms", "dms_compatible = true"),
        (
            "ms",
            "timestamp_column = \"ts\"\ntimestamp_unit = \"ms\"\ncompression = \"gzip\"\n\
             include_op_for_full_load = true\ninlet_columns = false",
        ),
        (
            "typed",
            "timestamp_column = \"ts\"\ntimestamp_column_type = \"timestamp\"\n\
             timestamp_unit = \"ms\"\ncompression = \"none\"",
        ),
    ];
    let started = micros_now();
    let mut running: Vec<(&str, PathBuf, Child)> = Vec::new();
    for (name, target) in tasks {
        let out = dir.path().join(name);
        let cfg = task_file(dir.path(), name, &task(name, &url, &out, target));
        running.push((name, out, spawn_run(&cfg)));
    }
    for (name, out, child) in &mut running {
        let checkpoint = out.join(format!("_inlet/{name}/checkpoint"));
        pg_stream::wait_caught_up(&client, child, &checkpoint, &format!("inlet_{name}")).await;
    }
    let loaded = micros_now();
    client.batch_execute(CHANGES).await.unwrap();
    for (name, out, child) in &mut running {
        let checkpoint = out.join(format!("_inlet/{name}/checkpoint"));
        pg_stream::wait_caught_up(&client, child, &checkpoint, &format!("inlet_{name}")).await;
    }
    let mut files = std::collections::HashMap::new();
    for (name, out, child) in running {
        let (code, stderr) = stop_run(child);
        assert_eq!(code, 0, "{name}: {stderr}");
        files.insert(name, read(&out.join("public/t")));
    }
    for (name, f) in &files {
        let listed: Vec<&str> = f.iter().map(|f| f["file"].as_str().unwrap()).collect();
        assert_eq!(
            f.len(),
            2,
            "{name}: one LOAD file and one change file: {listed:?}"
        );
        assert_eq!(listed[0], "LOAD00000001.parquet", "{name}");
    }

    // ---- default: unchanged.
    let [load, change] = &files["default"][..] else {
        unreachable!()
    };
    assert_eq!(names(load), ["id", "name", "at", "ats.list.element", "lt"]);
    assert_table_columns_micros(load);
    assert_eq!(codecs(load), ["ZSTD"]);
    assert_eq!(
        values(load, "at"),
        [
            "2024-01-02 03:04:05.123456+00:00",
            "1969-12-31 23:59:59.999500+00:00"
        ]
    );
    assert_eq!(
        values(load, "ats"),
        [
            serde_json::json!(["2024-01-02 03:04:05.999999+00:00"]),
            Value::Null
        ]
    );
    assert_eq!(
        names(change),
        [
            "Op",
            "_inlet_commit_ts",
            "_inlet_lsn",
            "_inlet_txid",
            "id",
            "name",
            "at",
            "ats.list.element",
            "lt"
        ]
    );
    assert_eq!(column(change, "Op"), ("BYTE_ARRAY", "String"));
    assert_eq!(column(change, "_inlet_commit_ts"), ("INT64", TS_MICROS_UTC));
    assert_eq!(column(change, "_inlet_lsn"), ("INT64", "None"));
    assert_eq!(column(change, "_inlet_txid"), ("INT64", "None"));
    assert_table_columns_micros(change);
    assert_eq!(codecs(change), ["ZSTD"]);
    let ops = |f: &Value| texts(f, "Op");
    let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
    assert_eq!(ops(change), some(&["I", "U", "D"]));
    assert_eq!(
        values(change, "id"),
        [
            serde_json::json!("3"),
            serde_json::json!("1"),
            serde_json::json!("2")
        ]
    );
    assert_eq!(
        texts(change, "name"),
        [Some("c".into()), Some("a2".into()), None]
    );
    let commit_text = texts(change, "_inlet_commit_ts")[0]
        .clone()
        .expect("commit time");
    let commit = parse_arrow_text(&commit_text);
    assert!(
        (loaded..=micros_now()).contains(&commit),
        "commit time {commit_text}"
    );
    assert_eq!(
        texts(change, "_inlet_commit_ts"),
        vec![Some(commit_text.clone()); 3]
    );

    // ---- dms_compatible: DMS's layout.
    let [load, change] = &files["dms"][..] else {
        unreachable!()
    };
    assert_eq!(names(load), ["id", "name", "at", "ats.list.element", "lt"]);
    assert_table_columns_micros(load);
    assert_eq!(codecs(load), ["GZIP"]);
    assert_eq!(
        values(load, "at"),
        [
            "2024-01-02 03:04:05.123456+00:00",
            "1969-12-31 23:59:59.999500+00:00"
        ]
    );
    assert_eq!(
        names(change),
        ["Op", "id", "name", "at", "ats.list.element", "lt"]
    );
    assert_table_columns_micros(change);
    assert_eq!(codecs(change), ["GZIP"]);
    assert_eq!(ops(change), some(&["I", "U", "D"]));
    assert_eq!(
        texts(change, "name"),
        [Some("c".into()), Some("a2".into()), None]
    );
    assert_eq!(duck_type(change, "Op"), "VARCHAR");

    // ---- ms: DMS's string timestamp column, millisecond timestamps, gzip, Op in LOAD files.
    let [load, change] = &files["ms"][..] else {
        unreachable!()
    };
    assert_eq!(
        names(load),
        ["Op", "ts", "id", "name", "at", "ats.list.element", "lt"]
    );
    assert_eq!(column(load, "ts"), ("BYTE_ARRAY", "String"));
    assert_eq!(duck_type(load, "ts"), "VARCHAR");
    assert_eq!(column(load, "at"), ("INT64", TS_MILLIS_UTC));
    assert_eq!(column(load, "ats.list.element"), ("INT64", TS_MILLIS_UTC));
    assert_eq!(column(load, "lt"), ("INT64", TS_MILLIS));
    assert_eq!(codecs(load), ["GZIP"]);
    assert_eq!(ops(load), some(&["I", "I"]));
    for t in texts(load, "ts") {
        let at = parse_dms_text(t.as_deref().expect("a load time"));
        assert!((started..=loaded).contains(&at), "load time {t:?}");
    }
    // Milliseconds keep the millisecond a value falls in, before 1970 too.
    assert_eq!(
        values(load, "at"),
        [
            "2024-01-02 03:04:05.123000+00:00",
            "1969-12-31 23:59:59.999000+00:00"
        ]
    );
    assert_eq!(
        values(load, "ats"),
        [
            serde_json::json!(["2024-01-02 03:04:05.999000+00:00"]),
            Value::Null
        ]
    );
    assert_eq!(
        texts(load, "lt"),
        [Some("2024-01-02 03:04:05".into()), None]
    );
    assert_eq!(
        names(change),
        ["Op", "ts", "id", "name", "at", "ats.list.element", "lt"]
    );
    assert_eq!(column(change, "ts"), ("BYTE_ARRAY", "String"));
    assert_eq!(column(change, "at"), ("INT64", TS_MILLIS_UTC));
    assert_eq!(codecs(change), ["GZIP"]);
    assert_eq!(ops(change), some(&["I", "U", "D"]));
    let dms_commit = chrono::DateTime::from_timestamp_micros(commit)
        .expect("a time")
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    assert_eq!(texts(change, "ts"), vec![Some(dms_commit); 3]);
    assert_eq!(
        texts(change, "at")[0].as_deref(),
        Some("2025-06-07 08:09:10.654000+00:00")
    );

    // ---- typed: the timestamp column as a millisecond TIMESTAMP, no compression, _inlet_*
    // columns kept (the commit time is the timestamp column).
    let [load, change] = &files["typed"][..] else {
        unreachable!()
    };
    assert_eq!(
        names(load),
        ["ts", "id", "name", "at", "ats.list.element", "lt"]
    );
    assert_eq!(column(load, "ts"), ("INT64", TS_MILLIS_UTC));
    assert_eq!(duck_type(load, "ts"), "TIMESTAMP WITH TIME ZONE");
    assert_eq!(codecs(load), ["UNCOMPRESSED"]);
    for t in texts(load, "ts") {
        let at = parse_arrow_text(t.as_deref().expect("a load time"));
        assert!(
            (started / 1000 * 1000..=loaded).contains(&at),
            "load time {t:?}"
        );
        assert_eq!(at % 1000, 0, "{t:?} has no sub-millisecond digits");
    }
    assert_eq!(
        names(change),
        [
            "Op",
            "ts",
            "_inlet_lsn",
            "_inlet_txid",
            "id",
            "name",
            "at",
            "ats.list.element",
            "lt"
        ]
    );
    assert_eq!(column(change, "ts"), ("INT64", TS_MILLIS_UTC));
    assert_eq!(codecs(change), ["UNCOMPRESSED"]);
    assert_eq!(ops(change), some(&["I", "U", "D"]));
    let ts = texts(change, "ts");
    assert_eq!(ts, vec![ts[0].clone(); 3]);
    assert_eq!(
        parse_arrow_text(ts[0].as_deref().expect("commit time")),
        commit.div_euclid(1000) * 1000
    );
    // The transaction's LSN and id are the default task's.
    assert_eq!(
        values(change, "_inlet_lsn"),
        values(&files["default"][1], "_inlet_lsn")
    );
    assert_eq!(
        values(change, "_inlet_txid"),
        values(&files["default"][1], "_inlet_txid")
    );
}
