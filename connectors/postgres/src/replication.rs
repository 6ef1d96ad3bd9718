//! A small walsender (streaming replication protocol) client on postgres-protocol and tokio.
//! tokio-postgres cannot open replication connections, and pgwire-replication cannot create a
//! slot that exports a snapshot on the same connection, which a consistent full load needs.
//!
//! A [`ReplicationConnection`] runs replication commands (IDENTIFY_SYSTEM, slot creation and
//! removal); [`ReplicationConnection::start_replication`] turns it into a
//! [`ReplicationStream`] of pgoutput messages, read only when the caller asks for the next one.

mod lsn;
mod startup;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::config::PgConnector;
use crate::error::PgError;
use crate::types::quote_ident;
pub use lsn::Lsn;
use wire::{Backend, ServerError, SocketHandle, Wire};

/// How long slot creation may wait before the log says what it waits for.
const SLOT_WAIT_TOLD_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier (a 64-bit number, as text).
    pub systemid: String,
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database the connection is bound to.
    pub dbname: Option<String>,
}

/// The answer to CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The first position the slot can stream from: every transaction that commits after it is
    /// streamed, every one before it is in the exported snapshot.
    pub consistent_point: Lsn,
    /// The exported snapshot, for `SET TRANSACTION SNAPSHOT`: always `Some` from
    /// [`ReplicationConnection::create_slot_exporting_snapshot`], `None` from
    /// [`ReplicationConnection::create_slot`].
    pub snapshot_name: Option<String>,
    pub output_plugin: String,
}

/// One row of a simple query's result, values in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRow {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl QueryRow {
    /// The value of the named column; `None` for SQL NULL or a column the result does not have.
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.values.get(i)?.as_deref()
    }
}

/// One message of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// XLogData (`w`): one pgoutput message. `server_time` is in microseconds since
    /// 2000-01-01 00:00 UTC (PostgreSQL's epoch); `data` shares the read buffer, no copy.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        server_time: i64,
        data: Bytes,
    },
    /// Primary keepalive (`k`). When `reply_requested`, answer with
    /// [`ReplicationStream::send_status`] soon: the server drops a client that stays silent for
    /// `wal_sender_timeout`.
    Keepalive {
        wal_end: Lsn,
        server_time: i64,
        reply_requested: bool,
    },
}

/// A walsender connection (`replication=database`) between commands.
pub struct ReplicationConnection {
    wire: Wire,
    server: String,
    server_version_num: u32,
    backend_pid: Option<i32>,
    /// A command was sent and its ReadyForQuery not read yet: the caller dropped the future of
    /// a command half-way. The next command first reads the rest.
    in_flight: bool,
    /// `source.failover_slot`: the (permanent) slots this connection creates are failover slots.
    failover_slot: bool,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("server", &self.server)
            .field("server_version_num", &self.server_version_num)
            .field("backend_pid", &self.backend_pid)
            .finish()
    }
}

impl ReplicationConnection {
    /// Opens a logical replication connection with the connector's hosts, user, password,
    /// database, application name and TLS mode. The session uses UTC, ISO dates, ISO 8601
    /// intervals and `extra_float_digits = 3`, as inlet's SQL connections do, so that pgoutput's
    /// text values read the same as the snapshot's.
    pub async fn connect(connector: &PgConnector) -> Result<Self, PgError> {
        let established = startup::connect(connector).await?;
        Ok(Self {
            wire: established.wire,
            server: connector.server().to_string(),
            server_version_num: established.server_version_num,
            backend_pid: established.backend_pid,
            in_flight: false,
            failover_slot: connector.failover_slot(),
        })
    }

    /// The server's version as `server_version_num` writes it (150004 for 15.4).
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// The process id of the walsender serving this connection (for `pg_terminate_backend`,
    /// or to match `pg_stat_replication.pid`).
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    pub async fn identify_system(&mut self) -> Result<SystemInfo, PgError> {
        let what = "IDENTIFY_SYSTEM";
        let row = self.one_row(what, "IDENTIFY_SYSTEM").await?;
        Ok(SystemInfo {
            systemid: self.column(what, &row, "systemid")?.to_string(),
            timeline: self.parsed(what, &row, "timeline", |v| v.parse().ok())?,
            xlogpos: self.parsed(what, &row, "xlogpos", Lsn::parse)?,
            dbname: row.get("dbname").map(str::to_string),
        })
    }

