//! The target side of a task, whichever kind its file names: full-load tables and their
//! writers, the change stream's per-table writers, and the task checkpoint, over the Parquet
//! sink (DMS-style files) or the Iceberg sink (upserted tables).
//!
//! The two differ in when changes become durable. Parquet writes a change file per batch at
//! once; Iceberg applies batches to an open table and makes them durable only at
//! [`ChangeTable::commit`], one snapshot per table per flush.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use inlet_core::{
    within_years, Position, TableChanges, TableSchema, TypeForms, ValuePolicy, YearsError,
    POSITION_COLUMN,
};
use std::time::{Duration, Instant};

use inlet_sink_iceberg::{IcebergError, IcebergTarget, MaintenanceConfig, UpsertTable};
use inlet_sink_parquet::{
    ChangeFile, Checkpoint, FullLoadTable, LoadFileWriter, ParquetTarget, ParquetTargetConfig,
    SinkError,
};

use crate::config::TargetConfig;
use crate::JobError;

pub struct Target {
    kind: TargetKind,
    /// The value policy dates and timestamps outside years 1–9999 follow, under the portable
    /// forms (`target.types`); `None` under the exact ones, which write them as they are.
    years: Option<Arc<ValuePolicy>>,
}

enum TargetKind {
    Parquet(ParquetTarget),
    Iceberg {
        tables: IcebergTarget,
        maintenance: MaintenanceConfig,
        /// The task checkpoint lives in the warehouse too (`_inlet/<task>/checkpoint`), written
        /// the way the Parquet target writes it.
        checkpoints: ParquetTarget,
    },
}

/// An Iceberg error, transient (store or catalog unreachable, 5xx, throttled; a commit
/// conflict) or not as the sink classifies it.
fn iceberg_error(e: IcebergError) -> JobError {
    if e.is_transient() {
        JobError::Transient {
            kind: "target",
            message: e.to_string(),
        }
    } else {
        JobError::Failed(e.to_string())
    }
}

fn sink_error(e: SinkError) -> JobError {
    JobError::target(e)
}

impl Target {
    /// Parses the target settings; no I/O beyond creating a local folder. Dates and timestamps
    /// outside years 1–9999 follow the default value policy (`fail`) until
    /// [`Self::with_values`] gives the task's.
    pub fn new(config: &TargetConfig, task: &str) -> Result<Self, JobError> {
        let (kind, types) = match config {
            TargetConfig::Parquet(c) => (
                TargetKind::Parquet(ParquetTarget::new(c).map_err(JobError::config)?),
                c.types,
            ),
            TargetConfig::Iceberg(c) => (
                TargetKind::Iceberg {
                    tables: IcebergTarget::new(c, task).map_err(JobError::config)?,
                    maintenance: c.maintenance.clone(),
                    checkpoints: ParquetTarget::new(&ParquetTargetConfig::with_url(&c.warehouse))
                        .map_err(JobError::config)?,
                },
                c.types,
            ),
        };
        let years = (types == TypeForms::Portable).then(|| Arc::new(ValuePolicy::default()));
        Ok(Self { kind, years })
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
        match &self.kind {
            TargetKind::Parquet(t) => t.describe(),
            TargetKind::Iceberg { tables, .. } => format!("iceberg {}", tables.describe()),
        }
    }

    pub async fn check(&self) -> Result<(), JobError> {
        match &self.kind {
            TargetKind::Parquet(t) => t.check().await.map_err(sink_error),
            TargetKind::Iceberg { tables, .. } => tables.check().await.map_err(iceberg_error),
        }
    }

    fn checkpoints(&self) -> &ParquetTarget {
        match &self.kind {
            TargetKind::Parquet(t) | TargetKind::Iceberg { checkpoints: t, .. } => t,
        }
    }

    pub async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, JobError> {
        self.checkpoints()
            .read_checkpoint(task)
            .await
            .map_err(sink_error)
    }

