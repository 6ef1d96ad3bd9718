//! PostgreSQL → Iceberg end to end: `inlet run` in full-load-and-cdc mode with
//! `target.kind = "iceberg"`, a workload of inserts, updates (key changes included), deletes,
//! truncates and multi-table transactions, SIGKILLs at random moments, and at the end each
//! table, read by pyiceberg and by DuckDB, must equal the source row for row.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::iceberg::{assert_iceberg_equals, foreign_commit, snapshot_log, Rows};
use common::pg_stream;
use common::pg_workload::{workload, ACCOUNT_COLUMNS, EVENT_COLUMNS, SCHEMA};
use common::{spawn_run as spawn_inlet, stderr_of, stop_run, task_file, PgServer};

fn task(url: &str, warehouse: &Path) -> String {
    format!(
        r#"
[task]
name = "ice"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "iceberg"
warehouse = "{}"
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = 200
part_rows = 300
"#,
        warehouse.display()
    )
}

async fn wait_caught_up(client: &tokio_postgres::Client, child: &mut Child, warehouse: &Path) {
    let checkpoint = warehouse.join("_inlet/ice/checkpoint");
    pg_stream::wait_caught_up(client, child, &checkpoint, "inlet_ice").await
}

async fn source(client: &tokio_postgres::Client, table: &str, columns: &[&str]) -> Rows {
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let mut rows: Rows = client
        .query(&format!("SELECT {} FROM {table}", select.join(", ")), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
        .collect();
    rows.sort();
    rows
}

async fn assert_tables_equal_source(client: &tokio_postgres::Client, warehouse: &Path) {
    for (table, columns) in [("accounts", ACCOUNT_COLUMNS), ("events", EVENT_COLUMNS)] {
        let want = source(client, table, columns).await;
        assert_iceberg_equals(&warehouse.join("public").join(table), table, &want);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn iceberg_tables_equal_the_source_across_sigkills() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let cfg = task_file(dir.path(), "ice", &task(&pg.url("postgres"), &warehouse));

    // A clean run first: the full load, two rounds, then the readers agree with the source.
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &warehouse).await;
    workload(&client, 0).await;
    workload(&client, 1).await;
    wait_caught_up(&client, &mut child, &warehouse).await;
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert_tables_equal_source(&client, &warehouse).await;

    // Then kill -9 at pseudo-random moments while the workload goes on.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut round = 2;
    for _ in 0..4 {
        let mut child = spawn_inlet(&cfg);
        for _ in 0..1 + next() % 2 {
            workload(&client, round).await;
            round += 1;
        }
        tokio::time::sleep(Duration::from_millis(next() % 800)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    // A large transaction, written in parts, then a last run that catches up.
    client
        .batch_execute(
            "UPDATE accounts SET version = version + 1, balance = balance * 2 WHERE id <= 1500",
        )
        .await
        .unwrap();
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &warehouse).await;
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert_tables_equal_source(&client, &warehouse).await;

    // A table that joins is loaded beside the stream: the other tables' snapshots run ahead of
    // the held checkpoint meanwhile, and after the restart from it they take nothing twice.
    client
        .batch_execute(
            "CREATE TABLE fresh (id bigint PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO fresh SELECT g, 0, 'fresh ' || g FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    let mut child = spawn_inlet(&cfg);
    for round in round..round + 3 {
        workload(&client, round).await;
        client
            .batch_execute(&format!(
                "UPDATE fresh SET version = version + 1, note = 'round {round}' WHERE id % 97 = {round} % 97;
                 DELETE FROM fresh WHERE id = 1000 + {round};"
            ))
            .await
            .unwrap();
    }
    wait_caught_up(&client, &mut child, &warehouse).await;
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("loading them beside the stream"),
        "{stderr}"
    );
    assert_tables_equal_source(&client, &warehouse).await;
    let columns = &["id", "version", "note"];
    let want = source(&client, "fresh", columns).await;
    assert_iceberg_equals(&warehouse.join("public/fresh"), "fresh", &want);
}

const ITEMS: &str = "
CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, note text);
INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 3000) g;
";
const ITEM_COLUMNS: &[&str] = &["id", "version", "note"];
/// The rows the other engine deletes: every round updates them until then, none after.
const COLD_ROWS: &str = "id <= 200";

