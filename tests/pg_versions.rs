//! What a PostgreSQL major version adds to change data capture, each against a real server of
//! that version (scripts/setup-pg-versions.sh caches 14, 16, 17 and 18; 15 is Debian's):
//! failover slots and a switchover or a crash of the primary with a standby that synchronized
//! the task's slot (17), a slot invalidated by `idle_replication_slot_timeout` while the task
//! was stopped and stored generated columns carried when the publication publishes them (18),
//! and `source.failover_slot` refused on a server that has no failover slots (16).

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::audit;
use common::pg_workload::{ACCOUNT_COLUMNS, SCHEMA};
use common::replay::{replay, source_rows};
use common::{load_files, sigterm, spawn_run, stderr_of, task_file, PgServer};

const TASK: &str = "versions";
const SLOT: &str = "inlet_versions";

fn task(url: &str, out: &Path, source_extra: &str, extra: &str) -> String {
    format!(
        r#"
[task]
name = "{TASK}"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
{source_extra}
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["public.accounts"]
[cdc]
flush_interval_ms = 200
{extra}
"#,
        out.display()
    )
}

/// A server of `major`; PgServer fails naming `make setup` when scripts/setup-pg-versions.sh
/// (which `make test` runs) has not installed it.
fn server(major: u32, options: &str) -> PgServer {
    PgServer::start_major(major, options)
}

/// The task checkpoint's position, if there is one.
fn checkpointed(out: &Path) -> Option<u64> {
    common::read_checkpoint(&out.join(format!("_inlet/{TASK}/checkpoint"))).map(|cp| cp.position.0)
}

fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

/// Waits until the slot on `client`'s server has confirmed, and the task checkpoint holds,
/// everything written up to now (inlet confirms only what the change files and the checkpoint
/// hold).
async fn wait_caught_up(client: &tokio_postgres::Client, child: &mut Child, out: &Path) {
    wait_caught_up_on(client, client, child, out).await
}

/// [`wait_caught_up`] for a task reading a standby (`slots`) of the primary `writes`.
async fn wait_caught_up_on(
    writes: &tokio_postgres::Client,
    client: &tokio_postgres::Client,
    child: &mut Child,
    out: &Path,
) {
    let target: String = writes
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("inlet exited early with {status}:\n{err}");
        }
        let confirmed: Option<bool> = client
            .query_opt(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots \
                 WHERE slot_name = $2",
                &[&target, &SLOT],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0));
        if confirmed == Some(true) && checkpointed(out).is_some_and(|p| p >= parse_lsn(&target)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with {target} in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Transactions of every kind on accounts (insert, update, delete, a key change) until `stop`,
/// through the server's Unix socket; stops at the first error (the server went away). Returns
/// how many committed.
fn workload(pg: &PgServer, ids_from: i64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let socket = pg.socket_dir().to_path_buf();
    let port = pg.port;
    tokio::spawn(async move {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&socket)
            .port(port)
            .user("postgres")
            .dbname("postgres");
        let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await else {
            return 0;
        };
        tokio::spawn(conn);
        let mut committed = 0;
        let mut id = ids_from;
        while !stop.load(Ordering::Relaxed) {
            let sql = format!(
                "BEGIN;
                 INSERT INTO accounts VALUES ({id}, 0, 'w', {id});
                 UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id = {id} - 1;
                 DELETE FROM accounts WHERE id = {id} - 2 AND {id} % 3 = 0;
                 UPDATE accounts SET version = version + 1, id = id + 5000000
                   WHERE id = {id} - 3 AND {id} % 5 = 0;
                 COMMIT;"
            );
            if client.batch_execute(&sql).await.is_err() {
                break;
            }
            committed += 1;
            id += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        committed
    })
}

/// Runs the workload for `for_ms`, then returns how many transactions committed.
async fn workload_for(pg: &PgServer, ids_from: i64, for_ms: u64) -> i64 {
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(pg, ids_from, stop.clone());
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap()
}

/// The change files and the full load of accounts, replayed, equal the source; every audited
/// change is in the change files exactly once, in order. Returns the changes compared.
async fn assert_exact(client: &tokio_postgres::Client, out: &Path) -> usize {
    let compared = audit::assert_exactly_once(client, out, "accounts", "id").await;
    let want = source_rows(client, "accounts", ACCOUNT_COLUMNS).await;
    let got = replay(&out.join("public/accounts"), ACCOUNT_COLUMNS);
    assert_eq!(got.len(), want.len(), "accounts: row count");
    assert!(
        got == want,
        "accounts: replayed rows differ from the source"
    );
    compared
}

/// The LOAD files of accounts with their modification times: a new full load writes them
/// again (under the same names).
fn loads(out: &Path) -> Vec<(String, std::time::SystemTime)> {
    load_files(&out.join("public/accounts"))
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let modified = std::fs::metadata(p).ok()?.modified().ok()?;
            Some((name, modified))
        })
        .filter(|(n, _)| n.starts_with("LOAD"))
        .collect()
}

