//! The `[source]` section for `kind = "mysql"` (MySQL 5.7/8.x and MariaDB 10.6+), and opening
//! connections with it: URL, password from a file, TLS, and the replica `server_id` the binlog
//! dump connection registers with.

use std::path::PathBuf;

use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use serde::Deserialize;

use crate::error::{describe, MysqlError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    /// `mysql://user[:password]@host:port/database`. Prefer `password_file` or `${ENV}` over a
    /// password written in the file. The database is the default one for the session; which
    /// tables are captured is `[tables]` (patterns on `database.table`).
    pub url: String,
    /// A file whose first line is the password; overrides any password in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA that signed the server's certificate, for `tls = "verify-full"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The server id the binlog connection registers with; it must differ from every server's
    /// and every other replica's. Default: derived from the task name (see
    /// [`MysqlSourceConfig::server_id`]).
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Seconds between heartbeats the server sends on an idle binlog connection, so an idle
    /// task still advances and a dead connection is noticed. Default 10.
    #[serde(default)]
    pub heartbeat_seconds: Option<u32>,
    /// Seconds the server may stay silent while inlet waits for it: for the answer to a query
    /// (discovery, checks, opening the snapshot) and, in a snapshot read, for its next row (a
    /// long read is bounded per row, never as a whole). Default 120.
    #[serde(default)]
    pub read_timeout_s: Option<u64>,
}

impl MysqlSourceConfig {
    /// The configured server id, or one derived from the task name: a stable hash in
    /// 2^30..2^31, a range DBAs rarely hand out, so two tasks (or a restart of one) never need
    /// configuring and never collide with a real server's id by habit.
    pub fn server_id(&self, task: &str) -> u32 {
        self.server_id.unwrap_or_else(|| derived_server_id(task))
    }
}

pub(crate) fn derived_server_id(task: &str) -> u32 {
    // FNV-1a, 32 bits: stable across Rust versions, unlike DefaultHasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("inlet:{task}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (1 << 30) | (h & ((1 << 30) - 1))
}

/// TLS modes, named as libpq and MySQL's `--ssl-mode` name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS always; the certificate is not verified.
    Require,
    /// TLS always; the certificate must chain to the system roots or `ca_file` and name the host.
    VerifyFull,
}

/// A parsed, validated source configuration that can open connections.
#[derive(Clone)]
pub struct MysqlConnector {
    opts: Opts,
    tls: TlsMode,
    server: String,
    heartbeat_seconds: u32,
    read_timeout: std::time::Duration,
}

