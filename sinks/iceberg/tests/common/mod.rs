//! Shared test fixtures: a typed table, a row model with canonical values, change batches in
//! `inlet_core::change_schema` layout, and reading a table back with pyiceberg and DuckDB.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Int16Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, TimeUnit};
use inlet_core::{change_schema, Column, Position, TableId, TableSchema};
use inlet_sink_iceberg::{IcebergError, IcebergTarget, IcebergTargetConfig};

pub fn col(name: &str, source: &str, dt: DataType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        source_type: source.into(),
        field: Field::new(name, dt, nullable),
        distinct_values: None,
    }
}

/// `public.<name>`: id bigint PK, name text, qty smallint, price numeric(12,2),
/// ts timestamptz, flag boolean, day date.
pub fn table(name: &str, with_pk: bool) -> TableSchema {
    TableSchema {
        id: TableId::new("public", name),
        columns: vec![
            col("id", "bigint", DataType::Int64, false),
            col("name", "text", DataType::Utf8, true),
            col("qty", "smallint", DataType::Int16, true),
            col("price", "numeric(12,2)", DataType::Decimal128(12, 2), true),
            col(
                "ts",
                "timestamp with time zone",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            col("flag", "boolean", DataType::Boolean, true),
            col("day", "date", DataType::Date32, true),
        ],
        primary_key: if with_pk { vec!["id".into()] } else { vec![] },
    }
}

/// One row's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub name: Option<String>,
    pub qty: Option<i16>,
    pub price: Option<i128>,
    pub ts: Option<i64>,
    pub flag: Option<bool>,
    pub day: Option<i32>,
}

impl Row {
    /// A deterministic row for `id` in `version`, with some nulls and awkward values.
    pub fn make(id: i64, version: u64) -> Self {
        let v = version as i64;
        let k = id.wrapping_mul(31).wrapping_add(v * 7);
        Row {
            id,
            name: (k % 5 != 0).then(|| format!("name-{id}-{version}-é\u{1F600}")),
            qty: (k % 7 != 0).then(|| ((k % 60_000) - 30_000) as i16),
            price: (k % 3 != 0).then(|| i128::from(k) * 1_234 - 5_000_000),
            ts: (k % 11 != 0).then(|| 1_700_000_000_000_000 + k * 1_000_003),
            flag: (k % 4 != 0).then_some(k % 2 == 0),
            day: (k % 13 != 0).then(|| 19_000 + (k % 1000) as i32),
        }
    }

    /// The reader script's canonical text of each column.
    pub fn canonical(&self) -> Vec<Option<String>> {
        vec![
            Some(self.id.to_string()),
            self.name.clone(),
            self.qty.map(|q| q.to_string()),
            self.price.map(decimal_text),
            self.ts.map(|t| t.to_string()),
            self.flag.map(|f| f.to_string()),
            self.day.map(|d| {
                (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                    + chrono::Duration::days(i64::from(d)))
                .to_string()
            }),
        ]
    }
}

/// numeric(12,2) text as Python's Decimal prints it.
pub fn decimal_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

fn columns(rows: &[&Row]) -> Vec<ArrayRef> {
    let mut id = Int64Builder::new();
    let mut name = StringBuilder::new();
    let mut qty = Int16Builder::new();
    let mut price = Decimal128Builder::new()
        .with_precision_and_scale(12, 2)
        .unwrap();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut flag = BooleanBuilder::new();
    let mut day = Date32Builder::new();
    for r in rows {
        id.append_value(r.id);
        name.append_option(r.name.as_deref());
        qty.append_option(r.qty);
        price.append_option(r.price);
        ts.append_option(r.ts);
        flag.append_option(r.flag);
        day.append_option(r.day);
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(qty.finish()),
        Arc::new(price.finish()),
        Arc::new(ts.finish()),
        Arc::new(flag.finish()),
        Arc::new(day.finish()),
    ]
}