/// Waits until the standby holds a persistent synchronized copy of the task's slot that has
/// confirmed at least `at`.
async fn wait_slot_synchronized(
    primary: &tokio_postgres::Client,
    standby: &tokio_postgres::Client,
    at: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // The copy becomes persistent once the standby decoded to a consistent point, which
        // takes a running-transactions record: log one rather than wait up to 15 s for the
        // background writer's.
        primary
            .batch_execute("SELECT pg_log_standby_snapshot()")
            .await
            .unwrap();
        let row = standby
            .query_opt(
                "SELECT synced AND NOT temporary AND confirmed_flush_lsn >= $1::text::pg_lsn \
                 FROM pg_replication_slots WHERE slot_name = $2",
                &[&at, &SLOT],
            )
            .await
            .unwrap();
        if row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not synchronize slot {SLOT} up to {at} within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL 17: a task with `source.failover_slot = true` streams from the primary while a
/// physical standby synchronizes its slot (sync_replication_slots, hot_standby_feedback, the
/// standby's physical slot in synchronized_standby_slots). Under a workload the primary is
/// stopped and the standby promoted; the task, restarted with source.url on the promoted
/// standby, resumes from the synchronized slot without a new full load: every audited change
/// once, in order, and the replay equal to the new primary.
#[tokio::test(flavor = "multi_thread")]
async fn a_failover_slot_continues_on_the_promoted_standby() {
    let started = Instant::now();
    let primary = server(17, "");
    let client = primary.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    audit::install(&client, &[("accounts", "id")]).await;
    let standby = primary
        .start_standby("standby1", "-c sync_replication_slots=on")
        .await;
    for sql in [
        "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'",
        "SELECT pg_reload_conf()",
    ] {
        client.simple_query(sql).await.unwrap();
    }
    standby.wait_replayed(&primary).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let on_primary = task(
        &primary.url("postgres"),
        &out,
        "failover_slot = true",
        "[retry]\nmin_delay_ms = 100\nmax_delay_ms = 500",
    );
    let cfg = task_file(dir.path(), "t", &on_primary);
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "[ok     ] failover slot: \"{SLOT}\" will be created as a failover slot; standbys \
             streaming from standby1 receive every change before inlet does"
        )),
        "{stdout}"
    );

    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    let failover: Option<bool> = client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failover, Some(true), "the task's slot is a failover slot");
    let (_, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(
        stdout.contains(&format!(
            "[ok     ] failover slot: \"{SLOT}\" is a failover slot;"
        )),
        "{stdout}"
    );
    let loaded = loads(&out);
    assert!(!loaded.is_empty(), "the first start loads accounts");

    let before = workload_for(&primary, 1_000_000, 1500).await;
    wait_caught_up(&client, &mut child, &out).await;
    let at: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    let standby_client = standby.client("postgres").await;
    wait_slot_synchronized(&client, &standby_client, &at).await;

    // Before promotion the copy cannot be streamed from: a task pointed at the standby says so.
    let on_standby = on_primary.replace(&primary.url("postgres"), &standby.url("postgres"));
    let standby_cfg = task_file(dir.path(), "standby", &on_standby);
    let (code, stdout, _) = common::inlet(&["check", "-c", standby_cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains("is the copy a standby keeps of the primary's failover slot"),
        "{stdout}"
    );

    // The switchover, under the workload: stop the primary, promote the standby.
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&primary, 2_000_000, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    primary.stop_fast();
    stop.store(true, Ordering::Relaxed);
    let during = load.await.unwrap();
    assert!(during > 10, "the workload committed {during} transactions");
    standby.promote();
    // inlet retries the stopped primary until the operator points it at the new one.
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    drop(standby_client);
    let client = standby.client("postgres").await;

    let cfg = task_file(dir.path(), "t", &on_standby);
    // The promoted standby's copy is the task's slot (same cluster); no standby keeps a copy
    // of it any more, which check says.
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "[ok     ] replication slot: \"{SLOT}\" belongs to this task; it resumes from"
        )) && stdout.contains(&format!(
            "[warning] failover slot: \"{SLOT}\" is a failover slot, but \
             synchronized_standby_slots names no standby"
        )),
        "{stdout}"
    );
    let mut child = spawn_run(&cfg);
    let after = workload_for(&standby, 3_000_000, 1500).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming from the task checkpoint"),
        "{stderr}"
    );
    assert!(!stderr.contains("full load"), "a new full load:\n{stderr}");
    assert_eq!(
        loads(&out),
        loaded,
        "no new LOAD files after the switchover"
    );
    let compared = assert_exact(&client, &out).await;
    eprintln!(
        "PostgreSQL 17 switchover: {before} + {during} + {after} transactions, {compared} changes \
         compared, {:?}",
        started.elapsed()
    );
}

