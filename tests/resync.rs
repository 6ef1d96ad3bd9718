//! `inlet resync`: a table of a running CDC task loaded again beside the stream, while the
//! other tables stream on (issue 13 item 11, issue 16 item 2).
//!
//! The stop it exists for: an UPDATE that leaves a TOASTed value unchanged, on a table without
//! REPLICA IDENTITY FULL, reaches the stream without that value. Making the table FULL helps only
//! the updates to come; the one in the stream stays incomplete, and every start stopped on it
//! again. After `inlet resync` the next run reloads the table in a fresh snapshot and drops its
//! changes from before it. The other table's changes are checked against an oracle that is not
//! inlet (audit triggers): each exactly once. MariaDB's counterpart: a row image written under a
//! session's `binlog_row_image = MINIMAL`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{spawn_logged as spawn, Inlet};
use common::replay::{replay, source_rows, Rows};
use common::{audit, mysql_audit, mysql_stream, pg_stream, task_file, PgServer};
use inlet_testkit::MariaDbServer;

fn task(url: &str, out: &Path) -> String {
    format!(
        r#"
[task]
name = "resync"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#,
        out.display()
    )
}

const SLOT: &str = "inlet_resync";

/// Waits (30 s at most) for `inlet run` to exit; its exit code.
fn wait_exit(child: &mut Inlet, log: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not stop within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then the exit code.
fn stop(mut child: Inlet, log: &Path) -> i32 {
    common::sigterm(&child.0);
    wait_exit(&mut child, log)
}

/// Seeds `docs` (a text column stored out of line, never rewritten by the updates below) and
/// `other`, and the audit triggers on `other`.
async fn seed(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE docs (id bigint PRIMARY KEY, v int NOT NULL, body text);
             ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 200) FROM generate_series(1, 50) g;
             CREATE TABLE other (id bigint PRIMARY KEY, v int NOT NULL);
             INSERT INTO other SELECT g, 0 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    audit::install(client, &[("other", "id")]).await;
}

/// The target's tables equal the source's, row for row (docs with its TOASTed text), and every
/// change of `other` is in its change files exactly once.
async fn assert_target_equals_source(client: &tokio_postgres::Client, out: &Path) {
    assert_docs_and_other(client, out, &["id", "v", "body"]).await;
}

/// The TOAST stop, then `ALTER TABLE … REPLICA IDENTITY FULL` (not enough: the next start
/// stops the same way) and `inlet resync`: the next run reloads docs beside the stream,
/// drops its stuck update, and the target equals the source; other's changes, made before,
/// during and after, are each written once.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_stopped_on_an_unchanged_toast_value_is_resynced_and_catches_up() {
    toast_stop_then_resync(false).await;
}

/// The same into Iceberg tables: the reload replaces docs' table by one snapshot, and the
/// tables read by pyiceberg, DuckDB and polars equal the source.
#[tokio::test(flavor = "multi_thread")]
async fn an_iceberg_table_stopped_on_an_unchanged_toast_value_is_resynced() {
    toast_stop_then_resync(true).await;
}

