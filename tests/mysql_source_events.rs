//! Routine events of a production MariaDB server under a concurrent workload, checked by an
//! oracle that is not inlet (tests/common/mysql_audit.rs: triggers log every row change with
//! the workload's name of its transaction). The server cuts its binlog every 4 KiB
//! (max_binlog_size = 4096), so every transaction is near a rotation. One task streams while the
//! server goes through FLUSH BINARY LOGS, a clean restart, a crash (SIGKILL of mariadbd) and an
//! added column, and inlet itself is SIGKILLed; at the end every audited change is in the
//! change files exactly once, in order, with its transaction, and the load plus the changes
//! replay to the source's rows (Parquet), or pyiceberg and DuckDB read the source's rows
//! (Iceberg). `make soak` runs random events for as long as asked.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use common::daemon::{spawn_logged as spawn, Inlet};
use common::mysql_audit;
use common::mysql_stream::{binlog_end, wait_caught_up_logged};
use common::replay::{cell, file_name, read_file};
use common::{load_files, task_file};
use inlet_testkit::MariaDbServer;

/// The captured database.
const SCHEMA: &str = "shop";

/// Each table and its primary key, the column that names a row in its change stream.
const TABLES: [(&str, &str); 3] = [("ev_default", "id"), ("ev_full", "id"), ("ev_code", "id")];

/// Where a scenario writes: DMS-style Parquet files, or Iceberg tables in a folder catalog.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Parquet,
    Iceberg,
}

