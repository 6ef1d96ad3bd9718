//! The Iceberg sink on S3 (moto), with the folder catalog and with the Glue catalog (moto's Glue
//! API on the same server). Tables are read back by pyiceberg (through its Glue catalog for
//! Glue tables) and by DuckDB, and compared with a model row by row.

mod common;

use common::*;
use inlet_core::Position;

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
    let (mut model, lsn) = load_and_upsert(&target, &t, 6, |_| {}).await;
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

    assert_second_writer_loses(&target, &t, &mut model, lsn).await;
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
    let (mut model, lsn) = load_and_upsert(&target, &t, 4, |_| {}).await;
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

    assert_second_writer_loses(&target, &t, &mut model, lsn).await;
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