/// Synchronizes the standby's copy of the task's failover slot once, now
/// (`pg_sync_replication_slots()`, the standby running without the synchronization worker), until
/// it is a persistent copy that has confirmed at least `at`. After this the copy stays where it
/// is, however far the task goes on the primary.
async fn sync_slot_once(
    primary: &tokio_postgres::Client,
    standby: &tokio_postgres::Client,
    at: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The copy is usable (not temporary) once the standby has decoded to a consistent
        // point, which takes a running-transactions record: log one now rather than wait up to
        // 15 s for the background writer's.
        primary
            .batch_execute("SELECT pg_log_standby_snapshot()")
            .await
            .unwrap();
        standby
            .batch_execute("SELECT pg_sync_replication_slots()")
            .await
            .unwrap();
        let row = standby
            .query_opt(
                "SELECT synced AND NOT temporary AND confirmed_flush_lsn >= $1::text::pg_lsn \
                 FROM pg_replication_slots WHERE slot_name = $2",
                &[&at, &SLOT],
            )
            .await
            .unwrap();
        if row.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pg_sync_replication_slots() did not copy slot {SLOT} up to {at} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL 17, a crash: a task with `source.failover_slot = true` streams from a primary
/// whose standby is named in synchronized_standby_slots (so the primary sends inlet no change
/// the standby has not flushed). The standby's copy of the slot is synchronized once and then
/// left behind while the workload goes on; the primary is killed under the workload (`pg_ctl
/// stop -m immediate`: the WAL the standby had not received is gone with it) and the standby
/// promoted. The task, pointed at the new primary, resumes from its own checkpoint, which is
/// past the copy's confirmed position (the server skips what the checkpoint already holds),
/// without a new full load: every audited change of the new primary is in the change files
/// once, in order, and nothing the crash took away is there; the replay equals the new primary.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_primary_fails_over_to_the_synchronized_slot_without_loss() {
    crash_failover(true).await;
}

/// PostgreSQL 17, the same crash without synchronized_standby_slots on the primary: inlet had
/// changes the standby never received, so its checkpoint is past the end of the promoted
/// standby's WAL (the fork into its timeline), even once the new primary has written past the
/// checkpoint's position; `check` and `run` refuse to continue from the slot's copy, saying the
/// failover lost changes the target holds and what to do, and write nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_failover_that_lost_changes_inlet_had_is_refused() {
    crash_failover(false).await;
}

