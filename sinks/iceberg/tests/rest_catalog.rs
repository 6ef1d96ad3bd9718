//! The Iceberg sink with the REST catalog, against tests/readers/rest_catalog_server.py: the
//! REST API over pyiceberg's own SqlCatalog, which validates the requirements, writes the
//! metadata files and swaps them. The server checks the bearer token, OAuth2 client
//! credentials or SigV4 signature on every request and serves under a `prefix` it announces in
//! /v1/config. Tables are read back by pyiceberg's RestCatalog client and by DuckDB on the
//! metadata location the catalog reports, and compared with a model row by row.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use inlet_core::{Position, TableSchema};
use inlet_sink_iceberg::{IcebergError, IcebergTarget, IcebergTargetConfig, MaintenanceConfig};
use object_store::aws::AmazonS3Builder;

/// The catalog's warehouse name; the server refuses /v1/config for any other.
const CATALOG_WAREHOUSE: &str = "inlet-test-wh";

/// Sets test secrets before anything runs: each test names its own variables, so tests in one
/// process do not see each other's.
fn set_env(vars: &[(&str, &str)]) {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
}

fn rest_config(warehouse: &Path, uri: &str, extra: &str) -> IcebergTargetConfig {
    let text = format!(
        "warehouse = \"file://{}\"\nnamespace = \"inlet.replica\"\ncdc_file_size_mb = 1\n\
         [catalog]\nkind = \"rest\"\nuri = \"{uri}\"\nwarehouse = \"{CATALOG_WAREHOUSE}\"\n{extra}",
        warehouse.display()
    );
    toml::from_str(&text).unwrap()
}

fn rest_target(
    warehouse: &Path,
    uri: &str,
    extra: &str,
    s3: AmazonS3Builder,
) -> Result<IcebergTarget, IcebergError> {
    let config = rest_config(warehouse, uri, extra);
    IcebergTarget::with_s3_builder(&config, "test-task", move || s3)
}

fn no_s3() -> AmazonS3Builder {
    AmazonS3Builder::new().with_region("us-east-1")
}

