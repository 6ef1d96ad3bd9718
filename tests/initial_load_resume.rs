//! The initial load of a `full-load-and-cdc` task that resumes after a crash, against a real
//! PostgreSQL and MariaDB: `inlet run` is SIGKILLed twice while it loads a table that a workload
//! keeps writing to everywhere (updates, inserts, deletes, key changes), and the restarts keep
//! the chunks the killed runs completed instead of loading the table from its start. The full
//! load plus the change files, replayed, must equal the source with no change applied twice or
//! lost (every update increments `version`, so an update replayed over a chunk that already
//! holds it fails the replay).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{spawn_logged, Inlet};
use common::replay::{replay, source_rows};
use common::resume::{done_chunks, wait_for_done_chunks};
use common::{mysql_rows, mysql_stream, pg_stream, sigterm, task_file, PgServer};
use inlet_testkit::MariaDbServer;

const COLUMNS: &[&str] = &["id", "version", "label"];

/// The table's rows: 600,000 (about 30 chunks of 1 MB), or `INLET_SOAK_RESUME_ROWS` (`make soak`:
/// a multi-million-row table).
fn rows() -> u64 {
    std::env::var("INLET_SOAK_RESUME_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000)
}

/// The PostgreSQL table: odd keys `1..2 * rows()`, in key order, analyzed (so it is read in key
/// ranges), and the sequence key changes take new keys from.
fn pg_setup() -> String {
    pg_setup_of(rows())
}

/// [`pg_setup`] with `rows` rows (the workload still writes keys up to `2 * rows()`).
fn pg_setup_of(rows: u64) -> String {
    format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, version int NOT NULL, label text);
         INSERT INTO big SELECT 2 * g - 1, 0, 'row ' || g FROM generate_series(1, {rows}) g;
         ANALYZE big;
         CREATE SEQUENCE moved START {};",
        4 * rows.max(self::rows())
    )
}

/// The task file; `target`: its `[target]` section's lines.
fn task(kind: &str, url: &str, target: &str, table: &str) -> String {
    format!(
        r#"
[task]
name = "resume-cdc"
mode = "full-load-and-cdc"
[source]
kind = "{kind}"
url = "{url}"
tls = "disable"
[target]
{target}
[tables]
include = ["{table}"]
[full_load]
workers = 2
chunk_mb = 1
batch_rows = 5000
[cdc]
flush_interval_ms = 200
"#
    )
}

fn parquet(out: &Path) -> String {
    format!("kind = \"parquet\"\nurl = \"{}\"", out.display())
}

/// Until `stop`: small transactions all over the key range, each update incrementing `version`.
/// Odd keys were loaded; inserts take even ones, key changes move a row to a new key past all
/// of them (sequence `moved`).
async fn write_everywhere(client: tokio_postgres::Client, stop: Arc<AtomicBool>) -> u64 {
    let mut n = 0;
    let (span, half) = (2 * rows(), rows());
    while !stop.load(Ordering::Relaxed) {
        client
            .batch_execute(&format!(
                "UPDATE big SET version = version + 1, label = 'updated' WHERE id = \
                   (SELECT min(id) FROM big WHERE id >= (random() * {span})::bigint);
                 INSERT INTO big SELECT x, 0, 'inserted' FROM \
                   (SELECT 2 * (1 + (random() * {half})::bigint) AS x) s ON CONFLICT DO NOTHING;
                 DELETE FROM big WHERE id = \
                   (SELECT min(id) FROM big WHERE id >= (random() * {span})::bigint);
                 UPDATE big SET id = nextval('moved'), version = version + 1 WHERE id = \
                   (SELECT min(id) FROM big WHERE id >= (random() * {span})::bigint \
                    AND id < {span});",
            ))
            .await
            .unwrap();
        n += 1;
    }
    n
}

