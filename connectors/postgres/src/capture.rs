//! Change capture: a pgoutput replication stream turned into per-table change batches
//! ([`inlet_core::change_schema`] layout) holding whole committed transactions.
//!
//! Values arrive in PostgreSQL's text output format and are appended straight to the same typed
//! builders the snapshot uses (`ColumnBuilder::append_text`), so a row reads the same from the
//! full load and from the stream. A transaction whose commit position a table already holds
//! (its change files say so) is skipped for that table: after a crash the server re-sends
//! everything since the last acknowledged position, and nothing is written twice.
//!
//! Large transactions arrive streamed while still in progress (protocol 2). Their messages are
//! staged on local disk ([`crate::spool`]) and applied at their Stream Commit exactly as a
//! transaction sent whole would be, with aborted subtransactions left out; a Stream Abort
//! drops the staged transaction. So the server never spills a large transaction to its own disk,
//! and what reaches a target is the same either way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use inlet_core::{
    change_schema, CaptureEvent, Column, Op, Position, SchemaChanges, TableChanges, TableId,
    TableSchema, TableSelection, Unrepresentable, ValuePolicy,
};

use crate::catalog::SourceTable;
use crate::copy::{ColumnBuilder, ValueError};
use crate::error::PgError;
use crate::pgoutput::{
    decode_message, PgoutputDecoder, PgoutputMessage, RelationColumn, TupleData, TupleValue,
};
use crate::replication::{Lsn, ReplicationMessage, ReplicationStream};
use crate::spool::{SpoolReplay, TransactionSpool};
use crate::types::{plan_column, type_name, Decoder, TypeCatalog};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Per-table change builders.
struct TableBuffer {
    schema: TableSchema,
    decoders: Vec<Decoder>,
    /// Each column's value policy (`[values.columns]`, else the task's default).
    policies: Vec<Unrepresentable>,
    /// Type oid and modifier of each column, to recognise a Relation message describing it.
    column_types: Vec<(u32, i32)>,
    types: Arc<TypeCatalog>,
    /// Changes in an older shape of the table, cut off by a schema change, waiting to be taken.
    segments: Vec<TableChanges>,
    /// The highest commit position the target holds for this table; older transactions are
    /// skipped.
    committed: Option<Position>,
    op: StringBuilder,
    commit_ts: TimestampMicrosecondBuilder,
    position: Int64Builder,
    txid: Int64Builder,
    data: Vec<ColumnBuilder>,
    /// Rows of committed transactions, then rows of the open one.
    rows: usize,
    rows_in_open_txn: usize,
    first: Option<Position>,
    last: Option<Position>,
    last_commit_time: i64,
    /// Parts of the open transaction already taken.
    parts_taken: u32,
    /// Rows already finished into a batch but not yet written: the open transaction's rows
    /// left over when committed rows or a part were cut off. They precede the builders' rows.
    carry: Option<RecordBatch>,
}

impl TableBuffer {
    fn new(table: &SourceTable) -> Self {
        let decoders: Vec<Decoder> = table.columns.iter().map(|c| c.decoder.clone()).collect();
        Self {
            schema: table.schema.clone(),
            data: decoders
                .iter()
                .map(|d| ColumnBuilder::new(d, 1024).with_times_as_text(table.times_as_text))
                .collect(),
            decoders,
            policies: table.columns.iter().map(|c| c.policy).collect(),
            column_types: table
                .columns
                .iter()
                .map(|c| (c.type_oid, c.typmod))
                .collect(),
            types: table.types.clone(),
            segments: Vec::new(),
            committed: None,
            op: StringBuilder::new(),
            commit_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            position: Int64Builder::new(),
            txid: Int64Builder::new(),
            rows: 0,
            rows_in_open_txn: 0,
            first: None,
            last: None,
            last_commit_time: 0,
            parts_taken: 0,
            carry: None,
        }
    }

