//! The value policy per column (`[values.columns]`) end to end against a real PostgreSQL 15
//! and MariaDB 10.11: only the named columns change type or handling, in the full load and the
//! change stream alike, every other column keeps its exact type and values; a key that names
//! no selected column stops `full-load`, `run` and `check` before anything is written.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, TimeUnit};
use common::mysql_stream;
use common::pg_stream;
use common::replay::{file_name, read_file};
use common::{inlet, load_files, spawn_run, stderr_of, task_file, PgServer};
use inlet_testkit::MariaDbServer;

fn pg_task(url: &str, out: &Path, mode: &str, extra: &str) -> String {
    format!(
        r#"
[task]
name = "vp"
mode = "{mode}"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = 200
{extra}
"#,
        out.display()
    )
}

/// Waits until every change committed so far is in the change files and the checkpoint.
async fn pg_caught_up(client: &tokio_postgres::Client, child: &mut Child, out: &Path) {
    pg_stream::wait_caught_up(client, child, &out.join("_inlet/vp/checkpoint"), "inlet_vp").await
}

/// The process's exit code and stderr once it stops on its own (within 60 s).
fn exit_of(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("inlet did not stop within 60 s: {}", stderr_of(child).1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stderr_of(child)
}

/// One written row: the file kind (`LOAD`) or the change's Op, then `columns` as Arrow
/// displays them (None for NULL).
type Written = (String, Vec<Option<String>>);

/// Every row of a table folder, the LOAD files first, then the change files in name order;
/// checks that every file has exactly the `types` given.
fn written_rows(table_dir: &Path, types: &[(&str, DataType)]) -> Vec<Written> {
    let mut files = load_files(table_dir);
    files.sort_by_key(|f| (!file_name(f).starts_with("LOAD"), file_name(f)));
    let mut rows = Vec::new();
    for f in files {
        let name = file_name(&f);
        for b in read_file(&f) {
            for (column, want) in types {
                let field = b.schema().field_with_name(column).cloned();
                assert_eq!(
                    field.map(|f| f.data_type().clone()).ok().as_ref(),
                    Some(want),
                    "{name}: column {column}"
                );
            }
            for r in 0..b.num_rows() {
                let kind = match b.column_by_name("Op") {
                    Some(op) => arrow_cast::display::array_value_to_string(op, r).unwrap(),
                    None => "LOAD".to_string(),
                };
                let values = types
                    .iter()
                    .map(|(c, _)| {
                        let a = b.column_by_name(c).unwrap();
                        (!arrow_array::Array::is_null(a, r))
                            .then(|| arrow_cast::display::array_value_to_string(a, r).unwrap())
                    })
                    .collect();
                rows.push((kind, values));
            }
        }
    }
    rows
}

fn row(kind: &str, values: &[Option<&str>]) -> Written {
    (
        kind.to_string(),
        values.iter().map(|v| v.map(str::to_string)).collect(),
    )
}

/// `n` is set to "text" and holds NaN: it is Utf8 with PostgreSQL's exact text, while `m`, a
/// numeric of the same type under the default "fail", stays Decimal128(10, 2) with exact values.
/// `d` (date) and `at` (timestamp) are set to "null" and hold ±infinity: NULL there, while `e`,
/// a date under the default, stays Date32. The array column `a` set to "text" carries
/// multi-dimensional values as PostgreSQL's exact array text, while `b` stays a list of Int32.
/// The same in the full load and the change stream. Then a NaN in `m` stops the task with a
/// message naming the key to set for `m`.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_columns_named_in_values_columns_change() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE pol (id bigint PRIMARY KEY, version int NOT NULL, n numeric(10,2),
                 m numeric(10,2), d date, at timestamp, e date, a int[], b int[]);
             INSERT INTO pol VALUES
                 (1, 0, 'NaN', 1.50, 'infinity', '-infinity', '2024-01-02', '{{1,2},{3,4}}', '{5,6}'),
                 (2, 0, 12.34, -0.01, '2024-02-29', '2024-02-29 12:34:56.789012', '1999-12-31',
                  '{1,2}', NULL);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "vp",
        &pg_task(
            &pg.url("postgres"),
            &out,
            "full-load-and-cdc",
            "[values]
on_unrepresentable = \"fail\"
[values.columns]
\"public.pol.n\" = \"text\"
\"public.pol.d\" = \"null\"
\"public.pol.at\" = \"null\"
\"public.pol.a\" = \"text\"",
        ),
    );
    let mut child = spawn_run(&cfg);
    pg_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "INSERT INTO pol VALUES (3, 0, 'NaN', 99999999.99, '-infinity', 'infinity', '2000-01-01',
                 '{{{7}},{{8}}}', '{}');
             UPDATE pol SET version = 1, n = 'NaN', d = 'infinity' WHERE id = 2;
             INSERT INTO pol VALUES (4, 0, 0.5, 0, '1970-01-01', '1970-01-01 00:00:00', '2030-06-15',
                 NULL, '{7,8}');",
        )
        .await
        .unwrap();
    pg_caught_up(&client, &mut child, &out).await;

    // A NaN in a column under the default stops the task and names the key for that column.
    client
        .batch_execute("INSERT INTO pol VALUES (5, 0, 1, 'NaN', NULL, NULL, NULL, NULL, NULL);")
        .await
        .unwrap();
    let (code, stderr) = exit_of(child);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "public.pol column m: numeric 'NaN' (the row with id = 5) has no exact \
             Decimal128(10, 2) equivalent; set [values.columns] \"public.pol.m\" = \"null\" or \
             \"text\" in the task file"
        ),
        "{stderr}"
    );

    let types = [
        ("id", DataType::Int64),
        ("version", DataType::Int32),
        ("n", DataType::Utf8),
        ("m", DataType::Decimal128(10, 2)),
        ("d", DataType::Date32),
        ("at", DataType::Timestamp(TimeUnit::Microsecond, None)),
        ("e", DataType::Date32),
        ("a", DataType::Utf8),
        (
            "b",
            // The Parquet spec's name of a list's element, which the sink writes.
            DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
                "element",
                DataType::Int32,
                true,
            ))),
        ),
    ];
    let got = written_rows(&out.join("public/pol"), &types);
    #[rustfmt::skip]
    let want = vec![
        row("LOAD", &[Some("1"), Some("0"), Some("NaN"), Some("1.50"), None, None,
            Some("2024-01-02"), Some("{{1,2},{3,4}}"), Some("[5, 6]")]),
        row("LOAD", &[Some("2"), Some("0"), Some("12.34"), Some("-0.01"), Some("2024-02-29"),
            Some("2024-02-29T12:34:56.789012"), Some("1999-12-31"), Some("{1,2}"), None]),
        row("I", &[Some("3"), Some("0"), Some("NaN"), Some("99999999.99"), None, None,
            Some("2000-01-01"), Some("{{{7}},{{8}}}"), Some("[]")]),
        row("U", &[Some("2"), Some("1"), Some("NaN"), Some("-0.01"), None,
            Some("2024-02-29T12:34:56.789012"), Some("1999-12-31"), Some("{1,2}"), None]),
        row("I", &[Some("4"), Some("0"), Some("0.50"), Some("0.00"), Some("1970-01-01"),
            Some("1970-01-01T00:00:00"), Some("2030-06-15"), None, Some("[7, 8]")]),
    ];
    assert_eq!(got, want);
}

