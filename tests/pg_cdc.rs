//! Change data capture end to end against a real PostgreSQL 15: `inlet run` in
//! full-load-and-cdc mode, a workload of inserts, updates, deletes and multi-table
//! transactions, SIGKILLs at random moments, and at the end the full load plus the change log,
//! replayed, must equal the source row for row, with no change applied twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::pg_stream;
use common::pg_workload::{workload, ACCOUNT_COLUMNS, EVENT_COLUMNS, SCHEMA};
use common::replay::{file_name, read_file, replay, source_rows};
use common::{load_files, sigterm, spawn_run as spawn_inlet, stderr_of, task_file, PgServer};

fn task(url: &str, out: &Path, extra: &str) -> String {
    format!(
        r#"
[task]
name = "cdc-test"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
# These tests check the exact Arrow types (uuid as FixedSizeBinary(16), time as Time64).
types = "exact"
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = 200
{extra}
"#,
        out.display()
    )
}

/// Waits until every change committed so far is in the change files and the checkpoint.
async fn wait_caught_up(client: &tokio_postgres::Client, child: &mut Child, out: &Path) {
    let checkpoint = out.join("_inlet/cdc-test/checkpoint");
    pg_stream::wait_caught_up(client, child, &checkpoint, "inlet_cdc_test").await
}