/// Waits until the load record holds `chunks` completed chunks, then SIGKILLs the run.
fn kill_at(mut run: Inlet, record: &Path, chunks: usize, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "the run ended before it was killed:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "{chunks} chunks were not recorded in 90 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        let text = std::fs::read_to_string(record).unwrap_or_default();
        if text.lines().filter(|l| l.starts_with("done ")).count() >= chunks {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    run.0.kill().unwrap();
    run.0.wait().unwrap();
}

/// A number the log line `line` gives `field` (`field=N`).
fn logged(line: &str, field: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

/// One source's case: the task file, the table's folder, and how to wait until the task holds
/// everything committed.
struct Case<'a> {
    dir: &'a Path,
    cfg: &'a Path,
    /// The sink's record of the table's load.
    record: PathBuf,
}

/// SIGKILLs the task's first run after 8 recorded chunks and the second after 16 (the workload
/// writing all along, also between a crash and its restart), lets the third finish the load and
/// SIGKILLs it as soon as its first checkpoint is written, lets a fourth stream for 2 s, then
/// stops the workload (`stop`) and returns the fourth run, still running, with the third's
/// "resumed" line. Asserts each restart kept the chunks recorded before it and read again at
/// most one chunk per worker.
async fn kill_twice_and_finish(case: &Case<'_>, stop: &AtomicBool) -> (Inlet, String) {
    let record = &case.record;
    let logs: Vec<_> = (0..3)
        .map(|i| case.dir.join(format!("run{i}.log")))
        .collect();
    kill_at(spawn_logged(case.cfg, &logs[0]), record, 8, &logs[0]);
    let after_first = std::fs::read_to_string(record).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill_at(spawn_logged(case.cfg, &logs[1]), record, 16, &logs[1]);
    let after_second = std::fs::read_to_string(record).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = spawn_logged(case.cfg, &logs[2]);
    let checkpoint = case.dir.join("out/_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut last, &checkpoint, &logs[2], 120 + rows() / 20_000).await;
    // The first checkpoint carries the key ranges read after the stream's start; a crash right
    // after it, before the stream passed their snapshots, leaves them to the next run.
    let first = common::read_checkpoint(&checkpoint).unwrap();
    let ranges: usize = first.tables.values().map(|t| t.keys_loaded_at.len()).sum();
    assert!(ranges > 0, "no key range loaded after the start: {first:?}");
    last.0.kill().unwrap();
    last.0.wait().unwrap();
    let last = spawn_logged(case.cfg, &case.dir.join("run3.log"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let done = |text: &str| text.lines().filter(|l| l.starts_with("done ")).count();
    let second_log = std::fs::read_to_string(&logs[1]).unwrap();
    assert!(
        second_log.contains(&format!("kept_chunks={}", done(&after_first))),
        "the first restart did not keep the {} chunks recorded:\n{second_log}",
        done(&after_first)
    );
    let log = std::fs::read_to_string(&logs[2]).unwrap();
    assert!(
        log.contains(&format!("kept_chunks={}", done(&after_second))),
        "the second restart did not keep the {} chunks recorded:\n{log}",
        done(&after_second)
    );
    // Read again: at most the chunks in flight at the last kill, one per worker.
    let resumed = log
        .lines()
        .find(|l| l.contains("resumed full load complete"))
        .unwrap_or_else(|| panic!("no resumed load:\n{log}"))
        .to_string();
    assert!(logged(&resumed, "reread_chunks") <= 2, "{resumed}");
    assert!(!record.exists(), "the load record outlived the load");
    (last, resumed)
}

/// A PostgreSQL server holding the table ([`pg_setup`]), a client, and a folder whose task file
/// (`resume-cdc.toml`) loads it into `target` (its `[target]` lines, given the output folder
/// `out` inside the folder), with `full_load` lines added.
struct PgCase {
    pg: PgServer,
    client: tokio_postgres::Client,
    dir: tempfile::TempDir,
    out: PathBuf,
    cfg: PathBuf,
}

impl PgCase {
    async fn start(target: impl Fn(&Path) -> String, full_load: &str) -> Self {
        Self::start_with(&pg_setup(), target, full_load).await
    }

    /// The same with another `setup`.
    async fn start_with(setup: &str, target: impl Fn(&Path) -> String, full_load: &str) -> Self {
        let pg = PgServer::start();
        let client = pg.client("postgres").await;
        client.batch_execute(setup).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let body = task("postgres", &pg.url("postgres"), &target(&out), "public.big").replace(
            "batch_rows = 5000",
            &format!("batch_rows = 5000\n{full_load}"),
        );
        let cfg = task_file(dir.path(), "resume-cdc", &body);
        Self {
            pg,
            client,
            dir,
            out,
            cfg,
        }
    }

    /// A new client (the first one's connection ends with a server restart).
    async fn client_again(&self) -> tokio_postgres::Client {
        self.pg.client("postgres").await
    }

    /// The workload on its own connection until `stop` ([`write_everywhere`]).
    async fn write(&self, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
        tokio::spawn(write_everywhere(
            self.pg.client("postgres").await,
            stop.clone(),
        ))
    }
}

/// Waits until `run` wrote the task's first checkpoint (its initial load is done), failing with
/// its log (`log`) if it ends first or `seconds` pass.
async fn wait_for_checkpoint(run: &mut Inlet, checkpoint: &Path, log: &Path, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !checkpoint.exists() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "the run ended:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {seconds} s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the table's folder (LOAD files plus change files) replays to `big` at the source, no
/// change twice or lost; returns the source's rows.
async fn assert_replays_to_source(
    client: &tokio_postgres::Client,
    table_dir: &Path,
) -> common::replay::Rows {
    let want = source_rows(client, "big", COLUMNS).await;
    let got = replay(table_dir, COLUMNS);
    assert_eq!(got.len(), want.len(), "row count");
    assert!(got == want, "replayed rows differ from the source");
    want
}

/// Stops the last run and checks its exit.
fn stop(mut last: Inlet, dir: &Path) {
    sigterm(&last.0);
    let status = last.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("run3.log")).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_initial_load_resumes_beside_the_stream() {
    let c = PgCase::start(parquet, "").await;
    let (client, dir, out) = (&c.client, &c.dir, &c.out);
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = c.write(&stop_writing).await;
    let table_dir = out.join("public/big");
    let case = Case {
        dir: dir.path(),
        cfg: &c.cfg,
        record: table_dir.join("_inlet_load/PROGRESS"),
    };
    let (mut last, resumed) = kill_twice_and_finish(&case, &stop_writing).await;
    let transactions = writer.await.unwrap();
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    pg_stream::wait_caught_up(client, &mut last.0, &checkpoint, "inlet_resume_cdc").await;
    stop(last, dir.path());

    // The full load plus the change files equal the source, no change twice or lost.
    assert_replays_to_source(client, &table_dir).await;
    eprintln!("{transactions} writing transactions; {resumed}");
}

/// The same into Iceberg (its load record is in the warehouse; nothing is committed until the
/// table is complete), read by pyiceberg, DuckDB and polars.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_initial_load_resumes_into_iceberg() {
    let iceberg = |out: &Path| format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display());
    let c = PgCase::start(iceberg, "").await;
    let (client, dir, out) = (&c.client, &c.dir, &c.out);
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = c.write(&stop_writing).await;
    let case = Case {
        dir: dir.path(),
        cfg: &c.cfg,
        record: out.join("_inlet/resume-cdc/load/public.big"),
    };
    let (mut last, resumed) = kill_twice_and_finish(&case, &stop_writing).await;
    let transactions = writer.await.unwrap();
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    pg_stream::wait_caught_up(client, &mut last.0, &checkpoint, "inlet_resume_cdc").await;
    stop(last, dir.path());

    let mut want: Vec<Vec<Option<String>>> = source_rows(client, "big", COLUMNS)
        .await
        .into_values()
        .collect();
    want.sort();
    common::iceberg::assert_iceberg_equals(&out.join("public/big"), "big", &want);
    eprintln!("{transactions} writing transactions; {resumed}");
}

/// The same on MariaDB, whose stream starts at the binlog position the first run recorded
/// before it loaded (`<task>.load-start`), kept until the task checkpoint is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_mariadb_initial_load_resumes_beside_the_stream() {
    mariadb_killed_twice(false).await;
}

/// The same on MariaDB into Iceberg, read by pyiceberg, DuckDB and polars.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_mariadb_initial_load_resumes_into_iceberg() {
    mariadb_killed_twice(true).await;
}

async fn mariadb_killed_twice(iceberg: bool) {
    let db = Arc::new(MariaDbServer::start());
    db.admin(&format!(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, version int NOT NULL, label text);
         INSERT INTO shop.big SELECT 2 * seq - 1, 0, CONCAT('row ', seq) FROM seq_1_to_{};
         ANALYZE TABLE shop.big;
         CREATE SEQUENCE shop.moved START WITH {};",
        rows(),
        4 * rows()
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let target = if iceberg {
        format!("kind = \"iceberg\"\nwarehouse = \"{}\"", out.display())
    } else {
        parquet(&out)
    };
    let cfg = task_file(
        dir.path(),
        "resume-cdc",
        &task("mysql", &db.url("shop"), &target, "shop.big"),
    );
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop_writing.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let (span, half) = (2 * rows(), rows());
            while !stop.load(Ordering::Relaxed) {
                db.admin(&format!(
                    "SET @r = FLOOR(RAND() * {span});
                     SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r;
                     UPDATE shop.big SET version = version + 1, label = 'updated' WHERE id = @x;
                     INSERT IGNORE INTO shop.big VALUES (2 * (1 + FLOOR(RAND() * {half})), 0, 'inserted');
                     SET @r = FLOOR(RAND() * {span});
                     SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r;
                     DELETE FROM shop.big WHERE id = @x;
                     SET @r = FLOOR(RAND() * {span});
                     SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r AND id < {span};
                     UPDATE shop.big SET id = NEXT VALUE FOR shop.moved, version = version + 1 \
                       WHERE id = @x;",
                ));
                n += 1;
            }
            n
        })
    };
    let table_dir = out.join("shop/big");
    let case = Case {
        dir: dir.path(),
        cfg: &cfg,
        record: if iceberg {
            out.join("_inlet/resume-cdc/load/shop.big")
        } else {
            table_dir.join("_inlet_load/PROGRESS")
        },
    };
    let (mut last, resumed) = kill_twice_and_finish(&case, &stop_writing).await;
    let transactions = writer.join().unwrap();
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    mysql_stream::wait_caught_up(&db, &mut last.0, &checkpoint, 0);
    stop(last, dir.path());
    // The start record is retired with the first checkpoint.
    let start = common::read_checkpoint(&out.join("_inlet/resume-cdc.load-start/checkpoint"));
    assert_eq!(start.map(|c| c.position.0), Some(0));

    let want = mysql_rows::source_rows(&db, "shop.big", COLUMNS);
    if iceberg {
        let mut rows: Vec<_> = want.into_values().collect();
        rows.sort();
        common::iceberg::assert_iceberg_equals(&table_dir, "big", &rows);
    } else {
        let got = replay(&table_dir, COLUMNS);
        mysql_rows::assert_rows_equal("shop.big", "a replay", &want, &got);
    }
    eprintln!("{transactions} writing transactions; {resumed}");
}

