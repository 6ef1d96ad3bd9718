//! `inlet run` with change data capture: set up the publication and slot, do the full load
//! inside the slot's exported snapshot (or resume from the task checkpoint), then follow the
//! change stream, flushing change files, the checkpoint and the source acknowledgement in that
//! order, so the slot never moves past what the target durably holds.

use std::time::Duration;

use inlet_core::{CaptureEvent, CheckStatus, Position, TableChanges, TableSelection};
use inlet_postgres::{
    discover, drop_slot, ensure_publication, prerequisites, slot_state, ChangeCapture, Lsn,
    PgConnector, ReplicationConnection, SourceTable,
};
use inlet_sink_parquet::{ChangeFile, Checkpoint, ParquetTarget};
use tokio::sync::watch;

use crate::config::{Mode, SourceConfig, TargetConfig, TaskConfig};
use crate::{full_load, JobError};

/// Runs until `shutdown` turns true (then flushes, acknowledges and returns Ok) or a fatal error.
pub async fn run(config: &TaskConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), JobError> {
    let SourceConfig::Postgres(source) = &config.source;
    let TargetConfig::Parquet(target_config) = &config.target;
    let connector = PgConnector::new(source).map_err(JobError::config)?;
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let target = ParquetTarget::new(target_config).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let slot = source.slot_name(task);
    let publication = source.publication_name(task);
    let policy = config.values.on_unrepresentable;
    target.check().await.map_err(JobError::failed)?;

    let control = connector.connect().await.map_err(JobError::failed)?;
    let tables = discover(&control, &connector, &selection, policy)
        .await
        .map_err(JobError::failed)?;
    if tables.is_empty() {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    for p in prerequisites(&control, &connector, &tables, true)
        .await
        .map_err(JobError::failed)?
    {
        match p.status {
            CheckStatus::Missing => {
                return Err(JobError::Failed(format!(
                    "{}: {}; fix: {}",
                    p.name,
                    p.detail,
                    p.fix.unwrap_or_default()
                )))
            }
            CheckStatus::Warning => {
                tracing::warn!(check = %p.name, detail = %p.detail, fix = ?p.fix, "prerequisite")
            }
            CheckStatus::Ok => {}
        }
    }
    ensure_publication(&control, &connector, &publication, &tables)
        .await
        .map_err(JobError::failed)?;

    let checkpoint = target
        .read_checkpoint(task)
        .await
        .map_err(JobError::failed)?;
    let state = slot_state(&control, &connector, &slot)
        .await
        .map_err(JobError::failed)?;
    let (repl, start) = match (state, checkpoint) {
        (Some(s), _) if s.is_lost() => {
            return Err(JobError::Failed(format!(
                "replication slot {slot:?} is lost (wal_status = lost): the server removed WAL the task \
                 had not read, so changes are missing. Drop the slot (SELECT pg_drop_replication_slot('{slot}')) \
                 and the task checkpoint ({}), then run the task again for a new full load",
                checkpoint_hint(&target, task)
            )))
        }
        (None, Some(cp)) => {
            return Err(JobError::Failed(format!(
                "replication slot {slot:?} no longer exists, but the task checkpoint says changes up to {} \
                 were captured through it: changes since then are lost. inlet never recreates a slot \
                 silently; delete the task checkpoint ({}) and run the task again for a new full load",
                Lsn(cp.position.0),
                checkpoint_hint(&target, task)
            )))
        }
        (Some(_), Some(cp)) => {
            tracing::info!(%slot, position = %Lsn(cp.position.0), "resuming from the task checkpoint");
            let repl = ReplicationConnection::connect(&connector).await.map_err(JobError::failed)?;
            (repl, cp.position)
        }
        (Some(_), None) => {
            // The slot exists but no checkpoint was ever written: the initial load of an earlier
            // run did not finish, and its exported snapshot is gone with it.
            tracing::warn!(%slot, "the slot exists but the initial load never finished; recreating the slot");
            drop_slot(&control, &connector, &slot).await.map_err(JobError::failed)?;
            bootstrap(config, &connector, &target, &slot).await?
        }
        (None, None) => bootstrap(config, &connector, &target, &slot).await?,
    };
    drop(control);

    let mut committed = Vec::with_capacity(tables.len());
    for t in &tables {
        let position = target
            .change_log(&t.schema)
            .committed_position()
            .await
            .map_err(JobError::failed)?;
        committed.push(position);
    }
    let mut repl = repl;
    // Whole transactions at commit: ChangeCapture bounds memory by writing a large
    // transaction in parts, so the server need not stream it while in progress.
    repl.set_stream_in_progress(false);
    let stream = repl
        .start_replication(&slot, &publication, Lsn(start.0))
        .await
        .map_err(|e| slot_error(e, &slot, &target, task))?;
    tracing::info!(%slot, %publication, from = %Lsn(start.0), tables = tables.len(), "streaming changes");
    let capture = ChangeCapture::new(
        stream,
        connector.server(),
        &tables,
        &committed,
        selection,
        policy,
        config.cdc.schema_changes,
        config.cdc.part_rows,
    );
    let mut run = Stream {
        capture,
        tables,
        target: &target,
        task,
        durable: start,
        seen: start,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(config.cdc.flush_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Checked first, so a shutdown is never starved by a busy stream.
            biased;
            _ = shutdown.changed() => {
                run.flush().await?;
                tracing::info!(position = %Lsn(run.durable.0), "stopping: changes flushed and acknowledged");
                // Ending the copy politely can wait on a large transaction the server is
                // sending; everything durable is acknowledged already, so give it a few
                // seconds and then just close.
                if tokio::time::timeout(Duration::from_secs(5), run.capture.finish()).await.is_err() {
                    tracing::info!("the server did not end the stream within 5 s; closing");
                }
                return Ok(());
            }
            _ = tick.tick() => run.flush().await?,
            event = run.capture.next() => match event.map_err(|e| slot_error(e, &slot, &target, task))? {
                None => return Err(JobError::Failed("the server ended the replication stream".into())),
                Some(CaptureEvent::Committed { end }) => {
                    run.seen = run.seen.max(end);
                    if run.capture.buffered_rows() >= config.cdc.flush_rows {
                        run.flush().await?;
                    }
                }
                Some(CaptureEvent::Idle { wal_end }) => {
                    if run.capture.buffered_rows() == 0 && wal_end > run.seen {
                        // Nothing buffered: the position can move on even with no change for
                        // these tables, so WAL never piles up behind an idle task.
                        run.seen = wal_end;
                        run.flush().await?;
                    }
                }
                Some(CaptureEvent::Large { table }) => {
                    for changes in run.capture.take(table).map_err(JobError::failed)? {
                        run.write(changes).await?;
                    }
                    if let Some(part) = run.capture.take_part(table).map_err(JobError::failed)? {
                        run.write(part).await?;
                    }
                }
            },
        }
    }
}

/// Creates the slot; for `full-load-and-cdc`, loads every table inside the snapshot the slot
/// exports. Writes the first checkpoint at the slot's consistent point.
async fn bootstrap(
    config: &TaskConfig,
    connector: &PgConnector,
    target: &ParquetTarget,
    slot: &str,
) -> Result<(ReplicationConnection, Position), JobError> {
    let mut repl = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::failed)?;
    let consistent_point = if config.task.mode == Mode::FullLoadAndCdc {
        let created = repl
            .create_slot_exporting_snapshot(slot)
            .await
            .map_err(JobError::failed)?;
        let snapshot = created.snapshot_name.unwrap_or_default();
        tracing::info!(%slot, consistent_point = %created.consistent_point, "slot created; full load inside its snapshot");
        // The walsender connection stays idle meanwhile: its next command would end the snapshot.
        let results = full_load::run(config, Some(&snapshot)).await?;
        let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
        tracing::info!(tables = results.len(), rows, "full load done");
        created.consistent_point
    } else {
        let created = repl.create_slot(slot).await.map_err(JobError::failed)?;
        tracing::info!(%slot, consistent_point = %created.consistent_point, "slot created");
        created.consistent_point
    };
    let position = Position(consistent_point.0);
    let checkpoint = Checkpoint {
        position,
        facts: vec![("slot".into(), slot.to_string())],
    };
    target
        .write_checkpoint(&config.task.name, &checkpoint)
        .await
        .map_err(JobError::failed)?;
    Ok((repl, position))
}