async fn assert_replay_equals_source(client: &tokio_postgres::Client, out: &Path) {
    for (table, columns) in [("accounts", ACCOUNT_COLUMNS), ("events", EVENT_COLUMNS)] {
        let want = source_rows(client, table, columns).await;
        let got = replay(&out.join("public").join(table), columns);
        assert_eq!(got.len(), want.len(), "{table}: row count");
        assert!(got == want, "{table}: replayed rows differ from the source");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_load_then_changes_replay_to_the_source() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "cdc", &task(&pg.url("postgres"), &out, ""));
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    for round in 0..3 {
        workload(&client, round).await;
    }
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "inlet run should exit 0 on SIGTERM:\n{stderr}");
    assert_replay_equals_source(&client, &out).await;

    // An idle task still moves the slot: WAL written by other tables is acknowledged.
    let mut child = spawn_inlet(&cfg);
    client
        .batch_execute(
            "CREATE TABLE other (x int PRIMARY KEY); INSERT INTO other SELECT generate_series(1, 1000);",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    assert_replay_equals_source(&client, &out).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(&pg.url("postgres"), &out, "part_rows = 50"),
    );
    // Deterministic "random" moments, different each kill.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut round = 0;
    for kill in 0..6 {
        let mut child = spawn_inlet(&cfg);
        // Work while inlet runs, then kill it at a moment that falls anywhere: during the full
        // load, mid-stream, between a change file and its checkpoint.
        let rounds = 1 + next() % 3;
        for _ in 0..rounds {
            workload(&client, round).await;
            round += 1;
        }
        tokio::time::sleep(Duration::from_millis(next() % 700)).await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "inlet exited before kill {kill}: {status}: {}",
                stderr_of(child).1
            );
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
    // The killed run's walsender may still hold the slot for a moment: wait until the server
    // ended it, so that "caught up" below (which needs the slot active) means the last run
    // streams, not that the killed one had, and the SIGTERM reaches a started daemon.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'inlet_cdc_test' AND active",
            &[],
        )
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed run's walsender still holds the slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A last run catches up and stops cleanly.
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert_replay_equals_source(&client, &out).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_slot_stops_the_task_with_the_documented_error() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "cdc", &task(&pg.url("postgres"), &out, ""));
    // `inlet check` for a CDC task names the tables an unchanged TOASTed value would stop.
    let (code, stdout, _) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("[warning] REPLICA IDENTITY: public.accounts, public.events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ALTER TABLE public.accounts REPLICA IDENTITY FULL;"),
        "{stdout}"
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    client
        .batch_execute("SELECT pg_drop_replication_slot('inlet_cdc_test')")
        .await
        .unwrap();
    let (code, stderr) = stderr_of(spawn_inlet(&cfg));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("replication slot \"inlet_cdc_test\" no longer exists"),
        "{stderr}"
    );
    assert!(
        stderr.contains("never recreates a slot silently"),
        "{stderr}"
    );
    assert!(
        client
            .query_opt("SELECT 1 FROM pg_replication_slots", &[])
            .await
            .unwrap()
            .is_none(),
        "the slot must not be recreated"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_five_million_row_transaction_is_written_in_parts() {
    const ROWS: i64 = 5_000_000;
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute("CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, owner text, balance numeric(12,2));")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(&pg.url("postgres"), &out, "part_rows = 500000"),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(&format!(
            "INSERT INTO accounts SELECT g, 0, 'o' || g, g / 100.0 FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");

    let table_dir = out.join("public/accounts");
    let names: Vec<String> = load_files(&table_dir)
        .iter()
        .map(|p| file_name(p))
        .collect();
    let parts = names.iter().filter(|n| n.contains("-p0")).count();
    // 5M rows in parts of 500k, each cut while at least 500k more are buffered: 9 parts and a
    // final file of 500k rows; memory never held more than two parts.
    assert_eq!(parts, 9, "{names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| !n.starts_with("LOAD") && !n.contains("-p0"))
            .count(),
        1,
        "{names:?}"
    );
    let got = replay(&table_dir, ACCOUNT_COLUMNS);
    assert_eq!(got.len() as i64, ROWS);
    assert_eq!(got.keys().sum::<i64>(), ROWS * (ROWS + 1) / 2);
    assert_eq!(
        got[&ROWS],
        vec![
            Some(ROWS.to_string()),
            Some("0".into()),
            Some(format!("o{ROWS}")),
            Some("50000.00".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_evolve_the_change_files() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Off: the change files' shapes are checked below, and a reload would replace them.
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(&pg.url("postgres"), &out, "reload_on_added_default = false"),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "ALTER TABLE accounts ADD COLUMN tier int;
             UPDATE accounts SET version = version + 1, tier = 3 WHERE id <= 10;
             ALTER TABLE accounts DROP COLUMN owner;
             UPDATE accounts SET version = version + 1 WHERE id BETWEEN 5 AND 15;
             ALTER TABLE accounts ALTER COLUMN balance TYPE numeric(14,2);
             INSERT INTO accounts (id, version, balance, tier) VALUES (999999, 0, 1.5, 1);
             UPDATE accounts SET version = version + 1, balance = balance * 2 WHERE id = 7;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    // A captured table dropped while streaming is said in the log (the task looks every 10 s),
    // and so is a column added with a DEFAULT the older rows read but no change carries.
    client
        .batch_execute("DROP TABLE events; ALTER TABLE accounts ADD COLUMN region int DEFAULT 7")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("schema evolved"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("public.events") && l.contains("no longer in the source")),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("public.accounts")
            && l.contains("region")
            && l.contains("added with a DEFAULT")),
        "{stderr}"
    );

    let columns = &["id", "version", "balance", "tier"];
    let want = source_rows(&client, "accounts", columns).await;
    let table_dir = out.join("public/accounts");
    assert!(
        replay(&table_dir, columns) == want,
        "replay across schema changes differs from the source"
    );
    // Each change file has the shape of its time: owner until dropped, tier once added.
    let shapes: Vec<(bool, bool)> = load_files(&table_dir)
        .iter()
        .filter(|p| !file_name(p).starts_with("LOAD"))
        .map(|p| {
            let schema = read_file(p)[0].schema();
            (
                schema.field_with_name("owner").is_ok(),
                schema.field_with_name("tier").is_ok(),
            )
        })
        .collect();
    assert!(shapes.contains(&(true, true)), "{shapes:?}");
    assert!(shapes.contains(&(false, true)), "{shapes:?}");
}

/// Under `schema_changes = "fail"` a column change stops the task with a message that names
/// the table and the change (it used to read "accounts column : …", an empty column name).
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_change_under_fail_names_the_table_and_the_change() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(&pg.url("postgres"), &out, "schema_changes = \"fail\""),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "ALTER TABLE accounts ADD COLUMN tier int;
             UPDATE accounts SET version = version + 1, tier = 3 WHERE id = 1;",
        )
        .await
        .unwrap();
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("public.accounts: the source table changed (added tier)"),
        "{stderr}"
    );
    assert!(!stderr.contains("column :"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_joins_a_running_task_and_a_lost_slot_resnapshots() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let all = task(
        &pg.url("postgres"),
        &out,
        "on_slot_lost = \"resnapshot\"\nheartbeat_interval_ms = 500",
    );
    let accounts_only = all.replace(r#"["public.*"]"#, r#"["public.accounts"]"#);
    assert_ne!(all, accounts_only);

    // First only accounts is captured; events changes meanwhile are not.
    let cfg = task_file(dir.path(), "cdc", &accounts_only);
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload(&client, 0).await;
    workload(&client, 1).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    assert!(!out.join("public/events").exists());

    // events joins: loaded in a snapshot of its own while changes to both tables go on.
    let cfg = task_file(dir.path(), "cdc", &all);
    let mut child = spawn_inlet(&cfg);
    workload(&client, 2).await;
    wait_caught_up(&client, &mut child, &out).await;
    workload(&client, 3).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("new tables join the task"), "{stderr}");
    assert_replay_equals_source(&client, &out).await;

    // The slot is lost while the task is down: changes in between are gone from the stream,
    // so the task reloads every table and streams again from a new slot.
    client
        .batch_execute("SELECT pg_drop_replication_slot('inlet_cdc_test')")
        .await
        .unwrap();
    workload(&client, 4).await;
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload(&client, 5).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("cdc.on_slot_lost = \"resnapshot\": new slot and a new full load"),
        "{stderr}"
    );
    assert_replay_equals_source(&client, &out).await;
}

/// A checkpoint in the text form of every version before the typed checkpoint, with the keys
/// 6164e41 wrote (the slot, the tables, the load position of a table that joined beside the
/// stream), is read: the task resumes from its position without loading a table again, the
/// changes made while it was stopped and after reach the target exactly, and its next write
/// stores the JSON form, which records the tables' identities and storage afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_resumes_from_a_checkpoint_in_the_text_form_of_earlier_versions() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let all = task(&pg.url("postgres"), &out, "");
    let accounts_only = all.replace(r#"["public.*"]"#, r#"["public.accounts"]"#);
    let cfg = task_file(dir.path(), "cdc", &accounts_only);
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    // events joins beside the stream: the checkpoint records where its load began.
    let cfg = task_file(dir.path(), "cdc", &all);
    let mut child = spawn_inlet(&cfg);
    workload(&client, 0).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("new tables join the task"), "{stderr}");

    let checkpoint = out.join("_inlet/cdc-test/checkpoint");
    let typed = common::read_checkpoint(&checkpoint).unwrap();
    let events = &typed.tables["public.events"];
    assert!(
        events.captured && events.loaded_at.is_some() && typed.tables["public.accounts"].captured,
        "{typed:?}"
    );
    // As 6164e41 wrote it: the facts that version knew, no identity, storage or defaults.
    let mut as_6164e41 = typed.clone();
    for t in as_6164e41.tables.values_mut() {
        t.identities.clear();
        t.storage = None;
        t.unwritten_defaults = None;
    }
    let old_form = common::legacy_checkpoint_text(&as_6164e41);
    assert_eq!(
        old_form,
        format!(
            "position={:016X}\nslot=inlet_cdc_test\ntable=\"public.accounts\"\n\
             table=\"public.events\"\ntable_loaded_at={:016X} \"public.events\"\n",
            typed.position.0,
            events.loaded_at.unwrap().0
        )
    );
    std::fs::write(&checkpoint, &old_form).unwrap();
    let loads: Vec<Vec<PathBuf>> = ["accounts", "events"]
        .iter()
        .map(|t| load_file_paths(&out.join("public").join(t)))
        .collect();
    assert!(loads.iter().all(|l| !l.is_empty()), "{loads:?}");

    // Changes while stopped and after the start.
    workload(&client, 1).await;
    let mut child = spawn_inlet(&cfg);
    workload(&client, 2).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming from the task checkpoint")
            && !stderr.contains("join the task")
            && !stderr.contains("loaded again"),
        "{stderr}"
    );
    let loads_after: Vec<Vec<PathBuf>> = ["accounts", "events"]
        .iter()
        .map(|t| load_file_paths(&out.join("public").join(t)))
        .collect();
    assert_eq!(loads_after, loads, "no table was loaded again");
    assert_replay_equals_source(&client, &out).await;

    let stored = std::fs::read_to_string(&checkpoint).unwrap();
    assert!(stored.starts_with("{\n  \"version\": 2,"), "{stored}");
    let now = inlet_core::Checkpoint::decode(stored.as_bytes()).unwrap();
    assert!(now.position > typed.position, "{stored}");
    assert_eq!(now.source, typed.source, "{stored}");
    for (name, t) in &now.tables {
        let was = &typed.tables[name];
        assert!(t.captured, "{stored}");
        // (The workload's TRUNCATE gives events a new file: only the columns stay.)
        let columns = |t: &inlet_core::TableState| t.storage.as_ref().map(|s| s.columns.clone());
        assert_eq!(
            (&t.identities, columns(t), &t.unwritten_defaults),
            (&was.identities, columns(was), &was.unwritten_defaults),
            "{name}: recorded afresh as before"
        );
        assert!(columns(t).is_some_and(|c| !c.is_empty()), "{stored}");
    }
    assert_eq!(now.tables.len(), 2, "{stored}");
}

