//! `inlet validate` end to end: a full-load-and-cdc task runs (PostgreSQL into Parquet and into
//! Iceberg, MariaDB into Parquet) while a workload updates one table; validate finds the
//! target equal (exit 0). Then one table's target is corrupted on purpose (one changed value,
//! one missing row, one duplicated row, one extra row) and validate names each by its key with
//! exact counts (exit 1), while the busy table, still updated as validate runs, stays equal.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::daemon::spawn_logged;
use common::{inlet, python, task_file, PgServer};
use inlet_testkit::MariaDbServer;

/// Rewrites the `LOAD` files of a Parquet table folder with pyarrow: `v` of id 7 becomes 999,
/// id 13 is dropped, id 21 is written twice, and a copy of the first row with id 100000 is
/// added.
const CORRUPT_PARQUET: &str = r#"
import glob, os, sys
import pyarrow as pa, pyarrow.parquet as pq
files = sorted(glob.glob(os.path.join(sys.argv[1], "LOAD*.parquet")))
assert files, "no LOAD file"
for n, f in enumerate(files):
    t = pq.read_table(f)
    rows = t.to_pylist()
    out = []
    for r in rows:
        if r["id"] == 13:
            continue
        if r["id"] == 7:
            r["v"] = 999
        out.append(r)
        if r["id"] == 21:
            out.append(dict(r))
    if n == 0:
        extra = dict(rows[0])
        extra["id"] = 100000
        out.append(extra)
    pq.write_table(pa.Table.from_pylist(out, schema=t.schema), f + ".tmp")
    os.replace(f + ".tmp", f)
"#;

/// The same corruption of an Iceberg table (folder catalog), committed by pyiceberg as another
/// engine would (sinks/iceberg/tests/readers/foreign_commit.py's protocol): one overwrite.
const CORRUPT_ICEBERG: &str = r#"
import json, sys, tempfile
sys.path.insert(0, sys.argv[2])
import foreign_commit as fc
import pyarrow as pa

def corrupt(catalog, name, op, args):
    table = catalog.load_table(name)
    rows = table.scan().to_arrow().to_pylist()
    out = []
    for r in rows:
        if r["id"] == 13:
            continue
        if r["id"] == 7:
            r["v"] = 999
        out.append(r)
        if r["id"] == 21:
            out.append(dict(r))
    extra = dict(rows[0])
    extra["id"] = 100000
    out.append(extra)
    table.overwrite(pa.Table.from_pylist(out, schema=table.schema().as_arrow()))
    return len(out)

fc.change = corrupt
with tempfile.TemporaryDirectory() as scratch:
    for _ in range(50):
        done = fc.attempt(sys.argv[1], "corrupt", [], scratch)
        if done is not None:
            print(json.dumps(done))
            break
    else:
        raise SystemExit("could not commit")
"#;

fn run_python(script: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `inlet validate --json` on `cfg`: exit code and the report (stderr on failure).
fn validate(cfg: &Path) -> (i32, serde_json::Value, String) {
    validate_with(cfg, &[])
}

/// [`validate`] with more arguments.
fn validate_with(cfg: &Path, more: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "validate",
        "-c",
        cfg.to_str().unwrap(),
        "--json",
        "--max-lag-seconds",
        "60",
    ];
    args.extend_from_slice(more);
    let (code, stdout, stderr) = inlet(&args);
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (code, report, stderr)
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("no tables in {report}"))
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn keys(t: &serde_json::Value, kind: &str) -> Vec<String> {
    let mut keys: Vec<String> = t[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// (rows compared, missing, extra, different) of a table of the report.
fn counts(t: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("no {k} in {t}"));
    (n("rows_compared"), n("missing"), n("extra"), n("different"))
}

/// The corrupted table's report: each corruption named by its key, exact counts.
fn assert_corruption_found(report: &serde_json::Value, name: &str, rows: u64) {
    let t = table(report, name);
    assert_eq!(counts(t), (rows, 1, 2, 1), "{t}");
    assert_eq!(keys(t, "missing_keys"), ["id=13"], "{t}");
    // The duplicate of id 21 and the added id 100000.
    assert_eq!(keys(t, "extra_keys"), ["id=100000", "id=21"], "{t}");
    assert_eq!(keys(t, "different_keys"), ["id=7"], "{t}");
    assert_eq!(t["key"], serde_json::json!(["id"]), "{t}");
}

fn assert_equal(report: &serde_json::Value, name: &str, rows: u64) {
    let t = table(report, name);
    assert_eq!(counts(t), (rows, 0, 0, 0), "{t}");
}

/// (ranges compared, ranges that differed, rows read from the source) of a table of the report.
fn ranges(t: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("no {k} in {t}"));
    (
        n("ranges_compared"),
        n("ranges_differing"),
        n("rows_read_from_source"),
    )
}