    /// Creates a logical slot for pgoutput and exports the snapshot it starts from. The snapshot
    /// stays importable (`SET TRANSACTION SNAPSHOT`) only until the next command on this
    /// connection, so import it on the snapshot connections before calling anything else here,
    /// [`ReplicationConnection::start_replication`] included.
    pub async fn create_slot_exporting_snapshot(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, PgError> {
        self.create_exporting(slot, false).await
    }

    /// A temporary slot (dropped when this connection closes) exporting its snapshot: the
    /// consistent point and snapshot for loading a table that joins a running task.
    pub async fn create_temporary_slot_exporting_snapshot(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, PgError> {
        self.create_exporting(slot, true).await
    }

    async fn create_exporting(
        &mut self,
        slot: &str,
        temporary: bool,
    ) -> Result<CreatedSlot, PgError> {
        let created = self.create(slot, true, temporary).await?;
        if created.snapshot_name.is_none() {
            return Err(self.protocol(
                &format!("creating replication slot {slot:?}"),
                "the server created the slot but exported no snapshot",
            ));
        }
        Ok(created)
    }

    /// Creates a logical slot for pgoutput without exporting a snapshot.
    pub async fn create_slot(&mut self, slot: &str) -> Result<CreatedSlot, PgError> {
        self.create(slot, false, false).await
    }

    async fn create(
        &mut self,
        slot: &str,
        export: bool,
        temporary: bool,
    ) -> Result<CreatedSlot, PgError> {
        let what = format!("creating replication slot {slot:?}");
        self.check_slot_name(&what, slot)?;
        // PostgreSQL 15 introduced the parenthesized options and deprecated the keywords,
        // which 10 to 14 understand only.
        let temp = if temporary { " TEMPORARY" } else { "" };
        // A temporary slot (a joining table's snapshot) dies with its connection: PostgreSQL
        // refuses to make it a failover slot, and a standby would have nothing to keep.
        let failover = !temporary && self.failover_slot;
        if failover && self.server_version_num < 170_000 {
            return Err(PgError::Config {
                key: "failover_slot",
                message: format!(
                    "true needs PostgreSQL 17 or later (failover slots), and the server is \
                     version {}: remove source.failover_slot or upgrade the server",
                    self.server_version_num
                ),
            });
        }
        let failover = if failover { ", FAILOVER true" } else { "" };
        let sql = match (self.server_version_num >= 150_000, export) {
            (true, true) => format!(
                "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput (SNAPSHOT 'export'{failover})",
                quote_ident(slot)
            ),
            (true, false) => format!(
                "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput (SNAPSHOT 'nothing'{failover})",
                quote_ident(slot)
            ),
            (false, true) => format!(
                "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput EXPORT_SNAPSHOT",
                quote_ident(slot)
            ),
            (false, false) => format!(
                "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                quote_ident(slot)
            ),
        };
        let row = {
            let created = self.one_row(&what, &sql);
            tokio::pin!(created);
            tokio::select! {
                row = &mut created => row,
                () = tokio::time::sleep(SLOT_WAIT_TOLD_AFTER) => {
                    // The server answers only once the slot is consistent; say what it waits
                    // for, since nothing else shows.
                    tracing::warn!(
                        slot,
                        "creating replication slot {slot:?} has waited {} s: PostgreSQL makes a \
                         new slot wait until every transaction running now has ended (look for \
                         a long open transaction: SELECT pid, xact_start, state, query FROM \
                         pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start), \
                         and on a standby until the primary's next running-transactions record \
                         (SELECT pg_log_standby_snapshot() on the primary writes one)",
                        SLOT_WAIT_TOLD_AFTER.as_secs()
                    );
                    created.await
                }
            }
        }?;
        Ok(CreatedSlot {
            slot_name: self.column(&what, &row, "slot_name")?.to_string(),
            consistent_point: self.parsed(&what, &row, "consistent_point", Lsn::parse)?,
            snapshot_name: row.get("snapshot_name").map(str::to_string),
            output_plugin: self.column(&what, &row, "output_plugin")?.to_string(),
        })
    }

    /// Drops a slot; if a walsender is still using it, waits until that one lets go.
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), PgError> {
        let what = format!("dropping replication slot {slot:?}");
        self.check_slot_name(&what, slot)?;
        self.simple_query_as(
            &what,
            &format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(slot)),
        )
        .await
        .map(drop)
    }

