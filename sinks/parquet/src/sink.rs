//! The Parquet sink as the daemon drives it ([`inlet_core::sink`]): full loads into LOAD files,
//! one change file per batch of the stream (durable at once, so a commit has nothing to do),
//! and the task checkpoint under the target's prefix.

use std::sync::PoisonError;
use std::time::Instant;

use arrow_array::RecordBatch;
use inlet_core::sink::{self, LoadSummary, TargetError, Written};
use inlet_core::validation::TableReadBack;
use inlet_core::{Checkpoint, Position, TableChanges, TableSchema};

use crate::late_files::LateFiles;
use crate::{ChangeFile, FullLoadTable, LoadFileWriter, ParquetTarget, SinkError};

impl From<SinkError> for TargetError {
    fn from(e: SinkError) -> Self {
        TargetError::new(e.is_transient(), e)
    }
}

// The trait's methods call this crate's own (inherent) methods of the same names, which take
// precedence; they are not recursive.
#[async_trait::async_trait]
impl sink::Sink for ParquetTarget {
    fn describe(&self) -> String {
        ParquetTarget::describe(self)
    }

    async fn check(&self) -> Result<(), TargetError> {
        Ok(ParquetTarget::check(self).await?)
    }

    async fn full_load(
        &self,
        table: &TableSchema,
    ) -> Result<Box<dyn sink::LoadTable>, TargetError> {
        Ok(Box::new(ParquetTarget::full_load(self, table)))
    }

    async fn change_table(
        &self,
        table: &TableSchema,
    ) -> Result<Box<dyn sink::ChangeTable>, TargetError> {
        self.check_change_columns(table)?;
        Ok(Box::new(ChangeFiles {
            target: self.clone(),
            late: std::sync::Mutex::new(None),
        }))
    }

    async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, TargetError> {
        Ok(ParquetTarget::read_checkpoint(self, task).await?)
    }

    async fn write_checkpoint(
        &self,
        task: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), TargetError> {
        Ok(ParquetTarget::write_checkpoint(self, task, checkpoint).await?)
    }

    fn expect_late_writes_of_a_former_owner(&mut self) {
        self.former_owner_may_write = true;
    }

    fn set_owner_epoch(&mut self, epoch: u64) {
        self.owner_epoch = epoch;
    }

    fn set_write_gate(&mut self, gate: sink::WriteGate) {
        self.gate = Some(gate);
    }

    fn checkpoint_location(&self, task: &str) -> String {
        format!("{}/_inlet/{task}/checkpoint", self.describe())
    }

    fn lease_store(&self, task: &str) -> Option<Box<dyn inlet_core::lease::LeaseStore>> {
        Some(Box::new(crate::lease::ParquetLease::new(self, task)))
    }

    async fn read_back(
        &self,
        table: &TableSchema,
    ) -> Result<Result<Box<dyn TableReadBack>, String>, TargetError> {
        Ok(crate::table_state::TableFiles::open(self, table)
            .map(|t| Box::new(t) as Box<dyn TableReadBack>))
    }
}

#[async_trait::async_trait]
impl sink::LoadTable for FullLoadTable {
    fn writer(&self) -> Box<dyn sink::LoadWriter> {
        Box::new(FullLoadTable::writer(self))
    }

    /// Parquet keeps no position per table: the change files' names say how far each is.
    async fn finish(&self, _position: Option<Position>) -> Result<LoadSummary, TargetError> {
        let s = FullLoadTable::finish(self).await?;
        Ok(LoadSummary {
            files: s.files,
            rows: s.rows,
            bytes: s.bytes,
        })
    }

    async fn abandon(&self, deadline: Instant) -> String {
        FullLoadTable::abandon(self, deadline).await.to_string()
    }

    async fn suspend(&self, deadline: Instant) -> String {
        FullLoadTable::suspend(self, deadline).await.to_string()
    }

    fn resumable(&self) -> bool {
        true
    }

    async fn recorded_progress(&self) -> Result<Option<sink::LoadProgress>, TargetError> {
        Ok(FullLoadTable::recorded_progress(self).await?)
    }

    async fn resume(&self, progress: &sink::LoadProgress) -> Result<(), TargetError> {
        Ok(FullLoadTable::resume(self, progress).await?)
    }

    async fn record_progress(&self, progress: &sink::LoadProgress) -> Result<(), TargetError> {
        Ok(FullLoadTable::record_progress(self, progress).await?)
    }
}

#[async_trait::async_trait]
impl sink::LoadWriter for LoadFileWriter {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), TargetError> {
        Ok(LoadFileWriter::write(self, batch).await?)
    }

    async fn close(self: Box<Self>) -> Result<(), TargetError> {
        Ok(LoadFileWriter::close(*self).await?)
    }

    async fn end_chunk(&mut self) -> Result<Vec<String>, TargetError> {
        Ok(LoadFileWriter::end_chunk(self).await?)
    }
}

/// A table of the change stream: each batch becomes a change file at once.
struct ChangeFiles {
    target: ParquetTarget,
    /// After a takeover of an expired lease: what the table held when opened, to tell a
    /// former owner's late files ([`LateFiles`]).
    late: std::sync::Mutex<Option<LateFiles>>,
}

impl ChangeFiles {
    fn late(&self) -> std::sync::MutexGuard<'_, Option<LateFiles>> {
        // Plain data, replaced whole: a panic elsewhere leaves it usable.
        self.late.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl sink::ChangeTable for ChangeFiles {
    async fn committed_position(
        &self,
        table: &TableSchema,
    ) -> Result<Option<Position>, TargetError> {
        let log = self.target.change_log(table);
        let (late, at) = LateFiles::open(
            log,
            self.target.owner_epoch,
            self.target.former_owner_may_write,
        )
        .await?;
        *self.late() = late;
        Ok(at)
    }

    async fn write(&mut self, changes: TableChanges) -> Result<Written, TargetError> {
        let file = ChangeFile {
            first: changes.first,
            last: changes.last,
            commit_time_micros: changes.commit_time_micros,
            part: changes.part,
        };
        // Each batch is written in its own shape: across a schema change files differ.
        if let Some(late) = self.late.get_mut().unwrap_or_else(PoisonError::into_inner) {
            late.wrote(file.name());
        }
        let w = self
            .target
            .change_log(&changes.schema)
            .write(&[changes.batch], file)
            .await?;
        Ok(Written {
            rows: w.rows,
            bytes: w.bytes,
        })
    }

    /// Already durable: each write was a whole file. After a takeover, deletes what a former
    /// owner landed late ([`LateFiles`]) before the checkpoint says how far the table is.
    async fn commit(&mut self, _position: Position) -> Result<Written, TargetError> {
        let late = self.late.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(files) = late {
            files.sweep().await?;
            if files.over() {
                // Its record of the files written here would only grow.
                *late = None;
            }
        }
        Ok(Written::default())
    }
}
