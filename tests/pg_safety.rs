//! Safety of the PostgreSQL source against a real PostgreSQL 15: inlet never drops or streams
//! from a replication slot it cannot prove is its task's own, never changes the source so that
//! the application's own writes fail, refuses a checkpoint ahead of the server, tells a dropped
//! publication from a dropped slot, and `inlet check` refuses what `inlet run` would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::pg_stream::wait_caught_up;
use common::pg_workload::{workload, ACCOUNT_COLUMNS, EVENT_COLUMNS, SCHEMA};
use common::replay::{replay, source_rows};
use common::{inlet, sigterm, spawn_run, stderr_of, task_file, PgServer};

fn task(name: &str, url: &str, out: &Path, source_extra: &str, extra: &str) -> String {
    format!(
        r#"
[task]
name = "{name}"
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
include = ["public.*"]
[cdc]
flush_interval_ms = 200
{extra}
"#,
        out.display()
    )
}

/// Waits at most `secs` for the process to exit; its exit code and stderr. A process still
/// running then is killed and the test fails with its stderr.
fn wait_exit(mut child: Child, secs: u64) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return stderr_of(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let (_, stderr) = stderr_of(child);
            panic!("inlet still ran after {secs} s (it should have refused to start):\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn slot_confirmed(client: &tokio_postgres::Client, slot: &str) -> Option<String> {
    client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn slot_names(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn publications(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query("SELECT pubname::text FROM pg_publication ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn assert_replay_equals_source(client: &tokio_postgres::Client, out: &Path) {
    for (table, columns) in [("accounts", ACCOUNT_COLUMNS), ("events", EVENT_COLUMNS)] {
        let want = source_rows(client, table, columns).await;
        let got = replay(&out.join("public").join(table), columns);
        assert_eq!(got.len(), want.len(), "{table}: row count");
        assert!(got == want, "{table}: replayed rows differ from the source");
    }
}

/// Every file under `dir` with its contents, to prove nothing was written; the objects of a
/// task's lease (`_inlet/<task>/lease/`), which `inlet run` takes before the task starts and
/// renews, are the daemon's ownership record, not the task's output, and are left out.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !(p.ends_with("lease")
                    && p.parent()
                        .is_some_and(|t| t.parent().is_some_and(|i| i.ends_with("_inlet"))))
                {
                    stack.push(p);
                }
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn check(cfg: &Path) -> (i32, String) {
    let (code, stdout, stderr) = inlet(&["check", "-c", cfg.to_str().unwrap()]);
    (code, format!("{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tools_slot_is_never_dropped_or_used() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    // Another tool's slot, which has confirmed changes of its own.
    client
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('debezium', 'pgoutput'); \
             INSERT INTO events VALUES (900001, 0, 1, 'after the slot');",
        )
        .await
        .unwrap();
    let before = slot_confirmed(&client, "debezium").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task(
            "orders",
            &pg.url("postgres"),
            &out,
            "slot = \"debezium\"",
            "",
        ),
    );

    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("[MISSING] replication slot: replication slot \"debezium\" exists but this task did not create it"),
        "{report}"
    );

    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("replication slot \"debezium\" exists but this task did not create it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set source.slot to another name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SELECT pg_drop_replication_slot('debezium');"),
        "{stderr}"
    );
    assert_eq!(slot_names(&client).await, ["debezium"]);
    assert_eq!(slot_confirmed(&client, "debezium").await.unwrap(), before);
    // Refused before anything was written: no publication, nothing in the target.
    assert!(publications(&client).await.is_empty());
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_whose_names_give_one_slot_name_are_refused() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let other_out = dir.path().join("other");
    let url = pg.url("postgres");
    let checkpoint = out.join("_inlet/dup-slot/checkpoint");
    let first = task_file(dir.path(), "first", &task("dup-slot", &url, &out, "", ""));
    let mut child = spawn_run(&first);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_dup_slot").await;
    workload(&client, 0).await;
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_dup_slot").await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);

    // Changes the first task has not read yet.
    workload(&client, 1).await;
    let confirmed = slot_confirmed(&client, "inlet_dup_slot").await.unwrap();
    let first_checkpoint = std::fs::read(&checkpoint).unwrap();

    // Another name that gives the same slot name, into the same target; and the same name
    // into another target.
    let underscore = task_file(
        dir.path(),
        "underscore",
        &task("dup_slot", &url, &out, "", ""),
    );
    let elsewhere = task_file(
        dir.path(),
        "elsewhere",
        &task("dup-slot", &url, &other_out, "", ""),
    );
    for cfg in [&underscore, &elsewhere] {
        let (code, report) = check(cfg);
        assert_eq!(code, 1, "{report}");
        assert!(
            report.contains("[MISSING] replication slot: replication slot \"inlet_dup_slot\" exists but this task did not create it"),
            "{report}"
        );
        let (code, stderr) = wait_exit(spawn_run(cfg), 60);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(
                "replication slot \"inlet_dup_slot\" exists but this task did not create it"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains("\"a-b\" and \"a_b\" both give inlet_a_b"),
            "{stderr}"
        );
        assert_eq!(slot_names(&client).await, ["inlet_dup_slot"]);
        assert_eq!(
            slot_confirmed(&client, "inlet_dup_slot").await.unwrap(),
            confirmed
        );
        assert_eq!(std::fs::read(&checkpoint).unwrap(), first_checkpoint);
    }
    assert!(!out.join("_inlet/dup_slot/checkpoint").exists());
    assert!(tree(&other_out).is_empty());

    // The first task still has every change.
    let mut child = spawn_run(&first);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_dup_slot").await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert_replay_equals_source(&client, &out).await;
}

/// A first load killed once the slot exists: the next start proves the slot is the task's (its
/// record), keeps it where it was created, and the load goes on beside the stream from there.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_first_load_goes_on_from_the_tasks_own_slot() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    // Enough rows that the first load is still running when it is killed.
    client
        .batch_execute(
            "CREATE TABLE bulk (id bigint PRIMARY KEY, note text); \
             INSERT INTO bulk SELECT g, repeat('b', 40) FROM generate_series(1, 1500000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoint = out.join("_inlet/reload/checkpoint");
    let record = out.join("_inlet/reload.slot/checkpoint");
    let cfg = task_file(
        dir.path(),
        "t",
        &task("reload", &pg.url("postgres"), &out, "", ""),
    );
    let mut child = spawn_run(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The record is first written as an intent ("creating=true") before the slot exists; a
    // kill then may leave no slot at all. Wait for the record of the slot created.
    let creator = |record: &inlet_core::Checkpoint| {
        let resume = record.source.as_ref().and_then(|s| s.postgres()).unwrap();
        (resume.slot.clone(), resume.created_by.clone().unwrap())
    };
    while !common::read_checkpoint(&record)
        .map(|r| {
            let (slot, by) = creator(&r);
            slot == "inlet_reload" && !by.creating
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no slot record after 60 s");
        assert!(child.try_wait().unwrap().is_none(), "inlet exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!checkpoint.exists(), "the load finished before the kill");
    let created = common::read_checkpoint(&record).unwrap();
    let (slot, by) = creator(&created);
    assert_eq!(slot, "inlet_reload", "{created:?}");
    assert_eq!(by.task, "reload", "{created:?}");
    assert_eq!(slot_names(&client).await, ["inlet_reload"]);

    workload(&client, 0).await;
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_reload").await;
    workload(&client, 1).await;
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_reload").await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "this task's slot exists and its first load did not finish: the load resumes in a new snapshot"
        ),
        "{stderr}"
    );
    assert_eq!(common::read_checkpoint(&record).unwrap(), created);
    assert_replay_equals_source(&client, &out).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_start_leaves_no_slot_behind() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE pol (id int PRIMARY KEY, n numeric(10,2)); \
             INSERT INTO pol VALUES (1, 1.5), (2, 'NaN');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task("nan", &pg.url("postgres"), &out, "", ""),
    );
    let (code, stderr) = wait_exit(spawn_run(&cfg), 120);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("public.pol column n"), "{stderr}");
    assert!(
        slot_names(&client).await.is_empty(),
        "the slot of the failed first start pins WAL: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_without_replica_identity_are_not_published() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, v text); \
             CREATE TABLE nokey (id bigint, v text); \
             CREATE TABLE nothing (id bigint PRIMARY KEY, v text); \
             ALTER TABLE nothing REPLICA IDENTITY NOTHING; \
             INSERT INTO accounts VALUES (1, 'a'); INSERT INTO nokey VALUES (1, 'a'); \
             INSERT INTO nothing VALUES (1, 'a');",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "t",
        &task("ident", &pg.url("postgres"), &out, "", ""),
    );
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("[MISSING] replica identity: public.nokey, public.nothing have no primary key or other replica identity"),
        "{report}"
    );
    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ALTER TABLE public.nokey REPLICA IDENTITY FULL;"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "ALTER TABLE public.nothing REPLICA IDENTITY USING INDEX nothing_pkey; (or REPLICA IDENTITY FULL)"
        ),
        "{stderr}"
    );
    // The application's writes still work, and inlet changed nothing.
    client
        .batch_execute(
            "UPDATE nokey SET v = 'b'; DELETE FROM nokey; UPDATE nothing SET v = 'b'; \
             DELETE FROM nothing;",
        )
        .await
        .unwrap();
    assert!(publications(&client).await.is_empty());
    assert!(slot_names(&client).await.is_empty());

    // A table without identity created while the task runs is not added either.
    client
        .batch_execute("DROP TABLE nokey; DROP TABLE nothing;")
        .await
        .unwrap();
    let checkpoint = out.join("_inlet/ident/checkpoint");
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_ident").await;
    client
        .batch_execute("CREATE TABLE later (id bigint, v text); INSERT INTO later VALUES (1, 'a');")
        .await
        .unwrap();
    // The task looks for new tables every 10 s.
    tokio::time::sleep(Duration::from_secs(13)).await;
    client
        .batch_execute("UPDATE later SET v = 'b'; INSERT INTO accounts VALUES (2, 'b');")
        .await
        .unwrap();
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_ident").await;
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("has no primary key or other replica identity"),
        "{stderr}"
    );
    client
        .batch_execute("UPDATE later SET v = 'c'; DELETE FROM later;")
        .await
        .unwrap();
    let published: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_publication_tables ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, ["accounts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_ahead_of_the_server_is_refused() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoint = out.join("_inlet/ahead/checkpoint");
    let cfg = task_file(
        dir.path(),
        "t",
        &task("ahead", &pg.url("postgres"), &out, "", ""),
    );
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_ahead").await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);

    // A checkpoint from a later point of another history, as after restoring the database
    // from an older backup.
    let mut ahead = common::read_checkpoint(&checkpoint).unwrap();
    assert_ne!(ahead.position.0, 0xFF00000000);
    ahead.position = inlet_core::Position(0xFF00000000);
    std::fs::write(&checkpoint, ahead.encode()).unwrap();
    workload(&client, 0).await;
    let before = tree(&out);
    let confirmed = slot_confirmed(&client, "inlet_ahead").await;

    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("ahead of the server's WAL"), "{report}");

    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the task checkpoint (file://{}) is at position FF/0, ahead of the server's WAL, which is at",
            checkpoint.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "delete the checkpoint (file://{}) and the replication slot (SELECT pg_drop_replication_slot('inlet_ahead');)",
            checkpoint.display()
        )),
        "{stderr}"
    );
    assert!(tree(&out) == before, "inlet wrote into the target");
    assert_eq!(slot_confirmed(&client, "inlet_ahead").await, confirmed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_publication_is_told_from_a_dropped_slot() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoint = out.join("_inlet/pubs/checkpoint");
    let url = pg.url("postgres");
    let cfg = task_file(dir.path(), "t", &task("pubs", &url, &out, "", ""));
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_pubs").await;
    client
        .batch_execute("DROP PUBLICATION inlet_pubs")
        .await
        .unwrap();
    workload(&client, 0).await;
    let (code, stderr) = wait_exit(child, 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("publication \"inlet_pubs\" was dropped: PostgreSQL decodes each change"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("replication slot \"inlet_pubs\" was dropped"),
        "{stderr}"
    );
    // The next start says the same, before streaming.
    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("publication \"inlet_pubs\" does not exist (it was dropped, or source.publication now names a new one): PostgreSQL decodes each change"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SELECT pg_drop_replication_slot('inlet_pubs')"),
        "{stderr}"
    );

    // With on_slot_lost = "resnapshot" the task loads again through a new slot and a new
    // publication, instead of retrying forever; also when the publication was created again.
    let listen = format!("127.0.0.1:{}", inlet_testkit::free_port());
    let cfg = task_file(
        dir.path(),
        "t",
        &task("pubs", &url, &out, "", "on_slot_lost = \"resnapshot\""),
    );
    client
        .batch_execute("CREATE PUBLICATION inlet_pubs FOR TABLE accounts, events")
        .await
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["run", "-c", cfg.to_str().unwrap(), "--listen", &listen])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("inlet starts");
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_pubs").await;
    client
        .batch_execute("DROP PUBLICATION inlet_pubs")
        .await
        .unwrap();
    workload(&client, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    workload(&client, 2).await;
    // Up to PostgreSQL 17 the stream fails at the next change; 18 streams on without the
    // dropped publication's changes (and confirms past them), and inlet's poll of the
    // publication finds it gone within 10 s. Either way the resnapshot creates it anew.
    let deadline = Instant::now() + Duration::from_secs(60);
    while publications(&client).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no resnapshot within 60 s of the drop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_pubs").await;
    let metrics = metrics(&listen);
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    // Each start over is counted, as an error and a retry of kind `starts_over`: the drop
    // while streaming, and up to PostgreSQL 17 also the stream's failure on the publication
    // created again before this run.
    let starts_over = stderr
        .matches("cdc.on_slot_lost = \"resnapshot\": starting again")
        .count();
    assert!(starts_over >= 1, "{stderr}");
    for name in ["inlet_errors_total", "inlet_retries_total"] {
        let sample = format!("{name}{{task=\"pubs\",kind=\"starts_over\"}} {starts_over}");
        assert!(
            metrics.lines().any(|l| l == sample),
            "no {sample} in:\n{metrics}\n{stderr}"
        );
    }
    assert!(
        stderr.contains("publication \"inlet_pubs\" was dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cdc.on_slot_lost = \"resnapshot\": new slot and a new full load"),
        "{stderr}"
    );
    assert_eq!(publications(&client).await, ["inlet_pubs"]);
    assert_replay_equals_source(&client, &out).await;
}

/// The daemon's /metrics text at `address`.
fn metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(address).expect("the daemon's listen address");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread")]
async fn check_refuses_what_run_would_fail_on() {
    let pg = PgServer::start_with_options("-c max_replication_slots=1");
    let client = pg.client("postgres").await;
    client
        .batch_execute(&format!(
            "{SCHEMA} CREATE ROLE reader LOGIN REPLICATION; \
             GRANT SELECT ON accounts, events TO reader;"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    // Not the tables' owner, no right to create the publication.
    let reader_url = pg.url("postgres").replace("postgres@", "reader@");
    let cfg = task_file(dir.path(), "r", &task("reader", &reader_url, &out, "", ""));
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("[MISSING] publication: publication \"inlet_reader\" does not exist and the user may not create it"),
        "{report}"
    );
    assert!(
        report
            .contains("CREATE PUBLICATION inlet_reader FOR TABLE public.accounts, public.events;"),
        "{report}"
    );
    client
        .batch_execute("GRANT CREATE ON DATABASE postgres TO reader")
        .await
        .unwrap();
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("[MISSING] publication: only a table's owner may add it to a publication; the user does not own public.accounts, public.events"),
        "{report}"
    );
    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(slot_names(&client).await.is_empty());
    assert!(publications(&client).await.is_empty());

    // No free replication slot.
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('someone', 'pgoutput')")
        .await
        .unwrap();
    let cfg = task_file(
        dir.path(),
        "full",
        &task("full", &pg.url("postgres"), &out, "", ""),
    );
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("[MISSING] free replication slot: the server has 1 replication slots and max_replication_slots = 1"),
        "{report}"
    );
    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("max_replication_slots = 1"), "{stderr}");
    assert!(publications(&client).await.is_empty());
    assert_eq!(slot_names(&client).await, ["someone"]);

    // A lost slot (here: gone, with a checkpoint): check says so, as run does.
    client
        .batch_execute("SELECT pg_drop_replication_slot('someone')")
        .await
        .unwrap();
    let checkpoint = out.join("_inlet/full/checkpoint");
    let mut child = spawn_run(&cfg);
    wait_caught_up(&client, &mut child, &checkpoint, "inlet_full").await;
    sigterm(&child);
    assert_eq!(stderr_of(child).0, 0);
    let (code, report) = check(&cfg);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("[ok     ] replication slot: \"inlet_full\" belongs to this task"),
        "{report}"
    );
    client
        .batch_execute("SELECT pg_drop_replication_slot('inlet_full')")
        .await
        .unwrap();
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(
            "[MISSING] replication slot: replication slot \"inlet_full\" no longer exists"
        ),
        "{report}"
    );
}