/// The crash failover of the two tests above; `gated`: the primary's synchronized_standby_slots
/// names the standby's slot (the task then resumes on the promoted standby; without it the task
/// is refused there).
async fn crash_failover(gated: bool) {
    let started = Instant::now();
    let primary = server(17, "");
    let client = primary.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    audit::install(&client, &[("accounts", "id")]).await;
    let standby = primary.start_standby("standby1", "").await;
    if gated {
        for sql in [
            "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'",
            "SELECT pg_reload_conf()",
        ] {
            client.simple_query(sql).await.unwrap();
        }
    }
    standby.wait_replayed(&primary).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let on_primary = task(
        &primary.url("postgres"),
        &out,
        "failover_slot = true",
        "[retry]\nmin_delay_ms = 100\nmax_delay_ms = 500",
    );
    let cfg = task_file(dir.path(), "t", &on_primary);
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    let loaded = loads(&out);
    assert!(!loaded.is_empty(), "the first start loads accounts");
    let before = workload_for(&primary, 1_000_000, 1000).await;
    wait_caught_up(&client, &mut child, &out).await;
    let at: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    let standby_client = standby.client("postgres").await;
    sync_slot_once(&client, &standby_client, &at).await;

    // The crash, under the workload, while inlet streams: first the standby falls behind (its
    // WAL receiver disconnected: primary_conninfo emptied) while the primary goes on
    // committing, then the primary dies, taking the WAL the standby never received with it.
    let disconnect = || async {
        for sql in [
            "ALTER SYSTEM SET primary_conninfo = ''",
            "SELECT pg_reload_conf()",
        ] {
            standby_client.simple_query(sql).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while standby_client
            .query_opt("SELECT 1 FROM pg_stat_wal_receiver", &[])
            .await
            .unwrap()
            .is_some()
        {
            assert!(Instant::now() < deadline, "the WAL receiver did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&primary, 2_000_000, stop.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    disconnect().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let primary_at: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    primary.stop_immediate();
    stop.store(true, Ordering::Relaxed);
    let during = load.await.unwrap();
    assert!(during > 10, "the workload committed {during} transactions");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let received: String = standby_client
        .query_one("SELECT pg_last_wal_receive_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        parse_lsn(&received) < parse_lsn(&primary_at),
        "the crash took WAL the standby had not received ({received} < {primary_at})"
    );
    let checkpoint = checkpointed(&out).expect("a task checkpoint");
    let copy: String = standby_client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        parse_lsn(&copy) < checkpoint,
        "the standby's copy ({copy}) is behind the task checkpoint ({checkpoint:X})"
    );
    standby.promote();
    drop(standby_client);
    let client = standby.client("postgres").await;

    let on_standby = on_primary.replace(&primary.url("postgres"), &standby.url("postgres"));
    let cfg = task_file(dir.path(), "t", &on_standby);
    if !gated {
        // The new primary writes past the checkpoint's position before the task starts again:
        // the position alone would look resumable, the fork of the timeline tells.
        client
            .batch_execute(
                "CREATE TABLE filler (t text);
                 INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 1000);",
            )
            .await
            .unwrap();
        let at: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        assert!(parse_lsn(&at) > checkpoint, "{at} is past {checkpoint:X}");
    }
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    if !gated {
        let told = format!(
            "past the WAL this server had when it was promoted (SERVER): it is a promoted \
             standby whose copy of failover slot \"{SLOT}\" the task would continue from: the \
             old primary sent inlet changes this standby never received, and the failover lost \
             them"
        );
        let told = |text: &str| {
            let (head, tail) = told.split_once("SERVER").unwrap();
            text.contains(head) && text.contains(tail)
        };
        assert_ne!(code, 0, "{stdout}");
        assert!(told(&stdout), "{stdout}");
        let (code, stderr) = stderr_of(spawn_run(&cfg));
        assert_eq!(code, 1, "{stderr}");
        assert!(
            told(&stderr)
                && stderr.contains("synchronized_standby_slots did not name this standby"),
            "{stderr}"
        );
        assert_eq!(loads(&out), loaded, "nothing was loaded");
        assert_eq!(
            checkpointed(&out),
            Some(checkpoint),
            "the checkpoint is kept"
        );
        return;
    }
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "[ok     ] replication slot: \"{SLOT}\" belongs to this task; it resumes from"
        )),
        "{stdout}"
    );
    let mut child = spawn_run(&cfg);
    let after = workload_for(&standby, 3_000_000, 1000).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming from the task checkpoint"),
        "{stderr}"
    );
    assert!(!stderr.contains("full load"), "a new full load:\n{stderr}");
    assert_eq!(loads(&out), loaded, "no new LOAD files after the failover");
    let compared = assert_exact(&client, &out).await;
    eprintln!(
        "PostgreSQL 17 crash failover: {before} + {during} + {after} transactions, {compared} \
         changes compared, slot copy at {copy}, checkpoint {checkpoint:X}, {:?}",
        started.elapsed()
    );
}

