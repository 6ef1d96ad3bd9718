//! What a sink (Parquet, Iceberg) implements for a task to write through it: the target, a
//! table's full load and its writers, a table of the change stream, and the task checkpoint.
//! The daemon builds one target from its config and drives every kind through these traits.

use std::fmt;
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::{Checkpoint, Position, TableChanges, TableSchema};

/// An error of a sink, with whether the same call may succeed if tried again later (the store or
/// the catalog was unreachable, timed out or answered 5xx; a commit conflict). The sink's own
/// error stays available as `source()`; the message is its message.
#[derive(Debug)]
pub struct TargetError {
    transient: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl TargetError {
    /// `error`, classified by the sink that raised it.
    pub fn new(transient: bool, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            transient,
            error: Box::new(error),
        }
    }

    /// An error a retry would only repeat (a bug, a batch that does not fit).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            error: message.into().into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TargetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// What a finished full load of one table wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Rows and bytes a change-stream write made durable (an upserting sink: at commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
}

/// Where a task writes: opens tables for a full load or for the change stream, and keeps the
/// task checkpoint (`_inlet/<task>/checkpoint` under the target's root).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Where the sink writes, for messages; never credentials.
    fn describe(&self) -> String;
    /// Proves that the store (and catalog) accept what a task does, without writing data.
    async fn check(&self) -> Result<(), TargetError>;
    /// Starts the full load of a table.
    async fn full_load(&self, table: &TableSchema) -> Result<Box<dyn LoadTable>, TargetError>;
    /// Opens a table for the change stream.
    async fn change_table(&self, table: &TableSchema) -> Result<Box<dyn ChangeTable>, TargetError>;
    /// The task's checkpoint, or None before its first one.
    async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, TargetError>;
    /// Replaces the task's checkpoint in one write.
    async fn write_checkpoint(
        &self,
        task: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), TargetError>;
    /// Where the task checkpoint is, for messages.
    fn checkpoint_location(&self, task: &str) -> String;
}

/// One table's full load, shared by the workers loading it, each with its own writer.
#[async_trait::async_trait]
pub trait LoadTable: Send + Sync {
    fn writer(&self) -> Box<dyn LoadWriter>;
    /// Completes the load once every writer is closed. `position`: the source position the load
    /// is consistent with, recorded by sinks that keep one per table.
    async fn finish(&self, position: Option<Position>) -> Result<LoadSummary, TargetError>;
    /// Ends a load that will not finish, after its writers were closed or dropped, and says what
    /// the table holds now (for the log and the exit message).
    async fn abandon(&self, deadline: Instant) -> String;
}

/// One worker's writer of a table's full load.
#[async_trait::async_trait]
pub trait LoadWriter: Send {
    /// `batch` has the table's Arrow schema.
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), TargetError>;
    async fn close(self: Box<Self>) -> Result<(), TargetError>;
}

/// One table of the change stream. A sink either makes each write durable at once or applies
/// writes and makes them durable at [`ChangeTable::commit`]; the stream commits every table,
/// then writes the checkpoint, then acknowledges the source.
#[async_trait::async_trait]
pub trait ChangeTable: Send + Sync {
    /// The highest source position the table holds: the stream skips transactions at or below.
    async fn committed_position(
        &self,
        table: &TableSchema,
    ) -> Result<Option<Position>, TargetError>;
    /// Writes one batch of changes (`changes.part` set: part of a transaction still open).
    async fn write(&mut self, changes: TableChanges) -> Result<Written, TargetError>;
    /// The source committed the transaction whose parts were written.
    fn transaction_committed(&mut self) {}
    /// Whether the table holds written changes it may not commit yet (parts of an open
    /// transaction): the checkpoint must wait for them.
    fn holds_open_transaction(&self) -> bool {
        false
    }
    /// Makes the written changes durable, recording that the table holds everything up to
    /// `position`.
    async fn commit(&mut self, position: Position) -> Result<Written, TargetError>;
    /// Memory of the table's primary-key index per indexed row, for sinks that keep one.
    fn index_bytes_per_row(&self) -> Option<f64> {
        None
    }
}
