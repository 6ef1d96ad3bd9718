//! Test harness shared by inlet's test suites: a throwaway PostgreSQL (wal_level=logical; 15 from
//! Debian, or the version whose binaries `PG_BIN` names, see scripts/setup-pg-versions.sh) in a
//! temp folder on a free port, and moto's S3 server, each stopped when dropped.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod mariadb;
pub use mariadb::MariaDbServer;
pub mod standby;

pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// The server options, to start it again after [`PgServer::stop`].
    opts: String,
}

fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

/// The binaries of a major version: Debian's 15, or those scripts/setup-pg-versions.sh caches.
pub fn major_bin(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from("/usr/lib/postgresql/15/bin");
    }
    PathBuf::from(format!("/var/cache/inlet/postgres/{major}/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (PostgreSQL refuses root).
fn pg_command(bin: &Path, args: &[&str]) -> Output {
    let out = if is_root() {
        let mut full = vec!["-u", "postgres", "--", bin.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        Command::new("runuser").args(&full).output()
    } else {
        Command::new(bin).args(args).output()
    };
    out.unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// The options every test server runs with, on `port` with its socket in `dir`.
fn base_options(port: u16, dir: &Path, extra: &str) -> String {
    // logical_decoding_work_mem at its 64 kB minimum: the CDC tests' larger transactions
    // then arrive streamed while in progress, the path production takes past 64 MB.
    format!(
        "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
         -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c shared_buffers=128MB -c logical_decoding_work_mem=64kB {extra}",
        dir.display()
    )
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    pub fn start() -> Self {
        Self::start_with(false, "")
    }

    /// A server started with extra `-c name=value` options.
    pub fn start_with_options(options: &str) -> Self {
        Self::start_with(false, options)
    }

    /// A server that accepts TCP connections over TLS only, with a certificate for 127.0.0.1
    /// signed by a throwaway CA (see [`PgServer::ca_file`]). The Unix socket stays open, for
    /// [`PgServer::client`].
    pub fn start_tls_only() -> Self {
        Self::start_with(true, "")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server of one major version (`PG_BIN` notwithstanding): 15 from Debian, the others
    /// from scripts/setup-pg-versions.sh, with extra `-c name=value` options.
    pub fn start_major(major: u32, options: &str) -> Self {
        Self::start_in(major_bin(major), false, options)
    }

    fn start_with(tls_only: bool, extra: &str) -> Self {
        Self::start_in(pg_bin(), tls_only, extra)
    }

    fn start_in(bin: PathBuf, tls_only: bool, extra: &str) -> Self {
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL server binaries not found in {} (run `make setup`, or set PG_BIN)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("inlet-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "chown of the test folder to postgres"
            );
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().expect("utf-8 path").to_string();
        let out = pg_command(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut tls_opts = String::new();
        if tls_only {
            let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            // A CA and a server certificate it signs, as a real deployment has (webpki refuses a
            // self-signed CA certificate presented as the server's own).
            let p = dir.path();
            std::fs::write(
                p.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .expect("ext");
            let openssl = |args: &[&str]| {
                let out = Command::new("openssl")
                    .args(args)
                    .current_dir(p)
                    .output()
                    .expect("run openssl (apt-get install openssl)");
                assert!(
                    out.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=inlet-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ]);
            if is_root() {
                let st = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&key)
                    .arg(&crt)
                    .status();
                assert!(st.map(|s| s.success()).unwrap_or(false));
            }
            let st = Command::new("chmod").arg("600").arg(&key).status();
            assert!(st.map(|s| s.success()).unwrap_or(false));
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
            tls_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                key.display()
            );
        }
        let port = free_port();
        let opts = base_options(port, dir.path(), extra) + &tls_opts;
        let log = dir.path().join("postgres.log");
        let out = pg_command(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data_s,
                "-l",
                log.to_str().expect("utf-8"),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            dir,
            port,
            bin,
            opts,
        }
    }

    /// Starts the server again after [`PgServer::stop`], on the same port with the same data.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let out = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-o",
                &self.opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start (again) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl restart -m MODE` (`fast`, `smart` or `immediate`) on the same port with the same
    /// data; returns how long the restart took. `pg_ctl` gives the shutdown `timeout_secs`;
    /// past that the restart failed, and this panics saying so.
    pub fn restart(&self, mode: &str, timeout_secs: u32) -> Duration {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let started = std::time::Instant::now();
        let out = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-o",
                &self.opts,
                "-m",
                mode,
                "-w",
                "-t",
                &timeout_secs.to_string(),
                "restart",
            ],
        );
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "pg_ctl restart -m {mode} did not finish within {timeout_secs} s ({took:?}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }

    /// A TCP URL for user postgres, without password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The folder holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// An administrative connection over the Unix socket, which pg_hba.conf always trusts here,
    /// whatever a test does to the TCP lines.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(db);
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test server: {e}"));
        tokio::spawn(conn);
        // The settings inlet's own sessions use, so values render the same in tests.
        client
            .batch_execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; \
                 SET extra_float_digits = 3",
            )
            .await
            .expect("session setup");
        client
    }

    /// Replaces pg_hba.conf (keeping the trusted Unix socket line first) and waits until the
    /// postmaster has loaded it, so the next connection meets the new rules.
    pub async fn set_hba(&self, tcp_lines: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        // Writing over the existing file keeps its owner (postgres).
        std::fs::write(&path, format!("local all all trust\n{tcp_lines}\n"))
            .expect("write pg_hba.conf");
        let before = self.conf_load_time().await;
        let admin = self.client("postgres").await;
        admin
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .expect("pg_reload_conf");
        // A new backend inherits the postmaster's load time: once it moves, new connections
        // see the new file.
        for _ in 0..100 {
            if self.conf_load_time().await != before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not reload pg_hba.conf within 5 s");
    }

    async fn conf_load_time(&self) -> String {
        let client = self.client("postgres").await;
        client
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .expect("pg_conf_load_time")
            .get(0)
    }

    /// Stops the server as a crash would.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python with DuckDB and pyarrow, from the Makefile's venv.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("INLET_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no {}: run `make setup` (or `make test`), which creates the venv",
        venv.display()
    );
    venv
}

/// moto's S3 server on a free loopback port, from the venv; stopped when dropped.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        // A port nobody listens on yet: otherwise the readiness probe below could reach another
        // test's server before this one has bound the port.
        let port = loop {
            let p = free_port();
            if std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                break p;
            }
        };
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto (make setup installs moto[server])");
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..300 {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}: is moto[server] in the venv? (make setup)");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Still ours? A moto that lost the port to another process exits at once.
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Ok(Some(status)) = moto.child.try_wait() {
                    panic!("moto exited with {status} right after start (port {port} taken?)");
                }
                return moto;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("moto did not listen on port {port} within 30 s");
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&mut self, bucket: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let mut conn = std::net::TcpStream::connect(&addr).expect("connect to moto");
        write!(conn, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("create bucket");
        let mut response = String::new();
        let _ = conn.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