/// The LOAD files of one table folder, sorted.
fn load_file_paths(table_dir: &Path) -> Vec<PathBuf> {
    load_files(table_dir)
        .into_iter()
        .filter(|p| file_name(p).starts_with("LOAD"))
        .collect()
}

/// A captured table renamed while the task streams: its rows up to the rename stay in the old
/// target, and under its new name (which the selection matches) it is loaded as of a snapshot
/// after the rename and streamed from there; a table created while the task runs joins the
/// same way; the other tables stream on unharmed.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_table_continues_under_its_new_name() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO items SELECT g, 0, 'item ' || g FROM generate_series(1, 300) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "cdc", &task(&pg.url("postgres"), &out, ""));
    let columns = &["id", "version", "note"];

    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    workload(&client, 0).await;
    client
        .batch_execute(
            "UPDATE items SET version = 1, note = 'before' WHERE id <= 20;
             DELETE FROM items WHERE id > 290;",
        )
        .await
        .unwrap();
    let at_rename = source_rows(&client, "items", columns).await;
    client
        .batch_execute(
            "ALTER TABLE items RENAME TO items_v2;
             UPDATE items_v2 SET version = 2, note = 'after' WHERE id BETWEEN 10 AND 30;
             INSERT INTO items_v2 VALUES (1000, 0, 'new');",
        )
        .await
        .unwrap();
    workload(&client, 1).await;
    client
        .batch_execute(
            "DELETE FROM items_v2 WHERE id = 1; UPDATE items_v2 SET version = 3 WHERE id = 1000;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;

    // A table created while the task runs joins it within a poll (10 s), without a restart.
    client
        .batch_execute(
            "CREATE TABLE fresh (id bigint PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO fresh SELECT g, 0, 'fresh ' || g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let checkpoint = out.join("_inlet/cdc-test/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !common::checkpoint_captures(&checkpoint, "public.fresh") {
        assert!(
            Instant::now() < deadline,
            "public.fresh did not join the running task"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .batch_execute(
            "UPDATE fresh SET version = 1 WHERE id <= 5; DELETE FROM fresh WHERE id > 45;",
        )
        .await
        .unwrap();
    workload(&client, 2).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("a captured table was renamed"), "{stderr}");
    assert!(
        stderr.contains("a table the selection matches appeared"),
        "{stderr}"
    );
    let fresh = source_rows(&client, "fresh", columns).await;
    assert_eq!(fresh.len(), 45);
    assert!(replay(&out.join("public/fresh"), columns) == fresh, "fresh");
    assert!(stderr.contains("new tables join the task"), "{stderr}");

    assert_replay_equals_source(&client, &out).await;
    let renamed = source_rows(&client, "items_v2", columns).await;
    assert_eq!(renamed.len(), 290);
    assert!(
        replay(&out.join("public/items_v2"), columns) == renamed,
        "items_v2"
    );
    assert!(
        replay(&out.join("public/items"), columns) == at_rename,
        "items as renamed"
    );
}

/// Transactions larger than `logical_decoding_work_mem` (64 kB in the test server) arrive
/// streamed while in progress. They are applied at their commit without the savepoints that
/// rolled back (nested ones included), an aborted one leaves nothing, a schema change inside
/// one evolves the files, and a kill -9 while one is being staged loses and doubles nothing.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_transactions_apply_at_commit_without_what_rolled_back() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    let big = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(
            &pg.url("postgres"),
            &out,
            &format!("part_rows = 1000\nspool_dir = \"{}\"", spool.display()),
        ),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;

    // Small transactions of the workload commit while the large one is open: they are written
    // before it, in commit order.
    big.batch_execute(
        "BEGIN;
         INSERT INTO accounts SELECT g, 0, 'big ' || g, g FROM generate_series(1000000, 1019999) g;",
    )
    .await
    .unwrap();
    workload(&client, 0).await;
    big.batch_execute(
        "SAVEPOINT s1;
         UPDATE accounts SET version = version + 1, owner = 'rolled back' WHERE id BETWEEN 1000000 AND 1004999;
         INSERT INTO accounts SELECT g, 0, 'rolled back', g FROM generate_series(1100000, 1104999) g;
         ROLLBACK TO s1;",
    )
    .await
    .unwrap();
    workload(&client, 1).await;
    big.batch_execute(
        "SAVEPOINT s2;
         SAVEPOINT s3;
         UPDATE accounts SET version = version + 1 WHERE id BETWEEN 1000000 AND 1009999 AND id % 2 = 0;
         RELEASE s3;
         DELETE FROM accounts WHERE id BETWEEN 1010000 AND 1012999;
         RELEASE s2;
         SAVEPOINT s4;
         SAVEPOINT s5;
         INSERT INTO accounts SELECT g, 0, 'rolled back', g FROM generate_series(1200000, 1204999) g;
         RELEASE s5;
         UPDATE accounts SET version = version + 1 WHERE id BETWEEN 1013000 AND 1014999;
         ROLLBACK TO s4;
         UPDATE accounts SET version = version + 1, id = id + 5000000 WHERE id BETWEEN 1015000 AND 1015099;
         COMMIT;",
    )
    .await
    .unwrap();
    workload(&client, 2).await;
    // Aborted whole after being streamed.
    big.batch_execute(
        "BEGIN;
         INSERT INTO accounts SELECT g, 0, 'aborted', g FROM generate_series(1300000, 1319999) g;
         UPDATE accounts SET version = version + 1 WHERE id BETWEEN 1000000 AND 1009999;
         ROLLBACK;",
    )
    .await
    .unwrap();
    // A column added inside a streamed transaction, and one added in a savepoint that rolled
    // back.
    big.batch_execute(
        "BEGIN;
         ALTER TABLE events ADD COLUMN tag text;
         INSERT INTO events SELECT g, 0, 1, 'tagged', 'tag ' || g FROM generate_series(2000000, 2009999) g;
         COMMIT;
         BEGIN;
         INSERT INTO events SELECT g, 0, 2, 'kept', NULL FROM generate_series(3000000, 3004999) g;
         SAVEPOINT a;
         ALTER TABLE events ADD COLUMN doomed int;
         INSERT INTO events SELECT g, 0, 3, 'doomed', 'x', 1 FROM generate_series(3100000, 3104999) g;
         ROLLBACK TO a;
         INSERT INTO events SELECT g, 0, 4, 'kept too', 'y' FROM generate_series(3200000, 3204999) g;
         COMMIT;",
    )
    .await
    .unwrap();
    wait_caught_up(&client, &mut child, &out).await;

    // Killed while a large transaction is being staged; it commits while inlet is down, with
    // another one streamed and committed meanwhile.
    big.batch_execute(
        "BEGIN;
         INSERT INTO accounts SELECT g, 0, 'across a kill', g FROM generate_series(1400000, 1429999) g;",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    workload(&client, 3).await;
    big.batch_execute(
        "UPDATE accounts SET version = version + 1 WHERE id BETWEEN 1400000 AND 1404999;
         COMMIT;
         BEGIN;
         UPDATE accounts SET version = version + 1 WHERE id BETWEEN 1000000 AND 1019999;
         COMMIT;",
    )
    .await
    .unwrap();
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");

    // The server did stream them (rather than spill and send at commit).
    let streamed: i64 = client
        .query_one(
            "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'inlet_cdc_test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(streamed >= 5, "only {streamed} transactions were streamed");
    // Staged transactions leave no file behind.
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);

    let want = source_rows(&client, "accounts", ACCOUNT_COLUMNS).await;
    let got = replay(&out.join("public/accounts"), ACCOUNT_COLUMNS);
    assert_eq!(got.len(), want.len(), "accounts: row count");
    assert!(
        got == want,
        "accounts: replayed rows differ from the source"
    );
    for rolled_back in [1_100_000, 1_200_000, 1_300_000] {
        assert!(!got.contains_key(&rolled_back), "{rolled_back} rolled back");
    }
    let columns = &["id", "version", "account", "note", "tag"];
    let want = source_rows(&client, "events", columns).await;
    let got = replay(&out.join("public/events"), columns);
    assert_eq!(got.len(), want.len(), "events: row count");
    assert!(got == want, "events: replayed rows differ from the source");
    // The column added in a savepoint that rolled back never reached a file.
    for f in load_files(&out.join("public/events")) {
        assert!(
            read_file(&f)[0].schema().field_with_name("doomed").is_err(),
            "{}",
            file_name(&f)
        );
    }
}

/// A table added to the selection is loaded beside the stream: changes to the other tables
/// keep reaching their files while the load runs (its temporary slot still exists), and once
/// loaded the table follows every change made since its snapshot, those made during the load
/// included.
#[tokio::test(flavor = "multi_thread")]
async fn a_joining_table_loads_while_the_others_stream() {
    const ROWS: i64 = 1_000_000;
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO big SELECT g, 0, repeat('b', 150) || g FROM generate_series(1, {ROWS}) g;"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = pg.url("postgres");
    // Small chunks, each its own transaction: the lock taken below pauses the load between
    // two of them, so it cannot end before the stream has written the change to accounts.
    let with = |include: &str| {
        task(&url, &out, "[full_load]\nchunk_mb = 1")
            .replace(r#"include = ["public.*"]"#, &format!("include = {include}"))
    };
    let cfg = task_file(
        dir.path(),
        "cdc",
        &with(r#"["public.accounts", "public.events"]"#),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);

    let cfg = task_file(dir.path(), "cdc", &with(r#"["public.*"]"#));
    let mut child = spawn_inlet(&cfg);
    let joining = "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'inlet_join_%'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .query_one(joining, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the join did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Holding big's lock pauses the load at its next chunk (the one running finishes first),
    // however fast this machine loads: the join is still under way while accounts changes.
    let blocker = pg.client("postgres").await;
    blocker
        .batch_execute(
            "BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE;
             UPDATE big SET version = version + 1, note = 'during the load' WHERE id % 1000 = 0;",
        )
        .await
        .unwrap();
    let accounts = out.join("public/accounts");
    let files_before = load_files(&accounts).len();
    client
        .batch_execute("UPDATE accounts SET version = version + 1 WHERE id = 1;")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while load_files(&accounts).len() == files_before {
        assert!(
            Instant::now() < deadline,
            "accounts' change was not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client
            .query_one(joining, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1,
        "the change to accounts was written only after the join's load"
    );
    blocker.batch_execute("COMMIT").await.unwrap();

    let checkpoint = out.join("_inlet/cdc-test/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !common::checkpoint_captures(&checkpoint, "public.big") {
        assert!(Instant::now() < deadline, "public.big did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .batch_execute("UPDATE big SET version = version + 1 WHERE id <= 10; DELETE FROM big WHERE id > 999990;")
        .await
        .unwrap();
    workload(&client, 0).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("loading them beside the stream"),
        "{stderr}"
    );

    assert_replay_equals_source(&client, &out).await;
    let columns = &["id", "version", "note"];
    let want = source_rows(&client, "big", columns).await;
    assert_eq!(want.len() as i64, ROWS - 10);
    assert!(replay(&out.join("public/big"), columns) == want, "big");
}

/// A light workload on a connection of its own until `stop` is set or the server goes away (a
/// restart): one small transaction every few milliseconds, each inserting a row, updating the
/// previous one and deleting the one before. Returns how many transactions it committed.
fn light_workload(
    pg: &PgServer,
    ids_from: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
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
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let sql = format!(
                "BEGIN;
                 INSERT INTO accounts VALUES ({id}, 0, 'light', {id});
                 UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id = {id} - 1;
                 DELETE FROM accounts WHERE id = {id} - 2 AND {id} % 3 = 0;
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

/// A restart of the server while inlet streams, idle and under load: a fast restart completes
/// promptly because inlet answers the walsender's reply requests with its real positions (the
/// walsender waits for the client to confirm the last WAL it sent before it exits; with
/// wal_sender_timeout at 10 minutes nothing else would end the wait), and an immediate one
/// loses nothing. inlet reconnects each time and the replay equals the source, every change
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn fast_and_immediate_server_restarts_lose_and_duplicate_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let pg = PgServer::start_with_options("-c wal_sender_timeout=10min");
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(
            &pg.url("postgres"),
            &out,
            "part_rows = 50\n[retry]\nmin_delay_ms = 100\nmax_delay_ms = 500",
        ),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    // Well under the pg_ctl timeout, and far under wal_sender_timeout: only a confirmed
    // shutdown WAL position lets the walsender exit this soon.
    let bound = Duration::from_secs(15);

    // Idle.
    let took = pg.restart("fast", 60);
    assert!(took < bound, "idle fast restart took {took:?}");
    let client = pg.client("postgres").await;
    workload(&client, 0).await;
    wait_caught_up(&client, &mut child, &out).await;

    // Under a light workload, fast then immediate.
    let mut next_ids = 3_000_000;
    for mode in ["fast", "immediate"] {
        let stop = Arc::new(AtomicBool::new(false));
        let load = light_workload(&pg, next_ids, stop.clone());
        tokio::time::sleep(Duration::from_millis(700)).await;
        let took = pg.restart(mode, 60);
        assert!(took < bound, "{mode} restart under load took {took:?}");
        stop.store(true, Ordering::Relaxed);
        let committed = load.await.unwrap();
        assert!(
            committed > 10,
            "{mode}: the workload committed {committed} transactions"
        );
        next_ids += 1_000_000;
        let client = pg.client("postgres").await;
        wait_caught_up(&client, &mut child, &out).await;
    }

    // Idle again after an immediate restart, then a last round of every kind of change.
    let took = pg.restart("fast", 60);
    assert!(took < bound, "second idle fast restart took {took:?}");
    let client = pg.client("postgres").await;
    workload(&client, 1).await;
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert_replay_equals_source(&client, &out).await;
}

/// The (Op, id) of every change row of a table, in the order a reader replays them.
fn change_ops(table_dir: &Path) -> Vec<(String, i64)> {
    use arrow_array::cast::AsArray;
    let mut files: Vec<_> = load_files(table_dir)
        .into_iter()
        .filter(|p| !file_name(p).starts_with("LOAD"))
        .collect();
    files.sort();
    let mut ops = Vec::new();
    for f in files {
        for b in read_file(&f) {
            let op = b.column_by_name("Op").unwrap().as_string::<i32>().clone();
            let id = b
                .column_by_name("id")
                .unwrap()
                .as_primitive::<arrow_array::types::Int64Type>()
                .clone();
            for r in 0..b.num_rows() {
                ops.push((op.value(r).to_string(), id.value(r)));
            }
        }
    }
    ops
}

/// Under every replica identity an update that keeps the table's key is one `U`, and one that
/// changes it is `D` of the old key and `I` of the new row. The key is the primary key, or under
/// USING INDEX the identity index (whose columns are all a delete carries): FULL sends the whole
/// old row with every update and flags every column as identity, which does not mean the key
/// changed; an identity index sends its old columns when one of them changes, which does.
#[tokio::test(flavor = "multi_thread")]
async fn updates_are_u_unless_the_primary_key_changes_under_every_replica_identity() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    let tables = ["ri_default", "ri_full", "ri_index"];
    for t in tables {
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, version int NOT NULL, code text NOT NULL, note text);
                 INSERT INTO {t} SELECT g, 0, 'c' || g, repeat('n', g) FROM generate_series(1, 10) g;"
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "ALTER TABLE ri_full REPLICA IDENTITY FULL;
             CREATE UNIQUE INDEX ri_index_id_code ON ri_index (id, code);
             ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_id_code;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "cdc", &task(&pg.url("postgres"), &out, ""));
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    for t in tables {
        client
            .batch_execute(&format!(
                "UPDATE {t} SET version = version + 1, note = 'x' WHERE id = 1;
                 UPDATE {t} SET version = version + 1, code = 'changed' WHERE id = 2;
                 UPDATE {t} SET version = version + 1, id = 100 WHERE id = 3;
                 UPDATE {t} SET version = version + 1, id = 200, code = 'both' WHERE id = 4;
                 UPDATE {t} SET version = version + 1 WHERE id = 5;
                 UPDATE {t} SET version = version + 1 WHERE id = 100;
                 DELETE FROM {t} WHERE id = 6;
                 INSERT INTO {t} VALUES (300, 0, 'new', NULL);"
            ))
            .await
            .unwrap();
    }
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let ops = |code_change: &[(&str, i64)]| -> Vec<(String, i64)> {
        [("U", 1)]
            .iter()
            .chain(code_change)
            .chain(&[
                ("D", 3),
                ("I", 100),
                ("D", 4),
                ("I", 200),
                ("U", 5),
                ("U", 100),
                ("D", 6),
                ("I", 300),
            ])
            .map(|(op, id)| (op.to_string(), *id))
            .collect()
    };
    let columns = &["id", "version", "code", "note"];
    for t in tables {
        let table_dir = out.join("public").join(t);
        // code is part of ri_index's key (its identity index), of no other table's.
        let want = if t == "ri_index" {
            ops(&[("D", 2), ("I", 2)])
        } else {
            ops(&[("U", 2)])
        };
        assert_eq!(
            change_ops(&table_dir),
            want,
            "{t}: the change log's operations"
        );
        let source = source_rows(&client, t, columns).await;
        assert!(
            replay(&table_dir, columns) == source,
            "{t}: the replay differs from the source"
        );
    }
}

/// PostgreSQL before 18 does not publish stored generated columns, so inlet leaves them out of
/// the full load too: every file of the table has the same columns, the stream never reports
/// the column as dropped, and the replay equals the source without it. On 18 the publication
/// inlet creates publishes them (`publish_generated_columns = stored`), so every file has the
/// column and the replay equals the source with it (more in
/// `pg_versions::stored_generated_columns_are_carried_on_18`).
#[tokio::test(flavor = "multi_thread")]
async fn stored_generated_columns_are_left_out_of_load_and_stream_alike() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE priced (id bigint PRIMARY KEY, version int NOT NULL, price int, qty int,
                 total int GENERATED ALWAYS AS (price * qty) STORED, note text);
             INSERT INTO priced (id, version, price, qty, note)
                 SELECT g, 0, g, 2, 'n' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    let columns: &[&str] = if version.parse::<u32>().unwrap() >= 180000 {
        &["id", "version", "price", "qty", "total", "note"]
    } else {
        &["id", "version", "price", "qty", "note"]
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(dir.path(), "cdc", &task(&pg.url("postgres"), &out, ""));
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "INSERT INTO priced (id, version, price, qty, note) VALUES (100, 0, 7, 3, 'new');
             UPDATE priced SET version = version + 1, qty = qty + 1 WHERE id <= 5;
             UPDATE priced SET version = version + 1, note = 'x' WHERE id = 100;
             DELETE FROM priced WHERE id = 6;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("schema evolved"), "{stderr}");

    let table_dir = out.join("public/priced");
    let files = load_files(&table_dir);
    assert!(files.iter().any(|p| file_name(p).starts_with("LOAD")));
    assert!(files.iter().any(|p| !file_name(p).starts_with("LOAD")));
    for f in &files {
        let schema = read_file(f)[0].schema();
        let names: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| ["id", "version", "price", "qty", "total", "note"].contains(n))
            .collect();
        assert_eq!(names, columns, "{}: the table's columns", file_name(f));
    }
    let want = source_rows(&client, "priced", columns).await;
    assert!(
        replay(&table_dir, columns) == want,
        "the replay differs from the source"
    );
}

/// Waits up to a minute for inlet to exit on its own; its exit code and stderr.
fn exit_of(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("inlet did not stop within 60 s: {}", stderr_of(child).1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stderr_of(child)
}

/// (file kind, Op, id, t) of every row of the `clock` table's files, LOAD files first, with t
/// in microseconds since midnight.
fn clock_rows(table_dir: &Path) -> Vec<(String, i64, Option<i64>)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, Time64MicrosecondType};
    let mut rows = Vec::new();
    let mut files = load_files(table_dir);
    files.sort_by_key(|f| !file_name(f).starts_with("LOAD"));
    for f in files {
        let load = file_name(&f).starts_with("LOAD");
        for b in read_file(&f) {
            let t = b.column_by_name("t").unwrap();
            assert_eq!(
                t.data_type(),
                &arrow_schema::DataType::Time64(arrow_schema::TimeUnit::Microsecond)
            );
            let t = t.as_primitive::<Time64MicrosecondType>();
            let id = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                let op = if load {
                    "LOAD".to_string()
                } else {
                    let ops = b.column_by_name("Op").unwrap().as_string::<i32>();
                    ops.value(r).to_string()
                };
                let value = (!arrow_array::Array::is_null(t, r)).then(|| t.value(r));
                if let Some(v) = value {
                    assert!((0..86_400_000_000).contains(&v), "invalid Time64 {v}");
                }
                rows.push((op, id.value(r), value));
            }
        }
    }
    rows
}

/// `time '24:00:00'` (PostgreSQL's end of day) has no Arrow Time64 equivalent: in the full load
/// (COPY binary) and in the change stream (pgoutput text) it follows values.on_unrepresentable,
/// stopping the task with the table, column and row under "fail" and becoming NULL under
/// "null", never an invalid 86,400,000,000 µs.
#[tokio::test(flavor = "multi_thread")]
async fn time_24_00_follows_the_value_policy_in_load_and_stream() {
    const TABLE: &str = "CREATE TABLE clock (id bigint PRIMARY KEY, version int NOT NULL, t time);";
    let dir = tempfile::tempdir().unwrap();

    // fail, in the full load.
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "{TABLE} INSERT INTO clock VALUES (1, 0, '12:00'), (2, 0, '24:00:00');"
        ))
        .await
        .unwrap();
    let out = dir.path().join("fail-load");
    let cfg = task_file(
        dir.path(),
        "fail-load",
        &task(&pg.url("postgres"), &out, ""),
    );
    let (code, stderr) = exit_of(spawn_inlet(&cfg));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("public.clock column t: time '24:00:00' (the row with id = 2) has no exact"),
        "{stderr}"
    );
    assert!(stderr.contains("on_unrepresentable"), "{stderr}");
    drop(pg);

    // fail, in the change stream.
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "{TABLE} INSERT INTO clock VALUES (1, 0, '12:00');"
        ))
        .await
        .unwrap();
    let out = dir.path().join("fail-cdc");
    let cfg = task_file(dir.path(), "fail-cdc", &task(&pg.url("postgres"), &out, ""));
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute("INSERT INTO clock VALUES (3, 0, '24:00:00');")
        .await
        .unwrap();
    let (code, stderr) = exit_of(child);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("public.clock column t: time '24:00:00' (the row with id = 3) has no exact"),
        "{stderr}"
    );
    drop(pg);

    // null, in both.
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "{TABLE} INSERT INTO clock VALUES (1, 0, '12:00'), (2, 0, '24:00:00');"
        ))
        .await
        .unwrap();
    let out = dir.path().join("null");
    let cfg = task_file(
        dir.path(),
        "null",
        &task(
            &pg.url("postgres"),
            &out,
            "[values]\non_unrepresentable = \"null\"",
        ),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "INSERT INTO clock VALUES (3, 0, '24:00:00');
             UPDATE clock SET version = 1, t = '24:00:00' WHERE id = 1;
             INSERT INTO clock VALUES (4, 0, '23:59:59.999999');",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let noon = 12 * 3_600_000_000;
    let want: Vec<(String, i64, Option<i64>)> = vec![
        ("LOAD".into(), 1, Some(noon)),
        ("LOAD".into(), 2, None),
        ("I".into(), 3, None),
        ("U".into(), 1, None),
        ("I".into(), 4, Some(86_399_999_999)),
    ];
    assert_eq!(clock_rows(&out.join("public/clock")), want);
}