/// A `[values.columns]` key that names a column that does not exist, a table that is not
/// selected, or a column `exclude_columns` leaves out would leave the column it meant under
/// the default policy: `full-load`, `run` and `check` refuse it, naming the key and what
/// exists, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_values_columns_key_naming_no_selected_column_is_refused() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE pol (id bigint PRIMARY KEY, n numeric(10,2), secret text);
             INSERT INTO pol VALUES (1, 'NaN', 'x');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases = [
        (
            "column",
            "[values.columns]\n\"public.pol.nn\" = \"text\"",
            "\"public.pol.nn\": public.pol has no column \"nn\" (its columns: id, n, secret)",
        ),
        (
            "case",
            "[values.columns]\n\"public.pol.N\" = \"text\"",
            "\"public.pol.N\": public.pol has no column \"N\" (did you mean \"n\"? its columns: \
             id, n, secret)",
        ),
        (
            "table",
            "[values.columns]\n\"public.poll.n\" = \"text\"",
            "\"public.poll.n\" names no column of a selected table (keys are \
             \"schema.table.column\"; selected tables: public.pol)",
        ),
        (
            "excluded",
            "[tables.exclude_columns]\n\"public.pol\" = [\"secret\"]\n\
             [values.columns]\n\"public.pol.secret\" = \"null\"",
            "\"public.pol.secret\": column \"secret\" of public.pol is excluded by \
             tables.exclude_columns",
        ),
    ];
    for (name, extra, expected) in cases {
        let body = pg_task(&pg.url("postgres"), &out, "full-load", extra);
        let cfg = task_file(dir.path(), name, &body);
        let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("values.columns: {expected}")),
            "{name}: {stderr}"
        );
        assert!(
            !out.join("public").exists(),
            "{name}: something was written"
        );

        let (code, stdout, stderr) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: {stdout}{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.contains("values.columns"))
            .unwrap_or_else(|| panic!("{name}: no values.columns line in {stdout}"));
        assert!(
            line.contains("MISSING") && line.contains(expected),
            "{name}: {stdout}"
        );

        let cdc = body.replace("mode = \"full-load\"", "mode = \"full-load-and-cdc\"");
        let cfg = task_file(dir.path(), &format!("{name}-cdc"), &cdc);
        let (code, _, stderr) = inlet(&[
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_ne!(code, 0, "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            !out.join("public").exists(),
            "{name}: something was written"
        );
    }
    let slots = pg
        .client("postgres")
        .await
        .query("SELECT slot_name FROM pg_replication_slots", &[])
        .await
        .unwrap();
    assert!(slots.is_empty(), "a refused task left a slot behind");
}

