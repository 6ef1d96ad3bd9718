//! MySQL/MariaDB end to end against a real MariaDB 10.11 (binlog on, started by the harness):
//! `inlet run` in full-load-and-cdc mode, a workload of inserts, updates (key changes
//! included), deletes, truncates and multi-table transactions, SIGKILLs at random moments, and
//! at the end the full load plus the change log, replayed, must equal the source row for row,
//! with no change applied twice.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::iceberg::assert_iceberg_equals;
use common::mysql_stream::{self, binlog_end};
use common::replay::{replay, Rows};
use common::{spawn_run as spawn_inlet, stop_run, task_file};
use inlet_testkit::MariaDbServer;

const SCHEMA: &str = "
CREATE DATABASE shop;
USE shop;
CREATE TABLE shop.accounts (id bigint PRIMARY KEY, version int NOT NULL, owner varchar(200), balance decimal(12,2));
CREATE TABLE shop.events (id bigint PRIMARY KEY, version int NOT NULL, account bigint, note text);
INSERT INTO shop.accounts SELECT seq, 0, CONCAT('owner ', seq), seq * 10 FROM seq_1_to_2000;
INSERT INTO shop.events SELECT seq, 0, seq % 2000 + 1, REPEAT('e', seq % 50) FROM seq_1_to_1000;
";
const ACCOUNT_COLUMNS: &[&str] = &["id", "version", "owner", "balance"];
const EVENT_COLUMNS: &[&str] = &["id", "version", "account", "note"];

fn task(url: &str, out: &Path) -> String {
    format!(
        r#"
[task]
name = "my-cdc"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["shop.*"]
[cdc]
flush_interval_ms = 200
part_rows = 50
"#,
        out.display()
    )
}

/// Waits until the task checkpoint covers the binlog's current end: everything committed is
/// durable in the target (idle heartbeats carry the checkpoint over events of other tables).
fn wait_caught_up(db: &MariaDbServer, child: &mut Child, out: &Path) {
    wait_caught_up_on(db, 0, child, out)
}

/// [`wait_caught_up`] on the task's `epoch`th server (positions count the servers followed).
fn wait_caught_up_on(db: &MariaDbServer, epoch: u64, child: &mut Child, out: &Path) {
    mysql_stream::wait_caught_up(db, child, &out.join("_inlet/my-cdc/checkpoint"), epoch)
}

fn workload(db: &MariaDbServer, round: i64) {
    let base = 100_000 + round * 1000;
    let r = round % 7;
    let mut sql = format!(
        "USE shop;
         INSERT INTO accounts SELECT seq, 0, CONCAT('new ', seq), seq FROM seq_{base}_to_{end};
         UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id % 7 = {r};
         DELETE FROM accounts WHERE id % 97 = {r} AND id < 2000;
         BEGIN;
           INSERT INTO events SELECT seq, 0, seq % 2000 + 1, CONCAT('ev ', seq) FROM seq_{base}_to_{end50};
           UPDATE accounts SET version = version + 1, owner = CONCAT(owner, '+') WHERE id = {base};
           DELETE FROM events WHERE id = {base} + 1;
           UPDATE events SET version = version + 1, note = 'changed' WHERE id % 11 = {r};
         COMMIT;
         UPDATE accounts SET version = version + 1, id = id + 500000 WHERE id = {base} + 2;",
        end = base + 199,
        end50 = base + 49,
    );
    if round % 3 == 2 {
        // TRUNCATE is DDL in MySQL: it commits on its own; the refill follows.
        sql.push_str(&format!(
            "TRUNCATE events; INSERT INTO events SELECT seq, 0, 1, 'after truncate' \
             FROM seq_{}_to_{};",
            base + 500,
            base + 519
        ));
    }
    db.admin(&sql);
}

fn source_rows(db: &MariaDbServer, table: &str, columns: &[&str]) -> Rows {
    let out = db.admin(&format!("SELECT {} FROM shop.{table}", columns.join(", ")));
    out.lines()
        .map(|line| {
            let vals: Vec<Option<String>> = line
                .split('\t')
                .map(|v| (v != "NULL").then(|| v.to_string()))
                .collect();
            (vals[0].as_ref().unwrap().parse().unwrap(), vals)
        })
        .collect()
}

fn assert_replay_equals_source(db: &MariaDbServer, out: &Path) {
    for (table, columns) in [("accounts", ACCOUNT_COLUMNS), ("events", EVENT_COLUMNS)] {
        let want = source_rows(db, table, columns);
        let got = replay(&out.join("shop").join(table), columns);
        assert_eq!(got.len(), want.len(), "{table}: row count");
        assert!(got == want, "{table}: replayed rows differ from the source");
    }
}

#[test]
fn mysql_changes_replay_to_the_source_across_sigkills() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "my", &task(&db.url("shop"), &out));

    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("shop.accounts"), "{stdout}");
    assert!(
        stdout.contains("[ok     ] GTIDs: on: after a failover the task resumes on the promoted replica by GTID"),
        "{stdout}"
    );

    // A clean run: full load, two rounds, SIGTERM.
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    workload(&db, 0);
    workload(&db, 1);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert_replay_equals_source(&db, &out);

    // kill -9 at pseudo-random moments under the workload.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut round = 2;
    for kill in 0..5 {
        let mut child = spawn_inlet(&cfg);
        for _ in 0..1 + next() % 2 {
            workload(&db, round);
            round += 1;
        }
        std::thread::sleep(Duration::from_millis(next() % 700));
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "inlet exited before kill {kill}: {status}: {}",
                stop_run(child).1
            );
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert_replay_equals_source(&db, &out);
}