async fn toast_stop_then_resync(iceberg: bool) {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let mut body = task(&pg.url("postgres"), &out);
    if iceberg {
        body = body.replace(
            &format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
            &format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
        );
        assert!(body.contains("iceberg"));
    }
    let cfg = task_file(dir.path(), "resync", &body);
    let cfg_arg = cfg.to_str().unwrap();

    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute(
            "UPDATE other SET v = v + 1 WHERE id <= 10;
             UPDATE docs SET v = v + 1 WHERE id <= 5;
             UPDATE other SET v = v + 1 WHERE id > 90;
             INSERT INTO other SELECT g, 0 FROM generate_series(101, 110) g;",
        )
        .await
        .unwrap();
    let code = wait_exit(&mut child, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "the TOAST stop:\n{text}");
    assert!(
        text.contains("run ALTER TABLE public.docs REPLICA IDENTITY FULL"),
        "{text}"
    );
    // The stop names the command, with this task file.
    assert!(
        text.contains(&format!("inlet resync -c {cfg_arg} public.docs")),
        "{text}"
    );

    // What the stop says first is not enough: the update in the stream stays incomplete.
    client
        .batch_execute("ALTER TABLE docs REPLICA IDENTITY FULL")
        .await
        .unwrap();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    assert_eq!(wait_exit(&mut child, &log), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TOASTed value unchanged"), "{text}");

    // A name that is not a table of the task: exit 2, naming it and the task file; nothing is
    // recorded.
    let (code, _, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.docs", "app.nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("table \"app.nope\" is not a table of task \"resync\"")
            && stderr.contains(cfg_arg)
            && stderr.contains("The task's tables: public.docs, public.other"),
        "{stderr}"
    );
    let (code, _, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "table \"public.nope\" matches [tables] but task \"resync\" has not loaded it"
        ),
        "{stderr}"
    );
    assert!(
        resyncs_recorded(&checkpoint).is_empty(),
        "a refused resync records nothing"
    );
    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.docs"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("public.docs: resync recorded in the task checkpoint"),
        "{stdout}"
    );
    assert_eq!(
        resyncs_recorded(&checkpoint),
        ["public.docs"],
        "the checkpoint records the resync"
    );

    // Changes while stopped, while the reload runs and after it, to both tables.
    client
        .batch_execute(
            "UPDATE docs SET v = v + 1 WHERE id > 45;
             UPDATE other SET v = v + 1 WHERE id % 7 = 0;",
        )
        .await
        .unwrap();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    for round in 0..5 {
        client
            .batch_execute(&format!(
                "UPDATE other SET v = v + 1 WHERE id % 5 = {round};
                 UPDATE docs SET v = v + 1 WHERE id % 5 = {round};"
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute("UPDATE docs SET v = v + 1 WHERE id <= 3; DELETE FROM other WHERE id = 1;")
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resync: the table is loaded again beside the stream")
            && text.contains("the table's resync is done"),
        "{text}"
    );
    assert!(
        resyncs_recorded(&checkpoint).is_empty(),
        "the resync leaves the checkpoint once done"
    );
    if iceberg {
        for (table, columns) in [("docs", &["id", "v", "body"][..]), ("other", &["id", "v"])] {
            let mut want: common::iceberg::Rows = source_rows(&client, table, columns)
                .await
                .into_values()
                .collect();
            want.sort();
            common::iceberg::assert_iceberg_equals(&out.join("public").join(table), table, &want);
        }
    } else {
        assert_target_equals_source(&client, &out).await;
    }
}

/// The same through a running daemon, found at the task file's `[service] listen`: a column
/// added with a DEFAULT while the task streams reads NULL in the target for the rows from
/// before (PostgreSQL filled them without writing a change), and `inlet resync` asks the
/// daemon (`POST /tasks/{task}/tables/{table}/resync`) to load the table again, while a
/// workload writes both tables. Afterwards the target equals the source, and other's changes
/// are each written once.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_resyncs_a_table_asked_through_its_http_endpoint() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed(&client).await;
    client
        .batch_execute("ALTER TABLE docs REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let address = format!("127.0.0.1:{}", inlet_testkit::free_port());
    let cfg = task_file(
        dir.path(),
        "resync",
        &format!(
            "{}[service]\nlisten = \"{address}\"\n",
            // Off, so that only the endpoint's resync gives the older rows their value.
            task(&pg.url("postgres"), &out)
                .replace("[cdc]\n", "[cdc]\nreload_on_added_default = false\n")
        ),
    );
    let cfg_arg = cfg.to_str().unwrap();
    let mut child = Inlet(
        Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["run", "-c", cfg_arg])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start inlet run"),
    );
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;

    let stop_writes = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop_writes.clone();
        let app = pg.client("postgres").await;
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                app.batch_execute(&format!(
                    "UPDATE other SET v = v + 1 WHERE id % 10 = {r};
                     UPDATE docs SET v = v + 1 WHERE id % 10 = {r} AND id <= 20;",
                    r = round % 10
                ))
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            round
        })
    };
    client
        .batch_execute("ALTER TABLE docs ADD COLUMN extra int NOT NULL DEFAULT 7")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The endpoint refuses a task it does not run, naming its tasks.
    let answer = raw_post(&address, "/tasks/nope/tables/public.docs/resync").await;
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("its tasks: resync"),
        "{answer}"
    );
    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.docs"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "public.docs: resync asked of the running daemon at {address}"
        )),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writes.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    // (docs' rows past 20 never change after the ALTER: only the reload gives them extra = 7.)
    assert!(rounds > 20, "the workload wrote only {rounds} rounds");
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute("UPDATE docs SET v = v + 1 WHERE id <= 3; DELETE FROM other WHERE id = 1;")
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resync asked through the HTTP endpoint")
            && text.contains("the table's resync is done"),
        "{text}"
    );
    let docs = ["id", "v", "extra"];
    assert_eq!(
        replay(&out.join("public/docs"), &docs),
        source_rows(&client, "docs", &docs).await,
        "docs"
    );
    let other = ["id", "v"];
    assert_eq!(
        replay(&out.join("public/other"), &other),
        source_rows(&client, "other", &other).await,
        "other"
    );
    let checked = audit::assert_exactly_once(&client, &out, "other", "id").await;
    assert!(checked > 20, "only {checked} changes of other were checked");
}