    /// Runs SQL (or a replication command) with the simple query protocol and returns the rows
    /// of its last result in text form. Any command ends a snapshot exported by
    /// [`ReplicationConnection::create_slot_exporting_snapshot`].
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryRow>, PgError> {
        self.simple_query_as("a query on the replication connection", sql)
            .await
    }

    /// Starts streaming the slot's changes from `start` (the slot's `consistent_point` the first
    /// time, then the position of the last commit the sink holds; the server starts from the
    /// slot's `confirmed_flush_lsn` when that is later), for one publication. PostgreSQL 14 and
    /// newer stream with pgoutput protocol 2, logical decoding messages included and large
    /// transactions streamed while in progress; 10 to 13 with protocol 1, neither of them.
    pub async fn start_replication(
        mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<ReplicationStream, PgError> {
        let what = format!("starting replication from slot {slot:?}");
        self.check_slot_name(&what, slot)?;
        // publication_names is a string literal holding a list of identifiers: quote the name
        // as an identifier, then the whole as a literal (the replication grammar has no
        // backslash escapes, only doubled quotes).
        let publications = quote_ident(publication).replace('\'', "''");
        let proto_version = if self.server_version_num >= 140_000 {
            2
        } else {
            1
        };
        // Protocol 2 streams large transactions while in progress (ChangeCapture stages them)
        // rather than the server spilling them to its own disk.
        let options = if proto_version == 2 {
            format!(
                "proto_version '2', publication_names '{publications}', messages 'true', \
                 streaming 'true'"
            )
        } else {
            format!("proto_version '1', publication_names '{publications}'")
        };
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({options})",
            quote_ident(slot)
        );
        self.finish_previous(&what).await?;
        self.send_query(&what, &sql).await?;
        loop {
            match self.read(&what).await? {
                Backend::CopyBoth => {
                    return Ok(ReplicationStream {
                        wire: self.wire,
                        server: self.server,
                        slot: slot.to_string(),
                        proto_version,
                        start,
                        state: StreamState::Streaming,
                    })
                }
                // The connection is consumed: no need to read up to ReadyForQuery.
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(self.server_error(&what, ServerError::from_fields(body.fields())))
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(Message::ParameterStatus(_)) => {}
                Backend::Message(_) => {
                    return Err(self.protocol(&what, "unexpected answer to START_REPLICATION"))
                }
                Backend::Eof => return Err(self.closed(&what)),
            }
        }
    }

    /// Ends the session politely (Terminate), rather than by dropping the socket.
    pub async fn close(self) {
        self.wire.close().await;
    }

    async fn one_row(&mut self, what: &str, sql: &str) -> Result<QueryRow, PgError> {
        let mut rows = self.simple_query_as(what, sql).await?;
        match (rows.pop(), rows.is_empty()) {
            (Some(row), true) => Ok(row),
            _ => Err(self.protocol(what, "expected exactly one row in the answer")),
        }
    }