/// A full-load batch (`TableSchema::arrow_schema()`).
pub fn load_batch(table: &TableSchema, rows: &[Row]) -> RecordBatch {
    let refs: Vec<&Row> = rows.iter().collect();
    RecordBatch::try_new(table.arrow_schema(), columns(&refs)).unwrap()
}

/// One change: op, commit position, row (a delete carries the row as it was).
#[derive(Debug, Clone)]
pub struct Change {
    pub op: &'static str,
    pub lsn: u64,
    pub row: Row,
}

/// A change batch in `change_schema` layout.
pub fn change_batch(table: &TableSchema, changes: &[Change]) -> RecordBatch {
    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};
    let rows: Vec<&Row> = changes.iter().map(|c| &c.row).collect();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.op))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                changes.iter().map(|c| 1_700_000_000_000_000 + c.lsn as i64),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(
            changes.iter().map(|c| c.lsn as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            changes.iter().map(|c| c.lsn as i64 / 10),
        )),
    ];
    cols.extend(columns(&rows));
    RecordBatch::try_new(change_schema(table), cols).unwrap()
}

/// A folder-catalog target in `dir`.
pub fn target(dir: &Path) -> IcebergTarget {
    target_with(dir, "")
}

/// A target with extra TOML settings.
pub fn target_with(dir: &Path, extra: &str) -> IcebergTarget {
    let text = format!("warehouse = \"file://{}\"\n{extra}", dir.display());
    let config: IcebergTargetConfig = toml::from_str(&text).unwrap();
    IcebergTarget::new(&config, "test-task").unwrap()
}

/// S3 settings of a moto server (test credentials).
pub fn moto_builder(endpoint: &str) -> object_store::aws::AmazonS3Builder {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    AmazonS3Builder::new()
        .with_config(AmazonS3ConfigKey::Endpoint, endpoint)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_region("us-east-1")
}

/// The reader script's environment for a moto server.
pub fn moto_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INLET_S3_ENDPOINT", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// A target on moto with extra TOML settings.
pub fn s3_target(endpoint: &str, warehouse: &str, extra: &str) -> IcebergTarget {
    let text = format!("warehouse = \"{warehouse}\"\n{extra}");
    let config: IcebergTargetConfig = toml::from_str(&text).unwrap();
    let endpoint = endpoint.to_string();
    IcebergTarget::with_s3_builder(&config, "test-task", move || moto_builder(&endpoint)).unwrap()
}

/// The current metadata file of a folder-catalog table.
pub fn metadata_file(dir: &Path, namespace: &str, table: &str) -> String {
    let meta = dir.join(namespace).join(table).join("metadata");
    let hint = std::fs::read_to_string(meta.join("version-hint.text")).unwrap();
    meta.join(format!("v{}.metadata.json", hint.trim()))
        .display()
        .to_string()
}

/// Both readers' view of a table.
pub fn read_back(metadata: &str) -> serde_json::Value {
    read_back_env(metadata, &[])
}

