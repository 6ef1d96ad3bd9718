//! The reader matrix (issue 14): a type zoo loaded and changed (insert, updates, deletes) by
//! `inlet run` into Parquet (LOAD and change files) and Iceberg, then read by every engine
//! installed from PyPI (tests/readers/reader_matrix.py): Parquet by pyarrow, DuckDB, polars,
//! daft, DataFusion, chDB, Tableau Hyper, pandas, Spark 3.5 and Spark 4.0; Iceberg by pyiceberg,
//! DuckDB, polars (native and through pyiceberg), daft, DataFusion (pyiceberg-core's table
//! provider), chDB, Hyper, pandas (through pyiceberg) and Spark 3.5 with the Iceberg runtime jar
//! from PyPI (its own venv, .venv-spark35, made by the first run; tests/readers/spark35.py). One
//! reader run for all tables, the two Spark JVMs beside the other engines: ~35 s on 2 cores,
//! most of it the JVMs' start. Each engine's values are compared with the source's, column by
//! column; the test asserts the whole matrix, so a reader that starts or stops reading a column
//! right shows up as a failure naming it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{inlet, python, read_table, spawn_run, stop_run, task_file, PgServer};

const ZOO: &str = r#"
CREATE TABLE zoo (
  id int PRIMARY KEY, b boolean, i2 smallint, i8 bigint, f8 double precision, n2 numeric(10,2),
  t text, by bytea, u uuid, d date, tm time, ts timestamp, tz timestamptz, ia int4[], ta text[],
  jb jsonb, f4 real, n38 numeric(38,10), da date[], ua uuid[], tma time[]
);
ALTER TABLE zoo REPLICA IDENTITY FULL;
INSERT INTO zoo VALUES
 (1, true, 12, 1234567890123, 1.5, 12345.60, 'hello é 😀', '\x00ff10',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:07.123456',
  '2024-02-29 13:45:07.5', '2024-02-29 13:45:07.000001+05', '{1,NULL,3}', '{"a,b",NULL,""}',
  '{"a": [1, 2.5]}', 1.5, '1234567890123456789012345678.0123456789',
  '{2024-02-29,NULL,0001-01-01}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}',
  '{13:45:07.123456,NULL,23:59:59.999999}'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL),
 (3, false, -32768, -9223372036854775808, -2.25e-05, -99999999.99, '', '\x',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '9999-12-31', '23:59:59.999999',
  '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '{}', '{}', '[]', -2.25,
  '-9999999999999999999999999999.9999999999', '{}', '{}', '{}'),
 (4, true, 0, 0, 0, 0, 'x', '\x00', '00000000-0000-0000-0000-000000000000', '0001-01-01',
  '00:00:00', '0001-01-01 00:00:00', '1970-01-01 00:00:00+00', '{0}', '{x}', 'null', 0, 0,
  '{9999-12-31}', '{00000000-0000-0000-0000-000000000000}', '{00:00:00}');
