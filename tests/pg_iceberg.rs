//! PostgreSQL → Iceberg end to end: `inlet run` in full-load-and-cdc mode with
//! `target.kind = "iceberg"`, a workload of inserts, updates (key changes included), deletes,
//! truncates and multi-table transactions, SIGKILLs at random moments, and at the end each
//! table, read by pyiceberg and by DuckDB, must equal the source row for row.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::iceberg::{
    assert_iceberg_equals, foreign_commit, metadata_versions, read_with, snapshot_log, ForeignLoop,
    Rows,
};
use common::pg_workload::{workload, ACCOUNT_COLUMNS, EVENT_COLUMNS, SCHEMA};
use common::{audit, pg_stream};
use common::{sigterm, spawn_run as spawn_inlet, stderr_of, stop_run, task_file, PgServer};

fn task(url: &str, warehouse: &Path) -> String {
    task_flushing(url, warehouse, 200)
}

/// The task, committing every `flush_ms`.
fn task_flushing(url: &str, warehouse: &Path, flush_ms: u64) -> String {
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
flush_interval_ms = {flush_ms}
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

const ITEMS_TABLE: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, note text);";
const ITEMS_ROWS: &str =
    "INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 3000) g;";
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
    client.batch_execute(ITEMS_TABLE).await.unwrap();
    client.batch_execute(ITEMS_ROWS).await.unwrap();
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

/// Reads a child's stderr as it comes, so that a chatty daemon never blocks on a full pipe;
/// the text is there once the child has exited.
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    })
}