    fn column<'r>(&self, what: &str, row: &'r QueryRow, name: &str) -> Result<&'r str, PgError> {
        row.get(name)
            .ok_or_else(|| self.protocol(what, &format!("the answer has no {name}")))
    }

    fn parsed<T>(
        &self,
        what: &str,
        row: &QueryRow,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, PgError> {
        let text = self.column(what, row, name)?;
        parse(text).ok_or_else(|| self.protocol(what, &format!("{name} {text:?} is not valid")))
    }

    /// PostgreSQL's own rule (ReplicationSlotValidateName), checked here so the error can say
    /// what is wrong before anything is sent.
    fn check_slot_name(&self, what: &str, slot: &str) -> Result<(), PgError> {
        let valid = !slot.is_empty()
            && slot.len() <= 63
            && slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(())
        } else {
            Err(PgError::Replication {
                server: self.server.clone(),
                what: what.to_string(),
                code: None,
                transient: false,
                message: format!(
                    "{slot:?} is not a valid replication slot name: use 1 to 63 lower-case \
                     letters, digits and underscores"
                ),
            })
        }
    }

    async fn simple_query_as(&mut self, what: &str, sql: &str) -> Result<Vec<QueryRow>, PgError> {
        self.finish_previous(what).await?;
        self.send_query(what, sql).await?;
        let mut columns: Arc<[String]> = Arc::from(Vec::new());
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read(what).await? {
                Backend::Message(Message::RowDescription(body)) => {
                    let mut names = Vec::new();
                    let mut fields = body.fields();
                    while let Some(field) =
                        fallible_iterator::FallibleIterator::next(&mut fields)
                            .map_err(|e| self.protocol(what, &format!("RowDescription: {e}")))?
                    {
                        names.push(field.name().to_string());
                    }
                    columns = names.into();
                    // Rows belong to the last result only.
                    rows.clear();
                }
                Backend::Message(Message::DataRow(body)) => {
                    let values = data_row(&body)
                        .map_err(|e| self.protocol(what, &format!("DataRow: {e}")))?;
                    rows.push(QueryRow {
                        columns: columns.clone(),
                        values,
                    });
                }
                Backend::Message(Message::CommandComplete(_) | Message::EmptyQueryResponse) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    // Keep reading: ReadyForQuery follows, and the connection stays usable.
                    error = Some(ServerError::from_fields(body.fields()));
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(Message::ParameterStatus(_)) => {}
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.in_flight = false;
                    return match error {
                        Some(e) => Err(self.server_error(what, e)),
                        None => Ok(rows),
                    };
                }
                Backend::Message(Message::CopyInResponse(_) | Message::CopyOutResponse(_))
                | Backend::CopyBoth => {
                    return Err(self.protocol(
                        what,
                        "the command started a COPY, which this method cannot carry; use \
                         start_replication for streaming",
                    ))
                }
                Backend::Message(_) => {
                    return Err(self.protocol(what, "unexpected message in a query's answer"))
                }
                Backend::Eof => return Err(self.closed(what)),
            }
        }
    }

    async fn send_query(&mut self, what: &str, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, self.wire.out())
            .map_err(|e| self.protocol(what, &format!("cannot send the command: {e}")))?;
        self.in_flight = true;
        let server = self.server.clone();
        self.wire.flush().await.map_err(|e| lost(&server, what, &e))
    }

    /// Reads what is left of a command whose future was dropped, so its answer is not taken
    /// for the next command's.
    async fn finish_previous(&mut self, what: &str) -> Result<(), PgError> {
        // Bytes of that command still unsent go first, or the server never answers it.
        let server = self.server.clone();
        self.wire
            .flush()
            .await
            .map_err(|e| lost(&server, what, &e))?;
        while self.in_flight {
            match self.read(what).await? {
                Backend::Message(Message::ReadyForQuery(_)) => self.in_flight = false,
                Backend::Eof => return Err(self.closed(what)),
                Backend::CopyBoth => {
                    return Err(self.protocol(what, "an abandoned command left a COPY open"))
                }
                Backend::Message(_) => {}
            }
        }
        Ok(())
    }

    async fn read(&mut self, what: &str) -> Result<Backend, PgError> {
        let server = self.server.clone();
        self.wire
            .read_message()
            .await
            .map_err(|e| lost(&server, what, &e))
    }

    fn server_error(&self, what: &str, e: ServerError) -> PgError {
        server_error(&self.server, what, e)
    }

    fn protocol(&self, what: &str, message: &str) -> PgError {
        protocol(&self.server, what, message)
    }

    fn closed(&self, what: &str) -> PgError {
        closed(&self.server, what)
    }
}

fn data_row(
    body: &postgres_protocol::message::backend::DataRowBody,
) -> Result<Vec<Option<String>>, String> {
    let mut values = Vec::new();
    let mut ranges = body.ranges();
    while let Some(range) =
        fallible_iterator::FallibleIterator::next(&mut ranges).map_err(|e| e.to_string())?
    {
        values.push(match range {
            None => None,
            Some(r) => {
                let bytes = body.buffer().get(r).ok_or("a value runs past the row")?;
                // client_encoding is UTF8, so anything else is a broken message.
                Some(
                    std::str::from_utf8(bytes)
                        .map_err(|_| "a value is not UTF-8")?
                        .to_string(),
                )
            }
        });
    }
    Ok(values)
}