-- Years outside 1-9999 (PostgreSQL's dates reach 5874897 and 4713 BC), which chDB, pandas and
-- Hyper refuse: under the portable forms they follow the value policy, here "null" (the task's
-- [values.columns]); the years' own ends are kept.
CREATE TABLE far_dates (id int PRIMARY KEY, d date, ts timestamp);
INSERT INTO far_dates VALUES (1, '2024-01-01', '2024-01-01 12:00:00'),
 (2, '5874897-12-31', '10000-01-01 00:00:00'), (3, NULL, NULL),
 (4, '0044-03-15 BC', '4713-01-01 00:00:00 BC'),
 (5, '0001-01-01', '9999-12-31 23:59:59.999999');
"#;

const CHANGES: &str = r#"
INSERT INTO zoo VALUES
 (10, false, 7, 70, 7.25, 7.70, 'new', '\x07', '7d444840-9dc0-11d1-b245-5ffdce74fad2',
  '1999-12-31', '12:00:00', '1999-12-31 23:59:59', '1999-12-31 23:59:59+00', '{7}',
  '{seven}', '{"k": "v"}', 7.5, 7.7, '{1999-12-31}', '{7d444840-9dc0-11d1-b245-5ffdce74fad2}',
  '{12:00:00}');
UPDATE zoo SET t = 'updated', tm = '01:02:03' WHERE id = 1;
UPDATE zoo SET i2 = 32767 WHERE id = 3;
DELETE FROM zoo WHERE id = 4;
INSERT INTO far_dates VALUES (6, '20000-01-01', '12345-06-07 00:00:00');
UPDATE far_dates SET d = '99999-01-01', ts = '1999-12-31 23:59:59' WHERE id = 1;
"#;

const COLUMNS: &[&str] = &[
    "id", "b", "i2", "i8", "f8", "n2", "t", "by", "u", "d", "tm", "ts", "tz", "ia", "ta", "jb",
    "f4", "n38", "da", "ua", "tma",
];

/// The canonical text of each column (reader_matrix.py's forms), computed by PostgreSQL.
fn canonical_select() -> String {
    let micros = |c: &str| format!("((extract(epoch from {c}) * 1000000)::bigint)::text");
    let list = |c: &str| {
        format!("CASE WHEN {c} IS NULL THEN NULL ELSE to_jsonb(ARRAY(SELECT x::text FROM unnest({c}) x))::text END")
    };
    let exprs: Vec<String> = vec![
        "id::text".into(),
        "CASE WHEN b THEN 'true' WHEN NOT b THEN 'false' END".into(),
        "i2::text".into(),
        "i8::text".into(),
        // Python's repr: integral values end in ".0".
        "CASE WHEN f8 = trunc(f8) AND abs(f8) < 1e15 THEN trunc(f8)::bigint::text || '.0' ELSE f8::text END".into(),
        "n2::text".into(),
        "t".into(),
        "encode(by, 'hex')".into(),
        "u::text".into(),
        "d::text".into(),
        "tm::text".into(),
        micros("ts"),
        micros("tz"),
        list("ia"),
        list("ta"),
        "jb::text".into(),
        // Exactly representable values only: a reader's float32 printed as a float64.
        "CASE WHEN f4 = trunc(f4) THEN trunc(f4)::bigint::text || '.0' ELSE f4::text END".into(),
        "n38::text".into(),
        list("da"),
        list("ua"),
        list("tma"),
    ];
    format!("SELECT {} FROM zoo", exprs.join(", "))
}

type Rows = Vec<Vec<Option<String>>>;

async fn source_rows(client: &tokio_postgres::Client) -> BTreeMap<i32, Vec<Option<String>>> {
    client
        .query(&canonical_select(), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let row: Vec<Option<String>> = (0..COLUMNS.len()).map(|i| r.get(i)).collect();
            let id: i32 = row[0].as_deref().unwrap().parse().unwrap();
            (id, row)
        })
        .collect()
}

/// `far_dates` as the readers should see it: the source's values, those outside years 1-9999 as
/// NULL (the value policy "null").
async fn far_rows(client: &tokio_postgres::Client, filter: &str) -> Rows {
    let inside =
        |c: &str, lo: &str, hi: &str| format!("CASE WHEN {c} BETWEEN '{lo}' AND '{hi}' THEN");
    let sql = format!(
        "SELECT id::text, {} d::text END, {} ((extract(epoch from ts) * 1000000)::bigint)::text END \
         FROM far_dates {filter}",
        inside("d", "0001-01-01", "9999-12-31"),
        inside("ts", "0001-01-01", "9999-12-31 23:59:59.999999"),
    );
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1), r.get(2)])
        .collect()
}

fn task(name: &str, url: &str, target: &str) -> String {
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
{target}
[tables]
include = ["public.zoo", "public.far_dates"]
[cdc]
flush_interval_ms = 200
[values.columns]
"public.far_dates.d" = "null"
"public.far_dates.ts" = "null"
"#
    )
}

