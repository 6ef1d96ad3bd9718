//! Routine events of a production PostgreSQL server under a concurrent workload, checked by an
//! oracle that is not inlet (tests/common/audit.rs: triggers log every row change with its
//! transaction id). One task streams while the server goes through a fast restart, an
//! immediate (crash) restart, a REPLICA IDENTITY change, a column added, and inlet itself is
//! SIGKILLed; at the end every audited change is in the change files exactly once, in order,
//! with its transaction, and the load plus the changes replay to the source's rows.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use common::audit;
use common::replay::{cell, file_name, read_file};
use common::{load_files, task_file, PgServer};

/// Each table and the column that names a row in its change stream: the primary key, or the
/// replica identity index (`ev_index`: a delete there carries only `code`).
const TABLES: [(&str, &str); 3] = [
    ("ev_default", "id"),
    ("ev_full", "id"),
    ("ev_index", "code"),
];

fn task(url: &str, out: &Path) -> String {
    format!(
        r#"
[task]
name = "events"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["public.ev_*"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#,
        out.display()
    )
}

/// `inlet run` with its log in a file (a pipe nobody reads would fill and stall it).
fn spawn(cfg: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log file");
    Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args([
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start inlet run")
}

fn checkpoint_position(out: &Path) -> Option<u64> {
    std::fs::read_to_string(out.join("_inlet/events/checkpoint"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("position="))
        .and_then(|p| u64::from_str_radix(p, 16).ok())
}

/// Waits until the task checkpoint covers everything the server has written so far.
async fn wait_caught_up(pg: &PgServer, child: &mut Child, out: &Path, log: &Path) {
    let client = pg.client("postgres").await;
    let lsn: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (hi, lo) = lsn.split_once('/').unwrap();
    let target =
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint_position(out).is_none_or(|p| p < target) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "inlet exited early with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with {lsn} in 120 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Transactions of every kind on the three tables until `stop`, reconnecting through the
/// server's restarts. Whether a commit in flight during a crash took effect is for the audit
/// log to say, not the workload.
fn spawn_workload(
    pg: &PgServer,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    );
    tokio::spawn(async move {
        let mut next_id: i64 = 1_000_000;
        let mut round: i64 = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let (a, b) = (next_id, next_id + 1);
                next_id += 2;
                let r = round % 5;
                let sql = format!(
                    "BEGIN;
                       INSERT INTO ev_default VALUES ({a}, 0, 'new'), ({b}, 0, 'new');
                       INSERT INTO ev_full VALUES ({a}, 0, repeat('x', 3000));
                       INSERT INTO ev_index VALUES ({a}, 'c{a}', 0);
                     COMMIT;
                     UPDATE ev_default SET v = v + 1 WHERE id % 5 = {r} AND id < 200;
                     UPDATE ev_full SET v = v + 1 WHERE id = {a} OR id % 50 = {r};
                     UPDATE ev_index SET v = v + 1 WHERE id % 7 = {r} AND id < 200;
                     BEGIN;
                       UPDATE ev_default SET id = id + 10000000 WHERE id = {b};
                       UPDATE ev_full SET big = big || 'y', v = v + 1 WHERE id = {a};
                       DELETE FROM ev_index WHERE id = {a};
                       UPDATE ev_index SET code = code || 'k', v = v + 1 WHERE id = {r} + 900;
                     COMMIT;
                     BEGIN;
                       INSERT INTO ev_default VALUES ({a} + 500000000, 0, 'rolled back');
                       UPDATE ev_full SET v = -1 WHERE id = {a};
                     ROLLBACK;
                     DELETE FROM ev_default WHERE id = {a};"
                );
                if client.batch_execute(&sql).await.is_err() {
                    break; // the server went away: reconnect
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The rows of a table folder: the LOAD files, then the change files applied in order.
fn replay(table_dir: &Path, key: &str) -> BTreeMap<String, Option<String>> {
    let mut rows = BTreeMap::new();
    let mut files: Vec<_> = load_files(table_dir);
    files.sort_by_key(|p| (!file_name(p).starts_with("LOAD"), file_name(p)));
    for f in files {
        let load = file_name(&f).starts_with("LOAD");
        for b in read_file(&f) {
            for r in 0..b.num_rows() {
                let id = cell(b.column_by_name(key).unwrap().as_ref(), r).unwrap();
                let v = cell(b.column_by_name("v").unwrap().as_ref(), r);
                let op = if load {
                    "I".to_string()
                } else {
                    b.column_by_name("Op")
                        .unwrap()
                        .as_string::<i32>()
                        .value(r)
                        .to_string()
                };
                if op == "D" {
                    rows.remove(&id);
                } else {
                    rows.insert(id, v);
                }
            }
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_identity_changes_and_kills_keep_every_change_exactly_once() {
    let pg = PgServer::start_with_options("-c wal_sender_timeout=600s");
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE ev_default (id bigint PRIMARY KEY, v int NOT NULL, note text);
             CREATE TABLE ev_full (id bigint PRIMARY KEY, v int NOT NULL, big text);
             ALTER TABLE ev_full REPLICA IDENTITY FULL;
             CREATE TABLE ev_index (id bigint PRIMARY KEY, code text NOT NULL, v int NOT NULL);
             CREATE UNIQUE INDEX ev_index_code ON ev_index (code);
             ALTER TABLE ev_index REPLICA IDENTITY USING INDEX ev_index_code;
             INSERT INTO ev_default SELECT g, 0, 'seed' FROM generate_series(1, 1000) g;
             INSERT INTO ev_full SELECT g, 0, repeat('s', 3000) FROM generate_series(1, 1000) g;
             INSERT INTO ev_index SELECT g, 'c' || g, 0 FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    audit::install(&client, &TABLES).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let cfg = task_file(dir.path(), "events", &task(&pg.url("postgres"), &out));
    let mut child = spawn(&cfg, &log);
    wait_caught_up(&pg, &mut child, &out, &log).await;
    // The load is done: from here on every audited change must be in a change file.
    client
        .batch_execute("TRUNCATE inlet_audit.log")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workload = spawn_workload(&pg, stop.clone(), done.clone());
    let pause = || tokio::time::sleep(Duration::from_millis(1500));

    pause().await;
    // A fast restart completes while inlet is connected (the walsender sees its WAL confirmed).
    let took = pg.restart("fast", 60);
    eprintln!("fast restart took {took:?}");
    pause().await;
    let client = pg.client("postgres").await;
    client
        .batch_execute("ALTER TABLE ev_default REPLICA IDENTITY FULL")
        .await
        .unwrap();
    pause().await;
    child.kill().unwrap();
    child.wait().unwrap();
    pause().await;
    let mut child = spawn(&cfg, &log);
    pause().await;
    pg.restart("immediate", 60);
    pause().await;
    let client = pg.client("postgres").await;
    client
        .batch_execute("ALTER TABLE ev_full ADD COLUMN extra int DEFAULT 7")
        .await
        .unwrap();
    pause().await;
    stop.store(true, Ordering::SeqCst);
    workload.await.unwrap();
    let rounds = done.load(Ordering::SeqCst);
    assert!(rounds > 20, "the workload ran only {rounds} rounds");

    wait_caught_up(&pg, &mut child, &out, &log).await;
    common::sigterm(&child);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let mut compared = 0;
    for (t, key) in TABLES {
        compared += audit::assert_exactly_once(&client, &out, t, key).await;
        let want: BTreeMap<String, Option<String>> = client
            .query(&format!("SELECT {key}::text, v::text FROM {t}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let got = replay(&out.join("public").join(t), key);
        assert_eq!(got.len(), want.len(), "{t}: row count");
        assert!(got == want, "{t}: the replay differs from the source");
    }
    eprintln!("{rounds} workload rounds, {compared} audited changes compared");
}
