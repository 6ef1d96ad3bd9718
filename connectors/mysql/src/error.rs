//! Errors of the MySQL/MariaDB source, written for the person who has to fix them: each names
//! the server, table, column or config key involved and, where there is one, the fix. No error
//! ever carries the password (the driver's messages are rendered without the connection URL).

use inlet_core::TableId;

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("source.{key}: {message}")]
    Config { key: &'static str, message: String },

    /// An `exclude_columns` entry names no selected table or no column of its table.
    #[error(transparent)]
    Selection(#[from] inlet_core::ExclusionError),

    /// A column is named like one of inlet's change columns.
    #[error(transparent)]
    Reserved(#[from] inlet_core::ReservedColumnError),

    #[error("cannot connect to MySQL at {server}: {reason}")]
    Connect { server: String, reason: String },

    #[error("MySQL at {server}: {what} failed: {reason}")]
    Query {
        server: String,
        what: String,
        reason: String,
    },

    /// A failure reading the binary log: a lost connection, a server error on the dump
    /// connection, a checksum mismatch or an event inlet cannot decode.
    #[error("MySQL at {server}: binlog: {message}")]
    Binlog { server: String, message: String },

    /// The server no longer has binlog the task already read and applied, or its binlog is
    /// damaged where the task must read: changes are missing and only a new full load mends it.
    #[error("MySQL at {server}: {message}")]
    LostBinlog { server: String, message: String },

    /// XA transactions are prepared and not yet committed or rolled back while a full load
    /// would start: their rows would be in neither the snapshot nor the stream after it.
    #[error(
        "MySQL at {server}: the full load cannot start while XA transactions are prepared and \
         not yet committed or rolled back: {xids}. Their rows are not in a snapshot taken now, \
         and their prepare is before its binlog position, so their XA COMMIT would bring no rows \
         to the target. End them (XA COMMIT or XA ROLLBACK with the xid shown, or let their \
         transaction manager finish them); `inlet run` tries again until they are gone, \
         `inlet full-load` can be run again"
    )]
    PreparedXa { server: String, xids: String },

    #[error("{table} column {column}: {message}")]
    Value {
        table: TableId,
        column: String,
        message: String,
    },

    /// The table's shape or the server's settings do not allow what was asked (a schema change
    /// under `schema_changes = "fail"`, a partial row image, …).
    #[error("{table}: {message}")]
    Table { table: TableId, message: String },
}

impl MysqlError {
    /// Whether the same work may succeed if tried again later: a connection that could not be
    /// made or broke, prepared XA transactions that end (usually soon), a table changed under
    /// the snapshot. A purged binlog, a setting, a privilege or a value will not.
    pub fn is_transient(&self) -> bool {
        match self {
            // Prepared XA transactions end, usually soon: the load starts once they have.
            MysqlError::Connect { .. } | MysqlError::PreparedXa { .. } => true,
            MysqlError::Query { reason, .. }
            | MysqlError::Binlog {
                message: reason, ..
            } => {
                let r = reason.to_ascii_lowercase();
                !r.contains("1236")
                    && [
                        "connection",
                        "closed",
                        "reset",
                        "broken pipe",
                        "timed out",
                        "eof",
                        "os error",
                        "server shutdown",
                        "gone away",
                        // A connection that ended inside a packet (tokio-util's words for it).
                        "bytes remaining on stream",
                    ]
                    .iter()
                    .any(|w| r.contains(w))
                    // An event the decoder could not read is no connection failure.
                    && !r.contains("cannot decode")
                    // ER_TABLE_DEF_CHANGED: a table altered or renamed after the load's snapshot
                    // began (an online schema change tool's shadow table, altered right after
                    // its creation, joining the task): a new snapshot reads it.
                    || r.starts_with("error 1412 ")
                    // ER_SLAVE_SAME_ID (MariaDB): a binlog connection with this task's
                    // server_id is still registered, most often the task's own from before a
                    // restart or its former owner's after a takeover; the server drops it
                    // once it notices the connection is gone.
                    || r.contains("error 4052 (")
            }
            MysqlError::Config { .. }
            | MysqlError::LostBinlog { .. }
            | MysqlError::Selection(_)
            | MysqlError::Reserved(_)
            | MysqlError::Value { .. }
            | MysqlError::Table { .. } => false,
        }
    }

    /// The table of a change that cannot be completed, now or at any restart: a row image that
    /// lacks columns (`binlog_row_image` not FULL, the capture's message says so). Fixing the
    /// server helps only the changes to come; a reload of the table supersedes this one.
    pub fn incomplete_change_table(&self) -> Option<&TableId> {
        match self {
            MysqlError::Table { table, message }
                if message.contains("binlog_row_image is not FULL") =>
            {
                Some(table)
            }
            _ => None,
        }
    }

    /// The server said the table does not exist (ERROR 1146, SQLSTATE 42S02): it was dropped
    /// or renamed away since it was discovered.
    pub fn is_missing_table(&self) -> bool {
        matches!(self, Self::Query { reason, .. }
            if reason.starts_with("ERROR 1146 ") || reason.contains("(42S02)"))
    }
}

/// Renders a mysql_async error with the server's own code and message. URL errors are
/// described without the URL, which may hold the password.
pub(crate) fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("ERROR {} ({}): {}", s.code, s.state, s.message),
        mysql_async::Error::Url(_) => "the connection URL is not valid".to_string(),
        // mysql_async's I/O errors repeat their cause at every level: say each once.
        other => inlet_core::with_causes(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_table_is_told_from_other_query_failures() {
        let query = |reason: &str| MysqlError::Query {
            server: "db:3306".into(),
            what: "reading app._t_del".into(),
            reason: reason.into(),
        };
        assert!(query("ERROR 1146 (42S02): Table 'app._t_del' doesn't exist").is_missing_table());
        assert!(!query("ERROR 1142 (42000): SELECT command denied").is_missing_table());
        assert!(!query("ERROR 1412 (HY000): Table definition has changed").is_missing_table());
        let binlog = MysqlError::Binlog {
            server: "db:3306".into(),
            message: "ERROR 1146 (42S02)".into(),
        };
        assert!(!binlog.is_missing_table());
    }

    /// Seen in the fleet test under CPU starvation: a daemon whose fence refused a write took
    /// the task again at once, and its binlog connection met its own earlier one (same
    /// server_id). It failed the task for good; it is a wait.
    #[test]
    fn a_binlog_connection_with_the_same_server_id_is_transient() {
        let binlog = |message: &str| MysqlError::Binlog {
            server: "db:3306".into(),
            message: message.into(),
        };
        assert!(binlog(
            "ERROR 4052 (HY000): A slave with the same server_uuid/server_id is already \
             connected; the first event 'mariadb-bin.000001' at 98252, the last event read from \
             'mariadb-bin.000001' at 145772, the last byte read from 'mariadb-bin.000001' at \
             145803."
        )
        .is_transient());
        assert!(!binlog("ERROR 1236 (HY000): Could not find first log file name").is_transient());
    }
}
