//! Bad inputs and faults, table-driven where the cases share a shape: each case runs the real
//! binary and asserts the exit code, that the message names the key or host and says what to
//! do, that the process ends within its bound, and that no secret appears in any output.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::task_file;

const SECRET: &str = "Sekret_42-never-shown";

/// How a run of the binary ended: exit code (None when it had to be killed at the deadline),
/// stdout, stderr and how long it took.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    fn assert_no_secret(&self, secrets: &[&str]) {
        for s in secrets {
            assert!(
                !self.all_output().contains(s),
                "{s:?} appears in the output:\n{}",
                self.all_output()
            );
        }
    }
}

/// Runs `inlet ARGS…`, killing it if it outlives `deadline` (so a hang fails the test instead
/// of holding it).
fn inlet_within(dir: &Path, args: &[&str], deadline: Duration) -> Outcome {
    let out_path = dir.join(format!("out-{}", args[0]));
    let err_path = dir.join(format!("err-{}", args[0]));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start inlet");
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st.code().unwrap_or(-1));
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        code,
        took: started.elapsed(),
        stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
    }
}

/// A TCP server that accepts every connection and never sends a byte: a firewall or proxy
/// that accepts and forwards nothing, or a hung server. Connections stay open until drop.
struct SilentServer {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

fn silent_server() -> SilentServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    SilentServer { port, _held: held }
}

fn pg_task(name: &str, mode: &str, url: &str, target: &Path, extra_source: &str) -> String {
    format!(
        r#"
[task]
name = "{name}"
mode = "{mode}"
[source]
kind = "postgres"
url = "{url}"
{extra_source}
[target]
kind = "parquet"
url = "{}"
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#,
        target.display()
    )
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    (dir, out)
}

/// GET http://ADDRESS/PATH → (status code, body); None if nothing answers within 5 s.
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut conn =
        TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(5)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
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

fn free_port() -> u16 {
    inlet_testkit::free_port()
}

/// 13.6: `check` and `full-load` against a host that accepts and never answers give up after
/// `source.connect_timeout_s`, exit 1, and name the host and the key.
#[test]
fn one_shot_commands_give_up_on_a_silent_host() {
    let silent = silent_server();
    let (dir, out) = tempdir();
    let url = format!("postgres://inlet:{SECRET}@127.0.0.1:{}/shop", silent.port);
    for (tls, command) in [
        ("prefer", "check"),
        ("disable", "check"),
        ("prefer", "full-load"),
        ("disable", "full-load"),
    ] {
        let cfg = task_file(
            dir.path(),
            "silent",
            &pg_task(
                "silent",
                "full-load",
                &url,
                &out,
                &format!("tls = \"{tls}\"\nconnect_timeout_s = 2"),
            ),
        );
        let o = inlet_within(
            dir.path(),
            &[command, "-c", cfg.to_str().unwrap()],
            Duration::from_secs(20),
        );
        let case = format!("{command} (tls {tls})");
        assert_eq!(o.code, Some(1), "{case}: {}", o.all_output());
        assert!(o.took < Duration::from_secs(12), "{case} took {:?}", o.took);
        let text = o.all_output();
        for want in [
            format!("127.0.0.1:{}", silent.port),
            "no answer within 2 s".to_string(),
            "source.connect_timeout_s".to_string(),
        ] {
            assert!(text.contains(&want), "{case}: no {want:?} in:\n{text}");
        }
        o.assert_no_secret(&[SECRET]);
    }
}

