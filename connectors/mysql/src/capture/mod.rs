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

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use inlet_core::{
    change_schema, CaptureEvent, Column, Op, Position, SchemaChanges, TableChanges, TableId,
    TableSchema, TableSelection, Unrepresentable, ValuePolicy,
};
use mysql_common::binlog::events::{
    Event, EventData, GtidEvent, QueryEvent, RotateEvent, RowsEventData, TableMapEvent,
};
use mysql_common::binlog::value::BinlogValue;

use crate::binlog::{
    open_stream, parse_maria_gtid, parse_maria_gtid_list, parse_xa_prepare, verify_checksum,
    xa_key, EventFeed, Flavor, MARIADB_ANNOTATE_ROWS, MARIADB_BINLOG_CHECKPOINT, MARIADB_GTID,
    MARIADB_GTID_LIST, MARIADB_QUERY_COMPRESSED, MARIADB_ROWS_COMPRESSED, MARIADB_START_ENCRYPTION,
    XA_PREPARE,
};
use crate::catalog::{column_of, MysqlTable};
use crate::config::MysqlConnector;
use crate::ddl::{altered_table_at, dml_target, sql_words, table_id, tables_change};
use crate::error::MysqlError;
use crate::position::{
    MariaGtidState, MysqlGtidSet, StartFrom, FILE_FACT, FLAVOR_FACT, GTID_FACT, XA_FACT,
};
use crate::rows::{
    catalog_lost_characters, compatible, describe_table_map, read_image, BinlogColumn, Image,
    TableMapping,
};
use crate::types::{plan_column, MysqlType};
use crate::values::{ColumnBuilder, Origin, ValueError};

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

/// Per-table change builders.
struct TableBuffer {
    schema: TableSchema,
    kinds: Vec<MysqlType>,
    /// Each column's value policy (`[values.columns]`, else the task's default).
    policies: Vec<Unrepresentable>,
    /// Changes in an older shape of the table, cut off by a schema change, waiting to be taken.
    segments: Vec<TableChanges>,
    committed: Option<Position>,
    data: Vec<ColumnBuilder>,
    /// Rows finished into arrays but not yet taken (data columns only); they precede the
    /// builders' rows.
    carry: Option<RecordBatch>,
    /// Op of every buffered row (carry, then builders).
    ops: Vec<Op>,
    /// Change columns of the committed rows (the open transaction's are filled in at commit).
    positions: Vec<i64>,
    commit_times: Vec<i64>,
    txids: Vec<i64>,
    rows: usize,
    rows_open: usize,
    first: Option<Position>,
    last: Option<Position>,
    last_commit_time: i64,
    parts_taken: u32,
}

impl TableBuffer {
    fn new(table: &MysqlTable, committed: Option<Position>) -> Self {
        let kinds: Vec<MysqlType> = table.columns.iter().map(|c| c.decoder.clone()).collect();
        Self {
            schema: table.schema.clone(),
            data: kinds.iter().map(|k| ColumnBuilder::new(k, 1024)).collect(),
            kinds,
            policies: table.columns.iter().map(|c| c.policy).collect(),
            segments: Vec::new(),
            committed,
            carry: None,
            ops: Vec::new(),
            positions: Vec::new(),
            commit_times: Vec::new(),
            txids: Vec::new(),
            rows: 0,
            rows_open: 0,
            first: None,
            last: None,
            last_commit_time: 0,
            parts_taken: 0,
        }
    }

    fn error(&self, message: impl Into<String>) -> MysqlError {
        MysqlError::Table {
            table: self.schema.id.clone(),
            message: message.into(),
        }
    }

    /// Every buffered row's table columns (carry first); the buffer's data is left empty.
    fn drain_data(&mut self) -> Result<RecordBatch, MysqlError> {
        let arrays: Vec<ArrayRef> = self.data.iter_mut().map(ColumnBuilder::finish).collect();
        // The change batch's data fields: nullable, since a delete or TRUNCATE row has NULLs.
        let full = change_schema(&self.schema);
        let schema = Arc::new(arrow_schema::Schema::new(
            full.fields()[inlet_core::CHANGE_META_COLUMNS..].to_vec(),
        ));
        let n = arrays.first().map_or(0, |a| a.len());
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
            .map_err(|e| self.error(format!("building a change batch: {e}")))?;
        match self.carry.take() {
            None => Ok(batch),
            Some(carry) => arrow_select::concat::concat_batches(&schema, [&carry, &batch])
                .map_err(|e| self.error(format!("building a change batch: {e}"))),
        }
    }

