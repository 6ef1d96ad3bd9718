//! Change capture: the binlog turned into per-table change batches
//! ([`inlet_core::change_schema`] layout) holding whole committed transactions.
//!
//! Positions: a transaction's rows carry its commit position, where its last event ends
//! (`(epoch << 56) | (file sequence << 32) | offset`, see [`crate::position`]). That is known
//! only at the XID, so the change columns of the open transaction's rows are filled in at
//! commit. A transaction too large for memory is written in parts before it commits; parts carry the position where the transaction starts,
//! which is also where the previous one ended, so a table holding only parts of a transaction
//! still receives it whole again after a restart and rewrites the same parts. A transaction is
//! skipped for a table whose target already holds a position beyond the transaction's start:
//! after a restart the server re-sends everything since the checkpoint, and nothing is written
//! twice.
//!
//! This module is the event loop: it reads the stream, dispatches each event by kind and holds
//! the public API. The work per concern lives in its submodules: [`transactions`] (where a
//! transaction begins and commits, XA), [`gtid`] (the GTID set a checkpoint records), [`schema`]
//! (DDL statements and TABLE_MAPs that change a table's shape), [`row_events`] (row events into
//! rows), [`table_buffer`] (buffered rows cut into change batches and parts) and [`files`] (which
//! binlog file the stream reads).

mod files;
mod gtid;
mod row_events;
mod schema;
mod table_buffer;
mod transactions;

use std::collections::HashMap;

use inlet_core::{
    CaptureEvent, MysqlResume, Position, SchemaChanges, TableChanges, TableId, TableSchema,
    TableSelection, ValuePolicy,
};
use mysql_common::binlog::events::{Event, EventData};

use crate::binlog::{
    open_stream, parse_xa_prepare, verify_checksum, EventFeed, Flavor, MARIADB_ANNOTATE_ROWS,
    MARIADB_BINLOG_CHECKPOINT, MARIADB_GTID, MARIADB_GTID_LIST, MARIADB_QUERY_COMPRESSED,
    MARIADB_ROWS_COMPRESSED, MARIADB_START_ENCRYPTION, XA_PREPARE,
};
use crate::catalog::MysqlTable;
use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::position::StartFrom;
use crate::rows::{Image, TableMapping};
use files::check_resume_point;
use gtid::GtidTracker;
use table_buffer::TableBuffer;
use transactions::{OpenTxn, PreparedXa};

/// The settings a capture runs with (the task's `[cdc]` and `[values]` sections).
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub selection: TableSelection,
    /// The value policy: the task's default and `[values.columns]`.
    pub policy: ValuePolicy,
    pub schema_changes: SchemaChanges,
    /// A transaction's rows for one table are written as a part once they reach this many.
    pub part_rows: usize,
    /// Positions are on the task's `position_epoch`th server ([`crate::position_epoch`]).
    pub position_epoch: u8,
    /// The GTID set as of a file/offset start (the checkpoint's, or the snapshot's), so the
    /// set a checkpoint records stays whole: MySQL cannot compute it from a position.
    pub gtid_at_start: Option<String>,
}