/// 13.6: `inlet run` stuck connecting says so in /readyz, and SIGTERM ends it within seconds.
#[test]
fn run_stuck_connecting_reports_it_and_stops_on_sigterm() {
    let silent = silent_server();
    let (dir, out) = tempdir();
    let url = format!("postgres://inlet:{SECRET}@127.0.0.1:{}/shop", silent.port);
    let listen = format!("127.0.0.1:{}", free_port());
    for signal in ["-TERM", "-INT"] {
        let cfg = task_file(
            dir.path(),
            "stuck",
            &format!(
                "{}\n[service]\nlisten = \"{listen}\"\n",
                pg_task("stuck", "cdc", &url, &out, "connect_timeout_s = 600")
            ),
        );
        let err_path = dir.path().join("run.err");
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["run", "-c", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            if let Some((503, body)) = http_get(&listen, "/readyz") {
                if body.contains("not connected") {
                    break body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no /readyz answer naming the wait"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            ready.contains(&format!("127.0.0.1:{}", silent.port))
                && ready.contains("source.connect_timeout_s"),
            "{ready}"
        );
        let (_, status) = http_get(&listen, "/status").expect("/status answers");
        // Give the task time to be well inside its connection attempt.
        std::thread::sleep(Duration::from_secs(1));
        let sent = Instant::now();
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if sent.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("inlet run did not end within 15 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = sent.elapsed();
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert!(took < Duration::from_secs(5), "{signal}: took {took:?}");
        assert_eq!(code, Some(0), "{signal}: {stderr}");
        assert!(
            stderr.contains("while connecting to the source"),
            "{stderr}"
        );
        for text in [&ready, &status, &stderr] {
            assert!(!text.contains(SECRET), "secret shown: {text}");
        }
    }
}

/// One bad task file: which commands refuse it with exit 2, what the message must say, and
/// which strings (secrets) must appear nowhere.
struct BadConfig {
    what: &'static str,
    file: String,
    commands: &'static [&'static str],
    message: &'static [&'static str],
    secrets: &'static [&'static str],
}

fn bad_configs(out: &Path) -> Vec<BadConfig> {
    let all: &[&str] = &["check", "full-load", "run"];
    vec![
        // 13.9: an unencoded '@' in the password made part of it the user or host name.
        BadConfig {
            what: "postgres password with an unencoded @",
            file: pg_task(
                "at1",
                "cdc",
                "postgres://inlet:Pw9x@Sekret_42@127.0.0.1:1/db",
                out,
                "",
            ),
            commands: all,
            message: &["source.url", "%40", "password_file"],
            secrets: &["Pw9x", "Sekret_42"],
        },
        BadConfig {
            what: "mysql password with an unencoded @",
            file: pg_task(
                "at2",
                "cdc",
                "mysql://inlet:Pw9x@Sekret_42@127.0.0.1:1/db",
                out,
                "",
            )
            .replace("kind = \"postgres\"", "kind = \"mysql\""),
            commands: all,
            message: &["source.url", "%40"],
            secrets: &["Pw9x", "Sekret_42"],
        },
        // 13.13: a bad listen address was exit 1 from `run` and passed `check`.
        BadConfig {
            what: "service.listen without a port",
            file: format!(
                "{}\n[service]\nlisten = \"localhost\"\n",
                pg_task(
                    "lsn",
                    "cdc",
                    &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
                    out,
                    ""
                )
            ),
            commands: all,
            message: &["service.listen", "HOST:PORT"],
            secrets: &[SECRET],
        },
        // 13.13: slot and publication names hold 63 bytes; a longer task name failed at the
        // server with "identifier too long".
        BadConfig {
            what: "70-character task name",
            file: pg_task(
                &"t".repeat(70),
                "cdc",
                &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
                out,
                "",
            ),
            commands: all,
            message: &["task.name", "63 bytes", "at most 57 characters"],
            secrets: &[SECRET],
        },
        BadConfig {
            what: "connect_timeout_s = 0",
            file: pg_task(
                "cto",
                "cdc",
                &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
                out,
                "connect_timeout_s = 0",
            ),
            commands: all,
            message: &["source.connect_timeout_s", "at least 1"],
            secrets: &[SECRET],
        },
        BadConfig {
            what: "service.header_read_timeout_s = 0",
            file: format!(
                "{}\n[service]\nheader_read_timeout_s = 0\n",
                pg_task(
                    "hrt",
                    "cdc",
                    &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
                    out,
                    ""
                )
            ),
            commands: all,
            message: &["service.header_read_timeout_s", "at least 1"],
            secrets: &[SECRET],
        },
        BadConfig {
            what: "configured slot name too long",
            file: pg_task(
                "slotlen",
                "cdc",
                &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
                out,
                &format!("slot = \"{}\"", "s".repeat(64)),
            ),
            commands: all,
            message: &["source.slot", "63 bytes"],
            secrets: &[SECRET],
        },
    ]
}

