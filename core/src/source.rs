//! What the task engine asks of a source connector: the tables it captures, its prerequisites,
//! consistent snapshots to load from, and a change capture that resumes from the task
//! checkpoint by the source's own rules. Each connector crate implements [`Source`] and
//! [`Capture`]; the engine in the `inlet` binary drives every source the same way.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::sink::TargetError;
use crate::snapshot::{LoadSource, SourceError};
use crate::{
    CaptureEvent, Checkpoint, Position, Prerequisite, SchemaChanges, TableChanges, TableId,
    TableSchema, TableSelection, TableStates, ValuePolicy,
};

/// A table as the source discovered it.
pub trait SourceTable: Clone + Send + Sync + 'static {
    fn schema(&self) -> &TableSchema;
    /// Which relation of the source the name stands for (PostgreSQL: its oid), for a source
    /// that can tell: a name that comes to hold another relation is loaded again. None: the
    /// source tells such swaps from its change stream instead
    /// ([`crate::TableState::replaced_at`]).
    fn identity(&self) -> Option<String> {
        None
    }
    /// The server's estimate of its rows, for `inlet check`.
    fn estimated_rows(&self) -> Option<u64>;
    /// Its size on the server, for `inlet check`.
    fn size_bytes(&self) -> u64;
}

/// The task's settings a source needs, read from the task file by the daemon.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// The task's name (it names the slot, the replica id and the checkpoint).
    pub task: String,
    /// The task follows the change stream (`cdc`, `full-load-and-cdc`).
    pub capture: bool,
    /// The task loads tables (`full-load`, `full-load-and-cdc`): the first start, joining and
    /// swapped tables, resyncs.
    pub load: bool,
    pub selection: TableSelection,
    pub policy: ValuePolicy,
    /// Full load: the most workers, the chunk size, and a batch's rows and bytes.
    pub workers: usize,
    pub chunk_mb: u64,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub schema_changes: SchemaChanges,
    /// Rows of an open transaction a table buffers before writing a part of it.
    pub part_rows: usize,
    /// Seconds without a message from the server after which the stream counts as cut.
    pub stream_silence_timeout_s: u64,
    /// Where a large transaction spills to disk, if anywhere.
    pub spool_dir: Option<PathBuf>,
    /// How often a heartbeat is written into the source's log (0: never).
    pub heartbeat_interval_ms: u64,
    /// A change the stream does not carry (a rewrite, a column added with a default) loads the
    /// table again (`cdc.reload_on_unstreamed_change`).
    pub reload_on_unstreamed_change: bool,
    /// A lost slot or publication starts over with a new snapshot (`cdc.on_slot_lost =
    /// "resnapshot"`) instead of stopping the task.
    pub resnapshot_when_lost: bool,
}

/// A store's answer, boxed so that a [`CheckpointStore`] can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TargetError>> + Send + 'a>>;

/// Where the task keeps its checkpoint, and the records a source keeps beside it (such as the
/// slot it created), in the target's store.
pub trait CheckpointStore: Send + Sync {
    /// The record under `key` (the task's name for its checkpoint), or None before the first.
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Checkpoint>>;
    /// Replaces the record under `key` in one write.
    fn write<'a>(&'a self, key: &'a str, checkpoint: &'a Checkpoint) -> StoreFuture<'a, ()>;
    /// Where the record under `key` is, for messages.
    fn location(&self, key: &str) -> String;
}

/// What a source tells the running task besides its change stream.
pub trait SourceFeedback: Send + Sync + 'static {
    /// The source's log retained for the task (bytes), and whether the server lost it.
    fn retained(&self, bytes: Option<i64>, lost: bool);
    /// A table of the task changed in a way no change carries: it is loaded again beside the
    /// stream ([`crate::TableState::resync_at`]), from the stream's next start.
    fn reload(&self, table: &TableId);
}

/// What `inlet check` reports of a source: the selected tables (None when they could not be
/// read: the source is unreachable, or the selection names what does not exist) and every
/// prerequisite of the task with its fix.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    pub tables: Option<Vec<TableSummary>>,
    pub prerequisites: Vec<Prerequisite>,
}

impl SourceReport {
    /// The report of `tables` and the task's `prerequisites`.
    pub fn listing<T: SourceTable>(tables: &[T], prerequisites: Vec<Prerequisite>) -> Self {
        let tables = tables
            .iter()
            .map(|t| TableSummary {
                schema: t.schema().clone(),
                estimated_rows: t.estimated_rows(),
                bytes: t.size_bytes(),
            })
            .collect();
        Self {
            tables: Some(tables),
            prerequisites,
        }
    }

    /// The report of a source that could not be reached: `detail` says why.
    pub fn unreachable(detail: impl Into<String>) -> Self {
        Self {
            tables: None,
            prerequisites: vec![Prerequisite::missing(
                "source connection",
                detail,
                "check that the server is running and reachable, and source.url (host, port, \
                 user, database)",
            )],
        }
    }