/// Reads the table through pyiceberg's REST client (with `reader_env` for its auth) and with
/// DuckDB on the metadata location the catalog reports; both must equal the model.
async fn assert_read_back(
    target: &IcebergTarget,
    t: &TableSchema,
    server: &RestCatalogServer,
    reader_env: &[(&str, &str)],
    model: &BTreeMap<i64, Row>,
    lsn: u64,
) {
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    let table = format!("inlet.replica.{}", t.id.name);
    let mut env: Vec<(&str, &str)> = vec![
        ("INLET_REST_URI", server.uri.as_str()),
        ("INLET_REST_TABLE", table.as_str()),
        ("INLET_REST_WAREHOUSE", CATALOG_WAREHOUSE),
    ];
    env.extend_from_slice(reader_env);
    let got = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    // pyiceberg found the table through the catalog, at the location inlet committed last.
    assert_eq!(got["pyiceberg"]["metadata_location"], meta.as_str());
    assert_eq!(
        got["pyiceberg"]["summary"]["inlet.position"],
        format!("{lsn:016X}")
    );
    assert_eq!(
        got["pyiceberg"]["identifier_field_ids"],
        serde_json::json!([1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_with_a_bearer_token_commits_and_both_readers_agree() {
    let token = "tok-bearer-5f1c7e2a";
    set_env(&[("INLET_TEST_REST_TOKEN_A", token)]);
    let dir = tempfile::tempdir().unwrap();
    let (wh, db) = (dir.path().join("wh"), dir.path().join("db"));
    std::fs::create_dir_all(&db).unwrap();
    let server = RestCatalogServer::start(
        &wh,
        &db,
        &[
            "--auth",
            "token",
            "--catalog-warehouse",
            CATALOG_WAREHOUSE,
            "--prefix",
            "catalogs/main",
        ],
        &[("INLET_REST_TOKEN", token)],
    );
    let extra = "token_env = \"INLET_TEST_REST_TOKEN_A\"\n";
    let target = rest_target(&wh, &server.uri, extra, no_s3()).unwrap();
    target.check().await.expect("check");
    let shown = target.describe();
    assert!(
        shown.ends_with(&format!("(REST catalog {})", server.uri)),
        "{shown}"
    );
    assert!(!shown.contains(token), "{shown}");

    let t = table("orders", true);
    let (mut model, lsn) = load_and_upsert(&target, &t, 6, |_| {}).await;
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    // pyiceberg's SqlCatalog wrote it, under the location inlet asked for.
    let table_dir = format!(
        "file://{}/inlet.replica/orders",
        wh.canonicalize().unwrap().display()
    );
    assert!(
        meta.starts_with(&format!("{table_dir}/metadata/000")),
        "{meta}"
    );
    let reader = [("INLET_REST_TOKEN", token)];
    assert_read_back(&target, &t, &server, &reader, &model, lsn).await;

    assert_second_writer_loses(&target, &t, &mut model, lsn).await;
    assert_read_back(&target, &t, &server, &reader, &model, lsn + 1).await;

    // A second target (a restart) finds the table through the catalog and resumes.
    let again = rest_target(&wh, &server.uri, extra, no_s3()).unwrap();
    assert_eq!(
        again.committed_position(&t.id).await.unwrap(),
        Some(Position(lsn + 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_with_oauth2_refreshes_tokens_and_handles_schema_changes_and_maintenance() {
    let (client, secret) = ("inlet-client", "s3cr3t-oauth-9d2b");
    let credential = format!("{client}:{secret}");
    set_env(&[("INLET_TEST_REST_CREDENTIAL_B", credential.as_str())]);
    let dir = tempfile::tempdir().unwrap();
    let (wh, db) = (dir.path().join("wh"), dir.path().join("db"));
    std::fs::create_dir_all(&db).unwrap();
    let server = RestCatalogServer::start(
        &wh,
        &db,
        &[
            "--auth",
            "oauth",
            "--token-ttl",
            "2",
            "--scope",
            "catalog sql",
            "--catalog-warehouse",
            CATALOG_WAREHOUSE,
        ],
        &[
            ("INLET_REST_CLIENT_ID", client),
            ("INLET_REST_CLIENT_SECRET", secret),
        ],
    );
    let oauth_uri = format!("{}/v1/oauth/tokens", server.uri);
    let extra = format!(
        "credential_env = \"INLET_TEST_REST_CREDENTIAL_B\"\nscope = \"catalog sql\"\n\
         oauth2_server_uri = \"{oauth_uri}\"\n\
         [partition]\n\"public.events\" = [\"bucket[4](id)\"]\n"
    );
    let target = rest_target(&wh, &server.uri, &extra, no_s3()).unwrap();
    target.check().await.expect("check");

    let t = table("events", true);
    let (mut model, mut lsn) = load_and_upsert(&target, &t, 4, |round| match round {
        // Outlive the 2 s tokens: the client must fetch a new one before using it.
        1 => std::thread::sleep(std::time::Duration::from_millis(2_300)),
        // Invalidate every token: the next request gets a 401 and must retry with a new one.
        2 => {
            server.hook("POST", "/test/revoke-tokens");
        }
        _ => {}
    })
    .await;
    let stats = server.hook("GET", "/test/stats");
    assert!(stats["tokens_issued"].as_i64().unwrap() >= 3, "{stats}");
    assert!(stats["unauthorized"].as_i64().unwrap() >= 1, "{stats}");
    // pyiceberg reads with its own OAuth2 client.
    let reader = [
        ("INLET_REST_CREDENTIAL", credential.as_str()),
        ("INLET_REST_OAUTH_URI", oauth_uri.as_str()),
        ("INLET_REST_SCOPE", "catalog sql"),
    ];
    assert_read_back(&target, &t, &server, &reader, &model, lsn).await;

    // Maintenance commits a replace snapshot and expires snapshots through the catalog.
    let mut sink = target.upsert_table(&t).await.unwrap();
    let config = MaintenanceConfig {
        rewrite_deleted_fraction: 0.01,
        small_file_mb: 64,
        expire_snapshots_hours: 1,
        keep_snapshots: 2,
        orphan_grace_minutes: 30,
        ..Default::default()
    };
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let report = sink.maintain(&config, later).await.unwrap();
    assert!(report.rewritten_files > 0, "{report:?}");
    assert!(report.expired_snapshots > 0, "{report:?}");
    assert_eq!(sink.indexed_rows(), model.len());
    assert_read_back(&target, &t, &server, &reader, &model, lsn).await;

    // A schema change: a new column, committed as add-schema + set-current-schema with the
    // next snapshot (the server checks the schema id and last column id it was built on).
    let mut t2 = t.clone();
    t2.columns
        .push(col("note", "text", arrow_schema::DataType::Utf8, true));
    let changes = random_changes(&mut Rng(7), &model, &mut 90_000, &mut lsn, 50);
    apply_model(&mut model, &changes);
    let mut notes: BTreeMap<i64, String> = BTreeMap::new();
    for c in &changes {
        match c.op {
            "D" => notes.remove(&c.row.id),
            _ => notes.insert(c.row.id, format!("note-{}", c.row.id)),
        };
    }
    sink.apply(&t2, &with_note(&t2, &changes)).await.unwrap();
    sink.commit(Position(lsn)).await.unwrap();
    drop(sink);
    let sink = target.upsert_table(&t2).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(lsn)));
    assert_eq!(sink.indexed_rows(), model.len());

    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    let table = format!("inlet.replica.{}", t.id.name);
    let mut env: Vec<(&str, &str)> = vec![
        ("INLET_REST_URI", server.uri.as_str()),
        ("INLET_REST_TABLE", table.as_str()),
        ("INLET_REST_WAREHOUSE", CATALOG_WAREHOUSE),
    ];
    env.extend_from_slice(&reader);
    let rows = model
        .values()
        .map(|r| {
            let mut v = r.canonical();
            v.push(notes.get(&r.id).cloned());
            v
        })
        .collect();
    let mut columns = COLUMNS.to_vec();
    columns.push("note");
    let mut py_types = PYICEBERG_TYPES.to_vec();
    py_types.push("large_string");
    let mut duck_types = DUCKDB_TYPES.to_vec();
    duck_types.push("VARCHAR");
    let got = assert_rows_env(&meta, &env, &columns, rows, &py_types, &duck_types);
    let py = &got["pyiceberg"];
    assert_eq!(py["metadata_location"], meta.as_str());
    let ids: Vec<i64> = py["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(
        py["partition_spec"]
            .as_str()
            .unwrap()
            .contains("bucket[4](1)"),
        "{}",
        py["partition_spec"]
    );
}

/// A change batch of `t2` (the table plus a `note` column `note-<id>`).
fn with_note(t2: &TableSchema, changes: &[Change]) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, StringArray};
    use std::sync::Arc;
    let t = TableSchema {
        columns: t2.columns[..7].to_vec(),
        ..t2.clone()
    };
    let base = change_batch(&t, changes);
    let mut cols: Vec<ArrayRef> = base.columns().to_vec();
    cols.push(Arc::new(StringArray::from_iter(
        changes.iter().map(|c| Some(format!("note-{}", c.row.id))),
    )));
    arrow_array::RecordBatch::try_new(inlet_core::change_schema(t2), cols).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_with_sigv4_signs_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, db) = (dir.path().join("wh"), dir.path().join("db"));
    std::fs::create_dir_all(&db).unwrap();
    let (key, secret, region) = ("AKIDINLETTEST", "inlet-sigv4-secret-0a7", "eu-west-1");
    let server = RestCatalogServer::start(
        &wh,
        &db,
        &[
            "--auth",
            "sigv4",
            "--region",
            region,
            "--signing-name",
            "s3tables",
            "--catalog-warehouse",
            CATALOG_WAREHOUSE,
        ],
        &[
            ("INLET_REST_ACCESS_KEY", key),
            ("INLET_REST_SECRET_KEY", secret),
        ],
    );
    let s3 = || {
        AmazonS3Builder::new()
            .with_region(region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
    };
    let extra = "sigv4 = true\nsigning_name = \"s3tables\"\n";
    let target = rest_target(&wh, &server.uri, extra, s3()).unwrap();
    target.check().await.expect("check");

    let t = table("customers", true);
    let (mut model, lsn) = load_and_upsert(&target, &t, 4, |_| {}).await;
    let stats = server.hook("GET", "/test/stats");
    assert_eq!(stats["forbidden"], 0, "{stats}");
    assert_eq!(stats["unauthorized"], 0, "{stats}");
    // pyiceberg signs with botocore; the server verifies both clients the same way.
    let reader = [
        ("INLET_REST_SIGV4_NAME", "s3tables"),
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", region),
    ];
    assert_read_back(&target, &t, &server, &reader, &model, lsn).await;
    assert_second_writer_loses(&target, &t, &mut model, lsn).await;
    assert_read_back(&target, &t, &server, &reader, &model, lsn + 1).await;

    // A wrong secret: the signature does not match (403), a clear error without the secret.
    let wrong = || {
        AmazonS3Builder::new()
            .with_region(region)
            .with_access_key_id(key)
            .with_secret_access_key("not-the-secret-123")
    };
    let target = rest_target(&wh, &server.uri, extra, wrong()).unwrap();
    let err = target.upsert_table(&t).await.unwrap_err();
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(msg.contains("HTTP 403"), "{msg}");
    assert!(msg.contains("catalog.signing_name"), "{msg}");
    assert!(
        !msg.contains("not-the-secret-123") && !msg.contains(secret),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_errors_are_clear_classified_and_without_secrets() {
    let (good, bad) = ("tok-good-77aa1c", "tok-wrong-31bd9e");
    set_env(&[
        ("INLET_TEST_REST_TOKEN_GOOD", good),
        ("INLET_TEST_REST_TOKEN_BAD", bad),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (wh, db) = (dir.path().join("wh"), dir.path().join("db"));
    std::fs::create_dir_all(&db).unwrap();
    let mut server = RestCatalogServer::start(
        &wh,
        &db,
        &["--auth", "token", "--catalog-warehouse", CATALOG_WAREHOUSE],
        &[("INLET_REST_TOKEN", good)],
    );
    let t = table("items", true);

    // Config errors name the key; the task file names variables, never secrets.
    let err = rest_target(
        &wh,
        &server.uri,
        "token_env = \"INLET_TEST_REST_UNSET\"\n",
        no_s3(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("catalog.token_env")
            && msg.contains("environment variable INLET_TEST_REST_UNSET is not set"),
        "{msg}"
    );
    let err = rest_target(
        &wh,
        &server.uri,
        "token_env = \"INLET_TEST_REST_TOKEN_GOOD\"\nsigv4 = true\n",
        no_s3(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("only one of"), "{err}");
    let err = rest_target(&wh, "ftp://example.com", "", no_s3()).unwrap_err();
    assert!(err.to_string().contains("catalog.uri"), "{err}");

    // A wrong token: 401, not transient, names the variable and the key, never the token.
    let target = rest_target(
        &wh,
        &server.uri,
        "token_env = \"INLET_TEST_REST_TOKEN_BAD\"\n",
        no_s3(),
    )
    .unwrap();
    for (err, what) in [
        (
            target.check().await.unwrap_err(),
            "reading the catalog's config",
        ),
        (
            target.upsert_table(&t).await.unwrap_err(),
            "loading table inlet.replica.items: reading the catalog's config",
        ),
    ] {
        let msg = err.to_string();
        assert!(!err.is_transient(), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("HTTP 401"), "{msg}");
        assert!(
            msg.contains("$INLET_TEST_REST_TOKEN_BAD (catalog.token_env)"),
            "{msg}"
        );
        assert!(msg.contains(&server.uri), "{msg}");
        assert!(!msg.contains(bad) && !msg.contains(good), "{msg}");
    }
    // No credentials at all.
    let target = rest_target(&wh, &server.uri, "", no_s3()).unwrap();
    let msg = target.check().await.unwrap_err().to_string();
    assert!(msg.contains("the catalog wants credentials"), "{msg}");
    // A wrong catalog warehouse: the server's 400 message is quoted.
    let config = rest_config(
        &wh,
        &server.uri,
        "token_env = \"INLET_TEST_REST_TOKEN_GOOD\"\n",
    );
    let mut config = config;
    if let inlet_sink_iceberg::CatalogConfig::Rest { warehouse, .. } = &mut config.catalog {
        *warehouse = Some("elsewhere".into());
    }
    let target = IcebergTarget::with_s3_builder(&config, "test-task", no_s3).unwrap();
    let err = target.check().await.unwrap_err();
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains("HTTP 400") && msg.contains("unknown warehouse 'elsewhere'"),
        "{msg}"
    );
    assert!(msg.contains("catalog.warehouse"), "{msg}");

    // The server stopped in the middle of a commit's life: transient. After a restart the
    // table still says the last committed position, and re-applying from it converges.
    let extra = "token_env = \"INLET_TEST_REST_TOKEN_GOOD\"\n";
    let target = rest_target(&wh, &server.uri, extra, no_s3()).unwrap();
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();
    let mut sink = target.upsert_table(&t).await.unwrap();
    let (mut rng, mut next_id, mut lsn) = (Rng(99), 0i64, 10u64);
    let first = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 100);
    apply_model(&mut model, &first);
    sink.apply(&t, &change_batch(&t, &first)).await.unwrap();
    sink.commit(Position(lsn)).await.unwrap();
    let committed = lsn;
    let second = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 100);
    sink.apply(&t, &change_batch(&t, &second)).await.unwrap();
    server.stop();
    let err = sink.commit(Position(lsn)).await.unwrap_err();
    let msg = err.to_string();
    assert!(err.is_transient(), "{msg}");
    assert!(
        msg.contains(&server.uri) && msg.contains("no answer"),
        "{msg}"
    );
    assert!(
        msg.contains("committing to table inlet.replica.items"),
        "{msg}"
    );
    assert!(
        target.upsert_table(&t).await.unwrap_err().is_transient(),
        "a reopen while it is down is transient too"
    );
    server.restart();
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(committed)));
    apply_model(&mut model, &second);
    sink.apply(&t, &change_batch(&t, &second)).await.unwrap();
    sink.commit(Position(lsn)).await.unwrap();
    assert_read_back(
        &target,
        &t,
        &server,
        &[("INLET_REST_TOKEN", good)],
        &model,
        lsn,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_placed_by_the_catalog_is_written_there_or_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (wh, area, other) = (root.join("wh"), root.join("wh/area"), root.join("other"));
    let (db1, db2) = (root.join("db1"), root.join("db2"));
    for d in [&area, &other, &db1, &db2] {
        std::fs::create_dir_all(d).unwrap();
    }
    let args = [
        "--ignore-location",
        "--catalog-warehouse",
        CATALOG_WAREHOUSE,
    ];
    let t = table("placed", true);

    // The catalog places the table under its own warehouse, inside inlet's: inlet writes the
    // table's files there.
    let server = RestCatalogServer::start(&area, &db1, &args, &[]);
    let target = rest_target(&wh, &server.uri, "", no_s3()).unwrap();
    let (model, lsn) = load_and_upsert(&target, &t, 2, |_| {}).await;
    let placed = format!("file://{}/inlet.replica/placed", area.display());
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    assert!(meta.starts_with(&format!("{placed}/metadata/")), "{meta}");
    assert!(
        !wh.join("inlet.replica").exists(),
        "nothing at the requested location"
    );
    let table_name = "inlet.replica.placed";
    let env = [
        ("INLET_REST_URI", server.uri.as_str()),
        ("INLET_REST_TABLE", table_name),
        ("INLET_REST_WAREHOUSE", CATALOG_WAREHOUSE),
    ];
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
    for f in got["pyiceberg"]["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(path.starts_with(&format!("{placed}/data/")), "{path}");
    }

    // A catalog that places tables outside inlet's warehouse: a clear error naming both.
    let server = RestCatalogServer::start(&other, &db2, &args, &[]);
    let target = rest_target(&wh, &server.uri, "", no_s3()).unwrap();
    let Err(err) = target.full_load(&t).await else {
        panic!("a table outside the warehouse was accepted")
    };
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    let requested = format!("file://{}/inlet.replica/placed", wh.display());
    let elsewhere = format!("file://{}/inlet.replica/placed", other.display());
    assert!(
        msg.contains(&requested) && msg.contains(&elsewhere),
        "{msg}"
    );
    assert!(msg.contains("set `warehouse`"), "{msg}");
}

/// Another engine (pyiceberg) rewrites every data file through the same catalog between
/// inlet's commits: inlet's next commit meets HTTP 409, reloads the table, rebuilds its key
/// index from the files that are live now, and commits on top; the position stays inlet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_commit_after_a_foreign_commit_is_planned_again() {
    let dir = tempfile::tempdir().unwrap();
    let (wh, db) = (dir.path().join("wh"), dir.path().join("db"));
    std::fs::create_dir_all(&db).unwrap();
    let server =
        RestCatalogServer::start(&wh, &db, &["--catalog-warehouse", CATALOG_WAREHOUSE], &[]);
    let target = rest_target(&wh, &server.uri, "", no_s3()).unwrap();
    let t = table("compacted", true);
    let (mut model, lsn) = load_and_upsert(&target, &t, 2, |_| {}).await;
    let mut sink = target.upsert_table(&t).await.unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/foreign_commit.py");
    let out = std::process::Command::new(inlet_testkit::python())
        .arg(script)
        .arg("--sql-catalog")
        .arg(db.join("catalog.db"))
        .args(["inlet.replica.compacted", "rewrite"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], true, "{report}");
    assert_eq!(report["touched"], model.len(), "{report}");
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(lsn))
    );

    let ids: Vec<i64> = model.keys().take(3).copied().collect();
    let changes = vec![
        Change {
            op: "U",
            lsn: lsn + 1,
            row: Row::make(ids[0], lsn + 1),
        },
        Change {
            op: "D",
            lsn: lsn + 1,
            row: Row::make(ids[1], 0),
        },
        Change {
            op: "U",
            lsn: lsn + 1,
            row: Row::make(ids[2], lsn + 1),
        },
    ];
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    let summary = sink.commit(Position(lsn + 1)).await.unwrap();
    assert_eq!(summary.rows_deleted, 3);
    assert_read_back(&target, &t, &server, &[], &model, lsn + 1).await;
}