/// A TRUNCATE between a killed first run and its restart: the chunks kept from the first run
/// hold rows it removed and the restart's chunks rows written after it, so neither applying it
/// nor leaving it out keeps the target exact. The task says so, loads the table again beside
/// the stream, and the target ends equal to the source.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_truncated_between_a_kill_and_the_restart_is_loaded_again() {
    let c = PgCase::start(parquet, "").await;
    let (client, dir, out, cfg) = (&c.client, &c.dir, &c.out, &c.cfg);
    let table_dir = out.join("public/big");
    let log = |i: usize| dir.path().join(format!("run{i}.log"));
    kill_at(
        spawn_logged(cfg, &log(0)),
        &table_dir.join("_inlet_load/PROGRESS"),
        8,
        &log(0),
    );
    // Rows after the TRUNCATE in every key range: in the ranges the first run completed and in
    // those the restart reads.
    client
        .batch_execute(&format!(
            "TRUNCATE big;
             INSERT INTO big SELECT g, 0, 'after the truncate' FROM generate_series(1, {}, 200) g;",
            2 * rows()
        ))
        .await
        .unwrap();
    let mut run = spawn_logged(cfg, &log(1));
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log(1), 120).await;
    client
        .batch_execute("UPDATE big SET version = version + 1 WHERE id % 10 = 0")
        .await
        .unwrap();
    pg_stream::wait_caught_up(client, &mut run.0, &checkpoint, "inlet_resume_cdc").await;
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    let text = std::fs::read_to_string(log(1)).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert_replays_to_source(client, &table_dir).await;
    assert!(
        text.contains("public.big was truncated at")
            && text.contains("the table is loaded again beside the stream")
            && text.contains("loading them beside the stream"),
        "{text}"
    );
}

