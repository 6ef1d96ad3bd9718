//! The target side of a task: builds the sink its file names (Parquet: DMS-style files;
//! Iceberg: upserted tables) behind the [`inlet_core::sink`] traits, and adds what is the same
//! for every sink: the value policy of dates and timestamps outside years 1–9999 under the
//! portable forms, and errors as the daemon reports them (transient or not, as the sink says).
//!
//! Sinks differ in when changes become durable (a Parquet change file at once, an Iceberg
//! snapshot at [`ChangeTable::commit`]); the stream loop treats both alike.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use inlet_core::sink::{self, Sink, TargetError};
use inlet_core::validation::TableReadBack;
use inlet_core::{
    within_years, Checkpoint, Position, TableChanges, TableSchema, TypeForms, ValuePolicy,
    YearsError,
};
use inlet_sink_iceberg::IcebergTarget;
use inlet_sink_parquet::ParquetTarget;

use crate::config::TargetConfig;
use crate::lease::Fence;
use crate::JobError;

pub use inlet_core::sink::{LoadSummary, Written};

impl From<TargetError> for JobError {
    fn from(e: TargetError) -> Self {
        JobError::target(e)
    }
}

pub struct Target {
    sink: Box<dyn Sink>,
    /// This daemon's ownership of the task, when it runs under a lease: every write of the
    /// task's output and checkpoint is refused once it is lost (see [`crate::lease`]).
    fence: Option<Arc<Fence>>,
    /// The value policy dates and timestamps outside years 1–9999 follow, under the portable
    /// forms (`target.types`); `None` under the exact ones, which write them as they are.
    years: Option<Arc<ValuePolicy>>,
}

impl Target {
    /// Parses the target settings; no I/O beyond creating a local folder. Dates and timestamps
    /// outside years 1–9999 follow the default value policy (`fail`) until
    /// [`Self::with_values`] gives the task's. The one place that picks a sink by its kind.
    pub fn new(config: &TargetConfig, task: &str) -> Result<Self, JobError> {
        let (mut sink, types): (Box<dyn Sink>, TypeForms) = match config {
            TargetConfig::Parquet(c) => (
                Box::new(ParquetTarget::new(c).map_err(JobError::config)?),
                c.types,
            ),
            TargetConfig::Iceberg(c) => (
                Box::new(IcebergTarget::new(c, task).map_err(JobError::config)?),
                c.types,
            ),
        };
        let years = (types == TypeForms::Portable).then(|| Arc::new(ValuePolicy::default()));
        let fence = crate::lease::fence_of(task);
        if let Some(fence) = &fence {
            sink.set_owner_epoch(fence.epoch());
            if fence.former_owner().is_some() {
                sink.expect_late_writes_of_a_former_owner();
            }
            let gate = fence.clone();
            sink.set_write_gate(Arc::new(move || {
                gate.check_now().map_err(|e| e.message().to_string())
            }));
        }
        Ok(Self { sink, fence, years })
    }

    /// Whether the target writes the portable type forms (`target.types = "portable"`).
    pub fn portable_forms(&self) -> bool {
        self.years.is_some()
    }

    /// The task's value policy (`[values]`), which dates and timestamps outside years 1–9999
    /// follow under the portable forms (see `inlet_core::within_years`).
    pub fn with_values(mut self, policy: ValuePolicy) -> Self {
        if self.years.is_some() {
            self.years = Some(Arc::new(policy));
        }
        self
    }

    pub fn describe(&self) -> String {
        self.sink.describe()
    }

    pub async fn check(&self) -> Result<(), JobError> {
        Ok(self.sink.check().await?)
    }

    /// `table` (a source table) read back as readers see it (`inlet validate`), or why it
    /// cannot be compared.
    pub async fn read_back(
        &self,
        table: &TableSchema,
    ) -> Result<Result<Box<dyn TableReadBack>, String>, JobError> {
        Ok(self.sink.read_back(table).await?)
    }

    pub async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, JobError> {
        Ok(self.sink.read_checkpoint(task).await?)
    }

    pub async fn write_checkpoint(&self, task: &str, cp: &Checkpoint) -> Result<(), JobError> {
        if let Some(fence) = &self.fence {
            fence.check().await?;
        }
        Ok(self.sink.write_checkpoint(task, cp).await?)
    }