    /// The report of a selection whose entries match nothing (a MISSING line each).
    pub fn selection(e: &crate::ExclusionError) -> Self {
        Self {
            tables: None,
            prerequisites: e
                .problems
                .iter()
                .map(|p| Prerequisite::missing(e.setting, p.clone(), e.fix))
                .collect(),
        }
    }
}

/// One selected table as `inlet check` lists it.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub schema: TableSchema,
    /// The server's estimate of its rows.
    pub estimated_rows: Option<u64>,
    /// Its size on the server.
    pub bytes: u64,
}

/// Where and for what a change capture starts.
pub struct CaptureStart<'a, T> {
    /// The tables streamed (those loading beside the stream join it at its next start).
    pub tables: &'a [T],
    /// The position each table's target holds (it skips what it holds).
    pub committed: &'a [Option<Position>],
    /// The checkpoint's position, or the new one.
    pub start: Position,
    /// While tables load beside the stream, the stream's checkpoints stay at `start`, with the
    /// checkpoint's own resume facts.
    pub held: bool,
    /// What the checkpoint records of the tables.
    pub recorded: &'a TableStates,
}

/// How a task's change capture begins.
pub enum Begin<S> {
    /// From the task checkpoint.
    Resume(Checkpoint),
    /// From a new position: `first` is the checkpoint to write once `snapshot` (the tables as of
    /// `first.position`, to load when the task loads them) is loaded. `forget_changes`: the
    /// target's changes captured before must not be replayed over the new load.
    Fresh {
        snapshot: Option<S>,
        /// The position the snapshot holds every transaction up to.
        loaded_up_to: Position,
        /// For a load that may resume after an interruption: the position a load in the
        /// snapshot of `first.position` holds every transaction up to. Key-range chunks an
        /// interrupted earlier load read at or after it are kept, and the stream drops the
        /// changes each holds ([`crate::held_keys`]). None: the load is all or nothing.
        resume_from: Option<Position>,
        first: Checkpoint,
        forget_changes: bool,
    },
}

/// A source connector as the task engine drives it. Errors come classified by the connector
/// ([`SourceError`]): transient or not, a setting, a change that cannot be completed, a start
/// over.
pub trait Source: Send + Sync + Sized + 'static {
    type Table: SourceTable;
    /// A consistent snapshot, held open until its load is done.
    type Snapshot: Send + 'static;
    type Load: LoadSource;
    type Capture: Capture + Send + 'static;

    /// The selected tables as the source has them now.
    fn discover(&mut self) -> impl Future<Output = Result<Vec<Self::Table>, SourceError>> + Send;

    /// What the task needs of the server, each with its fix (`capture`: change capture too).
    /// Read again at every start; [`Prerequisite::at_start`] says what a missing one does.
    fn prerequisites(
        &mut self,
        tables: &[Self::Table],
        capture: bool,
    ) -> impl Future<Output = Result<Vec<Prerequisite>, SourceError>> + Send;

    /// What `inlet check` reports: the selected tables and every prerequisite of the task
    /// (`capture`: change capture too, with what its start would find in `store`). An
    /// unreachable server or a selection naming what does not exist is a report, not an error.
    fn check(
        &mut self,
        store: &dyn CheckpointStore,
        capture: bool,
    ) -> impl Future<Output = Result<SourceReport, SourceError>> + Send;

    /// Whether a running task whose selected tables are all gone for now follows its change
    /// stream until one comes back (else it stops: nothing matches the selection).
    fn follows_without_tables(&self) -> bool {
        false
    }

    /// A consistent snapshot for a task that only loads (`full-load`).
    fn snapshot(&mut self) -> impl Future<Output = Result<Self::Snapshot, SourceError>> + Send;

    /// The load of `tables` inside `snapshot`. `joining`: they join a running task, and may be
    /// gone already (their load is then skipped).
    fn load(
        &self,
        snapshot: Self::Snapshot,
        tables: &[Self::Table],
        joining: bool,
    ) -> impl Future<Output = Result<Self::Load, SourceError>> + Send;

    /// Where the change capture begins: the task checkpoint (`checkpoint`, read from `store`)
    /// when the source can resume from it, else a new position with a snapshot. The source's
    /// rules decide (a lost slot, a failover, a first start), and it records what it needs in
    /// `store`.
    fn begin(
        &mut self,
        store: &dyn CheckpointStore,
        checkpoint: Option<Checkpoint>,
        tables: &[Self::Table],
    ) -> impl Future<Output = Result<Begin<Self::Snapshot>, SourceError>> + Send;

    /// A [`Begin::Fresh`] failed before its first checkpoint was written: undo what it left on
    /// the server (a slot that would pin the log). Failures are logged.
    fn abandon_begin(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The first checkpoint of a [`Begin::Fresh`] is written: a source that recorded in `store`
    /// where a first load that does not finish goes on from retires that record.
    fn begun(
        &mut self,
        store: &dyn CheckpointStore,
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        let _ = store;
        async { Ok(()) }
    }

    /// Before the stream starts: marks in `recorded` (the checkpoint's tables, at `start`) the
    /// tables whose rows changed in ways the stream does not carry, as reload requests
    /// ([`crate::request_reload`]), as far as the task reloads such tables.
    /// `replaced`: tables loaded again anyway (their name holds another table).
    fn unstreamed_changes(
        &mut self,
        recorded: &mut TableStates,
        tables: &[Self::Table],
        replaced: &[TableId],
        start: Position,
    ) -> impl Future<Output = ()> + Send {
        let _ = (recorded, tables, replaced, start);
        async {}
    }

    /// A snapshot for tables that join the running task, and the position it holds every
    /// transaction up to. `recorded`: what the checkpoint records of them, to which the source
    /// adds what it reads in the snapshot.
    fn join_snapshot(
        &mut self,
        joining: &[TableId],
        recorded: &mut TableStates,
    ) -> impl Future<Output = Result<(Self::Snapshot, Position), SourceError>> + Send;

    /// Starts the change capture ([`CaptureStart`]).
    fn capture(
        &mut self,
        from: CaptureStart<'_, Self::Table>,
    ) -> impl Future<Output = Result<Self::Capture, SourceError>> + Send;

    /// The stream stopped on `error` (its message): whether the source found why and the task starts again at
    /// once (the start reloads what it must), instead of failing on it.
    fn starts_again_after(&mut self, error: &str) -> impl Future<Output = bool> + Send {
        let _ = error;
        async { false }
    }
}