/// `full_load.snapshot_minutes`: the initial load reads at most that long in one snapshot, then
/// goes on in a new one keeping the chunks done, so the server's oldest snapshot is never older
/// (here 0.12 s, several times during the load of 2M rows, which takes seconds; a renewal due
/// while the workload's transactions are open looks twice, 0.2 s apart), and the table still
/// ends exact.
#[tokio::test(flavor = "multi_thread")]
async fn the_initial_load_renews_its_snapshot_and_stays_exact() {
    let setup = pg_setup_of(rows().max(2_000_000));
    let c = PgCase::start_with(&setup, parquet, "snapshot_minutes = 0.002").await;
    let (client, dir, out, cfg) = (&c.client, &c.dir, &c.out, &c.cfg);
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = c.write(&stop_writing).await;
    let log = dir.path().join("run.log");
    let mut run = spawn_logged(cfg, &log);
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log, 120 + rows() / 20_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writing.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    pg_stream::wait_caught_up(client, &mut run.0, &checkpoint, "inlet_resume_cdc").await;
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let renewals = text.matches("goes on in a new snapshot").count();
    assert!(renewals >= 1, "{renewals} renewals:\n{text}");
    assert_replays_to_source(client, &out.join("public/big")).await;
    eprintln!("{renewals} snapshot renewals");
}