    /// The task's lease objects in this target's store (see [`crate::lease`]).
    pub fn lease_store(&self, task: &str) -> Option<Box<dyn inlet_core::lease::LeaseStore>> {
        self.sink.lease_store(task)
    }

    /// Where the task checkpoint is, for messages.
    pub fn checkpoint_location(&self, task: &str) -> String {
        self.sink.checkpoint_location(task)
    }

    /// Starts the full load of a table.
    pub async fn full_load(&self, table: &TableSchema) -> Result<LoadTable, JobError> {
        Ok(LoadTable {
            table: Arc::from(self.sink.full_load(table).await?),
            fence: self.fence.clone(),
            years: self.years.as_ref().map(|policy| Years {
                table: Arc::new(table.clone()),
                policy: policy.clone(),
            }),
        })
    }

    /// Opens a table for the change stream.
    pub async fn change_table(&self, table: &TableSchema) -> Result<ChangeTable, JobError> {
        Ok(ChangeTable {
            table: self.sink.change_table(table).await?,
            fence: self.fence.clone(),
            years: self.years.clone(),
        })
    }

    /// Before a new full load of `table` replaces it: the changes captured before must not be
    /// replayed over it. Nothing to do now: a Parquet load deletes the table's change files when
    /// it switches to its complete files (readers keep the earlier table until then), and an
    /// Iceberg load replaces the table's contents by one snapshot.
    pub async fn forget_changes(&self, table: &TableSchema) -> Result<(), JobError> {
        let _ = table;
        Ok(())
    }
}

/// The dates-and-timestamps rule of one table (see [`Target::with_values`]).
#[derive(Clone)]
struct Years {
    table: Arc<TableSchema>,
    policy: Arc<ValuePolicy>,
}

/// `batch` with values outside years 1–9999 as `policy` says (NULL, or the task's error).
fn within_years_of(
    table: &TableSchema,
    policy: &ValuePolicy,
    batch: &RecordBatch,
) -> Result<RecordBatch, JobError> {
    within_years(table, policy, batch).map_err(|e| match e {
        YearsError::Far(far) => JobError::Failed(far.message(table)),
        YearsError::Arrow(e) => JobError::Failed(format!(
            "{}: cannot write dates outside years 1–9999 as NULL: {e}",
            table.id
        )),
    })
}

/// One table's full load, shared by the workers loading it.
#[derive(Clone)]
pub struct LoadTable {
    table: Arc<dyn sink::LoadTable>,
    fence: Option<Arc<Fence>>,
    years: Option<Years>,
}

impl LoadTable {
    pub fn writer(&self) -> LoadWriter {
        LoadWriter {
            writer: self.table.writer(),
            fence: self.fence.clone(),
            years: self.years.clone(),
        }
    }

    /// Completes the load once every writer is closed. `position`: the source position the
    /// load is consistent with, recorded by targets that keep one per table (Iceberg).
    pub async fn finish(&self, position: Option<Position>) -> Result<LoadSummary, JobError> {
        fenced(&self.fence).await?;
        Ok(self.table.finish(position).await?)
    }

    /// Ends a load that will not finish, after its writers were closed or dropped, and says
    /// what the table holds now (for the log and the exit message).
    pub async fn abandon(&self, deadline: Instant) -> String {
        self.table.abandon(deadline).await
    }

    /// Ends a resumable load that will be resumed (see [`sink::LoadTable::suspend`]).
    pub async fn suspend(&self, deadline: Instant) -> String {
        self.table.suspend(deadline).await
    }

    /// Resumable loads (see [`sink::LoadProgress`]); the load pool drives them.
    pub fn resumable(&self) -> bool {
        self.table.resumable()
    }

    pub async fn recorded_progress(&self) -> Result<Option<sink::LoadProgress>, JobError> {
        Ok(self.table.recorded_progress().await?)
    }

    pub async fn resume(&self, progress: &sink::LoadProgress) -> Result<(), JobError> {
        fenced(&self.fence).await?;
        Ok(self.table.resume(progress).await?)
    }

    pub async fn record_progress(&self, progress: &sink::LoadProgress) -> Result<(), JobError> {
        fenced(&self.fence).await?;
        Ok(self.table.record_progress(progress).await?)
    }
}