/// Both readers' view of a table, with extra environment for the script (S3, Glue).
pub fn read_back_env(metadata: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/read_table.py");
    let out = std::process::Command::new(inlet_testkit::python())
        .arg(script)
        .arg(metadata)
        .envs(env.iter().copied())
        .output()
        .expect("run the reader script");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reader output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn reader_rows(v: &serde_json::Value) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<Vec<Option<String>>> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// Asserts both readers see exactly `expected` (canonical rows, any order), with the given
/// column names and per-reader column types. Returns the readers' output.
pub fn assert_rows(
    metadata: &str,
    columns: &[&str],
    expected: Vec<Vec<Option<String>>>,
    pyiceberg_types: &[&str],
    duckdb_types: &[&str],
) -> serde_json::Value {
    assert_rows_env(
        metadata,
        &[],
        columns,
        expected,
        pyiceberg_types,
        duckdb_types,
    )
}

/// [`assert_rows`] with extra environment for the reader script.
pub fn assert_rows_env(
    metadata: &str,
    env: &[(&str, &str)],
    columns: &[&str],
    expected: Vec<Vec<Option<String>>>,
    pyiceberg_types: &[&str],
    duckdb_types: &[&str],
) -> serde_json::Value {
    let got = read_back_env(metadata, env);
    let mut expected = expected;
    expected.sort();
    for (reader, types) in [("pyiceberg", pyiceberg_types), ("duckdb", duckdb_types)] {
        let r = &got[reader];
        assert!(r.get("error").is_none(), "{reader}: {}", r["error"]);
        let cols: Vec<&str> = r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cols, columns, "{reader} columns");
        let t: Vec<&str> = r["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(t, types, "{reader} types");
        let rows = reader_rows(r);
        if rows != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|r| !rows.contains(r))
                .take(5)
                .collect();
            let extra: Vec<_> = rows
                .iter()
                .filter(|r| !expected.contains(r))
                .take(5)
                .collect();
            panic!(
                "{reader}: {} rows, expected {}; missing (first 5) {missing:?}; unexpected \
                 (first 5) {extra:?}",
                rows.len(),
                expected.len()
            );
        }
    }
    got
}

pub const COLUMNS: [&str; 7] = ["id", "name", "qty", "price", "ts", "flag", "day"];
pub const PYICEBERG_TYPES: [&str; 7] = [
    "int64",
    "string",
    "int32",
    "decimal128(12, 2)",
    "timestamp[us, tz=UTC]",
    "bool",
    "date32[day]",
];
pub const DUCKDB_TYPES: [&str; 7] = [
    "BIGINT",
    "VARCHAR",
    "INTEGER",
    "DECIMAL(12,2)",
    "TIMESTAMP WITH TIME ZONE",
    "BOOLEAN",
    "DATE",
];

/// Canonical rows of a model.
pub fn expected(model: &BTreeMap<i64, Row>) -> Vec<Vec<Option<String>>> {
    model.values().map(Row::canonical).collect()
}

/// xorshift64*: a deterministic generator, so a failing workload can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Applies changes to the model.
pub fn apply_model(model: &mut BTreeMap<i64, Row>, changes: &[Change]) {
    for c in changes {
        match c.op {
            "I" | "U" => {
                model.insert(c.row.id, c.row.clone());
            }
            "D" => {
                model.remove(&c.row.id);
            }
            "T" => model.clear(),
            _ => unreachable!(),
        }
    }
}

/// A random transaction mix over the model's keys: inserts of new ids, updates and deletes
/// of live ones, repeated updates of one key in the same batch.
pub fn random_changes(
    rng: &mut Rng,
    model: &BTreeMap<i64, Row>,
    next_id: &mut i64,
    lsn: &mut u64,
    n: usize,
) -> Vec<Change> {
    let mut shadow = model.clone();
    let mut out = Vec::new();
    for _ in 0..n {
        *lsn += 1 + rng.below(3);
        let keys: Vec<i64> = shadow.keys().copied().collect();
        let pick = rng.below(10);
        let change = if pick < 4 || keys.is_empty() {
            *next_id += 1;
            Change {
                op: "I",
                lsn: *lsn,
                row: Row::make(*next_id, *lsn),
            }
        } else if pick < 8 {
            let id = keys[rng.below(keys.len() as u64) as usize];
            Change {
                op: "U",
                lsn: *lsn,
                row: Row::make(id, *lsn),
            }
        } else {
            let id = keys[rng.below(keys.len() as u64) as usize];
            Change {
                op: "D",
                lsn: *lsn,
                row: shadow[&id].clone(),
            }
        };
        apply_model(&mut shadow, std::slice::from_ref(&change));
        out.push(change);
    }
    out
}

