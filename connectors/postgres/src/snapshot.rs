//! The consistent full load: one exported snapshot shared by every worker connection, tables cut
//! into ctid-range chunks (key ranges for a load that resumes), and each chunk streamed with COPY
//! binary into record batches.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::StreamExt;
use inlet_core::held_keys::KeyInterval;
use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable, SourceError};
use inlet_core::TableSchema;
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::copy::{CopyDecoder, ValueError};
use crate::error::PgError;
use crate::key_chunks::{self, KeySpan};
use crate::types::quote_ident;

/// A `REPEATABLE READ` transaction whose snapshot other connections import. It must stay open
/// until every worker has imported the snapshot; dropping it ends the transaction.
pub struct ExportedSnapshot {
    client: Client,
    id: String,
    /// The replication connection whose slot exported the snapshot, when this one imported it
    /// for a load beside the stream: the snapshot lives while it stays idle, so it goes with
    /// this.
    exporter: Option<crate::replication::ReplicationConnection>,
}

impl ExportedSnapshot {
    pub async fn export(connector: &PgConnector) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| connector.query_error("starting the snapshot transaction", &e))?;
        let row = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|e| connector.query_error("pg_export_snapshot()", &e))?;
        Ok(Self {
            client,
            id: row.get(0),
            exporter: None,
        })
    }

    /// Joins a snapshot exported elsewhere (a replication slot's, so that the full load and the
    /// change stream meet at the slot's consistent point with no gap and no overlap).
    pub async fn import(connector: &PgConnector, snapshot_id: &str) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        begin_in_snapshot(&client, connector, snapshot_id).await?;
        Ok(Self {
            client,
            id: snapshot_id.to_string(),
            exporter: None,
        })
    }

    /// Keeps `exporter` (the connection whose slot exported the snapshot) open as long as
    /// this, so the snapshot stays valid for the load.
    pub fn holding(mut self, exporter: crate::replication::ReplicationConnection) -> Self {
        self.exporter = Some(exporter);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection holding the snapshot, for catalog reads consistent with it.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Starts a read-only REPEATABLE READ transaction that sees exactly `snapshot_id`'s snapshot.
async fn begin_in_snapshot(
    client: &Client,
    connector: &PgConnector,
    snapshot_id: &str,
) -> Result<(), PgError> {
    // Ids are hex and dashes (pg_export_snapshot, CREATE_REPLICATION_SLOT); quoting keeps any
    // other text a literal.
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot_id.replace('\'', "''")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| connector.query_error("importing the exported snapshot", &e))
}

/// A part of one table that one worker reads in a transaction of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotChunk {
    /// Heap pages `[start_page, end_page)`, open-ended when `end_page` is None so that pages
    /// added after discovery are still read. The fastest read, but an update moves a row to
    /// another page, so chunks of two snapshots may hold a row twice or miss it.
    Pages {
        start_page: u64,
        end_page: Option<u64>,
    },
    /// A range of the table's first key column: a row stays in its range in every snapshot,
    /// so a resumed load keeps chunks an earlier snapshot read ([`crate::key_chunks`]).
    Keys(KeySpan),
}

impl SnapshotChunk {
    /// `pages START END` or `keys START END` (`-` for an open end), as a resumable load
    /// records it.
    pub fn text(&self) -> String {
        match self {
            SnapshotChunk::Pages {
                start_page,
                end_page,
            } => {
                let end = end_page.map_or("-".to_string(), |e| e.to_string());
                format!("pages {start_page} {end}")
            }
            SnapshotChunk::Keys(span) => span.text(),
        }
    }

    /// The chunk [`SnapshotChunk::text`] wrote.
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with("keys ") {
            return KeySpan::parse(text).map(SnapshotChunk::Keys);
        }
        let mut parts = text.strip_prefix("pages ")?.split(' ');
        let start_page = parts.next()?.parse().ok()?;
        let end_page = match parts.next()? {
            "-" => None,
            end => Some(end.parse().ok()?),
        };
        parts.next().is_none().then_some(Self::Pages {
            start_page,
            end_page,
        })
    }
}