/// A server whose walsenders are all taken (here the one `max_wal_senders` allows, by another
/// replication client): check says so naming the setting and run refuses before it creates a
/// publication or a slot, instead of failing later on a replication connection the server turns
/// away. With one walsender left, check warns that a joining table would wait for a second.
#[tokio::test(flavor = "multi_thread")]
async fn no_free_walsender_is_refused_naming_max_wal_senders() {
    let pg = PgServer::start_with_options("-c max_wal_senders=2");
    let client = pg.client("postgres").await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "w",
        &task("walsenders", &pg.url("postgres"), &out, "", ""),
    );
    // Another replication client: a replication connection is a walsender from its start.
    let connector = inlet_postgres::PgConnector::new(&inlet_postgres::PostgresSourceConfig {
        url: pg.url("postgres"),
        password_file: None,
        tls: inlet_postgres::TlsMode::Disable,
        ca_file: None,
        slot: None,
        publication: None,
        connect_timeout_s: 30,
        failover_slot: false,
    })
    .expect("valid source config");
    let replication_client = || async {
        inlet_postgres::ReplicationConnection::connect(&connector)
            .await
            .expect("a replication connection")
    };
    let walsenders = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'";
    let wait_walsenders = |n: i64| {
        let client = &client;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while client
                .query_one(walsenders, &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                != n
            {
                assert!(Instant::now() < deadline, "{n} walsenders did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let first = replication_client().await;
    wait_walsenders(1).await;
    let (code, report) = check(&cfg);
    assert!(
        report.contains("[warning] free walsender: max_wal_senders = 2 and 1 walsenders run"),
        "{report}"
    );
    assert_eq!(code, 0, "{report}");

    let second = replication_client().await;
    wait_walsenders(2).await;
    let (code, report) = check(&cfg);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(
            "[MISSING] free walsender: max_wal_senders = 2 and 2 walsenders run: the change stream cannot connect"
        ),
        "{report}"
    );
    let (code, stderr) = wait_exit(spawn_run(&cfg), 60);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("raise max_wal_senders"), "{stderr}");
    assert!(slot_names(&client).await.is_empty());
    assert!(publications(&client).await.is_empty());

    drop((first, second));
    wait_walsenders(0).await;
    let (code, report) = check(&cfg);
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("free walsender"), "{report}");
}