/// A table read in page ranges (never analyzed: its rows' order is unknown) cannot be kept by a
/// new snapshot: the load stays in one, says so, and ends (renewing would read the table again
/// every time, and a long load would never end).
#[tokio::test(flavor = "multi_thread")]
async fn a_load_with_a_page_ranged_table_keeps_one_snapshot() {
    let setup = format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, version int NOT NULL, label text)
           WITH (autovacuum_enabled = false);
         INSERT INTO big SELECT 2 * g - 1, 0, 'row ' || g FROM generate_series(1, {}) g;",
        rows()
    );
    let c = PgCase::start_with(&setup, parquet, "snapshot_minutes = 0.002").await;
    let (client, out, cfg) = (&c.client, &c.out, &c.cfg);
    let log = c.dir.path().join("run.log");
    let mut run = spawn_logged(cfg, &log);
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log, 60 + rows() / 20_000).await;
    client
        .batch_execute("UPDATE big SET version = version + 1 WHERE id % 7 = 0")
        .await
        .unwrap();
    pg_stream::wait_caught_up(client, &mut run.0, &checkpoint, "inlet_resume_cdc").await;
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("stays in one snapshot"), "{text}");
    assert!(!text.contains("goes on in a new snapshot"), "{text}");
    assert_replays_to_source(client, &out.join("public/big")).await;
}