fn my_task(url: &str, out: &Path, extra: &str) -> String {
    format!(
        r#"
[task]
name = "vp-my"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["zd.*"]
[cdc]
flush_interval_ms = 200
{extra}
"#,
        out.display()
    )
}

/// Waits until the task checkpoint covers the binlog's current end.
fn my_caught_up(db: &MariaDbServer, child: &mut Child, out: &Path) {
    mysql_stream::wait_caught_up(db, child, &out.join("_inlet/vp-my/checkpoint"), 0)
}

/// MariaDB zero dates (`0000-00-00`) under per-column settings: `d` set to "text" is Utf8 with
/// the server's exact text, `z` set to "null" is NULL, and `e`, a date under the default
/// "fail", stays Date32 with exact values. A tinyint(1) holding 2 or -5: `b` set to "text" is
/// the number (Int16), `c` (NOT NULL) set to "null" is NULL there and Boolean otherwise. In
/// the full load and the binlog alike. Then a zero
/// date in `e` stops the task naming the key for `e`, and a key naming no column of the
/// selected table is refused before anything is written.
#[test]
fn mysql_zero_dates_follow_the_column_settings() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE zd;
         CREATE TABLE zd.t (id BIGINT PRIMARY KEY, version INT NOT NULL, d DATE, z DATE, e DATE,
             b TINYINT(1), c TINYINT(1) NOT NULL);
         SET SESSION sql_mode = '';
         INSERT INTO zd.t VALUES (1, 0, '0000-00-00', '0000-00-00', '2024-01-02', 2, 2),
             (2, 0, '2024-02-29', '2024-02-29', '1999-12-31', 1, 0);",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let columns = "[values.columns]\n\"zd.t.d\" = \"text\"\n\"zd.t.z\" = \"null\"\n\
                   \"zd.t.b\" = \"text\"\n\"zd.t.c\" = \"null\"";
    let cfg = task_file(dir.path(), "my", &my_task(&db.url("zd"), &out, columns));
    let mut child = spawn_run(&cfg);
    my_caught_up(&db, &mut child, &out);
    db.admin(
        "SET SESSION sql_mode = '';
         INSERT INTO zd.t VALUES (3, 0, '0000-00-00', '0000-00-00', '2000-01-01', -5, 1);
         UPDATE zd.t SET version = 1, d = '0000-00-00', z = '0000-00-00' WHERE id = 2;
         INSERT INTO zd.t VALUES (4, 0, '1970-01-01', '1970-01-01', '2030-06-15', 0, 3);",
    );
    my_caught_up(&db, &mut child, &out);
    db.admin(
        "SET SESSION sql_mode = ''; INSERT INTO zd.t VALUES (5, 0, NULL, NULL, '0000-00-00', NULL, 0);",
    );
    let (code, stderr) = exit_of(child);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "zd.t column e: the zero date 0000-00-00 has no exact Date32 equivalent; set \
             [values.columns] \"zd.t.e\" = \"null\" or \"text\" in the task file"
        ),
        "{stderr}"
    );
    let types = [
        ("id", DataType::Int64),
        ("version", DataType::Int32),
        ("d", DataType::Utf8),
        ("z", DataType::Date32),
        ("e", DataType::Date32),
        ("b", DataType::Int16),
        ("c", DataType::Boolean),
    ];
    let got = written_rows(&out.join("zd/t"), &types);
    #[rustfmt::skip]
    let want = vec![
        row("LOAD", &[Some("1"), Some("0"), Some("0000-00-00"), None, Some("2024-01-02"),
            Some("2"), None]),
        row("LOAD", &[Some("2"), Some("0"), Some("2024-02-29"), Some("2024-02-29"),
            Some("1999-12-31"), Some("1"), Some("false")]),
        row("I", &[Some("3"), Some("0"), Some("0000-00-00"), None, Some("2000-01-01"),
            Some("-5"), Some("true")]),
        row("U", &[Some("2"), Some("1"), Some("0000-00-00"), None, Some("1999-12-31"),
            Some("1"), Some("false")]),
        row("I", &[Some("4"), Some("0"), Some("1970-01-01"), Some("1970-01-01"),
            Some("2030-06-15"), Some("0"), None]),
    ];
    assert_eq!(got, want);

    // A typo in a key: refused, naming the key and the table's columns; nothing written.
    let typo_out = dir.path().join("typo");
    let typo = task_file(
        dir.path(),
        "typo",
        &my_task(
            &db.url("zd"),
            &typo_out,
            "[values.columns]\n\"zd.t.dd\" = \"text\"",
        ),
    );
    let (code, _, stderr) = inlet(&[
        "run",
        "-c",
        typo.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "values.columns: \"zd.t.dd\": zd.t has no column \"dd\" (its columns: id, version, \
             d, z, e, b, c)"
        ),
        "{stderr}"
    );
    assert!(!typo_out.join("zd").exists(), "something was written");
}

