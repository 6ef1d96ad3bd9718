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