/// MySQL into Iceberg tables: a full load, the workload, and a transaction large enough to be
/// applied in parts (which MySQL stamps with the transaction's start), read back by pyiceberg
/// and DuckDB.
#[test]
fn mysql_into_iceberg_with_a_large_transaction_equals_the_source() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let warehouse = dir.path().join("warehouse");
    let body = task(&db.url("shop"), &out).replace(
        &format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
        &format!(
            "kind = \"iceberg\"\nwarehouse = \"{}\"",
            warehouse.display()
        ),
    );
    assert!(body.contains("kind = \"iceberg\""));
    let cfg = task_file(dir.path(), "my-ice", &body);
    let checkpoint_dir = warehouse.clone();

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &checkpoint_dir);
    workload(&db, 0);
    db.admin(
        "UPDATE shop.accounts SET version = version + 1, balance = balance * 2 WHERE id <= 1500",
    );
    workload(&db, 1);
    wait_caught_up(&db, &mut child, &checkpoint_dir);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");

    for (table, columns) in [("accounts", ACCOUNT_COLUMNS), ("events", EVENT_COLUMNS)] {
        let mut want: Vec<Vec<Option<String>>> =
            source_rows(&db, table, columns).into_values().collect();
        want.sort();
        assert_iceberg_equals(&warehouse.join("shop").join(table), table, &want);
    }
}

const ITEM_COLUMNS: &[&str] = &["id", "version", "note"];

fn item_task(url: &str, out: &Path, include: &[&str]) -> String {
    task(url, out).replace(r#"include = ["shop.*"]"#, &format!("include = {include:?}"))
}

/// The set of tables follows the source while the task runs: a captured table renamed to a
/// selected name continues under that name (loaded as of the rename, then streamed), a created
/// table that the selection matches joins, a dropped table's target keeps its rows, and a table
/// added to the selection between runs is loaded before it streams. Every target equals its
/// source table (or, for the renamed-away and dropped ones, the table as it was).
#[test]
fn mysql_tables_renamed_created_dropped_and_added_follow_the_source() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    db.admin(
        "USE shop;
         CREATE TABLE shop.old (id bigint PRIMARY KEY, version int NOT NULL, note varchar(100));
         CREATE TABLE shop.gone (id bigint PRIMARY KEY, version int NOT NULL, note varchar(100));
         CREATE TABLE shop.later (id bigint PRIMARY KEY, version int NOT NULL, note varchar(100));
         INSERT INTO shop.old SELECT seq, 0, CONCAT('old ', seq) FROM seq_1_to_100;
         INSERT INTO shop.gone SELECT seq, 0, CONCAT('gone ', seq) FROM seq_1_to_50;
         INSERT INTO shop.later SELECT seq, 0, CONCAT('later ', seq) FROM seq_1_to_300;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = db.url("shop");
    let first = [
        "shop.accounts",
        "shop.old",
        "shop.renamed",
        "shop.fresh",
        "shop.gone",
    ];
    let cfg = task_file(dir.path(), "my", &item_task(&url, &out, &first));

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    workload(&db, 0);
    db.admin(
        "USE shop;
         UPDATE shop.old SET version = 1, note = 'before rename' WHERE id <= 10;
         INSERT INTO shop.old SELECT seq, 0, 'added' FROM seq_101_to_120;
         INSERT INTO shop.gone SELECT seq, 0, 'added' FROM seq_51_to_60;
         DELETE FROM shop.gone WHERE id <= 5;",
    );
    let old_at_rename = source_rows(&db, "old", ITEM_COLUMNS);
    let gone_at_drop = source_rows(&db, "gone", ITEM_COLUMNS);
    db.admin(
        "USE shop;
         RENAME TABLE shop.old TO shop.renamed;
         UPDATE shop.renamed SET version = 2, note = 'after rename' WHERE id BETWEEN 5 AND 15;
         DELETE FROM shop.renamed WHERE id > 115;
         CREATE TABLE shop.fresh (id bigint PRIMARY KEY, version int NOT NULL, note varchar(100));
         INSERT INTO shop.fresh SELECT seq, 0, 'fresh' FROM seq_1_to_40;
         DROP TABLE shop.gone;
         UPDATE shop.fresh SET version = 1 WHERE id % 3 = 0;",
    );
    workload(&db, 1);
    db.admin(
        "USE shop;
         INSERT INTO shop.renamed VALUES (1000, 0, 'late'); DELETE FROM shop.fresh WHERE id = 2;",
    );
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("new tables join the task"),
        "the renamed and created tables were not joined:\n{stderr}"
    );

    let replayed = |table: &str, columns: &[&str]| replay(&out.join("shop").join(table), columns);
    assert!(replayed("accounts", ACCOUNT_COLUMNS) == source_rows(&db, "accounts", ACCOUNT_COLUMNS));
    for table in ["renamed", "fresh"] {
        let want = source_rows(&db, table, ITEM_COLUMNS);
        assert!(!want.is_empty());
        assert!(
            replayed(table, ITEM_COLUMNS) == want,
            "{table} differs from the source"
        );
    }
    assert!(
        replayed("old", ITEM_COLUMNS) == old_at_rename,
        "old: not the table as renamed"
    );
    assert!(
        replayed("gone", ITEM_COLUMNS) == gone_at_drop,
        "gone: not the table as dropped"
    );

    // While stopped: changes to a table not yet selected; then it joins the selection.
    db.admin(
        "USE shop;
         UPDATE shop.later SET version = 1 WHERE id < 50; DELETE FROM shop.later WHERE id > 290;",
    );
    let mut second = first.to_vec();
    second.push("shop.later");
    let cfg = task_file(dir.path(), "my", &item_task(&url, &out, &second));
    let mut child = spawn_inlet(&cfg);
    db.admin("USE shop; UPDATE shop.later SET note = 'streamed' WHERE id % 10 = 0; INSERT INTO shop.later VALUES (5000, 0, 'new');");
    workload(&db, 2);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    let want = source_rows(&db, "later", ITEM_COLUMNS);
    assert_eq!(want.len(), 291);
    assert!(
        replayed("later", ITEM_COLUMNS) == want,
        "later differs from the source"
    );
    assert!(replayed("accounts", ACCOUNT_COLUMNS) == source_rows(&db, "accounts", ACCOUNT_COLUMNS));
    for table in ["renamed", "fresh"] {
        assert!(
            replayed(table, ITEM_COLUMNS) == source_rows(&db, table, ITEM_COLUMNS),
            "{table}"
        );
    }

    // Binlog positions belong to one server: on another one (here the same server under a new
    // server_id, as a failover would look) the task resumes by GTID, so a checkpoint without a
    // GTID set is refused and left as it was.
    let checkpoint = out.join("_inlet/my-cdc/checkpoint");
    let mut cp = common::read_checkpoint(&checkpoint).unwrap();
    match &mut cp.source {
        Some(inlet_core::SourceResume::Mysql(m)) => {
            assert!(m.gtid_set.is_some(), "{cp:?}");
            m.gtid_set = None;
        }
        other => panic!("not a MySQL checkpoint: {other:?}"),
    }
    let without_gtid = cp.encode();
    std::fs::write(&checkpoint, &without_gtid).unwrap();
    let was = db.admin("SELECT @@server_id").trim().to_string();
    db.admin("SET GLOBAL server_id = 4242");
    let cfg_text = cfg.to_str().unwrap();
    let (code, _, stderr) = common::inlet(&["run", "-c", cfg_text, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "holds a binlog position of the server with server_id {was}, but source.url now \
             reaches server_id 4242, and the checkpoint has no GTID set"
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&checkpoint).unwrap(),
        without_gtid,
        "a refused resume must not touch the checkpoint"
    );
}

