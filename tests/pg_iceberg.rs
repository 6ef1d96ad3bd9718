//! PostgreSQL → Iceberg end to end: `inlet run` in full-load-and-cdc mode with
//! `target.kind = "iceberg"`, a workload of inserts, updates (key changes included), deletes,
//! truncates and multi-table transactions, SIGKILLs at random moments, and at the end each
//! table, read by pyiceberg and by DuckDB, must equal the source row for row.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::iceberg::{assert_iceberg_equals, Rows};
use common::pg_workload::{workload, ACCOUNT_COLUMNS, EVENT_COLUMNS, SCHEMA};
use common::{spawn_run as spawn_inlet, stop_run, task_file, PgServer};

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
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots \
                 WHERE slot_name = 'inlet_ice'",
                &[&target],
            )
            .await
            .unwrap();
        if row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)) && checkpoint.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with {target}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