/// PostgreSQL 16 has no failover slots: `source.failover_slot = true` stops `inlet check` and
/// `inlet run` before anything is created, naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn failover_slot_before_17_is_refused_naming_the_key() {
    let pg = server(16, "");
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(&pg.url("postgres"), &out, "failover_slot = true", ""),
    );
    let (code, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains(
            "[MISSING] failover slot: source.failover_slot = true needs PostgreSQL 17 or later"
        ),
        "{stdout}"
    );
    let (code, stderr) = stderr_of(spawn_run(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("source.failover_slot = true needs PostgreSQL 17 or later"),
        "{stderr}"
    );
    let slots: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "no slot was created");
    assert!(!out.join("public").exists(), "nothing was loaded");
}

/// source.url moved to another cluster that has a slot of the task's name, a publication of
/// its name, and WAL past the task checkpoint: nothing in the slot tells it from the task's,
/// but the slot record names the cluster the task's slot was created in, so the start is
/// refused and the foreign slot neither streamed from nor dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_of_the_tasks_name_in_another_cluster_is_refused() {
    let (ours, other) = (server(16, ""), server(16, ""));
    let client = ours.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let foreign = other.client("postgres").await;
    foreign.batch_execute(SCHEMA).await.unwrap();
    // Two statements: a slot cannot be created in a transaction that has written.
    for sql in [
        format!("CREATE PUBLICATION {SLOT} FOR TABLE accounts"),
        format!("SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')"),
    ] {
        foreign.simple_query(&sql).await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "t", &task(&ours.url("postgres"), &out, "", ""));
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload_for(&ours, 1_000_000, 500).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    let at = checkpointed(&out).expect("a checkpoint");

    // The other cluster's WAL past the checkpoint, its slot behind it: the checks of the
    // slot's position pass.
    loop {
        // pg_switch_wal() moves on only past WAL written since the last switch.
        foreign
            .batch_execute("UPDATE accounts SET version = version + 1 WHERE id = 1")
            .await
            .unwrap();
        let lsn: String = foreign
            .query_one("SELECT pg_switch_wal()::text", &[])
            .await
            .unwrap()
            .get(0);
        if parse_lsn(&lsn) > at {
            break;
        }
    }
    let confirmed: String = foreign
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    assert!(parse_lsn(&confirmed) <= at, "{confirmed} vs {at:x}");

    let cfg = task_file(dir.path(), "t", &task(&other.url("postgres"), &out, "", ""));
    let (code, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains("in the database cluster with system identifier")
            && stdout.contains("but source.url now reaches the cluster")
            && stdout.contains("neither streams from it nor drops it"),
        "{stdout}"
    );
    let (code, stderr) = stderr_of(spawn_run(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("but source.url now reaches the cluster"),
        "{stderr}"
    );
    let still: i64 = foreign
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "the other cluster's slot is left alone");
}