/// From the audit log alone (triggers, not inlet): each live row of `items` and its `version`,
/// which counts the updates of the row and of the rows it was before a key change. Every
/// insert of the workload has version 0 and every update adds one.
async fn audited_versions(client: &tokio_postgres::Client) -> BTreeMap<i64, i64> {
    let mut versions = BTreeMap::new();
    for r in client
        .query(
            "SELECT op, old_id::bigint, new_id::bigint FROM inlet_audit.log \
             WHERE tbl = 'items' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
    {
        let op: String = r.get(0);
        let (old, new): (Option<i64>, Option<i64>) = (r.get(1), r.get(2));
        match (op.as_str(), old, new) {
            ("I", _, Some(id)) => {
                versions.insert(id, 0);
            }
            ("U", Some(o), Some(n)) => {
                let v = versions.remove(&o).expect("an update of a live row") + 1;
                versions.insert(n, v);
            }
            ("D", Some(id), _) => {
                versions.remove(&id);
            }
            other => panic!("unexpected audit row {other:?}"),
        }
    }
    versions
}

/// A pause of `ms` between rounds of the workload, or a longer one (1.5 s, doubling up to 6 s
/// while it stays so) after three rounds in which the other engine committed nothing (`seen`:
/// its commit count, the rounds since it changed, the long pauses since). The other engine
/// plans each commit again from scratch after it lost a race, and a plan that reads and
/// rewrites files for a second or so loses every race against a source that keeps inlet
/// committing every 50 ms: it would never commit.
async fn pause(foreign: &ForeignLoop, seen: &mut (usize, u32, u32), ms: u64) {
    let commits = foreign.commits();
    if commits == seen.0 {
        seen.1 += 1;
    } else {
        *seen = (commits, 0, 0);
    }
    let ms = if seen.1 >= 3 {
        seen.1 = 0;
        seen.2 += 1;
        1500 << (seen.2 - 1).min(2)
    } else {
        ms
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Another engine (pyiceberg, one process committing in a loop) commits to the table WHILE
/// inlet commits every 50 ms under a workload (with a transaction written in parts in each
/// run), and inlet is SIGKILLed three times at random
/// moments and restarted: the loop deletes the cold rows once, then rewrites every data file
/// and expires older snapshots, one after another, racing inlet for each metadata version
/// (the loser plans again). At the end pyiceberg, DuckDB and polars read the table equal to
/// the source minus the rows the other engine deleted, and each row's `version` equals the
/// number of updates the audit triggers logged for it (each update applied exactly once, none
/// lost, none repeated, none undone by a compaction planned on an older snapshot). The races
/// are asserted to have happened on both sides.
#[tokio::test(flavor = "multi_thread")]
async fn commits_of_another_engine_racing_inlet_commits_across_sigkills_are_kept() {
    let started = std::time::Instant::now();
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(ITEMS_TABLE).await.unwrap();
    audit::install(&client, &[("items", "id")]).await;
    client.batch_execute(ITEMS_ROWS).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let cfg = task_file(
        dir.path(),
        "ice",
        &task_flushing(&pg.url("postgres"), &warehouse, 50),
    );
    let items = warehouse.join("public/items");
    let mut logs = Vec::new();

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &warehouse).await;
    for round in 0..2 {
        items_round(&client, round, true).await;
    }
    // The cold rows are final in the table before the other engine deletes them.
    wait_caught_up(&client, &mut child, &warehouse).await;
    logs.push(drain_stderr(&mut child));

    let mut foreign = ForeignLoop::start(&items, &dir.path().join("stop-foreign"), Some(COLD_ROWS));
    // INLET_RACE_SEED replays another schedule of rounds, pauses and kills.
    let mut seed: u64 = std::env::var("INLET_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut round = 2;
    let mut seen = (0, 0, 0);
    for _ in 0..3 {
        for i in 0..4 + next() % 4 {
            items_round(&client, round, false).await;
            round += 1;
            if i == 1 {
                // A transaction larger than part_rows: written in parts, committed only whole.
                client
                    .batch_execute(&format!(
                        "UPDATE items SET version = version + 1, note = note || '*' \
                         WHERE NOT ({COLD_ROWS})"
                    ))
                    .await
                    .unwrap();
            }
            pause(&foreign, &mut seen, next() % 150).await;
        }
        tokio::time::sleep(Duration::from_millis(next() % 400)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        // While inlet is down the other engine goes on, and so does the source.
        items_round(&client, round, false).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(next() % 500)).await;
        child = spawn_inlet(&cfg);
        logs.push(drain_stderr(&mut child));
    }
    // Rounds go on until the other engine has committed at least five times (the delete, and
    // rewrites and expiries), however slow this machine is.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        if i >= 5 && foreign.commits() >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && foreign.running(),
            "the other engine committed {} times in 30 s",
            foreign.commits()
        );
        items_round(&client, round, false).await;
        round += 1;
        pause(&foreign, &mut seen, next() % 150).await;
    }
    // Caught up with the other engine still committing.
    wait_caught_up(&client, &mut child, &warehouse).await;
    assert!(foreign.running(), "the foreign commit loop stopped early");
    let report = foreign.finish();
    // A last round, committed on top of whatever the other engine committed last.
    items_round(&client, round, false).await;
    wait_caught_up(&client, &mut child, &warehouse).await;
    sigterm(&child);
    let status = child.wait().unwrap();
    let stderr: String = logs.into_iter().map(|l| l.join().unwrap()).collect();
    assert_eq!(status.code(), Some(0), "{stderr}");

    assert!(report.errors.is_empty(), "{}", report.errors.join("\n"));
    let ops = |op: &str| report.commits.iter().filter(|c| c["op"] == op).count();
    let deletes: Vec<&serde_json::Value> = report
        .commits
        .iter()
        .filter(|c| c["op"] == "delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{:?}", report.commits);
    assert_eq!(deletes[0]["touched"], 200, "{:?}", report.commits);
    assert!(
        ops("rewrite") >= 2 && ops("expire") >= 1,
        "{:?}",
        report.commits
    );

    // The races happened, on both sides: inlet planned commits again over foreign snapshots,
    // and the other engine lost the race for a version to inlet, or landed between two of
    // inlet's commits.
    assert!(
        stderr.contains("another engine committed to the table"),
        "inlet never met a foreign snapshot at commit time:\n{stderr}"
    );
    let foreign_versions: Vec<u64> = report
        .commits
        .iter()
        .filter_map(|c| c["version"].as_u64())
        .collect();
    let versions = metadata_versions(&items);
    let inlet_version = |v: u64| versions.contains(&v) && !foreign_versions.contains(&v);
    let between = foreign_versions
        .iter()
        .filter(|v| inlet_version(**v - 1) && inlet_version(**v + 1))
        .count();
    assert!(
        report.conflicts > 0 || between > 0,
        "no race: {} foreign commits lost to inlet, {between} landed between inlet's",
        report.conflicts
    );
    let restarts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("restarting the task"))
        .collect();
    assert!(
        restarts.is_empty(),
        "inlet restarted the task while the other engine committed:\n{}",
        restarts.join("\n")
    );

    // Read back by pyiceberg, DuckDB and polars: the source minus the rows the other engine
    // deleted, and each version as the audit log counts it.
    let want: Rows = source(&client, "items", ITEM_COLUMNS)
        .await
        .into_iter()
        .filter(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap() > 200)
        .collect();
    let audited: BTreeMap<i64, i64> = audited_versions(&client)
        .await
        .into_iter()
        .filter(|(id, _)| *id > 200)
        .collect();
    let readers = ["pyiceberg", "duckdb", "polars"];
    for (reader, rows) in readers.iter().zip(read_with(&items, &readers)) {
        assert_eq!(rows.len(), want.len(), "items: {reader} row count");
        assert!(rows == want, "items: {reader} rows differ from the source");
        let versions: BTreeMap<i64, i64> = rows
            .iter()
            .map(|r| {
                let int = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
                (int(0), int(1))
            })
            .collect();
        assert!(
            versions == audited,
            "items: {reader}'s versions differ from the audit log's counts"
        );
    }
    eprintln!(
        "{} rounds, {} foreign commits ({} lost to inlet, {between} between inlet's), {} metadata \
         versions, {:?}",
        round + 1,
        report.commits.len(),
        report.conflicts,
        versions.len(),
        started.elapsed()
    );
}