async fn wait_caught_up(
    client: &tokio_postgres::Client,
    child: &mut Child,
    slot: &str,
    checkpoint: &Path,
) {
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("inlet exited early with {status}:\n{err}");
        }
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn AND active FROM pg_replication_slots \
                 WHERE slot_name = $2",
                &[&target, &slot],
            )
            .await
            .unwrap();
        if row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)) && checkpoint.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{slot} did not catch up with {target}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Parquet paths of the list columns' leaves in every data file below `dir` (position-delete
/// files hold no lists), one sorted list per file.
fn list_leaf_paths(dir: &Path) -> Vec<Vec<String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                folders.push(path);
            } else if name.ends_with(".parquet") && !name.contains("-deletes-") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|f| {
            let reader = SerializedFileReader::new(std::fs::File::open(f).unwrap()).unwrap();
            let schema = reader.metadata().file_metadata().schema_descr_ptr();
            let mut paths: Vec<String> = schema
                .columns()
                .iter()
                .map(|c| c.path().string())
                .filter(|p| p.contains('.'))
                .collect();
            paths.sort();
            paths
        })
        .collect()
}

/// The summary of the current snapshot of the Iceberg table in `dir` (its newest
/// `v<N>.metadata.json`, as reader_matrix.py picks it).
fn current_summary(dir: &Path) -> serde_json::Value {
    let newest = std::fs::read_dir(dir.join("metadata"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let n = name.strip_prefix('v')?.strip_suffix(".metadata.json")?;
            Some((n.parse::<u64>().ok()?, name))
        })
        .max()
        .unwrap_or_else(|| panic!("no metadata in {}", dir.display()));
    let text = std::fs::read_to_string(dir.join("metadata").join(newest.1)).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let current = &meta["current-snapshot-id"];
    let snapshots = meta["snapshots"].as_array().unwrap();
    let snapshot = snapshots
        .iter()
        .find(|s| &s["snapshot-id"] == current)
        .unwrap();
    snapshot["summary"].clone()
}

/// One table read by every engine: `name` ("zoo parquet"), the source's rows the readers should
/// see (`want`) in the order of `columns`.
struct Job {
    name: String,
    kind: &'static str,
    dir: std::path::PathBuf,
    columns: &'static [&'static str],
    want: Rows,
}

/// The zoo's list columns: ClickHouse has no NULL array (`Nullable(Array)` is not a type), so
/// chDB reads a NULL array as `[]`.
const LISTS: &[&str] = &["ia", "ta", "da", "ua", "tma"];

/// Columns of `rows` that differ from `want`'s, each compared as a sorted multiset (a wrong column
/// is named alone); `why` labels what is printed for each.
fn differing(
    rows: &Rows,
    want: &Rows,
    columns: &[&'static str],
    why: &str,
) -> Result<Vec<&'static str>, String> {
    if rows.len() != want.len() {
        return Err(format!("{} rows, not {}", rows.len(), want.len()));
    }
    let mut out = Vec::new();
    for (c, name) in columns.iter().enumerate() {
        let mut a: Vec<&Option<String>> = rows.iter().map(|r| &r[c]).collect();
        let mut b: Vec<&Option<String>> = want.iter().map(|r| &r[c]).collect();
        a.sort();
        b.sort();
        if a != b {
            eprintln!("{why} {name}: got {a:?}\n  want {b:?}");
            out.push(*name);
        }
    }
    Ok(out)
}