/// A PostgreSQL restart (immediate: a crash and its recovery) in the middle of the initial load,
/// under a workload that reconnects: the task retries, finds its slot kept, and goes on loading
/// in a new snapshot, keeping the chunks done before the crash; the target ends exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_crash_during_the_initial_load_keeps_its_chunks() {
    let c = PgCase::start(parquet, "").await;
    let (client_url, dir, out, cfg) = (c.pg.url("postgres"), &c.dir, &c.out, &c.cfg);
    let stop_writing = Arc::new(AtomicBool::new(false));
    // The workload, reconnecting across the restart (a statement cut by it is retried).
    let writer = {
        let stop = stop_writing.clone();
        let (span, half) = (2 * rows(), rows());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = client.as_ref().filter(|c| !c.is_closed()) else {
                    match tokio_postgres::connect(&client_url, tokio_postgres::NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            client = Some(c);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                    continue;
                };
                let sql = format!(
                    "UPDATE big SET version = version + 1, label = 'updated' WHERE id = \
                       (SELECT min(id) FROM big WHERE id >= (random() * {span})::bigint);
                     INSERT INTO big SELECT x, 0, 'inserted' FROM \
                       (SELECT 2 * (1 + (random() * {half})::bigint) AS x) s ON CONFLICT DO NOTHING;
                     DELETE FROM big WHERE id = \
                       (SELECT min(id) FROM big WHERE id >= (random() * {span})::bigint);"
                );
                if c.batch_execute(&sql).await.is_ok() {
                    n += 1;
                } else {
                    client = None;
                }
            }
            n
        })
    };
    let log = dir.path().join("run.log");
    let table_dir = out.join("public/big");
    let record = table_dir.join("_inlet_load/PROGRESS");
    let mut run = spawn_logged(cfg, &log);
    wait_for_done_chunks(&record, 8, &log, Duration::from_secs(90));
    c.pg.restart("immediate", 30);
    let kept = done_chunks(&record);
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log, 120 + rows() / 20_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writing.store(true, Ordering::Relaxed);
    let transactions = writer.await.unwrap();
    pg_stream::wait_caught_up(
        &c.client_again().await,
        &mut run.0,
        &checkpoint,
        "inlet_resume_cdc",
    )
    .await;
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let resumed = text
        .lines()
        .find(|l| l.contains("resumed full load complete"))
        .unwrap_or_else(|| panic!("no resumed load:\n{text}"));
    assert!(
        logged(resumed, "kept_chunks") >= kept as u64,
        "the {kept} chunks done before the crash were not kept: {resumed}"
    );
    let client = c.client_again().await;
    assert_replays_to_source(&client, &table_dir).await;
    eprintln!("{transactions} writing transactions; {resumed}");
}

