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
    /// The task's lease objects, kept beside its checkpoint (see [`crate::lease`]); None for
    /// a sink that cannot keep one (then the task has no owner to fence).
    fn lease_store(&self, task: &str) -> Option<Box<dyn crate::lease::LeaseStore>> {
        let _ = task;
        None
    }
    /// The lease epoch under which this daemon owns the task: a sink whose commits can carry
    /// it records it with each commit and refuses to commit over a higher one.
    fn set_owner_epoch(&mut self, epoch: u64) {
        let _ = epoch;
    }
    /// The task was taken from an owner whose lease expired (it neither released it nor is
    /// known gone): that owner may still land a write it began before it lost the task (it
    /// was paused), which a sink whose writes are durable at once must keep from duplicating
    /// what this daemon writes.
    fn expect_late_writes_of_a_former_owner(&mut self) {}
    /// What says, between the steps of one long operation (a Parquet load's switch to its
    /// files, a move or a delete each), whether this daemon may still write the task's output:
    /// a daemon paused in the middle must not go on once another daemon took the task.
    fn set_write_gate(&mut self, gate: WriteGate) {
        let _ = gate;
    }
    /// `table` (a source table) read back as readers see it (`inlet validate`), or why it
    /// cannot be compared (Ok(Err(why))).
    async fn read_back(
        &self,
        table: &TableSchema,
    ) -> Result<Result<Box<dyn crate::validation::TableReadBack>, String>, TargetError> {
        let _ = table;
        Ok(Err(format!("{} cannot be read back", self.describe())))
    }
}

/// Whether this daemon may still write the task's output; why not. See
/// [`Sink::set_write_gate`].
pub type WriteGate = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The record of a full load that resumes after a crash (`task.mode = "full-load"`), kept by
/// the sink beside the table's files: the table's chunks as the run that started the load
/// planned them, which of them are complete in the target (with the sink's record of the files
/// each one wrote), and which a run began without completing (read again after a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadProgress {
    /// What must be unchanged for the done chunks to be kept (the source's guard and the
    /// table's columns); another guard means the load starts over.
    pub guard: String,
    /// Every chunk of the table, as the source wrote it (one line each).
    pub chunks: Vec<String>,
    /// The chunks complete in the target, in the order they completed.
    pub done: Vec<DoneChunk>,
    /// Indexes of chunks a run began and did not complete (in flight at a crash).
    pub started: Vec<usize>,
}

/// One chunk complete in the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoneChunk {
    /// Its index in [`LoadProgress::chunks`].
    pub chunk: usize,
    pub rows: u64,
    /// The sink's record of each file the chunk wrote (one line each, no tab).
    pub files: Vec<String>,
    /// For the initial load of a change capture: the position the chunk's snapshot holds every
    /// transaction up to (a resumed load's chunks differ).
    pub at: Option<Position>,
}

const PROGRESS_HEADER: &str = "inlet-load-progress 1";

impl LoadProgress {
    /// One line per item: `guard`, `chunk`, `started`, `done <chunk> <rows>` then the files,
    /// each after a tab. Text, so a user can read where a load stands.
    pub fn encode(&self) -> String {
        let mut out = format!("{PROGRESS_HEADER}\nguard {}\n", self.guard);
        for c in &self.chunks {
            out.push_str(&format!("chunk {c}\n"));
        }
        for s in &self.started {
            out.push_str(&format!("started {s}\n"));
        }
        for d in &self.done {
            out.push_str(&format!("done {} {}", d.chunk, d.rows));
            if let Some(at) = d.at {
                out.push_str(&format!(" at {at}"));
            }
            for f in &d.files {
                out.push('\t');
                out.push_str(f);
            }
            out.push('\n');
        }
        out
    }