/// Cuts `pages` into chunks of `chunk_pages`; the last chunk is open-ended.
pub fn plan_chunks(pages: u64, chunk_pages: u64) -> Vec<SnapshotChunk> {
    let chunk_pages = chunk_pages.max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start + chunk_pages < pages {
        chunks.push(SnapshotChunk::Pages {
            start_page: start,
            end_page: Some(start + chunk_pages),
        });
        start += chunk_pages;
    }
    chunks.push(SnapshotChunk::Pages {
        start_page: start,
        end_page: None,
    });
    chunks
}

/// Limits on one record batch: whichever is reached first closes it.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// A worker connection inside the exported snapshot.
pub struct SnapshotReader {
    client: Client,
    connector: PgConnector,
    snapshot: String,
}

impl SnapshotReader {
    pub async fn open(connector: &PgConnector, snapshot_id: &str) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        Ok(Self {
            client,
            connector: connector.clone(),
            snapshot: snapshot_id.to_string(),
        })
    }

    /// Ends the chunk's transaction, releasing its lock on the table. Call after the chunk's
    /// stream is done.
    pub async fn finish_chunk(&self) -> Result<(), PgError> {
        self.client.batch_execute("COMMIT").await.map_err(|e| {
            self.connector
                .query_error("ending a chunk's transaction", &e)
        })
    }

    /// Starts streaming one chunk of `table`.
    pub async fn read<'t>(
        &self,
        table: &'t SourceTable,
        chunk: SnapshotChunk,
        limits: BatchLimits,
    ) -> Result<ChunkStream<'t>, PgError> {
        // Each chunk in a transaction of its own that imports the snapshot: the lock a COPY
        // takes is held for that chunk only. Locks held for the whole load would make any
        // TRUNCATE or ALTER TABLE of the source queue behind them, and every query of the
        // application behind that, for hours. The id comes from pg_export_snapshot() or
        // CREATE_REPLICATION_SLOT.
        begin_in_snapshot(&self.client, &self.connector, &self.snapshot).await?;
        if matches!(chunk, SnapshotChunk::Keys(_)) {
            // A key range costs more than the planner's JIT threshold, and compiling its
            // expressions made each chunk slower, not faster (measured on TPC-H lineitem).
            self.client
                .batch_execute("SET LOCAL jit = off")
                .await
                .map_err(|e| {
                    self.connector
                        .query_error("turning JIT off for a chunk", &e)
                })?;
        }
        let sql = copy_query(table, chunk);
        let stream = self.client.copy_out(sql.as_str()).await.map_err(|e| {
            self.connector
                .query_error(&format!("COPY of {}", table.schema.id), &e)
        })?;
        let decoders = table.columns.iter().map(|c| c.decoder.clone()).collect();
        let policies = table.columns.iter().map(|c| c.policy).collect();
        let capacity = limits.rows.min(8192);
        let key = table
            .schema
            .primary_key
            .iter()
            .filter_map(|k| {
                let i = table.schema.columns.iter().position(|c| &c.name == k)?;
                Some((i, k.clone()))
            })
            .collect();
        Ok(ChunkStream {
            table,
            stream: Box::pin(stream),
            decoder: CopyDecoder::new(table.schema.arrow_schema(), decoders, policies, capacity)
                .with_times_as_text(table.times_as_text)
                .with_key(key),
            limits,
            pending_bytes: 0,
            ended: false,
            connector: self.connector.clone(),
        })
    }
}

fn copy_query(table: &SourceTable, chunk: SnapshotChunk) -> String {
    let select: Vec<&str> = table.columns.iter().map(|c| c.select.as_str()).collect();
    let mut sql = format!(
        "COPY (SELECT {} FROM {}.{}",
        select.join(", "),
        quote_ident(&table.schema.id.schema),
        quote_ident(&table.schema.id.name),
    );
    match chunk {
        SnapshotChunk::Pages {
            start_page,
            end_page,
        } => {
            sql.push_str(&format!(" WHERE ctid >= '({start_page},0)'::tid"));
            if let Some(end) = end_page {
                sql.push_str(&format!(" AND ctid < '({end},0)'::tid"));
            }
        }
        SnapshotChunk::Keys(span) => {
            if let Some(filter) = span.filter(table) {
                sql.push_str(&format!(" WHERE {filter}"));
            }
        }
    }
    sql.push_str(") TO STDOUT (FORMAT binary)");
    sql
}

