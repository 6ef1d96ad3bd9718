//! Opening a walsender connection: socket, TLS negotiation as libpq's sslmode does it, the
//! startup message with `replication=database`, and password authentication (cleartext, MD5,
//! SCRAM-SHA-256).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

use super::advice;
use super::wire::{Backend, ServerError, Socket, Wire};
use crate::config::{PgConnector, TlsMode};
use crate::error::PgError;

/// Session settings, as `PgConnector::connect` sets them on SQL connections, so that pgoutput
/// renders dates, times, intervals and floats exactly as the snapshot read them. They go in the
/// startup packet because a walsender in the middle of streaming takes no SET.
const SESSION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC \
                               -c extra_float_digits=3 -c statement_timeout=0";

/// A connection that passed authentication and is ready for commands.
pub(super) struct Established {
    pub wire: Wire,
    /// `server_version_num` form (150004 for 15.4).
    pub server_version_num: u32,
    pub backend_pid: Option<i32>,
}

/// Tries each configured host in turn, as libpq does, and returns the first that accepts.
pub(super) async fn connect(connector: &PgConnector) -> Result<Established, PgError> {
    let settings = connector.settings();
    let default_host = [Host::Tcp("localhost".to_string())];
    let hosts = match settings.get_hosts() {
        [] => &default_host[..],
        hosts => hosts,
    };
    let ports = settings.get_ports();
    let mut reasons = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        // libpq: one port for all hosts, or one port per host.
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let hostaddr = settings.get_hostaddrs().get(i).copied();
        let attempt = connect_host(connector, host, hostaddr, port);
        let result = match settings.get_connect_timeout() {
            Some(limit) => tokio::time::timeout(*limit, attempt)
                .await
                .unwrap_or_else(|_| Err(connector.timeout_reason())),
            None => attempt.await,
        };
        match result {
            Ok(established) => return Ok(established),
            Err(reason) if hosts.len() > 1 => {
                reasons.push(format!("{}: {reason}", show(host, port)))
            }
            Err(reason) => reasons.push(reason),
        }
    }
    Err(PgError::Connect {
        server: connector.server().to_string(),
        reason: reasons.join("; "),
    })
}

fn show(host: &Host, port: u16) -> String {
    match host {
        Host::Tcp(name) => format!("{name}:{port}"),
        #[cfg(unix)]
        Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
    }
}

/// One host. Errors are reasons for [`PgError::Connect`]: they never quote the password.
async fn connect_host(
    connector: &PgConnector,
    host: &Host,
    hostaddr: Option<IpAddr>,
    port: u16,
) -> Result<Established, String> {
    let socket = match host {
        Host::Tcp(name) => {
            let tcp = match hostaddr {
                Some(ip) => TcpStream::connect((ip, port)).await,
                None => TcpStream::connect((name.as_str(), port)).await,
            }
            .map_err(|e| {
                format!(
                    "TCP connection to {name}:{port}: {e}; check that the server is running and \
                     listens there (listen_addresses, port, firewall)"
                )
            })?;
            // Status updates are tiny and time-critical: do not let Nagle hold them back.
            tcp.set_nodelay(true)
                .map_err(|e| format!("setting TCP_NODELAY: {e}"))?;
            let (mode, tls) = connector.tls();
            negotiate_tls(tcp, name, mode, tls).await?
        }
        // libpq never uses TLS on a Unix socket either: the traffic does not leave the machine.
        #[cfg(unix)]
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let unix = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
                format!(
                    "Unix socket {}: {e}; check that the server is running and that \
                     unix_socket_directories names this folder",
                    path.display()
                )
            })?;
            Socket::Unix(unix)
        }
    };
    let mut wire = Wire::new(socket);
    startup(&mut wire, connector).await?;
    let (server_version_num, backend_pid) = wait_until_ready(&mut wire).await?;
    if server_version_num == 0 {
        return Err(
            "the server did not report its version: is this PostgreSQL? (a connection \
                    pooler cannot carry replication connections)"
                .to_string(),
        );
    }
    if server_version_num < 100_000 {
        return Err(format!(
            "the server runs PostgreSQL {}, which has no pgoutput logical decoding; \
             inlet needs PostgreSQL 10 or newer",
            version_text(server_version_num)
        ));
    }
    Ok(Established {
        wire,
        server_version_num,
        backend_pid,
    })
}