fn log_notice(body: &postgres_protocol::message::backend::NoticeResponseBody) {
    tracing::debug!(notice = %ServerError::from_fields(body.fields()), "PostgreSQL notice");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Streaming,
    /// The server sent CopyDone: it sends no more data, but still reads status updates.
    ServerDone,
    /// The stream ended; the connection is unusable.
    Over,
    /// Reading or writing failed; the connection is unusable.
    Failed,
}

/// The CopyBoth stream after START_REPLICATION.
pub struct ReplicationStream {
    wire: Wire,
    server: String,
    slot: String,
    proto_version: u32,
    /// The position asked for in START_REPLICATION: what the target held durably then.
    start: Lsn,
    state: StreamState,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("server", &self.server)
            .field("slot", &self.slot)
            .field("proto_version", &self.proto_version)
            .field("state", &self.state)
            .finish()
    }
}

/// Ends a [`ReplicationStream`]'s connection from another task, whatever the stream's owner is
/// doing at the time (writing a large commit to the target, say), by shutting its socket down.
///
/// Why: a server shutting down (`pg_ctl stop -m fast`, or a restart) first ends the ordinary
/// sessions, then makes each walsender send all the WAL up to the shutdown and waits until its
/// client has confirmed (flushed) every bit of it. A client that is far behind, or busy, keeps
/// the whole shutdown waiting for as long as it needs. A client that hangs up is not waited
/// for, and loses nothing: the slot keeps everything after the last confirmed position, which
/// the next start streams again. The stream's owner then reads end of file (a transient
/// error) and starts again from its checkpoint.
#[derive(Debug)]
pub struct StreamHangUp {
    socket: Option<SocketHandle>,
    server: String,
}

impl StreamHangUp {
    /// Shuts the connection down (both ways). Harmless on a connection already closed.
    pub fn hang_up(&self) {
        let Some(socket) = &self.socket else {
            tracing::debug!(server = %self.server, "the replication connection cannot be ended from here");
            return;
        };
        match socket.shut_down() {
            Ok(()) => tracing::debug!(server = %self.server, "replication connection shut down"),
            // Not connected any more: the connection is over already.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => {
                tracing::warn!(server = %self.server, error = %e, "shutting the replication connection down failed")
            }
        }
    }
}

impl ReplicationStream {
    /// A [`StreamHangUp`] for this stream's connection. If the socket cannot be duplicated (out
    /// of file descriptors), the handle does nothing and the stream is unaffected.
    pub fn hang_up_handle(&self) -> StreamHangUp {
        let socket = self.wire.socket_handle().unwrap_or_else(|e| {
            tracing::warn!(server = %self.server, error = %e, "cannot duplicate the replication connection's socket: a shutdown of the server will wait for the stream to be confirmed");
            None
        });
        StreamHangUp {
            socket,
            server: self.server.clone(),
        }
    }

    /// The pgoutput protocol version in use: 2 (stream messages possible) or 1.
    pub fn protocol_version(&self) -> u32 {
        self.proto_version
    }

    /// The position the stream was started from (the `start` of
    /// [`ReplicationConnection::start_replication`]), which the caller held durably then.
    pub fn start_position(&self) -> Lsn {
        self.start
    }