/// Reads every job with every engine (tests/readers/reader_matrix.py, one run for all) and
/// returns each "<job> <engine>" verdict: "ok", "error" (the message is printed), "differs:
/// <columns>", or for chDB, whose arrays cannot be NULL, "ok, NULL arrays as []" when it reads
/// the source's values but NULL arrays as empty ones.
fn read_matrix(jobs: &[Job]) -> BTreeMap<String, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/readers/reader_matrix.py"
    );
    let spec: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            serde_json::json!({"name": j.name, "kind": j.kind, "dir": j.dir, "columns": j.columns})
        })
        .collect();
    let started = Instant::now();
    let out = Command::new(python())
        .args([script, &serde_json::to_string(&spec).unwrap()])
        .output()
        .unwrap();
    eprintln!("readers: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let mut verdicts = BTreeMap::new();
    for job in jobs {
        for (engine, got) in &doc[&job.name] {
            let why = format!("{} {engine}", job.name);
            eprintln!("{why}: {} s", got["seconds"]);
            let verdict = if let Some(e) = got.get("error") {
                // The message names temporary paths: printed, not compared.
                eprintln!("{why}: {}", e.as_str().unwrap_or_default());
                "error".to_string()
            } else {
                let rows: Rows = serde_json::from_value(got["rows"].clone()).unwrap();
                match differing(&rows, &job.want, job.columns, &why) {
                    Err(count) => count,
                    Ok(cols) if cols.is_empty() => "ok".to_string(),
                    Ok(cols) => {
                        // chDB: the source's values, with each NULL array as [].
                        let lists: Vec<usize> = (0..job.columns.len())
                            .filter(|&c| LISTS.contains(&job.columns[c]))
                            .collect();
                        let mut empty = job.want.clone();
                        for row in &mut empty {
                            for &c in &lists {
                                row[c].get_or_insert_with(|| "[]".to_string());
                            }
                        }
                        let as_chdb = engine == "chdb"
                            && differing(
                                &rows,
                                &empty,
                                job.columns,
                                &format!("{why} (NULL arrays as [])"),
                            ) == Ok(Vec::new());
                        if as_chdb {
                            "ok, NULL arrays as []".to_string()
                        } else {
                            format!("differs: {}", cols.join(", "))
                        }
                    }
                }
            };
            verdicts.insert(why, verdict);
        }
    }
    verdicts
}