/// A failover: the task follows a primary; its URL then points at the promoted replica
/// (server_id 2, which logs what it replicates), where it resumes at the checkpoint's GTID set.
/// The changes made on both servers, including those the task had not read before the switch,
/// replay to the replica's tables. Going back to the old primary, which lacks the replica's new
/// transactions, is refused with what to do.
/// A checkpoint in the text form of every version before the typed checkpoint (6164e41's keys:
/// the tables, the server id, the flavor, the binlog file, the GTID set) is read: the task
/// resumes from its binlog position without loading a table again, the changes made while it
/// was stopped and after reach the target exactly, and its next write stores the JSON form.
#[test]
fn mysql_a_task_resumes_from_a_checkpoint_in_the_text_form_of_earlier_versions() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "my", &task(&db.url("shop"), &out));
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    workload(&db, 0);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");

    let checkpoint = out.join("_inlet/my-cdc/checkpoint");
    let typed = common::read_checkpoint(&checkpoint).unwrap();
    let resume = typed
        .source
        .as_ref()
        .and_then(|s| s.mysql())
        .unwrap()
        .clone();
    assert!(
        resume.binlog_file.is_some()
            && resume
                .gtid_set
                .as_ref()
                .is_some_and(|g| g.starts_with("0-1-"))
            && resume.flavor.as_deref() == Some("mariadb")
            && resume.server_id.is_some(),
        "{typed:?}"
    );
    let captured: Vec<&String> = typed
        .tables
        .iter()
        .filter(|(_, t)| t.captured)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(captured, ["shop.accounts", "shop.events"]);
    let old_form = common::legacy_checkpoint_text(&typed);
    assert!(
        old_form.starts_with(&format!("position={:016X}\n", typed.position.0))
            && old_form.contains("\ntable=\"shop.events\"\n")
            && old_form.contains("\nmysql.gtid_set=0-1-"),
        "{old_form}"
    );
    std::fs::write(&checkpoint, &old_form).unwrap();
    let loads: Vec<Vec<String>> = ["accounts", "events"]
        .iter()
        .map(|t| load_file_names(&out.join("shop").join(t)))
        .collect();
    assert!(loads.iter().all(|l| !l.is_empty()), "{loads:?}");

    // Changes while stopped and after the start.
    workload(&db, 1);
    let mut child = spawn_inlet(&cfg);
    workload(&db, 2);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming from the task checkpoint")
            && !stderr.contains("join the task")
            && !stderr.contains("loaded again"),
        "{stderr}"
    );
    let loads_after: Vec<Vec<String>> = ["accounts", "events"]
        .iter()
        .map(|t| load_file_names(&out.join("shop").join(t)))
        .collect();
    assert_eq!(loads_after, loads, "no table was loaded again");
    assert_replay_equals_source(&db, &out);

    let stored = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(stored.starts_with("{\n  \"version\": 2,"), "{stored}");
    let now = inlet_core::Checkpoint::decode(stored.as_bytes()).unwrap();
    assert!(now.position > typed.position, "{stored}");
    assert_eq!(now.tables, typed.tables, "{stored}");
    let resumed = now.source.as_ref().and_then(|s| s.mysql()).unwrap();
    assert_eq!(
        (&resumed.flavor, resumed.server_id),
        (&resume.flavor, resume.server_id)
    );
    assert_ne!(resumed.gtid_set, resume.gtid_set, "{stored}");
}