/// PostgreSQL 18: `idle_replication_slot_timeout` invalidates the slot of a task stopped longer
/// than it (at the next checkpoint). The next start takes the lost-slot path, as for a dropped
/// slot, saying the slot was invalidated for idleness and naming the setting: under
/// `cdc.on_slot_lost = "fail"` it stops and changes nothing, under "resnapshot" it loads every
/// table again through a new slot, and the replay equals the source.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_invalidated_for_idleness_takes_the_lost_slot_path() {
    let started = Instant::now();
    // The timeout's unit is minutes: 1 is the least.
    let pg = server(18, "-c idle_replication_slot_timeout=1min");
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let fail = task(&pg.url("postgres"), &out, "", "");
    let cfg = task_file(dir.path(), "t", &fail);
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload_for(&pg, 1_000_000, 500).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);

    // Stopped past the timeout: the next checkpoint invalidates the slot.
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        client.batch_execute("CHECKPOINT").await.unwrap();
        let reason: Option<String> = client
            .query_one(
                "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .unwrap()
            .get(0);
        if let Some(reason) = reason {
            assert_eq!(reason, "idle_timeout");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was not invalidated within 100 s"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Changes while the slot is gone: no stream holds them, only a new load.
    workload_for(&pg, 2_000_000, 300).await;

    let (code, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "[MISSING] replication slot: replication slot \"{SLOT}\" is invalidated by the server \
             because it stayed inactive longer than idle_replication_slot_timeout"
        )),
        "{stdout}"
    );
    let loaded = loads(&out);
    let (code, stderr) = stderr_of(spawn_run(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("idle_replication_slot_timeout")
            && stderr.contains("never recreates a slot silently"),
        "{stderr}"
    );
    assert_eq!(loads(&out), loaded, "nothing was loaded");

    let cfg = task_file(
        dir.path(),
        "t",
        &task(
            &pg.url("postgres"),
            &out,
            "",
            "on_slot_lost = \"resnapshot\"",
        ),
    );
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload_for(&pg, 3_000_000, 500).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("idle_replication_slot_timeout")
            && stderr.contains("cdc.on_slot_lost = \"resnapshot\": new slot and a new full load"),
        "{stderr}"
    );
    assert_ne!(
        loads(&out),
        loaded,
        "a new full load rewrites the LOAD files"
    );
    let want = source_rows(&client, "accounts", ACCOUNT_COLUMNS).await;
    let got = replay(&out.join("public/accounts"), ACCOUNT_COLUMNS);
    assert_eq!(got.len(), want.len(), "accounts: row count");
    assert!(
        got == want,
        "accounts: replayed rows differ from the source"
    );
    eprintln!(
        "PostgreSQL 18 idle slot timeout: {} rows, {:?}",
        want.len(),
        started.elapsed()
    );
}