/// The test REST catalog (tests/readers/rest_catalog_server.py: pyiceberg's SqlCatalog behind
/// the REST API) on a free loopback port; stopped when dropped.
pub struct RestCatalogServer {
    child: Option<std::process::Child>,
    pub port: u16,
    pub uri: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl RestCatalogServer {
    /// Starts the server over `warehouse` (a local folder) with its sqlite catalog in `db_dir`.
    /// `args` are extra flags (`--auth token`, ...); `env` holds the secrets it checks.
    pub fn start(warehouse: &Path, db_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            "--warehouse".to_string(),
            format!("file://{}", warehouse.display()),
            "--db".to_string(),
            db_dir.join("catalog.db").display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = Self {
            child: None,
            port: 0,
            uri: String::new(),
            args: all,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn(0);
        server
    }

    fn spawn(&mut self, port: u16) {
        use std::io::BufRead;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/rest_catalog_server.py");
        let mut child = std::process::Command::new(inlet_testkit::python())
            .arg(script)
            .args(&self.args)
            .args(["--port", &port.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the REST catalog server (make setup installs pyiceberg, sqlalchemy)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let status = child.wait();
            panic!("the REST catalog server did not start ({status:?}); it printed {line:?}")
        });
        self.port = port;
        self.uri = format!("http://127.0.0.1:{port}");
        self.child = Some(child);
    }

    /// Stops the server (SIGKILL: nothing is flushed or answered any more).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, over the same catalog database.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(port);
    }

    /// GET/POST a test hook (`/test/stats`, `/test/revoke-tokens`) and return its JSON.
    pub fn hook(&self, method: &str, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let addr = format!("127.0.0.1:{}", self.port);
        let mut conn = std::net::TcpStream::connect(&addr).expect("connect to the REST server");
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = conn.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for RestCatalogServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Closing stdin asks it to exit; kill if it has not.
            drop(child.stdin.take());
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Full load of 800 rows at position 100, then `rounds` commits of random changes, reopening
/// the table halfway; `between` runs after each commit. Returns the model and the last
/// position.
pub async fn load_and_upsert(
    target: &IcebergTarget,
    t: &TableSchema,
    rounds: usize,
    mut between: impl FnMut(usize),
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

    let mut rng = Rng(0x5E57);
    let (mut next_id, mut lsn) = (10_000i64, 100u64);
    let mut sink = target.upsert_table(t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(100)));
    for round in 0..rounds {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 200);
        apply_model(&mut model, &changes);
        sink.apply(t, &change_batch(t, &changes)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
        between(round);
        if round == rounds / 2 {
            drop(sink);
            sink = target.upsert_table(t).await.unwrap();
            assert_eq!(sink.committed_position(), Some(Position(lsn)));
            assert_eq!(sink.indexed_rows(), model.len());
        }
    }
    (model, lsn)
}

/// Two writers of one table: the second commit on the same version is refused, and the table
/// keeps the first one's change, which `model` takes in.
pub async fn assert_second_writer_loses(
    target: &IcebergTarget,
    t: &TableSchema,
    model: &mut BTreeMap<i64, Row>,
    lsn: u64,
) {
    let mut a = target.upsert_table(t).await.unwrap();
    let mut b = target.upsert_table(t).await.unwrap();
    let id_a = *model.keys().next().unwrap();
    let id_b = *model.keys().nth(1).unwrap();
    let change = |id: i64, lsn: u64| Change {
        op: "U",
        lsn,
        row: Row::make(id, lsn),
    };
    a.apply(t, &change_batch(t, &[change(id_a, lsn + 1)]))
        .await
        .unwrap();
    b.apply(t, &change_batch(t, &[change(id_b, lsn + 1)]))
        .await
        .unwrap();
    a.commit(Position(lsn + 1)).await.unwrap();
    let err = b.commit(Position(lsn + 1)).await.unwrap_err();
    assert!(
        matches!(err, IcebergError::CommitConflict { .. }),
        "expected a conflict, got {err}"
    );
    assert!(err.is_transient());
    model.insert(id_a, Row::make(id_a, lsn + 1));
}
