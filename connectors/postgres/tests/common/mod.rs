//! Test harness: a throwaway PostgreSQL 15 (wal_level=logical) in a temp folder on a free port,
//! stopped when dropped. Adapted from the workspace's tests/common/mod.rs.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from("/usr/lib/postgresql/15/bin")
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

fn free_port() -> u16 {
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

    fn start_with(tls_only: bool, extra: &str) -> Self {
        let bin = pg_bin();
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL 15 server binaries not found in {} (run `make setup`, or set PG_BIN)",
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
        let opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c shared_buffers=128MB {extra}",
            dir.path().display()
        ) + &tls_opts;
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
        Self { dir, port, bin }
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
