//! Columns added to a captured MariaDB table with rows, while the task streams and the
//! application writes. `ALTER TABLE … ADD COLUMN c … DEFAULT 5` (or `NOT NULL`, which fills the
//! type's implicit default, or a generated column, or `DEFAULT (expr)`) gives every existing row
//! a value, yet the binlog holds only the statement: no row event carries the new values. The
//! target must still equal the source, row for row, so the table is loaded again beside the
//! stream; a column added NULL (no value in any existing row) must not load anything again. A
//! `MODIFY` to a narrower type (values truncated in place) is loaded again as well. A
//! statement behind a comment (`/* app=x */ ALTER …`, as ORMs and migration tools tag them) is
//! read as the statement.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::{spawn_logged as spawn, Inlet};
use common::mysql_rows::{
    assert_rows_equal, columns, keyed, loads_beside, replay_to_end, source_rows,
};
use common::mysql_stream::wait_caught_up_logged;
use common::task_file;
use inlet_testkit::MariaDbServer;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Parquet,
    Iceberg,
}

fn task(url: &str, out: &Path, target: Target, tables: &str) -> String {
    let target = match target {
        Target::Parquet => format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
        Target::Iceberg => format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
    };
    format!(
        r#"
[task]
name = "added"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
[target]
{target}
[tables]
include = [{tables}]
[cdc]
flush_interval_ms = 200
schema_changes = "evolve"
"#
    )
}

/// Runs `sql` with the client keeping its comments (the `mariadb` client strips them unless
/// told `--comments`), as an application's driver sends them.
fn run_with_comments(db: &MariaDbServer, sql: &str) {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", db.socket().display()))
        .args(["-uroot", "--comments", "-e", sql])
        .output()
        .expect("run mariadb");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The application's writes until `stop`: updates of a few rows, an insert (naming only the
/// first columns: the added ones take their defaults, a `NOT NULL` one without a default its
/// type's implicit default, hence no strict mode) and a delete. They wait on each ALTER's
/// lock and go on after it.
fn spawn_app(
    db: &MariaDbServer,
    table: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let socket = db.socket();
    std::thread::spawn(move || {
        let mut i: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let sql = format!(
                "SET SESSION sql_mode = ''; \
                 UPDATE app.{table} SET v = v + 1 WHERE id % 97 = {k}; \
                 INSERT INTO app.{table} (id, v, note) VALUES ({new}, 0, 'app'); \
                 DELETE FROM app.{table} WHERE id = {gone};",
                k = i % 97,
                new = 1_000_000 + i,
                gone = 1000 + i % 1000,
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
            std::thread::sleep(Duration::from_millis(20));
        }
        i
    })
}

/// The target's rows of `app.{table}` equal the source's in every column, value for value.
fn assert_target_equals_source(db: &MariaDbServer, out: &Path, target: Target, table: &str) {
    let columns = columns(db, "app", table);
    let what = format!("app.{table} ({columns:?})");
    let want = source_rows(db, &format!("app.{table}"), &columns);
    let dir = out.join("app").join(table);
    match target {
        Target::Parquet => {
            let got = replay_to_end(&dir, &columns);
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
    let checkpoint = out.join("_inlet/added/checkpoint");
    wait_caught_up_logged(db, inlet, &checkpoint, log, Duration::from_secs(40));
}

#[test]
fn columns_added_with_values_leave_the_parquet_target_equal_to_the_source() {
    scenario(Target::Parquet);
}

#[test]
fn columns_added_with_values_leave_the_iceberg_table_equal_to_the_source() {
    scenario(Target::Iceberg);
}

fn scenario(target: Target) {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE app;
         USE app;
         CREATE TABLE app.t (id bigint PRIMARY KEY, v int NOT NULL, note varchar(40));
         INSERT INTO app.t SELECT seq, 0, CONCAT('seed ', seq) FROM seq_1_to_3000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let cfg: PathBuf = task_file(
        dir.path(),
        "added",
        &task(&db.url("app"), &out, target, "\"app.t\""),
    );
    let mut inlet = spawn(&cfg, &log);
    wait_caught_up(&db, &mut inlet, &out, &log);

    let stop = Arc::new(AtomicBool::new(false));
    let app = spawn_app(&db, "t", stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    wait_caught_up(&db, &mut inlet, &out, &log);

    // Columns added NULL: no existing row gets a value, nothing is loaded again.
    db.admin(
        "ALTER TABLE app.t ADD COLUMN plain int;
         ALTER TABLE app.t ADD COLUMN plain_null varchar(10) NULL DEFAULT NULL",
    );
    db.admin("UPDATE app.t SET v = v + 1, plain = 7 WHERE id = 2500");
    wait_caught_up(&db, &mut inlet, &out, &log);
    assert_eq!(
        loads_beside(&log),
        0,
        "a column added NULL loaded the table again:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Each kind of added column that fills the existing rows, seen by the task on its own, the
    // application writing throughout.
    let filling = [
        "ALTER TABLE app.t ADD COLUMN five int NOT NULL DEFAULT 5",
        "ALTER TABLE app.t ADD COLUMN x varchar(10) DEFAULT 'x'",
        // The type's implicit default: 0 and ''.
        "ALTER TABLE app.t ADD COLUMN zero int NOT NULL, ADD COLUMN empty varchar(5) NOT NULL",
        "ALTER TABLE app.t ADD COLUMN twice bigint AS (id * 2) STORED",
        "ALTER TABLE app.t ADD COLUMN expr int DEFAULT (1 + 2)",
        // A narrower type rewrites values too: 'seed 1234' becomes 'seed 123' (not strict).
        "SET SESSION sql_mode = ''; ALTER TABLE app.t MODIFY note varchar(8)",
    ];
    for sql in filling {
        db.admin(sql);
        db.admin("UPDATE app.t SET v = v + 1 WHERE id = 2500");
        wait_caught_up(&db, &mut inlet, &out, &log);
    }
    // Behind a comment, as an application tags its statements; the binlog keeps the comment.
    let commented = "/* app=billing */ ALTER TABLE app.t ADD COLUMN tagged int NOT NULL DEFAULT 9";
    run_with_comments(&db, commented);
    let binlog = db.admin("SHOW BINLOG EVENTS");
    assert!(
        binlog.contains(commented),
        "the binlog does not hold the comment:\n{binlog}"
    );
    db.admin("UPDATE app.t SET v = v + 1 WHERE id = 2500");
    wait_caught_up(&db, &mut inlet, &out, &log);

    stop.store(true, Ordering::SeqCst);
    let writes = app.join().unwrap();
    assert!(writes > 10, "the application wrote only {writes} times");
    db.admin("UPDATE app.t SET v = v + 1000, x = 'late' WHERE id % 5 = 0");
    wait_caught_up(&db, &mut inlet, &out, &log);

    // The source holds the values the statements wrote in rows no change touched.
    assert_eq!(
        db.admin("SELECT five, x, zero, empty, twice, expr, tagged FROM app.t WHERE id = 1"),
        "5\tx\t0\t\t2\t3\t9\n"
    );
    assert_eq!(
        db.admin("SELECT note FROM app.t WHERE id = 2999"),
        "seed 299\n"
    );
    assert_target_equals_source(&db, &out, target, "t");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        loads_beside(&log),
        filling.len() + 1,
        "each filling ADD COLUMN loads the table once:\n{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("app.t")
            && l.contains("ADD COLUMN")
            && l.contains("without row events")),
        "the log does not say ADD COLUMN changed app.t's rows:\n{text}"
    );
    drop(inlet);
}