    /// The first `n` buffered rows as a change batch with these change columns; the rest stays.
    fn split_front(
        &mut self,
        n: usize,
        positions: Vec<i64>,
        commit_times: Vec<i64>,
        txids: Vec<i64>,
    ) -> Result<RecordBatch, MysqlError> {
        let all = self.drain_data()?;
        let n = n.min(all.num_rows());
        if all.num_rows() > n {
            self.carry = Some(all.slice(n, all.num_rows() - n));
        }
        let data = all.slice(0, n);
        let ops: Vec<Op> = self.ops.drain(..n).collect();
        self.rows -= n;
        let mut op = StringBuilder::with_capacity(n, n);
        for o in &ops {
            op.append_value(o.as_str());
        }
        let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        ts.append_slice(&commit_times);
        let mut pos = Int64Builder::with_capacity(n);
        pos.append_slice(&positions);
        let mut txid = Int64Builder::with_capacity(n);
        txid.append_slice(&txids);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(op.finish()),
            Arc::new(ts.finish()),
            Arc::new(pos.finish()),
            Arc::new(txid.finish()),
        ];
        columns.extend(data.columns().iter().cloned());
        RecordBatch::try_new(change_schema(&self.schema), columns)
            .map_err(|e| self.error(format!("building a change batch: {e}")))
    }

    fn take_committed(&mut self, table: usize) -> Result<Option<TableChanges>, MysqlError> {
        let n = self.rows - self.rows_open;
        if n == 0 {
            return Ok(None);
        }
        let (Some(first), Some(last)) = (self.first.take(), self.last.take()) else {
            return Ok(None);
        };
        let positions = std::mem::take(&mut self.positions);
        let times = std::mem::take(&mut self.commit_times);
        let txids = std::mem::take(&mut self.txids);
        let batch = self.split_front(n, positions, times, txids)?;
        self.committed = self.committed.max(Some(last));
        Ok(Some(TableChanges {
            table,
            schema: self.schema.clone(),
            batch,
            first,
            last,
            commit_time_micros: self.last_commit_time,
            part: None,
        }))
    }

    /// Cuts the oldest `n` rows of the open transaction off as its next part.
    fn take_open_part(
        &mut self,
        table: usize,
        n: usize,
        txn: &OpenTxn,
    ) -> Result<TableChanges, MysqlError> {
        let batch = self.split_front(
            n,
            vec![txn.start.0 as i64; n],
            vec![txn.begin_time_micros; n],
            vec![txn.txid; n],
        )?;
        self.rows_open -= n;
        self.parts_taken += 1;
        Ok(TableChanges {
            table,
            schema: self.schema.clone(),
            batch,
            first: txn.start,
            last: txn.start,
            commit_time_micros: txn.begin_time_micros,
            part: Some(self.parts_taken),
        })
    }

    /// Appends the table columns of one row from a decoded image; columns the image lacks
    /// are NULL (a delete under a minimal before image).
    fn append_image(&mut self, image: &Image) -> Result<(), MysqlError> {
        for (col, value) in image.iter().enumerate() {
            let policy = self.policies.get(col).copied().unwrap_or_default();
            let result = match value {
                None | Some(BinlogValue::Value(mysql_common::Value::NULL)) => {
                    self.data[col].append_null();
                    Ok(())
                }
                Some(BinlogValue::Value(v)) => self.data[col].append(v, Origin::Binlog, policy),
                Some(BinlogValue::Jsonb(j)) => self.data[col].append_jsonb(j),
                Some(BinlogValue::JsonDiff(_)) => Err(ValueError::Malformed(
                    "a partial JSON update (binlog_row_value_options=PARTIAL_JSON); run \
                     SET GLOBAL binlog_row_value_options = '' so updates carry whole values"
                        .into(),
                )),
            };
            if let Err(e) = result {
                return Err(value_error(&self.schema, col, e));
            }
        }
        Ok(())
    }

    /// Takes the open transaction's rows out of the buffer (data columns and ops).
    fn cut_open(&mut self) -> Result<Option<(RecordBatch, Vec<Op>)>, MysqlError> {
        if self.rows_open == 0 {
            return Ok(None);
        }
        let all = self.drain_data()?;
        let keep = self.rows - self.rows_open;
        let open = all.slice(keep, all.num_rows() - keep);
        if keep > 0 {
            self.carry = Some(all.slice(0, keep));
        }
        let ops = self.ops.split_off(keep);
        self.rows = keep;
        self.rows_open = 0;
        Ok(Some((open, ops)))
    }

    /// Appends rows cut off earlier ([`TableBuffer::cut_open`]) as rows of the open transaction.
    fn push_open(&mut self, rows: RecordBatch, ops: Vec<Op>) -> Result<(), MysqlError> {
        let before = self.drain_data()?;
        if before.schema() != rows.schema() {
            return Err(self.error(
                "the table changed shape between an XA transaction's PREPARE and its COMMIT; \
                 run a new full load of the table",
            ));
        }
        let all = arrow_select::concat::concat_batches(&before.schema(), [&before, &rows])
            .map_err(|e| self.error(format!("building a change batch: {e}")))?;
        self.carry = Some(all);
        self.rows += ops.len();
        self.rows_open += ops.len();
        self.ops.extend(ops);
        Ok(())
    }

    fn push_op(&mut self, op: Op) {
        self.ops.push(op);
        self.rows += 1;
        self.rows_open += 1;
    }
}

fn value_error(schema: &TableSchema, col: usize, e: ValueError) -> MysqlError {
    let column = &schema.columns[col];
    let message = match e {
        ValueError::Malformed(m) => {
            format!(
                "cannot decode a {} value from the binlog: {m}",
                column.source_type
            )
        }
        ValueError::Unrepresentable(what) => format!(
            "{what} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" or \
             \"text\" in the task file \
             (values.on_unrepresentable sets every column) to load it",
            column.data_type(),
            inlet_core::column_key(&schema.id, &column.name)
        ),
    };
    MysqlError::Value {
        table: schema.id.clone(),
        column: column.name.clone(),
        message,
    }
}

#[derive(Debug, Clone)]
enum TxnGtid {
    Maria { domain: u32, server: u32, seq: u64 },
    Mysql { source: String, gno: u64 },
}

#[derive(Debug, Clone)]
struct OpenTxn {
    /// Where the transaction's first event starts.
    start: Position,
    txid: i64,
    begin_time_micros: i64,
    /// A group of one statement (DDL): it commits with that statement's event.
    standalone: bool,
    /// A `BEGIN` query event opened it (or the GTID event of a multi-statement group).
    begun: bool,
    gtid: Option<TxnGtid>,
    /// MySQL 8's immediate commit timestamp from the GTID event, µs.
    commit_time_micros: Option<i64>,
    /// An XA transaction: its rows wait for its XA COMMIT, in a group of their own.
    xa: bool,
}

/// The rows of an XA transaction that is prepared but not yet committed or rolled back.
#[derive(Debug)]
struct PreparedXa {
    /// Where its prepare group starts: a restart must read the binlog from here again.
    start: Position,
    /// Per table: its rows (data columns) and their ops.
    tables: Vec<(usize, RecordBatch, Vec<Op>)>,
}

enum GtidTracker {
    Maria(MariaGtidState),
    Mysql(MysqlGtidSet),
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
    /// XA transactions prepared and not yet committed or rolled back, by xid ([`xa_key`]).
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
            capture.gtid = match flavor {
                Flavor::MariaDb => {
                    GtidTracker::Maria(MariaGtidState::parse(&text).unwrap_or_default())
                }
                Flavor::Mysql => GtidTracker::Mysql(MysqlGtidSet::parse(&text).unwrap_or_default()),
            };
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
            gtid: match flavor {
                Flavor::MariaDb => GtidTracker::Maria(MariaGtidState::default()),
                Flavor::Mysql => GtidTracker::Mysql(MysqlGtidSet::default()),
            },
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