/// A MariaDB restart (an administrator's: the binlog goes on in a new file) in the middle of
/// the initial load, under a workload that retries: the task retries, finds its recorded stream
/// start (the same server, its binlog file still there), and goes on loading in a new snapshot,
/// keeping the chunks done before the restart; the target ends exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_restart_during_the_initial_load_keeps_its_chunks() {
    let mut db = MariaDbServer::start();
    db.admin(&format!(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE shop.big (id bigint PRIMARY KEY, version int NOT NULL, label text);
         INSERT INTO shop.big SELECT 2 * seq - 1, 0, CONCAT('row ', seq) FROM seq_1_to_{};
         ANALYZE TABLE shop.big;",
        rows()
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "resume-cdc",
        &task("mysql", &db.url("shop"), &parquet(&out), "shop.big"),
    );
    // The workload through the command-line client, whose statements fail while the server is
    // down (a failed one changed nothing: each is one transaction).
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (socket, stop) = (db.socket(), stop_writing.clone());
        let (span, half) = (2 * rows(), rows());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sql = format!(
                    "SET @r = FLOOR(RAND() * {span});
                     SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r;
                     UPDATE shop.big SET version = version + 1, label = 'updated' WHERE id = @x;
                     INSERT IGNORE INTO shop.big VALUES (2 * (1 + FLOOR(RAND() * {half})), 0, 'inserted');"
                );
                let ok = std::process::Command::new("mariadb")
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", socket.display()))
                    .args(["-uroot", "--batch", "-e", &sql])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    n += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            n
        })
    };
    let log = dir.path().join("run.log");
    let table_dir = out.join("shop/big");
    let record = table_dir.join("_inlet_load/PROGRESS");
    let mut run = spawn_logged(&cfg, &log);
    wait_for_done_chunks(&record, 8, &log, Duration::from_secs(90));
    db.stop_and_start();
    let kept = done_chunks(&record);
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log, 120 + rows() / 20_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writing.store(true, Ordering::Relaxed);
    let transactions = writer.join().unwrap();
    mysql_stream::wait_caught_up(&db, &mut run.0, &checkpoint, 0);
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let resumed = text
        .lines()
        .find(|l| l.contains("resumed full load complete"))
        .unwrap_or_else(|| panic!("no resumed load:\n{text}"));
    assert!(
        logged(resumed, "kept_chunks") >= kept as u64,
        "the {kept} chunks done before the restart were not kept: {resumed}"
    );
    let want = mysql_rows::source_rows(&db, "shop.big", COLUMNS);
    let got = replay(&table_dir, COLUMNS);
    mysql_rows::assert_rows_equal("shop.big", "a replay", &want, &got);
    eprintln!("{transactions} writing transactions; {resumed}");
}

/// A write transaction left open during the load (idle in transaction, an hour-long batch): a
/// new snapshot's slot would wait for it to end, so the load due to renew its snapshot goes on
/// in the one it has (saying why once it has looked twice) and ends while the transaction is
/// still open; once it commits, its row streams like any other. (Renewing anyway stalled the
/// load until the commit: no checkpoint in 90 s, seen.)
#[tokio::test(flavor = "multi_thread")]
async fn a_write_transaction_left_open_does_not_stall_the_renewal() {
    // A renewal due 0.6 s into the load of 3M rows, which takes seconds.
    let setup = "CREATE TABLE big (id bigint PRIMARY KEY, version int NOT NULL, label text);
         INSERT INTO big SELECT 2 * g - 1, 0, 'row ' || g FROM generate_series(1, 3000000) g;
         ANALYZE big;";
    let c = PgCase::start_with(setup, parquet, "snapshot_minutes = 0.01").await;
    let (dir, out, cfg) = (&c.dir, &c.out, &c.cfg);
    let log = dir.path().join("run.log");
    let table_dir = out.join("public/big");
    let mut run = spawn_logged(cfg, &log);
    // Opened once the task's slot exists and its snapshot is exported (the slot's creation
    // would wait for it too, as for any logical slot), well before the renewal is due.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("snapshot exported")) {
        assert!(
            Instant::now() < deadline,
            "no snapshot exported in 90 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let open = c.client_again().await;
    open.batch_execute("BEGIN; INSERT INTO big VALUES (-1, 0, 'held open')")
        .await
        .unwrap();
    let checkpoint = out.join("_inlet/resume-cdc/checkpoint");
    wait_for_checkpoint(&mut run, &checkpoint, &log, 60 + rows() / 20_000).await;
    // (The load may end before its second look names the transaction.)
    let text = std::fs::read_to_string(&log).unwrap();
    let said = text.contains("stays in its snapshot past `full_load.snapshot_minutes` while write transactions have been open");
    open.batch_execute("COMMIT").await.unwrap();
    c.client
        .batch_execute("UPDATE big SET version = version + 1 WHERE id % 11 = 0")
        .await
        .unwrap();
    pg_stream::wait_caught_up(&c.client, &mut run.0, &checkpoint, "inlet_resume_cdc").await;
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let want = assert_replays_to_source(&c.client, &table_dir).await;
    assert!(want.contains_key(&-1), "the held row");
    eprintln!("the load said why it kept its snapshot: {said}");
}