    /// The rows of committed transactions, in the current shape.
    fn take_committed(&mut self, table: usize) -> Result<Option<TableChanges>, PgError> {
        let committed_rows = self.rows - self.rows_in_open_txn;
        if committed_rows == 0 {
            return Ok(None);
        }
        let (Some(first), Some(last)) = (self.first.take(), self.last.take()) else {
            return Ok(None);
        };
        let batch = self.split_off_front(committed_rows)?;
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

    /// Appends the change columns of one row whose table columns were just appended.
    fn push_meta(&mut self, op: Op, txn: &OpenTxn) {
        self.op.append_value(op.as_str());
        self.commit_ts.append_value(txn.commit_time);
        self.position.append_value(txn.commit.0 as i64);
        self.txid.append_value(i64::from(txn.xid));
        self.rows += 1;
        self.rows_in_open_txn += 1;
    }

    /// Every buffered row (carry first) as one batch; the buffer is left empty.
    fn drain(&mut self) -> Result<RecordBatch, PgError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.op.finish()),
            Arc::new(self.commit_ts.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.txid.finish()),
        ];
        columns.extend(self.data.iter_mut().map(ColumnBuilder::finish));
        self.rows = 0;
        let error = |e: arrow_schema::ArrowError| PgError::Protocol {
            table: self.schema.id.clone(),
            message: format!("building a change batch: {e}"),
        };
        let batch = RecordBatch::try_new(change_schema(&self.schema), columns).map_err(error)?;
        match self.carry.take() {
            None => Ok(batch),
            Some(carry) => arrow_select::concat::concat_batches(&batch.schema(), [&carry, &batch])
                .map_err(error),
        }
    }

    /// Cuts the first `n` rows off the buffer; the rest stays as carry.
    fn split_off_front(&mut self, n: usize) -> Result<RecordBatch, PgError> {
        let all = self.drain()?;
        let rest = all.num_rows() - n.min(all.num_rows());
        if rest > 0 {
            self.carry = Some(all.slice(n, rest));
        }
        self.rows = rest;
        Ok(all.slice(0, n.min(all.num_rows())))
    }
}

/// How a relation of the stream maps onto a captured table.
struct RelationMap {
    table: usize,
    /// For each column of the Relation message, the table column it fills (None: excluded).
    columns: Vec<Option<usize>>,
    replica_identity_full: bool,
    /// Relation columns that make up the key of the change log (see [`change_key_columns`]):
    /// an update that changes one of them is a delete and an insert.
    key_columns: Vec<usize>,
}

struct OpenTxn {
    xid: u32,
    commit: Position,
    commit_time: i64,
}

/// Reads a replication stream into per-table buffers.
pub struct ChangeCapture {
    stream: ReplicationStream,
    decoder: PgoutputDecoder,
    policy: ValuePolicy,
    tables: Vec<TableBuffer>,
    by_name: HashMap<TableId, usize>,
    relations: HashMap<u32, RelationMap>,
    txn: Option<OpenTxn>,
    /// A transaction's rows for one table are written as a part once they reach this many.
    part_rows: usize,
    selection: TableSelection,
    schema_changes: SchemaChanges,
    server: String,
    /// Bytes of change messages received since the last [`ChangeCapture::reset_buffered_bytes`]:
    /// a cheap measure of the source data buffered, for flushing by size.
    bytes_received: usize,
    /// A captured table now has another name (renamed, or moved to another schema); reported
    /// as [`CaptureEvent::TablesChanged`] once no transaction is open.
    tables_changed: bool,
    /// Streamed transactions not yet committed or aborted, by top-level xid.
    streamed: HashMap<u32, TransactionSpool>,
    /// The top-level xid of the open streamed block (between Stream Start and Stream Stop).
    stream_block: Option<u32>,
    /// A committed streamed transaction being applied from its spool, and its end position.
    replay: Option<(SpoolReplay, Position)>,
    spool_dir: PathBuf,
    /// When the server last heard from us; a long replay does not read the socket, so it
    /// reports liveness itself before the server's `wal_sender_timeout`.
    last_status: Instant,
    /// The end of the last message received (XLogData or keepalive): the "written" position
    /// every status update reports.
    received: Lsn,
    /// What the target holds durably: the stream's start, then each acknowledged position.
    /// The "flushed" and "applied" positions every status update reports, never more.
    durable: Lsn,
    /// When the last message arrived, and whether a keepalive was asked for since: a network
    /// cut without a reset (a NAT or firewall forgetting the connection, a moved address) is
    /// silence, which only a deadline ends.
    last_heard: Instant,
    asked_keepalive: bool,
    /// When [`ChangeCapture::next_message`] was last left (returned or dropped), in ns since
    /// `clock`: time spent elsewhere (writing the target, replaying a spool) is not silence.
    left_at: std::sync::atomic::AtomicU64,
    clock: Instant,
    /// Silence after which the connection counts as lost ([`ChangeCapture::silence_limit`]).
    silence_limit: Duration,
}

/// Liveness reports while applying a staged transaction: well under the default 60 s
/// `wal_sender_timeout`.
const STATUS_EVERY: Duration = Duration::from_secs(10);