fn version_text(num: u32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

/// libpq's sslmode: `disable` never asks; `prefer` asks and accepts either answer; `require` and
/// `verify-full` insist.
async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    mode: TlsMode,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Socket, String> {
    if mode == TlsMode::Disable {
        return Ok(Socket::Plain(tcp));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(|e| format!("sending the TLS request: {e}"))?;
    // Exactly one byte, read straight from the socket: anything the server sent after it must
    // not be taken as if it came through TLS (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| format!("reading the answer to the TLS request: {e}"))?;
    match answer[0] {
        b'S' => {
            let Some(config) = tls else {
                // PgConnector builds a rustls configuration for every mode but `disable`.
                return Err("no TLS configuration for this tls mode (a bug in inlet)".to_string());
            };
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| format!("{host:?} is not a host name TLS can verify"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    let fix = if mode == TlsMode::VerifyFull {
                        "; with tls = \"verify-full\" the server's certificate must name this \
                         host and be signed by source.ca_file or a public CA"
                    } else {
                        ""
                    };
                    format!("TLS handshake: {e}{fix}")
                })?;
            Ok(Socket::Tls(Box::new(stream)))
        }
        b'N' if mode == TlsMode::Prefer => Ok(Socket::Plain(tcp)),
        b'N' => Err(format!(
            "the server does not accept TLS, and tls = \"{}\" requires it: turn on ssl in the \
             server's postgresql.conf, or set tls = \"prefer\" or \"disable\"",
            if mode == TlsMode::Require {
                "require"
            } else {
                "verify-full"
            }
        )),
        other => Err(format!(
            "the server answered the TLS request with {:?} instead of S or N: is this a \
             PostgreSQL server?",
            char::from(other)
        )),
    }
}

/// Sends the startup message and authenticates.
async fn startup(wire: &mut Wire, connector: &PgConnector) -> Result<(), String> {
    let settings = connector.settings();
    // PgConnector::new refuses a configuration without user or database.
    let user = settings.get_user().unwrap_or_default();
    let database = settings.get_dbname().unwrap_or_default();
    let options = match settings.get_options() {
        // The URL's own options come last, so they win over inlet's.
        Some(extra) if !extra.is_empty() => format!("{SESSION_OPTIONS} {extra}"),
        _ => SESSION_OPTIONS.to_string(),
    };
    let mut params = vec![
        ("user", user),
        ("database", database),
        // A logical walsender bound to the database: replication commands and SQL.
        ("replication", "database"),
        // pgoutput converts text values to the client encoding.
        ("client_encoding", "UTF8"),
        ("options", options.as_str()),
    ];
    if let Some(name) = settings.get_application_name() {
        params.push(("application_name", name));
    }
    frontend::startup_message(params, wire.out())
        .map_err(|e| format!("building the startup message: {e}"))?;
    flush(wire).await?;
    authenticate(wire, user, settings.get_password()).await
}

async fn flush(wire: &mut Wire) -> Result<(), String> {
    wire.flush()
        .await
        .map_err(|e| format!("sending to the server: {e}"))
}

async fn receive(wire: &mut Wire, during: &str) -> Result<Message, String> {
    match wire.read_message().await {
        Ok(Backend::Message(Message::ErrorResponse(body))) => {
            Err(explain(&ServerError::from_fields(body.fields())))
        }
        Ok(Backend::Message(m)) => Ok(m),
        Ok(Backend::CopyBoth) => Err(format!("unexpected CopyBothResponse during {during}")),
        Ok(Backend::Eof) => Err(format!("the server closed the connection during {during}")),
        Err(e) => Err(format!("{during}: {e}")),
    }
}

/// A server error during startup, with what to do about it.
fn explain(e: &ServerError) -> String {
    match e.code.as_deref().and_then(advice) {
        Some(fix) => format!("{e}; {fix}"),
        None => e.to_string(),
    }
}

fn password<'a>(password: Option<&'a [u8]>, method: &str) -> Result<&'a [u8], String> {
    password.ok_or_else(|| {
        format!(
            "the server asks for a password ({method}) and none is configured: put it in \
             source.password_file or in the URL"
        )
    })
}