/// Every row DuckDB reads from the Parquet files of a table folder, the LOAD files first, then
/// the change files in name (commit) order: the file kind (`LOAD`) or the change's Op, then
/// `columns` as text (None for NULL). Checks that DuckDB reads each of `columns` as `VARCHAR`
/// where `text` names it.
fn duckdb_rows(table_dir: &Path, columns: &[&str], text: &[&str]) -> Vec<Written> {
    const READER: &str = r#"
import json, sys
import duckdb
out = []
for path in sys.argv[1:]:
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{path}')")
    rows = duckdb.sql(f"SELECT COLUMNS(*)::VARCHAR FROM read_parquet('{path}')").fetchall()
    out.append({"columns": rel.columns, "types": [str(t) for t in rel.types], "rows": rows})
print(json.dumps(out))
"#;
    let mut files = load_files(table_dir);
    files.sort_by_key(|f| (!file_name(f).starts_with("LOAD"), file_name(f)));
    let out = std::process::Command::new(common::python())
        .arg("-c")
        .arg(READER)
        .args(&files)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "DuckDB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut rows = Vec::new();
    for (f, file) in files.iter().zip(doc.as_array().expect("a list")) {
        let names: Vec<&str> = file["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let at = |c: &str| {
            names
                .iter()
                .position(|n| *n == c)
                .unwrap_or_else(|| panic!("{}: no column {c} in {names:?}", file_name(f)))
        };
        for c in text {
            assert_eq!(
                file["types"][at(c)],
                "VARCHAR",
                "{}: column {c}",
                file_name(f)
            );
        }
        for r in file["rows"].as_array().unwrap() {
            let kind = match names.iter().position(|n| *n == "Op") {
                Some(i) => r[i].as_str().unwrap().to_string(),
                None => "LOAD".to_string(),
            };
            let values = columns
                .iter()
                .map(|c| r[at(c)].as_str().map(str::to_string))
                .collect();
            rows.push((kind, values));
        }
    }
    rows
}