    /// The next message, read from the socket only now, so the caller's pace bounds memory.
    /// `Ok(None)` once the server has ended the stream (then call [`ReplicationStream::finish`]);
    /// an error again after an error. Cancel-safe: a dropped call loses nothing, so it can sit
    /// in `select!` or under a timeout (an idle server sends a keepalive at least every
    /// `wal_sender_timeout / 2`, so a much longer silence means the connection is gone).
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        let what = "reading the replication stream";
        match self.state {
            StreamState::Streaming => {}
            StreamState::ServerDone | StreamState::Over => return Ok(None),
            StreamState::Failed => return Err(self.unusable(what)),
        }
        loop {
            let read = self.wire.read_message().await;
            let message = match read {
                Ok(Backend::Message(m)) => m,
                Ok(Backend::CopyBoth) => {
                    return Err(self.fail(protocol(
                        &self.server,
                        what,
                        "a second CopyBothResponse",
                    )))
                }
                Ok(Backend::Eof) => return Err(self.fail(closed(&self.server, what))),
                Err(e) => return Err(self.fail(lost(&self.server, what, &e))),
            };
            match message {
                Message::CopyData(body) => {
                    return match parse_copy_data(body.into_bytes()) {
                        Ok(m) => Ok(Some(m)),
                        Err(e) => Err(self.fail(protocol(&self.server, what, &e))),
                    };
                }
                Message::CopyDone => {
                    self.state = StreamState::ServerDone;
                    return Ok(None);
                }
                // Without CopyDone first only after an error, but either way the stream is over.
                Message::CommandComplete(_) | Message::ReadyForQuery(_) => {
                    self.state = StreamState::Over;
                    return Ok(None);
                }
                Message::ErrorResponse(body) => {
                    let e = ServerError::from_fields(body.fields());
                    return Err(self.fail(self.stream_error(e)));
                }
                Message::NoticeResponse(body) => log_notice(&body),
                Message::ParameterStatus(_) => {}
                _ => {
                    return Err(self.fail(protocol(
                        &self.server,
                        what,
                        "unexpected message in the replication stream",
                    )))
                }
            }
        }
    }

    /// Sends a standby status update: `written`, `flushed` and `applied` positions and the
    /// client's clock; `reply_requested` asks the server for an immediate keepalive. The server
    /// moves the slot's `confirmed_flush_lsn` to `flushed` and may then recycle the WAL before
    /// it, so `flushed` must never pass what the sink has committed durably. When every message
    /// received so far is committed, a keepalive's `wal_end` may be confirmed, so that an idle
    /// slot does not hold WAL back. Cancel-safe: the bytes a dropped call did not send go out
    /// first on the next call.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<(), PgError> {
        let what = "sending a status update on the replication stream";
        if matches!(self.state, StreamState::Over | StreamState::Failed) {
            return Err(self.unusable(what));
        }
        let body = status_update(written, flushed, applied, pg_now(), reply_requested);
        frontend::CopyData::new(&body[..])
            .map_err(|e| protocol(&self.server, what, &e.to_string()))?
            .write(self.wire.out());
        match self.wire.flush().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(lost(&self.server, what, &e))),
        }
    }

    /// Ends the stream cleanly: sends CopyDone, discards the messages still in flight until the
    /// server confirms, then closes the connection. The server may first finish sending the
    /// transaction it is decoding, so put a timeout around this if that can be long.
    pub async fn finish(mut self) -> Result<(), PgError> {
        let what = "ending the replication stream";
        if matches!(self.state, StreamState::Over | StreamState::Failed) {
            self.wire.close().await;
            return Ok(());
        }
        frontend::copy_done(self.wire.out());
        if let Err(e) = self.wire.flush().await {
            return Err(lost(&self.server, what, &e));
        }
        loop {
            match self.wire.read_message().await {
                Ok(Backend::Message(Message::ReadyForQuery(_))) | Ok(Backend::Eof) => break,
                Ok(Backend::Message(Message::ErrorResponse(body))) => {
                    return Err(self.stream_error(ServerError::from_fields(body.fields())))
                }
                Ok(Backend::Message(Message::NoticeResponse(body))) => log_notice(&body),
                // Data and keepalives in flight, the server's CopyDone, CommandComplete.
                Ok(_) => {}
                Err(e) => return Err(lost(&self.server, what, &e)),
            }
        }
        self.wire.close().await;
        Ok(())
    }

    fn stream_error(&self, e: ServerError) -> PgError {
        server_error(
            &self.server,
            &format!("streaming from replication slot {:?}", self.slot),
            e,
        )
    }

    fn fail(&mut self, e: PgError) -> PgError {
        self.state = StreamState::Failed;
        e
    }

    fn unusable(&self, what: &str) -> PgError {
        PgError::Replication {
            server: self.server.clone(),
            what: what.to_string(),
            code: None,
            transient: false,
            message: "the stream has already ended or failed; open a new replication connection"
                .to_string(),
        }
    }
}

