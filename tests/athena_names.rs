//! Athena-ready names end to end (issue 14 item 4): a PostgreSQL table `"Zoo Schema"."Edge
//! Types"` with mixed-case columns, loaded and changed by `inlet run` into Iceberg, is the table
//! `zoo_schema.edge_types` with lowercase columns, the source's names in the table's `comment`
//! and the columns' docs, and pyiceberg, DuckDB and polars read the source's rows from it. (The
//! Glue side, moto's GetTable, is sinks/iceberg/tests/athena_names.rs.)

mod common;

use common::iceberg::{current_metadata, read_with};
use common::pg_stream::wait_caught_up;
use common::{spawn_run, stop_run, task_file, PgServer};

const SOURCE: &str = r#"
CREATE SCHEMA "Zoo Schema";
CREATE TABLE "Zoo Schema"."Edge Types" ("Id" int PRIMARY KEY, "Order Date" date, "Note" text);
INSERT INTO "Zoo Schema"."Edge Types" VALUES (1, '2024-02-29', 'first'), (2, NULL, 'second');
"#;

const CHANGES: &str = r#"
INSERT INTO "Zoo Schema"."Edge Types" VALUES (3, '1999-12-31', 'third');
UPDATE "Zoo Schema"."Edge Types" SET "Note" = 'changed', "Order Date" = '2000-01-01' WHERE "Id" = 1;
DELETE FROM "Zoo Schema"."Edge Types" WHERE "Id" = 2;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_case_table_is_written_with_athena_names_and_read_back_equal() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SOURCE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    let cfg = task_file(
        dir.path(),
        "names",
        &format!(
            "[task]\nname = \"names\"\nmode = \"full-load-and-cdc\"\n[source]\nkind = \
             \"postgres\"\nurl = \"{}\"\ntls = \"disable\"\n[target]\nkind = \"iceberg\"\n\
             warehouse = \"{}\"\n[tables]\ninclude = [\"Zoo Schema.*\"]\n[cdc]\n\
             flush_interval_ms = 200\n",
            pg.url("postgres"),
            wh.display()
        ),
    );
    let checkpoint = wh.join("_inlet/names/checkpoint");
    let mut run = spawn_run(&cfg);
    wait_caught_up(&client, &mut run, &checkpoint, "inlet_names").await;
    client.batch_execute(CHANGES).await.unwrap();
    wait_caught_up(&client, &mut run, &checkpoint, "inlet_names").await;
    let (code, err) = stop_run(run);
    assert_eq!(code, 0, "{err}");

    let table = wh.join("zoo_schema/edge_types");
    assert!(
        !wh.join("Zoo Schema").exists(),
        "no table under the source name"
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(current_metadata(&table)).unwrap()).unwrap();
    assert_eq!(
        metadata["properties"]["comment"],
        "source table \"Zoo Schema\".\"Edge Types\""
    );
    assert_eq!(
        metadata["properties"]["inlet.column-names"], "athena",
        "{metadata}"
    );
    let schema = metadata["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schema-id"] == metadata["current-schema-id"])
        .unwrap();
    let columns: Vec<(String, String)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["doc"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("id", "integer (source column \"Id\")"),
        ("order_date", "date (source column \"Order Date\")"),
        ("note", "text (source column \"Note\")"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(columns, want);

    let mut source: Vec<Vec<Option<String>>> = client
        .query(
            r#"SELECT "Id"::text, "Order Date"::text, "Note" FROM "Zoo Schema"."Edge Types""#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| vec![r.get(0), r.get(1), r.get(2)])
        .collect();
    source.sort();
    for (reader, rows) in ["pyiceberg", "duckdb", "polars"]
        .iter()
        .zip(read_with(&table, &["pyiceberg", "duckdb", "polars"]))
    {
        assert_eq!(rows, source, "{reader}");
    }
}
