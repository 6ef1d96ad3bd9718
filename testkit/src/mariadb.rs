//! A throwaway MariaDB server (Debian's `mariadb-server`, 10.11) in a temp folder on a free
//! port, with the binary log on in the form inlet requires (ROW, FULL image, FULL metadata),
//! stopped when dropped.
//!
//! mariadbd refuses to run as root without `--user`; as root the data folder is handed to the
//! `mysql` user and the server drops to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

pub struct MariaDbServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    server_id: u32,
    /// The `--name=value` options it was started with, kept for restarts.
    extra: Vec<String>,
}

fn bin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install mariadb-server (`make setup` or scripts/setup-system.sh)");
}

impl MariaDbServer {
    /// A server with binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL and
    /// server_id=1.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server started with extra `--name=value` options (they override the defaults).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("inlet-mariadb-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        // A private tmpdir: servers of parallel tests must not share temporary table names.
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status();
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "chown of the test folder to mysql"
            );
        }
        let mut install = Command::new(bin("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]);
        if is_root() {
            install.arg("--user=mysql");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut server = Self {
            dir,
            port,
            child: None,
            server_id: 1,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server.admin(
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; \
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;",
        );
        server
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(bin("mariadbd"));
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--server-id={}", self.server_id))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--log-bin=mariadb-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                "--sync-binlog=0",
                "--max-connections=200",
                "--skip-log-warnings",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=mysql");
        }
        let mut child = cmd.spawn().expect("start mariadbd");
        for _ in 0..600 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mariadbd exited with {status}: {}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                );
            }
            if self.socket().exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!(
            "mariadbd did not listen on port {} within 60 s: {}",
            self.port,
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    /// The data folder (binary logs are here, named `mariadb-bin.NNNNNN`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A TCP URL for user root (no password) and database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with the `mariadb` command-line client as root over the Unix socket; panics with
    /// the client's message when it fails. Returns the output rows, tab-separated.
    pub fn admin(&self, sql: &str) -> String {
        let out = Command::new(bin("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "mariadb -e {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An async connection as root to database `db` (which must exist), in UTC.
    pub async fn client(&self, db: &str) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .db_name(Some(db))
            .prefer_socket(false)
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        mysql_async::Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("connect to the test MariaDB: {e}"))
    }

    /// Stops the server as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data folder, port and options (after
    /// [`MariaDbServer::kill`]: a crash restart).
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.socket());
        self.spawn();
    }

    /// Shuts the server down as an administrator would (SIGTERM: it finishes its binlog file
    /// and stops), then starts it again with the same data, port and options. The binlog
    /// continues in a new file.
    pub fn stop_and_start(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if std::time::Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        let _ = std::fs::remove_file(self.socket());
        self.spawn();
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.kill();
    }
}
