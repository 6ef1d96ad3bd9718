//! Partition maintenance on captured MariaDB tables while the task streams, under the
//! application's writes. `ALTER TABLE … TRUNCATE PARTITION`, `DROP PARTITION` and `EXCHANGE
//! PARTITION … WITH TABLE` delete or move rows, yet the binlog holds only the statement (even
//! with `binlog_format = ROW`): no row event names the rows. The target must still equal the
//! source, row for row, for the partitioned table and for a captured table on the other side of
//! an exchange, so each such table is loaded again beside the stream. Operations that keep
//! every row (`REORGANIZE`, `REBUILD`, `ANALYZE PARTITION`, `PARTITION BY`, `ADD` and `COALESCE
//! PARTITION`, `REMOVE PARTITIONING`) must not load anything again.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{spawn_logged as spawn, Inlet};
use common::load_files;
use common::mysql_rows::{assert_rows_equal, keyed, loads_beside, replay_to_end, source_rows};
use common::mysql_stream::wait_caught_up_logged;
use common::task_file;
use inlet_testkit::MariaDbServer;

/// The columns of every table here, the key first.
const COLUMNS: [&str; 3] = ["id", "v", "note"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Parquet,
    Iceberg,
}

/// `app.t` (partitioned) and `app.side` are captured; `app.outside` is not.
fn task(url: &str, out: &Path, target: Target) -> String {
    let target = match target {
        Target::Parquet => format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
        Target::Iceberg => format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
    };
    format!(
        r#"
[task]
name = "parts"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
[target]
{target}
[tables]
include = ["app.t", "app.side"]
[cdc]
flush_interval_ms = 200
"#
    )
}

/// The application's writes until `stop`: updates across every partition of `app.t` (and
/// `app.side`), inserts into its last partition, deletes from `p1`. They wait on each
/// ALTER's lock and go on after it.
fn spawn_app(db: &MariaDbServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let socket = db.socket();
    std::thread::spawn(move || {
        let mut i: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let sql = format!(
                "UPDATE app.t SET v = v + 1 WHERE id % 41 = {k}; \
                 INSERT INTO app.t (id, v, note) VALUES ({new}, 0, 'app'); \
                 DELETE FROM app.t WHERE id = {gone}; \
                 UPDATE app.side SET v = v + 1 WHERE id % 13 = {s};",
                k = i % 41,
                new = 100_000 + i,
                gone = 1000 + i % 1000,
                s = i % 13,
            );
            let out = Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-uroot", "-e", &sql])
                .output()
                .expect("run mariadb");
            assert!(
                out.status.success(),
                "the application's write failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(15));
        }
        i
    })
}

/// The target's rows of `app.{table}` equal the source's, value for value.
fn assert_target_equals_source(db: &MariaDbServer, out: &Path, target: Target, table: &str) {
    let what = format!("app.{table}");
    let want = source_rows(db, &what, &COLUMNS);
    let dir = out.join("app").join(table);
    match target {
        Target::Parquet => {
            let got = replay_to_end(&dir, &COLUMNS);
            assert_rows_equal(&what, "the Parquet replay", &want, &got)
        }
        Target::Iceberg => {
            let (pyiceberg, duckdb) = common::iceberg::read_iceberg(&dir);
            assert_rows_equal(&what, "pyiceberg", &want, &keyed(pyiceberg));
            assert_rows_equal(&what, "duckdb", &want, &keyed(duckdb));
        }
    }
}

/// Waits until the task checkpoint covers the binlog's current end (a table loading beside the
/// stream holds the checkpoint back until it is loaded).
fn wait_caught_up(db: &MariaDbServer, inlet: &mut Inlet, out: &Path, log: &Path) {
    let checkpoint = out.join("_inlet/parts/checkpoint");
    wait_caught_up_logged(db, inlet, &checkpoint, log, Duration::from_secs(40));
}

