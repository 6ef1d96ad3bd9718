//! `inlet run` as a service, end to end against a real PostgreSQL 15 (and moto for S3): the
//! HTTP endpoints, `inlet status`, a source restart, one failing task among several, and an S3
//! outage in the middle of streaming. Each fault must cost nothing: the replayed target equals
//! the source.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::replay::{replay, source_rows};
use common::{python, task_file, Moto, PgServer};

const COLUMNS: &[&str] = &["id", "version", "owner", "balance"];
const SECRET: &str = "pw-never-shown-7731";

fn free_port() -> u16 {
    inlet_testkit::free_port()
}

/// GET http://ADDRESS/PATH → (status code, body); None if nothing answers.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(address).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Polls `path` until its status code is `code`; returns the body.
fn wait_for_code(address: &str, path: &str, code: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((c, body)) = http_get(address, path) {
            if c == code {
                return body;
            }
            last = Some((c, body));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{path} did not answer {code} within {within:?}; last answer: {last:?}");
}

fn spawn(cfg: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start inlet run")
}

fn sigterm_and_wait(child: &mut Child) -> i32 {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    child.wait().unwrap().code().unwrap_or(-1)
}

fn task(name: &str, url: &str, target: &str, listen: &str, extra: &str) -> String {
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
kind = "parquet"
url = "{target}"
[tables]
include = ["public.accounts"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
[service]
listen = "{listen}"
ready_max_lag_s = 5
{extra}
"#
    )
}

/// A URL with a password the server does not need (trust auth), to prove it never shows.
fn url_with_secret(pg: &PgServer, db: &str) -> String {
    format!("postgres://postgres:{SECRET}@127.0.0.1:{}/{db}", pg.port)
}

async fn create_accounts(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, version int NOT NULL, owner text, \
             balance numeric(12,2));
             INSERT INTO accounts SELECT g, 0, 'owner ' || g, g * 10 FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
}

/// Inserts 20 rows, updates 10 and deletes 5, in separate transactions: 35 changes.
async fn changes(client: &tokio_postgres::Client, round: i64) {
    let base = 10_000 + round * 100;
    for i in 0..20 {
        client
            .execute(
                "INSERT INTO accounts VALUES ($1, 0, 'new', 1.5)",
                &[&(base + i)],
            )
            .await
            .unwrap();
    }
    for i in 0..10i64 {
        client
            .execute(
                "UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id = $1",
                &[&(round * 10 + i + 1)],
            )
            .await
            .unwrap();
    }
    for i in 0..5i64 {
        client
            .execute("DELETE FROM accounts WHERE id = $1", &[&(base + i)])
            .await
            .unwrap();
    }
}