#[test]
fn mysql_failover_to_a_replica_resumes_by_gtid() {
    let primary = MariaDbServer::start();
    let replica = MariaDbServer::start_with(&["--server-id=2", "--log-slave-updates=ON"]);
    primary.admin(SCHEMA);
    replica.admin(&format!(
        "CHANGE MASTER TO master_host = '127.0.0.1', master_port = {}, master_user = 'root', \
         master_use_gtid = slave_pos; START SLAVE;",
        primary.port
    ));
    let sync = || {
        let pos = primary.admin("SELECT @@gtid_binlog_pos");
        let waited = replica.admin(&format!("SELECT MASTER_GTID_WAIT('{}', 60)", pos.trim()));
        assert_eq!(waited.trim(), "0", "the replica did not reach {pos}");
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let on = |db: &MariaDbServer| task_file(dir.path(), "my", &task(&db.url("shop"), &out));

    let cfg = on(&primary);
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&primary, &mut child, &out);
    workload(&primary, 0);
    workload(&primary, 1);
    wait_caught_up(&primary, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    // Written while the task is stopped: the replica must send these after the switch.
    workload(&primary, 2);
    sync();
    replica.admin("STOP SLAVE");

    let cfg = on(&replica);
    let mut child = spawn_inlet(&cfg);
    workload(&replica, 3);
    wait_caught_up_on(&replica, 1, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming at the checkpoint's GTID set"),
        "{stderr}"
    );
    assert_replay_equals_source(&replica, &out);
    let checkpoint = std::fs::read_to_string(out.join("_inlet/my-cdc/checkpoint")).unwrap();
    let cp = inlet_core::Checkpoint::decode(checkpoint.as_bytes()).unwrap();
    let resume = cp.source.as_ref().and_then(|s| s.mysql()).unwrap();
    assert_eq!(resume.server_id, Some(2), "{checkpoint}");
    assert_eq!(cp.position.0 >> 56, 1, "{checkpoint}");

    // The old primary never saw round 3.
    let cfg = on(&primary);
    let (code, stderr) = common::stderr_of(spawn_inlet(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot continue from the task's GTID set"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("_inlet/my-cdc/checkpoint")).unwrap(),
        checkpoint,
        "a refused resume leaves the checkpoint as it was"
    );
}

/// A table added to the selection is loaded beside the binlog stream: a change to another table
/// reaches its change file while the load runs (the checkpoint does not name the new table
/// yet), and once loaded the table follows every change since its snapshot, those made during
/// the load included.
#[test]
fn mysql_a_joining_table_loads_while_the_others_stream() {
    const ROWS: i64 = 1_000_000;
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    db.admin(&format!(
        "USE shop; CREATE TABLE shop.big (id bigint PRIMARY KEY, version int NOT NULL, note varchar(200));
         INSERT INTO shop.big SELECT seq, 0, CONCAT(REPEAT('b', 150), seq) FROM seq_1_to_{ROWS};"
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = db.url("shop");
    let cfg = task_file(
        dir.path(),
        "my",
        &item_task(&url, &out, &["shop.accounts", "shop.events"]),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");

    let cfg = task_file(dir.path(), "my", &item_task(&url, &out, &["shop.*"]));
    let mut child = spawn_inlet(&cfg);
    // The load reads shop.big in key ranges.
    let loading = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                   WHERE INFO LIKE '%big%' AND INFO NOT LIKE '%PROCESSLIST%'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.admin(loading).trim() == "0" {
        assert!(Instant::now() < deadline, "the join's load did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let accounts = out.join("shop/accounts");
    let files_before = common::load_files(&accounts);
    db.admin(
        "UPDATE shop.accounts SET version = version + 1 WHERE id = 1;
         UPDATE shop.big SET version = version + 1, note = 'during the load' WHERE id % 1000 = 0;",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let during_load = loop {
        let new: Vec<_> = common::load_files(&accounts)
            .into_iter()
            .filter(|f| !files_before.contains(f))
            .collect();
        if let Some(f) = new.first() {
            break f.clone();
        }
        assert!(
            Instant::now() < deadline,
            "accounts' change was not written"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let checkpoint = out.join("_inlet/my-cdc/checkpoint");
    assert!(
        !common::checkpoint_captures(&checkpoint, "shop.big"),
        "the change to accounts was written only after the join's load"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !common::checkpoint_captures(&checkpoint, "shop.big") {
        assert!(Instant::now() < deadline, "shop.big did not join");
        std::thread::sleep(Duration::from_millis(100));
    }
    db.admin(
        "UPDATE shop.big SET version = version + 1 WHERE id <= 10;
         DELETE FROM shop.big WHERE id > 999990;",
    );
    workload(&db, 0);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("loading them beside the stream"),
        "{stderr}"
    );

    // The load was still writing after that change file was.
    let modified = |f: &Path| std::fs::metadata(f).unwrap().modified().unwrap();
    let load_end = common::load_files(&out.join("shop/big"))
        .iter()
        .filter(|f| common::replay::file_name(f).starts_with("LOAD"))
        .map(|f| modified(f))
        .max()
        .unwrap();
    assert!(
        modified(&during_load) < load_end,
        "accounts waited for the load"
    );

    assert_replay_equals_source(&db, &out);
    let want = source_rows(&db, "big", ITEM_COLUMNS);
    assert_eq!(want.len() as i64, ROWS - 10);
    assert!(replay(&out.join("shop/big"), ITEM_COLUMNS) == want, "big");
}

const ROTATION_SCHEMA: &str = "
CREATE DATABASE shop;
CREATE DATABASE audit;
USE shop;
CREATE TABLE shop.items (id bigint PRIMARY KEY, version int NOT NULL, note varchar(300));
INSERT INTO shop.items SELECT seq, 0, REPEAT('i', 100) FROM seq_1_to_100;
CREATE TABLE audit.log (seq bigint AUTO_INCREMENT PRIMARY KEY, op char(1) NOT NULL,
    id bigint NOT NULL, version int NOT NULL);
CREATE TRIGGER shop.items_i AFTER INSERT ON shop.items FOR EACH ROW
    INSERT INTO audit.log (op, id, version) VALUES ('I', NEW.id, NEW.version);
CREATE TRIGGER shop.items_u AFTER UPDATE ON shop.items FOR EACH ROW
    INSERT INTO audit.log (op, id, version) VALUES ('U', NEW.id, NEW.version);
CREATE TRIGGER shop.items_d AFTER DELETE ON shop.items FOR EACH ROW
    INSERT INTO audit.log (op, id, version) VALUES ('D', OLD.id, OLD.version);
";
const ITEMS: &[&str] = &["id", "version", "note"];

/// One round of changes to shop.items (about 8 KiB of binlog: two files at max_binlog_size =
/// 4096), keys never changed so the oracle's updates map one to one.
fn items_round(db: &MariaDbServer, round: i64, flush: bool) {
    let base = 1000 + round * 100;
    let r = round % 5;
    let mut sql = format!(
        "USE shop;
         INSERT INTO shop.items SELECT seq, 0, REPEAT('n', 100) FROM seq_{base}_to_{end};
         UPDATE shop.items SET version = version + 1 WHERE id % 5 = {r} AND id < 200;
         BEGIN;
           INSERT INTO shop.items VALUES ({base} + 50, 0, 'in a transaction');
           UPDATE shop.items SET version = version + 1, note = 'txn' WHERE id = {base};
           DELETE FROM shop.items WHERE id = {base} + 1;
         COMMIT;
         DELETE FROM shop.items WHERE id % 13 = {r} AND id < 100;",
        end = base + 19,
    );
    if flush {
        sql.push_str("FLUSH BINARY LOGS;");
        sql.push_str(&format!(
            "UPDATE shop.items SET version = version + 1 WHERE id = {base} + 2;"
        ));
    }
    db.admin(&sql);
}

/// Every change row of the table's change files (full load excluded), in file and row order,
/// as (op, id, version) per id.
fn change_rows_by_id(table_dir: &Path) -> std::collections::BTreeMap<i64, Vec<(String, i64)>> {
    use arrow_array::cast::AsArray;
    let mut out: std::collections::BTreeMap<i64, Vec<(String, i64)>> = Default::default();
    let mut files: Vec<_> = common::load_files(table_dir)
        .into_iter()
        .filter(|p| !common::replay::file_name(p).starts_with("LOAD"))
        .collect();
    files.sort();
    for f in files {
        for b in common::replay::read_file(&f) {
            let ops = b.column_by_name("Op").unwrap().as_string::<i32>().clone();
            for r in 0..b.num_rows() {
                let cell = |c: &str| common::replay::cell(b.column_by_name(c).unwrap().as_ref(), r);
                let id: i64 = cell("id").unwrap().parse().unwrap();
                let version: i64 = cell("version").unwrap().parse().unwrap();
                out.entry(id)
                    .or_default()
                    .push((ops.value(r).to_string(), version));
            }
        }
    }
    out
}

/// What the triggers logged: every row change to shop.items, per id, in order.
fn audit_by_id(db: &MariaDbServer) -> std::collections::BTreeMap<i64, Vec<(String, i64)>> {
    let mut out: std::collections::BTreeMap<i64, Vec<(String, i64)>> = Default::default();
    for line in db
        .admin("SELECT op, id, version FROM audit.log ORDER BY seq")
        .lines()
    {
        let v: Vec<&str> = line.split('\t').collect();
        out.entry(v[1].parse().unwrap())
            .or_default()
            .push((v[0].to_string(), v[2].parse().unwrap()));
    }
    out
}

/// Binlog rotation of every cause under a streaming task: FLUSH BINARY LOGS, files cut at
/// max_binlog_size = 4096 (a rotation every few transactions), a clean server restart and a
/// crash restart (each starts a new file), and inlet SIGKILLed and started again across
/// rotations. The output replays to the source, and every change the triggers logged (an
/// oracle outside the selection) appears in the change files exactly once, in order.
#[test]
fn mysql_binlog_rotations_and_server_restarts_lose_and_repeat_nothing() {
    let mut db = MariaDbServer::start_with(&["--max-binlog-size=4096"]);
    db.admin(ROTATION_SCHEMA);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "my",
        &item_task(&db.url("shop"), &out, &["shop.items"]),
    );
    let first_file = binlog_end(&db).0;

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    let mut round = 0;
    for _ in 0..3 {
        items_round(&db, round, true);
        round += 1;
    }
    wait_caught_up(&db, &mut child, &out);

    // A clean restart of the server, then a crash, while inlet streams: it reconnects.
    db.stop_and_start();
    items_round(&db, round, false);
    round += 1;
    wait_caught_up(&db, &mut child, &out);
    // InnoDB writes its log once a second here (innodb_flush_log_at_trx_commit = 0): let it,
    // so the crash loses no committed transaction the binlog already holds.
    std::thread::sleep(Duration::from_secs(2));
    db.restart();
    items_round(&db, round, true);
    round += 1;
    wait_caught_up(&db, &mut child, &out);

    // inlet killed across rotations: the binlog moves on several files while it is down.
    for _ in 0..2 {
        items_round(&db, round, true);
        round += 1;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        items_round(&db, round, true);
        round += 1;
        child = spawn_inlet(&cfg);
        items_round(&db, round, false);
        round += 1;
        wait_caught_up(&db, &mut child, &out);
    }
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        binlog_end(&db).0 >= first_file + 15,
        "too few rotations: {} files",
        binlog_end(&db).0 - first_file
    );

    let table = out.join("shop/items");
    let want = source_rows(&db, "items", ITEMS);
    assert!(
        replay(&table, ITEMS) == want,
        "items differs from the source"
    );
    let audit = audit_by_id(&db);
    assert!(audit.values().map(Vec::len).sum::<usize>() > 300);
    let changes = change_rows_by_id(&table);
    for (id, logged) in &audit {
        assert_eq!(
            changes.get(id),
            Some(logged),
            "id {id}: change files differ from the audit log"
        );
    }
    assert_eq!(
        changes.len(),
        audit.len(),
        "changes of ids the audit never logged"
    );
}

/// XA transactions on a captured and an uncaptured table, committed (two-phase and one-phase)
/// and rolled back, with XA COMMITs that come after inlet was killed or stopped while the
/// transaction was prepared: the task keeps running, a committed XA transaction's changes
/// reach the change files exactly once (checked against the trigger-fed audit log), a rolled
/// back one's never.
#[test]
fn mysql_xa_transactions_reach_the_target_once_when_committed() {
    let db = MariaDbServer::start();
    db.admin(ROTATION_SCHEMA);
    db.admin("CREATE TABLE shop.other (id bigint PRIMARY KEY, v int)");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "my",
        &item_task(&db.url("shop"), &out, &["shop.items"]),
    );
    let xa = |xid: &str, body: &str, end: &str| {
        db.admin(&format!(
            "XA START {xid}; {body}; XA END {xid}; {}",
            end.replace("XID", xid)
        ));
    };
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    xa(
        "'c1','b',7",
        "INSERT INTO shop.items VALUES (5001, 0, 'xa'); UPDATE shop.items SET version = version + 1 WHERE id = 1",
        "XA PREPARE XID; XA COMMIT XID",
    );
    xa(
        "'u1'",
        "INSERT INTO shop.other VALUES (1, 1)",
        "XA PREPARE XID; XA COMMIT XID",
    );
    xa(
        "'r1'",
        "INSERT INTO shop.items VALUES (5002, 0, 'rolled back'); DELETE FROM shop.items WHERE id = 3",
        "XA PREPARE XID; XA ROLLBACK XID",
    );
    xa(
        "'o1'",
        "INSERT INTO shop.items VALUES (5003, 0, 'one phase')",
        "XA COMMIT XID ONE PHASE",
    );
    // Prepared; other transactions commit after it and the checkpoint passes it.
    xa(
        "'p1'",
        "INSERT INTO shop.items VALUES (5004, 0, 'prepared'); UPDATE shop.items SET version = version + 1 WHERE id = 2",
        "XA PREPARE XID",
    );
    xa(
        "'p2'",
        "UPDATE shop.items SET version = version + 1 WHERE id = 4",
        "XA PREPARE XID",
    );
    xa(
        "'p3'",
        "DELETE FROM shop.items WHERE id = 5",
        "XA PREPARE XID",
    );
    db.admin("UPDATE shop.items SET version = version + 1 WHERE id = 6; INSERT INTO shop.other VALUES (2, 2)");
    wait_caught_up(&db, &mut child, &out);
    // Killed while p1, p2, p3 are prepared; p1 commits after the restart, p2 while inlet is
    // down, p3 is rolled back while it is down.
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    db.admin("XA COMMIT 'p2'; XA ROLLBACK 'p3'; UPDATE shop.items SET version = version + 1 WHERE id = 7");
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    db.admin("XA COMMIT 'p1'");
    xa(
        "'p4'",
        "INSERT INTO shop.items VALUES (5005, 0, 'after restart')",
        "XA PREPARE XID",
    );
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    db.admin("XA COMMIT 'p4'");
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");

    let table = out.join("shop/items");
    let want = source_rows(&db, "items", ITEMS);
    assert!(want.contains_key(&5001) && want.contains_key(&5005) && !want.contains_key(&5002));
    assert!(
        replay(&table, ITEMS) == want,
        "items differs from the source"
    );
    let audit = audit_by_id(&db);
    let changes = change_rows_by_id(&table);
    assert_eq!(changes, audit, "change files differ from the audit log");
}

/// `server_id = 0` is refused when the task file is loaded (exit 2, naming the key and what to
/// do): with it the server ends the binlog stream at once and the task would loop forever.
#[test]
fn mysql_server_id_zero_is_refused_at_config_load() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let body = task("mysql://root@127.0.0.1:1/shop", &out).replace(
        "heartbeat_seconds = 1",
        "heartbeat_seconds = 1\nserver_id = 0",
    );
    assert!(body.contains("server_id = 0"));
    let cfg = task_file(dir.path(), "my", &body);
    let cfg = cfg.to_str().unwrap();
    for args in [
        vec!["run", "-c", cfg, "--listen", "127.0.0.1:0"],
        vec!["check", "-c", cfg],
    ] {
        let (code, stdout, stderr) = common::inlet(&args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("source.server_id: 0 is not a valid replica id")
                && stderr.contains("remove the key"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !out.join("_inlet/my-cdc/checkpoint").exists(),
        "no checkpoint is written"
    );
}

/// A host that accepts TCP connections and never answers: `inlet check` gives up within the
/// connect timeout (30 s) with a message naming the host and the timeout.
#[test]
fn mysql_check_against_a_silent_host_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s); // accepted, never answered
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "my",
        &task(&format!("mysql://root@127.0.0.1:{port}/shop"), &out),
    );
    let started = Instant::now();
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    let took = started.elapsed();
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    let text = format!("{stdout}{stderr}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("no answer within 30 s"),
        "{text}"
    );
}

/// A TCP proxy to the server at `port` that, on a connection whose client sends a statement
/// containing `trigger`, passes on `then_bytes` more bytes of the server's answers and then
/// nothing, keeping the connection open: a server that hangs, or a network that drops packets
/// silently, in the middle of a conversation.
fn silencing_proxy(port: u16, trigger: &'static str, then_bytes: usize) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let silent = Arc::new(AtomicBool::new(false));
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let set = silent.clone();
            // Client to server, packet by packet: the flag is set before the statement leaves.
            std::thread::spawn(move || loop {
                let mut head = [0u8; 4];
                if c_read.read_exact(&mut head).is_err() {
                    return;
                }
                let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
                let mut body = vec![0u8; len];
                if c_read.read_exact(&mut body).is_err() {
                    return;
                }
                if String::from_utf8_lossy(&body).contains(trigger) {
                    set.store(true, Ordering::SeqCst);
                }
                if s_write.write_all(&head).is_err() || s_write.write_all(&body).is_err() {
                    return;
                }
            });
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut allowance = then_bytes;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let pass = if silent.load(Ordering::SeqCst) {
                        let pass = n.min(allowance);
                        allowance -= pass;
                        pass
                    } else {
                        n
                    };
                    if c_write.write_all(&buf[..pass]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// Runs `inlet ARGS…`, killing it after `limit`: (its exit code, or None when it had to be
/// killed; its stdout and stderr).
fn inlet_within(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        code.or(if output.status.success() {
            Some(0)
        } else {
            None
        }),
        text,
    )
}

/// A task of `task()`'s through `proxy`, with `source.read_timeout_s = 3`.
fn silent_task(dir: &Path, proxy: u16, mode: &str) -> std::path::PathBuf {
    let body = task(
        &format!("mysql://root@127.0.0.1:{proxy}/shop"),
        &dir.join("out"),
    )
    .replace(
        "heartbeat_seconds = 1",
        "heartbeat_seconds = 1\nread_timeout_s = 3",
    )
    .replace(
        "mode = \"full-load-and-cdc\"",
        &format!("mode = \"{mode}\""),
    );
    task_file(dir, "my", &body)
}

/// The server answers the handshake, then never the catalog query: `inlet check` gives up
/// after `source.read_timeout_s`, naming it (it used to wait forever).
#[test]
fn mysql_check_against_a_server_that_stops_answering_times_out() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    let proxy = silencing_proxy(db.port, "information_schema.TABLES", 0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = silent_task(dir.path(), proxy, "full-load-and-cdc");
    let started = Instant::now();
    let (code, text) = inlet_within(
        &["check", "-c", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?} after {took:?}: {text}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}: {text}");
    assert!(
        text.contains("reading the catalog")
            && text.contains("sent nothing for 3 s (source.read_timeout_s)")
            && text.contains(&format!("127.0.0.1:{proxy}")),
        "{text}"
    );
}

/// The server sends part of a snapshot read and then nothing: the full load gives up after
/// `source.read_timeout_s` of silence, naming the table (it used to wait forever).
#[test]
fn mysql_snapshot_read_from_a_server_that_stops_answering_times_out() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, note text);
         INSERT INTO shop.big SELECT seq, REPEAT('x', 200) FROM seq_1_to_100000;",
    );
    // The chunk read's statement; 200 KB of its rows pass, then silence.
    let proxy = silencing_proxy(db.port, "SELECT `id`, `note` FROM", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = silent_task(dir.path(), proxy, "full-load");
    let started = Instant::now();
    let (code, text) = inlet_within(
        &["full-load", "-c", cfg.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?} after {took:?}: {text}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}: {text}");
    assert!(
        text.contains("reading shop.big failed: timed out")
            && text.contains("source.read_timeout_s"),
        "{text}"
    );
}

/// The LOAD files in a table's folder.
fn load_file_names(table_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(table_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("LOAD"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A full load of `shop.big` (200,000 rows) whose read stalls through a proxy after 8 MB,
/// once it has completed LOAD files; the proxy's port.
fn stalling_big_table(db: &MariaDbServer) -> u16 {
    db.admin(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, note text);
         INSERT INTO shop.big SELECT seq, CONCAT(MD5(seq), SHA2(seq, 256)) FROM seq_1_to_200000;",
    );
    silencing_proxy(db.port, "SELECT `id`, `note` FROM", 8 << 20)
}

fn full_load_task(dir: &Path, url: &str, read_timeout_s: u64) -> std::path::PathBuf {
    let body = format!(
        r#"
[task]
name = "my-load"
mode = "full-load"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
read_timeout_s = {read_timeout_s}
[target]
kind = "parquet"
url = "{}"
file_size_mb = 1
[tables]
include = ["shop.big"]
[full_load]
chunk_mb = 0
batch_rows = 5000
"#,
        dir.join("out").display()
    );
    task_file(dir, "load", &body)
}

/// `inlet full-load` on `cfg`, running until it wrote a LOAD file (a `full-load` task stages
/// its files, a first load's too, in `_inlet_load/`); the child.
fn load_until_a_file_is_written(cfg: &Path, table_dir: &Path) -> std::process::Child {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["full-load", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while load_file_names(table_dir).is_empty()
        && load_file_names(&table_dir.join("_inlet_load")).is_empty()
    {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the load ended ({status}) before writing a file: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no LOAD file within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Waits up to `limit` for `child`; its exit code (None if it had to be killed) and output.
fn wait_within(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code, text)
}

/// After a load that ended early, a rerun straight to the server holds exactly the source's
/// rows: each id once.
fn assert_rerun_loads_exactly_the_source(db: &MariaDbServer, dir: &Path, table_dir: &Path) {
    let cfg = full_load_task(dir, &db.url("shop"), 60);
    let (code, stdout, stderr) = common::inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut ids = Vec::new();
    for name in load_file_names(table_dir) {
        for batch in common::replay::read_file(&table_dir.join(&name)) {
            let col = batch.column_by_name("id").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            ids.extend(col.values().iter().copied());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids.len(), 200_000, "rows after the rerun");
    assert!(
        ids.iter().copied().eq(1..=200_000),
        "the rerun's rows are not ids 1..=200000 once each"
    );
}

/// SIGTERM during a MySQL full load that has completed LOAD files: the load settles its table
/// as the PostgreSQL load does (exit 3, the incomplete table's LOAD files deleted, its state
/// named), so no partial table stays readable; a rerun loads exactly the source.
#[test]
fn a_mysql_full_load_stopped_by_a_signal_leaves_no_partial_table() {
    let db = MariaDbServer::start();
    let proxy = stalling_big_table(&db);
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("out/shop/big");
    let cfg = full_load_task(
        dir.path(),
        &format!("mysql://root@127.0.0.1:{proxy}/shop"),
        600,
    );
    let child = load_until_a_file_is_written(&cfg, &table_dir);
    common::sigterm(&child);
    let (code, text) = wait_within(child, Duration::from_secs(20));
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(
            "shop.big: not loaded; its folder holds what an earlier run left (if anything), \
             unchanged"
        ),
        "{text}"
    );
    assert_eq!(load_file_names(&table_dir), Vec::<String>::new(), "{text}");
    assert_rerun_loads_exactly_the_source(&db, dir.path(), &table_dir);
}

/// A MySQL full load that fails (here: the server stops answering mid-read) after completing
/// LOAD files deletes them and names the table's state; a rerun loads exactly the source.
#[test]
fn a_failed_mysql_full_load_leaves_no_partial_table() {
    let db = MariaDbServer::start();
    let proxy = stalling_big_table(&db);
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("out/shop/big");
    let cfg = full_load_task(
        dir.path(),
        &format!("mysql://root@127.0.0.1:{proxy}/shop"),
        3,
    );
    let child = load_until_a_file_is_written(&cfg, &table_dir);
    let (code, text) = wait_within(child, Duration::from_secs(60));
    assert!(
        code.is_some_and(|c| c != 0 && c != 3),
        "exit {code:?}: {text}"
    );
    assert!(
        text.contains("timed out")
            && text.contains(
                "shop.big: not loaded; its folder holds what an earlier run left (if anything), \
                 unchanged"
            ),
        "{text}"
    );
    assert_eq!(load_file_names(&table_dir), Vec::<String>::new(), "{text}");
    assert_rerun_loads_exactly_the_source(&db, dir.path(), &table_dir);
}

/// An XA transaction prepared before a full load's snapshot and committed after it: its rows
/// are not in the snapshot, and its prepare is before the position the stream starts at, so
/// they used to be lost (a warning at its XA COMMIT). The load now does not start while it is
/// prepared (the task retries, naming it); once it commits, the target equals the source.
#[test]
fn an_xa_transaction_prepared_before_the_load_and_committed_after_is_not_lost() {
    let db = MariaDbServer::start();
    db.admin(SCHEMA);
    db.admin(
        "XA START 'pre1';
         INSERT INTO shop.accounts VALUES (5001, 0, 'xa', 1);
         UPDATE shop.accounts SET version = version + 1 WHERE id = 1;
         XA END 'pre1';
         XA PREPARE 'pre1';",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "my", &task(&db.url("shop"), &out));
    let mut child = spawn_inlet(&cfg);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !out.join("_inlet/my-cdc/checkpoint").exists(),
        "the load went ahead while an XA transaction was prepared"
    );
    db.admin("XA COMMIT 'pre1'; UPDATE shop.accounts SET version = version + 1 WHERE id = 2;");
    wait_caught_up(&db, &mut child, &out);
    let (code, stderr) = stop_run(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the full load cannot start while XA transactions are prepared")
            && stderr.contains(": 'pre1'."),
        "{stderr}"
    );
    let want = source_rows(&db, "accounts", ACCOUNT_COLUMNS);
    assert_eq!(want[&5001][1].as_deref(), Some("0"));
    assert_eq!(want[&1][1].as_deref(), Some("1"));
    assert_replay_equals_source(&db, &out);
}

/// A MariaDB full load of a 1-million-row table, SIGKILLed three times while loading, resumes
/// each time (see `common::resume::kill_and_resume`): the key ranges recorded before a kill
/// are kept, only those in flight are read again, and the Parquet files equal the source.
#[test]
fn a_killed_full_load_resumes() {
    const ROWS: i64 = 1_000_000;
    let db = MariaDbServer::start();
    db.admin(&format!(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO shop.big SELECT seq, seq % 1000,
                IF(seq % 97 = 0, NULL, CONCAT('label ', seq % 5000)) FROM seq_1_to_{ROWS};
         ANALYZE TABLE shop.big;"
    ));
    let source = db.admin(
        "SELECT COUNT(*), CAST(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', id, k, label)), 1, 15), \
         16, 10) AS UNSIGNED)) AS CHAR) FROM shop.big",
    );
    let (rows, checksum) = source.trim().split_once('\t').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let body = format!(
        r#"
[task]
name = "my-resume"
mode = "full-load"
[source]
kind = "mysql"
url = "{}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["shop.big"]
[full_load]
workers = 2
chunk_mb = 1
batch_rows = 5000
"#,
        db.url("shop"),
        out.display()
    );
    let cfg = task_file(dir.path(), "resume", &body);
    common::resume::kill_and_resume(&common::resume::ResumeCase {
        dir: dir.path(),
        cfg: &cfg,
        record: out.join("shop/big/_inlet_load/PROGRESS"),
        table_dir: out.join("shop/big"),
        iceberg: false,
        loaded_before: false,
        rows: ROWS,
        workers: 2,
        want: (rows.parse().unwrap(), checksum.to_string()),
    });
}

/// A MariaDB table dropped and created again with other rows between a killed full load and its
/// restart (a reload from a dump does that) is loaded from its start: its key ranges would
/// still fit, but the chunks the killed run completed hold the old table's rows. The guard
/// names the table's creation time. Before, the restart resumed and kept those rows beside the
/// new ones.
#[test]
fn a_table_recreated_after_a_killed_full_load_is_loaded_from_its_start() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO shop.big SELECT seq, seq % 1000, CONCAT('label ', seq % 5000)
             FROM seq_1_to_1000000;
         ANALYZE TABLE shop.big;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let body = format!(
        r#"
[task]
name = "my-recreated"
mode = "full-load"
[source]
kind = "mysql"
url = "{}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["shop.big"]
[full_load]
workers = 2
chunk_mb = 1
batch_rows = 5000
"#,
        db.url("shop"),
        out.display()
    );
    let cfg = task_file(dir.path(), "recreated", &body);
    let record = out.join("shop/big/_inlet_load/PROGRESS");
    common::resume::kill_after_eight_chunks(&cfg, &record);
    // CREATE_TIME counts seconds.
    std::thread::sleep(Duration::from_millis(1100));
    db.admin(
        "USE shop;
         DROP TABLE shop.big;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO shop.big SELECT seq, 7, 'second' FROM seq_1_to_600000;",
    );
    let (code, stdout, stderr) = common::inlet_with_env(
        &["full-load", "-c", cfg.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the table changed since an interrupted full load"),
        "{stderr}"
    );
    assert!(!stderr.contains("resuming the table's"), "{stderr}");
    let source = db.admin(
        "SELECT COUNT(*), CAST(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', id, k, label)), 1, 15), \
         16, 10) AS UNSIGNED)) AS CHAR) FROM shop.big",
    );
    let (rows, checksum) = source.trim().split_once('\t').unwrap();
    assert_eq!(
        common::resume::duckdb_checksum("parquet", &out.join("shop/big")),
        (rows.parse().unwrap(), checksum.to_string())
    );
}

/// The same killed-and-resumed MariaDB load into Iceberg (1M rows, 44 chunks): the chunk
/// files of a suspended load are recorded, kept and committed once at the end.
#[test]
fn a_killed_full_load_resumes_into_iceberg() {
    const ROWS: i64 = 1_000_000;
    let db = MariaDbServer::start();
    db.admin(&format!(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, k int, label text);
         INSERT INTO shop.big SELECT seq, seq % 1000,
                IF(seq % 97 = 0, NULL, CONCAT('label ', seq % 5000)) FROM seq_1_to_{ROWS};
         ANALYZE TABLE shop.big;"
    ));
    let source = db.admin(
        "SELECT COUNT(*), CAST(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', id, k, label)), 1, 15), \
         16, 10) AS UNSIGNED)) AS CHAR) FROM shop.big",
    );
    let (rows, checksum) = source.trim().split_once('\t').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let body = format!(
        r#"
[task]
name = "my-resume"
mode = "full-load"
[source]
kind = "mysql"
url = "{}"
tls = "disable"
[target]
kind = "iceberg"
warehouse = "{}"
[tables]
include = ["shop.big"]
[full_load]
workers = 2
chunk_mb = 1
batch_rows = 5000
"#,
        db.url("shop"),
        out.display()
    );
    let cfg = task_file(dir.path(), "resume", &body);
    common::resume::kill_and_resume(&common::resume::ResumeCase {
        dir: dir.path(),
        cfg: &cfg,
        record: out.join("_inlet/my-resume/load/shop.big"),
        table_dir: out.join("shop/big"),
        iceberg: true,
        loaded_before: false,
        rows: ROWS,
        workers: 2,
        want: (rows.parse().unwrap(), checksum.to_string()),
    });
}