impl std::fmt::Debug for MysqlConnector {
    // Opts holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConnector")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How long opening a connection may take, from TCP connect to the end of the session setup.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The default of `source.read_timeout_s`.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Statements every inlet session runs first: UTC for TIMESTAMP values, utf8mb4 so the server
/// converts text of any column charset to UTF-8, and no statement time limit for long chunk
/// reads.
const SESSION_INIT: &[&str] = &["SET NAMES utf8mb4", "SET time_zone = '+00:00'"];

impl MysqlConnector {
    pub fn new(source: &MysqlSourceConfig) -> Result<Self, MysqlError> {
        if !source.url.starts_with("mysql://") && !source.url.starts_with("mariadb://") {
            return Err(MysqlError::Config {
                key: "url",
                message: "expected mysql://user@host:port/database".to_string(),
            });
        }
        if source.server_id == Some(0) {
            // A replica registering with id 0 is refused by MySQL and, on MariaDB, has its dump
            // ended at once: the task would loop on "the server ended the change stream".
            return Err(MysqlError::Config {
                key: "server_id",
                message: "0 is not a valid replica id (the server ends the binlog stream of a \
                          replica with id 0); set a number from 1 to 4294967295 that no server \
                          and no other replica uses, or remove the key to use one derived from \
                          the task name"
                    .to_string(),
            });
        }
        if source.read_timeout_s == Some(0) {
            return Err(MysqlError::Config {
                key: "read_timeout_s",
                message: "must be at least 1 (seconds); remove the key for the default (120)"
                    .to_string(),
            });
        }
        // mysql_async only knows the mysql scheme.
        let url = source.url.replacen("mariadb://", "mysql://", 1);
        let opts = Opts::from_url(&url).map_err(|_| MysqlError::Config {
            key: "url",
            // The parser's message may quote the URL, password included: keep it out.
            message: "not a valid MySQL URL; expected mysql://user@host:port/database".to_string(),
        })?;
        let mut builder = OptsBuilder::from_opts(opts.clone());
        if let Some(path) = &source.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| MysqlError::Config {
                key: "password_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            builder = builder.pass(Some(text.lines().next().unwrap_or("").trim_end()));
        }
        if opts.user().is_none_or(str::is_empty) {
            return Err(MysqlError::Config {
                key: "url",
                message: "names no user; write mysql://USER@host:3306/database".to_string(),
            });
        }
        let ssl = match source.tls {
            TlsMode::Disable => None,
            TlsMode::Prefer | TlsMode::Require => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsMode::VerifyFull => {
                let mut ssl = SslOpts::default();
                if let Some(ca) = &source.ca_file {
                    if !ca.exists() {
                        return Err(MysqlError::Config {
                            key: "ca_file",
                            message: format!("{} does not exist", ca.display()),
                        });
                    }
                    ssl = ssl.with_root_certs(vec![ca.clone().into()]);
                }
                Some(ssl)
            }
        };
        builder = builder
            .ssl_opts(ssl)
            .prefer_socket(false)
            .init(SESSION_INIT.to_vec())
            .stmt_cache_size(64usize)
            .tcp_nodelay(true);
        let opts: Opts = builder.into();
        let server = format!(
            "{}@{}:{}/{}",
            opts.user().unwrap_or("?"),
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        Ok(Self {
            opts,
            tls: source.tls,
            server,
            heartbeat_seconds: source.heartbeat_seconds.unwrap_or(10).max(1),
            read_timeout: source
                .read_timeout_s
                .map_or(READ_TIMEOUT, std::time::Duration::from_secs),
        })
    }

    /// `user@host:port/database`, safe for logs.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn heartbeat_seconds(&self) -> u32 {
        self.heartbeat_seconds
    }

    /// `source.read_timeout_s`: how long the server may stay silent.
    pub fn read_timeout(&self) -> std::time::Duration {
        self.read_timeout
    }

    /// Runs `work` (one or more round trips to the server, `what` for the message) unless the
    /// server stays silent past `source.read_timeout_s`. mysql_async has no read timeout of its
    /// own: a server that accepted the connection and then hangs (or a network that drops
    /// packets silently) would leave a query waiting forever. The timeout's message says
    /// "timed out", which makes the task retry.
    pub async fn within<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, MysqlError>>,
    ) -> Result<T, MysqlError> {
        tokio::time::timeout(self.read_timeout, work)
            .await
            .unwrap_or_else(|_| Err(self.silence_error(what)))
    }

    /// The error of a server silent for `source.read_timeout_s` while inlet waited on `what`.
    pub(crate) fn silence_error(&self, what: &str) -> MysqlError {
        MysqlError::Query {
            server: self.server.clone(),
            what: what.to_string(),
            reason: format!(
                "timed out: the server sent nothing for {} s (source.read_timeout_s); it hangs, \
                 or the network drops the connection. Check the server, or raise \
                 source.read_timeout_s if it is only slow",
                self.read_timeout.as_secs()
            ),
        }
    }