/// One round on `items`: inserts, updates, deletes, a transaction of all three and a key
/// change; with `cold`, the rows the other engine will delete are updated too.
async fn items_round(client: &tokio_postgres::Client, round: i64, cold: bool) {
    let base = 10_000 + round * 100;
    client
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, 0, 'new ' || g FROM generate_series({base}, {base} + 59) g;
             UPDATE items SET version = version + 1, note = 'round {round}' WHERE id % 5 = {r5} AND NOT ({COLD_ROWS});
             {cold}
             DELETE FROM items WHERE id % 53 = {r53} AND NOT ({COLD_ROWS}) AND id < 3000;
             BEGIN;
               UPDATE items SET version = version + 1 WHERE id = {base};
               DELETE FROM items WHERE id = {base} + 1;
               INSERT INTO items VALUES ({base} + 99, 0, 'late');
             COMMIT;
             UPDATE items SET version = version + 1, id = id + 1000000 WHERE id = {base} + 2;",
            r5 = round % 5,
            r53 = round % 53,
            cold = if cold {
                format!("UPDATE items SET version = version + 1, note = note || '+' WHERE {COLD_ROWS};")
            } else {
                String::new()
            },
        ))
        .await
        .unwrap();
}

/// Another engine (pyiceberg) commits to the table between inlet's commits: a rewrite of every
/// data file (a compaction, in effect), a delete of rows, an expiry of every older snapshot,
/// with inlet running and while it is down after a SIGKILL. inlet keeps its position through
/// the foreign snapshots, aims its position deletes at the files that are live, commits on top
/// of the foreign snapshots instead of failing, and the table ends equal to the source minus
/// the rows the other engine deleted, each update applied once (the `version` column).
#[tokio::test(flavor = "multi_thread")]
async fn commits_of_another_engine_between_inlet_commits_are_kept() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(ITEMS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let cfg = task_file(dir.path(), "ice", &task(&pg.url("postgres"), &warehouse));
    let items = warehouse.join("public/items");
    let mut stderr_all = String::new();

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &warehouse).await;
    for round in 0..2 {
        items_round(&client, round, true).await;
    }
    wait_caught_up(&client, &mut child, &warehouse).await;

    // (a) A compaction by another engine while inlet streams: every row moves to new files.
    let report = foreign_commit(&items, &["rewrite"]);
    assert_eq!(report["committed"], true, "{report}");
    for round in 2..4 {
        items_round(&client, round, true).await;
    }
    wait_caught_up(&client, &mut child, &warehouse).await;
    items_round(&client, 4, true).await;
    wait_caught_up(&client, &mut child, &warehouse).await;
    // inlet committed on top of the foreign snapshot.
    let log = snapshot_log(&items);
    assert!(
        log.iter().any(|(_, task, _)| task.is_none()),
        "no foreign snapshot in {log:?}"
    );
    assert_eq!(log.last().unwrap().1.as_deref(), Some("ice"), "{log:?}");

    // (b) inlet is SIGKILLed mid-stream; meanwhile the other engine deletes the cold rows (which
    // inlet had written and updated) and another round runs.
    items_round(&client, 5, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().expect("SIGKILL");
    stderr_all.push_str(&stderr_of(child).1);
    let report = foreign_commit(&items, &["delete", COLD_ROWS]);
    assert_eq!(report["touched"], 200, "{report}");
    items_round(&client, 6, false).await;
    let mut child = spawn_inlet(&cfg);
    items_round(&client, 7, false).await;
    wait_caught_up(&client, &mut child, &warehouse).await;

    // (c) Expiry of every snapshot but the current one, then another compaction, each between
    // inlet's commits.
    let report = foreign_commit(&items, &["expire"]);
    assert_eq!(report["committed"], true, "{report}");
    items_round(&client, 8, false).await;
    wait_caught_up(&client, &mut child, &warehouse).await;
    foreign_commit(&items, &["rewrite"]);
    items_round(&client, 9, false).await;
    wait_caught_up(&client, &mut child, &warehouse).await;
    let (code, stderr) = stop_run(child);
    stderr_all.push_str(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert_items_equal_source(&client, &items).await;

    // Then a restart with a foreign snapshot current: the position comes from inlet's last
    // snapshot.
    foreign_commit(&items, &["rewrite"]);
    items_round(&client, 10, false).await;
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &warehouse).await;
    let (code, stderr) = stop_run(child);
    stderr_all.push_str(&stderr);
    assert_eq!(code, 0, "{stderr}");
    assert_items_equal_source(&client, &items).await;
    // inlet met the foreign snapshots at commit time and planned its commits again on them;
    // a foreign commit is no reason to stop and restart the task.
    assert!(
        stderr_all.contains("another engine committed to the table"),
        "{stderr_all}"
    );
    assert!(
        !stderr_all.contains("restarting the task"),
        "inlet restarted after a foreign commit:\n{stderr_all}"
    );
}

/// Both readers read `items` equal to the source, apart from the rows the other engine
/// deleted.
async fn assert_items_equal_source(client: &tokio_postgres::Client, items: &Path) {
    let want: Rows = source(client, "items", ITEM_COLUMNS)
        .await
        .into_iter()
        .filter(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap() > 200)
        .collect();
    assert_iceberg_equals(items, "items", &want);
}
