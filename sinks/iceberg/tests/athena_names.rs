//! Athena-ready names (issue 14 item 4): namespaces and tables named as Athena, Glue and
//! Iceberg's GlueCatalog accept them (`target.names = "athena"`, the default), the source's name
//! kept in the table's `comment` (Glue: its description); Glue column types that agree with the
//! Iceberg schema; and a table created under its source name before keeps that name, so an
//! upgrade goes on writing it from its position.

mod common;

use std::sync::Arc;

use arrow_array::builder::{FixedSizeBinaryBuilder, Int64Builder, Time64MicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, TimeUnit};
use common::*;
use inlet_core::{Column, Position, TableId, TableSchema};

/// GetDatabases and GetTable of moto's Glue, through boto3: `{"databases": [...], "table": {...}}`.
fn glue(endpoint: &str, database: &str, table: &str) -> serde_json::Value {
    let script = r#"
import json, sys
import boto3
glue = boto3.client("glue", endpoint_url=sys.argv[1], region_name="us-east-1",
                    aws_access_key_id="testing", aws_secret_access_key="testing")
dbs = sorted(d["Name"] for d in glue.get_databases()["DatabaseList"])
t = glue.get_table(DatabaseName=sys.argv[2], Name=sys.argv[3])["Table"]
print(json.dumps({"databases": dbs, "table": {
    "name": t["Name"], "database": t["DatabaseName"], "description": t.get("Description"),
    "columns": [[c["Name"], c["Type"]] for c in t["StorageDescriptor"]["Columns"]],
    "comments": [c.get("Comment") for c in t["StorageDescriptor"]["Columns"]],
    "metadata_location": t["Parameters"]["metadata_location"]}}))
"#;
    let out = std::process::Command::new(inlet_testkit::python())
        .args(["-c", script, endpoint, database, table])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The Iceberg schema's (name, type) pairs of a metadata file on moto's S3.
fn iceberg_columns(endpoint: &str, metadata: &str) -> Vec<(String, String)> {
    let script = r#"
import json, sys
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
bucket, key = sys.argv[2][len("s3://"):].split("/", 1)
m = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
schema = next(s for s in m["schemas"] if s["schema-id"] == m["current-schema-id"])
print(json.dumps([[f["name"], f["type"]] for f in schema["fields"]]))
"#;
    let out = std::process::Command::new(inlet_testkit::python())
        .args(["-c", script, endpoint, metadata])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    serde_json::from_value(v.clone()).unwrap()
}

fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The fixture table's columns as `mixed_case` names them.
const MIXED: [&str; 7] = ["Id", "Name", "QTY", "Price", "TS", "Flag", "Day"];

/// The fixture table as `"Zoo Schema"."Edge Types"` with mixed-case column names ([`MIXED`]),
/// whose Athena names are the fixture's own.
fn mixed_case() -> TableSchema {
    let mut t = table("x", true);
    t.id = TableId::new("Zoo Schema", "Edge Types");
    for (c, name) in t.columns.iter_mut().zip(MIXED) {
        c.name = name.to_string();
        c.field = c.field.clone().with_name(name);
    }
    t.primary_key = vec!["Id".into()];
    t
}

/// `"Zoo Schema"."Uuid Time"`: id, a uuid and a time column, two rows.
fn uuid_time() -> (TableSchema, RecordBatch) {
    let uuid = Field::new("u", DataType::FixedSizeBinary(16), true)
        .with_metadata([("ARROW:extension:name".to_string(), "arrow.uuid".to_string())].into());
    let t = TableSchema {
        id: TableId::new("Zoo Schema", "Uuid Time"),
        columns: vec![
            col("ID", "bigint", DataType::Int64, false),
            Column {
                name: "u".into(),
                source_type: "uuid".into(),
                field: uuid,
                distinct_values: None,
            },
            col(
                "Time Of Day",
                "time without time zone",
                DataType::Time64(TimeUnit::Microsecond),
                true,
            ),
        ],
        primary_key: vec!["ID".into()],
    };
    let mut id = Int64Builder::new();
    let mut u = FixedSizeBinaryBuilder::new(16);
    let mut tm = Time64MicrosecondBuilder::new();
    id.append_value(1);
    u.append_value([0xa0; 16]).unwrap();
    tm.append_value(49_507_500_000);
    id.append_value(2);
    u.append_null();
    tm.append_null();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(u.finish()),
        Arc::new(tm.finish()),
    ];
    let batch = RecordBatch::try_new(t.arrow_schema(), columns).unwrap();
    (t, batch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_tables_get_athena_names_and_column_types_that_agree_with_iceberg() {
    let mut moto = inlet_testkit::Moto::start();
    moto.create_bucket("lake");
    let glue_cfg = format!(
        "[catalog]\nkind = \"glue\"\nendpoint = \"{}\"\n",
        moto.endpoint
    );
    let target = s3_target(&moto.endpoint, "s3://lake/wh", &glue_cfg);

    // A mixed-case source table, loaded and changed: named zoo_schema.edge_types, its columns
    // lowercase, the source's names in the table's and the columns' comments.
    let t = mixed_case();
    let (model, lsn) = load_and_upsert(&target, &t, 2, |_| {}).await;
    let meta = target.metadata_location(&t.id).await.unwrap().unwrap();
    assert!(
        meta.starts_with("s3://lake/wh/zoo_schema/edge_types/metadata/000"),
        "{meta}"
    );
    let got = glue(&moto.endpoint, "zoo_schema", "edge_types");
    assert_eq!(got["databases"], serde_json::json!(["zoo_schema"]));
    let table = &got["table"];
    assert_eq!(table["name"], "edge_types");
    assert_eq!(table["database"], "zoo_schema");
    assert_eq!(
        table["description"],
        "source table \"Zoo Schema\".\"Edge Types\""
    );
    assert_eq!(table["metadata_location"], meta.as_str());
    assert_eq!(
        pairs(&table["columns"]),
        owned(&[
            ("id", "bigint"),
            ("name", "string"),
            ("qty", "int"),
            ("price", "decimal(12,2)"),
            ("ts", "timestamp"),
            ("flag", "boolean"),
            ("day", "date"),
        ])
    );
    assert_eq!(
        table["comments"],
        serde_json::json!([
            "bigint (source column \"Id\")",
            "text (source column \"Name\")",
            "smallint (source column \"QTY\")",
            "numeric(12,2) (source column \"Price\")",
            "timestamp with time zone (source column \"TS\")",
            "boolean (source column \"Flag\")",
            "date (source column \"Day\")",
        ])
    );
    // pyiceberg finds the table through Glue under its Athena name and reads the source's rows.
    let mut env = moto_env(&moto.endpoint);
    env.push(("INLET_GLUE_TABLE", "zoo_schema.edge_types".into()));
    env.push(("INLET_GLUE_ENDPOINT", moto.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let read = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(read["pyiceberg"]["metadata_location"], meta.as_str());
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(lsn))
    );

    // uuid and time: Glue shows the Hive type Iceberg's own GlueCatalog writes for the Iceberg
    // type. Under the portable default both are Iceberg `string`, so both say string; under
    // "exact" Iceberg says uuid/time and Glue string (Hive has neither type).
    let (ut, batch) = uuid_time();
    for (warehouse, extra, iceberg) in [
        ("s3://lake/portable", "", ["string", "string"]),
        ("s3://lake/exact", "types = \"exact\"\n", ["uuid", "time"]),
    ] {
        let cfg = format!(
            "namespace = \"Typed {}\"\n{extra}{glue_cfg}",
            &warehouse[10..]
        );
        let target = s3_target(&moto.endpoint, warehouse, &cfg);
        let load = target.full_load(&ut).await.unwrap();
        let mut w = load.writer();
        w.write(&batch).await.unwrap();
        w.close().await.unwrap();
        load.finish(Some(Position(7))).await.unwrap();
        let database = format!("typed_{}", &warehouse[10..]);
        let got = glue(&moto.endpoint, &database, "uuid_time");
        assert_eq!(
            pairs(&got["table"]["columns"]),
            owned(&[("id", "bigint"), ("u", "string"), ("time_of_day", "string")]),
            "{warehouse}"
        );
        let meta = target.metadata_location(&ut.id).await.unwrap().unwrap();
        assert_eq!(
            iceberg_columns(&moto.endpoint, &meta),
            owned(&[
                ("id", "long"),
                ("u", iceberg[0]),
                ("time_of_day", iceberg[1])
            ]),
            "{warehouse}"
        );
    }
}

/// A table written under its source names (before `names`, or with `names = "source"`) is found
/// and written again by a task with the default names, from its committed position, its columns
/// as they were; no second table appears under the Athena name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_under_its_source_name_keeps_it_and_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let t = mixed_case();
    let before = target_with(dir.path(), "names = \"source\"");
    let (model, lsn) = load_and_upsert(&before, &t, 2, |_| {}).await;
    assert!(dir.path().join("Zoo Schema/Edge Types/metadata").is_dir());

    let after = target(dir.path());
    assert_eq!(
        after.committed_position(&t.id).await.unwrap(),
        Some(Position(lsn))
    );
    let mut sink = after.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(lsn)));
    assert_eq!(sink.indexed_rows(), model.len());
    let mut model = model;
    let change = Change {
        op: "I",
        lsn: lsn + 5,
        row: Row::make(99_999, 1),
    };
    apply_model(&mut model, std::slice::from_ref(&change));
    sink.apply(&t, &change_batch(&t, &[change])).await.unwrap();
    sink.commit(Position(lsn + 5)).await.unwrap();
    assert!(!dir.path().join("zoo_schema").exists());
    let meta = metadata_file(dir.path(), "Zoo Schema", "Edge Types");
    // Its columns keep their source names too (the table has no inlet.column-names).
    assert_rows(
        &meta,
        &MIXED,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

/// Two source tables whose names become one Athena name: the second is refused, naming both
/// and the settings, instead of writing into the first one's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_tables_with_one_athena_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path());
    let mut upper = table("x", true);
    upper.id = TableId::new("public", "Orders");
    let mut lower = table("x", true);
    lower.id = TableId::new("public", "orders");
    target.upsert_table(&upper).await.unwrap();
    let err = match target.upsert_table(&lower).await {
        Ok(_) => panic!("public.orders was written into public.Orders' table"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(
            "this Iceberg table holds source table \"public\".\"Orders\", and source table \
             \"public\".\"orders\" has the same name under target.names = \"athena\""
        ),
        "{err}"
    );
    // The first one still opens.
    target.upsert_table(&upper).await.unwrap();
}