    pub async fn write_checkpoint(&self, task: &str, cp: &Checkpoint) -> Result<(), JobError> {
        self.checkpoints()
            .write_checkpoint(task, cp)
            .await
            .map_err(sink_error)
    }

    /// Where the task checkpoint is, for messages.
    pub fn checkpoint_location(&self, task: &str) -> String {
        format!("{}/_inlet/{task}/checkpoint", self.checkpoints().describe())
    }

    /// Starts the full load of a table.
    pub async fn full_load(&self, table: &TableSchema) -> Result<LoadTable, JobError> {
        match &self.kind {
            TargetKind::Parquet(t) => {
                Ok(self.load_table(table, LoadKind::Parquet(t.full_load(table))))
            }
            TargetKind::Iceberg { tables, .. } => Ok(self.load_table(
                table,
                LoadKind::Iceberg(tables.full_load(table).await.map_err(iceberg_error)?),
            )),
        }
    }

    /// Opens a table for the change stream.
    pub async fn change_table(&self, table: &TableSchema) -> Result<ChangeTable, JobError> {
        match &self.kind {
            TargetKind::Parquet(t) => {
                t.check_change_columns(table).map_err(sink_error)?;
                Ok(self.change_kind(ChangeKind::Parquet(t.clone())))
            }
            TargetKind::Iceberg {
                tables,
                maintenance,
                ..
            } => Ok(self.change_kind(ChangeKind::Iceberg {
                table: Box::new(tables.upsert_table(table).await.map_err(iceberg_error)?),
                pending: 0,
                open_part: false,
                maintenance: maintenance.clone(),
                maintained: Instant::now(),
            })),
        }
    }

    fn load_table(&self, table: &TableSchema, kind: LoadKind) -> LoadTable {
        LoadTable {
            kind,
            years: self.years.as_ref().map(|policy| Years {
                table: Arc::new(table.clone()),
                policy: policy.clone(),
            }),
        }
    }

    fn change_kind(&self, kind: ChangeKind) -> ChangeTable {
        ChangeTable {
            kind,
            years: self.years.clone(),
        }
    }