/// Under the default target forms (`types = "portable"`) a time column is written as text,
/// which holds PostgreSQL's `24:00:00` (the end of the day, which Arrow's, Parquet's and
/// Iceberg's time types cannot): it is carried as that exact text, beside 23:59:59.999999,
/// 00:00:00 and NULL, in the full load and the change stream, into Parquet (read by DuckDB) and
/// Iceberg (read by pyiceberg and DuckDB). Under `types = "exact"` it follows the value policy
/// instead (pg_cdc: time_24_00_follows_the_value_policy_in_load_and_stream).
#[tokio::test(flavor = "multi_thread")]
async fn pg_time_24_00_is_written_as_its_text_under_the_portable_forms() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE clock (id bigint PRIMARY KEY, t time);
             INSERT INTO clock VALUES (1, '24:00:00'), (2, '23:59:59.999999'), (3, '00:00:00'),
                 (4, NULL);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let warehouse = dir.path().join("warehouse");
    let url = pg.url("postgres");
    let parquet = task_file(
        dir.path(),
        "pq",
        &pg_task(&url, &out, "full-load-and-cdc", ""),
    );
    let iceberg = task_file(
        dir.path(),
        "ice",
        &pg_task(&url, &warehouse, "full-load-and-cdc", "")
            .replace("name = \"vp\"", "name = \"vpice\"")
            .replace(
                "kind = \"parquet\"\nurl =",
                "kind = \"iceberg\"\nwarehouse =",
            ),
    );
    let ice_checkpoint = warehouse.join("_inlet/vpice/checkpoint");
    let mut to_parquet = spawn_run(&parquet);
    let mut to_iceberg = spawn_run(&iceberg);
    pg_caught_up(&client, &mut to_parquet, &out).await;
    pg_stream::wait_caught_up(&client, &mut to_iceberg, &ice_checkpoint, "inlet_vpice").await;
    client
        .batch_execute(
            "INSERT INTO clock VALUES (5, '24:00:00');
             UPDATE clock SET t = '24:00:00' WHERE id = 3;
             UPDATE clock SET t = '23:59:59.999999' WHERE id = 1;",
        )
        .await
        .unwrap();
    pg_caught_up(&client, &mut to_parquet, &out).await;
    pg_stream::wait_caught_up(&client, &mut to_iceberg, &ice_checkpoint, "inlet_vpice").await;
    for child in [to_parquet, to_iceberg] {
        let (code, stderr) = common::stop_run(child);
        assert_eq!(code, 0, "{stderr}");
    }

    #[rustfmt::skip]
    let want = vec![
        row("LOAD", &[Some("1"), Some("24:00:00")]),
        row("LOAD", &[Some("2"), Some("23:59:59.999999")]),
        row("LOAD", &[Some("3"), Some("00:00:00")]),
        row("LOAD", &[Some("4"), None]),
        row("I", &[Some("5"), Some("24:00:00")]),
        row("U", &[Some("3"), Some("24:00:00")]),
        row("U", &[Some("1"), Some("23:59:59.999999")]),
    ];
    assert_eq!(
        duckdb_rows(&out.join("public/clock"), &["id", "t"], &["t"]),
        want
    );

    // The table as PostgreSQL prints it, which both Iceberg readers read.
    let mut source: common::iceberg::Rows = client
        .query("SELECT id::text, t::text FROM clock", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1)])
        .collect();
    source.sort();
    assert_eq!(
        source[..2],
        [
            vec![Some("1".to_string()), Some("23:59:59.999999".to_string())],
            vec![Some("2".to_string()), Some("23:59:59.999999".to_string())],
        ]
    );
    let (pyiceberg, duckdb) = common::iceberg::read_iceberg(&warehouse.join("public/clock"));
    assert_eq!(pyiceberg, source, "pyiceberg");
    assert_eq!(duckdb, source, "duckdb");
}