/// The record batches of one chunk, decoded as the server sends them.
pub struct ChunkStream<'t> {
    table: &'t SourceTable,
    stream: Pin<Box<CopyOutStream>>,
    decoder: CopyDecoder,
    limits: BatchLimits,
    pending_bytes: usize,
    /// The server's stream has ended: polling it again would read the next protocol message.
    ended: bool,
    connector: PgConnector,
}

impl ChunkStream<'_> {
    /// The next batch, or None when the chunk is done.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, PgError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if self.decoder.rows() >= self.limits.rows || self.pending_bytes >= self.limits.bytes {
                return self.take().map(Some);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.pending_bytes += chunk.len();
                    self.decoder
                        .feed(&chunk)
                        .map_err(|e| self.value_error(e.column, e.error, e.key))?;
                }
                Some(Err(e)) => {
                    return Err(self
                        .connector
                        .query_error(&format!("COPY of {}", self.table.schema.id), &e))
                }
                None => {
                    self.ended = true;
                    if self.decoder.leftover() != 0 || !self.decoder.is_finished() {
                        return Err(PgError::Protocol {
                            table: self.table.schema.id.clone(),
                            message: "the COPY stream ended inside a row".into(),
                        });
                    }
                    if self.decoder.rows() == 0 {
                        return Ok(None);
                    }
                    return self.take().map(Some);
                }
            }
        }
    }

    fn take(&mut self) -> Result<RecordBatch, PgError> {
        self.pending_bytes = 0;
        self.decoder.take_batch().map_err(|e| PgError::Protocol {
            table: self.table.schema.id.clone(),
            message: format!("building a record batch: {e}"),
        })
    }

    fn value_error(
        &self,
        column: Option<usize>,
        error: ValueError,
        key: Option<String>,
    ) -> PgError {
        let table = self.table.schema.id.clone();
        let Some(i) = column else {
            let (ValueError::Malformed(message) | ValueError::Unrepresentable(message)) = error;
            return PgError::Protocol { table, message };
        };
        let col = &self.table.schema.columns[i];
        let row = key
            .map(|k| format!(" (the row with {k})"))
            .unwrap_or_default();
        let message = match error {
            ValueError::Malformed(m) => {
                format!("cannot decode a {} value{row}: {m}", col.source_type)
            }
            ValueError::Unrepresentable(what) => format!(
                "{what}{row} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" \
                 or \"text\" in the task file \
                 (values.on_unrepresentable sets every column) to load it",
                col.data_type(),
                inlet_core::column_key(&table, &col.name)
            ),
        };
        PgError::Value {
            table,
            column: col.name.clone(),
            message,
        }
    }
}

/// Page size the chunk size is computed with; tables on servers built with another block size
/// get proportionally larger or smaller chunks, which is harmless.
const BLOCK_SIZE: u64 = 8192;

/// Heap pages per chunk: `chunk_mb` of them, or the whole table (`u64::MAX`) when `chunk_mb` is
/// 0 or the server predates TID range scans (PostgreSQL 14): there each chunk's `ctid` range
/// would be a scan of the whole table, so chunks would multiply the reading instead of sharing
/// it out.
fn chunk_pages(chunk_mb: u64, server_version_num: i32) -> u64 {
    if chunk_mb == 0 || server_version_num < 140_000 {
        u64::MAX
    } else {
        chunk_mb * 1024 * 1024 / BLOCK_SIZE
    }
}

impl From<PgError> for SourceError {
    fn from(e: PgError) -> Self {
        let transient = e.is_transient();
        let config = matches!(e, PgError::Config { .. } | PgError::Selection(_));
        let missing = e.is_missing_relation();
        let incomplete = e.incomplete_change_table().map(ToString::to_string);
        SourceError::new(transient, e)
            .with_config(config)
            .with_missing_table(missing)
            .with_incomplete_change(incomplete)
    }
}

impl PgError {
    /// Whether the server said the relation does not exist (SQLSTATE 42P01): it was dropped or
    /// renamed away since the snapshot's catalog showed it (a COPY resolves the name in the
    /// current catalog). The SQLSTATE, not the message, which follows the server's
    /// `lc_messages`.
    pub fn is_missing_relation(&self) -> bool {
        matches!(self, PgError::Query { code: Some(code), .. } if code == "42P01")
    }
}

impl SnapshotTable for SourceTable {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }
    fn estimated_rows(&self) -> Option<u64> {
        self.estimated_rows
    }
}

