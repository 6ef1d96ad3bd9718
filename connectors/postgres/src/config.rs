//! The `[source]` section for `kind = "postgres"`, and opening connections with it: URL,
//! password from a file, and TLS modes named as libpq names them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{describe, PgError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// `postgres://user[:password]@host:port/database`. Prefer `password_file` or `${ENV}` over a
    /// password written in the file.
    pub url: String,
    /// A file whose first line is the password; overrides any password in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the CA that signed the server's certificate, for `tls = "verify-full"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Logical replication slot of the task; default `inlet_<task name>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication the slot streams; default `inlet_<task name>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Seconds a connection may take from the TCP connect to the end of authentication and
    /// session setup. A host that accepts the connection and never answers would otherwise
    /// hold `check`, `full-load` and `run` forever.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Create the task's slot as a failover slot (PostgreSQL 17+), which a physical standby
    /// with `sync_replication_slots = on` keeps a copy of, so the task continues from the
    /// promoted standby after a failover instead of loading every table again.
    #[serde(default)]
    pub failover_slot: bool,
}

fn default_connect_timeout_s() -> u64 {
    30
}

impl PostgresSourceConfig {
    /// The slot name: as configured, or derived from the task name (`-` becomes `_`, since slot
    /// names allow lower-case letters, digits and underscores only).
    pub fn slot_name(&self, task: &str) -> String {
        self.slot.clone().unwrap_or_else(|| derived_name(task))
    }

    pub fn publication_name(&self, task: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| derived_name(task))
    }
}

fn derived_name(task: &str) -> String {
    let name: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("inlet_{name}")
}

/// libpq's sslmode values that inlet supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not verified.
    #[default]
    Prefer,
    /// TLS always; the certificate is not verified (libpq's `require`).
    Require,
    /// TLS always; the certificate must chain to the system roots or `ca_file` and name the host.
    VerifyFull,
}

/// A parsed, validated source configuration that can open connections.
#[derive(Clone)]
pub struct PgConnector {
    config: Config,
    tls: TlsMode,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    server: String,
    connect_timeout: Duration,
    /// `source.failover_slot`: slots this connector creates are failover slots.
    failover_slot: bool,
    /// The task's publication, when the connector serves a task: on PostgreSQL 18 discovery
    /// carries the stored generated columns it publishes (see [`Self::with_publication`]).
    publication: Option<String>,
}