fn task(url: &str, out: &Path, target: Target) -> String {
    let target = match target {
        Target::Parquet => format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
        Target::Iceberg => format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
    };
    format!(
        r#"
[task]
name = "events"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
[target]
{target}
[tables]
include = ["{SCHEMA}.ev_*"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#
    )
}

/// Waits until the task checkpoint covers the binlog's current end (the task follows one
/// server: epoch 0 of the position).
fn wait_caught_up(db: &MariaDbServer, inlet: &mut Inlet, out: &Path, log: &Path) {
    let checkpoint = out.join("_inlet/events/checkpoint");
    wait_caught_up_logged(db, inlet, &checkpoint, log, Duration::from_secs(120));
}

/// The `mariadb` command-line client.
fn client_bin() -> PathBuf {
    ["/usr/bin/mariadb", "/usr/sbin/mariadb"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("the mariadb client (make setup)")
}

/// Transactions of every kind on the three tables until `stop` (inserts name their columns:
/// ev_full gains columns), each named by `@inlet_tx` for
/// the audit log, through the server's restarts: a round the server interrupts is given up and
/// the next one starts on a new connection. Whether a commit in flight during a crash took
/// effect is for the audit log to say, not the workload.
fn spawn_workload(
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let bin = client_bin();
    std::thread::spawn(move || {
        let mut next_id: i64 = 1_000_000;
        let mut round: i64 = 0;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let (a, b) = (next_id, next_id + 1);
            next_id += 2;
            let r = round % 5;
            let tx = round * 10;
            let sql = format!(
                "USE {SCHEMA};
                 SET @inlet_tx = {tx} + 1;
                 BEGIN;
                   INSERT INTO ev_default (id, v, note) VALUES ({a}, 0, 'new'), ({b}, 0, 'new');
                   INSERT INTO ev_full (id, v, big) VALUES ({a}, 0, REPEAT('x', 1000));
                   INSERT INTO ev_code (id, code, v) VALUES ({a}, 'c{a}', 0);
                 COMMIT;
                 SET @inlet_tx = {tx} + 2;
                 UPDATE ev_default SET v = v + 1 WHERE id % 5 = {r} AND id < 200;
                 SET @inlet_tx = {tx} + 3;
                 UPDATE ev_full SET v = v + 1 WHERE id = {a} OR id % 50 = {r};
                 SET @inlet_tx = {tx} + 4;
                 UPDATE ev_code SET v = v + 1 WHERE id % 7 = {r} AND id < 200;
                 SET @inlet_tx = {tx} + 5;
                 BEGIN;
                   UPDATE ev_default SET id = id + 10000000 WHERE id = {b};
                   UPDATE ev_full SET big = CONCAT(big, 'y'), v = v + 1 WHERE id = {a};
                   DELETE FROM ev_code WHERE id = {a};
                   UPDATE ev_code SET code = CONCAT('c', id, 'k{round}'), v = v + 1 WHERE id = {r} + 900;
                 COMMIT;
                 SET @inlet_tx = {tx} + 6;
                 BEGIN;
                   INSERT INTO ev_default (id, v, note) VALUES ({a} + 500000000, 0, 'rolled back');
                   UPDATE ev_full SET v = -1 WHERE id = {a};
                 ROLLBACK;
                 SET @inlet_tx = {tx} + 7;
                 DELETE FROM ev_default WHERE id = {a};
                 SET @inlet_tx = {tx} + 8;
                 BEGIN;
                   UPDATE ev_default SET v = v + 1 WHERE id = {r} + 300;
                   INSERT INTO ev_code (id, code, v) VALUES ({b}, 'c{b}', 0);
                   UPDATE ev_code SET id = id + 20000000, v = v + 1 WHERE id = {r} + 600;
                 COMMIT;"
            );
            let ok = Command::new(&bin)
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-uroot", "--batch", "-e", &sql])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                done.fetch_add(1, Ordering::SeqCst);
            } else {
                // The server went away (or is starting): try again on a new connection.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// The rows of a table folder as (key, v): the LOAD files, then the change files applied in
/// order.
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

/// The rows of `shop.table` as text, `NULL` as None.
fn source_rows(db: &MariaDbServer, table: &str, columns: &[String]) -> Vec<Vec<Option<String>>> {
    db.admin(&format!(
        "SELECT {} FROM {SCHEMA}.{table}",
        columns.join(", ")
    ))
    .lines()
    .map(|line| {
        line.split('\t')
            .map(|v| (v != "NULL").then(|| v.to_string()))
            .collect()
    })
    .collect()
}

/// Copies the server's data folder (its binlogs) to `to` when the test fails, before the
/// server and its folder go.
struct CopyOnPanic {
    from: PathBuf,
    to: Option<PathBuf>,
}

impl Drop for CopyOnPanic {
    fn drop(&mut self) {
        if let (true, Some(to)) = (std::thread::panicking(), &self.to) {
            let _ = Command::new("cp")
                .arg("-r")
                .arg(&self.from)
                .arg(to)
                .status();
        }
    }
}

/// An event the server, the operator or a crash puts a streaming task through.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// `FLUSH BINARY LOGS`: a rotation the server is asked for (besides the size cuts).
    FlushLogs,
    /// A clean shutdown (SIGTERM) and start of mariadbd while inlet is connected.
    CleanRestart,
    /// SIGKILL of mariadbd and a start: crash recovery; commits in flight may or may not have
    /// happened.
    CrashRestart,
    /// SIGKILL of inlet, started again at once.
    KillInlet,
    /// `ALTER TABLE ev_full ADD COLUMN extra_N int` (without a DEFAULT: the rows written before
    /// it read NULL in the source too).
    AddColumn,
}

/// What a scenario went through, for the test's report.
#[derive(Debug, Default)]
struct Report {
    rounds: u64,
    events: BTreeMap<String, u32>,
    binlog_files: u64,
    compared: usize,
}

/// Runs the three tables' workload through `events` (each followed by `pause`), then checks
/// the output against the audit log (Parquet: every change exactly once, in order, and the
/// replay equal to the source) or against the source's rows read by pyiceberg and DuckDB
/// (Iceberg: a current-state table).
fn scenario(target: Target, events: &mut dyn Iterator<Item = Event>, pause: Duration) -> Report {
    // innodb_flush_log_at_trx_commit = 1: a crash must not lose from InnoDB a transaction the
    // binlog holds (at the testkit's 0 recovery could, and the source would not be what its
    // binlog says: a test artefact, not inlet's).
    let db = MariaDbServer::start_with(&[
        "--max-binlog-size=4096",
        "--innodb-flush-log-at-trx-commit=1",
    ]);
    db.admin(&format!(
        "CREATE DATABASE {SCHEMA};
         USE {SCHEMA};
         CREATE TABLE ev_default (id bigint PRIMARY KEY, v int NOT NULL, note varchar(100));
         CREATE TABLE ev_full (id bigint PRIMARY KEY, v int NOT NULL, big text);
         CREATE TABLE ev_code (id bigint PRIMARY KEY, code varchar(100) NOT NULL UNIQUE,
             v int NOT NULL);
         INSERT INTO ev_default SELECT seq, 0, 'seed' FROM seq_1_to_1000;
         INSERT INTO ev_full SELECT seq, 0, REPEAT('s', 1000) FROM seq_1_to_1000;
         INSERT INTO ev_code SELECT seq, CONCAT('c', seq), 0 FROM seq_1_to_1000;"
    ));
    mysql_audit::install(&db, SCHEMA, &TABLES);
    // A commit after the DDL above, before the task starts. Until a transaction commits after
    // a rotation that a DDL caused (these triggers cross max_binlog_size), MariaDB 10.11 can
    // report Binlog_snapshot_file/position as the new file with the old file's end offset
    // (e.g. mariadb-bin.000005:4354, 4354 being where 000004's Rotate event starts); inlet takes
    // that for its start and stops (see this test's report). The row is in the audit database,
    // which the task does not capture, and goes with the clear below.
    db.admin("INSERT INTO inlet_audit.log (tx, tbl, op) VALUES (0, '-', '-')");

    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("INLET_KEEP").is_some() {
        // For a post-mortem: the output, the inlet log and the server's binlogs stay.
        let kept = dir.path().to_path_buf();
        std::mem::forget(dir);
        eprintln!(
            "kept: {} (the server's folder as server/ on a failure)",
            kept.display()
        );
        return scenario_in(target, events, pause, db, &kept);
    }
    scenario_in(target, events, pause, db, dir.path())
}

fn scenario_in(
    target: Target,
    events: &mut dyn Iterator<Item = Event>,
    pause: Duration,
    mut db: MariaDbServer,
    dir: &Path,
) -> Report {
    let _binlogs = CopyOnPanic {
        from: db.data_dir(),
        to: std::env::var_os("INLET_KEEP").map(|_| dir.join("server")),
    };
    let first_file = binlog_end(&db).0;
    let out = dir.join("out");
    let log = dir.join("inlet.log");
    let cfg = task_file(dir, "events", &task(&db.url(SCHEMA), &out, target));
    let mut child = spawn(&cfg, &log);
    wait_caught_up(&db, &mut child, &out, &log);
    // The load is done: from here on every audited change must be in a change file.
    mysql_audit::clear(&db);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workload = spawn_workload(db.socket(), stop.clone(), done.clone());
    let mut report = Report::default();
    let mut added = 0;
    std::thread::sleep(pause);
    for event in events {
        *report.events.entry(format!("{event:?}")).or_default() += 1;
        match event {
            Event::FlushLogs => {
                db.admin("FLUSH BINARY LOGS");
            }
            Event::CleanRestart => db.stop_and_start(),
            Event::CrashRestart => db.restart(),
            Event::KillInlet => {
                child.0.kill().unwrap();
                child.0.wait().unwrap();
                child = spawn(&cfg, &log);
            }
            Event::AddColumn => {
                added += 1;
                db.admin(&format!(
                    "ALTER TABLE {SCHEMA}.ev_full ADD COLUMN extra_{added} int"
                ));
            }
        }
        std::thread::sleep(pause);
    }
    // A few rounds after the last event: the workload still works on the tables as they now
    // are (an insert that no longer fits ev_full would stop it, and the checks would pass on
    // a stream that saw no change since).
    let after = done.load(Ordering::SeqCst) + 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < after {
        assert!(
            Instant::now() < deadline,
            "the workload made no progress for 60 s after the last event"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    workload.join().unwrap();
    report.rounds = done.load(Ordering::SeqCst);
    assert!(
        report.rounds > 10,
        "the workload ran only {} rounds",
        report.rounds
    );

    wait_caught_up(&db, &mut child, &out, &log);
    common::sigterm(&child.0);
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    report.binlog_files = binlog_end(&db).0 - first_file;

    for (t, key) in TABLES {
        match target {
            Target::Parquet => {
                report.compared += mysql_audit::assert_exactly_once(&db, &out, SCHEMA, t, key);
                let want: BTreeMap<String, Option<String>> =
                    source_rows(&db, t, &[key.to_string(), "v".to_string()])
                        .into_iter()
                        .map(|r| (r[0].clone().unwrap(), r[1].clone()))
                        .collect();
                let got = replay(&out.join(SCHEMA).join(t), key);
                assert_eq!(got.len(), want.len(), "{t}: row count");
                assert!(got == want, "{t}: the replay differs from the source");
            }
            Target::Iceberg => {
                let columns: Vec<String> = db
                    .admin(&format!(
                        "SELECT column_name FROM information_schema.columns \
                         WHERE table_schema = '{SCHEMA}' AND table_name = '{t}' \
                         ORDER BY ordinal_position"
                    ))
                    .lines()
                    .map(str::to_string)
                    .collect();
                let mut want = source_rows(&db, t, &columns);
                want.sort();
                let (pyiceberg, duckdb) = common::iceberg::read_iceberg(&out.join(SCHEMA).join(t));
                for (reader, got) in [("pyiceberg", &pyiceberg), ("duckdb", &duckdb)] {
                    let short = |r: &Vec<Option<String>>| -> Vec<String> {
                        r.iter()
                            .map(|v| {
                                v.as_deref()
                                    .map_or("NULL".into(), |v| v.chars().take(12).collect())
                            })
                            .collect()
                    };
                    let missing: Vec<_> = want
                        .iter()
                        .filter(|r| !got.contains(r))
                        .take(3)
                        .map(short)
                        .collect();
                    let extra: Vec<_> = got
                        .iter()
                        .filter(|r| !want.contains(r))
                        .take(3)
                        .map(short)
                        .collect();
                    assert!(
                        missing.is_empty() && extra.is_empty() && got.len() == want.len(),
                        "{t} read by {reader}: {} rows, the source has {}; not read: {missing:?}; \
                         read but not in the source: {extra:?}",
                        got.len(),
                        want.len()
                    );
                }
                report.compared += want.len();
            }
        }
    }
    report
}

const EVENTS: [Event; 6] = [
    Event::FlushLogs,
    Event::CleanRestart,
    Event::KillInlet,
    Event::CrashRestart,
    Event::AddColumn,
    Event::FlushLogs,
];

#[test]
fn mysql_rotations_restarts_crashes_and_kills_keep_every_change_exactly_once() {
    let report = scenario(
        Target::Parquet,
        &mut EVENTS.into_iter(),
        Duration::from_millis(1500),
    );
    eprintln!("{report:?}");
}

#[test]
fn mysql_iceberg_tables_equal_the_source_through_rotations_restarts_crashes_and_kills() {
    let report = scenario(
        Target::Iceberg,
        &mut EVENTS.into_iter(),
        Duration::from_millis(1500),
    );
    eprintln!("{report:?}");
}

/// Random events for `INLET_SOAK_SECONDS` per target (see tests/common/soak.rs: briefly in
/// `make test`, 10 minutes in `make soak`); the seed is printed so a failure can be run again.
#[test]
fn mysql_soak_random_events() {
    let soak = common::soak::Soak::from_env();
    for (name, target) in [("parquet", Target::Parquet), ("iceberg", Target::Iceberg)] {
        if !soak.wants(name) {
            continue;
        }
        eprintln!(
            "soak: MariaDB -> {target:?}, {} s, INLET_SOAK_SEED={}",
            soak.seconds, soak.seed
        );
        let mut events = soak.draws().map(|n| match n {
            0..=4 => Event::KillInlet,
            5..=8 => Event::FlushLogs,
            9..=12 => Event::CleanRestart,
            13..=17 => Event::CrashRestart,
            _ => Event::AddColumn,
        });
        let report = scenario(target, &mut events, soak.pause());
        eprintln!("soak: MariaDB -> {target:?}: {report:?}");
    }
}

/// A server with one table `shop.ev_default` of rows 1..=3 and a task streaming it into Parquet
/// (through `url`, the server's or a proxy's); returns the task file once the load is in.
fn small_task(db: &MariaDbServer, url: &str, dir: &Path) -> (PathBuf, PathBuf, PathBuf, Inlet) {
    db.admin(&format!(
        "CREATE DATABASE IF NOT EXISTS {SCHEMA};
         CREATE TABLE {SCHEMA}.ev_default (id bigint PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO {SCHEMA}.ev_default VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c');"
    ));
    let out = dir.join("out");
    let log = dir.join("inlet.log");
    let cfg = task_file(dir, "events", &task(url, &out, Target::Parquet));
    let mut child = spawn(&cfg, &log);
    wait_caught_up(db, &mut child, &out, &log);
    (cfg, out, log, child)
}

/// Ends the task and checks that the load plus the change files replay to exactly the
/// source's rows of `shop.ev_default`.
fn assert_replay_equals_source(db: &MariaDbServer, mut child: Inlet, out: &Path, log: &Path) {
    wait_caught_up(db, &mut child, out, log);
    common::sigterm(&child.0);
    let status = child.0.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{text}");
    let want: BTreeMap<String, Option<String>> =
        source_rows(db, "ev_default", &["id".to_string(), "v".to_string()])
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone()))
            .collect();
    let got = replay(&out.join(SCHEMA).join("ev_default"), "id");
    assert_eq!(got, want, "{text}");
}

/// Appends to `file` what a server killed while writing a transaction leaves: the header of
/// a GTID event (type 162) of 1000 bytes, and only 30 of its other bytes.
fn tear(file: &Path) {
    use std::io::Write;
    let len = std::fs::metadata(file).unwrap().len() as u32;
    let mut event = Vec::new();
    event.extend_from_slice(&0u32.to_le_bytes()); // timestamp
    event.push(162); // MariaDB GTID event
    event.extend_from_slice(&1u32.to_le_bytes()); // server_id
    event.extend_from_slice(&1000u32.to_le_bytes()); // event size
    event.extend_from_slice(&(len + 1000).to_le_bytes()); // end position
    event.extend_from_slice(&0u16.to_le_bytes()); // flags
    event.extend_from_slice(&[0u8; 30]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .unwrap()
        .write_all(&event)
        .unwrap();
}

/// A server killed while writing a transaction leaves its binlog file ending inside an event;
/// after its restart it writes a new file, and sends the torn file up to the tear, then error
/// 1236 "binlog truncated in the middle of event". (Seen in the MariaDB -> Iceberg soak: the
/// task stopped for good, calling it a purged binlog.) The torn transaction never committed;
/// the stream goes on with the next file and loses nothing, also when it resumes from a
/// checkpoint before the tear.
#[test]
fn a_binlog_file_torn_by_a_server_crash_is_read_past() {
    // A crash must not lose from InnoDB what the binlog holds (the testkit's 0 could).
    let mut db = MariaDbServer::start_with(&["--innodb-flush-log-at-trx-commit=1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, out, log, mut child) = small_task(&db, &db.url(SCHEMA), dir.path());
    db.admin(&format!(
        "INSERT INTO {SCHEMA}.ev_default VALUES (4, 4, 'd'); UPDATE {SCHEMA}.ev_default SET v = 20 WHERE id = 2;"
    ));
    wait_caught_up(&db, &mut child, &out, &log);
    // The task stops here, so it resumes from a checkpoint before the tear as well.
    common::sigterm(&child.0);
    assert!(child.0.wait().unwrap().success());
    let torn = db.admin("SHOW MASTER STATUS");
    let torn = db.data_dir().join(torn.split('\t').next().unwrap());
    db.kill();
    tear(&torn);
    db.restart();
    db.admin(&format!(
        "INSERT INTO {SCHEMA}.ev_default VALUES (5, 5, 'e'); DELETE FROM {SCHEMA}.ev_default WHERE id = 1;"
    ));
    let child = spawn(&cfg, &log);
    db.admin(&format!(
        "UPDATE {SCHEMA}.ev_default SET v = 30 WHERE id = 3;"
    ));
    assert_replay_equals_source(&db, child, &out, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("torn by a crash of the server"),
        "no warning about the torn file:\n{text}"
    );
}

/// The server's binlog file is shorter than the task's checkpoint (its host crashed with
/// sync_binlog = 0 after the task had applied the end): the task refuses, saying the source
/// lost committed binlog, not that it was purged.
#[test]
fn a_checkpoint_past_the_end_of_the_servers_binlog_says_the_source_lost_it() {
    let mut db = MariaDbServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cfg, out, log, mut child) = small_task(&db, &db.url(SCHEMA), dir.path());
    let status = db.admin("SHOW MASTER STATUS");
    let file = db.data_dir().join(status.split('\t').next().unwrap());
    let size_before = std::fs::metadata(&file).unwrap().len();
    db.admin(&format!(
        "INSERT INTO {SCHEMA}.ev_default VALUES (4, 4, REPEAT('d', 500));"
    ));
    wait_caught_up(&db, &mut child, &out, &log);
    common::sigterm(&child.0);
    assert!(child.0.wait().unwrap().success());
    // What the host's crash lost: the file's end, back to before that transaction.
    db.kill();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size_before)
        .unwrap();
    db.restart();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not stop: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("the source lost committed binlog")
            && text.contains(&format!("holds only {size_before} bytes"))
            && !text.contains("purged"),
        "{text}"
    );
}

/// A TCP proxy to `port` that cuts the first server-to-client connection that sends a packet
/// of `cut_at` bytes or more while `armed`, in the middle of that packet (a server killed while
/// it sends an event).
fn cutting_proxy(port: u16, cut_at: usize, armed: Arc<AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(Shutdown::Write);
            });
            let armed = armed.clone();
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || loop {
                let mut head = [0u8; 4];
                if s_read.read_exact(&mut head).is_err() {
                    let _ = c_write.shutdown(Shutdown::Both);
                    return;
                }
                let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
                let mut body = vec![0u8; len];
                if s_read.read_exact(&mut body).is_err() {
                    let _ = c_write.shutdown(Shutdown::Both);
                    return;
                }
                if len >= cut_at && armed.swap(false, Ordering::SeqCst) {
                    let _ = c_write.write_all(&head);
                    let _ = c_write.write_all(&body[..len / 2]);
                    let _ = c_write.flush();
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = c_write.shutdown(Shutdown::Both);
                    let _ = s_read.shutdown(Shutdown::Both);
                    return;
                }
                if c_write.write_all(&head).is_err() || c_write.write_all(&body).is_err() {
                    let _ = s_read.shutdown(Shutdown::Both);
                    return;
                }
            });
        }
    });
    local
}

/// A dump connection that ends in the middle of an event's packet (the server killed while it
/// sends; seen in the soak as `binlog: Input/output error: bytes remaining on stream`, which
/// stopped the task for good) is a broken connection: the task retries from its checkpoint
/// and loses nothing.
#[test]
fn a_dump_connection_cut_inside_a_packet_is_retried() {
    let db = MariaDbServer::start();
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let port: u16 = db
        .url("x")
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = cutting_proxy(port, 6000, armed.clone());
    let url = format!("mysql://root@127.0.0.1:{proxy}/{SCHEMA}");
    let (_cfg, out, log, child) = small_task(&db, &url, dir.path());
    armed.store(true, Ordering::SeqCst);
    db.admin(&format!(
        "INSERT INTO {SCHEMA}.ev_default VALUES (4, 4, REPEAT('d', 10000)); UPDATE {SCHEMA}.ev_default SET v = 20 WHERE id = 2;"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while armed.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the proxy never cut the dump connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    db.admin(&format!(
        "INSERT INTO {SCHEMA}.ev_default VALUES (5, 5, 'e');"
    ));
    assert_replay_equals_source(&db, child, &out, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the connection ended in the middle of a packet"),
        "the cut did not reach inlet as one:\n{text}"
    );
}