/// The full load's view of an exported snapshot: its tables, cut into page ranges, and worker
/// connections that import it. The exporting session stays open while this lives.
pub struct PgLoadSource {
    connector: PgConnector,
    snapshot: ExportedSnapshot,
    tables: Arc<Vec<SourceTable>>,
    chunk_pages: u64,
    limits: BatchLimits,
    /// Tables read in key ranges: those a resumable load asked a guard of
    /// ([`LoadSource::resume_guard`], asked before their chunks) whose first key column holds
    /// integers. Every other table is read in page ranges, the faster read.
    key_ranged: HashSet<usize>,
    /// Long write transactions a new snapshot would wait for.
    open_writes: crate::open_writes::OpenWrites,
}

impl PgLoadSource {
    /// `chunk_mb`: heap megabytes per chunk (0: each table in one chunk); servers before
    /// PostgreSQL 14 read each table in one chunk.
    pub async fn new(
        connector: &PgConnector,
        snapshot: ExportedSnapshot,
        mut tables: Vec<SourceTable>,
        chunk_mb: u64,
        limits: BatchLimits,
    ) -> Result<Self, PgError> {
        let version: i32 = snapshot
            .client()
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| connector.query_error("reading server_version_num", &e))?
            .get(0);
        measure_pages(snapshot.client(), connector, &mut tables).await?;
        let chunk_pages = chunk_pages(chunk_mb, version);
        if chunk_pages == u64::MAX && chunk_mb != 0 {
            tracing::info!(
                server_version_num = version,
                "PostgreSQL before 14 has no TID range scans: each table is read in one chunk \
                 (full_load.chunk_mb applies from 14 on)"
            );
        }
        Ok(Self {
            connector: connector.clone(),
            snapshot,
            tables: Arc::new(tables),
            chunk_pages,
            limits,
            key_ranged: HashSet::new(),
            open_writes: Default::default(),
        })
    }
}

/// How long sizing one table may wait for the lock `pg_relation_size` takes before the load
/// plans that table from the catalog's estimate instead.
const SIZING_LOCK_TIMEOUT: &str = "500ms";

/// Replaces each table's page count, the catalog's estimate from discovery, with the heap's size
/// now, so that a table never vacuumed (relpages 0) or grown since is still cut into chunks the
/// workers share, and the largest tables are read first. The size is read on the snapshot's
/// connection, one table per statement, in a savepoint that is rolled back: `pg_relation_size`
/// takes ACCESS SHARE on the table for a moment, and a table another session holds under
/// ACCESS EXCLUSIVE (an application's ALTER TABLE, a LOCK TABLE) is waited for at most
/// `SIZING_LOCK_TIMEOUT`, then keeps its estimate. That only changes how many chunks it is read
/// in: the last chunk of every table is open-ended, so no row is missed when the count is low.
/// The rollback also ends the lock-timeout error without ending the snapshot's transaction.
async fn measure_pages(
    client: &Client,
    connector: &PgConnector,
    tables: &mut [SourceTable],
) -> Result<(), PgError> {
    const RELEASE: &str = "ROLLBACK TO SAVEPOINT inlet_sizing; RELEASE SAVEPOINT inlet_sizing";
    for table in tables.iter_mut() {
        let what = format!("sizing {}", table.schema.id);
        // One round trip per table: the statements run in order and the batch stops at the
        // first error, which then still needs its rollback. The oid is a number, no text.
        let sql = format!(
            "SAVEPOINT inlet_sizing; SET LOCAL lock_timeout = '{SIZING_LOCK_TIMEOUT}'; \
             SELECT pg_relation_size({}::oid::regclass) / current_setting('block_size')::int8; \
             {RELEASE}",
            table.oid
        );
        match client.simple_query(&sql).await {
            Ok(messages) => {
                // No value (NULL): dropped since discovery; its COPY says so and the load
                // skips or fails it.
                let pages = messages.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        row.get(0).and_then(|v| v.parse::<i64>().ok())
                    }
                    _ => None,
                });
                if let Some(pages) = pages {
                    table.pages = pages.max(0) as u64;
                }
            }
            Err(e) if e.code() != Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(connector.query_error(&what, &e));
            }
            Err(_) => {
                client
                    .batch_execute(RELEASE)
                    .await
                    .map_err(|e| connector.query_error(&what, &e))?;
                tracing::info!(
                    table = %table.schema.id,
                    estimated_pages = table.pages,
                    "another session holds a lock on the table: its chunks are planned from the \
                     catalog's estimate of its size (the last chunk reads to the end of the table)"
                );
            }
        }
    }
    Ok(())
}