/// Bad task files are refused before anything connects: exit 2, the key named, what to do
/// said, no secret shown.
#[test]
fn bad_task_files_are_refused_naming_the_key() {
    let (dir, out) = tempdir();
    for case in bad_configs(&out) {
        let cfg = task_file(dir.path(), "bad", &case.file);
        for command in case.commands {
            let mut args = vec![*command, "-c", cfg.to_str().unwrap()];
            if *command == "run" {
                args.extend(["--listen", "127.0.0.1:0"]);
            }
            let o = inlet_within(dir.path(), &args, Duration::from_secs(20));
            let text = o.all_output();
            assert_eq!(o.code, Some(2), "{} / {command}: {text}", case.what);
            for want in case.message {
                assert!(
                    o.stderr.contains(want),
                    "{} / {command}: no {want:?} in:\n{text}",
                    case.what
                );
            }
            o.assert_no_secret(case.secrets);
        }
    }
}

/// 13.13: `run --listen` with an address that cannot be bound (busy) is a setting to fix:
/// exit 2, naming service.listen.
#[test]
fn run_with_a_busy_listen_address_exits_2() {
    let (dir, out) = tempdir();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let cfg = task_file(
        dir.path(),
        "busy",
        &pg_task(
            "busy",
            "cdc",
            &format!("postgres://inlet:{SECRET}@127.0.0.1:1/db"),
            &out,
            "",
        ),
    );
    for listen in [address.as_str(), "no-port-here"] {
        let o = inlet_within(
            dir.path(),
            &["run", "-c", cfg.to_str().unwrap(), "--listen", listen],
            Duration::from_secs(20),
        );
        assert_eq!(o.code, Some(2), "{listen}: {}", o.all_output());
        assert!(o.stderr.contains("service.listen"), "{}", o.stderr);
        o.assert_no_secret(&[SECRET]);
    }
}

/// 13.13: SIGTERM or SIGINT during `inlet full-load` (here while it waits for a silent source)
/// ends it within seconds with exit 3, saying it was interrupted and what was not loaded.
#[test]
fn full_load_interrupted_by_a_signal_says_so_and_exits_3() {
    let silent = silent_server();
    let (dir, out) = tempdir();
    let url = format!("postgres://inlet:{SECRET}@127.0.0.1:{}/shop", silent.port);
    let cfg = task_file(
        dir.path(),
        "intr",
        &pg_task("intr", "full-load", &url, &out, "connect_timeout_s = 600"),
    );
    for signal in ["-TERM", "-INT"] {
        let err_path = dir.path().join("fl.err");
        let mut child = Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["full-load", "-c", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let sent = Instant::now();
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if sent.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("inlet full-load did not end within 15 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "{signal}: {:?}",
            sent.elapsed()
        );
        assert_eq!(code, Some(3), "{signal}: {stderr}");
        assert!(
            stderr.contains("full load interrupted")
                && stderr.contains("run `inlet full-load` again"),
            "{stderr}"
        );
        assert!(!stderr.contains(SECRET), "{stderr}");
        let written: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(written.is_empty(), "files left: {written:?}");
    }
}

/// 12.13: a refused connection says its cause once (it read "Input/output error: Input/output
/// error: Connection refused (os error 111): … (os error 111)"), names the server and keeps the
/// password out.
#[test]
fn a_refused_connection_names_its_cause_once() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (dir, out) = tempdir();
    for (kind, scheme) in [("postgres", "postgres"), ("mysql", "mysql")] {
        let url = format!("{scheme}://inlet:{SECRET}@127.0.0.1:{closed}/shop");
        let cfg = task_file(
            dir.path(),
            "refused",
            &pg_task("refused", "full-load", &url, &out, "")
                .replace("kind = \"postgres\"", &format!("kind = \"{kind}\"")),
        );
        for command in ["full-load", "check"] {
            let o = inlet_within(
                dir.path(),
                &[command, "-c", cfg.to_str().unwrap()],
                Duration::from_secs(60),
            );
            let case = format!("{kind} {command}");
            assert_eq!(o.code, Some(1), "{case}: {}", o.all_output());
            let line = o
                .all_output()
                .lines()
                .find(|l| l.contains("Connection refused"))
                .unwrap_or_else(|| panic!("{case}: no refusal in {}", o.all_output()))
                .to_string();
            assert_eq!(
                line.matches("Connection refused").count(),
                1,
                "{case}: {line}"
            );
            assert!(
                line.matches("Input/output error").count() <= 1,
                "{case}: {line}"
            );
            assert!(
                line.contains(&format!("127.0.0.1:{closed}")),
                "{case}: {line}"
            );
            o.assert_no_secret(&[SECRET]);
        }
    }
}