    fn set_file(&mut self, file: &str) {
        self.file = file.to_string();
        self.file_seq = crate::position::file_sequence(file).map_or(0, u64::from);
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

    /// The server found the file being read cut off inside an event (`message`, its error
    /// 1236). A server killed while it wrote a transaction leaves such a tail; after its restart
    /// it goes on in a new file. The torn transaction never committed: crash recovery commits
    /// only transactions whose commit event the binlog holds whole, and the server has sent
    /// every whole event before the tear. So its rows are dropped and the stream goes on at
    /// the start of the next file. A file with no later one is not a crash tail that recovery
    /// left behind, and stops the task. (A checkpoint in the torn file meets the tear again
    /// after a restart, and goes on past it the same way.)
    async fn continue_after_torn_file(&mut self, message: &str) -> Result<(), MysqlError> {
        let Some(connector) = self.connector.clone() else {
            return Err(self.error(message));
        };
        // The server names the file it found torn ("the last event read from 'F' at P"); the
        // file being read is the same one, since it announces each file with a ROTATE.
        let torn = message
            .split("last event read from '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .filter(|f| crate::position::file_sequence(f).is_some())
            .map_or_else(|| self.file.clone(), str::to_string);
        if self.tables.iter().any(|t| t.parts_taken > 0) {
            return Err(MysqlError::LostBinlog {
                server: self.server.clone(),
                message: format!(
                    "binlog: {message}. Binlog file {torn} ends inside a transaction large \
             enough that inlet had already written parts of it; the server crashed \
             while writing it, so it never committed, but inlet cannot take those parts \
             back. Delete the task checkpoint and run the task again for a new full load"
                ),
            });
        }
        let mut conn = connector.connect().await?;
        let files = crate::binlog::binlog_files(&mut conn, &connector).await?;
        drop(conn);
        let seq = crate::position::file_sequence(&torn);
        let next = files
            .iter()
            .filter(|(f, _)| crate::position::file_sequence(f) > seq)
            .min_by_key(|(f, _)| crate::position::file_sequence(f));
        let Some((next, _)) = next else {
            return Err(MysqlError::LostBinlog {
                server: self.server.clone(),
                message: format!(
                    "binlog: {message}. The server's last binlog file {torn} ends inside an \
             event and no later file exists: the file is damaged (a full disk, or a \
             file cut short by hand), so the changes in it cannot be read. Check the \
             server's disk and error log; then delete the task checkpoint and run the \
             task again for a new full load"
                ),
            });
        };
        let next = next.clone();
        tracing::warn!(
            file = %torn,
            next = %next,
            "the binlog file ends inside an event, torn by a crash of the server while it wrote \
             a transaction that therefore never committed; going on with the next file"
        );
        // The torn transaction's rows, and its table maps, go.
        for t in &mut self.tables {
            t.cut_open()?;
        }
        self.txn = None;
        self.payload_end = None;
        self.maps.clear();
        let start = StartFrom::Position(crate::position::BinlogPosition {
            file: next.clone(),
            offset: 4,
        });
        let feed = open_stream(&connector, self.flavor, self.server_id, &start).await?;
        let old = std::mem::replace(&mut self.feed, feed);
        // The old connection is dead already (the server ended the dump with its error).
        drop(old);
        self.set_file(&next);
        Ok(())
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

    /// Facts to store with a checkpoint: the binlog file of the last commit, the GTID set
    /// after it (when the server has GTIDs), and the server flavor.
    pub fn checkpoint_facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![(FLAVOR_FACT.to_string(), self.flavor.as_str().to_string())];
        let file = if self.committed_file.is_empty() {
            &self.file
        } else {
            &self.committed_file
        };
        if !file.is_empty() {
            facts.push((FILE_FACT.to_string(), file.clone()));
        }
        if !self.committed_gtid.is_empty() {
            facts.push((GTID_FACT.to_string(), self.committed_gtid.clone()));
        }
        if let Some(oldest) = self.prepared_xa.values().map(|p| p.start).min() {
            facts.push((XA_FACT.to_string(), oldest.0.to_string()));
        }
        facts
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

    fn apply(&mut self, event: &Event) -> Result<Option<CaptureEvent>, MysqlError> {
        verify_checksum(event).map_err(|m| self.error(m))?;
        let header = event.header();
        let kind = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        let end_offset = self.payload_end.unwrap_or(log_pos);
        let start_offset = log_pos.saturating_sub(u64::from(header.event_size()));
        if kind == MARIADB_GTID {
            let gtid = parse_maria_gtid(event.data(), header.server_id())
                .ok_or_else(|| self.error("malformed MariaDB GTID event"))?;
            self.begin(OpenTxn {
                start: self.position(start_offset),
                txid: gtid.seq as i64,
                begin_time_micros: i64::from(header.timestamp()) * 1_000_000,
                standalone: gtid.standalone,
                begun: !gtid.standalone,
                gtid: Some(TxnGtid::Maria {
                    domain: gtid.domain,
                    server: gtid.server,
                    seq: gtid.seq,
                }),
                commit_time_micros: None,
                xa: gtid.prepared_xa,
            })?;
            return Ok(None);
        }
        if kind == XA_PREPARE {
            let (one_phase, xid) = parse_xa_prepare(event.data())
                .ok_or_else(|| self.error("malformed XA_PREPARE event"))?;
            let time = i64::from(header.timestamp()) * 1_000_000;
            return self.xa_prepared(one_phase, xid, end_offset, time).map(Some);
        }
        if kind == MARIADB_GTID_LIST {
            if let (Some(list), GtidTracker::Maria(state)) =
                (parse_maria_gtid_list(event.data()), &mut self.gtid)
            {
                for (d, s, n) in list {
                    state.apply(d, s, n);
                }
                if self.txn.is_none() {
                    self.committed_gtid = state.to_string();
                }
            }
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
                self.begin(OpenTxn {
                    start: self.position(start_offset),
                    txid: start_offset as i64,
                    begin_time_micros: i64::from(header.timestamp()) * 1_000_000,
                    standalone: false,
                    begun: false,
                    gtid: None,
                    commit_time_micros: None,
                    xa: false,
                })?;
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

    /// A ROTATE: the events after it are in the file it names. `crc_left`: the decoder left the
    /// event's CRC on the end of the name (see [`fake_rotate_file_name`]).
    fn rotate(&mut self, r: &RotateEvent<'_>, crc_left: bool) -> Result<(), MysqlError> {
        let raw = r.name_raw();
        let name = if crc_left {
            fake_rotate_file_name(raw, true)
        } else {
            rotate_file_name(raw)
        };
        // A name misread here would give every later position file number 0, behind what
        // the tables hold, and their replay guard would skip every change from then on.
        if crate::position::file_sequence(&name).is_none() {
            return Err(self.error(format!(
                "the server rotated to binlog file {name:?}, which has no numeric extension; \
                 inlet cannot place later changes. Report this with the server version"
            )));
        }
        if self.file != name {
            tracing::info!(file = %name, "binlog file");
        }
        self.set_file(&name);
        Ok(())
    }

    fn begin(&mut self, txn: OpenTxn) -> Result<(), MysqlError> {
        if let Some(open) = &self.txn {
            if open.begun || open.standalone {
                return Err(self.error(format!(
                    "a transaction began at {} while the one at {} was still open",
                    txn.start, open.start
                )));
            }
        }
        self.txn = Some(txn);
        Ok(())
    }

    fn mysql_gtid(
        &mut self,
        g: &GtidEvent,
        start_offset: u64,
        header: &mysql_common::binlog::events::BinlogEventHeader,
    ) -> Result<(), MysqlError> {
        // MySQL 8.4 tagged GTIDs count per `uuid:tag`, as the GTID set spells them.
        let uuid = crate::binlog::uuid_text(&g.sid());
        let source = match g.tag() {
            Some(tag) => format!("{uuid}:{}", tag.as_str()),
            None => uuid,
        };
        let ts = g.immediate_commit_timestamp();
        self.begin(OpenTxn {
            start: self.position(start_offset),
            txid: g.gno() as i64,
            begin_time_micros: i64::from(header.timestamp()) * 1_000_000,
            standalone: false,
            begun: false,
            gtid: Some(TxnGtid::Mysql {
                source,
                gno: g.gno(),
            }),
            commit_time_micros: (ts > 0).then_some(ts as i64),
            xa: false,
        })
    }

    fn query(
        &mut self,
        q: &QueryEvent<'_>,
        start_offset: u64,
        end_offset: u64,
        header: &mysql_common::binlog::events::BinlogEventHeader,
    ) -> Result<Option<CaptureEvent>, MysqlError> {
        let sql = q.query();
        let trimmed = sql.trim();
        let time = i64::from(header.timestamp()) * 1_000_000;
        if trimmed.eq_ignore_ascii_case("BEGIN") {
            match &mut self.txn {
                Some(t) => t.begun = true,
                None => {
                    self.txn = Some(OpenTxn {
                        start: self.position(start_offset),
                        txid: start_offset as i64,
                        begin_time_micros: time,
                        standalone: false,
                        begun: true,
                        gtid: None,
                        commit_time_micros: None,
                        xa: false,
                    })
                }
            }
            return Ok(None);
        }
        if trimmed.eq_ignore_ascii_case("COMMIT") {
            return self.commit(end_offset, time).map(Some);
        }
        if let Some(event) = self.xa_statement(trimmed, start_offset, end_offset, time)? {
            return Ok(event);
        }
        // Any other statement: DDL (its own transaction), or a statement inside a
        // multi-statement group (SAVEPOINT, …).
        let own_transaction = match &self.txn {
            None => true,
            Some(t) => t.standalone || !t.begun,
        };
        if self.txn.is_none() {
            self.txn = Some(OpenTxn {
                start: self.position(start_offset),
                txid: start_offset as i64,
                begin_time_micros: time,
                standalone: true,
                begun: false,
                gtid: None,
                commit_time_micros: None,
                xa: false,
            });
        }
        let schema = q.schema().into_owned();
        self.ddl(&schema, trimmed)?;
        if own_transaction {
            return self.commit(end_offset, time).map(Some);
        }
        Ok(None)
    }

    /// A DDL statement: TRUNCATE becomes a `T` row; the shape changes of ALTER are taken from
    /// the next TABLE_MAP of the table, which describes it as it now is. A statement that
    /// changes which tables are captured (a captured table renamed or dropped, a selected table
    /// created or renamed into the selection), or changes a table's rows without row events (a
    /// partition dropped, truncated or exchanged: [`crate::ddl::partition_change`]; a column
    /// added with a value in every existing row, a type changed, a character set converted:
    /// [`crate::ddl::values_rewrite`]), sets `tables_changed`; the tables whose rows the row
    /// events no longer account for are `replaced`. Comments around the statement are skipped
    /// ([`crate::ddl::code_of`]).
    fn ddl(&mut self, schema: &str, sql: &str) -> Result<(), MysqlError> {
        let words = sql_words(sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let first = lower.first().map(String::as_str);
        match first {
            Some("truncate") => {
                let name_at = if lower.get(1).map(String::as_str) == Some("table") {
                    2
                } else {
                    1
                };
                if let Some(name) = words.get(name_at) {
                    let id = table_id(name, schema);
                    if let Some(&table) = self.by_name.get(&id) {
                        self.truncate_row(table)?;
                    }
                }
            }
            Some("drop") | Some("rename") | Some("alter") | Some("create") => {
                if first == Some("alter") {
                    if let Some(at) = altered_table_at(&lower) {
                        if let Some(name) = words.get(at) {
                            let id = table_id(name.trim_end_matches(','), schema);
                            if self.by_name.contains_key(&id) {
                                self.altered.push(id);
                            }
                        }
                    }
                }
                if first != Some("create") {
                    // The table maps of the old shape must not decode a later row.
                    self.maps.clear();
                }
                if let Some(change) = tables_change(&words, &lower, schema) {
                    let captured = change.gone.iter().find(|id| {
                        self.by_name.contains_key(id)
                            || (id.name == "*"
                                && self.by_name.keys().any(|k| k.schema == id.schema))
                    });
                    let joining = change.new.iter().find(|id| {
                        !self.by_name.contains_key(id) && self.options.selection.includes(id)
                    });
                    let at = self.txn.as_ref().map(|t| t.start);
                    let replaced: Vec<TableId> = change
                        .replaced
                        .iter()
                        // Not only captured names: one the checkpoint still has may be
                        // uncaptured now (dropped, and the stream started again before it was
                        // created again); its target holds the old table's rows.
                        .filter(|id| self.options.selection.includes(id))
                        .cloned()
                        .collect();
                    if let Some(at) = at.filter(|_| !replaced.is_empty()) {
                        // A name this stream does not capture is recorded (the checkpoint
                        // keeps it until a load after it) without stopping the stream: such a
                        // table is being loaded beside it, from a snapshot taken after the
                        // statement (the stream reads it again from the checkpoint held back
                        // before it), or it joins through its CREATE or RENAME (`joining`).
                        // Stopping would abandon that load and start it again, over and over
                        // for a table that takes longer to load than the stream takes to reach
                        // the statement again.
                        let restart = replaced.iter().any(|id| self.by_name.contains_key(id));
                        match change.rows_without_events {
                            // The statement itself changed the rows: no row event says which.
                            Some(operation) => {
                                for id in replaced.iter().filter(|id| self.by_name.contains_key(id))
                                {
                                    tracing::info!(table = %id, operation, "ALTER TABLE … {operation} changed the table's rows without row events (the binlog holds only the statement): it is loaded again once the changes before it are written");
                                }
                            }
                            None => {
                                if let Some(id) =
                                    replaced.iter().find(|id| self.by_name.contains_key(id))
                                {
                                    tracing::info!(table = %id, statement = %first.unwrap_or_default(), "a captured table's name now holds another table (a table swap, or DROP and CREATE): it is loaded again once the changes before it are written");
                                }
                            }
                        }
                        self.replaced
                            .extend(replaced.into_iter().map(|id| (id, at)));
                        if restart {
                            self.tables_changed = true;
                        }
                    }
                    if let Some(id) = captured {
                        tracing::info!(table = %id, statement = %first.unwrap_or_default(), "a captured table was renamed or dropped: re-discovering the tables once the changes before it are written");
                        self.tables_changed = true;
                    } else if let Some(id) = joining {
                        tracing::info!(table = %id, "a table the selection matches appeared: re-discovering the tables once the changes before it are written");
                        self.tables_changed = true;
                    }
                }
            }
            Some("insert" | "replace" | "update" | "delete" | "load") => {
                // With ROW format a change reaches the binlog as row events; a statement here
                // comes from a session (or an upstream primary) writing STATEMENT or MIXED, and
                // its rows are not in the binlog at all.
                if let Some(name) = dml_target(&words, &lower) {
                    let id = table_id(&name, schema);
                    if self.by_name.contains_key(&id) {
                        // The statement's text holds row values: it stays out of the
                        // message, which reaches logs and /status.
                        let kind = lower.first().map(String::as_str).unwrap_or_default();
                        return Err(self.error(format!(
                            "{id}: a change was logged as a statement, not as rows (a session \
                             or an upstream primary with binlog_format = STATEMENT or MIXED), \
                             so its rows cannot be read from the binlog: an {} statement. Make \
                             every writer use ROW (SET GLOBAL binlog_format = 'ROW', and no SET \
                             SESSION binlog_format), then run a new full load of the table",
                            kind.to_ascii_uppercase()
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the columns of the tables an ALTER changed from the catalog. A failure only
    /// costs the finer plan: the columns are then planned from the binlog alone.
    async fn read_catalog_columns(&mut self) {
        use mysql_async::prelude::Queryable;
        let ids = std::mem::take(&mut self.altered);
        let Some(connector) = self.connector.clone() else {
            return;
        };
        let mut conn = match connector.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the altered tables' columns; planning them from the binlog");
                return;
            }
        };
        for id in ids {
            let what = "reading an altered table's columns";
            let rows: Result<Vec<(String, String, Option<String>)>, _> = connector
                .within(what, async {
                    conn.exec(
                        "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME FROM \
                         information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                        (id.schema.clone(), id.name.clone()),
                    )
                    .await
                    .map_err(|e| connector.query_error(what, &e))
                })
                .await;
            match rows {
                Ok(rows) => {
                    self.catalog_columns.insert(
                        id,
                        rows.into_iter()
                            .map(|(name, ty, cs)| (name, (ty, cs)))
                            .collect(),
                    );
                }
                Err(e) => {
                    tracing::warn!(table = %id, error = %e, "cannot read the table's columns; planning new ones from the binlog")
                }
            }
        }
        let _ = conn.disconnect().await;
    }

    /// `XA START|BEGIN`, `XA END`, `XA COMMIT`, `XA ROLLBACK` statements (MySQL logs the start
    /// as a statement; MariaDB flags the GTID event). Returns the event to report when the
    /// statement ends a group; None when `sql` is not an XA statement.
    fn xa_statement(
        &mut self,
        sql: &str,
        start_offset: u64,
        end_offset: u64,
        time: i64,
    ) -> Result<Option<Option<CaptureEvent>>, MysqlError> {
        let mut words = sql.splitn(3, char::is_whitespace);
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("XA")) {
            return Ok(None);
        }
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let xid = xa_key(words.next().unwrap_or_default());
        match verb.as_str() {
            "START" | "BEGIN" => {
                match &mut self.txn {
                    Some(t) => {
                        t.begun = true;
                        t.xa = true;
                    }
                    None => {
                        self.txn = Some(OpenTxn {
                            start: self.position(start_offset),
                            txid: start_offset as i64,
                            begin_time_micros: time,
                            standalone: false,
                            begun: true,
                            gtid: None,
                            commit_time_micros: None,
                            xa: true,
                        })
                    }
                }
                Ok(Some(None))
            }
            "END" => Ok(Some(None)),
            "COMMIT" | "ROLLBACK" => {
                if self.txn.as_ref().is_some_and(|t| t.xa) {
                    // One phase (`XA COMMIT … ONE PHASE`): the group holds the rows itself.
                    self.keep_xa_rows_unless_held()?;
                    return self.commit(end_offset, time).map(|e| Some(Some(e)));
                }
                if self.txn.is_none() {
                    self.txn = Some(OpenTxn {
                        start: self.position(start_offset),
                        txid: start_offset as i64,
                        begin_time_micros: time,
                        standalone: true,
                        begun: false,
                        gtid: None,
                        commit_time_micros: None,
                        xa: false,
                    });
                }
                match self.prepared_xa.remove(&xid) {
                    Some(prepared) if verb == "COMMIT" => {
                        let start = self.txn.as_ref().map_or(prepared.start, |t| t.start);
                        for (table, rows, ops) in prepared.tables {
                            let t = &mut self.tables[table];
                            // The target holds this commit already (a restart re-read it).
                            if t.committed.is_some_and(|c| start < c) {
                                continue;
                            }
                            t.push_open(rows, ops)?;
                        }
                    }
                    Some(_) => {}
                    None => tracing::warn!(
                        xid = %xid,
                        statement = %verb,
                        "XA {verb} of a transaction whose prepare this stream did not read (it \
                         was prepared before the task's snapshot or first start); its changes, \
                         if it made any to captured tables, are not in the target"
                    ),
                }
                self.commit(end_offset, time).map(|e| Some(Some(e)))
            }
            _ => Ok(None),
        }
    }

    /// At the commit of an XA transaction's own group: its rows stay unless the tables hold
    /// the transaction already.
    fn keep_xa_rows_unless_held(&mut self) -> Result<(), MysqlError> {
        let Some(start) = self.txn.as_ref().map(|t| t.start) else {
            return Ok(());
        };
        for t in &mut self.tables {
            if t.committed.is_some_and(|c| start < c) {
                t.cut_open()?;
            }
        }
        Ok(())
    }

    /// The XA_PREPARE event that ends an XA transaction's group. A one-phase commit commits
    /// its rows now; a prepare puts them aside until the XA COMMIT (or drops them at XA
    /// ROLLBACK), and the group itself commits empty.
    fn xa_prepared(
        &mut self,
        one_phase: bool,
        xid: String,
        end_offset: u64,
        time: i64,
    ) -> Result<CaptureEvent, MysqlError> {
        if one_phase {
            self.keep_xa_rows_unless_held()?;
            return self.commit(end_offset, time);
        }
        let start = self
            .txn
            .as_ref()
            .map_or_else(|| self.position(end_offset), |t| t.start);
        let mut tables = Vec::new();
        for (i, t) in self.tables.iter_mut().enumerate() {
            if let Some((rows, ops)) = t.cut_open()? {
                tables.push((i, rows, ops));
            }
        }
        self.prepared_xa.insert(xid, PreparedXa { start, tables });
        self.commit(end_offset, time)
    }

    fn truncate_row(&mut self, table: usize) -> Result<(), MysqlError> {
        let Some(txn) = &self.txn else {
            return Err(self.error("TRUNCATE outside a transaction"));
        };
        let t = &mut self.tables[table];
        if t.committed.is_some_and(|c| txn.start < c) {
            return Ok(());
        }
        for col in &mut t.data {
            col.append_null();
        }
        t.push_op(Op::Truncate);
        Ok(())
    }

    fn commit(&mut self, end_offset: u64, event_time: i64) -> Result<CaptureEvent, MysqlError> {
        let end = self.position(end_offset);
        // The binlog only moves forward: a commit behind the one before means its coordinates
        // were misread, and the tables' replay guards would silently drop what follows.
        if let Some(last) = self.last_end.filter(|&last| end < last) {
            return Err(self.error(format!(
                "a transaction ended at {}:{end_offset} ({end}), behind the previous one ({last}); \
                 inlet stops rather than skip changes. Report this with the server version",
                self.file
            )));
        }
        self.last_end = Some(end);
        self.payload_end = None;
        let txn = self.txn.take();
        let (txid, commit_time) = match &txn {
            Some(t) => (t.txid, t.commit_time_micros.unwrap_or(event_time)),
            None => (end_offset as i64, event_time),
        };
        for t in &mut self.tables {
            if t.rows_open > 0 || t.parts_taken > 0 {
                let n = t.rows_open;
                t.positions.extend(std::iter::repeat_n(end.0 as i64, n));
                t.commit_times.extend(std::iter::repeat_n(commit_time, n));
                t.txids.extend(std::iter::repeat_n(txid, n));
                t.first = t.first.or(Some(end));
                t.last = Some(end);
                t.last_commit_time = commit_time;
            }
            t.rows_open = 0;
            t.parts_taken = 0;
        }
        if let Some(g) = txn.and_then(|t| t.gtid) {
            match (&mut self.gtid, g) {
                (
                    GtidTracker::Maria(state),
                    TxnGtid::Maria {
                        domain,
                        server,
                        seq,
                    },
                ) => {
                    state.apply(domain, server, seq);
                    self.committed_gtid = state.to_string();
                }
                (GtidTracker::Mysql(set), TxnGtid::Mysql { source, gno }) => {
                    set.add(&source, gno);
                    self.committed_gtid = set.to_string();
                }
                _ => {}
            }
        }
        self.committed_file = self.file.clone();
        Ok(CaptureEvent::Committed {
            end,
            commit_time_micros: commit_time,
        })
    }

    fn table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<(), MysqlError> {
        let id = TableId::new(
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        let Some(&table) = self.by_name.get(&id) else {
            self.maps.insert(tme.table_id(), None);
            return Ok(());
        };
        let columns = describe_table_map(tme, self.flavor)
            .map_err(|m| self.error(format!("TABLE_MAP of {id}: {m}")))?;
        if let Some(Some(m)) = self.maps.get(&tme.table_id()) {
            if m.columns == columns && m.table == table {
                return Ok(());
            }
        }
        let mapping = self.map_columns(table, columns)?;
        self.maps.insert(tme.table_id(), Some(mapping));
        Ok(())
    }

    /// Matches a TABLE_MAP's columns to the table's, applying the schema-change policy when
    /// they differ.
    fn map_columns(
        &mut self,
        table: usize,
        columns: Vec<BinlogColumn>,
    ) -> Result<TableMapping, MysqlError> {
        let id = self.tables[table].schema.id.clone();
        let named = columns.iter().all(|c| c.name.is_some());
        if !named {
            // Without binlog_row_metadata=FULL, columns can only be matched by position.
            let t = &self.tables[table];
            let same = columns.len() == t.kinds.len()
                && columns
                    .iter()
                    .zip(t.kinds.iter().zip(&t.policies))
                    .all(|(c, (k, policy))| compatible(k, c, *policy));
            if !same || t.schema.columns.len() != columns.len() {
                return Err(MysqlError::Table {
                    table: id,
                    message: "the binlog does not name the columns (binlog_row_metadata is \
                              MINIMAL) and they no longer match the table; run SET GLOBAL \
                              binlog_row_metadata = FULL and start a new full load"
                        .into(),
                });
            }
            return Ok(TableMapping {
                table,
                targets: (0..columns.len()).map(Some).collect(),
                columns,
            });
        }
        let wanted: Vec<usize> = (0..columns.len())
            .filter(|&i| {
                let name = columns[i].name.as_deref().unwrap_or("");
                !self.options.selection.excludes_column(&id, name)
            })
            .collect();
        for &i in &wanted {
            let name = columns[i].name.as_deref().unwrap_or("");
            if let Some(message) =
                crate::types::unsupported(&id.to_string(), name, &columns[i].column_type())
            {
                return Err(MysqlError::Table { table: id, message });
            }
        }
        let change = {
            let t = &self.tables[table];
            let mut parts = Vec::new();
            for &i in &wanted {
                let c = &columns[i];
                let name = c.name.as_deref().unwrap_or("");
                match t.schema.columns.iter().position(|s| s.name == name) {
                    None => parts.push(format!("added {name}")),
                    Some(j) if !compatible(&t.kinds[j], c, t.policies[j]) => {
                        parts.push(format!("changed the type of {name} to {}", c.column_type()))
                    }
                    Some(_) => {}
                }
            }
            for col in &t.schema.columns {
                if !wanted
                    .iter()
                    .any(|&i| columns[i].name.as_deref() == Some(&col.name))
                {
                    parts.push(format!("dropped {}", col.name));
                }
            }
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        if let Some(change) = change {
            match self.options.schema_changes {
                SchemaChanges::Fail => {
                    return Err(MysqlError::Table {
                        table: id,
                        message: format!(
                            "the source table changed ({change}) and [cdc] schema_changes = \
                             \"fail\"; set it to \"evolve\" or \"ignore\", or run a new full load"
                        ),
                    })
                }
                SchemaChanges::Ignore => {
                    tracing::warn!(table = %id, %change, "schema change ignored (schema_changes = \"ignore\")");
                }
                SchemaChanges::Evolve => {
                    self.evolve(table, &columns, &wanted)?;
                    tracing::info!(table = %id, %change, "schema evolved");
                }
            }
        }
        // Labels the catalog showed with '?' for characters it cannot hold: the binlog's are
        // whole, and they decode the rows' indexes from here on.
        for c in &columns {
            let (Some(name), Some(labels)) = (c.name.as_deref(), c.labels.as_ref()) else {
                continue;
            };
            let t = &mut self.tables[table];
            let Some(j) = t.schema.columns.iter().position(|s| s.name == name) else {
                continue;
            };
            let whole: Arc<[String]> = labels.clone().into();
            let kind = match &t.kinds[j] {
                MysqlType::Enum { labels: ours }
                    if **ours != **labels && catalog_lost_characters(ours, labels) =>
                {
                    MysqlType::Enum { labels: whole }
                }
                MysqlType::Set { labels: ours }
                    if **ours != **labels && catalog_lost_characters(ours, labels) =>
                {
                    MysqlType::Set { labels: whole }
                }
                _ => continue,
            };
            t.data[j].set_labels(&kind);
            t.kinds[j] = kind;
        }
        let t = &self.tables[table];
        let targets = (0..columns.len())
            .map(|i| {
                if !wanted.contains(&i) {
                    return None;
                }
                let c = &columns[i];
                let j = t
                    .schema
                    .columns
                    .iter()
                    .position(|s| Some(s.name.as_str()) == c.name.as_deref())?;
                compatible(&t.kinds[j], c, t.policies[j]).then_some(j)
            })
            .collect();
        Ok(TableMapping {
            table,
            columns,
            targets,
        })
    }

    /// Switches `table` to the columns of a TABLE_MAP. Rows buffered in the old shape become a
    /// segment of their own; columns that kept their name and type keep their plan.
    fn evolve(
        &mut self,
        table: usize,
        columns: &[BinlogColumn],
        wanted: &[usize],
    ) -> Result<(), MysqlError> {
        let values = self.options.policy.clone();
        let txn = self.txn.clone();
        let catalog = self
            .catalog_columns
            .get(&self.tables[table].schema.id)
            .cloned()
            .unwrap_or_default();
        let t = &mut self.tables[table];
        if let Some(changes) = t.take_committed(table)? {
            t.segments.push(changes);
        }
        if t.rows_open > 0 {
            let Some(txn) = &txn else {
                return Err(t.error("rows of an open transaction outside any transaction"));
            };
            let n = t.rows_open;
            let part = t.take_open_part(table, n, txn)?;
            t.segments.push(part);
        }
        let mut new_columns = Vec::with_capacity(wanted.len());
        let mut kinds = Vec::with_capacity(wanted.len());
        let mut policies = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let c = &columns[i];
            let name = c.name.clone().unwrap_or_default();
            let kept = t
                .schema
                .columns
                .iter()
                .position(|s| s.name == name)
                .filter(|&j| compatible(&t.kinds[j], c, t.policies[j]));
            match kept {
                Some(j) => {
                    new_columns.push(t.schema.columns[j].clone());
                    kinds.push(t.kinds[j].clone());
                    policies.push(t.policies[j]);
                }
                None => {
                    // As discovery would plan it, when the catalog's type fits the binlog's.
                    let policy = values.for_column(&t.schema.id, &name);
                    let plan = catalog
                        .get(&name)
                        .map(|(ty, cs)| plan_column(&name, ty, cs.as_deref(), true, policy))
                        .filter(|p| compatible(&p.decoder, c, policy))
                        .unwrap_or_else(|| c.plan(&name, policy));
                    new_columns.push(column_of(&plan));
                    kinds.push(plan.decoder);
                    policies.push(policy);
                }
            }
        }
        t.schema
            .primary_key
            .retain(|k| new_columns.iter().any(|c: &Column| &c.name == k));
        t.schema.columns = new_columns;
        t.data = kinds.iter().map(|k| ColumnBuilder::new(k, 1024)).collect();
        t.kinds = kinds;
        t.policies = policies;
        t.carry = None;
        Ok(())
    }

    fn rows(&mut self, rows: &RowsEventData<'_>) -> Result<Option<CaptureEvent>, MysqlError> {
        let Some(Some(mapping)) = self.maps.get(&rows.table_id()) else {
            return Ok(None);
        };
        let mapping = mapping.clone();
        let table = mapping.table;
        let Some(txn) = &self.txn else {
            return Err(self.error("a row event outside a transaction"));
        };
        // An XA transaction's rows are kept whatever the table holds: its XA COMMIT, later, is
        // the transaction the target may hold or not.
        let xa = txn.xa;
        if !xa && self.tables[table].committed.is_some_and(|c| txn.start < c) {
            return Ok(None); // the target holds this transaction already
        }
        let (op_kind, before_bits, after_bits) = match rows {
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                (Op::Insert, None, rows.columns_after_image())
            }
            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => (
                Op::Update,
                rows.columns_before_image(),
                rows.columns_after_image(),
            ),
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                (Op::Delete, rows.columns_before_image(), None)
            }
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(MysqlError::Table {
                    table: self.tables[table].schema.id.clone(),
                    message: "the binlog holds partial JSON updates; run SET GLOBAL \
                              binlog_row_value_options = '' so updates carry whole values"
                        .into(),
                })
            }
        };
        let n = mapping.columns.len();
        let before_present: Option<Vec<bool>> =
            before_bits.map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let after_present: Option<Vec<bool>> =
            after_bits.map(|b| (0..n).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let data = rows.rows_data();
        let width = self.tables[table].schema.columns.len();
        let mut at = 0usize;
        let mut before = std::mem::take(&mut self.before);
        let mut after = std::mem::take(&mut self.after);
        let result = (|| -> Result<(), MysqlError> {
            while at < data.len() {
                let t = &mut self.tables[table];
                let id = t.schema.id.clone();
                let bad = |m: String| MysqlError::Table {
                    table: id.clone(),
                    message: format!("cannot decode a row event: {m}"),
                };
                if let Some(present) = &before_present {
                    at += read_image(&data[at..], &mapping, present, width, &mut before)
                        .map_err(bad)?;
                }
                if let Some(present) = &after_present {
                    at += read_image(&data[at..], &mapping, present, width, &mut after)
                        .map_err(bad)?;
                    if after.iter().any(Option::is_none) {
                        return Err(t.error(
                            "a row image lacks columns (binlog_row_image is not FULL); run SET \
                             GLOBAL binlog_row_image = FULL",
                        ));
                    }
                }
                let key: Vec<usize> = t
                    .schema
                    .primary_key
                    .iter()
                    .filter_map(|k| t.schema.columns.iter().position(|c| &c.name == k))
                    .collect();
                match op_kind {
                    Op::Insert => {
                        t.append_image(&after)?;
                        t.push_op(Op::Insert);
                    }
                    Op::Delete => {
                        if before.iter().any(Option::is_none)
                            && (key.is_empty() || key.iter().any(|&k| before[k].is_none()))
                        {
                            return Err(t.error(
                                "a deleted row's image lacks its key (binlog_row_image is not \
                                 FULL); run SET GLOBAL binlog_row_image = FULL",
                            ));
                        }
                        t.append_image(&before)?;
                        t.push_op(Op::Delete);
                    }
                    _ => {
                        // A changed key is a delete of the old row and an insert of the new.
                        let key_changed =
                            !key.is_empty() && key.iter().any(|&k| before.get(k) != after.get(k));
                        if key_changed {
                            t.append_image(&before)?;
                            t.push_op(Op::Delete);
                            t.append_image(&after)?;
                            t.push_op(Op::Insert);
                        } else {
                            t.append_image(&after)?;
                            t.push_op(Op::Update);
                        }
                    }
                }
            }
            Ok(())
        })();
        self.before = before;
        self.after = after;
        result?;
        // An XA transaction may yet be rolled back: none of it is written before its commit.
        Ok((!xa && self.tables[table].rows_open >= 2 * self.part_rows)
            .then_some(CaptureEvent::Large { table }))
    }
}

/// Refuses a resume point the server's binlog cannot hold (`files`: `SHOW BINARY LOGS`): past
/// the end of its file, or in a file after the server's last. The task read and applied
/// changes there, so the server lost committed binlog (a crash of its host with
/// `sync_binlog` other than 1, a restored backup, binlogs deleted by hand): changes are missing
/// from it and the stream would read from the middle of some other event. A file older than the
/// server's first is a purged one, which the server itself reports.
fn check_resume_point(
    connector: &MysqlConnector,
    at: &crate::position::BinlogPosition,
    files: &[(String, u64)],
) -> Result<(), MysqlError> {
    let lost = |what: String| MysqlError::LostBinlog {
        server: connector.server().to_string(),
        message: format!(
            "the source lost committed binlog: the task checkpoint is at {at}, which the task \
             already read and applied, but {what}. The server lost binlog it had written (a \
             crash of its host with sync_binlog other than 1, a restored backup, or binlog \
             files deleted by hand), so changes are missing: a resync is needed. Delete the \
             task checkpoint and run the task again for a new full load, and set \
             sync_binlog = 1 on the server"
        ),
    };
    let seq = crate::position::file_sequence(&at.file);
    if let Some((_, size)) = files.iter().find(|(f, _)| *f == at.file) {
        if at.offset > *size {
            return Err(lost(format!("{} now holds only {size} bytes", at.file)));
        }
        return Ok(());
    }
    let last = files
        .iter()
        .filter_map(|(f, _)| crate::position::file_sequence(f).map(|n| (n, f)))
        .max();
    match (seq, last) {
        (Some(seq), Some((n, last))) if seq > n => Err(lost(format!(
            "the server's binlog ends with {last}, before {}",
            at.file
        ))),
        _ => Ok(()),
    }
}

/// The file name of the server's first (fake) ROTATE. It comes before the format description,
/// so it is read as if it had no checksum, and when the stream has checksums its last four
/// bytes are the CRC. (Those bytes cannot be told from the name by their look: a CRC that
/// starts with an ASCII digit once made `mariadb-bin.000001` read as `mariadb-bin.0000015`.)
fn fake_rotate_file_name(raw: &[u8], checksums: bool) -> String {
    let name = match checksums {
        true => &raw[..raw.len().saturating_sub(4)],
        false => raw,
    };
    String::from_utf8_lossy(name).into_owned()
}

/// The file name of a ROTATE event after the format description (its CRC already taken off
/// by the decoder): the name ends where the digits of its extension end.
fn rotate_file_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    match text.rfind('.') {
        Some(dot) => {
            let digits = text[dot + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            text[..dot + 1 + digits].to_string()
        }
        None => text.into_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_names_lose_a_trailing_checksum() {
        assert_eq!(
            rotate_file_name(b"mariadb-bin.000001\x12\x34\x56\x78"),
            "mariadb-bin.000001"
        );
        assert_eq!(rotate_file_name(b"binlog.000123"), "binlog.000123");
        // A CRC whose first byte is a digit ('5') is still a CRC.
        assert_eq!(
            fake_rotate_file_name(b"mariadb-bin.0000015\x9a\x01\xfe", true),
            "mariadb-bin.000001"
        );
        assert_eq!(
            fake_rotate_file_name(b"mariadb-bin.000001", false),
            "mariadb-bin.000001"
        );
    }
}