    /// Opens a connection with inlet's session settings. Under `tls = "prefer"` a server that
    /// offers no TLS is connected to in plain TCP.
    /// A host that accepts the TCP connection and never answers (a half-dead server, a
    /// firewall that swallows packets) fails after [`CONNECT_TIMEOUT`].
    pub async fn connect(&self) -> Result<Conn, MysqlError> {
        match self.connect_with(self.opts.clone()).await? {
            Ok(conn) => Ok(conn),
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.tls == TlsMode::Prefer => {
                let plain = OptsBuilder::from_opts(self.opts.clone()).ssl_opts(None::<SslOpts>);
                self.connect_with(plain.into())
                    .await?
                    .map_err(|e| self.connect_error(&e))
            }
            Err(e) => Err(self.connect_error(&e)),
        }
    }

    /// One connection attempt (TCP, TLS, handshake, session settings) within
    /// [`CONNECT_TIMEOUT`]; the outer error is the timeout.
    async fn connect_with(
        &self,
        opts: Opts,
    ) -> Result<Result<Conn, mysql_async::Error>, MysqlError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
            .await
            .map_err(|_| MysqlError::Connect {
                server: self.server.clone(),
                reason: format!(
                    "timed out: no answer within {} s (connect, handshake and session setup); \
                     check that {}:{} is a MySQL or MariaDB server reachable from here",
                    CONNECT_TIMEOUT.as_secs(),
                    self.opts.ip_or_hostname(),
                    self.opts.tcp_port()
                ),
            })
    }

    fn connect_error(&self, e: &mysql_async::Error) -> MysqlError {
        MysqlError::Connect {
            server: self.server.clone(),
            reason: describe(e),
        }
    }

    pub(crate) fn query_error(&self, what: &str, e: &mysql_async::Error) -> MysqlError {
        MysqlError::Query {
            server: self.server.clone(),
            what: what.to_string(),
            reason: describe(e),
        }
    }

    pub(crate) fn binlog_error(&self, message: impl Into<String>) -> MysqlError {
        MysqlError::Binlog {
            server: self.server.clone(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> MysqlSourceConfig {
        MysqlSourceConfig {
            url: url.into(),
            password_file: None,
            tls: TlsMode::Disable,
            ca_file: None,
            server_id: None,
            heartbeat_seconds: None,
            read_timeout_s: None,
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = MysqlConnector::new(&config("mysql://inlet:s3cret@db.example:3307/shop")).unwrap();
        assert_eq!(c.server(), "inlet@db.example:3307/shop");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = MysqlConnector::new(&config("mysql://inlet:s3cret@db.example:notaport/shop"))
            .unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().starts_with("source.url:"), "{e}");
        let e = MysqlConnector::new(&config("postgres://x@h/db")).unwrap_err();
        assert!(e.to_string().starts_with("source.url:"), "{e}");
    }

    #[test]
    fn password_file_and_server_id() {
        let dir = std::env::temp_dir().join(format!("inlet-mysql-pw-{}", std::process::id()));
        std::fs::write(&dir, "from-file\nignored\n").unwrap();
        let mut cfg = config("mysql://inlet@127.0.0.1:3306/shop");
        cfg.password_file = Some(dir.clone());
        let c = MysqlConnector::new(&cfg).unwrap();
        assert_eq!(c.opts.pass(), Some("from-file"));
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(cfg.server_id("orders"), cfg.server_id("orders"));
        assert_ne!(cfg.server_id("orders"), cfg.server_id("orders2"));
        assert!(cfg.server_id("orders") >= 1 << 30 && cfg.server_id("orders") < 1 << 31);
        cfg.server_id = Some(77);
        assert_eq!(cfg.server_id("orders"), 77);
        let bad: Result<MysqlSourceConfig, _> = toml_like("url = \"mysql://a@b/c\"\nslot = \"x\"");
        assert!(bad.is_err());
    }

    /// The daemon parses TOML; serde's derive is what rejects unknown keys, so any
    /// self-describing format shows it. A tiny key = "string" reader stands in for TOML here.
    fn toml_like(text: &str) -> Result<MysqlSourceConfig, serde::de::value::Error> {
        use serde::de::value::MapDeserializer;
        let pairs: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        MysqlSourceConfig::deserialize(MapDeserializer::new(pairs.into_iter()))
    }
}