/// A resync killed (SIGKILL) while its load runs: the old copy's checkpoint keeps the request,
/// and the next start loads the table again; afterwards the target equals the source and the
/// other table's changes, made throughout, are each written once.
#[tokio::test(flavor = "multi_thread")]
async fn a_resync_killed_during_its_load_starts_again() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed(&client).await;
    client
        .batch_execute(
            "ALTER TABLE docs REPLICA IDENTITY FULL;
             INSERT INTO docs SELECT g, 0, md5(g::text) FROM generate_series(1000, 300000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let cfg = task_file(dir.path(), "resync", &task(&pg.url("postgres"), &out));
    let cfg_arg = cfg.to_str().unwrap();
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);

    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.docs"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    client
        .batch_execute(
            "UPDATE docs SET v = v + 1 WHERE id % 1000 = 0;
             UPDATE other SET v = v + 1 WHERE id <= 10;",
        )
        .await
        .unwrap();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("loading them beside the stream")
    {
        assert!(
            Instant::now() < deadline,
            "the reload did not begin:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !killed_log.contains("tables loaded beside the stream"),
        "the kill came after the load:\n{killed_log}"
    );
    assert!(
        !resyncs_recorded(&checkpoint).is_empty(),
        "the request outlives the kill"
    );

    client
        .batch_execute(
            "UPDATE docs SET v = v + 1 WHERE id % 1000 = 1;
             UPDATE other SET v = v + 1 WHERE id > 90;",
        )
        .await
        .unwrap();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute("UPDATE docs SET v = v + 1 WHERE id <= 3; DELETE FROM other WHERE id = 1;")
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resync: the table is loaded again beside the stream")
            && text.contains("the table's resync is done"),
        "{text}"
    );
    assert_target_equals_source(&client, &out).await;
}