/// How the resume guard of a table read in page ranges starts.
const PAGE_GUARD: &str = "postgres filenode";

impl LoadSource for PgLoadSource {
    type Table = SourceTable;
    type Chunk = SnapshotChunk;
    type Reader = PgChunkReader;

    fn tables(&self) -> Arc<Vec<SourceTable>> {
        self.tables.clone()
    }

    /// Largest tables first, so the long ones start early and the small ones fill the gaps.
    fn read_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.tables.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.tables[i].pages));
        order
    }

    async fn chunks(&mut self, table: usize) -> Result<Vec<SnapshotChunk>, SourceError> {
        let Some(t) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        if self.key_ranged.contains(&table) {
            let spans =
                key_chunks::plan(self.snapshot.client(), &self.connector, t, self.chunk_pages)
                    .await?;
            return Ok(spans.into_iter().map(SnapshotChunk::Keys).collect());
        }
        Ok(plan_chunks(t.pages, self.chunk_pages))
    }

    fn chunk_text(&self, chunk: &SnapshotChunk) -> Option<String> {
        Some(chunk.text())
    }

    fn parse_chunk(&self, text: &str) -> Option<SnapshotChunk> {
        SnapshotChunk::parse(text)
    }

    fn chunk_keys(&self, table: usize, chunk: &SnapshotChunk) -> Option<KeyInterval> {
        let SnapshotChunk::Keys(span) = chunk else {
            return None;
        };
        let column = key_chunks::key_column(self.tables.get(table)?)?;
        Some(KeyInterval {
            column: column.to_string(),
            start: span.start,
            end: span.end,
        })
    }

    /// A table whose first key column holds integers and whose rows are stored in about that
    /// order ([`key_chunks::in_key_order`]) is read in ranges of it: a row is in the same range
    /// in every snapshot (unless its key itself changes), so chunks read in
    /// different snapshots hold each row once, each as of its chunk's snapshot. The guard names
    /// the table's oid and that column: another table under the name starts over.
    ///
    /// Another table is read in page ranges, and a row that is inserted, updated (a new
    /// version, maybe on another page) or deleted between two runs could be read twice or
    /// missed by chunks of different snapshots; a rewrite (TRUNCATE, VACUUM FULL, CLUSTER)
    /// moves every row. So its guard is the table's file node and its counts of inserted,
    /// updated and deleted rows from the server's statistics: a table written to since the
    /// interrupted run starts over. (The counts lag commits by up to a second or so and restart
    /// from zero after a server crash, which only makes the guard differ.)
    async fn resume_guard(
        &mut self,
        table: usize,
        recorded: Option<&str>,
    ) -> Result<Option<String>, SourceError> {
        let Some(t) = self.tables.get(table) else {
            return Ok(None);
        };
        // One chunk per table (chunk_mb = 0, or a server before 14): nothing to resume inside.
        // An interrupted load in page ranges goes on in them (the table may have been analyzed
        // only since: a new load would choose key ranges, and start it over).
        let recorded_pages = recorded.is_some_and(|r| r.starts_with(PAGE_GUARD));
        if self.chunk_pages != u64::MAX && !recorded_pages {
            if let Some(column) = key_chunks::key_column(t) {
                let guard = format!(
                    "postgres key ranges of {} (oid {}) on {column}",
                    t.schema.id, t.oid
                );
                // An interrupted load in key ranges goes on in them even if the rows are no
                // longer in key order enough (an ANALYZE after many updates): reading the rest
                // slower beats reading all of it again.
                let resumes = recorded.is_some_and(|r| r.starts_with(&format!("{guard} | ")));
                if resumes
                    || key_chunks::in_key_order(self.snapshot.client(), &self.connector, t).await?
                {
                    self.key_ranged.insert(table);
                    return Ok(Some(guard));
                }
                tracing::info!(table = %t.schema.id, "the table's rows are not stored in key order (or it was never analyzed), so it is read in page ranges, the fast read for it: an interrupted load of it resumes only if nothing wrote to the table in between");
            }
        }
        let sql = format!(
            "SELECT pg_relation_filenode({0}::oid::regclass)::text, \
                    pg_stat_get_tuples_inserted({0}::oid)::text, \
                    pg_stat_get_tuples_updated({0}::oid)::text, \
                    pg_stat_get_tuples_deleted({0}::oid)::text",
            t.oid
        );
        let what = format!("reading the write counts of {}", t.schema.id);
        let messages = self
            .snapshot
            .client()
            .simple_query(&sql)
            .await
            .map_err(|e| self.connector.query_error(&what, &e))?;
        let row = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..4)
                    .map(|i| row.get(i).unwrap_or("null").to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });
        Ok(row.map(|v| {
            format!(
                "{PAGE_GUARD} {} inserted {} updated {} deleted {}",
                v[0], v[1], v[2], v[3]
            )
        }))
    }

    async fn renewal_waits_for(&mut self) -> Result<Option<String>, SourceError> {
        Ok(self.open_writes.long_ones(&self.connector).await?)
    }

    async fn readers(&mut self, workers: usize) -> Result<Vec<PgChunkReader>, SourceError> {
        let mut readers = Vec::with_capacity(workers.max(1));
        for _ in 0..workers.max(1) {
            readers.push(PgChunkReader {
                reader: SnapshotReader::open(&self.connector, self.snapshot.id()).await?,
                limits: self.limits,
            });
        }
        Ok(readers)
    }
}