/// `items` holds the types the load converts (timestamptz, uuid and time as text under the
/// portable forms, numeric), and NaN in two numeric columns whose value policy writes it as NULL
/// (`n`) and as text (`m`): no difference, since the source is read as the load reads it.
const PG_SCHEMA: &str = "
CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text, at timestamptz,
                    u uuid, amount numeric(10,2), t time, n numeric(10,2), m numeric(10,2));
INSERT INTO items SELECT g, g, 'n' || g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
                         md5(g::text)::uuid, g * 1.5, '10:00'::time + g * interval '1 second',
                         CASE WHEN g % 100 = 3 THEN 'NaN'::numeric ELSE g END,
                         CASE WHEN g % 100 = 3 THEN 'NaN'::numeric ELSE g END
  FROM generate_series(1, 500) g;
CREATE TABLE busy (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO busy SELECT g, 0 FROM generate_series(1, 2000) g;
";

/// A table without a key, holding two equal rows.
const BAG_SCHEMA: &str = "CREATE TABLE bag (a int, b text); ALTER TABLE bag REPLICA IDENTITY FULL;
     INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (2, 'y');";

/// Drops the first row with `a = 1` from the `LOAD` file of a Parquet table folder.
const DROP_ONE_BAG_ROW: &str = r#"
import glob, os, sys
import pyarrow as pa, pyarrow.parquet as pq
[f] = glob.glob(os.path.join(sys.argv[1], "LOAD*.parquet"))
t = pq.read_table(f)
rows = t.to_pylist()
rows.remove(next(r for r in rows if r["a"] == 1))
pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), f + ".tmp")
os.replace(f + ".tmp", f)
"#;

fn pg_task(name: &str, url: &str, target: &str) -> String {
    format!(
        r#"
[task]
name = "{name}"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
{target}
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = 200
"#
    )
}

/// The value policy of `items`' NaN columns.
const ITEMS_VALUES: &str = r#"
[values.columns]
"public.items.n" = "null"
"public.items.m" = "text"
"#;

/// Updates random rows of `busy` in small transactions until `stop`.
fn pg_busy_workload(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let id = (n * 7919) % 2000 + 1;
            client
                .execute(
                    "UPDATE busy SET v = v + 1 WHERE id = $1 OR id = $2",
                    &[&(id as i64), &(((id * 13) % 2000 + 1) as i64)],
                )
                .await
                .unwrap();
            // Deletes and inserts, and once a truncate, each refilled in its transaction:
            // the table keeps its 2000 rows, and the target's replay meets every operation.
            if n % 10 == 5 {
                client
                    .batch_execute(&format!(
                        "BEGIN; DELETE FROM busy WHERE id = {id}; \
                         INSERT INTO busy VALUES ({id}, 0); COMMIT"
                    ))
                    .await
                    .unwrap();
            }
            if n == 50 {
                client
                    .batch_execute(
                        "BEGIN; TRUNCATE busy; \
                         INSERT INTO busy SELECT g, 1 FROM generate_series(1, 2000) g; COMMIT",
                    )
                    .await
                    .unwrap();
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    })
}