#[tokio::test(flavor = "multi_thread")]
async fn every_engine_reads_the_type_zoo() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(ZOO).await.unwrap();
    let before = source_rows(&client).await;
    let far_before = far_rows(&client, "").await;

    let dir = tempfile::tempdir().unwrap();
    let (pq, ice) = (dir.path().join("pq"), dir.path().join("ice"));
    let url = pg.url("postgres");
    let pq_cfg = task_file(
        dir.path(),
        "pq",
        &task(
            "matrix-pq",
            &url,
            &format!("kind = \"parquet\"\nurl = \"{}\"", pq.display()),
        ),
    );
    let ice_cfg = task_file(
        dir.path(),
        "ice",
        &task(
            "matrix-ice",
            &url,
            &format!("kind = \"iceberg\"\nwarehouse = \"{}\"", ice.display()),
        ),
    );
    let mut pq_run = spawn_run(&pq_cfg);
    let mut ice_run = spawn_run(&ice_cfg);
    let pq_ckpt = pq.join("_inlet/matrix-pq/checkpoint");
    let ice_ckpt = ice.join("_inlet/matrix-ice/checkpoint");
    wait_caught_up(&client, &mut pq_run, "inlet_matrix_pq", &pq_ckpt).await;
    wait_caught_up(&client, &mut ice_run, "inlet_matrix_ice", &ice_ckpt).await;
    client.batch_execute(CHANGES).await.unwrap();
    let after = source_rows(&client).await;
    wait_caught_up(&client, &mut pq_run, "inlet_matrix_pq", &pq_ckpt).await;
    wait_caught_up(&client, &mut ice_run, "inlet_matrix_ice", &ice_ckpt).await;
    let (code, err) = stop_run(pq_run);
    assert_eq!(code, 0, "{err}");
    let (code, err) = stop_run(ice_run);
    assert_eq!(code, 0, "{err}");

    // Parquet: the LOAD rows, then each change's image (a delete's is the old row: replica
    // identity full).
    let mut pq_want: Rows = before.values().cloned().collect();
    for id in [10, 1, 3] {
        pq_want.push(after[&id].clone());
    }
    pq_want.push(before[&4].clone());
    let ice_want: Rows = after.values().cloned().collect();

    // Lists are named as the Parquet spec names them (`<col>.list.element`), as Spark and Iceberg
    // Java write them, rather than Arrow's own `item`.
    for table in [pq.join("public/zoo"), ice.join("public/zoo/data")] {
        let files = list_leaf_paths(&table);
        assert!(files.len() >= 2, "{}: {files:?}", table.display());
        for paths in files {
            let want = ["da", "ia", "ta", "tma", "ua"].map(|c| format!("{c}.list.element"));
            assert_eq!(paths, want, "{}", table.display());
        }
    }

    // Parquet: the LOAD rows, then the insert's and the update's images.
    let mut far_pq = far_before;
    far_pq.extend(far_rows(&client, "WHERE id IN (6, 1)").await);
    let far_ice = far_rows(&client, "").await;
    let job = |table: &str, kind: &'static str, dir: &Path, columns, want: Rows| Job {
        name: format!("{table} {kind}"),
        kind,
        dir: dir.join("public").join(table),
        columns,
        want,
    };
    const FAR: &[&str] = &["id", "d", "ts"];
    // The updates and the delete left position-delete files (and no equality deletes) in both
    // Iceberg tables: an Iceberg engine reads the source's rows only if it applies them.
    for table in ["zoo", "far_dates"] {
        let summary = current_summary(&ice.join("public").join(table));
        let count = |key: &str| summary[key].as_str().and_then(|n| n.parse::<u64>().ok());
        assert!(
            count("total-position-deletes") > Some(0),
            "{table}: {summary}"
        );
        assert_eq!(
            count("total-equality-deletes"),
            Some(0),
            "{table}: {summary}"
        );
    }
    let matrix = read_matrix(&[
        job("zoo", "parquet", &pq, COLUMNS, pq_want),
        job("zoo", "iceberg", &ice, COLUMNS, ice_want),
        job("far_dates", "parquet", &pq, FAR, far_pq),
        job("far_dates", "iceberg", &ice, FAR, far_ice),
    ]);
    let printed: Vec<String> = matrix.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    eprintln!("reader matrix:\n{}", printed.join("\n"));
    let want: BTreeMap<String, String> = EXPECTED
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        matrix,
        want,
        "the reader matrix changed:\n{}",
        printed.join("\n")
    );
}