/// A load worker's connection inside the exported snapshot, each chunk in a transaction of its
/// own.
pub struct PgChunkReader {
    reader: SnapshotReader,
    limits: BatchLimits,
}

impl ChunkReader for PgChunkReader {
    type Table = SourceTable;
    type Chunk = SnapshotChunk;
    type Batches<'a> = ChunkStream<'a>;

    async fn read<'a>(
        &'a mut self,
        table: &'a SourceTable,
        chunk: SnapshotChunk,
    ) -> Result<ChunkStream<'a>, SourceError> {
        Ok(self.reader.read(table, chunk, self.limits).await?)
    }

    /// Ends the chunk's transaction, also one a missing relation aborted.
    async fn finish_chunk(&mut self) -> Result<(), SourceError> {
        Ok(self.reader.finish_chunk().await?)
    }
}

impl ChunkBatches for ChunkStream<'_> {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        Ok(ChunkStream::next_batch(self).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_recorded_as_text_and_read_back() {
        for chunk in plan_chunks(1000, 128) {
            assert_eq!(SnapshotChunk::parse(&chunk.text()), Some(chunk));
        }
        assert_eq!(
            SnapshotChunk::parse("pages 128 -"),
            Some(SnapshotChunk::Pages {
                start_page: 128,
                end_page: None
            })
        );
        for bad in [
            "pages 1",
            "pages 1 2 3",
            "pages x 2",
            "keys 1",
            "pages 1 -1",
        ] {
            assert_eq!(SnapshotChunk::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn servers_before_14_read_each_table_in_one_chunk() {
        assert_eq!(chunk_pages(64, 140_000), 64 * 1024 * 1024 / BLOCK_SIZE);
        assert_eq!(chunk_pages(64, 180_004), 64 * 1024 * 1024 / BLOCK_SIZE);
        assert_eq!(chunk_pages(64, 130_022), u64::MAX);
        assert_eq!(chunk_pages(64, 100_000), u64::MAX);
        assert_eq!(chunk_pages(0, 170_000), u64::MAX);
    }

    #[test]
    fn chunks_cover_everything() {
        assert_eq!(
            plan_chunks(0, 10),
            vec![SnapshotChunk::Pages {
                start_page: 0,
                end_page: None
            }]
        );
        assert_eq!(
            plan_chunks(10, 10),
            vec![SnapshotChunk::Pages {
                start_page: 0,
                end_page: None
            }]
        );
        assert_eq!(
            plan_chunks(25, 10),
            vec![
                SnapshotChunk::Pages {
                    start_page: 0,
                    end_page: Some(10)
                },
                SnapshotChunk::Pages {
                    start_page: 10,
                    end_page: Some(20)
                },
                SnapshotChunk::Pages {
                    start_page: 20,
                    end_page: None
                },
            ]
        );
    }
}