/// PostgreSQL 16+: a task reads a hot standby (source.url of the replica): the full load and
/// the change stream come from the standby while the workload writes on the primary, and a
/// restart resumes there. The standby is read-only: before the publication exists on the
/// primary, check and run say what to create there instead of failing on a read-only
/// transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_reads_a_standby() {
    let started = Instant::now();
    let primary = server(16, "");
    let client = primary.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    audit::install(&client, &[("accounts", "id")]).await;
    let standby = primary.start_standby("standby1", "").await;
    standby.wait_replayed(&primary).await;
    let replica = standby.client("postgres").await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(&standby.url("postgres"), &out, "", ""),
    );
    let (code, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "on the primary run: CREATE PUBLICATION {SLOT} FOR TABLE public.accounts;"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "[ok     ] standby: source.url reaches a standby (hot_standby_feedback = on, \
             physical slot \"standby1\" on the primary)"
        ),
        "{stdout}"
    );
    let (code, stderr) = stderr_of(spawn_run(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is a standby"), "{stderr}");

    client
        .batch_execute(&format!("CREATE PUBLICATION {SLOT} FOR TABLE accounts"))
        .await
        .unwrap();
    standby.wait_replayed(&primary).await;
    // A logical slot on a standby is consistent at the primary's next running-transactions
    // record, which an idle primary writes only every 15 s: ask for them meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = {
        let stop = stop.clone();
        let client = primary.client("postgres").await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = client
                    .execute("SELECT pg_log_standby_snapshot()", &[])
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let mut child = spawn_run(&cfg);
    wait_caught_up_on(&client, &replica, &mut child, &out).await;
    let first = workload_for(&primary, 1_000_000, 1500).await;
    wait_caught_up_on(&client, &replica, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let loaded = loads(&out);

    // A restart resumes from the standby's slot.
    let mut child = spawn_run(&cfg);
    let second = workload_for(&primary, 2_000_000, 1500).await;
    wait_caught_up_on(&client, &replica, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming from the task checkpoint"),
        "{stderr}"
    );
    assert_eq!(loads(&out), loaded, "no new full load");
    stop.store(true, Ordering::Relaxed);
    snapshots.await.unwrap();
    let compared = assert_exact(&client, &out).await;
    eprintln!(
        "PostgreSQL 16 standby: {first} + {second} transactions, {compared} changes compared, \
         {:?}",
        started.elapsed()
    );
}

/// Creating a slot waits until every transaction running at that moment has ended; a long open
/// transaction holds a task's first start silently, so after 10 s the log says what the
/// creation waits for and how to find the transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_creation_held_by_an_open_transaction_is_told() {
    let pg = server(16, "");
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let open = pg.client("postgres").await;
    open.batch_execute("BEGIN; INSERT INTO events VALUES (9999999, 0, 1, 'open')")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "t", &task(&pg.url("postgres"), &out, "", ""));
    let mut child = spawn_run(&cfg);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(child.try_wait().unwrap().is_none(), "inlet exited");
    assert_eq!(
        checkpointed(&out),
        None,
        "the slot waits for the open transaction"
    );
    open.batch_execute("COMMIT").await.unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "creating replication slot \"{SLOT}\" has waited 10 s: PostgreSQL makes a new slot \
             wait until every transaction running now has ended"
        )),
        "{stderr}"
    );
    let want = source_rows(&client, "accounts", ACCOUNT_COLUMNS).await;
    let got = replay(&out.join("public/accounts"), ACCOUNT_COLUMNS);
    assert!(
        got == want,
        "accounts: replayed rows differ from the source"
    );
}

/// A table with a stored generated column (`total`), for the generated-column tests.
const PRICED: &str =
    "CREATE TABLE priced (id bigint PRIMARY KEY, version int NOT NULL, price int, \
         qty int, total int GENERATED ALWAYS AS (price * qty) STORED, note text);
     INSERT INTO priced (id, version, price, qty, note)
         SELECT g, 0, g, 2, 'n' || g FROM generate_series(1, 20) g;";
const PRICED_CHANGES: &str =
    "INSERT INTO priced (id, version, price, qty, note) VALUES (100, 0, 7, 3, 'new');
     UPDATE priced SET version = version + 1, qty = qty + 1 WHERE id <= 5;
     UPDATE priced SET version = version + 1, note = 'x' WHERE id = 100;
     UPDATE priced SET version = version + 1, price = NULL WHERE id = 7;
     DELETE FROM priced WHERE id = 6;";

/// Runs a task on priced (publication settings in `source_extra`) through its full load and
/// [`PRICED_CHANGES`], and returns the columns of every file written and inlet's stderr.
async fn run_priced(
    pg: &PgServer,
    client: &tokio_postgres::Client,
    out: &Path,
    source_extra: &str,
) -> (Vec<Vec<String>>, String) {
    let dir = out.parent().unwrap();
    let text = task(&pg.url("postgres"), out, source_extra, "")
        .replace("public.accounts", "public.priced");
    let cfg = task_file(dir, "t", &text);
    let mut child = spawn_run(&cfg);
    wait_caught_up(client, &mut child, out).await;
    client.batch_execute(PRICED_CHANGES).await.unwrap();
    wait_caught_up(client, &mut child, out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let files = load_files(&out.join("public/priced"));
    assert!(files
        .iter()
        .any(|p| common::replay::file_name(p).starts_with("LOAD")));
    assert!(files
        .iter()
        .any(|p| !common::replay::file_name(p).starts_with("LOAD")));
    let columns = files
        .iter()
        .map(|f| {
            common::replay::read_file(f)[0]
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| {
                    ["id", "version", "price", "qty", "total", "note"].contains(&n.as_str())
                })
                .collect()
        })
        .collect();
    (columns, stderr)
}