pub struct LoadWriter {
    writer: Box<dyn sink::LoadWriter>,
    fence: Option<Arc<Fence>>,
    years: Option<Years>,
}

impl LoadWriter {
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), JobError> {
        fenced_now(&self.fence)?;
        let checked;
        let batch = match &self.years {
            Some(y) => {
                checked = within_years_of(&y.table, &y.policy, batch)?;
                &checked
            }
            None => batch,
        };
        Ok(self.writer.write(batch).await?)
    }

    pub async fn close(self) -> Result<(), JobError> {
        fenced_now(&self.fence)?;
        Ok(self.writer.close().await?)
    }

    /// Completes one chunk's files (a resumable load): the sink's record of each.
    pub async fn end_chunk(&mut self) -> Result<Vec<String>, JobError> {
        fenced_now(&self.fence)?;
        Ok(self.writer.end_chunk().await?)
    }
}

/// One table of the change stream.
pub struct ChangeTable {
    table: Box<dyn sink::ChangeTable>,
    fence: Option<Arc<Fence>>,
    /// The value policy of dates outside years 1–9999 (see [`Target::with_values`]).
    years: Option<Arc<ValuePolicy>>,
}

impl ChangeTable {
    /// The highest source position the table holds: the stream skips transactions at or below.
    pub async fn committed_position(
        &self,
        schema: &TableSchema,
    ) -> Result<Option<Position>, JobError> {
        Ok(self.table.committed_position(schema).await?)
    }

    pub async fn write(&mut self, mut changes: TableChanges) -> Result<Written, JobError> {
        // A sink that makes each write durable at once (Parquet) writes the target here.
        fenced_now(&self.fence)?;
        if let Some(policy) = &self.years {
            changes.batch = within_years_of(&changes.schema, policy, &changes.batch)?;
        }
        Ok(self.table.write(changes).await?)
    }

    /// Memory of the table's primary-key index per indexed row (upserting targets).
    pub fn index_bytes_per_row(&self) -> Option<f64> {
        self.table.index_bytes_per_row()
    }

    /// The transaction whose parts were written has committed at the source.
    pub fn transaction_committed(&mut self) {
        self.table.transaction_committed();
    }

    /// Whether this table holds written changes it may not commit yet.
    pub fn holds_open_transaction(&self) -> bool {
        self.table.holds_open_transaction()
    }

    /// Makes the written changes durable, recording that the table holds everything up to
    /// `position` (a no-op where each write was durable at once, or nothing is new).
    pub async fn commit(&mut self, position: Position) -> Result<Written, JobError> {
        fenced_now(&self.fence)?;
        Ok(self.table.commit(position).await?)
    }
}

/// Refuses a write once the task's lease is lost (checks the timing and what the renewals saw).
fn fenced_now(fence: &Option<Arc<Fence>>) -> Result<(), JobError> {
    fence.as_ref().map_or(Ok(()), |f| f.check_now())
}

/// Refuses a write once the task's lease is lost, reading the lease too (for the rarer writes
/// that record how far the task is).
async fn fenced(fence: &Option<Arc<Fence>>) -> Result<(), JobError> {
    match fence {
        Some(f) => f.check().await,
        None => Ok(()),
    }
}

/// The task checkpoint and the records a source keeps beside it (a slot record), as a source
/// connector reads and writes them: through the lease fence, like every write of the task.
impl inlet_core::source::CheckpointStore for Target {
    fn read<'a>(&'a self, key: &'a str) -> inlet_core::source::StoreFuture<'a, Option<Checkpoint>> {
        Box::pin(self.sink.read_checkpoint(key))
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        checkpoint: &'a Checkpoint,
    ) -> inlet_core::source::StoreFuture<'a, ()> {
        Box::pin(async move {
            self.write_checkpoint(key, checkpoint)
                .await
                .map_err(|e| match e {
                    JobError::Transient { message, .. } => {
                        TargetError::new(true, std::io::Error::other(message))
                    }
                    JobError::Config(m) | JobError::Failed(m) => TargetError::failed(m),
                })
        })
    }

    fn location(&self, key: &str) -> String {
        self.sink.checkpoint_location(key)
    }
}
