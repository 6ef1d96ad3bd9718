//! What a source gives the full load: the tables of one consistent snapshot, their chunks, and
//! per worker a reader turning a chunk into Arrow batches, with errors the source classified
//! ([`SourceError`]). The daemon's one load pool drives every source through these traits.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::TableSchema;

/// An error of a source, classified by the connector that raised it: whether the same work may
/// succeed if tried again later (the server was unreachable, restarted or closed the
/// connection), whether a setting of the task file is wrong, and whether the server said the
/// table does not exist (dropped or renamed away since it was discovered). The connector's own
/// error stays available as `source()`; the message is its message.
#[derive(Debug)]
pub struct SourceError {
    transient: bool,
    config: bool,
    missing_table: bool,
    /// The table of a change that cannot be completed, now or at any restart (a reload of the
    /// table supersedes it).
    incomplete_change: Option<String>,
    /// The source cannot go on from the task checkpoint and starts again with a new snapshot
    /// at once (a lost slot, with `cdc.on_slot_lost = "resnapshot"`).
    starts_over: bool,
    /// An error of the target's, met while the source kept a record there.
    target: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    /// `error`, classified by the connector that raised it.
    pub fn new(transient: bool, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            transient,
            config: false,
            missing_table: false,
            incomplete_change: None,
            starts_over: false,
            target: false,
            error: Box::new(error),
        }
    }

    /// An error a retry would only repeat (a bug, a state the source should not be in).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            config: false,
            missing_table: false,
            incomplete_change: None,
            starts_over: false,
            target: false,
            error: message.into().into(),
        }
    }

    /// An error that may pass if the same work is tried again later.
    pub fn transient(message: impl Into<String>) -> Self {
        let mut e = Self::failed(message);
        e.transient = true;
        e
    }

    /// An error of the target's (the source keeps records there, such as the slot it created),
    /// transient or not as the sink classified it.
    pub fn from_target(e: crate::sink::TargetError) -> Self {
        let transient = e.is_transient();
        let mut e = Self::new(transient, e);
        e.target = true;
        e
    }

    /// Marks the error as a change of `table` that cannot be completed (see
    /// [`SourceError::incomplete_change_table`]).
    pub fn with_incomplete_change(mut self, table: Option<String>) -> Self {
        self.incomplete_change = table;
        self
    }

    /// Marks the error as one after which the source starts over with a new snapshot, at once.
    pub fn with_starts_over(mut self, starts_over: bool) -> Self {
        self.starts_over = starts_over;
        self
    }

    /// The table of a change that cannot be completed, now or at any restart: fixing the cause
    /// helps only the changes to come; a reload of the table supersedes this one.
    pub fn incomplete_change_table(&self) -> Option<&str> {
        self.incomplete_change.as_deref()
    }

    /// The source cannot go on from the task checkpoint: the task starts again at once, and the
    /// source takes a new snapshot (it knows why, and says so).
    pub fn starts_over(&self) -> bool {
        self.starts_over
    }

    /// The error is the target's (see [`SourceError::from_target`]).
    pub fn is_target(&self) -> bool {
        self.target
    }

    /// Marks the error as one of a setting in the task file (the fix is there).
    pub fn with_config(mut self, config: bool) -> Self {
        self.config = config;
        self
    }

    /// Marks the error as the server saying the table does not exist.
    pub fn with_missing_table(mut self, missing: bool) -> Self {
        self.missing_table = missing;
        self
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn is_config(&self) -> bool {
        self.config
    }

    /// The server said the table does not exist: it was dropped or renamed away after the
    /// snapshot's catalog showed it.
    pub fn is_missing_table(&self) -> bool {
        self.missing_table
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// One table of a snapshot, as the load pool sees it.
pub trait SnapshotTable: Send + Sync + 'static {
    fn schema(&self) -> &TableSchema;
    /// The server's estimate of its rows, for progress; None when it has none.
    fn estimated_rows(&self) -> Option<u64>;
}

/// The tables of one consistent snapshot, ready to be read in parallel. It holds the snapshot
/// open until it is dropped (after every reader is done).
pub trait LoadSource: Send {
    type Table: SnapshotTable;
    /// A part of one table that one worker reads at a time (a page range, a key range).
    type Chunk: Send + 'static;
    type Reader: ChunkReader<Table = Self::Table, Chunk = Self::Chunk>;

    /// The tables to load, in the order their results are reported.
    fn tables(&self) -> Arc<Vec<Self::Table>>;

    /// The order workers take the tables in (indexes into [`LoadSource::tables`]); each
    /// table's chunks stay together, so a worker keeps one file open at a time.
    fn read_order(&self) -> Vec<usize> {
        (0..self.tables().len()).collect()
    }

    /// Cuts table `table` into chunks, of the size the task's settings ask for.
    fn chunks(
        &mut self,
        table: usize,
    ) -> impl Future<Output = Result<Vec<Self::Chunk>, SourceError>> + Send;

    /// For a load that resumes after a crash (`task.mode = "full-load"`): `chunk` as one line
    /// of text, recorded in the target with the table's plan and read back by
    /// [`LoadSource::parse_chunk`]. None: the source cannot record its chunks, and an
    /// interrupted load of its tables starts over.
    fn chunk_text(&self, chunk: &Self::Chunk) -> Option<String> {
        let _ = chunk;
        None
    }

    /// The chunk [`LoadSource::chunk_text`] wrote, or None for text it does not read.
    fn parse_chunk(&self, text: &str) -> Option<Self::Chunk> {
        let _ = text;
        None
    }

    /// For the initial load of a change capture that resumes in a later snapshot: the range of
    /// the first key column `chunk` of table `table` holds, every snapshot alike, so the stream
    /// can tell which of its changes the chunk holds ([`crate::held_keys`]). None: the chunk is
    /// not a key range (a page range), and an interrupted load of its table starts over.
    fn chunk_keys(
        &self,
        table: usize,
        chunk: &Self::Chunk,
    ) -> Option<crate::held_keys::KeyInterval> {
        let _ = (table, chunk);
        None
    }

    /// For a load that resumes: a line of text that stays the same as long as chunks read in an
    /// earlier snapshot of table `table` still hold their rows exactly once beside chunks read
    /// now (a source whose chunks are key ranges: always; one whose chunks are physical row
    /// ranges: while nothing moved rows between them). An earlier run's done chunks are kept
    /// only when it is unchanged. None: it cannot be told, and the table starts over.
    /// `recorded`: the guard an interrupted run recorded for the table (its start, as this
    /// wrote it), so that a source whose choice of chunks hangs on something that may change
    /// between runs (PostgreSQL: whether rows are stored in key order) keeps the recorded
    /// choice while it still holds the rows exactly once.
    fn resume_guard(
        &mut self,
        table: usize,
        recorded: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, SourceError>> + Send {
        let _ = (table, recorded);
        async { Ok(None) }
    }

    /// Why a new snapshot should not be taken now, if it should not: taking one would wait for
    /// something that has been going on for a while (PostgreSQL: write transactions, which a
    /// new slot's snapshot waits out, and which hold the server's oldest snapshot back anyway).
    /// A load due to renew its snapshot (`full_load.snapshot_minutes`) goes on in this one
    /// meanwhile and asks again. Called every [`RENEWAL_RECHECK`] while it says so; the first
    /// call after the time is up, the next ones until it answers None.
    fn renewal_waits_for(
        &mut self,
    ) -> impl Future<Output = Result<Option<String>, SourceError>> + Send {
        async { Ok(None) }
    }

    /// Readers inside the snapshot, one per worker: `workers` of them, or as many as the
    /// snapshot has when fewer (at least one).
    fn readers(
        &mut self,
        workers: usize,
    ) -> impl Future<Output = Result<Vec<Self::Reader>, SourceError>> + Send;
}

/// How often a load due to renew its snapshot asks again whether a new one would wait
/// ([`LoadSource::renewal_waits_for`]).
pub const RENEWAL_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// One worker's connection inside the snapshot.
pub trait ChunkReader: Send + 'static {
    type Table: SnapshotTable;
    type Chunk: Send + 'static;
    /// The record batches of one chunk.
    type Batches<'a>: ChunkBatches + Send
    where
        Self: 'a;

    /// Starts reading `chunk` of `table`.
    fn read<'a>(
        &'a mut self,
        table: &'a Self::Table,
        chunk: Self::Chunk,
    ) -> impl Future<Output = Result<Self::Batches<'a>, SourceError>> + Send;

    /// Ends a chunk once its batches are dropped, whether read to the end or not (a source that
    /// reads each chunk in a transaction of its own ends it here).
    fn finish_chunk(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Ok(()) }
    }
}

/// The record batches of one chunk, each with its table's Arrow schema.
pub trait ChunkBatches {
    /// The next batch, or None when the chunk is done.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<RecordBatch>, SourceError>> + Send;
}