impl ChangeCapture {
    /// `committed[i]` is the highest commit position the target holds for `tables[i]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: ReplicationStream,
        server: &str,
        tables: &[SourceTable],
        committed: &[Option<Position>],
        selection: TableSelection,
        policy: ValuePolicy,
        schema_changes: SchemaChanges,
        part_rows: usize,
    ) -> Self {
        let mut buffers: Vec<TableBuffer> = tables.iter().map(TableBuffer::new).collect();
        for (b, c) in buffers.iter_mut().zip(committed) {
            b.committed = *c;
        }
        let start = stream.start_position();
        Self {
            stream,
            decoder: PgoutputDecoder::new(),
            policy,
            by_name: tables
                .iter()
                .enumerate()
                .map(|(i, t)| (t.schema.id.clone(), i))
                .collect(),
            tables: buffers,
            relations: HashMap::new(),
            txn: None,
            part_rows: part_rows.max(1),
            selection,
            schema_changes,
            server: server.to_string(),
            bytes_received: 0,
            tables_changed: false,
            streamed: HashMap::new(),
            stream_block: None,
            replay: None,
            spool_dir: std::env::temp_dir(),
            last_status: Instant::now(),
            received: start,
            durable: start,
            last_heard: Instant::now(),
            asked_keepalive: false,
            left_at: std::sync::atomic::AtomicU64::new(0),
            clock: Instant::now(),
            silence_limit: Duration::from_secs(60),
        }
    }

    /// How long the stream may stay silent before the connection counts as lost (an error the
    /// task retries from its checkpoint). An idle server sends nothing while its client reports
    /// in, so after a third of it (at most 10 s) inlet asks for a keepalive, which a live server
    /// answers at once.
    pub fn silence_limit(mut self, limit: Duration) -> Self {
        self.silence_limit = limit.max(Duration::from_secs(1));
        self
    }

    /// The next message, or an error once the stream has been silent for
    /// [`ChangeCapture::silence_limit`]. Cancel-safe: the clock is in `self`.
    async fn next_message(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        /// Records when the wait ends, however it ends.
        struct Leave<'a>(&'a AtomicU64, Instant);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let at = u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.0.store(at, Ordering::Relaxed);
            }
        }
        let now = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let away = now.saturating_sub(self.left_at.load(Ordering::Relaxed));
        self.last_heard += Duration::from_nanos(away);
        let _leave = Leave(&self.left_at, self.clock);
        let ask_after = (self.silence_limit / 3).min(Duration::from_secs(10));
        loop {
            let silent = self.last_heard.elapsed();
            if silent >= self.silence_limit {
                return Err(PgError::Replication {
                    server: self.server.clone(),
                    what: "reading the replication stream".into(),
                    code: None,
                    message: format!(
                        "nothing arrived for {} s, not even the keepalive asked for \
                         (cdc.stream_silence_timeout_s): the connection is taken as lost",
                        silent.as_secs()
                    ),
                    transient: true,
                });
            }
            if silent >= ask_after && !self.asked_keepalive {
                self.asked_keepalive = true;
                let written = self.received.max(self.durable);
                self.last_status = Instant::now();
                self.stream
                    .send_status(written, self.durable, self.durable, true)
                    .await?;
            }
            let wait = if self.asked_keepalive {
                self.silence_limit - silent
            } else {
                ask_after - silent
            };
            if let Ok(message) = tokio::time::timeout(wait, self.stream.next()).await {
                let message = message?;
                self.last_heard = Instant::now();
                self.asked_keepalive = false;
                return Ok(message);
            }
        }
    }

    /// Where streamed transactions are staged until they commit (the system's temporary folder
    /// by default).
    pub fn spool_in(mut self, dir: PathBuf) -> Self {
        self.spool_dir = dir;
        self
    }

    /// Whether a transaction is open (begun, not yet committed).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Reads until a transaction commits, the server reports idleness, or a table's share of
    /// the open transaction must be written as a part. None when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<CaptureEvent>, PgError> {
        loop {
            if self.tables_changed && self.txn.is_none() {
                self.tables_changed = false;
                return Ok(Some(CaptureEvent::TablesChanged));
            }
            if self.replay.is_some() {
                if let Some(event) = self.replay_next().await? {
                    return Ok(Some(event));
                }
                continue;
            }
            let Some(msg) = self.next_message().await? else {
                return Ok(None);
            };
            match msg {
                ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                    ..
                } => {
                    self.received = self.received.max(wal_end);
                    if reply_requested {
                        // The server drops a client that stays silent for its
                        // wal_sender_timeout, and a server shutting down (fast or smart) waits
                        // until the client's flush position reaches the end of the WAL it sent:
                        // report the real positions. Flushed is only what the target holds
                        // durably (the stream loop moves it, on Idle too), never what is merely
                        // received.
                        self.send_positions().await?;
                    }
                    if self.txn.is_none() {
                        return Ok(Some(CaptureEvent::Idle {
                            wal_end: Position(wal_end.0),
                        }));
                    }
                }
                ReplicationMessage::XLogData { data, wal_end, .. } => {
                    self.received = self.received.max(wal_end);
                    self.bytes_received += data.len();
                    if let Some(event) = self.apply(&data)? {
                        return Ok(Some(event));
                    }
                }
            }
        }
    }

    /// Acknowledges `position` to the server: everything up to it is durable in the target.
    pub async fn acknowledge(&mut self, position: Position) -> Result<(), PgError> {
        self.durable = self.durable.max(Lsn(position.0));
        self.send_positions().await
    }

    /// A status update with the real positions: written = everything received, flushed =
    /// applied = what the target holds durably.
    async fn send_positions(&mut self) -> Result<(), PgError> {
        let written = self.received.max(self.durable);
        self.last_status = Instant::now();
        self.stream
            .send_status(written, self.durable, self.durable, false)
            .await
    }

    /// Ends the stream cleanly.
    pub async fn finish(self) -> Result<(), PgError> {
        self.stream.finish().await
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Source bytes received since the last flush ([`ChangeCapture::reset_buffered_bytes`]).
    pub fn buffered_bytes(&self) -> usize {
        self.bytes_received
    }

    /// Called after a flush has taken every table's committed changes.
    pub fn reset_buffered_bytes(&mut self) {
        self.bytes_received = 0;
    }

    /// Rows buffered for committed transactions of every table.
    pub fn buffered_rows(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.rows - t.rows_in_open_txn)
            .sum()
    }

    /// The changes of committed transactions buffered for `table`: a batch per shape the table
    /// had (more than one only across a schema change), oldest first.
    pub fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, PgError> {
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
    /// after [`CaptureEvent::Large`], once [`ChangeCapture::take`] has taken committed rows.
    pub fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, PgError> {
        let Some(txn) = &self.txn else {
            return Ok(None);
        };
        let (commit, commit_time) = (txn.commit, txn.commit_time);
        let part_rows = self.part_rows;
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(None);
        };
        // Committed rows go first, with take(); a part holds the open transaction's rows only,
        // and leaves at least part_rows of them so the transaction's final file is never empty.
        if t.rows != t.rows_in_open_txn || t.rows_in_open_txn < 2 * part_rows {
            return Ok(None);
        }
        let batch = t.split_off_front(part_rows)?;
        t.rows_in_open_txn -= part_rows;
        t.parts_taken += 1;
        Ok(Some(TableChanges {
            table,
            schema: t.schema.clone(),
            batch,
            first: commit,
            last: commit,
            commit_time_micros: commit_time,
            part: Some(t.parts_taken),
        }))
    }

    /// Applies one message from the server; a change inside a streamed block is staged.
    fn apply(&mut self, data: &[u8]) -> Result<Option<CaptureEvent>, PgError> {
        let msg = self.decoder.decode(data).map_err(|e| self.undecodable(e))?;
        if let (Some(top), Some(subxid)) = (self.stream_block, msg.stream_xid()) {
            let Some(spool) = self.streamed.get_mut(&top) else {
                return Err(self.protocol("a streamed change outside a known streamed transaction"));
            };
            spool
                .push(subxid, data)
                .map_err(|e| spool_error(&self.spool_dir, &e))?;
            return Ok(None);
        }
        self.apply_message(msg)
    }

    /// Applies the next staged message of the committed streamed transaction being replayed;
    /// after the last, commits it.
    async fn replay_next(&mut self) -> Result<Option<CaptureEvent>, PgError> {
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.send_positions().await?;
        }
        // No await from here on: the stream loop drops a pending `next` when its flush timer
        // fires, and the replay must then still be in `self`.
        let Some((mut replay, end)) = self.replay.take() else {
            return Ok(None);
        };
        let event = match replay
            .next_message()
            .map_err(|e| spool_error(&self.spool_dir, &e))?
        {
            None => return self.commit(end.0).map(Some),
            Some(data) => {
                self.bytes_received += data.len();
                let msg = decode_message(data, true).map_err(|e| self.undecodable(e))?;
                self.apply_message(msg)?
            }
        };
        self.replay = Some((replay, end));
        Ok(event)
    }

    /// Ends the open transaction.
    fn commit(&mut self, end_lsn: u64) -> Result<CaptureEvent, PgError> {
        let Some(txn) = self.txn.take() else {
            return Err(self.protocol("Commit without Begin"));
        };
        for t in &mut self.tables {
            if t.rows_in_open_txn > 0 || t.parts_taken > 0 {
                t.first = t.first.or(Some(txn.commit));
                t.last = Some(txn.commit);
                t.last_commit_time = txn.commit_time;
            }
            t.rows_in_open_txn = 0;
            t.parts_taken = 0;
        }
        Ok(CaptureEvent::Committed {
            end: Position(end_lsn),
            commit_time_micros: txn.commit_time,
        })
    }

    fn apply_message(&mut self, msg: PgoutputMessage<'_>) -> Result<Option<CaptureEvent>, PgError> {
        match msg {
            PgoutputMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.txn = Some(OpenTxn {
                    xid,
                    commit: Position(final_lsn),
                    commit_time: commit_time.saturating_add(PG_EPOCH_MICROS),
                });
            }
            PgoutputMessage::Commit { end_lsn, .. } => {
                return self.commit(end_lsn).map(Some);
            }
            PgoutputMessage::Relation(rel) => {
                let id = TableId::new(rel.namespace.clone(), rel.name.clone());
                let known = self.relations.get(&rel.oid).map(|m| m.table);
                let Some(&table) = self
                    .by_name
                    .get(&id)
                    .filter(|&&t| known.is_none_or(|k| k == t))
                else {
                    if let Some(was) = known {
                        // A captured table under a new name: its rows from here on belong to
                        // the new name (loaded afresh if the selection has it), not to the old
                        // target, which keeps the table as it was.
                        tracing::info!(table = %self.tables[was].schema.id, now = %id, "a captured table was renamed: re-discovering the tables once the changes before it are written");
                        self.relations.remove(&rel.oid);
                        self.tables_changed = true;
                    }
                    return Ok(None); // a table the task does not capture
                };
                let wanted: Vec<&RelationColumn> = rel
                    .columns
                    .iter()
                    .filter(|c| !self.selection.excludes_column(&id, &c.name))
                    .collect();
                if let Some(change) = describe_change(&self.tables[table], &wanted) {
                    match self.schema_changes {
                        SchemaChanges::Fail => {
                            return Err(PgError::Table {
                                table: id,
                                message: format!(
                                    "the source table changed ({change}) and [cdc] schema_changes = \"fail\"; \
                                     set it to \"evolve\" or \"ignore\", or run a new full load"
                                ),
                            })
                        }
                        SchemaChanges::Ignore => {
                            tracing::warn!(table = %id, %change, "schema change ignored (schema_changes = \"ignore\")")
                        }
                        SchemaChanges::Evolve => {
                            self.evolve(table, &wanted)?;
                            tracing::info!(table = %id, %change, "schema evolved");
                        }
                    }
                }
                let schema = &self.tables[table].schema;
                let columns: Vec<Option<usize>> = rel
                    .columns
                    .iter()
                    .map(|c| schema.columns.iter().position(|s| s.name == c.name))
                    .collect();
                let key_columns = change_key_columns(&rel, &schema.primary_key);
                self.relations.insert(
                    rel.oid,
                    RelationMap {
                        table,
                        columns,
                        replica_identity_full: rel.replica_identity == b'f',
                        key_columns,
                    },
                );
            }
            PgoutputMessage::Insert { relation, new, .. } => {
                return self.row(relation, Op::Insert, &new, None);
            }
            PgoutputMessage::Update {
                relation,
                key,
                old,
                new,
                ..
            } => {
                // In a change log keyed by the primary key, an update that changes the key is
                // a delete of the old row and an insert of the new one; any other update is an
                // update. The old values arrive as the old replica identity key ('K', sent
                // when an identity column changed or is stored out of line) or, under
                // REPLICA IDENTITY FULL, as the whole old row ('O', sent with every update).
                // Neither says by itself that the primary key changed: compare its columns.
                let old_key = match key.as_ref().or(old.as_ref()) {
                    Some(before) if self.key_changed(relation, before, &new) => Some(before),
                    _ => None,
                };
                if let Some(before) = old_key {
                    let deleted = self.row(relation, Op::Delete, before, None)?;
                    let inserted = self.row(relation, Op::Insert, &new, old.as_ref())?;
                    return Ok(inserted.or(deleted));
                }
                return self.row(relation, Op::Update, &new, old.as_ref());
            }
            PgoutputMessage::Delete {
                relation, key, old, ..
            } => {
                let Some(before) = old.or(key) else {
                    return Err(self.protocol("Delete without key or old tuple"));
                };
                return self.row(relation, Op::Delete, &before, None);
            }
            PgoutputMessage::Truncate { relations, .. } => {
                // One row with op "T" per captured table: readers replaying the log empty the
                // table at that point.
                let mut event = None;
                for oid in relations {
                    if let Some(table) = self.relations.get(&oid).map(|m| m.table) {
                        event = self.truncate_row(table)?.or(event);
                    }
                }
                return Ok(event);
            }
            PgoutputMessage::StreamStart { xid, .. } => {
                if self.txn.is_some() {
                    return Err(self.protocol("Stream Start inside a transaction"));
                }
                if !self.streamed.contains_key(&xid) {
                    let spool = TransactionSpool::create(&self.spool_dir)
                        .map_err(|e| spool_error(&self.spool_dir, &e))?;
                    self.streamed.insert(xid, spool);
                }
                self.stream_block = Some(xid);
            }
            PgoutputMessage::StreamStop => self.stream_block = None,
            PgoutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => {
                if self.txn.is_some() {
                    return Err(self.protocol("Stream Commit inside a transaction"));
                }
                self.txn = Some(OpenTxn {
                    xid,
                    commit: Position(commit_lsn),
                    commit_time: commit_time.saturating_add(PG_EPOCH_MICROS),
                });
                let Some(spool) = self.streamed.remove(&xid) else {
                    // Streamed without a change this client was sent.
                    return self.commit(end_lsn).map(Some);
                };
                tracing::debug!(
                    xid,
                    staged_bytes = spool.bytes(),
                    "applying a streamed transaction"
                );
                let replay = spool
                    .into_replay()
                    .map_err(|e| spool_error(&self.spool_dir, &e))?;
                self.replay = Some((replay, Position(end_lsn)));
            }
            PgoutputMessage::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    self.streamed.remove(&xid);
                } else if let Some(spool) = self.streamed.get_mut(&xid) {
                    spool.abort_subtransaction(subxid);
                }
            }
            PgoutputMessage::Origin { .. }
            | PgoutputMessage::Type { .. }
            | PgoutputMessage::Message { .. } => {}
        }
        Ok(None)
    }

    /// Appends one row change of the open transaction.
    fn row(
        &mut self,
        relation: u32,
        op: Op,
        tuple: &TupleData<'_>,
        old: Option<&TupleData<'_>>,
    ) -> Result<Option<CaptureEvent>, PgError> {
        let Some(map) = self.relations.get(&relation) else {
            return Ok(None); // not captured (Relation messages always precede a table's rows)
        };
        let Some(txn) = &self.txn else {
            return Err(self.protocol("row change outside a transaction"));
        };
        let t = &mut self.tables[map.table];
        if t.committed.is_some_and(|c| txn.commit <= c) {
            return Ok(None); // the target holds this transaction already
        }
        let old_values: Vec<TupleValue<'_>> =
            old.map(|o| o.columns().collect()).unwrap_or_default();
        let mut filled = vec![false; t.data.len()];
        for (i, value) in tuple.columns().enumerate() {
            let Some(Some(col)) = map.columns.get(i).copied() else {
                continue;
            };
            let value = match value {
                TupleValue::UnchangedToast => match old_values.get(i) {
                    Some(&v) if matches!(v, TupleValue::Text(_) | TupleValue::Null) => v,
                    _ => {
                        return Err(PgError::Value {
                            table: t.schema.id.clone(),
                            column: t.schema.columns[col].name.clone(),
                            message: format!(
                                "an update left this TOASTed value unchanged and the server did \
                                 not send it; run ALTER TABLE {} REPLICA IDENTITY FULL so every \
                                 update carries the whole old row (`inlet check` lists such tables){}",
                                t.schema.id,
                                if map.replica_identity_full { " (it is FULL, but the old value was missing)" } else { "" }
                            ),
                        })
                    }
                },
                v => v,
            };
            let bytes = match value {
                TupleValue::Null => None,
                TupleValue::Text(b) | TupleValue::Binary(b) => Some(b),
                TupleValue::UnchangedToast => None,
            };
            let policy = t.policies.get(col).copied().unwrap_or_default();
            t.data[col].append_text(bytes, policy).map_err(|e| {
                let key = key_text(map, &t.schema, tuple);
                value_error(&t.schema, col, &t.decoders[col], e, key)
            })?;
            filled[col] = true;
        }
        // A delete by key carries only the key columns; the others are NULL in the change row.
        for (col, done) in filled.iter().enumerate() {
            if !done {
                t.data[col].append_null();
            }
        }
        t.push_meta(op, txn);
        let table = map.table;
        Ok(self.after_row(table))
    }

    fn after_row(&self, table: usize) -> Option<CaptureEvent> {
        (self.tables[table].rows_in_open_txn >= 2 * self.part_rows)
            .then_some(CaptureEvent::Large { table })
    }

    /// Switches `table` to the columns of a Relation message. Rows buffered in the old shape
    /// become a segment of their own; columns that kept their name and type keep their plan.
    fn evolve(&mut self, table: usize, wanted: &[&RelationColumn]) -> Result<(), PgError> {
        let values = &self.policy;
        let t = &mut self.tables[table];
        if let Some(changes) = t.take_committed(table)? {
            t.segments.push(changes);
        }
        // Rows the open transaction wrote in the old shape become one of its parts. The
        // Relation message that brought the change precedes a change of this table, so the
        // transaction's final file will not be empty.
        if t.rows_in_open_txn > 0 {
            let Some(txn) = &self.txn else {
                return Err(PgError::Table {
                    table: t.schema.id.clone(),
                    message: "rows of an open transaction outside any transaction".into(),
                });
            };
            let batch = t.split_off_front(t.rows_in_open_txn)?;
            t.rows_in_open_txn = 0;
            t.parts_taken += 1;
            t.segments.push(TableChanges {
                table,
                schema: t.schema.clone(),
                batch,
                first: txn.commit,
                last: txn.commit,
                commit_time_micros: txn.commit_time,
                part: Some(t.parts_taken),
            });
        }
        let mut columns = Vec::with_capacity(wanted.len());
        let mut decoders = Vec::with_capacity(wanted.len());
        let mut policies = Vec::with_capacity(wanted.len());
        let mut column_types = Vec::with_capacity(wanted.len());
        for c in wanted {
            let ty = (c.type_oid, c.type_modifier);
            let kept = t
                .schema
                .columns
                .iter()
                .zip(&t.column_types)
                .position(|(col, old)| col.name == c.name && *old == ty);
            match kept {
                Some(i) => {
                    columns.push(t.schema.columns[i].clone());
                    decoders.push(t.decoders[i].clone());
                    policies.push(t.policies[i]);
                }
                None => {
                    let policy = values.for_column(&t.schema.id, &c.name);
                    let plan = plan_column(
                        &t.types,
                        &c.name,
                        c.type_oid,
                        c.type_modifier,
                        false,
                        policy,
                    );
                    columns.push(Column {
                        name: c.name.clone(),
                        source_type: type_name(&t.types, c.type_oid, c.type_modifier),
                        field: plan.field,
                        distinct_values: None,
                    });
                    decoders.push(plan.decoder);
                    policies.push(policy);
                }
            }
            column_types.push(ty);
        }
        t.schema
            .primary_key
            .retain(|k| columns.iter().any(|c: &Column| &c.name == k));
        t.schema.columns = columns;
        t.data = decoders
            .iter()
            .map(|d| ColumnBuilder::new(d, 1024).with_times_as_text(values.times_as_text()))
            .collect();
        t.decoders = decoders;
        t.policies = policies;
        t.column_types = column_types;
        Ok(())
    }

    fn truncate_row(&mut self, table: usize) -> Result<Option<CaptureEvent>, PgError> {
        let Some(txn) = &self.txn else {
            return Err(self.protocol("TRUNCATE outside a transaction"));
        };
        let t = &mut self.tables[table];
        if t.committed.is_some_and(|c| txn.commit <= c) {
            return Ok(None);
        }
        for col in &mut t.data {
            col.append_null();
        }
        t.push_meta(Op::Truncate, txn);
        Ok(self.after_row(table))
    }

    fn key_changed(&self, relation: u32, old: &TupleData<'_>, new: &TupleData<'_>) -> bool {
        let Some(map) = self.relations.get(&relation) else {
            return false;
        };
        let old: Vec<TupleValue<'_>> = old.columns().collect();
        let new: Vec<TupleValue<'_>> = new.columns().collect();
        map.key_columns
            .iter()
            .any(|&i| match (old.get(i), new.get(i)) {
                // A key column the old tuple does not carry (NULL in a 'K' tuple of an identity
                // index without it), or the new tuple left unchanged out of line: not changed.
                (Some(TupleValue::Null) | None, _) | (_, Some(TupleValue::UnchangedToast)) => false,
                (Some(a), Some(b)) => a != b,
                (Some(_), None) => false,
            })
    }

    fn undecodable(&self, e: crate::pgoutput::PgoutputError) -> PgError {
        PgError::Replication {
            server: self.server.clone(),
            what: "decoding the change stream".into(),
            message: format!("undecodable pgoutput message: {e}"),
            code: None,
            transient: false,
        }
    }

    fn protocol(&self, message: &str) -> PgError {
        PgError::Replication {
            server: self.server.clone(),
            what: "reading the change stream".into(),
            message: message.to_string(),
            code: None,
            transient: false,
        }
    }
}