async fn authenticate(wire: &mut Wire, user: &str, pass: Option<&[u8]>) -> Result<(), String> {
    loop {
        match receive(wire, "authentication").await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let pass = password(pass, "password")?;
                frontend::password_message(pass, wire.out())
                    .map_err(|e| format!("building the password message: {e}"))?;
                flush(wire).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(user.as_bytes(), password(pass, "md5")?, body.salt());
                frontend::password_message(hash.as_bytes(), wire.out())
                    .map_err(|e| format!("building the password message: {e}"))?;
                flush(wire).await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut offered = Vec::new();
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| format!("reading the SASL mechanisms: {e}"))?
                {
                    offered.push(m.to_string());
                }
                if !offered.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(format!(
                        "the server offers SASL mechanisms {offered:?} and inlet speaks only \
                         SCRAM-SHA-256"
                    ));
                }
                scram(wire, password(pass, "scram-sha-256")?).await?;
            }
            Message::NoticeResponse(body) => super::log_notice(&body),
            other => {
                return Err(format!(
                    "the server asks for {} authentication, which inlet does not support: use \
                     scram-sha-256, md5 or password for this connection in pg_hba.conf",
                    auth_name(&other)
                ));
            }
        }
    }
}

fn auth_name(m: &Message) -> &'static str {
    match m {
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => "GSSAPI",
        Message::AuthenticationKerberosV5 => "Kerberos V5",
        Message::AuthenticationScmCredential => "SCM credential",
        Message::AuthenticationSspi => "SSPI",
        _ => "an unknown kind of",
    }
}

/// SCRAM-SHA-256 without channel binding (`n,,`), which every server that offers SCRAM accepts.
async fn scram(wire: &mut Wire, pass: &[u8]) -> Result<(), String> {
    let mut scram = ScramSha256::new(pass, ChannelBinding::unsupported());
    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), wire.out())
        .map_err(|e| format!("building the SCRAM message: {e}"))?;
    flush(wire).await?;
    match receive(wire, "SCRAM authentication").await? {
        Message::AuthenticationSaslContinue(body) => scram
            .update(body.data())
            .map_err(|e| format!("SCRAM: the server's first message: {e}"))?,
        _ => return Err("SCRAM: the server broke off the exchange".to_string()),
    }
    frontend::sasl_response(scram.message(), wire.out())
        .map_err(|e| format!("building the SCRAM message: {e}"))?;
    flush(wire).await?;
    match receive(wire, "SCRAM authentication").await? {
        Message::AuthenticationSaslFinal(body) => scram
            .finish(body.data())
            .map_err(|e| format!("SCRAM: the server could not prove it knows the password ({e})")),
        _ => Err("SCRAM: the server broke off the exchange".to_string()),
    }
}

/// After authentication: parameters and the backend key until ReadyForQuery.
async fn wait_until_ready(wire: &mut Wire) -> Result<(u32, Option<i32>), String> {
    let mut version = 0;
    let mut version_num = None;
    let mut pid = None;
    loop {
        match receive(wire, "session start").await? {
            Message::ReadyForQuery(_) => return Ok((version_num.unwrap_or(version), pid)),
            Message::BackendKeyData(body) => pid = Some(body.process_id()),
            Message::ParameterStatus(body) => match (body.name(), body.value()) {
                (Ok("server_version"), Ok(v)) => version = parse_server_version(v),
                // Reported by newer servers; exact where server_version may carry a suffix.
                (Ok("server_version_num"), Ok(v)) => version_num = v.trim().parse().ok(),
                _ => {}
            },
            Message::NoticeResponse(body) => super::log_notice(&body),
            _ => return Err("unexpected message before the session was ready".to_string()),
        }
    }
}

/// `server_version` ("15.4 (Debian 15.4-1)", "16beta1", "9.6.24") in `server_version_num`
/// form; 0 when it cannot be read.
pub(super) fn parse_server_version(text: &str) -> u32 {
    let numbers: Vec<u32> = text
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|part| !part.is_empty())
        .take(3)
        .filter_map(|part| part.parse().ok())
        .collect();
    match numbers[..] {
        [major, ..] if major >= 10 => major * 10_000 + numbers.get(1).copied().unwrap_or(0),
        [major, minor, ..] => major * 10_000 + minor * 100 + numbers.get(2).copied().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.4 (Debian 15.4-1.pgdg120+1)"),
            150_004
        );
        assert_eq!(parse_server_version("15.4"), 150_004);
        assert_eq!(parse_server_version("16beta1"), 160_000);
        assert_eq!(parse_server_version("14devel"), 140_000);
        assert_eq!(parse_server_version("10.23"), 100_023);
        assert_eq!(parse_server_version("9.6.24"), 90_624);
        assert_eq!(parse_server_version("9.6"), 90_600);
        assert_eq!(parse_server_version(""), 0);
        assert_eq!(parse_server_version("x"), 0);
        assert_eq!(parse_server_version("9"), 0);
    }

    #[test]
    fn version_texts() {
        assert_eq!(version_text(90_624), "9.6.24");
        assert_eq!(version_text(150_004), "15.4");
    }
}
