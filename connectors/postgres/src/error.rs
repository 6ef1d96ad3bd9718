//! Errors of the PostgreSQL source, written for the person who has to fix them: each names the
//! server, table or column involved and, where there is one, the fix.

use inlet_core::TableId;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("source.{key}: {message}")]
    Config { key: &'static str, message: String },

    /// An `exclude_columns` entry names no selected table or no column of its table.
    #[error(transparent)]
    Selection(#[from] inlet_core::ExclusionError),

    /// A column is named like one of inlet's change columns.
    #[error(transparent)]
    Reserved(#[from] inlet_core::ReservedColumnError),

    #[error("cannot connect to PostgreSQL at {server}: {reason}")]
    Connect { server: String, reason: String },

    #[error("PostgreSQL at {server}: {what} failed: {reason}")]
    Query {
        server: String,
        what: String,
        reason: String,
        /// The server's SQLSTATE when the server reported the error (`42P01`: the relation
        /// does not exist); `None` for a lost connection or an answer inlet could not use.
        /// Decisions read this, never the message, which follows the server's `lc_messages`.
        code: Option<String>,
        /// The connection broke or the server is shutting down or overloaded: trying again
        /// later may succeed.
        transient: bool,
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
        /// The connection broke or the server is shutting down or overloaded: trying again
        /// later may succeed.
        transient: bool,
    },

    /// Something about a whole table (not one of its columns) stops the task, e.g. a schema
    /// change under `schema_changes = "fail"`.
    #[error("{table}: {message}")]
    Table { table: TableId, message: String },

    #[error("{table} column {column}: {message}")]
    Value {
        table: TableId,
        column: String,
        message: String,
    },

    #[error("{table}: malformed COPY data from the server: {message}")]
    Protocol { table: TableId, message: String },

    /// inlet will not go on because doing so could harm the source or lose changes (a slot it
    /// did not create, a table whose writes publishing would break); the message says what to do.
    #[error("{message}")]
    Refused { message: String },

    #[error(
        "staging a large in-progress transaction in {} failed: {message}; free space there or \
         point [cdc] spool_dir at a disk with room (nothing of it was written or acknowledged)",
        dir.display()
    )]
    Spool {
        dir: std::path::PathBuf,
        message: String,
    },
}

impl PgError {
    /// Whether the same work may succeed if tried again later, on a new connection: the server
    /// was unreachable, restarted or closed the connection. A wrong setting, a missing
    /// privilege, a lost slot or a value that cannot be written is not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { .. } => true,
            PgError::Query { transient, .. } | PgError::Replication { transient, .. } => *transient,
            // Disk space may come back; the transaction is streamed again from its start.
            PgError::Spool { .. } => true,
            PgError::Config { .. }
            | PgError::Selection(_)
            | PgError::Reserved(_)
            | PgError::Table { .. }
            | PgError::Value { .. }
            | PgError::Protocol { .. }
            | PgError::Refused { .. } => false,
        }
    }
}

impl PgError {
    /// The server's SQLSTATE, when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Query { code, .. } | PgError::Replication { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The walsender said the task's publication does not exist (it was dropped under the
    /// stream): the slot cannot go on past the change it stopped at. The server reports it with
    /// the same SQLSTATE as a missing slot (42704, undefined object); the message tells them
    /// apart.
    pub fn is_publication_missing(&self) -> bool {
        matches!(self, PgError::Replication { code: Some(code), message, .. }
            if code == "42704" && message.contains("publication"))
    }

    /// The walsender said the replication slot does not exist (SQLSTATE 42704, and not about a
    /// publication): it was dropped while the task used it, so changes since the last
    /// checkpoint may be lost.
    pub fn is_slot_missing(&self) -> bool {
        matches!(self, PgError::Replication { code: Some(code), .. } if code == "42704")
            && !self.is_publication_missing()
    }

    /// The table of a change that cannot be completed, now or at any restart: an update whose
    /// unchanged TOASTed value the server did not send (the capture's message says so). Fixing
    /// the table helps only the changes to come; a reload of the table supersedes this one.
    pub fn incomplete_change_table(&self) -> Option<&TableId> {
        match self {
            PgError::Value { table, message, .. }
                if message.contains("TOASTed value unchanged") =>
            {
                Some(table)
            }
            _ => None,
        }
    }
}

/// SQLSTATEs after which a new connection may succeed: connection exceptions (08), operator
/// intervention such as a shutdown or restart (57P01-57P03), insufficient resources (53).
pub(crate) fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
}

/// Whether a tokio-postgres error leaves hope for a new connection.
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => transient_sqlstate(db.code().code()),
        // No server error: the socket failed (reset, timeout) or the connection was closed.
        None => e.code().is_none(),
    }
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
    inlet_core::with_causes(e)
}