/// The Relation message's columns that key the change log: the table's key when it has one (the
/// primary key, or the identity index under REPLICA IDENTITY USING INDEX; under FULL the Relation
/// message flags every column as identity, which must not make every update a key change);
/// without one, the replica identity's columns; none under FULL without a key, where every
/// update is an update.
fn change_key_columns(
    rel: &crate::pgoutput::RelationMessage,
    primary_key: &[String],
) -> Vec<usize> {
    if !primary_key.is_empty() {
        let positions: Vec<Option<usize>> = primary_key
            .iter()
            .map(|k| rel.columns.iter().position(|c| &c.name == k))
            .collect();
        if positions.iter().all(Option::is_some) {
            return positions.into_iter().flatten().collect();
        }
    }
    if rel.replica_identity == b'f' {
        return Vec::new();
    }
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key())
        .map(|(i, _)| i)
        .collect()
}

/// Staging a streamed transaction failed (most likely a full disk). Nothing of it was written or
/// acknowledged, so a new attempt starts over cleanly once there is room.
fn spool_error(dir: &std::path::Path, e: &std::io::Error) -> PgError {
    PgError::Spool {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// What differs between a table's columns and a Relation message's, or None if nothing does.
fn describe_change(t: &TableBuffer, wanted: &[&RelationColumn]) -> Option<String> {
    let mut parts = Vec::new();
    for c in wanted {
        match t.schema.columns.iter().position(|col| col.name == c.name) {
            None => parts.push(format!("added {}", c.name)),
            Some(i) if t.column_types[i] != (c.type_oid, c.type_modifier) => {
                parts.push(format!("changed the type of {}", c.name))
            }
            Some(_) => {}
        }
    }
    for col in &t.schema.columns {
        if !wanted.iter().any(|c| c.name == col.name) {
            parts.push(format!("dropped {}", col.name));
        }
    }
    let reordered = parts.is_empty()
        && wanted.iter().map(|c| c.name.as_str()).ne(t
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str()));
    if reordered {
        parts.push("reordered its columns".into());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The row's key as `name = value` text (the values as the change stream carries them), to
/// name the row in an error.
fn key_text(map: &RelationMap, schema: &TableSchema, tuple: &TupleData<'_>) -> Option<String> {
    if map.key_columns.is_empty() {
        return None;
    }
    let values: Vec<TupleValue<'_>> = tuple.columns().collect();
    let parts: Vec<String> = map
        .key_columns
        .iter()
        .map(|&i| {
            let name = map
                .columns
                .get(i)
                .copied()
                .flatten()
                .and_then(|c| schema.columns.get(c))
                .map_or("?", |c| c.name.as_str());
            let value = match values.get(i) {
                Some(TupleValue::Text(b)) => {
                    let shown = String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
                    if shown.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
                        shown
                    } else {
                        format!("{shown:?}")
                    }
                }
                Some(TupleValue::Null) => "NULL".to_string(),
                _ => "?".to_string(),
            };
            format!("{name} = {value}")
        })
        .collect();
    Some(parts.join(", "))
}

fn value_error(
    schema: &TableSchema,
    col: usize,
    decoder: &Decoder,
    e: ValueError,
    key: Option<String>,
) -> PgError {
    let column = &schema.columns[col];
    let row = key
        .map(|k| format!(" (the row with {k})"))
        .unwrap_or_default();
    let message = match e {
        ValueError::Malformed(m) => format!(
            "cannot decode a {} value from the change stream{row}: {m}",
            column.source_type
        ),
        ValueError::Unrepresentable(what) => format!(
            "{what}{row} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" or \
             \"text\" in the task file \
             (values.on_unrepresentable sets every column) to load it",
            decoder.data_type(),
            inlet_core::column_key(&schema.id, &column.name)
        ),
    };
    PgError::Value {
        table: schema.id.clone(),
        column: column.name.clone(),
        message,
    }
}