    /// What [`LoadProgress::encode`] wrote, or None for anything else (then the load starts
    /// over).
    pub fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != PROGRESS_HEADER {
            return None;
        }
        let mut p = LoadProgress::default();
        for line in lines {
            let (kind, rest) = line.split_once(' ')?;
            match kind {
                "guard" => p.guard = rest.to_string(),
                "chunk" => p.chunks.push(rest.to_string()),
                "started" => p.started.push(rest.parse().ok()?),
                "done" => {
                    let mut parts = rest.split('\t');
                    let mut words = parts.next()?.split(' ');
                    let (chunk, rows) = (words.next()?, words.next()?);
                    let at = match (words.next(), words.next()) {
                        (None, _) => None,
                        (Some("at"), Some(at)) => Some(Position::parse(at)?),
                        _ => return None,
                    };
                    let chunk: usize = chunk.parse().ok()?;
                    if chunk >= p.chunks.len() {
                        return None;
                    }
                    p.done.push(DoneChunk {
                        chunk,
                        rows: rows.parse().ok()?,
                        files: parts.map(str::to_string).collect(),
                        at,
                    });
                }
                _ => return None,
            }
        }
        Some(p)
    }
}

/// One table's full load, shared by the workers loading it, each with its own writer.
#[async_trait::async_trait]
pub trait LoadTable: Send + Sync {
    fn writer(&self) -> Box<dyn LoadWriter>;
    /// Ends a resumable load that its caller will resume (a signal, a transient error), after its
    /// writers were closed or dropped: the recorded chunks' files and the record stay, the
    /// others go. Says what the table holds now. Default: [`LoadTable::abandon`].
    async fn suspend(&self, deadline: Instant) -> String {
        self.abandon(deadline).await
    }
    /// Whether the sink can resume this load ([`LoadTable::resume`], [`LoadWriter::end_chunk`]).
    fn resumable(&self) -> bool {
        false
    }
    /// The progress an earlier, interrupted run of this table's load recorded, if any.
    async fn recorded_progress(&self) -> Result<Option<LoadProgress>, TargetError> {
        Ok(None)
    }
    /// Makes this load continue `progress` before any writer writes: the files of its done
    /// chunks are kept and become part of the load, any other file an earlier run left is
    /// removed, and `progress` is recorded (a progress with no done chunk: a load that starts
    /// over and resumes if it is interrupted).
    async fn resume(&self, progress: &LoadProgress) -> Result<(), TargetError> {
        let _ = progress;
        Err(TargetError::failed("this target cannot resume a full load"))
    }
    /// Replaces the recorded progress (after a chunk began or completed), in one write.
    async fn record_progress(&self, progress: &LoadProgress) -> Result<(), TargetError> {
        let _ = progress;
        Err(TargetError::failed("this target cannot resume a full load"))
    }
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
    /// For a resumable load: completes the files written since the last call (one chunk's) and
    /// returns the sink's record of each, for [`DoneChunk::files`]. The writer goes on with new
    /// files.
    async fn end_chunk(&mut self) -> Result<Vec<String>, TargetError> {
        Err(TargetError::failed("this target cannot resume a full load"))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_progress_round_trips_and_refuses_other_text() {
        let p = LoadProgress {
            guard: "rel 16384 ins 5 | id:bigint".into(),
            chunks: vec!["pages 0 128".into(), "pages 128 -".into()],
            done: vec![DoneChunk {
                chunk: 1,
                rows: 42,
                files: vec!["LOAD00000002.parquet".into(), "{\"a\": 1}".into()],
                at: None,
            }],
            started: vec![0],
        };
        assert_eq!(LoadProgress::decode(&p.encode()), Some(p.clone()));
        let mut cdc = p.clone();
        cdc.done[0].at = Some(Position(0x2a));
        assert!(cdc.encode().contains("done 1 42 at 000000000000002A\t"));
        assert_eq!(LoadProgress::decode(&cdc.encode()), Some(cdc.clone()));
        let empty = LoadProgress::default();
        assert_eq!(LoadProgress::decode(&empty.encode()), Some(empty));
        assert_eq!(LoadProgress::decode("something else"), None);
        // A done chunk naming no planned chunk.
        let bad = p.encode().replace("done 1 42", "done 7 42");
        assert_eq!(LoadProgress::decode(&bad), None);
    }
}