/// Runs a PostgreSQL task into `target`, validates it equal under the workload, corrupts
/// `items` with `corrupt`, and validates again.
async fn pg_round_trip(name: &str, target: &str, keyless: bool, corrupt: impl FnOnce()) {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(PG_SCHEMA).await.unwrap();
    if keyless {
        client.batch_execute(BAG_SCHEMA).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{ITEMS_VALUES}",
        pg_task(name, &pg.url("postgres"), target)
    );
    let cfg = task_file(dir.path(), name, &text);
    let log = dir.path().join("inlet.log");
    let _inlet = spawn_logged(&cfg, &log);
    let stop = Arc::new(AtomicBool::new(false));
    let workload = pg_busy_workload(pg.url("postgres"), stop.clone());

    let cfg2 = cfg.clone();
    let (code, report, stderr) = tokio::task::spawn_blocking(move || validate(&cfg2))
        .await
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "{report}\n{stderr}\n{}", log_text());
    assert_eq!(report["equal"], true, "{report}");
    assert_equal(&report, "public.items", 500);
    assert_equal(&report, "public.busy", 2000);
    // The server's range hash agrees with the target's: no row of items is read, though it
    // holds timestamptz, uuid, time, numeric and NaN written as NULL and as text.
    assert_eq!(
        ranges(table(&report, "public.items")),
        (1, 0, 0),
        "{report}"
    );
    if keyless {
        let bag = table(&report, "public.bag");
        assert_eq!(counts(bag), (3, 0, 0, 0), "{bag}");
        assert_eq!(bag["key"], serde_json::json!([]), "{bag}");
    }

    corrupt();
    let cfg2 = cfg.clone();
    let (code, report, stderr) = tokio::task::spawn_blocking(move || validate(&cfg2))
        .await
        .unwrap();
    // The same in three passes over parts of the keys (as a table larger than --memory-mb).
    let cfg2 = cfg.clone();
    let (code3, report3, stderr3) =
        tokio::task::spawn_blocking(move || validate_with(&cfg2, &["--passes", "3"]))
            .await
            .unwrap();
    stop.store(true, Ordering::Relaxed);
    let updates = workload.await.unwrap();
    assert!(updates > 50, "the workload ran {updates} updates only");
    assert_eq!(code, 1, "{report}\n{stderr}\n{}", log_text());
    assert_eq!(report["equal"], false, "{report}");
    assert_corruption_found(&report, "public.items", 500);
    // Its one range differs: read in the first round, and again in each recheck.
    let items = table(&report, "public.items");
    assert_eq!(ranges(items).0, 1, "{items}");
    assert_eq!(ranges(items).1, 1, "{items}");
    assert_eq!(
        ranges(items).2,
        500 * items["rounds"].as_u64().unwrap(),
        "{items}"
    );
    // Updated all along, by the workload: no difference.
    assert_equal(&report, "public.busy", 2000);
    assert_eq!(code3, 1, "{report3}\n{stderr3}\n{}", log_text());
    assert_corruption_found(&report3, "public.items", 500);
    assert_equal(&report3, "public.busy", 2000);
    assert_eq!(
        table(&report3, "public.busy")["note"],
        "compared in 3 passes over parts of its keys",
        "{report3}"
    );
    if keyless {
        // One of the two equal rows is gone: a multiset counts it.
        let bag = table(&report, "public.bag");
        assert_eq!(counts(bag), (3, 1, 0, 0), "{bag}");
        assert_eq!(keys(bag, "missing_keys"), ["(a=1, b=x)"], "{bag}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_into_parquet_each_corruption_is_named_by_key() {
    let out = tempfile::tempdir().unwrap();
    let target = format!("kind = \"parquet\"\nurl = \"{}\"", out.path().display());
    let items = out.path().join("public").join("items");
    let bag = out.path().join("public").join("bag");
    pg_round_trip("val-pq", &target, true, || {
        run_python(CORRUPT_PARQUET, &[items.to_str().unwrap()]);
        run_python(DROP_ONE_BAG_ROW, &[bag.to_str().unwrap()]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_into_iceberg_each_corruption_is_named_by_key() {
    let out = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"iceberg\"\nwarehouse = \"{}\"",
        out.path().display()
    );
    let items = out.path().join("public").join("items");
    let readers = concat!(env!("CARGO_MANIFEST_DIR"), "/sinks/iceberg/tests/readers");
    pg_round_trip("val-ice", &target, false, || {
        run_python(CORRUPT_ICEBERG, &[items.to_str().unwrap(), readers])
    })
    .await;
}

#[test]
fn mariadb_into_parquet_each_corruption_is_named_by_key() {
    let db = MariaDbServer::start();
    db.admin(
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE shop.items (id bigint PRIMARY KEY, v int NOT NULL, note varchar(40),
                                  at datetime(6), amount decimal(10,2), t time);
         INSERT INTO shop.items SELECT seq, seq, CONCAT('n', seq),
                TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE, seq * 1.5,
                SEC_TO_TIME(36000 + seq) FROM seq_1_to_500;
         CREATE TABLE shop.busy (id bigint PRIMARY KEY, v int NOT NULL);
         INSERT INTO shop.busy SELECT seq, 0 FROM seq_1_to_2000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "val-my",
        &format!(
            r#"
[task]
name = "val-my"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{}"
tls = "disable"
heartbeat_seconds = 1
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["shop.*"]
[cdc]
flush_interval_ms = 200
"#,
            db.url("shop"),
            out.display()
        ),
    );
    let log = dir.path().join("inlet.log");
    let _inlet = spawn_logged(&cfg, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A failing assertion stops the workload too, or the scope would wait for it forever.
        let _stop_on_exit = StopOnDrop(&stop);
        let workload = s.spawn(|| {
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = (n * 7919) % 2000 + 1;
                db.admin(&format!("UPDATE shop.busy SET v = v + 1 WHERE id = {id}"));
                if n % 10 == 5 {
                    db.admin(&format!(
                        "BEGIN; DELETE FROM shop.busy WHERE id = {id}; \
                         INSERT INTO shop.busy VALUES ({id}, 0); COMMIT"
                    ));
                }
                n += 1;
            }
            n
        });
        let (code, report, stderr) = validate(&cfg);
        assert_eq!(code, 0, "{report}\n{stderr}\n{}", log_text());
        assert_equal(&report, "shop.items", 500);
        assert_equal(&report, "shop.busy", 2000);
        // MariaDB's range hash agrees with the target's (datetime(6), decimal, time, varchar):
        // no row of items is read.
        assert_eq!(ranges(table(&report, "shop.items")), (1, 0, 0), "{report}");

        run_python(
            CORRUPT_PARQUET,
            &[out.join("shop").join("items").to_str().unwrap()],
        );
        let (code, report, stderr) = validate(&cfg);
        stop.store(true, Ordering::Relaxed);
        let updates = workload.join().unwrap();
        assert!(updates > 20, "the workload ran {updates} updates only");
        assert_eq!(code, 1, "{report}\n{stderr}\n{}", log_text());
        assert_corruption_found(&report, "shop.items", 500);
        assert_equal(&report, "shop.busy", 2000);
        let items = table(&report, "shop.items");
        let rounds = items["rounds"].as_u64().unwrap();
        assert_eq!(ranges(items), (1, 1, 500 * rounds), "{items}");
    });
}

/// Sets its flag when dropped (also when unwinding from a failed assertion).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A pattern that matches no selected table is a usage error (exit 2), naming the tables the
/// task selects.
#[tokio::test]
async fn a_pattern_matching_no_table_is_a_usage_error() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"parquet\"\nurl = \"{}\"",
        dir.path().join("out").display()
    );
    let cfg = task_file(
        dir.path(),
        "val-none",
        &pg_task("val-none", &pg.url("postgres"), &target),
    );
    let (code, stdout, stderr) = inlet(&[
        "validate",
        "-c",
        cfg.to_str().unwrap(),
        "--tables",
        "public.nope*",
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no selected table matches public.nope*; the task selects public.t"),
        "{stderr}"
    );
}

/// A task that is not running never passes the source's position: validate says so and exits 1
/// within `--max-lag-seconds`, comparing nothing, never reporting the table equal.
#[tokio::test]
async fn a_task_that_does_not_catch_up_is_reported_not_equal() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"parquet\"\nurl = \"{}\"",
        dir.path().join("out").display()
    );
    let cfg = task_file(
        dir.path(),
        "val-stopped",
        &pg_task("val-stopped", &pg.url("postgres"), &target),
    );
    let (code, stdout, stderr) = inlet(&[
        "validate",
        "-c",
        cfg.to_str().unwrap(),
        "--max-lag-seconds",
        "1",
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(stdout, "", "{stderr}");
    assert!(
        stderr.contains("task val-stopped has not caught up with the source")
            && stderr.contains("is at position none")
            && stderr.contains("did not pass it within 1 s; nothing was found equal or different"),
        "{stderr}"
    );
}

/// GET http://ADDRESS/PATH → its body; None if nothing answers.
fn http_get(address: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(address).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Polls the daemon's /metrics until it holds every line of `want`; returns the metrics.
fn wait_for_metrics(address: &str, want: &[String], log: &Path) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = http_get(address, "/metrics").unwrap_or_default();
        if want.iter().all(|w| metrics.lines().any(|l| l == w)) {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/metrics lacks {want:?} after 60 s:\n{metrics}\nlog:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `inlet run` with `[validate] interval_minutes` validates the task on a schedule: the
/// `inlet_validation_*` metrics show each table's last result, and the log names a difference.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_validation_reports_in_metrics_and_the_log() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client.batch_execute(PG_SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let target = format!("kind = \"parquet\"\nurl = \"{}\"", out.display());
    let text = format!(
        "{}{ITEMS_VALUES}\n[validate]\ninterval_minutes = 0.02\n",
        pg_task("val-sched", &pg.url("postgres"), &target)
    );
    let cfg = task_file(dir.path(), "val-sched", &text);
    let log = dir.path().join("inlet.log");
    let address = format!("127.0.0.1:{}", inlet_testkit::free_port());
    let _inlet = common::daemon::Inlet(
        Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["run", "-c", cfg.to_str().unwrap(), "--listen", &address])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let line = |metric: &str, table: &str, value: u64| {
        format!("inlet_validation_{metric}{{task=\"val-sched\",table=\"public.{table}\"}} {value}")
    };
    let metrics = tokio::task::spawn_blocking({
        let (address, log) = (address.clone(), log.clone());
        let want = vec![
            line("rows_compared", "items", 500),
            line("missing_rows", "items", 0),
            line("rows_compared", "busy", 2000),
            line("different_rows", "busy", 0),
        ];
        move || wait_for_metrics(&address, &want, &log)
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("inlet_validations_total{task=\"val-sched\",result=\"equal\"}"),
        "{metrics}"
    );

    // A second daemon with the same task file stands by while the first holds the task's
    // lease, and does not validate the task: one validation per interval in a fleet.
    let standby_log = dir.path().join("standby.log");
    let standby_address = format!("127.0.0.1:{}", inlet_testkit::free_port());
    let _standby = common::daemon::Inlet(
        Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args([
                "run",
                "-c",
                cfg.to_str().unwrap(),
                "--listen",
                &standby_address,
            ])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&standby_log).unwrap())
            .spawn()
            .unwrap(),
    );
    tokio::task::spawn_blocking({
        let (address, log) = (standby_address.clone(), standby_log.clone());
        move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let status = http_get(&address, "/status").unwrap_or_default();
                if status.contains("\"standby\"") {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the second daemon is not standing by after 30 s: {status}\nlog:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
    .await
    .unwrap();

    run_python(
        CORRUPT_PARQUET,
        &[out.join("public").join("items").to_str().unwrap()],
    );
    let metrics = tokio::task::spawn_blocking({
        let (address, log) = (address.clone(), log.clone());
        let want = vec![
            line("rows_compared", "items", 500),
            line("missing_rows", "items", 1),
            line("extra_rows", "items", 2),
            line("different_rows", "items", 1),
            line("missing_rows", "busy", 0),
        ];
        move || wait_for_metrics(&address, &want, &log)
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("inlet_validations_total{task=\"val-sched\",result=\"different\"}"),
        "{metrics}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(
            "validation: public.items: 500 rows compared, 1 missing, 2 extra, 1 different \
             [missing: id=13 | extra: id="
        ),
        "{log_text}"
    );
    // Two more validations by the owner (each interval is 1.2 s), so the standby daemon had
    // several intervals of its own in which to validate, had it validated.
    let validations = |m: &str| -> u64 {
        m.lines()
            .filter(|l| l.starts_with("inlet_validations_total{task=\"val-sched\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = validations(&metrics);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while validations(&http_get(&address, "/metrics").unwrap_or_default()) < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner stopped validating"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let standby_metrics = http_get(&standby_address, "/metrics").unwrap();
    let standby_status = http_get(&standby_address, "/status").unwrap();
    assert!(standby_status.contains("\"standby\""), "{standby_status}");
    assert_eq!(validations(&standby_metrics), 0, "{standby_metrics}");
    let standby_text = std::fs::read_to_string(&standby_log).unwrap();
    assert!(
        !standby_text.contains("validation: ") && !standby_text.contains("validation did not"),
        "{standby_text}"
    );
}

/// Sets `v` of the row with id 15000 to -1 in the `LOAD` files of a Parquet table folder.
const CHANGE_ONE_VALUE: &str = r#"
import glob, os, sys
import pyarrow as pa, pyarrow.parquet as pq
for f in sorted(glob.glob(os.path.join(sys.argv[1], "LOAD*.parquet"))):
    t = pq.read_table(f)
    rows = t.to_pylist()
    for r in rows:
        if r["id"] == 15000:
            r["v"] = -1
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), f + ".tmp")
    os.replace(f + ".tmp", f)
"#;

/// Range hashes: a 30,000-row table (three key ranges of 10,000) equal to its target reads no
/// row from the source; with one value changed, only its range is read (in the first round and
/// in the second, which names the key). A float column has no canonical text: that table is
/// compared row by row, and the report says why.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_ranges_whose_hashes_differ_are_read() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, note text);
             INSERT INTO big SELECT g, g, 'n' || g FROM generate_series(1, 30000) g;
             ANALYZE big;
             CREATE TABLE floats (id int PRIMARY KEY, x float8);
             INSERT INTO floats VALUES (1, 0.1), (2, NULL);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let target = format!("kind = \"parquet\"\nurl = \"{}\"", out.display());
    let text = pg_task("val-ranges", &pg.url("postgres"), &target)
        .replace("full-load-and-cdc", "full-load");
    let cfg = task_file(dir.path(), "val-ranges", &text);
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let (code, report, stderr) = validate(&cfg);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let big = table(&report, "public.big");
    assert_eq!(counts(big), (30000, 0, 0, 0), "{big}");
    assert_eq!(ranges(big), (3, 0, 0), "{big}");
    let floats = table(&report, "public.floats");
    assert_eq!(counts(floats), (2, 0, 0, 0), "{floats}");
    assert_eq!(ranges(floats), (0, 0, 2), "{floats}");
    assert_eq!(
        floats["compared_row_by_row"],
        "column x (Float64) has no canonical text both sides render alike",
        "{floats}"
    );

    run_python(
        CHANGE_ONE_VALUE,
        &[out.join("public").join("big").to_str().unwrap()],
    );
    let (code, report, stderr) = validate(&cfg);
    assert_eq!(code, 1, "{report}\n{stderr}");
    let big = table(&report, "public.big");
    assert_eq!(counts(big), (30000, 0, 0, 1), "{big}");
    assert_eq!(keys(big, "different_keys"), ["id=15000"], "{big}");
    // Range [10001, 20001) in both rounds.
    assert_eq!(ranges(big), (3, 1, 20000), "{big}");
}

/// A column left out by `tables.exclude_columns` is not in the target, so validation leaves
/// it out too: the table's ranges agree (no row read), also after the source changed only that
/// column, and a changed kept column is still found.
#[tokio::test(flavor = "multi_thread")]
async fn an_excluded_column_is_left_out_of_the_comparison() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL, secret text);
             INSERT INTO people SELECT g, 'p' || g, 's' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let target = format!("kind = \"parquet\"\nurl = \"{}\"", out.display());
    let text = pg_task("val-excl", &pg.url("postgres"), &target)
        .replace("full-load-and-cdc", "full-load")
        .replace(
            "[cdc]",
            "exclude_columns = { \"public.people\" = [\"secret\"] }\n[cdc]",
        );
    let cfg = task_file(dir.path(), "val-excl", &text);
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let (code, report, stderr) = validate(&cfg);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let people = table(&report, "public.people");
    assert_eq!(counts(people), (2000, 0, 0, 0), "{people}");
    assert_eq!(ranges(people), (1, 0, 0), "{people}");

    client
        .batch_execute("UPDATE people SET secret = 'changed' WHERE id <= 10")
        .await
        .unwrap();
    let (code, report, stderr) = validate(&cfg);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let people = table(&report, "public.people");
    assert_eq!(counts(people), (2000, 0, 0, 0), "{people}");
    assert_eq!(ranges(people), (1, 0, 0), "{people}");

    client
        .batch_execute("UPDATE people SET name = 'renamed' WHERE id = 7")
        .await
        .unwrap();
    let (code, report, stderr) = validate(&cfg);
    assert_eq!(code, 1, "{report}\n{stderr}");
    let people = table(&report, "public.people");
    assert_eq!(counts(people), (2000, 0, 0, 1), "{people}");
    assert_eq!(keys(people, "different_keys"), ["id=7"], "{people}");
}
