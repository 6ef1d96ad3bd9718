//! Errors of the PostgreSQL source, written for the person who has to fix them: each names the
//! server, table or column involved and, where there is one, the fix.

use inlet_core::TableId;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("source.{key}: {message}")]
    Config { key: &'static str, message: String },

    #[error("cannot connect to PostgreSQL at {server}: {reason}")]
    Connect { server: String, reason: String },

    #[error("PostgreSQL at {server}: {what} failed: {reason}")]
    Query {
        server: String,
        what: String,
        reason: String,
    },

    /// A failure on the walsender (replication) connection. `code` is the server's SQLSTATE when
    /// the server reported the error (e.g. `42704` when the replication slot does not exist,
    /// `57P01` when the walsender was terminated); `None` for a lost connection or a protocol
    /// error.
    #[error("PostgreSQL at {server}: {what} failed: {message}")]
    Replication {
        server: String,
        what: String,
        code: Option<String>,
        message: String,
    },

    #[error("{table} column {column}: {message}")]
    Value {
        table: TableId,
        column: String,
        message: String,
    },

    #[error("{table}: malformed COPY data from the server: {message}")]
    Protocol { table: TableId, message: String },
}

/// Renders a tokio-postgres error with the server's own message, detail and hint, which its
/// `Display` leaves out.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}