impl std::fmt::Debug for PgConnector {
    // The tokio-postgres Config holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PgConnector {
    pub fn new(source: &PostgresSourceConfig) -> Result<Self, PgError> {
        let mut config: Config = source.url.parse().map_err(|_| PgError::Config {
            key: "url",
            // The parser's message may quote the URL, password included: keep it out.
            message: "not a valid PostgreSQL URL; expected postgres://user@host:port/database"
                .to_string(),
        })?;
        if let Some(path) = &source.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| PgError::Config {
                key: "password_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            config.password(text.lines().next().unwrap_or("").trim_end());
        }
        if config.get_user().is_none() {
            return Err(PgError::Config {
                key: "url",
                message: "names no user; write postgres://USER@host/database".to_string(),
            });
        }
        if config.get_dbname().is_none() {
            return Err(PgError::Config {
                key: "url",
                message: "names no database; write postgres://user@host/DATABASE".to_string(),
            });
        }
        if source.connect_timeout_s == 0 {
            return Err(PgError::Config {
                key: "connect_timeout_s",
                message: "must be at least 1 (seconds); the default is 30".to_string(),
            });
        }
        let connect_timeout = Duration::from_secs(source.connect_timeout_s);
        // tokio-postgres bounds the TCP connect with it; `connect` bounds the whole handshake,
        // and the walsender's startup (replication/startup.rs) reads it from here too.
        config.connect_timeout(connect_timeout);
        config.application_name("inlet");
        config.ssl_mode(match source.tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
        });
        let tls_config = match source.tls {
            TlsMode::Disable => None,
            TlsMode::Prefer | TlsMode::Require => Some(Arc::new(tls::unverified()?)),
            TlsMode::VerifyFull => Some(Arc::new(tls::verified(source.ca_file.as_deref())?)),
        };
        let server = describe_server(&config);
        Ok(Self {
            config,
            tls: source.tls,
            tls_config,
            server,
            connect_timeout,
            failover_slot: source.failover_slot,
            publication: None,
        })
    }

    /// The connector of a task whose publication is `publication`. Discovery on PostgreSQL 18
    /// then takes a table's stored generated columns when that publication publishes them (or
    /// when it does not exist yet: inlet creates it with `publish_generated_columns = stored`),
    /// so the full load reads exactly the columns the change stream sends. Without it, discovery
    /// takes them as if the publication were inlet's own.
    pub fn with_publication(mut self, publication: impl Into<String>) -> Self {
        self.publication = Some(publication.into());
        self
    }

    /// The task's publication, when set with [`Self::with_publication`].
    pub fn publication(&self) -> Option<&str> {
        self.publication.as_deref()
    }

    /// Whether the task's slot is to be a failover slot (`source.failover_slot`).
    pub fn failover_slot(&self) -> bool {
        self.failover_slot
    }

    /// Why a connection attempt was given up after `source.connect_timeout_s`: names the server
    /// and the key, and says what to check.
    pub(crate) fn timeout_reason(&self) -> String {
        let secs = self.connect_timeout.as_secs();
        format!(
            "no answer within {secs} s (source.connect_timeout_s = {secs}); check that the host \
             and port are those of a PostgreSQL server that is up and reachable (not a firewall \
             or proxy that accepts connections and forwards nothing), or raise \
             source.connect_timeout_s"
        )
    }

    /// `user@host:port/database`, safe for logs.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The parsed connection settings (host, port, user, password, database), for connections
    /// tokio-postgres cannot open itself, such as the walsender's replication connection.
    pub(crate) fn settings(&self) -> &Config {
        &self.config
    }

    /// The TLS mode and, unless it is `disable`, the rustls configuration it uses.
    pub(crate) fn tls(&self) -> (TlsMode, Option<Arc<rustls::ClientConfig>>) {
        (self.tls, self.tls_config.clone())
    }

    /// Opens a connection and drives it on a background task. Sessions use UTC, ISO dates and
    /// ISO 8601 intervals, so every value cast to text reads the same whatever the server's
    /// defaults.
    /// The whole handshake (TCP, TLS, authentication, session setup) is bounded by
    /// `source.connect_timeout_s`.
    pub async fn connect(&self) -> Result<Client, PgError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(PgError::Connect {
                server: self.server.clone(),
                reason: self.timeout_reason(),
            }),
        }
    }

    async fn connect_unbounded(&self) -> Result<Client, PgError> {
        let server = self.server.clone();
        let client = match &self.tls_config {
            None => {
                let (client, conn) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(|e| self.connect_error(&e))?;
                spawn_connection(conn, server);
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = self
                    .config
                    .connect(tls)
                    .await
                    .map_err(|e| self.connect_error(&e))?;
                spawn_connection(conn, server);
                client
            }
        };
        client
            .batch_execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; \
                 SET extra_float_digits = 3; SET statement_timeout = 0",
            )
            .await
            .map_err(|e| self.query_error("session setup", &e))?;
        Ok(client)
    }

    fn connect_error(&self, e: &tokio_postgres::Error) -> PgError {
        // The server answered and refused the login (wrong password, unknown user, no pg_hba
        // line, missing database, no CONNECT privilege): trying again cannot help, so this is
        // not the transient `Connect`, and `inlet run` fails the task instead of retrying.
        let refused_login = e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("28") || code == "3D000" || code == "42501"
        });
        // tokio-postgres says only "server does not support TLS"; with it, the reason is
        // the server's settings against source.tls, not the host being unreachable.
        if matches!(self.tls, TlsMode::Require | TlsMode::VerifyFull)
            && describe(e).contains("server does not support TLS")
        {
            let mode = match self.tls {
                TlsMode::VerifyFull => "verify-full",
                _ => "require",
            };
            return PgError::Refused {
                message: format!(
                    "cannot connect to PostgreSQL at {}: the server does not offer TLS, and \
                     source.tls = \"{mode}\" requires it; turn TLS on at the server (ssl = on, \
                     with ssl_cert_file and ssl_key_file), or set source.tls = \"prefer\" (or \
                     \"disable\") if unencrypted traffic to this server is acceptable",
                    self.server
                ),
            };
        }
        if refused_login {
            return PgError::Refused {
                message: format!(
                    "cannot connect to PostgreSQL at {}: {}; the server refused the login, which \
                     retrying cannot fix: check the user, password and database in source.url \
                     (or source.password_file), and the server's pg_hba.conf and grants",
                    self.server,
                    describe(e)
                ),
            };
        }
        PgError::Connect {
            server: self.server.clone(),
            reason: describe(e),
        }
    }

    /// A statement the server did not answer in time (a network cut that does not reset).
    pub(crate) fn no_answer(&self, what: &str) -> PgError {
        PgError::Query {
            server: self.server.clone(),
            what: what.to_string(),
            reason: "no answer in time".into(),
            code: None,
            transient: true,
        }
    }

    pub(crate) fn query_error(&self, what: &str, e: &tokio_postgres::Error) -> PgError {
        PgError::Query {
            server: self.server.clone(),
            what: what.to_string(),
            reason: describe(e),
            code: e.code().map(|c| c.code().to_string()),
            transient: crate::error::is_transient(e),
        }
    }
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>, server: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%server, error = %describe(&e), "PostgreSQL connection closed");
        }
    });
}

fn describe_server(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("?"),
        host,
        port,
        config.get_dbname().unwrap_or("?")
    )
}

mod tls {
    //! rustls client configurations for the TLS modes.

    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use crate::error::PgError;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    pub fn verified(ca_file: Option<&Path>) -> Result<ClientConfig, PgError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| PgError::Config {
                key: "ca_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| PgError::Config {
                    key: "ca_file",
                    message: format!("{} is not a PEM certificate file: {e}", path.display()),
                })?;
                roots.add(cert).map_err(|e| PgError::Config {
                    key: "ca_file",
                    message: format!("{}: {e}", path.display()),
                })?;
            }
        }
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config {
                key: "tls",
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// libpq's `prefer`/`require`: encrypted, but any certificate is accepted.
    pub fn unverified() -> Result<ClientConfig, PgError> {
        let provider = provider();
        let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config {
                key: "tls",
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    #[derive(Debug)]
    struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