/// Reads the binlog into per-table buffers. Same method set as `inlet_postgres::ChangeCapture`.
pub struct BinlogCapture {
    feed: EventFeed,
    flavor: Flavor,
    /// The replica id the dump connection registers with (to open it again past a torn file).
    server_id: u32,
    server: String,
    options: CaptureOptions,
    part_rows: usize,
    tables: Vec<TableBuffer>,
    by_name: HashMap<TableId, usize>,
    /// TABLE_MAP table id → its mapping (None: a table the task does not capture).
    maps: HashMap<u64, Option<TableMapping>>,
    file: String,
    file_seq: u64,
    txn: Option<OpenTxn>,
    /// End of the compressed-transaction event whose contents are being read.
    payload_end: Option<u64>,
    gtid: GtidTracker,
    /// The GTID set and file as of the last commit returned.
    committed_gtid: String,
    committed_file: String,
    bytes_received: usize,
    before: Image,
    after: Image,
    /// Where the last transaction returned ended.
    last_end: Option<Position>,
    /// XA transactions prepared and not yet committed or rolled back, by xid ([`crate::binlog::xa_key`]).
    prepared_xa: HashMap<String, PreparedXa>,
    /// For reading a table's columns from the catalog after an ALTER (None offline).
    connector: Option<MysqlConnector>,
    /// Captured tables an ALTER changed, whose catalog columns are read before the next event.
    altered: Vec<TableId>,
    /// Per table, its columns as the catalog showed them after its last ALTER: name →
    /// (COLUMN_TYPE, CHARACTER_SET_NAME). A column a TABLE_MAP adds is planned from these, as
    /// discovery plans it (the binlog cannot tell `tinyint(1)` from `tinyint`, nor `uuid` from
    /// `binary(16)`).
    catalog_columns: HashMap<TableId, HashMap<String, (String, Option<String>)>>,
    /// Whether the server sends its events with a CRC32 (`binlog_checksum`), as the stream
    /// asks it to whenever the binlog has them.
    checksums: bool,
    /// Set by a statement that changes which tables the task captures; reported as
    /// [`CaptureEvent::TablesChanged`] once its own commit has been.
    tables_changed: bool,
    /// Selected names that came to hold another table (the destination of a rename from
    /// another name, a created table), or whose rows a statement changed without row events (a
    /// partition operation), with the start of the statement's transaction.
    replaced: Vec<(TableId, Position)>,
}

impl BinlogCapture {
    /// Opens a dump connection registered as replica `server_id` and streams from `start`.
    /// `committed[i]` is the highest position the target holds for `tables[i]`.
    pub async fn start(
        connector: &MysqlConnector,
        server_id: u32,
        start: &StartFrom,
        tables: &[MysqlTable],
        committed: &[Option<Position>],
        options: CaptureOptions,
    ) -> Result<Self, MysqlError> {
        let mut conn = connector.connect().await?;
        let flavor = Flavor::detect(&mut conn, connector).await?;
        // The GTID state at a file/offset start, so checkpoints can carry it from the first
        // commit on.
        let gtid_text = match (flavor, start) {
            (_, StartFrom::MariaGtid(s) | StartFrom::MysqlGtid(s)) => Some(s.clone()),
            (_, StartFrom::Position(_)) if options.gtid_at_start.is_some() => {
                options.gtid_at_start.clone()
            }
            (Flavor::MariaDb, StartFrom::Position(p)) => {
                use mysql_async::prelude::Queryable;
                let what = "SELECT BINLOG_GTID_POS()";
                connector
                    .within(what, async {
                        conn.exec_first::<Option<String>, _, _>(
                            "SELECT BINLOG_GTID_POS(?, ?)",
                            (p.file.clone(), p.offset),
                        )
                        .await
                        .map_err(|e| connector.query_error(what, &e))
                    })
                    .await?
                    .flatten()
            }
            (Flavor::Mysql, StartFrom::Position(_)) => None,
        };
        let checksum: Option<String> = {
            use mysql_async::prelude::Queryable;
            let what = "SELECT @@global.binlog_checksum";
            connector
                .within(what, async {
                    conn.query_first(what)
                        .await
                        .map_err(|e| connector.query_error(what, &e))
                })
                .await?
        };
        if let StartFrom::Position(p) = start {
            if let Ok(files) = crate::binlog::binlog_files(&mut conn, connector).await {
                check_resume_point(connector, p, &files)?;
            }
        }
        drop(conn);
        let feed = open_stream(connector, flavor, server_id, start).await?;
        let mut capture =
            Self::with_feed(feed, flavor, connector.server(), tables, committed, options);
        capture.connector = Some(connector.clone());
        capture.server_id = server_id;
        if let StartFrom::Position(p) = start {
            capture.set_file(&p.file);
        }
        capture.checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        if let Some(text) = gtid_text {
            capture.gtid = GtidTracker::from_text(flavor, &text);
            capture.committed_gtid = text;
        }
        Ok(capture)
    }