/// Decodes the body of a CopyData message of the replication stream.
fn parse_copy_data(data: Bytes) -> Result<ReplicationMessage, String> {
    match data.first() {
        Some(b'w') => {
            let (Some(wal_start), Some(wal_end), Some(server_time)) =
                (u64_at(&data, 1), u64_at(&data, 9), u64_at(&data, 17))
            else {
                return Err(format!("XLogData of {} bytes is too short", data.len()));
            };
            Ok(ReplicationMessage::XLogData {
                wal_start: Lsn(wal_start),
                wal_end: Lsn(wal_end),
                server_time: server_time as i64,
                data: data.slice(25..),
            })
        }
        Some(b'k') => {
            let (Some(wal_end), Some(server_time), Some(reply)) =
                (u64_at(&data, 1), u64_at(&data, 9), data.get(17))
            else {
                return Err(format!("keepalive of {} bytes is too short", data.len()));
            };
            Ok(ReplicationMessage::Keepalive {
                wal_end: Lsn(wal_end),
                server_time: server_time as i64,
                reply_requested: *reply != 0,
            })
        }
        Some(&other) => Err(format!(
            "unknown replication message type {:?}",
            char::from(other)
        )),
        None => Err("empty CopyData message".to_string()),
    }
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The body of a standby status update (`r`).
fn status_update(
    written: Lsn,
    flushed: Lsn,
    applied: Lsn,
    now: i64,
    reply_requested: bool,
) -> [u8; 34] {
    let mut body = [0u8; 34];
    body[0] = b'r';
    body[1..9].copy_from_slice(&written.0.to_be_bytes());
    body[9..17].copy_from_slice(&flushed.0.to_be_bytes());
    body[17..25].copy_from_slice(&applied.0.to_be_bytes());
    body[25..33].copy_from_slice(&now.to_be_bytes());
    body[33] = u8::from(reply_requested);
    body
}

/// Microseconds since 2000-01-01 00:00 UTC, PostgreSQL's epoch.
fn pg_now() -> i64 {
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
    let unix_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix_micros.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// What to do about the server errors a replication client meets, by SQLSTATE.
fn advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "28P01" => "check the password (source.password_file or the URL)",
        "28000" => {
            "pg_hba.conf has no line letting this user connect to this database from inlet's \
             address; add one (logical replication connections match on the database name, not \
             on the `replication` keyword)"
        }
        "42501" => {
            "the user needs the REPLICATION attribute: ALTER ROLE <user> REPLICATION (or connect \
             as a superuser)"
        }
        "53300" => {
            "the server has no free walsender: raise max_wal_senders (and max_connections) or \
             stop other replication clients"
        }
        "53400" => {
            "the server has no free replication slot: raise max_replication_slots or drop slots \
             nobody uses (pg_replication_slots)"
        }
        "42710" => {
            "a slot of that name already exists: drop it with pg_drop_replication_slot() if no \
             task uses it, or choose another slot name"
        }
        "42704" => {
            "if the replication slot was dropped, the changes since inlet's last commit are gone \
             and the task needs a new full load; if a publication is missing, create it"
        }
        "55006" => {
            "another client is streaming from this slot: stop the other inlet task (or \
             pg_terminate_backend the pid named above), then retry"
        }
        "57P01" => {
            "the server ended this session (shutdown, or pg_terminate_backend); reconnect, and \
             if it keeps happening, find out who terminates it"
        }
        "57P02" | "57P03" => "the server is restarting or not accepting connections yet; retry",
        _ => return None,
    })
}

fn server_error(server: &str, what: &str, e: ServerError) -> PgError {
    let message = match e.code.as_deref().and_then(advice) {
        Some(fix) => format!("{e}; {fix}"),
        None => e.to_string(),
    };
    let transient = e
        .code
        .as_deref()
        .is_some_and(crate::error::transient_sqlstate);
    PgError::Replication {
        server: server.to_string(),
        what: what.to_string(),
        code: e.code,
        message,
        transient,
    }
}

fn lost(server: &str, what: &str, e: &std::io::Error) -> PgError {
    PgError::Replication {
        server: server.to_string(),
        what: what.to_string(),
        code: None,
        message: format!(
            "the connection broke ({e}); check that the server is up and reachable, then \
             reconnect"
        ),
        transient: true,
    }
}

fn closed(server: &str, what: &str) -> PgError {
    PgError::Replication {
        server: server.to_string(),
        what: what.to_string(),
        code: None,
        message: "the server closed the connection (terminated, restarted, or \
                  wal_sender_timeout passed without a status update); reconnect"
            .to_string(),
        transient: true,
    }
}

fn protocol(server: &str, what: &str, message: &str) -> PgError {
    PgError::Replication {
        server: server.to_string(),
        what: what.to_string(),
        code: None,
        transient: false,
        message: format!(
            "{message}; the server does not speak the replication protocol as expected (a \
             connection pooler cannot carry replication connections)"
        ),
    }
}