/// 13.13: `tls = "require"` or `"verify-full"` against a server without TLS says the server
/// does not offer TLS and what to set, instead of blaming the host.
#[tokio::test(flavor = "multi_thread")]
async fn tls_required_against_a_plain_server_says_the_server_offers_none() {
    let pg = common::PgServer::start();
    let (dir, out) = tempdir();
    let url = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{}/postgres",
        pg.port
    );
    for (tls, command) in [
        ("require", "check"),
        ("verify-full", "full-load"),
        ("require", "full-load"),
    ] {
        let cfg = task_file(
            dir.path(),
            "tls",
            &pg_task("tls", "full-load", &url, &out, &format!("tls = \"{tls}\"")),
        );
        let o = inlet_within(
            dir.path(),
            &[command, "-c", cfg.to_str().unwrap()],
            Duration::from_secs(60),
        );
        let case = format!("{command} tls={tls}");
        assert_eq!(o.code, Some(1), "{case}: {}", o.all_output());
        let text = o.all_output();
        for want in [
            "does not offer TLS",
            "source.tls",
            &format!("127.0.0.1:{}", pg.port),
        ] {
            assert!(text.contains(want), "{case}: no {want:?} in:\n{text}");
        }
        o.assert_no_secret(&[SECRET]);
    }
}

/// Three tables for the early-ending full loads: `bloat` has the most pages but 21 live rows, so
/// it is read first and finishes at once; `big` (200,000 rows, about 20 files of 1 MB) comes
/// next and is the one mid-load; `tiny` comes last, so an early end never reaches it.
async fn three_table_source(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE bloat (id int PRIMARY KEY, v text);
             INSERT INTO bloat SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 250000) g;
             DELETE FROM bloat WHERE id > 20 AND id < 250000;
             CREATE TABLE big (id int PRIMARY KEY, v text, t time NOT NULL DEFAULT '12:00');
             INSERT INTO big (id, v)
               SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 200000) g;
             CREATE TABLE tiny (id int PRIMARY KEY, v text);
             INSERT INTO tiny SELECT g, md5(g::text) FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    let size = |t: &'static str| async move {
        let row = client
            .query_one(&format!("SELECT pg_relation_size('{t}')"), &[])
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    // The order the load reads the tables in (most pages first) is what the tests rely on.
    assert!(size("bloat").await > size("big").await);
    assert!(size("big").await > size("tiny").await);
}

fn three_table_task(url: &str, out: &Path, policy: &str) -> String {
    format!(
        r#"
[task]
name = "early"
mode = "full-load"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
file_size_mb = 1
# The exact forms: time '24:00:00', the value these tests fail a load with, follows the value
# policy there (the portable forms write it as text).
types = "exact"
[tables]
include = ["public.bloat", "public.big", "public.tiny"]
[full_load]
workers = 2
chunk_mb = 1
[values]
on_unrepresentable = "{policy}"
"#,
        out.display()
    )
}