/// Waits until `/status` says task `name` has everything up to the source's current WAL
/// insert position durable in the target.
async fn wait_durable(client: &tokio_postgres::Client, address: &str, name: &str) {
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((200, body)) = http_get(address, "/status") {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            let task = doc["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["task"] == name)
                .cloned()
                .unwrap();
            if let Some(pos) = task["position"].as_str() {
                let done: bool = client
                    .query_one(
                        "SELECT $1::text::pg_lsn >= $2::text::pg_lsn",
                        &[&pos, &target],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if done && task["phase"] == "streaming" {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "task {name} did not make {target} durable within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Prometheus sample `name{labels}` as a number.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_report_the_task_and_a_source_restart_loses_nothing() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    create_accounts(&client).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let address = format!("127.0.0.1:{}", free_port());
    let cfg = task_file(
        dir.path(),
        "svc",
        &task(
            "svc",
            &url_with_secret(&pg, "shop"),
            out.to_str().unwrap(),
            &address,
            "",
        ),
    );
    // systemd's side of Type=notify: a datagram socket the daemon reports to.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = dir.path().join("inlet.log");
    let mut child = spawn(
        &cfg,
        &log,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );

    assert_eq!(
        wait_for_code(&address, "/healthz", 200, Duration::from_secs(60)),
        "ok\n"
    );
    wait_for_code(&address, "/readyz", 200, Duration::from_secs(90));
    changes(&client, 1).await;
    wait_durable(&client, &address, "svc").await;

    let (code, metrics) = http_get(&address, "/metrics").unwrap();
    assert_eq!(code, 200);
    let table = r#"task="svc",table="public.accounts""#;
    assert_eq!(
        sample(&metrics, &format!("inlet_rows_loaded_total{{{table}}}")),
        Some(500.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("inlet_changes_written_total{{{table}}}")),
        Some(35.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("inlet_snapshot_progress_ratio{{{table}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"inlet_source_connected{task="svc"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"inlet_slot_lost{task="svc"}"#),
        Some(0.0)
    );
    assert!(
        sample(
            &metrics,
            r#"inlet_flush_duration_seconds_count{task="svc"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert!(metrics.contains("inlet_source_lag_seconds{task=\"svc\"}"));

    let (code, status) = http_get(&address, "/status").unwrap();
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    let t = &doc["tasks"][0];
    assert_eq!(t["task"], "svc");
    assert_eq!(t["mode"], "full-load-and-cdc");
    assert_eq!(t["phase"], "streaming");
    assert_eq!(t["connected"], true);
    assert_eq!(t["tables"][0]["table"], "public.accounts");
    assert_eq!(t["tables"][0]["changes_written"], 35);
    assert_eq!(t["tables"][0]["snapshot_done"], true);

    let printed = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["status", "--address", &address])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.contains("svc")
            && printed.contains("streaming")
            && printed.contains("public.accounts"),
        "{printed}"
    );

    // What systemd heard: READY once the task connected, a STATUS line naming it, and
    // watchdog pings at half of WATCHDOG_USEC.
    let mut heard = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2 {
            break;
        }
    }
    assert!(heard.iter().any(|m| m.contains("READY=1")), "{heard:?}");
    assert!(
        heard.iter().any(|m| m.contains("STATUS=svc streaming")),
        "{heard:?}"
    );
    assert!(
        heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{heard:?}"
    );

    // The source goes away: not ready, with the reason; the task retries.
    pg.stop();
    let body = wait_for_code(&address, "/readyz", 503, Duration::from_secs(60));
    assert!(body.contains("task svc"), "{body}");
    let (_, status_down) = http_get(&address, "/status").unwrap();
    assert!(status_down.contains("\"connected\":false"), "{status_down}");

    // ... and comes back: ready again, and streaming picks up where it was.
    pg.start_again();
    wait_for_code(&address, "/readyz", 200, Duration::from_secs(90));
    let client = pg.client("shop").await;
    changes(&client, 2).await;
    wait_durable(&client, &address, "svc").await;
    let (_, metrics) = http_get(&address, "/metrics").unwrap();
    assert!(
        sample(&metrics, r#"inlet_retries_total{task="svc",kind="source"}"#).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    assert_eq!(sigterm_and_wait(&mut child), 0);
    let logs = std::fs::read_to_string(&log).unwrap();
    for text in [&logs, &metrics, &status, &status_down, &printed] {
        assert!(!text.contains(SECRET), "the password leaked: {text}");
    }
    assert_eq!(
        replay(&out.join("public/accounts"), COLUMNS),
        source_rows(&client, "accounts", COLUMNS).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_task_does_not_stop_the_others() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    create_accounts(&client).await;

    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let out = dir.path().join("out");
    let address = format!("127.0.0.1:{}", free_port());
    let url = pg.url("shop");
    task_file(
        &tasks,
        "good",
        &task("good", &url, out.to_str().unwrap(), &address, ""),
    );
    // Selects a table that does not exist: a fatal error, not retried.
    task_file(
        &tasks,
        "bad",
        &task("bad", &url, out.to_str().unwrap(), &address, "")
            .replace("public.accounts", "public.missing"),
    );
    let log = dir.path().join("inlet.log");
    let mut child = spawn(&tasks, &log, &[]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let doc = loop {
        if let Some((200, body)) = http_get(&address, "/status") {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            let phases: Vec<String> = doc["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    format!(
                        "{}={}",
                        t["task"].as_str().unwrap(),
                        t["phase"].as_str().unwrap()
                    )
                })
                .collect();
            if phases == ["bad=failed", "good=streaming"] {
                break doc;
            }
        }
        assert!(Instant::now() < deadline, "tasks did not settle");
        std::thread::sleep(Duration::from_millis(200));
    };
    let reason = doc["tasks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no table matches"), "{reason}");
    let (code, body) = http_get(&address, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(
        body.contains("task bad: failed: no table matches"),
        "{body}"
    );

    changes(&client, 1).await;
    wait_durable(&client, &address, "good").await;
    let (_, metrics) = http_get(&address, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, r#"inlet_task_failed{task="bad"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"inlet_task_failed{task="good"}"#),
        Some(0.0)
    );
    // A failed task makes the daemon's exit status 1 when it stops.
    assert_eq!(sigterm_and_wait(&mut child), 1);
    assert_eq!(
        replay(&out.join("public/accounts"), COLUMNS),
        source_rows(&client, "accounts", COLUMNS).await
    );
}

/// A TCP relay to moto that can be switched off: while off it refuses new connections and cuts
/// the open ones, as an S3 endpoint that went away would.
struct Relay {
    up: Arc<AtomicBool>,
    port: u16,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(100))).ok();
                        let mut buf = [0u8; 16384];
                        loop {
                            if !flag.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Self { up, port }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_mid_stream_loses_nothing() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    create_accounts(&client).await;
    let mut moto = Moto::start();
    moto.create_bucket("lake");
    let moto_port: u16 = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(moto_port);
    let endpoint = format!("http://127.0.0.1:{}", relay.port);

    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let cfg = task_file(
        dir.path(),
        "s3",
        &task("s3", &pg.url("shop"), "s3://lake/cdc", &address, ""),
    );
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let log = dir.path().join("inlet.log");
    let mut child = spawn(&cfg, &log, &env);
    wait_for_code(&address, "/readyz", 200, Duration::from_secs(90));
    changes(&client, 1).await;
    wait_durable(&client, &address, "s3").await;

    // The endpoint goes away while changes keep coming.
    relay.set_up(false);
    changes(&client, 2).await;
    let body = wait_for_code(&address, "/readyz", 503, Duration::from_secs(60));
    assert!(body.contains("task s3"), "{body}");
    changes(&client, 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.set_up(true);
    wait_for_code(&address, "/readyz", 200, Duration::from_secs(120));
    changes(&client, 4).await;
    wait_durable(&client, &address, "s3").await;
    assert_eq!(sigterm_and_wait(&mut child), 0);

    let local = dir.path().join("downloaded");
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/readers/s3_download.py"
        ))
        .args([&moto.endpoint, "lake", "cdc/", local.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        replay(&local.join("public/accounts"), COLUMNS),
        source_rows(&client, "accounts", COLUMNS).await
    );
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// 13.7: 2,000 idle connections to the HTTP endpoint neither lock out /healthz nor take the
/// file descriptors the task needs: at most service.max_connections stay open (the oldest are
/// closed for newer ones), the rest are closed after service.header_read_timeout_s, and the
/// task keeps streaming every change.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connection_flood_leaves_health_and_streaming_alone() {
    const MAX: usize = 100;
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    create_accounts(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let address = format!("127.0.0.1:{}", free_port());
    let cfg = task_file(
        dir.path(),
        "flood",
        &task(
            "flood",
            &url_with_secret(&pg, "shop"),
            out.to_str().unwrap(),
            &address,
            "",
        )
        .replace(
            "ready_max_lag_s = 5",
            &format!("ready_max_lag_s = 5\nheader_read_timeout_s = 2\nmax_connections = {MAX}"),
        ),
    );
    let log = dir.path().join("inlet.log");
    let mut child = spawn(&cfg, &log, &[]);
    wait_for_code(&address, "/readyz", 200, Duration::from_secs(90));
    let before = open_fds(child.id());

    // 2,000 connections that never send a byte (loopback only).
    let idle: Vec<TcpStream> = (0..2000)
        .map(|i| TcpStream::connect(&address).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(child.id());
    assert!(
        during <= before + MAX + 5,
        "inlet holds {during} file descriptors with 2,000 idle connections (before: {before}, \
         service.max_connections = {MAX})"
    );
    let started = Instant::now();
    assert_eq!(
        http_get(&address, "/healthz"),
        Some((200, "ok\n".to_string()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The task streams on.
    changes(&client, 1).await;
    wait_durable(&client, &address, "flood").await;

    // After header_read_timeout_s, every idle connection has been closed by the server.
    std::thread::sleep(Duration::from_secs(3));
    let mut still_open = 0;
    for mut conn in idle {
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        if let Err(e) = conn.read(&mut buf) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                still_open += 1;
            }
        }
    }
    assert_eq!(still_open, 0, "idle connections the server kept open");

    assert_eq!(sigterm_and_wait(&mut child), 0);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains(SECRET), "the password leaked: {logs}");
    assert!(!logs.contains("Too many open files"), "{logs}");
    assert_eq!(
        replay(&out.join("public/accounts"), COLUMNS),
        source_rows(&client, "accounts", COLUMNS).await
    );
}

/// 13.13: a wrong password or a missing database is not a network fault: `inlet run` fails
/// that task at once with what to fix (instead of retrying forever), and the other task
/// streams on. The password never shows.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_login_fails_its_task_and_is_not_retried() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    admin
        .batch_execute("CREATE ROLE inlet LOGIN REPLICATION SUPERUSER PASSWORD 'right-one'")
        .await
        .unwrap();
    let client = pg.client("shop").await;
    create_accounts(&client).await;
    pg.set_hba(
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n\
         host replication all 127.0.0.1/32 scram-sha-256",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let out = dir.path().join("out");
    let address = format!("127.0.0.1:{}", free_port());
    task_file(
        &tasks,
        "good",
        &task("good", &pg.url("shop"), out.to_str().unwrap(), &address, ""),
    );
    let wrong = format!("postgres://inlet:{SECRET}@127.0.0.1:{}/shop", pg.port);
    task_file(
        &tasks,
        "wrongpw",
        &task("wrongpw", &wrong, out.to_str().unwrap(), &address, ""),
    );
    let no_db = format!("postgres://inlet:right-one@127.0.0.1:{}/nodb", pg.port);
    task_file(
        &tasks,
        "nodb",
        &task("nodb", &no_db, out.to_str().unwrap(), &address, ""),
    );
    let log = dir.path().join("inlet.log");
    let mut child = spawn(&tasks, &log, &[]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let doc = loop {
        if let Some((200, body)) = http_get(&address, "/status") {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            let phases: Vec<String> = doc["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    format!(
                        "{}={}",
                        t["task"].as_str().unwrap(),
                        t["phase"].as_str().unwrap()
                    )
                })
                .collect();
            if phases == ["good=streaming", "nodb=failed", "wrongpw=failed"] {
                break doc;
            }
        }
        assert!(Instant::now() < deadline, "tasks did not settle");
        std::thread::sleep(Duration::from_millis(200));
    };
    for (i, want) in [
        (1, "\"nodb\" does not exist"),
        (2, "password authentication failed"),
    ] {
        let t = &doc["tasks"][i];
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason.contains(want)
                && reason.contains("source.url")
                && reason.contains("retrying cannot fix"),
            "{reason}"
        );
        assert_eq!(t["retries"], 0, "{t}");
    }
    changes(&client, 1).await;
    wait_durable(&client, &address, "good").await;
    let (_, status) = http_get(&address, "/status").unwrap();
    let (_, ready) = http_get(&address, "/readyz").unwrap();
    assert_eq!(sigterm_and_wait(&mut child), 1);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logs.contains("transient error"),
        "a refused login was retried: {logs}"
    );
    for text in [&logs, &status, &ready] {
        assert!(!text.contains(SECRET), "the password leaked: {text}");
    }
    assert_eq!(
        replay(&out.join("public/accounts"), COLUMNS),
        source_rows(&client, "accounts", COLUMNS).await
    );
}

/// 13.13: `inlet check` names the command that does what the task's mode says (it suggested
/// `inlet full-load` for CDC tasks, which would copy once and never stream).
#[tokio::test(flavor = "multi_thread")]
async fn check_suggests_the_command_of_the_mode() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    create_accounts(&pg.client("shop").await).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (mode, want, not) in [
        ("cdc", "`inlet run -c", "inlet full-load"),
        ("full-load-and-cdc", "`inlet run -c", "inlet full-load"),
        ("full-load", "`inlet full-load -c", "inlet run"),
    ] {
        let cfg = task_file(
            dir.path(),
            "chk",
            &task(
                "chk",
                &url_with_secret(&pg, "shop"),
                out.to_str().unwrap(),
                "127.0.0.1:0",
                "",
            )
            .replace(
                "mode = \"full-load-and-cdc\"",
                &format!("mode = \"{mode}\""),
            ),
        );
        let (code, stdout, stderr) = common::inlet(&["check", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{mode}: {stdout}{stderr}");
        assert!(
            stdout.contains(want) && !stdout.contains(not),
            "{mode}: {stdout}"
        );
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    }
}

// Task ownership: daemons sharing one folder of task files, each task run by the one daemon
// that holds its lease (README "Task ownership").

/// A daemon of a fleet: `inlet run -c TASKS --listen ADDRESS`, its log in a file; continued
/// (if stopped) and killed when dropped, so a failing test leaves no daemon behind.
struct Daemon {
    child: Child,
    address: String,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(tasks: &Path, dir: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("inlet-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["run", "-c", tasks.to_str().unwrap(), "--listen", &address])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start inlet run");
        Self {
            child,
            address,
            log,
        }
    }

    /// `/status`, with a short timeout (a stopped daemon's kernel still accepts connections).
    fn status(&self) -> Option<serde_json::Value> {
        let mut conn = TcpStream::connect(&self.address).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            conn,
            "GET /status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .ok()?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).ok()?;
        let body = raw.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    }

    /// This daemon as leases name it (`host/pid`).
    fn id(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(doc) = self.status() {
                return doc["daemon"].as_str().unwrap().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{} does not answer",
                self.address
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Task `name` as this daemon reports it.
    fn task(&self, name: &str) -> Option<serde_json::Value> {
        let doc = self.status()?;
        doc["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["task"] == name)
            .cloned()
    }

    /// Waits (`within` at most) until task `name` is in phase `phase` here; returns its status.
    fn wait_phase(&self, name: &str, phase: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(t) = self.task(name) {
                if t["phase"] == phase {
                    return t;
                }
                last = Some(t);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "task {name} was not {phase} in {} within {within:?}; last: {last:?}\n{}",
            self.address,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGCONT, and the first `/status` answered after it: the request is sent while the
    /// daemon is still stopped (its kernel accepts the connection), so the answer is the first
    /// the continued daemon gives, before its tasks had time to notice anything.
    fn continue_and_status(&self) -> serde_json::Value {
        let (status, _) = self.continue_and_report();
        status
    }

    /// Continues a stopped daemon with requests for `/status` and `/metrics` already sent:
    /// what it answers first.
    fn continue_and_report(&self) -> (serde_json::Value, String) {
        let ask = |path: &str| {
            let mut conn = TcpStream::connect(&self.address).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.address
            )
            .unwrap();
            conn
        };
        let (mut status, mut metrics) = (ask("/status"), ask("/metrics"));
        self.signal("-CONT");
        let body = |conn: &mut TcpStream| {
            let mut raw = String::new();
            conn.read_to_string(&mut raw).unwrap();
            raw.split_once("\r\n\r\n").unwrap().1.to_string()
        };
        (
            serde_json::from_str(&body(&mut status)).unwrap(),
            body(&mut metrics),
        )
    }

    /// Waits (`within` at most) until this daemon runs task `name` (it names itself the owner
    /// and the task is not `standby`: starting, loading, streaming or retrying); returns when
    /// it was first seen so. Polls every 50 ms: the time measures a takeover.
    fn wait_running(&self, name: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let me = self.id();
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(t) = self.task(name) {
                if t["owner"] == me.as_str() && t["phase"] != "standby" {
                    return Instant::now();
                }
                last = Some(t);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "task {name} was not run by {} within {within:?}; last: {last:?}\n{}",
            self.address,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn signal(&self, signal: &str) {
        let st = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-CONT");
            self.kill();
        }
    }
}

/// The lease of the fleet tests' tasks (service.lease_seconds in `my_fleet_setup`'s and
/// `fleet_task`'s task files).
const LEASE_S: u64 = 3;

/// Issue 17's guarantee: a dead (or paused) daemon's tasks are running elsewhere within one
/// lease; the slack is the watcher's look interval (a twelfth of the lease) and 2 s for a
/// loaded test machine (and this test's own polling). A guarantee, not a benchmark.
const TAKEOVER_WITHIN: Duration =
    Duration::from_millis(LEASE_S * 1000 + LEASE_S * 1000 / 12 + 2000);

const MY_SCHEMA: &str = "
CREATE DATABASE shop;
USE shop;
CREATE TABLE shop.accounts (id bigint PRIMARY KEY, version int NOT NULL, owner varchar(200),
    balance decimal(12,2));
INSERT INTO shop.accounts SELECT seq, 0, CONCAT('owner ', seq), seq * 10 FROM seq_1_to_500;
";

/// A MariaDB task of `shop.accounts` into `target` (a folder or an `s3://` URL), leases of
/// `lease_seconds`.
fn my_task(name: &str, url: &str, target: &str, lease_seconds: u64, server_id: u32) -> String {
    format!(
        r#"
[task]
name = "{name}"
mode = "full-load-and-cdc"
[source]
kind = "mysql"
url = "{url}"
tls = "disable"
heartbeat_seconds = 1
server_id = {server_id}
[target]
kind = "parquet"
url = "{target}"
[tables]
include = ["shop.accounts"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
[service]
lease_seconds = {lease_seconds}
"#
    )
}

/// Round `round` of a MariaDB workload on `shop.accounts`, every transaction named by
/// `@inlet_tx` for the audit log: inserts, updates, a key change and a delete.
fn my_round(db: &inlet_testkit::MariaDbServer, round: i64) {
    let base = 10_000 + round * 100;
    let tx = 1000 + round * 10;
    let r = round % 7;
    db.admin(&format!(
        "USE shop;
         SET @inlet_tx = {tx} + 1;
         INSERT INTO accounts VALUES ({base}, 0, 'new', 1.5), ({base} + 1, 0, 'new', 2.5);
         SET @inlet_tx = {tx} + 2;
         UPDATE accounts SET version = version + 1, balance = balance + 1 WHERE id % 7 = {r} AND id <= 500;
         SET @inlet_tx = {tx} + 3;
         BEGIN;
           UPDATE accounts SET id = id + 1000000 WHERE id = {base} + 1;
           DELETE FROM accounts WHERE id = {round} + 1;
         COMMIT;"
    ));
}

/// Waits until the checkpoint under `out` covers the binlog's current end (`within` at most).
fn my_caught_up(db: &inlet_testkit::MariaDbServer, checkpoint: &Path, within: Duration) {
    let (seq, offset) = common::mysql_stream::binlog_end(db);
    let want = (seq << 32) | offset;
    let deadline = Instant::now() + within;
    loop {
        let at = common::pg_stream::checkpoint_position(checkpoint);
        if at.is_some_and(|p| p >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint {} did not reach binlog {seq}:{offset} within {within:?} (at {at:x?})",
            checkpoint.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The change files of a table folder never cover a source position twice: sorted by their
/// first position, each starts after the one before ends (two writers of one change log would
/// write overlapping files, which a reader replays twice). Returns how many there are.
fn assert_no_overlapping_change_files(table_dir: &Path) -> usize {
    overlapping_change_files(table_dir).unwrap_or_else(|e| panic!("{e}"))
}

/// [`assert_no_overlapping_change_files`]'s check: the number of change files, or which two
/// overlap.
fn overlapping_change_files(table_dir: &Path) -> Result<usize, String> {
    let mut ranges: Vec<(u64, u64, String)> = common::audit::change_files(table_dir)
        .iter()
        .filter_map(|p| {
            let name = common::replay::file_name(p);
            let stem = name.strip_suffix(".parquet")?;
            let mut parts = stem.rsplitn(3, '-');
            let last = u64::from_str_radix(parts.next()?, 16).ok()?;
            let first = u64::from_str_radix(parts.next()?, 16).ok()?;
            Some((first, last, name))
        })
        .collect();
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err(format!(
                "{}: change files overlap: {} and {}",
                table_dir.display(),
                pair[0].2,
                pair[1].2
            ));
        }
    }
    Ok(ranges.len())
}

/// The MariaDB table's rows equal what its Parquet folder replays to, and the audit log's
/// changes are each in the change files exactly once.
fn assert_my_target_equals_source(db: &inlet_testkit::MariaDbServer, out: &Path) {
    let table_dir = out.join("shop/accounts");
    let columns = ["id", "version", "owner", "balance"];
    let want = common::mysql_rows::source_rows(db, "shop.accounts", &columns);
    let got = common::mysql_rows::replay_to_end(&table_dir, &columns);
    common::mysql_rows::assert_rows_equal("shop.accounts", "replay", &want, &got);
    assert!(assert_no_overlapping_change_files(&table_dir) > 0);
    assert!(common::mysql_audit::assert_exactly_once(db, out, "shop", "accounts", "id") > 0);
}

/// A MariaDB server with `shop.accounts` audited, and two folders (one per daemon, as on two
/// hosts) of the same task file (`my`) into one Parquet folder, with service.lease_seconds
/// `lease_seconds` (the first daemon's, the second's). The two copies differ in the replica
/// server id: the server then lets both read the binlog at once (with one id it would end the
/// older connection), so only the lease keeps the second out.
fn my_fleet_setup(
    dir: &Path,
    lease_seconds: [u64; 2],
) -> (
    inlet_testkit::MariaDbServer,
    [std::path::PathBuf; 2],
    std::path::PathBuf,
) {
    let db = inlet_testkit::MariaDbServer::start();
    db.admin(MY_SCHEMA);
    common::mysql_audit::install(&db, "shop", &[("accounts", "id")]);
    // A commit after the DDL (see mysql_source_events: the snapshot position after a rotation
    // that DDL caused); the row goes with the clear below.
    db.admin("INSERT INTO inlet_audit.log (tx, tbl, op) VALUES (0, '-', '-')");
    let out = dir.join("out");
    let folders = [(4001, lease_seconds[0]), (4002, lease_seconds[1])].map(|(server_id, l)| {
        let tasks = dir.join(format!("tasks-{server_id}"));
        std::fs::create_dir(&tasks).unwrap();
        let url = db.url("shop");
        task_file(
            &tasks,
            "my",
            &my_task("my", &url, out.to_str().unwrap(), l, server_id),
        );
        tasks
    });
    (db, folders, out)
}

/// Two daemons on one MariaDB task (a binlog reader has no server-side guard): one runs it,
/// the other reports it owned by the first; SIGKILL the owner and the other takes it over
/// within the lease; the target equals the source with every change once.
#[test]
fn two_daemons_on_one_mariadb_task_run_it_once_and_a_sigkill_hands_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let (db, tasks, out) = my_fleet_setup(dir.path(), [LEASE_S; 2]);
    let checkpoint = out.join("_inlet/my/checkpoint");
    let mut a = Daemon::start(&tasks[0], dir.path(), "a", &[]);
    let t = a.wait_phase("my", "streaming", Duration::from_secs(30));
    let a_id = a.id();
    assert_eq!(t["owner"], a_id.as_str(), "{t}");
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    common::mysql_audit::clear(&db);

    let b = Daemon::start(&tasks[1], dir.path(), "b", &[]);
    let b_id = b.id();
    assert_ne!(a_id, b_id);
    let seen = b.wait_phase("my", "standby", Duration::from_secs(10));
    assert_eq!(seen["owner"], a_id.as_str(), "{seen}");
    assert!(
        seen["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("owned by daemon {a_id}")),
        "{seen}"
    );
    for round in 0..3 {
        my_round(&db, round);
    }
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    // Still one runner: b kept out, a streaming.
    assert_eq!(b.task("my").unwrap()["phase"], "standby");
    assert_eq!(a.task("my").unwrap()["phase"], "streaming");
    let printed = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["status", "--address", &b.address])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.contains(&format!("daemon {b_id}"))
            && printed
                .lines()
                .any(|l| l.starts_with("my ") && l.contains("standby") && l.contains(&a_id)),
        "{printed}"
    );

    a.kill();
    let killed = Instant::now();
    // Within the lease of the kill (a daemon on this host whose process is gone is not even
    // waited for): issue 17's guarantee.
    let running = b.wait_running("my", TAKEOVER_WITHIN);
    eprintln!("takeover after SIGKILL: {:?}", running - killed);
    for round in 3..6 {
        my_round(&db, round);
    }
    let t = b.wait_phase("my", "streaming", Duration::from_secs(10));
    assert_eq!(t["owner"], b_id.as_str(), "{t}");
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    for round in 6..8 {
        my_round(&db, round);
    }
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    assert_my_target_equals_source(&db, &out);
}

/// A paused owner (SIGSTOP past its lease) loses the task to the other daemon, which writes;
/// continued, the first writes nothing more (no change file, the checkpoint not overwritten)
/// and its task stops saying it was taken.
#[test]
fn a_paused_owner_writes_nothing_once_another_daemon_took_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let (db, tasks, out) = my_fleet_setup(dir.path(), [LEASE_S; 2]);
    let checkpoint = out.join("_inlet/my/checkpoint");
    let table_dir = out.join("shop/accounts");
    // systemd's side of Type=notify for the daemon to be paused: its STATUS= lines.
    let notify_path = dir.path().join("notify-a.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let a = Daemon::start(
        &tasks[0],
        dir.path(),
        "a",
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    a.wait_phase("my", "streaming", Duration::from_secs(30));
    let a_id = a.id();
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    common::mysql_audit::clear(&db);
    let b = Daemon::start(&tasks[1], dir.path(), "b", &[]);
    let b_id = b.id();
    b.wait_phase("my", "standby", Duration::from_secs(10));
    my_round(&db, 0);
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));

    // Paused with changes arriving: its binlog connection keeps receiving them.
    a.signal("-STOP");
    let stopped = Instant::now();
    my_round(&db, 1);
    // A paused owner is a dead one to the others: its task starts elsewhere within the lease
    // of the pause, and not before the paused owner's fence (a third of the lease after its
    // last renewal, itself at most a sixth before the stop) has surely passed.
    let running = b.wait_running("my", TAKEOVER_WITHIN);
    eprintln!("takeover after SIGSTOP: {:?}", running - stopped);
    assert!(
        running - stopped >= Duration::from_secs(LEASE_S) / 2,
        "started {:?} after the stop, before the former owner's fence",
        running - stopped
    );
    for round in 2..4 {
        my_round(&db, round);
    }
    let t = b.wait_phase("my", "streaming", Duration::from_secs(10));
    assert_eq!(t["owner"], b_id.as_str(), "{t}");
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    let files_before = common::audit::change_files(&table_dir);
    let checkpoint_before = std::fs::read(&checkpoint).unwrap();

    // Continued: its very first /status, /metrics and systemd status line already show the
    // task fenced, not running.
    let mut buf = [0u8; 4096];
    while notify.recv(&mut buf).is_ok() {}
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (first, metrics) = a.continue_and_report();
    assert_eq!(
        sample(&metrics, r#"inlet_source_connected{task="my"}"#),
        Some(0.0),
        "the first /metrics after SIGCONT: {metrics}"
    );
    let status_line = loop {
        let n = notify.recv(&mut buf).expect("a STATUS= line after SIGCONT");
        let datagram = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(line) = datagram.lines().find_map(|l| l.strip_prefix("STATUS=")) {
            break line.to_string();
        }
    };
    assert!(
        status_line.starts_with("my standby"),
        "the first systemd status after SIGCONT: {status_line}"
    );
    let t = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "my")
        .unwrap();
    assert_eq!(
        t["phase"], "standby",
        "the first /status after SIGCONT: {t}"
    );
    assert_ne!(t["owner"], a_id.as_str(), "{t}");
    // It must write nothing more, and soon say who took its task.
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = a.task("my").unwrap();
        let reason = t["reason"].as_str().unwrap_or_default();
        if reason.contains(&format!("task my was taken by daemon {b_id}")) {
            break t;
        }
        assert_eq!(t["phase"], "standby", "{t}");
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        t["owner"].as_str().map(|o| o.starts_with(&b_id)),
        Some(true),
        "{t}"
    );
    // Time for anything it still held to reach the store.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(common::audit::change_files(&table_dir), files_before);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), checkpoint_before);
    let log_a = std::fs::read_to_string(&a.log).unwrap();
    assert!(log_a.contains("was taken by daemon"), "{log_a}");

    // The new owner goes on alone.
    for round in 4..6 {
        my_round(&db, round);
    }
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    assert_eq!(a.task("my").unwrap()["phase"], "standby");
    assert_my_target_equals_source(&db, &out);
}

/// A daemon alone, paused past its fence but not its lease (a long stall: a third of the lease
/// without a renewal), refuses to write and stops the task; it then runs the task again by
/// itself once its own lease expires (nobody else would), never leaving it `failed`, and every
/// change reaches the target exactly once. (A write refused before a late renewal landed used
/// to fail the task for good: the renewal made the lease look held, so the daemon released it
/// and kept the error.)
#[test]
fn a_lone_daemon_stalled_past_its_fence_runs_its_task_again() {
    let dir = tempfile::tempdir().unwrap();
    let (db, tasks, out) = my_fleet_setup(dir.path(), [LEASE_S; 2]);
    let checkpoint = out.join("_inlet/my/checkpoint");
    let a = Daemon::start(&tasks[0], dir.path(), "a", &[]);
    a.wait_phase("my", "streaming", Duration::from_secs(30));
    let a_id = a.id();
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    common::mysql_audit::clear(&db);
    my_round(&db, 0);
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));

    // Stalled for 0.45 L: past the fence (L/3 after the last renewal), short of the expiry a
    // watcher would wait (L/2 unchanged), with changes arriving.
    a.signal("-STOP");
    my_round(&db, 1);
    std::thread::sleep(Duration::from_secs(LEASE_S) * 45 / 100);
    a.signal("-CONT");
    my_round(&db, 2);
    // Running again, by itself, within the lease (its own record expires, then it waits out
    // its own former fence), and never failed on the way.
    let deadline = Instant::now() + TAKEOVER_WITHIN + Duration::from_secs(5);
    loop {
        let t = a.task("my").unwrap();
        assert_ne!(t["phase"], "failed", "{t}");
        if t["phase"] == "streaming" && t["owner"] == a_id.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{t}\n{}",
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 3..5 {
        my_round(&db, round);
    }
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    // A refused write is no failure of the task: not logged or counted as one.
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(!log.contains("it will not be retried"), "{log}");
    assert_my_target_equals_source(&db, &out);
}

/// Two daemons with different service.lease_seconds (a rolling config change): the owner's
/// lease is 12 s (it renews every 2 s and writes until 4 s after a renewal), the watcher's
/// 3 s. The watcher goes by the owner's lease, which its record carries: it leaves the live
/// owner alone (by its own lease it would take the task whenever a renewal is 1.5 s old, and
/// run it beside the owner), and after the owner is paused it starts the task only once the
/// owner's own fence has surely passed, and within the owner's lease.
#[test]
fn a_daemon_with_a_shorter_lease_waits_by_the_owners_lease() {
    const OWNER_S: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let (db, tasks, out) = my_fleet_setup(dir.path(), [OWNER_S, LEASE_S]);
    let checkpoint = out.join("_inlet/my/checkpoint");
    let a = Daemon::start(&tasks[0], dir.path(), "a", &[]);
    a.wait_phase("my", "streaming", Duration::from_secs(30));
    let a_id = a.id();
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    common::mysql_audit::clear(&db);
    let b = Daemon::start(&tasks[1], dir.path(), "b", &[]);
    b.wait_phase("my", "standby", Duration::from_secs(10));
    // Five seconds: more than three of the watcher's own expiries, and as many of the
    // owner's renewals, each 2 s after the last.
    let watched = Instant::now();
    let mut round = 0;
    while watched.elapsed() < Duration::from_secs(5) {
        let t = b.task("my").unwrap();
        assert!(
            t["phase"] == "standby" && t["owner"] == a_id.as_str(),
            "the daemon with the shorter lease took the live owner's task: {t}"
        );
        if round < 2 {
            my_round(&db, round);
            round += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.task("my").unwrap()["phase"], "streaming");

    a.signal("-STOP");
    let stopped = Instant::now();
    // Within the owner's lease, with TAKEOVER_WITHIN's slack for it.
    let running = b.wait_running(
        "my",
        Duration::from_millis(OWNER_S * 1000 + OWNER_S * 1000 / 12 + 2000),
    );
    eprintln!(
        "takeover after SIGSTOP, owner's lease {OWNER_S} s, taker's {LEASE_S} s: {:?}",
        running - stopped
    );
    // The paused owner writes until a third of its lease after its last renewal, which was
    // at most a sixth of it before the stop.
    assert!(
        running - stopped >= Duration::from_secs(OWNER_S) / 3,
        "started {:?} after the stop, before the owner's own fence",
        running - stopped
    );
    let log_b = std::fs::read_to_string(&b.log).unwrap();
    assert!(log_b.contains("waiting 4.0 s"), "{log_b}");
    for round in 2..4 {
        my_round(&db, round);
    }
    my_caught_up(&db, &checkpoint, Duration::from_secs(30));
    assert_my_target_equals_source(&db, &out);
}

/// A task file of the fleet test: `source` and `target` are the TOML of those sections.
fn fleet_task(name: &str, source: &str, include: &str, target: &str) -> String {
    format!(
        r#"
[task]
name = "{name}"
mode = "full-load-and-cdc"
[source]
{source}
tls = "disable"
[target]
{target}
[tables]
include = ["{include}"]
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
[service]
lease_seconds = 3
"#
    )
}

/// Round `round` of changes to PostgreSQL table `table` (accounts' shape): inserts, updates,
/// a key change and a delete.
async fn pg_round(client: &tokio_postgres::Client, table: &str, round: i64) {
    let base = 10_000 + round * 100;
    let r = round % 7;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES ({base}, 0, 'new', 1.5), ({base} + 1, 0, 'new', 2.5);
             UPDATE {table} SET version = version + 1, balance = balance + 1 WHERE id % 7 = {r} AND id <= 300;
             BEGIN;
               UPDATE {table} SET id = id + 1000000 WHERE id = {base} + 1;
               DELETE FROM {table} WHERE id = {round} + 1;
             COMMIT;"
        ))
        .await
        .unwrap();
}

/// The same round on MariaDB table `shop.TABLE`.
fn my_table_round(db: &inlet_testkit::MariaDbServer, table: &str, round: i64) {
    let base = 10_000 + round * 100;
    let r = round % 7;
    db.admin(&format!(
        "USE shop;
         INSERT INTO {table} VALUES ({base}, 0, 'new', 1.5), ({base} + 1, 0, 'new', 2.5);
         UPDATE {table} SET version = version + 1, balance = balance + 1 WHERE id % 7 = {r} AND id <= 300;
         BEGIN;
           UPDATE {table} SET id = id + 1000000 WHERE id = {base} + 1;
           DELETE FROM {table} WHERE id = {round} + 1;
         COMMIT;"
    ));
}

/// Which of `daemons` (None: stopped or killed, not asked) runs each task, from their
/// `/status`: a task runs where the daemon names itself its owner and it is not `standby`.
/// Panics when a task runs in two.
fn runners(daemons: &[Option<&Daemon>], names: &[&str]) -> Vec<Vec<usize>> {
    let docs: Vec<Option<serde_json::Value>> =
        daemons.iter().map(|d| d.and_then(Daemon::status)).collect();
    match std::panic::catch_unwind(|| runners_in(&docs, names)) {
        Ok(claims) => claims,
        Err(e) => {
            // What each daemon logged says which of them wrote (the check panics before the
            // read-back would).
            let logs: Vec<String> = daemons
                .iter()
                .flatten()
                .map(|d| std::fs::read_to_string(&d.log).unwrap_or_default())
                .collect();
            panic!(
                "{}\n/status read: {docs:?}\ndaemon logs:\n{}",
                e.downcast_ref::<String>().cloned().unwrap_or_default(),
                logs.join("\n----\n")
            )
        }
    }
}

/// [`runners`] from `/status` documents already read.
fn runners_in(docs: &[Option<serde_json::Value>], names: &[&str]) -> Vec<Vec<usize>> {
    let claims: Vec<Vec<usize>> = names
        .iter()
        .map(|name| {
            let running: Vec<usize> = docs
                .iter()
                .enumerate()
                .filter_map(|(i, doc)| {
                    let t = doc.as_ref()?["tasks"]
                        .as_array()?
                        .iter()
                        .find(|t| t["task"] == *name)?
                        .clone();
                    let own = t["owner"] == doc.as_ref()?["daemon"];
                    (own && t["phase"] != "standby").then_some(i)
                })
                .collect();
            running
        })
        .collect();
    for (name, running) in names.iter().zip(&claims) {
        assert!(
            running.len() <= 1,
            "task {name} runs in daemons {running:?}"
        );
    }
    claims
}

/// Three daemons over one folder of twelve task files (PostgreSQL and MariaDB sources; Parquet in
/// a folder and on S3 (moto), Iceberg): each task has exactly one owner, the others report it
/// owned by that one; SIGKILL one daemon and SIGSTOP another past its lease: the third takes
/// every task, the stopped one, continued, runs none, and every table equals its source with
/// no change file overlapping another.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_three_daemons_keeps_one_writer_per_task_through_a_kill_and_a_pause() {
    // A walsender whose client stopped answering is ended after 5 s, freeing the slot for the
    // daemon that takes the task (PostgreSQL's own guard against two consumers of a slot).
    let pg = PgServer::start_with_options("-c wal_sender_timeout=5s");
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    let db = inlet_testkit::MariaDbServer::start();
    db.admin("CREATE DATABASE shop");
    // Twelve tasks, as the fleet issue asks: six per source, each target kind twice.
    let pg_tables = ["pa", "pb", "pc", "pd", "pe", "pf"];
    let my_tables = ["ma", "mb", "mc", "md", "me", "mf"];
    for t in pg_tables {
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, version int NOT NULL, owner text, \
                 balance numeric(12,2));
                 INSERT INTO {t} SELECT g, 0, 'owner ' || g, g * 10 FROM generate_series(1, 300) g;"
            ))
            .await
            .unwrap();
    }
    for t in my_tables {
        db.admin(&format!(
            "USE shop;
             CREATE TABLE {t} (id bigint PRIMARY KEY, version int NOT NULL, owner varchar(200),
                 balance decimal(12,2));
             INSERT INTO {t} SELECT seq, 0, CONCAT('owner ', seq), seq * 10 FROM seq_1_to_300;"
        ));
    }
    // A commit after the DDL, outside the selection (see my_fleet_setup).
    db.admin(
        "CREATE DATABASE other; CREATE TABLE other.t (id int); INSERT INTO other.t VALUES (1)",
    );
    let mut moto = Moto::start();
    moto.create_bucket("lake");
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];

    let dir = tempfile::tempdir().unwrap();

    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let local = dir.path().join("out");
    let pg_source = format!("kind = \"postgres\"\nurl = \"{}\"", pg.url("shop"));
    let my_source = format!(
        "kind = \"mysql\"\nurl = \"{}\"\nheartbeat_seconds = 1",
        db.url("shop")
    );
    let parquet = |sub: &str| {
        format!(
            "kind = \"parquet\"\nurl = \"{}\"",
            local.join(sub).display()
        )
    };
    let iceberg = |sub: &str| {
        format!(
            "kind = \"iceberg\"\nwarehouse = \"{}\"",
            local.join(sub).display()
        )
    };
    // Each source's tables cycle through Parquet in a folder, Iceberg, and Parquet on S3.
    let target_of = |name: &str, i: usize| match i % 3 {
        0 => parquet(name),
        1 => iceberg(name),
        _ => format!("kind = \"parquet\"\nurl = \"s3://lake/{name}\""),
    };
    let kinds = ["pq", "ice", "s3"];
    let mut specs: Vec<(String, String, String, String)> = Vec::new();
    for (i, t) in pg_tables.iter().enumerate() {
        let name = format!("pg_{}{}", kinds[i % 3], i / 3);
        let target = target_of(&name, i);
        specs.push((name, pg_source.clone(), format!("public.{t}"), target));
    }
    for (i, t) in my_tables.iter().enumerate() {
        let name = format!("my_{}{}", kinds[i % 3], i / 3);
        let target = target_of(&name, i);
        specs.push((name, my_source.clone(), format!("shop.{t}"), target));
    }
    let names: Vec<&str> = specs.iter().map(|s| s.0.as_str()).collect();
    for (name, source, include, target) in &specs {
        task_file(&tasks, name, &fleet_task(name, source, include, target));
    }

    let fleet: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::start(&tasks, dir.path(), n, &env))
        .collect();
    let ids: Vec<String> = fleet.iter().map(Daemon::id).collect();
    // Every task runs in exactly one daemon, and the others name that one as its owner.
    let deadline = Instant::now() + Duration::from_secs(30);
    let owners = loop {
        let all: Vec<Option<&Daemon>> = fleet.iter().map(Some).collect();
        let r = runners(&all, &names);
        let streaming = names.iter().zip(&r).all(|(name, r)| {
            r.len() == 1
                && fleet[r[0]]
                    .task(name)
                    .is_some_and(|t| t["phase"] == "streaming")
        });
        if streaming {
            break r.into_iter().map(|r| r[0]).collect::<Vec<usize>>();
        }
        assert!(Instant::now() < deadline, "the tasks did not settle: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for (name, &owner) in names.iter().zip(&owners) {
        for (i, d) in fleet.iter().enumerate() {
            let t = d.task(name).unwrap();
            assert_eq!(t["owner"], ids[owner].as_str(), "{name} in daemon {i}: {t}");
        }
    }
    for round in 0..2 {
        for t in pg_tables {
            pg_round(&client, t, round).await;
        }
        for t in my_tables {
            my_table_round(&db, t, round);
        }
    }

    // SIGSTOP the daemon with the most tasks, SIGKILL another: the third takes everything.
    // The pause is the one whose tasks move by the lease's expiry (a killed daemon on this
    // host is seen gone at once), so it gets the most: the start-up race sometimes leaves
    // every task to one daemon.
    let count = |i: usize| owners.iter().filter(|&&o| o == i).count();
    let paused = (0..3).max_by_key(|&i| count(i)).unwrap();
    let killed = (0..3)
        .filter(|&i| i != paused)
        .max_by_key(|&i| count(i))
        .unwrap();
    let survivor = 3 - killed - paused;
    let mut fleet = fleet;
    fleet[killed].kill();
    let killed_at = Instant::now();
    fleet[paused].signal("-STOP");
    let paused_at = Instant::now();
    // Issue 17: a dead daemon's tasks run elsewhere within one lease; a paused one's too (to
    // the others it is dead; on this host a killed daemon's process is seen gone, so its
    // tasks are not even waited for). Measured from the signal to the survivor's first
    // /status naming itself the owner of a running task.
    let survivor_id = ids[survivor].as_str();
    let mut took: Vec<Option<Duration>> = names
        .iter()
        .zip(&owners)
        .map(|(_, &o)| (o == survivor).then_some(Duration::ZERO))
        .collect();
    while took.iter().any(Option::is_none) && paused_at.elapsed() < TAKEOVER_WITHIN {
        if let Some(doc) = fleet[survivor].status() {
            for ((name, &owner), took) in names.iter().zip(&owners).zip(took.iter_mut()) {
                let t = doc["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["task"] == *name);
                let running =
                    t.is_some_and(|t| t["owner"] == survivor_id && t["phase"] != "standby");
                if running && took.is_none() {
                    let since = if owner == killed {
                        killed_at
                    } else {
                        paused_at
                    };
                    *took = Some(since.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let times: Vec<String> = names
        .iter()
        .zip(&owners)
        .zip(&took)
        .filter(|((_, &o), _)| o != survivor)
        .map(|((name, &o), t)| {
            let how = if o == killed { "SIGKILL" } else { "SIGSTOP" };
            format!("{name} after {how}: {t:?}")
        })
        .collect();
    eprintln!("takeovers: {}", times.join(", "));
    assert!(
        took.iter().all(Option::is_some),
        "not running in daemon {survivor} within {TAKEOVER_WITHIN:?} of the signal: {}\n{}",
        times.join(", "),
        std::fs::read_to_string(&fleet[survivor].log).unwrap_or_default()
    );
    for round in 2..4 {
        for t in pg_tables {
            pg_round(&client, t, round).await;
        }
        for t in my_tables {
            my_table_round(&db, t, round);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all: Vec<Option<&Daemon>> = vec![Some(&fleet[survivor])];
        let r = runners(&all, &names);
        let everything = names.iter().all(|name| {
            fleet[survivor]
                .task(name)
                .is_some_and(|t| t["phase"] == "streaming" && t["owner"] == ids[survivor].as_str())
        });
        if everything {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {survivor} did not take every task: {r:?}\n{}",
            std::fs::read_to_string(&fleet[survivor].log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Continued, the paused daemon runs nothing, from its very first /status on (its tasks
    // are fenced at once): each task still has one writer.
    let first = fleet[paused].continue_and_status();
    let r = runners_in(&[fleet[survivor].status(), Some(first)], &names);
    assert!(
        r.iter().all(|r| r == &[0]),
        "the first /status after SIGCONT: {r:?}"
    );
    for _ in 0..15 {
        let pair = [Some(&fleet[survivor]), Some(&fleet[paused])];
        let r = runners(&pair, &names);
        assert!(
            r.iter().all(|r| r == &[0]),
            "after SIGCONT: {r:?}\nsurvivor: {:?}\n{}",
            fleet[survivor].status(),
            std::fs::read_to_string(&fleet[survivor].log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for round in 4..5 {
        for t in pg_tables {
            pg_round(&client, t, round).await;
        }
        for t in my_tables {
            my_table_round(&db, t, round);
        }
    }

    // Everything committed reaches every target, once.
    let pg_columns = ["id", "version", "owner", "balance"];
    let deadline = Instant::now() + Duration::from_secs(60);
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    for name in names.iter().filter(|n| n.starts_with("pg_")) {
        loop {
            let confirmed = client
                .query_opt(
                    "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots \
                     WHERE slot_name = $2",
                    &[&target, &format!("inlet_{name}")],
                )
                .await
                .unwrap()
                .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
            if confirmed {
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for name in names
        .iter()
        .filter(|n| n.starts_with("my_") && !n.contains("s3"))
    {
        my_caught_up(
            &db,
            &local.join(format!("{name}/_inlet/{name}/checkpoint")),
            Duration::from_secs(30),
        );
    }
    let s3 = dir.path().join("s3");
    let download = || {
        let _ = std::fs::remove_dir_all(&s3);
        let out = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/readers/s3_download.py"
            ))
            .args([&moto.endpoint, "lake", "", s3.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    loop {
        download();
        let (seq, offset) = common::mysql_stream::binlog_end(&db);
        let caught_up = names.iter().filter(|n| n.starts_with("my_s3")).all(|name| {
            let at = common::pg_stream::checkpoint_position(
                &s3.join(format!("{name}/_inlet/{name}/checkpoint")),
            );
            at.is_some_and(|p| p >= (seq << 32) | offset)
        });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the MariaDB tasks on S3 did not catch up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let select: Vec<String> = pg_columns.iter().map(|c| format!("{c}::text")).collect();
    for (name, _, include, target) in &specs {
        let (schema, table) = include.split_once('.').unwrap();
        let base = if target.contains("s3://") {
            &s3
        } else {
            &local
        };
        let table_dir = base.join(name).join(schema).join(table);
        let is_pg = name.starts_with("pg_");
        if target.contains("iceberg") {
            let mut want: common::iceberg::Rows = if is_pg {
                client
                    .query(&format!("SELECT {} FROM {table}", select.join(", ")), &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..pg_columns.len()).map(|i| r.get(i)).collect())
                    .collect()
            } else {
                common::mysql_rows::source_rows(&db, include, &pg_columns)
                    .into_values()
                    .collect()
            };
            want.sort();
            let (pyiceberg, duckdb) = common::iceberg::read_iceberg(&table_dir);
            assert_eq!(pyiceberg, want, "{name}: pyiceberg");
            assert_eq!(duckdb, want, "{name}: duckdb");
            continue;
        }
        // On an overlap, what each daemon said of the task: its takes, fences and sweeps.
        let files = overlapping_change_files(&table_dir).unwrap_or_else(|e| {
            let said: Vec<String> = fleet
                .iter()
                .map(|d| {
                    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                    let lines: Vec<&str> =
                        log.lines().filter(|l| l.contains(name.as_str())).collect();
                    format!("{}:\n{}", d.log.display(), lines.join("\n"))
                })
                .collect();
            panic!("{name}: {e}\n{}", said.join("\n"))
        });
        assert!(files > 0, "{name}: {}", table_dir.display());
        if is_pg {
            assert_eq!(
                replay(&table_dir, &pg_columns),
                source_rows(&client, table, &pg_columns).await,
                "{name}"
            );
        } else {
            let want = common::mysql_rows::source_rows(&db, include, &pg_columns);
            let got = common::mysql_rows::replay_to_end(&table_dir, &pg_columns);
            common::mysql_rows::assert_rows_equal(include, "replay", &want, &got);
        }
    }
}

/// `service.max_tasks` and SIGTERM's release: two daemons allowed one task each run one of the
/// two tasks each; the one running the Iceberg task is stopped (SIGTERM): its lease is
/// released, the other daemon, full, leaves the task alone, and a third daemon takes it at once
/// (the lease of 30 s has not expired). The Iceberg table records the new owner's epoch, and
/// both tables equal their sources.
#[tokio::test(flavor = "multi_thread")]
async fn max_tasks_spreads_the_tasks_and_a_stopped_daemon_hands_its_task_over_at_once() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    for t in ["ta", "tb"] {
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, version int NOT NULL, owner text, \
                 balance numeric(12,2));
                 INSERT INTO {t} SELECT g, 0, 'owner ' || g, g * 10 FROM generate_series(1, 300) g;"
            ))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let warehouse = dir.path().join("warehouse");
    let out = dir.path().join("out");
    let source = format!("kind = \"postgres\"\nurl = \"{}\"", pg.url("shop"));
    let service = "[service]\nlease_seconds = 30\nmax_tasks = 1\n";
    for (name, include, target) in [
        (
            "ice",
            "public.ta",
            format!(
                "kind = \"iceberg\"\nwarehouse = \"{}\"",
                warehouse.display()
            ),
        ),
        (
            "pq",
            "public.tb",
            format!("kind = \"parquet\"\nurl = \"{}\"", out.display()),
        ),
    ] {
        let body = fleet_task(name, &source, include, &target)
            .replace("[service]\nlease_seconds = 3\n", service);
        task_file(&tasks, name, &body);
    }
    let names = ["ice", "pq"];
    let a = Daemon::start(&tasks, dir.path(), "a", &[]);
    let b = Daemon::start(&tasks, dir.path(), "b", &[]);
    let mut fleet = [a, b];
    let deadline = Instant::now() + Duration::from_secs(30);
    let owners = loop {
        let all: Vec<Option<&Daemon>> = fleet.iter().map(Some).collect();
        let r = runners(&all, &names);
        let streaming = names.iter().zip(&r).all(|(name, r)| {
            r.len() == 1
                && fleet[r[0]]
                    .task(name)
                    .is_some_and(|t| t["phase"] == "streaming")
        });
        if streaming {
            break r.into_iter().map(|r| r[0]).collect::<Vec<usize>>();
        }
        assert!(Instant::now() < deadline, "the tasks did not settle: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(
        owners[0], owners[1],
        "one daemon runs both tasks despite max_tasks = 1"
    );
    for round in 0..2 {
        pg_round(&client, "ta", round).await;
        pg_round(&client, "tb", round).await;
    }

    // SIGTERM the daemon running "ice": it flushes and releases the lease.
    let (stopping, full) = (owners[0], owners[1]);
    assert_eq!(sigterm_and_wait(&mut fleet[stopping].child), 0);
    let released = Instant::now();
    let log = std::fs::read_to_string(&fleet[stopping].log).unwrap();
    assert!(log.contains("released the task's lease"), "{log}");
    // The full daemon reads the lease every 5 s (a sixth of it), and leaves the task alone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = fleet[full].task("ice").unwrap();
        assert_eq!(t["phase"], "standby", "{t}");
        if t["reason"]
            .as_str()
            .unwrap()
            .contains("nobody owns it, and this daemon already runs service.max_tasks = 1 tasks")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    pg_round(&client, "ta", 2).await;
    let c = Daemon::start(&tasks, dir.path(), "c", &[]);
    let c_id = c.id();
    let t = c.wait_phase("ice", "streaming", Duration::from_secs(20));
    assert!(
        released.elapsed() < Duration::from_secs(25),
        "taken only after the lease expired"
    );
    assert_eq!(t["owner"], c_id.as_str());
    assert_eq!(t["lease_epoch"], 2);
    pg_round(&client, "ta", 3).await;
    pg_round(&client, "tb", 3).await;

    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let confirmed = client
                .query_opt(
                    "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots \
                     WHERE slot_name = $2",
                    &[&target, &format!("inlet_{name}")],
                )
                .await
                .unwrap()
                .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
            if confirmed {
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let columns = ["id", "version", "owner", "balance"];
    assert_eq!(
        replay(&out.join("public/tb"), &columns),
        source_rows(&client, "tb", &columns).await
    );
    assert!(assert_no_overlapping_change_files(&out.join("public/tb")) > 0);
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let mut want: common::iceberg::Rows = client
        .query(&format!("SELECT {} FROM ta", select.join(", ")), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
        .collect();
    want.sort();
    let table_dir = warehouse.join("public/ta");
    let (pyiceberg, duckdb) = common::iceberg::read_iceberg(&table_dir);
    assert_eq!(pyiceberg, want, "pyiceberg");
    assert_eq!(duckdb, want, "duckdb");
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::iceberg::current_metadata(&table_dir)).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["properties"]["inlet.owner.ice"], "2", "{metadata}");
}

/// The `full load starting` lines of task `name` in the logs of `daemons`.
fn full_loads_logged(daemons: &[&Daemon], name: &str) -> usize {
    daemons
        .iter()
        .map(|d| {
            std::fs::read_to_string(&d.log)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.contains("full load starting") && l.contains(&format!("task={name} "))
                })
                .count()
        })
        .sum()
}

/// A `task.mode = "full-load"` task in a fleet runs once for the daemons running when it
/// finishes (README "Task ownership"): three daemons share a folder with a full-load task and a
/// CDC task (which keeps them running); one loads the table, the others show it `done`, owned by
/// that one and saying so, and nobody loads it again for more than two lease periods (with the
/// lease released instead, the others loaded it again at once: three loads). A daemon started
/// afterwards loads it again, with the rows added since.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_load_task_runs_once_in_a_fleet_and_again_in_a_daemon_started_later() {
    let pg = PgServer::start();
    let admin = pg.client("postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    let client = pg.client("shop").await;
    for (t, rows) in [("fl", 300), ("live", 10)] {
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, version int NOT NULL, owner text, \
                 balance numeric(12,2));
                 INSERT INTO {t} SELECT g, 0, 'owner ' || g, g * 10 FROM generate_series(1, {rows}) g;"
            ))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let out = dir.path().join("out");
    let source = format!("kind = \"postgres\"\nurl = \"{}\"", pg.url("shop"));
    let target = format!("kind = \"parquet\"\nurl = \"{}\"", out.display());
    let full_load = fleet_task("fl", &source, "public.fl", &target)
        .replace("mode = \"full-load-and-cdc\"", "mode = \"full-load\"");
    task_file(&tasks, "fl", &full_load);
    task_file(
        &tasks,
        "live",
        &fleet_task("live", &source, "public.live", &target),
    );
    let fleet: Vec<Daemon> = ["a", "b", "c"]
        .into_iter()
        .map(|n| Daemon::start(&tasks, dir.path(), n, &[]))
        .collect();
    let ids: Vec<String> = fleet.iter().map(Daemon::id).collect();
    let done: Vec<serde_json::Value> = fleet
        .iter()
        .map(|d| d.wait_phase("fl", "done", Duration::from_secs(20)))
        .collect();
    let loader = ids
        .iter()
        .position(|id| done[0]["owner"] == id.as_str())
        .unwrap_or_else(|| panic!("owner {} is none of {ids:?}", done[0]["owner"]));
    let columns = ["id", "version", "owner", "balance"];
    let loaded = source_rows(&client, "fl", &columns).await;
    assert_eq!(replay(&out.join("public/fl"), &columns), loaded);
    // Rows the task would copy if it loaded again.
    client
        .batch_execute(
            "INSERT INTO fl SELECT g, 1, 'later ' || g, g FROM generate_series(1001, 1005) g",
        )
        .await
        .unwrap();
    let all: Vec<&Daemon> = fleet.iter().collect();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(7) {
        assert_eq!(full_loads_logged(&all, "fl"), 1, "loaded more than once");
        for (i, d) in fleet.iter().enumerate() {
            let t = d.task("fl").unwrap();
            assert_eq!(t["phase"], "done", "daemon {i}: {t}");
            assert_eq!(t["owner"], ids[loader].as_str(), "daemon {i}: {t}");
            assert_eq!(t["lease_epoch"], 1, "daemon {i}: {t}");
            if i == loader {
                // As a single daemon shows its own finished load.
                assert!(t.get("reason").is_none(), "{t}");
            } else {
                let reason = t["reason"].as_str().unwrap();
                assert!(
                    reason.starts_with(&format!(
                        "loaded by daemon {} (lease epoch 1) at ",
                        ids[loader]
                    )),
                    "daemon {i}: {t}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for d in &fleet {
        wait_for_code(&d.address, "/readyz", 200, Duration::from_secs(20));
    }
    assert_eq!(replay(&out.join("public/fl"), &columns), loaded);
    let log = std::fs::read_to_string(&fleet[loader].log).unwrap();
    assert!(log.contains("recorded the finished full load"), "{log}");

    // A daemon started after the load finished (a new `inlet run`) loads it again.
    let d = Daemon::start(&tasks, dir.path(), "d", &[]);
    let d_id = d.id();
    let t = d.wait_phase("fl", "done", Duration::from_secs(20));
    assert_eq!(t["owner"], d_id.as_str(), "{t}");
    assert_eq!(t["lease_epoch"], 2, "{t}");
    let all: Vec<&Daemon> = fleet.iter().chain([&d]).collect();
    assert_eq!(full_loads_logged(&all, "fl"), 2);
    assert_eq!(full_loads_logged(&[&d], "fl"), 1);
    assert_eq!(
        replay(&out.join("public/fl"), &columns),
        source_rows(&client, "fl", &columns).await
    );
    for d in &fleet {
        assert_eq!(d.task("fl").unwrap()["owner"], ids[loader].as_str());
    }
}

/// A daemon paused in the middle of a task's initial load (`full-load-and-cdc`, its table
/// written to all along): the daemon that takes the task keeps the chunks the paused one
/// completed and loads only the rest, and streams while the paused daemon still holds its
/// connections; the paused daemon, continued, writes nothing more; the LOAD files plus the
/// change files replay to the source, no change lost or applied twice (every update increments
/// `version`).
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owners_initial_load_is_finished_by_the_daemon_that_takes_the_task() {
    paused_owners_initial_load(false).await;
}

/// The same on MariaDB (the stream's start is the load's record at `_inlet/<task>.load-start`,
/// the paused daemon's binlog connection is ended by the server when the new owner's, with the
/// same replica id, starts).
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owners_mariadb_initial_load_is_finished_by_the_daemon_that_takes_the_task() {
    paused_owners_initial_load(true).await;
}

/// The source of [`paused_owners_initial_load`]: 600,000 rows of `big`, odd keys in key order,
/// analyzed (read in key ranges), and a workload of small transactions all over the key range
/// until `stop`.
enum LoadSource {
    Pg(Box<(PgServer, tokio_postgres::Client)>),
    My(Arc<inlet_testkit::MariaDbServer>),
}

const BIG_ROWS: u64 = 600_000;

impl LoadSource {
    async fn start(mariadb: bool) -> Self {
        if mariadb {
            let db = Arc::new(inlet_testkit::MariaDbServer::start());
            db.admin(&format!(
                "CREATE DATABASE shop;
                 USE shop;
                 CREATE TABLE shop.big (id bigint PRIMARY KEY, version int NOT NULL, label text);
                 INSERT INTO shop.big SELECT 2 * seq - 1, 0, CONCAT('row ', seq)
                   FROM seq_1_to_{BIG_ROWS};
                 ANALYZE TABLE shop.big;"
            ));
            return Self::My(db);
        }
        let pg = PgServer::start();
        let client = pg.client("postgres").await;
        client
            .batch_execute(&format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, version int NOT NULL, label text);
                 INSERT INTO big SELECT 2 * g - 1, 0, 'row ' || g
                   FROM generate_series(1, {BIG_ROWS}) g;
                 ANALYZE big;"
            ))
            .await
            .unwrap();
        Self::Pg(Box::new((pg, client)))
    }

    /// The `[source]` lines and the table's name in the task and in the target.
    fn task_lines(&self) -> (String, &'static str, &'static str) {
        match self {
            Self::Pg(pg) => (
                format!("kind = \"postgres\"\nurl = \"{}\"", pg.0.url("postgres")),
                "public.big",
                "public/big",
            ),
            Self::My(db) => (
                format!("kind = \"mysql\"\nurl = \"{}\"", db.url("shop")),
                "shop.big",
                "shop/big",
            ),
        }
    }

    async fn write(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
        let span = 2 * BIG_ROWS;
        match self {
            Self::Pg(pg) => {
                let client = pg.0.client("postgres").await;
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        client
                            .batch_execute(&format!(
                                "UPDATE big SET version = version + 1, label = 'updated' \
                                   WHERE id = (SELECT min(id) FROM big \
                                   WHERE id >= (random() * {span})::bigint);
                                 INSERT INTO big SELECT x, 0, 'inserted' FROM \
                                   (SELECT 2 * (1 + (random() * {BIG_ROWS})::bigint) AS x) s \
                                   ON CONFLICT DO NOTHING;
                                 DELETE FROM big WHERE id = (SELECT min(id) FROM big \
                                   WHERE id >= (random() * {span})::bigint);"
                            ))
                            .await
                            .unwrap();
                        n += 1;
                    }
                    n
                })
            }
            Self::My(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        db.admin(&format!(
                            "SET @r = FLOOR(RAND() * {span});
                             SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r;
                             UPDATE shop.big SET version = version + 1, label = 'updated'
                               WHERE id = @x;
                             INSERT IGNORE INTO shop.big
                               VALUES (2 * (1 + FLOOR(RAND() * {BIG_ROWS})), 0, 'inserted');
                             SET @r = FLOOR(RAND() * {span});
                             SELECT MIN(id) INTO @x FROM shop.big WHERE id >= @r;
                             DELETE FROM shop.big WHERE id = @x;"
                        ));
                        n += 1;
                    }
                    n
                })
            }
        }
    }

    /// Waits until the task `child` runs holds everything the source committed.
    async fn wait_caught_up(&self, child: &mut Child, checkpoint: &Path, task: &str) {
        match self {
            Self::Pg(pg) => {
                let slot = format!("inlet_{task}");
                common::pg_stream::wait_caught_up(&pg.1, child, checkpoint, &slot).await
            }
            Self::My(db) => common::mysql_stream::wait_caught_up(db, child, checkpoint, 0),
        }
    }

    /// Asserts the table's folder replays to the source.
    async fn assert_replays(&self, table_dir: &Path) {
        let columns = ["id", "version", "label"];
        match self {
            Self::Pg(pg) => {
                let want = source_rows(&pg.1, "big", &columns).await;
                let got = replay(table_dir, &columns);
                assert_eq!(got.len(), want.len(), "row count");
                assert!(got == want, "replayed rows differ from the source");
            }
            Self::My(db) => {
                let want = common::mysql_rows::source_rows(db, "shop.big", &columns);
                let got = common::mysql_rows::replay_to_end(table_dir, &columns);
                common::mysql_rows::assert_rows_equal("shop.big", "a replay", &want, &got);
            }
        }
    }
}

async fn paused_owners_initial_load(mariadb: bool) {
    let source = LoadSource::start(mariadb).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = source.write(stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    let out = dir.path().join("out");
    let (source_lines, table, folder) = source.task_lines();
    task_file(
        &tasks,
        "bigload",
        &format!(
            r#"
[task]
name = "bigload"
mode = "full-load-and-cdc"
[source]
{source_lines}
tls = "disable"
[target]
kind = "parquet"
url = "{}"
[tables]
include = ["{table}"]
[full_load]
workers = 2
chunk_mb = 1
batch_rows = 5000
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
[service]
lease_seconds = {LEASE_S}
"#,
            out.display()
        ),
    );
    let table_dir = out.join(folder);
    let mut a = Daemon::start(&tasks, dir.path(), "a", &[]);
    a.wait_running("bigload", Duration::from_secs(30));
    let mut b = Daemon::start(&tasks, dir.path(), "b", &[]);
    b.wait_phase("bigload", "standby", Duration::from_secs(10));

    // Paused once a few chunks are recorded (in flight: one chunk per worker).
    let record = table_dir.join("_inlet_load/PROGRESS");
    common::resume::wait_for_done_chunks(&record, 3, &a.log, Duration::from_secs(60));
    a.signal("-STOP");
    let kept = common::resume::done_chunks(&record);
    b.wait_running("bigload", TAKEOVER_WITHIN);
    // The new owner loads the rest.
    let deadline = Instant::now() + Duration::from_secs(120);
    let resumed = loop {
        let log = std::fs::read_to_string(&b.log).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("resumed full load complete"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the new owner did not complete the load:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // (More when the new owner itself was interrupted, starved of CPU past its fence.)
    let kept_chunks: usize = resumed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kept_chunks="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no kept_chunks in {resumed}"));
    assert!(
        kept_chunks >= kept,
        "the {kept} chunks the paused owner recorded were not kept: {resumed}"
    );
    // It streams with the paused daemon still holding its connections.
    let t = b.wait_phase("bigload", "streaming", Duration::from_secs(60));
    eprintln!(
        "the new owner streams under lease epoch {}",
        t["lease_epoch"]
    );
    let load_files = || -> Vec<std::path::PathBuf> {
        common::load_files(&table_dir)
            .into_iter()
            .filter(|p| common::replay::file_name(p).starts_with("LOAD"))
            .collect()
    };
    let files_before = load_files();
    let first = a.continue_and_status();
    let t = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "bigload")
        .unwrap()
        .clone();
    assert_eq!(
        t["phase"], "standby",
        "the first /status after SIGCONT: {t}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.await.unwrap();
    let checkpoint = out.join("_inlet/bigload/checkpoint");
    source
        .wait_caught_up(&mut b.child, &checkpoint, "bigload")
        .await;
    assert_eq!(a.task("bigload").unwrap()["phase"], "standby");
    assert_eq!(
        load_files(),
        files_before,
        "the continued daemon changed the LOAD files"
    );
    source.assert_replays(&table_dir).await;
    eprintln!("{transactions} writing transactions; kept {kept} chunks: {resumed}");
    a.kill();
}