/// The matrix under the default settings (table format engine: verdict); the README's type
/// table says which engine reads which form. Spark 4.0 reads no Iceberg: the Iceberg runtime on
/// PyPI (snowpark-connect-deps-iceberg) is built for Spark 3.5 only.
///
/// Known difference: chDB reads a NULL array as `[]` (ClickHouse has no `Nullable(Array)`);
/// the test checks that it reads exactly the source's values with that one change.
///
/// Before: DuckDB and polars read the zoo's uuid as 16 bytes and Hyper refused the Iceberg type
/// `uuid` (until the portable forms, issue 14 item 1); chDB (Parquet), Hyper and pandas refused
/// `far_dates` (until dates outside years 1–9999 followed the value policy); Spark 3.5 refused
/// every Parquet file holding a date before 1582-10-15 (READ_ANCIENT_DATETIME, until the files
/// said which calendar they use); Hyper's lists were read as undecoded bytes by this script
/// (until it read them as Hyper's text of them); DataFusion read no Iceberg (pyiceberg-core
/// 0.11's table provider is built for DataFusion 54, and 55 refused it: requirements-dev.txt
/// pins 54). pandas is read with its default conversion (Python dates, numpy arrays; an integer
/// column or list holding NULL becomes floats, compared as the integers they are).
const EXPECTED: &[(&str, &str)] = &[
    ("far_dates iceberg chdb", "ok"),
    ("far_dates iceberg daft", "ok"),
    ("far_dates iceberg datafusion", "ok"),
    ("far_dates iceberg duckdb", "ok"),
    ("far_dates iceberg hyper", "ok"),
    ("far_dates iceberg pandas", "ok"),
    ("far_dates iceberg polars-native", "ok"),
    ("far_dates iceberg polars-pyiceberg", "ok"),
    ("far_dates iceberg pyiceberg", "ok"),
    ("far_dates iceberg spark-3.5", "ok"),
    ("far_dates parquet chdb", "ok"),
    ("far_dates parquet daft", "ok"),
    ("far_dates parquet datafusion", "ok"),
    ("far_dates parquet duckdb", "ok"),
    ("far_dates parquet hyper", "ok"),
    ("far_dates parquet pandas", "ok"),
    ("far_dates parquet polars", "ok"),
    ("far_dates parquet pyarrow", "ok"),
    ("far_dates parquet spark-3.5", "ok"),
    ("far_dates parquet spark-4.0", "ok"),
    ("zoo iceberg chdb", "ok, NULL arrays as []"),
    ("zoo iceberg daft", "ok"),
    ("zoo iceberg datafusion", "ok"),
    ("zoo iceberg duckdb", "ok"),
    ("zoo iceberg hyper", "ok"),
    ("zoo iceberg pandas", "ok"),
    ("zoo iceberg polars-native", "ok"),
    ("zoo iceberg polars-pyiceberg", "ok"),
    ("zoo iceberg pyiceberg", "ok"),
    ("zoo iceberg spark-3.5", "ok"),
    ("zoo parquet chdb", "ok, NULL arrays as []"),
    ("zoo parquet daft", "ok"),
    ("zoo parquet datafusion", "ok"),
    ("zoo parquet duckdb", "ok"),
    ("zoo parquet hyper", "ok"),
    ("zoo parquet pandas", "ok"),
    ("zoo parquet polars", "ok"),
    ("zoo parquet pyarrow", "ok"),
    ("zoo parquet spark-3.5", "ok"),
    ("zoo parquet spark-4.0", "ok"),
];

/// A date outside years 1–9999 under the default value policy (`fail`) stops the load, naming
/// the table, column, value, row and the settings that let it through; under `target.types =
/// "exact"` it is written as it is (Date32 holds it), as before the portable forms.
#[tokio::test(flavor = "multi_thread")]
async fn a_far_date_stops_the_load_under_fail_and_is_kept_under_exact() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE far (id int PRIMARY KEY, d date);
             INSERT INTO far VALUES (1, '2024-01-01'), (2, '5874897-12-31');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, types: &str| {
        let out = dir.path().join(name);
        let body = format!(
            "[task]\nname = \"{name}\"\nmode = \"full-load\"\n[source]\nkind = \"postgres\"\n\
             url = \"{}\"\ntls = \"disable\"\n[target]\nkind = \"parquet\"\nurl = \"{}\"\n{types}\n\
             [tables]\ninclude = [\"public.far\"]\n",
            pg.url("postgres"),
            out.display()
        );
        (task_file(dir.path(), name, &body), out)
    };

    let (cfg, _) = config("portable", "");
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "public.far column d: '5874897-12-31' (the row with id = 2) is outside years \
             1–9999, which chDB, pandas and Tableau Hyper cannot read; set [values.columns] \
             \"public.far.d\" = \"null\" (or \"text\") in the task file to write such values \
             as NULL (or the column as text), or target.types = \"exact\" to write them as \
             they are"
        ),
        "{stderr}"
    );

    let (cfg, out) = config("exact", "types = \"exact\"");
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut days: Vec<Option<i32>> = read_table(&out.join("public/far"))
        .iter()
        .flat_map(|b| {
            let d = b.column_by_name("d").unwrap();
            d.as_any()
                .downcast_ref::<arrow_array::Date32Array>()
                .unwrap()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    days.sort();
    // 2024-01-01 and 5874897-12-31 in days since 1970-01-01.
    assert_eq!(days, vec![Some(19_723), Some(2_145_042_905)]);
}