/// Names and modification times of the `LOAD…` files of a table folder (none if it is absent).
fn load_file_times(table_dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    let Ok(entries) = std::fs::read_dir(table_dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("LOAD"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// (id, v) of every row in a table folder's LOAD files, sorted.
fn loaded_id_v(table_dir: &Path) -> Vec<(i32, String)> {
    use arrow_array::cast::AsArray;
    let mut rows = Vec::new();
    for b in common::read_table(table_dir) {
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_primitive::<arrow_array::types::Int32Type>();
        let v = b.column_by_name("v").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.push((id.value(i), v.value(i).to_string()));
        }
    }
    rows.sort();
    rows
}

async fn source_id_v(client: &tokio_postgres::Client, table: &str) -> Vec<(i32, String)> {
    client
        .query(&format!("SELECT id, v FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// 13.13: SIGTERM while one table is mid-load (a re-run, so its folder held a complete earlier
/// set) leaves no partial table behind: the interrupted table's new files were staged, its
/// earlier complete set stays untouched (issue 16 item 2), the table that finished is complete
/// and equal to the source, the table the run never reached keeps its earlier complete set too,
/// and the log and exit message say which is which; exit 3 within seconds. The interrupted
/// table's completed chunks stay staged and recorded (issue 16 item 3: a deploy's SIGTERM does
/// not start a long load over), and the next run resumes after them.
#[tokio::test(flavor = "multi_thread")]
async fn full_load_interrupted_mid_table_leaves_no_partial_table() {
    let pg = common::PgServer::start();
    let client = pg.client("postgres").await;
    three_table_source(&client).await;
    // A PostgreSQL table resumes while its write counts (server statistics) are unchanged;
    // an idle session publishes them up to 10 s late, which would fall between runs 2 and 3
    // and start big over (seen on PostgreSQL 18): publish them now.
    let _ = client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (dir, out) = tempdir();
    let cfg = task_file(
        dir.path(),
        "early",
        &three_table_task(&pg.url("postgres"), &out, "fail"),
    );
    let table_dir = |t: &str| out.join("public").join(t);

    // Run 1 completes: the earlier set a re-run replaces.
    let first = inlet_within(
        dir.path(),
        &["full-load", "-c", cfg.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(first.code, Some(0), "{}", first.all_output());
    let big_before = load_file_times(&table_dir("big"));
    assert!(big_before.len() >= 4, "{big_before:?}");
    let tiny_before = load_file_times(&table_dir("tiny"));
    assert_eq!(tiny_before.len(), 1);

    // Run 2: once it has staged big's first file, lock big so the workers wait before their
    // next chunk (each chunk is a transaction of its own), then SIGTERM.
    let err_path = dir.path().join("early.err");
    let started = std::time::SystemTime::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["full-load", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let waiting = Instant::now();
    loop {
        let now = load_file_times(&table_dir("big").join("_inlet_load"));
        if now.iter().any(|(_, t)| *t > started) {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "big got no new file: {}",
            std::fs::read_to_string(&err_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let locker = pg.client("postgres").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // The chunks in flight when the lock was granted are written by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let staged = load_file_times(&table_dir("big").join("_inlet_load"));
    assert!(
        staged.iter().any(|(_, t)| *t > started),
        "big should have staged files before the signal: {staged:?}"
    );
    assert_eq!(
        load_file_times(&table_dir("big")),
        big_before,
        "readers see the earlier set"
    );
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("inlet full-load did not end within 15 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = sent.elapsed();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    // The interrupted table: the earlier complete set, untouched (readers see no partial
    // table); its completed chunks are kept, staged: the staging folder holds exactly the files
    // its record names, and at least one.
    assert_eq!(load_file_times(&table_dir("big")), big_before, "{stderr}");
    assert_eq!(
        loaded_id_v(&table_dir("big")),
        source_id_v(&client, "big").await
    );
    let record = std::fs::read_to_string(table_dir("big").join("_inlet_load/PROGRESS"))
        .unwrap_or_else(|e| panic!("no progress record kept ({e}):\n{stderr}"));
    let done_chunks = record.lines().filter(|l| l.starts_with("done ")).count();
    assert!(done_chunks >= 1, "{record}");
    let mut recorded: Vec<String> = record
        .lines()
        .filter(|l| l.starts_with("done "))
        .flat_map(|l| l.split('\t').skip(1))
        .map(|f| f.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    recorded.sort();
    let staged: Vec<String> = load_file_times(&table_dir("big").join("_inlet_load"))
        .into_iter()
        .map(|(name, _)| format!("_inlet_load/{name}"))
        .collect();
    assert_eq!(staged, recorded, "{stderr}");
    // The finished table: complete and equal to the source.
    assert_eq!(
        loaded_id_v(&table_dir("bloat")),
        source_id_v(&client, "bloat").await
    );
    // The table the run never reached: the earlier complete set, untouched.
    assert_eq!(load_file_times(&table_dir("tiny")), tiny_before);
    assert_eq!(
        loaded_id_v(&table_dir("tiny")),
        source_id_v(&client, "tiny").await
    );

    let exit_line = stderr
        .lines()
        .find(|l| l.starts_with("error: full load interrupted (exit 3)"))
        .unwrap_or_else(|| panic!("no exit message in {stderr}"));
    for said in [
        "public.bloat: loaded (21 rows",
        "public.big: not loaded; its folder holds what an earlier run left",
        &format!(
            "the {} file(s) of its completed chunks are kept, staged (hidden from readers) and \
             recorded: the next run of the load resumes after them",
            recorded.len()
        ),
        "public.tiny: not loaded; its folder holds what an earlier run left",
    ] {
        assert!(exit_line.contains(said), "{said:?} not in {exit_line}");
    }
    assert!(stderr.contains("run `inlet full-load` again"), "{stderr}");

    // Run 3 resumes big after its recorded chunks (a deploy does not start it over) and
    // completes every table equal to the source, nothing staged left.
    let third = inlet_within(
        dir.path(),
        &["full-load", "-c", cfg.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(third.code, Some(0), "{}", third.all_output());
    let resumed =
        common::resume::log_fields(&third.stderr, "resuming the table's interrupted full load")
            .unwrap_or_else(|| panic!("big was not resumed:\n{}", third.stderr));
    assert_eq!(resumed["table"], "public.big", "{resumed:?}");
    assert_eq!(
        resumed["kept_chunks"],
        done_chunks.to_string(),
        "{resumed:?}"
    );
    for t in ["bloat", "big", "tiny"] {
        assert_eq!(
            loaded_id_v(&table_dir(t)),
            source_id_v(&client, t).await,
            "{t}"
        );
        assert!(!table_dir(t).join("_inlet_load").exists(), "{t}");
    }
}

/// 13.13: a full load that fails in one table's late rows (a value error under
/// on_unrepresentable = "fail") leaves no partial table: the failed table's new files were
/// staged and are deleted, its earlier set stays as it was (issue 16 item 2), every other table
/// is complete and equal to the source, and the error says each table's state; exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn full_load_failing_in_one_table_leaves_no_partial_table() {
    let pg = common::PgServer::start();
    let client = pg.client("postgres").await;
    three_table_source(&client).await;
    // The last row of big, so its earlier chunks are written before the error.
    client
        .batch_execute("UPDATE big SET t = '24:00:00' WHERE id = 200000")
        .await
        .unwrap();
    let (dir, out) = tempdir();
    let table_dir = |t: &str| out.join("public").join(t);

    // Run 1 (values that Arrow cannot hold become null) completes: the earlier set.
    let lenient = task_file(
        dir.path(),
        "lenient",
        &three_table_task(&pg.url("postgres"), &out, "null"),
    );
    let first = inlet_within(
        dir.path(),
        &["full-load", "-c", lenient.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert_eq!(first.code, Some(0), "{}", first.all_output());
    let big_before = load_file_times(&table_dir("big"));
    assert!(big_before.len() >= 4);

    let strict = task_file(
        dir.path(),
        "strict",
        &three_table_task(&pg.url("postgres"), &out, "fail"),
    );
    let second = inlet_within(
        dir.path(),
        &["full-load", "-c", strict.to_str().unwrap()],
        Duration::from_secs(120),
    );
    let all = second.all_output();
    assert_eq!(second.code, Some(1), "{all}");
    assert!(all.contains("24:00:00"), "{all}");
    assert_eq!(load_file_times(&table_dir("big")), big_before, "{all}");
    assert!(!table_dir("big").join("_inlet_load").exists(), "{all}");
    assert_eq!(
        loaded_id_v(&table_dir("bloat")),
        source_id_v(&client, "bloat").await
    );
    let error_line = second
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {all}"));
    // tiny is read last, by the worker that did not fail; whether it got to complete its file
    // before the failure stopped it is a race, so its folder is checked against what the error
    // says of it.
    match tiny_state(error_line) {
        TinyState::Complete => assert_eq!(
            loaded_id_v(&table_dir("tiny")),
            source_id_v(&client, "tiny").await
        ),
        TinyState::Deleted => assert_eq!(load_file_times(&table_dir("tiny")), vec![]),
    }
    for said in [
        "public.bloat: loaded (21 rows",
        "public.big: not loaded; its folder holds what an earlier run left",
    ] {
        assert!(error_line.contains(said), "{said:?} not in {error_line}");
    }
}

/// What an early-ended load's message says of table tiny (read last, so its state is a race
/// with the failure): complete (loaded, or untouched since the complete first run), or deleted.
enum TinyState {
    Complete,
    Deleted,
}

fn tiny_state(message: &str) -> TinyState {
    let Some((_, after)) = message.split_once("public.tiny: ") else {
        panic!("tiny's state is not in {message}");
    };
    if after.starts_with("loaded (50 rows")
        || after.starts_with("not loaded; its folder holds what an earlier run left")
    {
        TinyState::Complete
    } else if after.starts_with("not loaded; its ") {
        TinyState::Deleted
    } else {
        panic!("unexpected state of tiny in {message}")
    }
}

/// What s3_summary.py reads under a prefix: (keys, rows, sum of id).
fn s3_summary(endpoint: &str, prefix: &str) -> (Vec<String>, u64, i64) {
    let py = Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/readers/s3_summary.py"
        ))
        .args([endpoint, "lake", prefix])
        .output()
        .expect("run s3_summary.py");
    assert!(
        py.status.success(),
        "s3_summary.py: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (
        keys,
        v["rows"].as_u64().unwrap(),
        v["id_sum"].as_i64().unwrap(),
    )
}

/// 13.13: the same failure on S3 (moto): the failed table's staged objects are deleted and its
/// earlier objects stay as they were (issue 16 item 2), the others hold exactly the source's
/// rows.
#[tokio::test(flavor = "multi_thread")]
async fn full_load_failing_in_one_table_on_s3_leaves_no_partial_table() {
    let pg = common::PgServer::start();
    let client = pg.client("postgres").await;
    three_table_source(&client).await;
    client
        .batch_execute("UPDATE big SET t = '24:00:00' WHERE id = 200000")
        .await
        .unwrap();
    let mut moto = common::Moto::start();
    moto.create_bucket("lake");
    let (dir, _) = tempdir();
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "us-east-1"),
    ];
    let s3_task = |policy: &str| {
        three_table_task(&pg.url("postgres"), Path::new("unused"), policy)
            .replace("url = \"unused\"", "url = \"s3://lake/raw\"")
    };
    let lenient = task_file(dir.path(), "lenient", &s3_task("null"));
    let (code, stdout, stderr) =
        common::inlet_with_env(&["full-load", "-c", lenient.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let big_before = s3_summary(&moto.endpoint, "raw/public/big/");
    let (keys, rows, _) = &big_before;
    assert!(keys.len() >= 4 && *rows == 200_000, "{keys:?} {rows}");

    let strict = task_file(dir.path(), "strict", &s3_task("fail"));
    let (code, stdout, stderr) =
        common::inlet_with_env(&["full-load", "-c", strict.to_str().unwrap()], &env);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert_eq!(
        s3_summary(&moto.endpoint, "raw/public/big/"),
        big_before,
        "{stderr}"
    );
    assert!(
        stderr.contains("public.big: not loaded; its folder holds what an earlier run left"),
        "{stderr}"
    );
    // Each worker that read rows of a table writes its own file: one or two here.
    let (keys, rows, id_sum) = s3_summary(&moto.endpoint, "raw/public/bloat/");
    assert_eq!((rows, id_sum), (21, 210 + 250_000), "{keys:?}");
    let (keys, rows, id_sum) = s3_summary(&moto.endpoint, "raw/public/tiny/");
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    match tiny_state(error_line) {
        TinyState::Complete => assert_eq!((keys.len(), rows, id_sum), (1, 50, 1275)),
        TinyState::Deleted => assert_eq!((keys, rows), (vec![], 0)),
    }
}