/// A source's change capture, as the stream loop drives it: whole committed transactions,
/// buffered per table until the loop takes them.
pub trait Capture: Send {
    /// The next event; None when the source ended the stream.
    fn next(&mut self) -> impl Future<Output = Result<Option<CaptureEvent>, SourceError>> + Send;
    /// Whether a transaction is open (its end not yet received).
    fn in_transaction(&self) -> bool;
    /// Changes of committed transactions buffered for `table`, oldest first.
    fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, SourceError>;
    /// The next part of the open transaction for `table` (after [`CaptureEvent::Large`]).
    fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, SourceError>;
    /// Everything up to `position` is durable in the target.
    fn acknowledge(
        &mut self,
        position: Position,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Ends the stream politely.
    fn finish(self) -> impl Future<Output = Result<(), SourceError>> + Send;
    fn table_count(&self) -> usize;
    fn buffered_rows(&self) -> usize;
    fn buffered_bytes(&self) -> usize;
    fn reset_buffered_bytes(&mut self);
    /// Adds what the source knows to `checkpoint` (which holds what the task carries) for a
    /// restart at its position: its resume facts (e.g. a GTID set) and what its log showed of
    /// the tables (a swap).
    fn fill_checkpoint(&self, checkpoint: &mut Checkpoint) {
        let _ = checkpoint;
    }
    /// A position as the source spells it, for logs and `/status`.
    fn show(&self, position: Position) -> String;
}

/// Implements the [`Capture`] methods that hand over to the change capture in field `$field`
/// (whose own methods have the same names, with errors that convert into [`SourceError`]), for
/// a connector whose task capture wraps it to add what its checkpoints record.
#[macro_export]
macro_rules! forward_capture_buffers {
    ($field:ident) => {
        fn in_transaction(&self) -> bool {
            self.$field.in_transaction()
        }
        fn take(
            &mut self,
            table: usize,
        ) -> Result<Vec<$crate::TableChanges>, $crate::snapshot::SourceError> {
            Ok(self.$field.take(table)?)
        }
        fn take_part(
            &mut self,
            table: usize,
        ) -> Result<Option<$crate::TableChanges>, $crate::snapshot::SourceError> {
            Ok(self.$field.take_part(table)?)
        }
        async fn acknowledge(
            &mut self,
            position: $crate::Position,
        ) -> Result<(), $crate::snapshot::SourceError> {
            Ok(self.$field.acknowledge(position).await?)
        }
        async fn finish(self) -> Result<(), $crate::snapshot::SourceError> {
            Ok(self.$field.finish().await?)
        }
        fn table_count(&self) -> usize {
            self.$field.table_count()
        }
        fn buffered_rows(&self) -> usize {
            self.$field.buffered_rows()
        }
        fn buffered_bytes(&self) -> usize {
            self.$field.buffered_bytes()
        }
        fn reset_buffered_bytes(&mut self) {
            self.$field.reset_buffered_bytes()
        }
    };
}