    /// A capture over events already read (binlog files, [`crate::read_binlog_file`]), for
    /// tests and offline tools. `file` names the binlog file the events come from.
    pub fn from_events(
        events: Vec<Event>,
        file: &str,
        flavor: Flavor,
        tables: &[MysqlTable],
        committed: &[Option<Position>],
        options: CaptureOptions,
    ) -> Self {
        let mut c = Self::with_feed(
            EventFeed::from_events(events),
            flavor,
            file,
            tables,
            committed,
            options,
        );
        c.set_file(file);
        c
    }

    fn with_feed(
        feed: EventFeed,
        flavor: Flavor,
        server: &str,
        tables: &[MysqlTable],
        committed: &[Option<Position>],
        options: CaptureOptions,
    ) -> Self {
        let buffers = tables
            .iter()
            .enumerate()
            .map(|(i, t)| TableBuffer::new(t, committed.get(i).copied().flatten()))
            .collect();
        Self {
            feed,
            flavor,
            server_id: 0,
            server: server.to_string(),
            part_rows: options.part_rows.max(1),
            options,
            tables: buffers,
            by_name: tables
                .iter()
                .enumerate()
                .map(|(i, t)| (t.schema.id.clone(), i))
                .collect(),
            maps: HashMap::new(),
            file: String::new(),
            file_seq: 0,
            txn: None,
            payload_end: None,
            gtid: GtidTracker::empty(flavor),
            committed_gtid: String::new(),
            committed_file: String::new(),
            bytes_received: 0,
            before: Vec::new(),
            after: Vec::new(),
            checksums: false,
            last_end: None,
            prepared_xa: HashMap::new(),
            connector: None,
            altered: Vec::new(),
            catalog_columns: HashMap::new(),
            tables_changed: false,
            replaced: Vec::new(),
        }
    }