/// MySQL's TIME runs from -838:59:59 to 838:59:59. Under the default target forms
/// (`types = "portable"`) a time column is written as text, which holds every such value: the
/// negative and over-24-hour ones are carried as MySQL's exact text (read by DuckDB), in the
/// full load and the binlog alike, including negative TIME(1) and TIME(2) values with a
/// fraction, which the binlog stores as a complement (mysql_common 0.37.3 decodes those by
/// subtracting from an unsigned fraction: a panic in a debug build, a wrong positive time in a
/// release build; inlet decodes them itself). Under `types = "exact"` a time outside
/// 00:00:00..24:00:00, a negative one too, follows the value policy (Arrow's time ends below
/// 24:00:00): the default fails, "null" writes NULL, "text" the exact text.
#[test]
fn mysql_times_outside_a_day_are_written_as_their_text_under_the_portable_forms() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE zd;
         CREATE TABLE zd.clock (id BIGINT PRIMARY KEY, t TIME, f TIME(1), g TIME(2));
         INSERT INTO zd.clock VALUES (1, '-01:00:00', '12:34:56.5', '01:02:03.99'),
             (2, '100:00:00', NULL, NULL), (3, '838:59:59', '-00:00:00.5', '-00:00:01.25'),
             (4, '-838:59:59', '838:59:58.9', '838:59:58.99');",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "my", &my_task(&db.url("zd"), &out, ""));
    let mut child = spawn_run(&cfg);
    my_caught_up(&db, &mut child, &out);
    // Negative fractions in after images (inserts, updates) and before images (the updates of
    // 1 and 3), at zero, mid-range and next to the range's ends.
    db.admin(
        "INSERT INTO zd.clock VALUES (5, '-838:59:59', '838:59:58.9', '-01:02:03.99');
         UPDATE zd.clock SET t = '838:59:59', f = '12:34:56.5' WHERE id = 2;
         INSERT INTO zd.clock VALUES (6, '00:00:00', '100:00:00.5', '00:00:01.25');
         INSERT INTO zd.clock VALUES (7, '-00:00:01', '-00:00:00.5', '-00:00:01.25'),
             (8, NULL, '-12:34:56.7', '00:00:00.01'), (9, NULL, '-838:59:58.9', '-838:59:58.99');
         UPDATE zd.clock SET f = '-12:34:56.7', g = '-00:00:00.01' WHERE id = 1;
         UPDATE zd.clock SET f = '12:34:56.7' WHERE id = 3;",
    );
    my_caught_up(&db, &mut child, &out);
    let (code, stderr) = common::stop_run(child);
    assert_eq!(code, 0, "{stderr}");

    #[rustfmt::skip]
    let want = vec![
        row("LOAD", &[Some("1"), Some("-01:00:00"), Some("12:34:56.5"), Some("01:02:03.99")]),
        row("LOAD", &[Some("2"), Some("100:00:00"), None, None]),
        row("LOAD", &[Some("3"), Some("838:59:59"), Some("-00:00:00.5"), Some("-00:00:01.25")]),
        row("LOAD", &[Some("4"), Some("-838:59:59"), Some("838:59:58.9"), Some("838:59:58.99")]),
        row("I", &[Some("5"), Some("-838:59:59"), Some("838:59:58.9"), Some("-01:02:03.99")]),
        row("U", &[Some("2"), Some("838:59:59"), Some("12:34:56.5"), None]),
        row("I", &[Some("6"), Some("00:00:00"), Some("100:00:00.5"), Some("00:00:01.25")]),
        row("I", &[Some("7"), Some("-00:00:01"), Some("-00:00:00.5"), Some("-00:00:01.25")]),
        row("I", &[Some("8"), None, Some("-12:34:56.7"), Some("00:00:00.01")]),
        row("I", &[Some("9"), None, Some("-838:59:58.9"), Some("-838:59:58.99")]),
        row("U", &[Some("1"), Some("-01:00:00"), Some("-12:34:56.7"), Some("-00:00:00.01")]),
        row("U", &[Some("3"), Some("838:59:59"), Some("12:34:56.7"), Some("-00:00:01.25")]),
    ];
    let got = duckdb_rows(
        &out.join("zd/clock"),
        &["id", "t", "f", "g"],
        &["t", "f", "g"],
    );
    assert_eq!(got, want);

    // Replayed, the rows are MariaDB's own text of the table.
    let mut replayed = std::collections::BTreeMap::new();
    for (_, values) in &got {
        let text: Vec<String> = values
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "NULL".to_string()))
            .collect();
        replayed.insert(text[0].parse::<i64>().unwrap(), text.join("\t"));
    }
    let replayed: Vec<String> = replayed.into_values().collect();
    let server = db.admin("SELECT id, t, f, g FROM zd.clock ORDER BY id");
    assert_eq!(server.lines().collect::<Vec<_>>(), replayed);

    // Under the exact forms the same values follow the value policy (here the default, fail).
    let exact_out = dir.path().join("exact");
    let exact = task_file(
        dir.path(),
        "exact",
        &my_task(&db.url("zd"), &exact_out, "")
            .replace("full-load-and-cdc", "full-load")
            .replace(
                "kind = \"parquet\"\n",
                "kind = \"parquet\"\ntypes = \"exact\"\n",
            ),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", exact.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "zd.clock column t: the time -01:00:00.000000, outside 00:00:00..24:00:00 has no \
             exact Time64(µs) equivalent"
        ),
        "{stderr}"
    );

    // Streamed under the exact forms, times within a day: the positive ones are Time64(µs);
    // the negative ones follow the column's policy, NULL in `f` ("null") and the exact text
    // in `g` ("text", which makes `g` Utf8).
    db.admin(
        "CREATE TABLE zd.day (id BIGINT PRIMARY KEY, f TIME(1), g TIME(2));
         INSERT INTO zd.day VALUES (1, '12:34:56.7', '-00:00:01.25'), (2, '-00:00:00.5', '01:02:03.99');",
    );
    let day_out = dir.path().join("day");
    let day = task_file(
        dir.path(),
        "day",
        &my_task(
            &db.url("zd"),
            &day_out,
            "[values.columns]\n\"zd.day.f\" = \"null\"\n\"zd.day.g\" = \"text\"",
        )
        .replace("include = [\"zd.*\"]", "include = [\"zd.day\"]")
        .replace(
            "kind = \"parquet\"\n",
            "kind = \"parquet\"\ntypes = \"exact\"\n",
        ),
    );
    let mut child = spawn_run(&day);
    my_caught_up(&db, &mut child, &day_out);
    db.admin(
        "INSERT INTO zd.day VALUES (3, '-12:34:56.7', '-01:02:03.99'), (4, '23:59:59.9', '00:00:00.01');
         UPDATE zd.day SET f = '-00:00:00.5', g = '-00:00:00.01' WHERE id = 1;
         UPDATE zd.day SET f = '00:00:00.1' WHERE id = 2;",
    );
    my_caught_up(&db, &mut child, &day_out);
    let (code, stderr) = common::stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    let types = [
        ("id", DataType::Int64),
        ("f", DataType::Time64(TimeUnit::Microsecond)),
        ("g", DataType::Utf8),
    ];
    #[rustfmt::skip]
    let want = vec![
        row("LOAD", &[Some("1"), Some("12:34:56.700"), Some("-00:00:01.25")]),
        row("LOAD", &[Some("2"), None, Some("01:02:03.99")]),
        row("I", &[Some("3"), None, Some("-01:02:03.99")]),
        row("I", &[Some("4"), Some("23:59:59.900"), Some("00:00:00.01")]),
        row("U", &[Some("1"), None, Some("-00:00:00.01")]),
        row("U", &[Some("2"), Some("00:00:00.100"), Some("01:02:03.99")]),
    ];
    assert_eq!(written_rows(&day_out.join("zd/day"), &types), want);
}
