//! The task engine: one way to run a task whatever its source, over the
//! [`inlet_core::source`] traits that each connector crate implements. It runs every mode
//! (`full-load`, `cdc`, `full-load-and-cdc`), tables that join or are loaded again beside the
//! stream, and the stream loop ([`crate::stream`]); the source decides its own rules (where to
//! resume, what its errors mean).
//!
//! This module is the one place that builds a source from the task file ([`run`],
//! [`full_load`], [`check`], [`describe_source`], [`validate`]); `task` runs a task's phases, `join` loads tables
//! beside the stream, `load` hands a snapshot to the load pool.

mod join;
mod load;
mod task;

use std::future::Future;
use std::sync::Arc;

use inlet_core::source::{Source, SourceFeedback, SourceReport, TaskSettings};
use inlet_core::{TableId, TableSelection};
use inlet_mysql::{MysqlConnector, MysqlTask, MysqlValidation};
use inlet_postgres::{PgConnector, PgTask, PgValidation};
use tokio::sync::watch;

use crate::config::{Mode, SourceConfig, TaskConfig};
use crate::load_pool::{LoadEnd, TableResult};
use crate::sink::Target;
use crate::state::TaskState;
use crate::JobError;

/// Error kind of a stream whose source cannot go on from the checkpoint and starts over with a
/// new snapshot at once ([`inlet_core::snapshot::SourceError::starts_over`]).
pub const STARTS_OVER: &str = "starts_over";

/// Runs the task as its mode says until it ends, fails, or `shutdown` turns true.
pub async fn run(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let settings = settings(config)?;
    let feedback = Arc::new(Feedback::new(state, &config.task.name));
    match &config.source {
        SourceConfig::Postgres(source) => {
            let source = PgTask::new(source, settings, feedback).map_err(JobError::config)?;
            task::run(source, config, state, shutdown).await
        }
        SourceConfig::Mysql(source) => {
            let source = MysqlTask::new(source, settings).map_err(JobError::config)?;
            task::run(source, config, state, shutdown).await
        }
    }
}

/// Loads every selected table once (`inlet full-load`), stopped early when `stop` completes.
pub async fn full_load(
    config: &TaskConfig,
    state: &TaskState,
    stop: impl Future<Output = ()>,
) -> Result<Vec<TableResult>, LoadEnd> {
    let settings = settings(config).map_err(LoadEnd::Failed)?;
    let feedback = Arc::new(Feedback::new(state, &config.task.name));
    match &config.source {
        SourceConfig::Postgres(source) => {
            let source = PgTask::new(source, settings, feedback)
                .map_err(JobError::config)
                .map_err(LoadEnd::Failed)?;
            load::full_load(source, config, state, stop).await
        }
        SourceConfig::Mysql(source) => {
            let source = MysqlTask::new(source, settings)
                .map_err(JobError::config)
                .map_err(LoadEnd::Failed)?;
            load::full_load(source, config, state, stop).await
        }
    }
}

/// What `inlet check` reports of the task's source ([`Source::check`]).
pub async fn check(
    config: &TaskConfig,
    state: &TaskState,
    store: &Target,
) -> Result<SourceReport, JobError> {
    let settings = settings(config)?;
    let capture = settings.capture;
    let feedback = Arc::new(Feedback::new(state, &config.task.name));
    match &config.source {
        SourceConfig::Postgres(source) => {
            let mut source = PgTask::new(source, settings, feedback).map_err(JobError::config)?;
            source.check(store, capture).await
        }
        SourceConfig::Mysql(source) => {
            let mut source = MysqlTask::new(source, settings).map_err(JobError::config)?;
            source.check(store, capture).await
        }
    }
    .map_err(JobError::failed)
}

/// Validates the task's target against its source (`inlet validate`, see [`crate::validate`]).
pub async fn validate(
    config: &TaskConfig,
    args: &crate::validate::ValidateArgs<'_>,
) -> Result<Vec<crate::validate::TableReport>, JobError> {
    let settings = settings(config)?;
    let source_error = crate::load_pool::source_error;
    match &config.source {
        SourceConfig::Postgres(source) => {
            let source = PgValidation::open(source, &settings)
                .await
                .map_err(source_error)?;
            crate::validate::validate_source(source, config, args).await
        }
        SourceConfig::Mysql(source) => {
            // Its positions carry the epoch of the task's checkpoint.
            let checkpoint = Target::new(&config.target, &config.task.name)?
                .read_checkpoint(&config.task.name)
                .await?;
            let source = MysqlValidation::open(source, &settings, checkpoint.as_ref())
                .await
                .map_err(source_error)?;
            crate::validate::validate_source(source, config, args).await
        }
    }
}

/// The source as `/status` shows it: its server, never credentials.
pub fn describe_source(config: &TaskConfig) -> Result<String, String> {
    Ok(match &config.source {
        SourceConfig::Postgres(source) => format!(
            "postgres://{}",
            PgConnector::new(source)
                .map_err(|e| e.to_string())?
                .server()
        ),
        SourceConfig::Mysql(source) => format!(
            "mysql://{}",
            MysqlConnector::new(source)
                .map_err(|e| e.to_string())?
                .server()
        ),
    })
}

/// What a source needs of the task file.
fn settings(config: &TaskConfig) -> Result<TaskSettings, JobError> {
    let fl = &config.full_load;
    let cdc = &config.cdc;
    Ok(TaskSettings {
        task: config.task.name.clone(),
        capture: config.task.mode != Mode::FullLoad,
        load: config.task.mode != Mode::Cdc,
        selection: TableSelection::new(&config.tables).map_err(JobError::config)?,
        policy: config.values.policy(),
        workers: fl.worker_count(),
        chunk_mb: fl.chunk_mb,
        batch_rows: fl.batch_rows,
        batch_bytes: fl.batch_mb.saturating_mul(1 << 20),
        schema_changes: cdc.schema_changes,
        part_rows: cdc.part_rows,
        stream_silence_timeout_s: cdc.stream_silence_timeout_s,
        spool_dir: cdc.spool_dir.clone(),
        heartbeat_interval_ms: cdc.heartbeat_interval_ms,
        reload_on_unstreamed_change: cdc.reload_on_unstreamed_change,
        resnapshot_when_lost: cdc.on_slot_lost == crate::config::SlotLost::Resnapshot,
    })
}

/// What a source tells the running task: its retained log goes to the metrics, a table to
/// load again is asked of the running task as `inlet resync` would.
pub struct Feedback {
    state: TaskState,
    task: String,
}

impl Feedback {
    pub fn new(state: &TaskState, task: &str) -> Self {
        Self {
            state: state.clone(),
            task: task.to_string(),
        }
    }
}

impl SourceFeedback for Feedback {
    fn retained(&self, bytes: Option<i64>, lost: bool) {
        self.state.set_slot(bytes, lost);
    }
    fn reload(&self, table: &TableId) {
        crate::resync::ask(&self.task, &table.to_string());
    }
}