    /// Before a new full load of `table` replaces it: the changes captured before must not be
    /// replayed over it. Nothing to do now: a Parquet load deletes the table's change files when
    /// it switches to its complete files (readers keep the earlier table until then), and an
    /// Iceberg load replaces the table's contents by one snapshot.
    pub async fn forget_changes(&self, table: &TableSchema) -> Result<(), JobError> {
        let _ = table;
        match &self.kind {
            TargetKind::Parquet(_) | TargetKind::Iceberg { .. } => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadSummary {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
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
    kind: LoadKind,
    years: Option<Years>,
}

#[derive(Clone)]
enum LoadKind {
    Parquet(FullLoadTable),
    Iceberg(inlet_sink_iceberg::LoadTable),
}

impl LoadTable {
    pub fn writer(&self) -> LoadWriter {
        let kind = match &self.kind {
            LoadKind::Parquet(t) => WriterKind::Parquet(t.writer()),
            LoadKind::Iceberg(t) => WriterKind::Iceberg(t.writer()),
        };
        LoadWriter {
            kind,
            years: self.years.clone(),
        }
    }

    /// Completes the load once every writer is closed. `position`: the source position the
    /// load is consistent with, recorded by targets that keep one per table (Iceberg).
    pub async fn finish(&self, position: Option<Position>) -> Result<LoadSummary, JobError> {
        match &self.kind {
            LoadKind::Parquet(t) => {
                let s = t.finish().await.map_err(sink_error)?;
                Ok(LoadSummary {
                    files: s.files,
                    rows: s.rows,
                    bytes: s.bytes,
                })
            }
            LoadKind::Iceberg(t) => {
                let s = t.finish(position).await.map_err(iceberg_error)?;
                Ok(LoadSummary {
                    files: s.files as u64,
                    rows: s.rows,
                    bytes: s.bytes,
                })
            }
        }
    }
}

impl LoadTable {
    /// Ends a load that will not finish, after its writers were closed or dropped, and says
    /// what the table holds now (for the log and the exit message).
    pub async fn abandon(&self, deadline: Instant) -> String {
        match &self.kind {
            LoadKind::Parquet(t) => t.abandon(deadline).await.to_string(),
            // Data files become part of the table only at finish's commit.
            LoadKind::Iceberg(_) => {
                "not loaded; nothing of this run was committed, the table holds what it held \
                 before"
                    .to_string()
            }
        }
    }
}

pub struct LoadWriter {
    kind: WriterKind,
    years: Option<Years>,
}

enum WriterKind {
    Parquet(LoadFileWriter),
    Iceberg(inlet_sink_iceberg::LoadWriter),
}

impl LoadWriter {
    pub async fn write(&mut self, batch: &arrow_array::RecordBatch) -> Result<(), JobError> {
        let checked;
        let batch = match &self.years {
            Some(y) => {
                checked = within_years_of(&y.table, &y.policy, batch)?;
                &checked
            }
            None => batch,
        };
        match &mut self.kind {
            WriterKind::Parquet(w) => w.write(batch).await.map_err(sink_error),
            WriterKind::Iceberg(w) => w.write(batch).await.map_err(iceberg_error),
        }
    }

    pub async fn close(self) -> Result<(), JobError> {
        match self.kind {
            WriterKind::Parquet(w) => w.close().await.map_err(sink_error),
            WriterKind::Iceberg(w) => w.close().await.map_err(iceberg_error),
        }
    }
}

/// The batch to apply to an upserting table. The table skips rows at or below its committed
/// position, a guard against replays. A part of a transaction still open may carry a position
/// that is not yet its commit's: MySQL stamps parts with the transaction's start, which equals
/// the end of the previous transaction and so may equal the table's position. The capture has
/// already decided that the transaction is new for this table, so such rows are lifted just
/// above the committed position (the table's own position is set at commit, not from rows).
fn lift_part_positions(
    changes: &TableChanges,
    committed: Option<Position>,
) -> Result<RecordBatch, JobError> {
    let (Some(_), Some(committed)) = (changes.part, committed) else {
        return Ok(changes.batch.clone());
    };
    let floor = i64::try_from(committed.0.saturating_add(1)).unwrap_or(i64::MAX);
    let Some(index) = changes.batch.schema().index_of(POSITION_COLUMN).ok() else {
        return Ok(changes.batch.clone());
    };
    let Some(positions) = changes
        .batch
        .column(index)
        .as_any()
        .downcast_ref::<Int64Array>()
    else {
        return Err(JobError::Failed(format!(
            "{POSITION_COLUMN} of a change batch is not Int64 (a bug in the change capture)"
        )));
    };
    let lifted: Int64Array = positions.iter().map(|p| p.map(|v| v.max(floor))).collect();
    let mut columns = changes.batch.columns().to_vec();
    columns[index] = Arc::new(lifted);
    RecordBatch::try_new(changes.batch.schema(), columns)
        .map_err(|e| JobError::Failed(format!("rebuilding a change batch: {e}")))
}

/// Rows and bytes a write made durable (Iceberg: at commit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
}

/// One table of the change stream.
pub struct ChangeTable {
    kind: ChangeKind,
    /// The value policy of dates outside years 1–9999 (see [`Target::with_values`]).
    years: Option<Arc<ValuePolicy>>,
}

enum ChangeKind {
    /// Each batch becomes a change file at once.
    Parquet(ParquetTarget),
    /// Batches are applied to the open table and committed by [`ChangeTable::commit`].
    Iceberg {
        table: Box<UpsertTable>,
        /// Change rows applied since the last commit.
        pending: u64,
        /// Part of a transaction still open was applied: the table must not commit until the
        /// transaction's commit has been seen, or a restart would apply its first parts twice.
        open_part: bool,
        maintenance: MaintenanceConfig,
        /// When maintenance last ran (or the table was opened).
        maintained: Instant,
    },
}

impl ChangeTable {
    /// The highest source position the table holds: the stream skips transactions at or below.
    pub async fn committed_position(
        &self,
        schema: &TableSchema,
    ) -> Result<Option<Position>, JobError> {
        match &self.kind {
            ChangeKind::Parquet(t) => t
                .change_log(schema)
                .committed_position()
                .await
                .map_err(sink_error),
            ChangeKind::Iceberg { table, .. } => Ok(table.committed_position()),
        }
    }

    pub async fn write(&mut self, mut changes: TableChanges) -> Result<Written, JobError> {
        if let Some(policy) = &self.years {
            changes.batch = within_years_of(&changes.schema, policy, &changes.batch)?;
        }
        match &mut self.kind {
            ChangeKind::Parquet(t) => {
                let file = ChangeFile {
                    first: changes.first,
                    last: changes.last,
                    commit_time_micros: changes.commit_time_micros,
                    part: changes.part,
                };
                // Each batch is written in its own shape: across a schema change files differ.
                let w = t
                    .change_log(&changes.schema)
                    .write(&[changes.batch], file)
                    .await
                    .map_err(sink_error)?;
                Ok(Written {
                    rows: w.rows,
                    bytes: w.bytes,
                })
            }
            ChangeKind::Iceberg {
                table,
                pending,
                open_part,
                ..
            } => {
                let batch = lift_part_positions(&changes, table.committed_position())?;
                table
                    .apply(&changes.schema, &batch)
                    .await
                    .map_err(iceberg_error)?;
                *pending += changes.batch.num_rows() as u64;
                if changes.part.is_some() {
                    *open_part = true;
                }
                // Durable only at commit; counted then.
                Ok(Written::default())
            }
        }
    }

    /// Memory of the table's primary-key index per indexed row (upserting targets).
    pub fn index_bytes_per_row(&self) -> Option<f64> {
        match &self.kind {
            ChangeKind::Iceberg { table, .. } if table.indexed_rows() > 0 => {
                Some(table.index_bytes_per_row())
            }
            _ => None,
        }
    }

    /// The transaction whose parts were applied has committed at the source.
    pub fn transaction_committed(&mut self) {
        if let ChangeKind::Iceberg { open_part, .. } = &mut self.kind {
            *open_part = false;
        }
    }

    /// Whether this table holds applied changes it may not commit yet.
    pub fn holds_open_transaction(&self) -> bool {
        matches!(
            &self.kind,
            ChangeKind::Iceberg {
                open_part: true,
                ..
            }
        )
    }

    /// Makes the applied changes durable, recording that the table holds everything up to
    /// `position`. A no-op for Parquet (already durable) and for a table with nothing new.
    pub async fn commit(&mut self, position: Position) -> Result<Written, JobError> {
        match &mut self.kind {
            ChangeKind::Parquet(_) => Ok(Written::default()),
            ChangeKind::Iceberg {
                table,
                pending,
                open_part,
                maintenance,
                maintained,
            } => {
                if *pending == 0 || *open_part {
                    return Ok(Written::default());
                }
                table.commit(position).await.map_err(iceberg_error)?;
                let rows = std::mem::take(pending);
                // Right after a commit nothing is pending, which maintenance requires.
                let every = Duration::from_secs(maintenance.interval_minutes.saturating_mul(60));
                if maintenance.interval_minutes > 0 && maintained.elapsed() >= every {
                    *maintained = Instant::now();
                    let report = table
                        .maintain(maintenance, chrono::Utc::now())
                        .await
                        .map_err(iceberg_error)?;
                    tracing::info!(table = %table.location(), ?report, "table maintenance done");
                }
                Ok(Written { rows, bytes: 0 })
            }
        }
    }
}