/// PostgreSQL 18 publishes stored generated columns when the publication says so: inlet
/// creates its publication with `publish_generated_columns = stored` and reads the column in
/// the full load, so the target holds the values the server computed, in the load and in every
/// change (an insert, updates of an input and of another column, an input set to NULL, a
/// delete), equal to the source. (Before 18 nothing can publish a generated column and inlet
/// leaves it out of load and stream alike:
/// `pg_cdc::stored_generated_columns_are_left_out_of_load_and_stream_alike` on 14–17.)
#[tokio::test(flavor = "multi_thread")]
async fn stored_generated_columns_are_carried_on_18() {
    let pg = server(18, "");
    let client = pg.client("postgres").await;
    client.batch_execute(PRICED).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = task(&pg.url("postgres"), &out, "", "").replace("public.accounts", "public.priced");
    let cfg = task_file(dir.path(), "t", &text);
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "[ok     ] generated columns: the stored generated column(s) public.priced.total are \
             carried: inlet creates publication \"inlet_versions\" with publish_generated_columns = stored"
        ),
        "{stdout}"
    );

    let (columns, stderr) = run_priced(&pg, &client, &out, "").await;
    for c in &columns {
        assert_eq!(
            c,
            &["id", "version", "price", "qty", "total", "note"],
            "{stderr}"
        );
    }
    let gencols: String = client
        .query_one(
            "SELECT pubgencols::text FROM pg_publication WHERE pubname = 'inlet_versions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        gencols, "s",
        "inlet's publication publishes stored generated columns"
    );
    let columns = &["id", "version", "price", "qty", "total", "note"];
    let want = source_rows(&client, "priced", columns).await;
    assert_eq!(want[&2][4].as_deref(), Some("6"), "id 2: 2 * (2 + 1)");
    assert_eq!(want[&100][4].as_deref(), Some("21"));
    assert_eq!(want[&7][4], None, "a NULL input makes a NULL total");
    assert_eq!(replay(&out.join("public/priced"), columns), want);
    let (_, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(
        stdout.contains(
            "[ok     ] generated columns: publication \"inlet_versions\" publishes the stored \
             generated column(s) public.priced.total: carried in the full load and the change stream"
        ),
        "{stdout}"
    );
}

/// PostgreSQL 18, a publication of the user's that does not publish the stored generated
/// column (`publish_generated_columns` defaults to none): inlet leaves the column out of the
/// full load as the stream does, so every file has the same columns and the replay equals the
/// source without it; `check` warns with the statement that would publish it.
#[tokio::test(flavor = "multi_thread")]
async fn a_publication_without_generated_columns_leaves_them_out_on_18() {
    let pg = server(18, "");
    let client = pg.client("postgres").await;
    client.batch_execute(PRICED).await.unwrap();
    client
        .batch_execute("CREATE PUBLICATION mine FOR TABLE priced")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = task(&pg.url("postgres"), &out, "publication = \"mine\"", "")
        .replace("public.accounts", "public.priced");
    let cfg = task_file(dir.path(), "t", &text);
    let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "[warning] generated columns: publication \"mine\" does not publish the stored \
             generated column(s) public.priced.total, so inlet leaves them out of the full load \
             and the change stream alike"
        ) && stdout.contains("ALTER PUBLICATION mine SET (publish_generated_columns = stored)"),
        "{stdout}"
    );

    let (columns, stderr) = run_priced(&pg, &client, &out, "publication = \"mine\"").await;
    for c in &columns {
        assert_eq!(c, &["id", "version", "price", "qty", "note"], "{stderr}");
    }
    assert!(!stderr.contains("schema evolved"), "{stderr}");
    let columns = &["id", "version", "price", "qty", "note"];
    let want = source_rows(&client, "priced", columns).await;
    assert_eq!(replay(&out.join("public/priced"), columns), want);
}