/// Each Parquet file of the table folders and its bytes: a table loaded again has new LOAD
/// files and no earlier change file.
fn files_of(out: &Path, tables: &[&str]) -> BTreeMap<PathBuf, Vec<u8>> {
    tables
        .iter()
        .flat_map(|t| load_files(&out.join("app").join(t)))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn partitions_truncated_dropped_and_exchanged_leave_the_parquet_target_equal_to_the_source() {
    scenario(Target::Parquet);
}

#[test]
fn partitions_truncated_dropped_and_exchanged_leave_the_iceberg_tables_equal_to_the_source() {
    scenario(Target::Iceberg);
}

fn scenario(target: Target) {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE app;
         USE app;
         CREATE TABLE app.t (id bigint PRIMARY KEY, v int NOT NULL, note varchar(40))
           PARTITION BY RANGE (id) (
             PARTITION p0 VALUES LESS THAN (1000),
             PARTITION p1 VALUES LESS THAN (2000),
             PARTITION p2 VALUES LESS THAN (3000),
             PARTITION p3 VALUES LESS THAN (4000),
             PARTITION pmax VALUES LESS THAN MAXVALUE);
         INSERT INTO app.t SELECT seq, 0, CONCAT('seed ', seq) FROM seq_1_to_4500;
         CREATE TABLE app.side (id bigint PRIMARY KEY, v int NOT NULL, note varchar(40));
         INSERT INTO app.side SELECT seq, 5, CONCAT('side ', seq) FROM seq_2001_to_2300;
         CREATE TABLE app.outside (id bigint PRIMARY KEY, v int NOT NULL, note varchar(40));
         INSERT INTO app.outside SELECT seq, 9, CONCAT('outside ', seq) FROM seq_3001_to_3100;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let cfg = task_file(dir.path(), "parts", &task(&db.url("app"), &out, target));
    let mut inlet = spawn(&cfg, &log);
    wait_caught_up(&db, &mut inlet, &out, &log);

    let stop = Arc::new(AtomicBool::new(false));
    let app = spawn_app(&db, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    wait_caught_up(&db, &mut inlet, &out, &log);

    // Partition operations that keep every row: nothing is loaded again.
    let before = files_of(&out, &["t", "side"]);
    db.admin(
        "ALTER TABLE app.t REORGANIZE PARTITION pmax INTO (
           PARTITION p4 VALUES LESS THAN (200000),
           PARTITION pmax VALUES LESS THAN MAXVALUE);
         ALTER TABLE app.t REBUILD PARTITION p1;
         ALTER TABLE app.t ANALYZE PARTITION p2;
         ALTER TABLE app.side PARTITION BY HASH (id) PARTITIONS 3;
         ALTER TABLE app.side ADD PARTITION PARTITIONS 1;
         ALTER TABLE app.side COALESCE PARTITION 2;
         ALTER TABLE app.side REMOVE PARTITIONING;",
    );
    // A change after the statements: the checkpoint passes it only once the task went on past
    // them (a table loading beside the stream holds the checkpoint back).
    db.admin("UPDATE app.t SET v = v + 1 WHERE id = 4200");
    wait_caught_up(&db, &mut inlet, &out, &log);
    assert_eq!(
        loads_beside(&log),
        0,
        "a partition operation that keeps every row loaded a table again:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    if target == Target::Parquet {
        let after = files_of(&out, &["t", "side"]);
        let lost: Vec<&PathBuf> = before.keys().filter(|p| !after.contains_key(*p)).collect();
        assert!(lost.is_empty(), "files gone (a reload?): {lost:?}");
        for (p, bytes) in &before {
            assert!(
                &after[p] == bytes,
                "{} was rewritten (a reload?)",
                p.display()
            );
        }
    }

    // Operations that delete or move rows, each seen by the task on its own, the application
    // writing throughout.
    for (sql, reloads) in [
        ("ALTER TABLE app.t TRUNCATE PARTITION p1", 1),
        ("ALTER TABLE app.t DROP PARTITION p0", 2),
        // Both captured: p2's rows go to app.side, app.side's to p2.
        (
            "ALTER TABLE app.t EXCHANGE PARTITION p2 WITH TABLE app.side",
            3,
        ),
        // app.outside is not captured: only app.t changes in the target.
        (
            "ALTER TABLE app.t EXCHANGE PARTITION p3 WITH TABLE app.outside",
            4,
        ),
    ] {
        db.admin(sql);
        db.admin("UPDATE app.t SET v = v + 1 WHERE id = 4200");
        wait_caught_up(&db, &mut inlet, &out, &log);
        assert_eq!(
            loads_beside(&log),
            reloads,
            "after {sql}: tables loaded beside the stream so many times:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let writes = app.join().unwrap();
    assert!(writes > 20, "the application wrote only {writes} times");
    db.admin(
        "UPDATE app.t SET v = v + 1000 WHERE id % 5 = 0; DELETE FROM app.side WHERE id < 2100;",
    );
    wait_caught_up(&db, &mut inlet, &out, &log);

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for (table, operation) in [
        ("app.t", "TRUNCATE PARTITION"),
        ("app.t", "DROP PARTITION"),
        ("app.t", "EXCHANGE PARTITION"),
        ("app.side", "EXCHANGE PARTITION"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(table)
                && l.contains(operation)
                && l.contains("without row events")),
            "the log does not say {operation} changed {table}'s rows:\n{text}"
        );
    }
    assert!(
        !text.contains("app.outside"),
        "the uncaptured table shows in the log:\n{text}"
    );
    // The exchanges happened: each side holds the other's rows.
    assert_eq!(
        db.admin("SELECT COUNT(*) FROM app.t WHERE note LIKE 'side %'")
            .trim(),
        "300"
    );
    assert_eq!(
        db.admin("SELECT COUNT(*) FROM app.side WHERE note LIKE 'seed %'")
            .trim(),
        "900"
    );
    assert_eq!(
        db.admin("SELECT COUNT(*) FROM app.t WHERE id < 2000")
            .trim(),
        "0"
    );
    assert_target_equals_source(&db, &out, target, "t");
    assert_target_equals_source(&db, &out, target, "side");
    assert!(!out.join("app").join("outside").exists());
    drop(inlet);
}