    /// Whether a transaction is open (begun, not yet committed).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    fn position(&self, offset: u64) -> Position {
        crate::position::binlog_position(self.options.position_epoch, self.file_seq, offset)
    }

    fn error(&self, message: impl Into<String>) -> MysqlError {
        MysqlError::Binlog {
            server: self.server.clone(),
            message: message.into(),
        }
    }

    /// Reads until a transaction commits, the server reports idleness (a heartbeat with no
    /// transaction open), or a table's share of the open transaction must be written as a
    /// part. None when the feed ended.
    pub async fn next(&mut self) -> Result<Option<CaptureEvent>, MysqlError> {
        loop {
            if self.tables_changed && self.txn.is_none() {
                self.tables_changed = false;
                return Ok(Some(CaptureEvent::TablesChanged));
            }
            let event = match self.feed.next().await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(None),
                Err(message) if crate::binlog::is_torn_event(&message) => {
                    self.continue_after_torn_file(&message).await?;
                    continue;
                }
                Err(message) => return Err(self.error(message)),
            };
            self.bytes_received += event.header().event_size() as usize;
            let out = self.apply(&event)?;
            if !self.altered.is_empty() {
                self.read_catalog_columns().await;
            }
            if let Some(ev) = out {
                return Ok(Some(ev));
            }
        }
    }

    /// MySQL keeps no replica-side acknowledgement: what the target holds is the checkpoint.
    pub async fn acknowledge(&mut self, _position: Position) -> Result<(), MysqlError> {
        Ok(())
    }

    /// Closes the dump connection.
    pub async fn finish(self) -> Result<(), MysqlError> {
        let server = self.server.clone();
        self.feed
            .close()
            .await
            .map_err(|message| MysqlError::Binlog { server, message })
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Binlog bytes received since the last [`BinlogCapture::reset_buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.bytes_received
    }

    pub fn reset_buffered_bytes(&mut self) {
        self.bytes_received = 0;
    }

    /// Rows buffered for committed transactions of every table.
    pub fn buffered_rows(&self) -> usize {
        self.tables.iter().map(|t| t.rows - t.rows_open).sum()
    }

    /// The schema `table` has now (after any schema change the stream brought).
    pub fn schema(&self, table: usize) -> Option<&TableSchema> {
        self.tables.get(table).map(|t| &t.schema)
    }

    /// What to store with a checkpoint to resume after the last commit: the binlog file of
    /// the last commit, the GTID set after it (when the server has GTIDs), the server flavor,
    /// and where the oldest XA transaction prepared but not yet ended begins. The server's id
    /// is the task's to add.
    pub fn resume(&self) -> MysqlResume {
        let file = if self.committed_file.is_empty() {
            &self.file
        } else {
            &self.committed_file
        };
        MysqlResume {
            binlog_file: (!file.is_empty()).then(|| file.clone()),
            gtid_set: (!self.committed_gtid.is_empty()).then(|| self.committed_gtid.clone()),
            flavor: Some(self.flavor.as_str().to_string()),
            server_id: None,
            xa_prepared_from: self.prepared_xa.values().map(|p| p.start).min(),
        }
    }

    /// Selected names the binlog showed coming to hold another table since the capture started,
    /// each with the start of that statement's transaction: `RENAME TABLE a TO t` or `ALTER
    /// TABLE a RENAME TO t` (an online schema change tool's cut-over, gh-ost and
    /// pt-online-schema-change), `CREATE [OR REPLACE] TABLE t` (after a DROP). The rows the
    /// target holds for such a name are another table's: it must be loaded again. So must a
    /// table whose rows `ALTER TABLE t DROP|TRUNCATE|EXCHANGE PARTITION …` changed: the binlog
    /// holds the statement, not the rows it deleted or moved.
    ///
    /// The statement is the signal, not an identity read from the catalog: InnoDB's table id
    /// and `CREATE_TIME` change on every rebuilding ALTER (ALGORITHM=COPY or an INPLACE
    /// rebuild), which keeps the table and its rows, so an identity would reload tables that
    /// were only altered, while the name only moves onto another table by these statements.
    pub fn replaced_tables(&self) -> &[(TableId, Position)] {
        &self.replaced
    }

    /// The changes of committed transactions buffered for `table`: a batch per shape the table
    /// had (more than one only across a schema change), oldest first.
    pub fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, MysqlError> {
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(Vec::new());
        };
        let mut out = std::mem::take(&mut t.segments);
        if let Some(changes) = t.take_committed(table)? {
            out.push(changes);
        }
        Ok(out)
    }

    /// The oldest `part_rows` rows of the open transaction for `table`, as its next part. Call
    /// after [`CaptureEvent::Large`], once [`BinlogCapture::take`] has taken committed rows.
    pub fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, MysqlError> {
        let Some(txn) = self.txn.clone() else {
            return Ok(None);
        };
        let part_rows = self.part_rows;
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(None);
        };
        if t.rows != t.rows_open || t.rows_open < 2 * part_rows {
            return Ok(None);
        }
        t.take_open_part(table, part_rows, &txn).map(Some)
    }

    /// Applies one event, dispatched by kind to the concern that owns it. Returns what
    /// [`BinlogCapture::next`] reports when the event ends something: a commit, idleness, or a
    /// table's share of a large transaction due as a part.
    fn apply(&mut self, event: &Event) -> Result<Option<CaptureEvent>, MysqlError> {
        verify_checksum(event).map_err(|m| self.error(m))?;
        let header = event.header();
        let kind = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        let end_offset = self.payload_end.unwrap_or(log_pos);
        let start_offset = log_pos.saturating_sub(u64::from(header.event_size()));
        if kind == MARIADB_GTID {
            self.maria_gtid(event.data(), start_offset, &header)?;
            return Ok(None);
        }
        if kind == XA_PREPARE {
            let (one_phase, xid) = parse_xa_prepare(event.data())
                .ok_or_else(|| self.error("malformed XA_PREPARE event"))?;
            let time = i64::from(header.timestamp()) * 1_000_000;
            return self.xa_prepared(one_phase, xid, end_offset, time).map(Some);
        }
        if kind == MARIADB_GTID_LIST {
            self.maria_gtid_list(event.data());
            return Ok(None);
        }
        if kind == MARIADB_QUERY_COMPRESSED || MARIADB_ROWS_COMPRESSED.contains(&kind) {
            return Err(self.error(
                "the server writes compressed binlog events (log_bin_compress=ON), which inlet \
                 does not read; run SET GLOBAL log_bin_compress = OFF",
            ));
        }
        if matches!(
            kind,
            MARIADB_ANNOTATE_ROWS | MARIADB_BINLOG_CHECKPOINT | MARIADB_START_ENCRYPTION
        ) {
            return Ok(None);
        }
        let data = match event.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None), // an event type this version does not know: no rows
            Err(e) => {
                return Err(self.error(format!(
                    "cannot decode a type {kind} event ending at {}:{log_pos}: {e}",
                    self.file
                )))
            }
        };
        match data {
            EventData::RotateEvent(r) => {
                // The decoder takes a CRC off an event only once it has read a format
                // description that announces them: the server's first (fake) ROTATE comes
                // before that one, so its name still ends in the CRC. Every later ROTATE (the
                // real one ending a file, whose timestamp is 0 on MariaDB too, and the fake one
                // announcing the next file) arrives without it.
                let crc_left = self.checksums
                    && !matches!(
                        event.footer().get_checksum_alg(),
                        Ok(Some(
                            mysql_common::binlog::consts::BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32
                        ))
                    );
                self.rotate(&r, crc_left)?
            }
            // A heartbeat with no transaction open: everything up to here is sent.
            EventData::HeartbeatEvent if self.txn.is_none() && log_pos > 0 => {
                return Ok(Some(CaptureEvent::Idle {
                    wal_end: self.position(log_pos),
                }));
            }
            EventData::GtidEvent(g) => self.mysql_gtid(&g, start_offset, &header)?,
            EventData::AnonymousGtidEvent(_) => {
                self.begin(
                    self.txn_without_gtid(start_offset, i64::from(header.timestamp()) * 1_000_000),
                )?;
            }
            EventData::QueryEvent(q) => return self.query(&q, start_offset, end_offset, &header),
            EventData::XidEvent(_) => {
                let time = i64::from(header.timestamp()) * 1_000_000;
                return self.commit(end_offset, time).map(Some);
            }
            EventData::TableMapEvent(tme) => self.table_map(&tme)?,
            EventData::RowsEvent(rows) => return self.rows(&rows),
            EventData::TransactionPayloadEvent(_) => self.payload_end = Some(log_pos),
            EventData::IncidentEvent(i) => {
                return Err(self.error(format!(
                    "the server logged an incident ({:?}): changes may be missing from the \
                     binlog here; run a new full load",
                    i.message()
                )))
            }
            _ => {}
        }
        Ok(None)
    }
}

impl std::fmt::Debug for BinlogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogCapture")
            .field("server", &self.server)
            .field("file", &self.file)
            .field("tables", &self.tables.len())
            .finish()
    }
}

/// Reads every event of a binlog file held in memory into [`Event`]s (compressed
/// transactions unpacked), for [`BinlogCapture::from_events`].
pub fn events_of_file(bytes: &[u8]) -> Result<Vec<Event>, MysqlError> {
    crate::binlog::read_binlog_file(bytes).map_err(|e| MysqlError::Binlog {
        server: "file".into(),
        message: e.to_string(),
    })
}