/// A bodiless POST over a raw connection; the whole answer (status line, headers, body).
async fn raw_post(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

fn mysql_task(url: &str, out: &Path) -> String {
    format!(
        r#"
[task]
name = "my-resync"
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
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#,
        out.display()
    )
}

fn maria_rows(db: &MariaDbServer, table: &str, columns: &[&str]) -> Rows {
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

/// MariaDB: one session's `binlog_row_image = MINIMAL` writes an update of docs whose after
/// image lacks a column; the task stops, naming the setting and `inlet resync`, and stops the
/// same way at every start. After `inlet resync` the next run reloads docs beside the stream,
/// drops that update, and both tables equal the source (other's changes exactly once).
#[test]
fn a_table_stopped_on_a_minimal_row_image_is_resynced_and_catches_up() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE shop;
         CREATE TABLE shop.docs (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40));
         CREATE TABLE shop.other (id BIGINT PRIMARY KEY, v INT NOT NULL);",
    );
    let mut seed = String::new();
    for i in 1..=40 {
        seed.push_str(&format!(
            "INSERT INTO shop.docs VALUES ({i}, 0, 'note {i}'); INSERT INTO shop.other VALUES ({i}, 0);"
        ));
    }
    db.admin(&seed);
    mysql_audit::install(&db, "shop", &[("other", "id")]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/my-resync/checkpoint");
    let cfg = task_file(dir.path(), "my-resync", &mysql_task(&db.url("shop"), &out));
    let cfg_arg = cfg.to_str().unwrap();
    // Each transaction names itself for the audit log.
    let mut tx = 0;
    let mut write = |sql: &str| {
        tx += 1;
        db.admin(&format!("SET @inlet_tx = {tx}; {sql}"));
    };

    let mut child = spawn(&cfg, &log);
    mysql_stream::wait_caught_up(&db, &mut child.0, &checkpoint, 0);
    write("UPDATE shop.other SET v = v + 1 WHERE id <= 10");
    write("SET SESSION binlog_row_image = 'MINIMAL'; UPDATE shop.docs SET v = v + 1 WHERE id <= 5");
    write("UPDATE shop.other SET v = v + 1 WHERE id > 30");
    let code = wait_exit(&mut child, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "the row image stop:\n{text}");
    assert!(
        text.contains("shop.docs: a row image lacks columns (binlog_row_image is not FULL)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("inlet resync -c {cfg_arg} shop.docs")),
        "{text}"
    );
    // The server's setting is FULL (only that session's was not): a start stops again all the
    // same, on the update already in the binlog.
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    assert_eq!(wait_exit(&mut child, &log), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("a row image lacks columns"), "{text}");

    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "docs"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("shop.docs: resync recorded in the task checkpoint"),
        "{stdout}"
    );

    write("UPDATE shop.docs SET v = v + 1 WHERE id > 35");
    write("UPDATE shop.other SET v = v + 1 WHERE id % 7 = 0");
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    for round in 0..5 {
        write(&format!(
            "UPDATE shop.other SET v = v + 1 WHERE id % 5 = {round}"
        ));
        write(&format!(
            "UPDATE shop.docs SET v = v + 1 WHERE id % 5 = {round}"
        ));
        std::thread::sleep(Duration::from_millis(150));
    }
    mysql_stream::wait_caught_up(&db, &mut child.0, &checkpoint, 0);
    write("UPDATE shop.docs SET v = v + 1 WHERE id <= 3");
    write("DELETE FROM shop.other WHERE id = 1");
    mysql_stream::wait_caught_up(&db, &mut child.0, &checkpoint, 0);
    assert_eq!(stop(child, &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("resync: the table is loaded again beside the stream")
            && text.contains("the table's resync is done"),
        "{text}"
    );
    let docs = ["id", "v", "note"];
    assert_eq!(
        replay(&out.join("shop/docs"), &docs),
        maria_rows(&db, "docs", &docs),
        "docs"
    );
    let other = ["id", "v"];
    assert_eq!(
        replay(&out.join("shop/other"), &other),
        maria_rows(&db, "other", &other),
        "other"
    );
    let checked = mysql_audit::assert_exactly_once(&db, &out, "shop", "other", "id");
    assert!(checked > 20, "only {checked} changes of other were checked");
}

/// Waits (60 s at most) until the log says `count` resyncs are done.
fn wait_resyncs_done(log: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches("the table's resync is done").count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {count} resyncs done after 60 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ALTER TABLE … ADD COLUMN … DEFAULT x` fills the existing rows without writing a change
/// (PostgreSQL keeps x in the catalog): by default the table is loaded again beside the stream,
/// both when the column is added while the task streams (the poller sees it) and while it is
/// stopped (the next start sees it against the checkpoint's record), while a workload writes
/// both tables. Each time the target equals the source (docs' rows past 20 never change after
/// the ALTER: only the reload gives them the default), and `other`'s changes are each written
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_column_added_with_a_default_loads_its_table_again() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed(&client).await;
    client
        .batch_execute("ALTER TABLE docs REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let cfg = task_file(dir.path(), "resync", &task(&pg.url("postgres"), &out));
    let docs = |extra: &'static [&'static str]| {
        let mut c = vec!["id", "v", "body"];
        c.extend_from_slice(extra);
        c
    };

    // While the task streams.
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    client
        .batch_execute("ALTER TABLE docs ADD COLUMN extra int NOT NULL DEFAULT 7")
        .await
        .unwrap();
    wait_resyncs_done(&log, 1);
    // Writes after the reload too (it can take only milliseconds).
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    let columns = docs(&["extra"]);
    assert_eq!(
        replay(&out.join("public/docs"), &columns),
        source_rows(&client, "docs", &columns).await,
        "docs after a column added while streaming"
    );

    // While the task is stopped.
    assert_eq!(stop(child, &log), 0);
    client
        .batch_execute(
            "ALTER TABLE docs ADD COLUMN label text DEFAULT 'plain';
             UPDATE docs SET v = v + 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    let mut child = spawn(&cfg, &log);
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    wait_resyncs_done(&log, 2);
    // Writes after the reload too (it can take only milliseconds).
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let columns = docs(&["extra", "label"]);
    assert_eq!(
        replay(&out.join("public/docs"), &columns),
        source_rows(&client, "docs", &columns).await,
        "docs after a column added while the task was stopped"
    );
    let other = ["id", "v"];
    assert_eq!(
        replay(&out.join("public/other"), &other),
        source_rows(&client, "other", &other).await,
        "other"
    );
    let checked = audit::assert_exactly_once(&client, &out, "other", "id").await;
    assert!(checked > 20, "only {checked} changes of other were checked");
    // A column added without a DEFAULT reads NULL in every older row: nothing is loaded again.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("the table's resync is done").count(),
        2,
        "{text}"
    );
}

/// Updates `other` and docs' first 20 rows every 30 ms until the flag is set; the rounds.
fn workload(app: tokio_postgres::Client) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let writer = tokio::spawn(async move {
        let mut round = 0;
        while !flag.load(Ordering::SeqCst) {
            round += 1;
            app.batch_execute(&format!(
                "UPDATE other SET v = v + 1 WHERE id % 10 = {r};
                 UPDATE docs SET v = v + 1 WHERE id % 10 = {r} AND id <= 20;",
                r = round % 10
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        round
    });
    (stop, writer)
}

/// Seeds docs and other as [`seed`] does, docs with REPLICA IDENTITY FULL (the workload's
/// updates leave its TOASTed text unchanged) and a `price numeric(10,2)` column holding cents.
async fn seed_priced(client: &tokio_postgres::Client) {
    seed(client).await;
    client
        .batch_execute(
            "ALTER TABLE docs REPLICA IDENTITY FULL;
             ALTER TABLE docs ADD COLUMN price numeric(10,2);
             UPDATE docs SET price = id * 1.37;",
        )
        .await
        .unwrap();
}

/// Waits (15 s at most) until the running task's poller, which looks at the catalog every
/// 10 s, has begun a look after now (the last statement of each look reads the slot's retained
/// WAL; its start is in pg_stat_activity).
async fn wait_next_poll(client: &tokio_postgres::Client) {
    let now: String = client
        .query_one("SELECT clock_timestamp()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let looked: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND query LIKE '%wal_status FROM pg_replication_slots%' \
                 AND query_start > $1::text::timestamptz",
                &[&now],
            )
            .await
            .unwrap()
            .get(0);
        if looked > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the task's poller did not look within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The target's docs (with `columns`) and other equal the source, and other's changes are
/// each written exactly once.
async fn assert_docs_and_other(client: &tokio_postgres::Client, out: &Path, columns: &[&str]) {
    assert_eq!(
        replay(&out.join("public/docs"), columns),
        source_rows(client, "docs", columns).await,
        "docs"
    );
    let other = ["id", "v"];
    assert_eq!(
        replay(&out.join("public/other"), &other),
        source_rows(client, "other", &other).await,
        "other"
    );
    let checked = audit::assert_exactly_once(client, out, "other", "id").await;
    assert!(checked > 20, "only {checked} changes of other were checked");
}

/// `ALTER TABLE … ALTER COLUMN … TYPE` that rounds (`numeric(10,2)` to `numeric(10,1)`, then
/// to `numeric(10,0)`) rewrites the table without writing a change: by default the table is
/// loaded again beside the stream, both when the type changes while the task streams (the
/// poller sees a new relfilenode and a new typmod) and while it is stopped (the next start
/// compares with the checkpoint's record), under a workload on both tables. docs' rows past 20
/// are never changed after the ALTER: only the reload gives them their rounded prices. A
/// `VACUUM FULL` (a new relfilenode, the same values) loads nothing. A partitioned table's
/// partitions are captured as tables of their own: the ALTER of their parent rewrites each,
/// and each is loaded again.
#[tokio::test(flavor = "multi_thread")]
async fn a_type_change_that_rewrites_loads_its_table_again() {
    type_change_that_rewrites(false).await;
}

/// The same into Iceberg tables, read by pyiceberg, DuckDB and polars. An Iceberg decimal
/// cannot change its scale, so the ALTER's first change stops the stream before the poller
/// looks: the task starts again at once, finds the rewrite and loads the table again.
#[tokio::test(flavor = "multi_thread")]
async fn an_iceberg_table_whose_type_change_rewrites_is_loaded_again() {
    type_change_that_rewrites(true).await;
}

/// The target's `table` (with `columns`, the first its key) equals the source's: replayed
/// from the Parquet files, or read from the Iceberg table by pyiceberg, DuckDB and polars.
async fn assert_table(
    client: &tokio_postgres::Client,
    out: &Path,
    iceberg: bool,
    table: &str,
    columns: &[&str],
) {
    let want = source_rows(client, table, columns).await;
    let dir = out.join("public").join(table);
    if iceberg {
        let mut want: common::iceberg::Rows = want.into_values().collect();
        want.sort();
        common::iceberg::assert_iceberg_equals(&dir, table, &want);
    } else {
        assert_eq!(replay(&dir, columns), want, "{table}");
    }
}

async fn type_change_that_rewrites(iceberg: bool) {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed_priced(&client).await;
    client
        .batch_execute(
            "CREATE TABLE ev (id bigint PRIMARY KEY, v int NOT NULL, price numeric(10,2))
               PARTITION BY RANGE (id);
             CREATE TABLE ev_low PARTITION OF ev FOR VALUES FROM (0) TO (100);
             CREATE TABLE ev_high PARTITION OF ev FOR VALUES FROM (100) TO (200);
             INSERT INTO ev SELECT g, 0, g * 1.37 FROM generate_series(1, 199) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let mut body = task(&pg.url("postgres"), &out);
    if iceberg {
        body = body.replace(
            &format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
            &format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display()),
        );
        assert!(body.contains("iceberg"));
    }
    let cfg = task_file(dir.path(), "resync", &body);
    let columns = ["id", "v", "body", "price"];

    // While the task streams: VACUUM FULL, looked at by the poller alone, then the type change.
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    if !iceberg {
        // (Into Parquet only: the poller's look takes up to 10 s.)
        client.batch_execute("VACUUM FULL docs").await.unwrap();
        wait_next_poll(&client).await;
        // The poller warns before that statement; the log gets it within milliseconds.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("rewritten"), "VACUUM FULL reloads:\n{text}");
    }
    client
        .batch_execute("ALTER TABLE docs ALTER COLUMN price TYPE numeric(10,1)")
        .await
        .unwrap();
    wait_resyncs_done(&log, 1);
    // Writes after the reload too (it can take only milliseconds).
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_table(&client, &out, iceberg, "docs", &columns).await;

    // While the task is stopped.
    assert_eq!(stop(child, &log), 0);
    client
        .batch_execute(
            "ALTER TABLE docs ALTER COLUMN price TYPE numeric(10,0);
             ALTER TABLE ev ALTER COLUMN price TYPE numeric(10,0);
             UPDATE docs SET v = v + 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    let mut child = spawn(&cfg, &log);
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    // docs, then docs and each partition of ev.
    wait_resyncs_done(&log, 4);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    if iceberg {
        assert_table(&client, &out, true, "docs", &columns).await;
        assert_table(&client, &out, true, "other", &["id", "v"]).await;
    } else {
        assert_docs_and_other(&client, &out, &columns).await;
    }
    for partition in ["ev_low", "ev_high"] {
        assert_table(&client, &out, iceberg, partition, &["id", "v", "price"]).await;
    }
    // Four reloads, none for the VACUUM FULL, each said with its table and cause.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("the table's resync is done").count(),
        4,
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("public.ev_high")
            && l.contains("column price changed type to numeric(10,0)")),
        "{text}"
    );
    for typmod in ["numeric(10,1)", "numeric(10,0)"] {
        assert!(
            text.lines().any(|l| l.contains("public.docs")
                && l.contains("rewritten with new values")
                && l.contains(&format!("column price changed type to {typmod}"))),
            "{text}"
        );
    }
}

/// `ALTER TABLE … ADD COLUMN … DEFAULT <computed per row>` (random(), serial) rewrites the
/// table, each older row with its own value, without writing a change: the table is loaded
/// again, whether the column is added while the task streams or while it is stopped. A
/// `VACUUM FULL` and a `CLUSTER` while it is stopped load nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_column_added_with_a_per_row_default_loads_its_table_again() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed_priced(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let cfg = task_file(dir.path(), "resync", &task(&pg.url("postgres"), &out));
    let done = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap()
            .matches("the table's resync is done")
            .count()
    };

    // While the task streams.
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    client
        .batch_execute(
            "ALTER TABLE docs ADD COLUMN r int NOT NULL DEFAULT (random() * 1000000)::int",
        )
        .await
        .unwrap();
    wait_resyncs_done(&log, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    let columns = ["id", "v", "body", "price", "r"];
    assert_eq!(
        replay(&out.join("public/docs"), &columns),
        source_rows(&client, "docs", &columns).await,
        "docs after a column added while streaming"
    );

    // VACUUM FULL and CLUSTER while stopped: new files, the same values, nothing loaded.
    assert_eq!(stop(child, &log), 0);
    // (One statement each: a multi-statement string is one transaction, which VACUUM refuses.)
    client.batch_execute("VACUUM FULL docs").await.unwrap();
    client
        .batch_execute("CLUSTER docs USING docs_pkey")
        .await
        .unwrap();
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(done(&log), 1, "{}", std::fs::read_to_string(&log).unwrap());

    // Columns added while the task is stopped.
    assert_eq!(stop(child, &log), 0);
    client
        .batch_execute(
            "ALTER TABLE docs ADD COLUMN r2 int DEFAULT (random() * 1000000)::int;
             ALTER TABLE docs ADD COLUMN seq serial;
             UPDATE docs SET v = v + 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    let mut child = spawn(&cfg, &log);
    let (stop_writes, writer) = workload(pg.client("postgres").await);
    wait_resyncs_done(&log, 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_writes.store(true, Ordering::SeqCst);
    assert!(writer.await.unwrap() > 5);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    assert_docs_and_other(
        &client,
        &out,
        &["id", "v", "body", "price", "r", "r2", "seq"],
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(done(&log), 2, "{text}");
    for column in ["r", "r2"] {
        assert!(
            text.lines().any(|l| l.contains("public.docs")
                && l.contains("rewritten with new values")
                && l.contains(&format!("column {column} was added"))),
            "{text}"
        );
    }
}

/// A table rewritten with new values while the first full load runs, before the load reads it:
/// the load reads it through the slot's snapshot, which sees the rows before the rewrite (a
/// rewritten table even reads empty to it: table rewrites are not MVCC-safe), and the stream
/// carries no change for them. The first checkpoint records the tables as the snapshot saw
/// them, so the start that follows finds the rewrite and loads the table again. One load
/// worker reads the larger table first; `priced` is rewritten while that table's COPY runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_rewritten_during_the_first_load_is_loaded_again() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    seed_big_and_priced(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let body =
        task(&pg.url("postgres"), &out).replace("[cdc]\n", "[full_load]\nworkers = 1\n[cdc]\n");
    let cfg = task_file(dir.path(), "resync", &body);

    let mut child = spawn(&cfg, &log);
    wait_copy_of_big(&client, &log).await;
    client
        .batch_execute("ALTER TABLE priced ALTER COLUMN price TYPE numeric(10,1)")
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("table=public.priced"),
        "priced was loaded before the ALTER: the test proves nothing\n{text}"
    );

    wait_resyncs_done(&log, 1);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let columns = ["id", "price"];
    assert_eq!(
        replay(&out.join("public/priced"), &columns),
        source_rows(&client, "priced", &columns).await,
        "priced, rewritten during the first load"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("public.priced")
            && l.contains("rewritten with new values")
            && l.contains("column price changed type to numeric(10,1)")),
        "{text}"
    );
}

/// The tables whose reload the checkpoint at `path` records as pending.
fn resyncs_recorded(path: &std::path::Path) -> Vec<String> {
    let cp = common::read_checkpoint(path).expect("a checkpoint");
    cp.tables
        .iter()
        .filter(|(_, t)| t.resync_at.is_some())
        .map(|(name, _)| name.clone())
        .collect()
}

/// Creates `big` (300,000 rows: its COPY takes long enough to change another table meanwhile)
/// and `priced` (100 rows, `price numeric(10,2)`), both vacuumed so the load sizes them.
async fn seed_big_and_priced(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, body text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 300000) g;
             CREATE TABLE priced (id bigint PRIMARY KEY, price numeric(10,2));
             INSERT INTO priced SELECT g, g * 1.37 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    // (One statement each: a multi-statement string is one transaction, which VACUUM refuses.)
    for table in ["big", "priced"] {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .unwrap();
    }
}

/// Waits (30 s at most) until a COPY of `big` runs.
async fn wait_copy_of_big(client: &tokio_postgres::Client, log: &Path) {
    wait_running(client, log, "state = 'active' AND query LIKE 'COPY%big%'").await;
}

/// Waits (30 s at most) until a session matching `filter` (on pg_stat_activity) runs.
async fn wait_running(client: &tokio_postgres::Client, log: &Path, filter: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = format!("SELECT count(*) FROM pg_stat_activity WHERE {filter}");
    loop {
        let running: i64 = client.query_one(&query, &[]).await.unwrap().get(0);
        if running > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no session with {filter} within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A task that ran once and stopped, its folder kept while this lives.
struct Ran {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
    checkpoint: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

/// Creates `other` (100 rows), runs the task (one load worker) until it has caught up, and
/// stops it: tables created after join at its next start.
async fn run_with_other(pg: &PgServer, client: &tokio_postgres::Client) -> Ran {
    client
        .batch_execute(
            "CREATE TABLE other (id bigint PRIMARY KEY, v int NOT NULL);
             INSERT INTO other SELECT g, 0 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/resync/checkpoint");
    let body =
        task(&pg.url("postgres"), &out).replace("[cdc]\n", "[full_load]\nworkers = 1\n[cdc]\n");
    let cfg = task_file(dir.path(), "resync", &body);
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    Ran {
        _dir: dir,
        out,
        log,
        checkpoint,
        cfg,
    }
}

/// The target's `other` equals the source's.
async fn assert_other(client: &tokio_postgres::Client, out: &Path) {
    let other = ["id", "v"];
    assert_eq!(
        replay(&out.join("public/other"), &other),
        source_rows(client, "other", &other).await,
        "other"
    );
}

/// Tables loaded beside the stream in a snapshot of their own (tables that join the running
/// task, then tables resynced), changed without a change in the stream while that load runs,
/// before the load reads them: a rewrite (`ALTER COLUMN … TYPE`, leaving the load an empty
/// table: a rewritten table reads empty to an older snapshot), then a column added with a
/// catalog-only DEFAULT. The tables are recorded as the load's snapshot sees them, so the look
/// after the load finds the change and loads the table again. One load worker reads the larger table (`big`) first; `priced`
/// is changed while big's COPY runs. The target ends equal to the source, value for value.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_changed_during_its_load_beside_the_stream_is_loaded_again() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    let run = run_with_other(&pg, &client).await;
    let Ran {
        out,
        log,
        checkpoint,
        cfg,
        ..
    } = &run;
    let cfg_arg = cfg.to_str().unwrap();

    // Two tables join at the next start: big, loaded first, and priced.
    seed_big_and_priced(&client).await;
    std::fs::write(log, "").unwrap();
    let mut child = spawn(cfg, log);
    wait_copy_of_big(&client, log).await;
    client
        .batch_execute(
            "ALTER TABLE priced ALTER COLUMN price TYPE numeric(10,1), \
                                ADD COLUMN seven int DEFAULT 7;
             UPDATE other SET v = v + 1 WHERE id <= 10;",
        )
        .await
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("table loaded table=public.priced"),
        "priced was loaded before the ALTER: the test proves nothing\n{text}"
    );
    wait_resyncs_done(log, 1);
    pg_stream::wait_caught_up(&client, &mut child.0, checkpoint, SLOT).await;
    assert_eq!(stop(child, log), 0);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("public.priced")
            && l.contains("rewritten with new values")
            && l.contains("column price changed type to numeric(10,1)")),
        "{text}"
    );
    let columns = ["id", "price", "seven"];
    assert_eq!(
        replay(&out.join("public/priced"), &columns),
        source_rows(&client, "priced", &columns).await,
        "priced, rewritten during its load as a joining table"
    );

    // Both resynced while stopped: at the next start they load beside the stream, big first;
    // priced gets a column with a catalog-only default meanwhile.
    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "big", "priced"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(log, "").unwrap();
    let mut child = spawn(cfg, log);
    wait_copy_of_big(&client, log).await;
    client
        .batch_execute(
            "ALTER TABLE priced ADD COLUMN eight int DEFAULT 8;
             UPDATE other SET v = v + 1 WHERE id > 90;",
        )
        .await
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("table loaded table=public.priced"),
        "priced was loaded before the ALTER: the test proves nothing\n{text}"
    );
    // big's resync, then priced's (its reload for the new column supersedes the first).
    wait_resyncs_done(log, 2);
    pg_stream::wait_caught_up(&client, &mut child.0, checkpoint, SLOT).await;
    assert_eq!(stop(child, log), 0);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("public.priced")
            && l.contains("a column was added with a DEFAULT")),
        "{text}"
    );
    let columns = ["id", "price", "seven", "eight"];
    assert_eq!(
        replay(&out.join("public/priced"), &columns),
        source_rows(&client, "priced", &columns).await,
        "priced, given a column with a catalog-only default during its resync"
    );
    assert_other(&client, out).await;
    let big: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replay(&out.join("public/big"), &["id"]).len() as i64, big);
}

/// A table rewritten after the start that joins it has read the catalog but before its load
/// beside the stream takes its snapshot: the load reads the rewritten rows, so the target is
/// exact and nothing is loaded again. (The join records the table as its load's snapshot sees
/// it; recorded as the start read it, before the rewrite, the next look took the rewrite for
/// one the load missed and loaded the table a second time.) The slot that exports the load's
/// snapshot waits for the transactions running when it is created: one left open holds it
/// there while `priced` is rewritten.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_rewritten_before_its_load_beside_the_stream_is_loaded_once() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    let run = run_with_other(&pg, &client).await;
    let Ran {
        out,
        log,
        checkpoint,
        cfg,
        ..
    } = &run;

    client
        .batch_execute(
            "CREATE TABLE priced (id bigint PRIMARY KEY, price numeric(10,2));
             INSERT INTO priced SELECT g, g * 1.37 FROM generate_series(1, 100) g;",
        )
        .await
        .unwrap();
    let open = pg.client("postgres").await;
    open.batch_execute("BEGIN; UPDATE other SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    std::fs::write(log, "").unwrap();
    let mut child = spawn(cfg, log);
    wait_running(
        &client,
        log,
        "backend_type = 'walsender' AND query LIKE 'CREATE_REPLICATION_SLOT%inlet_join%'",
    )
    .await;
    client
        .batch_execute("ALTER TABLE priced ALTER COLUMN price TYPE numeric(10,1)")
        .await
        .unwrap();
    open.batch_execute("COMMIT").await.unwrap();

    pg_stream::wait_caught_up(&client, &mut child.0, checkpoint, SLOT).await;
    client
        .batch_execute("UPDATE other SET v = v + 1 WHERE id <= 10")
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, checkpoint, SLOT).await;
    assert_eq!(stop(child, log), 0);
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(
        text.matches("table loaded table=public.priced").count(),
        1,
        "priced was loaded more than once:\n{text}"
    );
    let columns = ["id", "price"];
    assert_eq!(
        replay(&out.join("public/priced"), &columns),
        source_rows(&client, "priced", &columns).await,
        "priced"
    );
    assert_other(&client, out).await;
}