/// Under values.on_unrepresentable = "text" an array column is PostgreSQL's array text, in the
/// full load and the change stream alike, so a multi-dimensional array (which no Arrow list
/// holds) is carried exactly instead of stopping the task.
#[tokio::test(flavor = "multi_thread")]
async fn multi_dimensional_arrays_are_carried_as_array_text_under_the_text_policy() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE grid (id bigint PRIMARY KEY, version int NOT NULL, a int[], s text[]);
             INSERT INTO grid VALUES (1, 0, '{1,2}', '{x,\"y z\"}'), (2, 0, '{{1,2},{3,4}}', '{{a,b},{c,NULL}}'),
                 (3, 0, NULL, '{}');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "cdc",
        &task(
            &pg.url("postgres"),
            &out,
            "[values]\non_unrepresentable = \"text\"",
        ),
    );
    let mut child = spawn_inlet(&cfg);
    wait_caught_up(&client, &mut child, &out).await;
    client
        .batch_execute(
            "INSERT INTO grid VALUES (4, 0, '{{{1}},{{2}}}', '{{\"q,r\"}}');
             UPDATE grid SET version = version + 1, a = '{{5,6},{7,8}}' WHERE id = 1;
             UPDATE grid SET version = version + 1, a = '[0:1]={9,10}' WHERE id = 3;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &out).await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let table_dir = out.join("public/grid");
    for f in load_files(&table_dir) {
        let batch = &read_file(&f)[0];
        for col in ["a", "s"] {
            assert_eq!(
                batch.schema().field_with_name(col).unwrap().data_type(),
                &arrow_schema::DataType::Utf8,
                "{}",
                file_name(&f)
            );
        }
    }
    let columns = &["id", "version", "a", "s"];
    let want = source_rows(&client, "grid", columns).await;
    assert_eq!(want[&2][2].as_deref(), Some("{{1,2},{3,4}}"));
    assert_eq!(replay(&table_dir, columns), want);
}