/// The streaming state: what is buffered, what is durable.
struct Stream<'a> {
    capture: ChangeCapture,
    tables: Vec<SourceTable>,
    target: &'a ParquetTarget,
    task: &'a str,
    /// Acknowledged to the source and recorded in the checkpoint.
    durable: Position,
    /// Everything up to here is buffered or written (a commit end, or an idle server's WAL end).
    seen: Position,
}

impl Stream<'_> {
    /// Writes every table's buffered changes, then the checkpoint, then acknowledges the source.
    async fn flush(&mut self) -> Result<(), JobError> {
        for table in 0..self.capture.table_count() {
            for changes in self.capture.take(table).map_err(JobError::failed)? {
                self.write(changes).await?;
            }
        }
        if self.seen > self.durable {
            let checkpoint = Checkpoint {
                position: self.seen,
                facts: Vec::new(),
            };
            self.target
                .write_checkpoint(self.task, &checkpoint)
                .await
                .map_err(JobError::failed)?;
            self.capture
                .acknowledge(self.seen)
                .await
                .map_err(JobError::failed)?;
            self.durable = self.seen;
        }
        Ok(())
    }

    async fn write(&mut self, changes: TableChanges) -> Result<(), JobError> {
        let file = ChangeFile {
            first: changes.first,
            last: changes.last,
            commit_time_micros: changes.commit_time_micros,
            part: changes.part,
        };
        // Each batch is written in its own shape: across a schema change the files differ.
        let log = self.target.change_log(&changes.schema);
        let rows = log
            .write(&[changes.batch], file)
            .await
            .map_err(JobError::failed)?;
        tracing::debug!(table = %self.tables[changes.table].schema.id, rows, part = ?changes.part, "change file written");
        Ok(())
    }
}

fn checkpoint_hint(target: &ParquetTarget, task: &str) -> String {
    format!("{}/_inlet/{task}/checkpoint", target.describe())
}

/// A missing slot while streaming gets the same clear message as at start-up.
fn slot_error(
    e: inlet_postgres::PgError,
    slot: &str,
    target: &ParquetTarget,
    task: &str,
) -> JobError {
    if let inlet_postgres::PgError::Replication {
        code: Some(code), ..
    } = &e
    {
        if code == "42704" {
            return JobError::Failed(format!(
                "replication slot {slot:?} was dropped while the task used it: changes since the last \
                 checkpoint may be lost. inlet never recreates a slot silently; delete the task \
                 checkpoint ({}) and run the task again for a new full load",
                checkpoint_hint(target, task)
            ));
        }
    }
    JobError::Failed(e.to_string())
}
