//! Following a change stream, whatever the source: read committed transactions from a
//! [`Capture`], hand each table's changes to its [`ChangeTable`], and flush in the order that
//! makes restarts exact: table outputs, then the task checkpoint, then the source's
//! acknowledgement, so the source never forgets what the target does not durably hold. Tables
//! loading beside the stream ([`JoinLoad`]) and resyncs asked of the running task end the
//! stream at a transaction boundary, to start again with them.

use std::time::{Duration, Instant};

use inlet_core::held_keys::drop_held_rows;
use inlet_core::source::Capture;
use inlet_core::{
    forget_keys_loaded_before, merge_tables, CaptureEvent, Checkpoint, Position, TableChanges,
    TableId, TableStates,
};
use tokio::sync::watch;

use crate::config::CdcConfig;
use crate::join::{self, JoinLoad};
use crate::sink::{ChangeTable, Target};
use crate::state::TaskState;
use crate::JobError;

/// Everything the loop needs besides the source.
pub struct Outputs<'a> {
    /// Table names, by table index.
    pub tables: Vec<String>,
    /// Where each table's changes go, by table index.
    pub outputs: Vec<ChangeTable>,
    pub target: &'a Target,
    pub task: &'a str,
    pub state: &'a TaskState,
    /// Carried into every checkpoint (its position aside), before the source adds its own
    /// ([`Capture::fill_checkpoint`]).
    pub checkpoint: Checkpoint,
    /// The checkpoint and the source's acknowledgement stay at or below this position (while a
    /// table loads beside the stream, so that the stream can start again from here for it).
    pub hold: Option<Position>,
}

/// Reconciles the tables a checkpoint records as captured ([`inlet_core::TableState::captured`])
/// with the tables the task has `now`: returns the indices in `now` of tables that join (not
/// captured). Tables captured but gone from the source or the selection are no longer; their
/// targets keep what they had. A checkpoint capturing no tables (written by an early version)
/// counts every table as known and gets them all.
pub fn joining_tables(tables: &mut TableStates, now: &[TableId]) -> Vec<usize> {
    let now: Vec<String> = now.iter().map(ToString::to_string).collect();
    if !tables.values().any(|t| t.captured) {
        for name in &now {
            tables.entry(name.clone()).or_default().captured = true;
        }
        return Vec::new();
    }
    for (name, state) in tables.iter_mut() {
        if state.captured && !now.contains(name) {
            tracing::warn!(table = %name, "a table of the task is no longer in the source (dropped or renamed) or the selection; its target keeps the rows it had");
            state.captured = false;
        }
    }
    (0..now.len())
        .filter(|&i| !tables.get(&now[i]).is_some_and(|t| t.captured))
        .collect()
}

/// The tables of `now` to load beside the stream: those that join ([`joining_tables`]) and the
/// `replaced` ones (their name holds another table, or a resync asked for them), by index.
pub fn tables_to_load(
    tables: &mut TableStates,
    now: &[TableId],
    replaced: &[TableId],
) -> Vec<usize> {
    let mut load = joining_tables(tables, now);
    for (i, id) in now.iter().enumerate() {
        if replaced.contains(id) && !load.contains(&i) {
            load.push(i);
        }
    }
    load
}

/// Each streamed table's change output and the position its target holds: what it committed,
/// or the position of its load beside an earlier stream (`recorded`), when later.
pub async fn open_outputs(
    target: &Target,
    schemas: &[&inlet_core::TableSchema],
    recorded: &TableStates,
) -> Result<(Vec<ChangeTable>, Vec<Option<Position>>), JobError> {
    let mut outputs = Vec::new();
    let mut committed = Vec::new();
    for &schema in schemas {
        let output = target.change_table(schema).await?;
        // A table loaded beside an earlier stream holds every transaction up to its load.
        let loaded = crate::join::loaded_at(recorded, &schema.id);
        committed.push(output.committed_position(schema).await?.max(loaded));
        outputs.push(output);
    }
    Ok((outputs, committed))
}

/// Why [`follow`] returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Shutdown was asked for; everything received is durable and acknowledged.
    Shutdown,
    /// The source's set of tables changed ([`CaptureEvent::TablesChanged`]); everything up to
    /// that statement is durable. The caller re-discovers the tables and follows again.
    TablesChanged,
    /// Nothing was streamed yet: the initial load read `full_load.snapshot_minutes` in one
    /// snapshot and stopped, keeping its chunks, to go on in a new one. The caller starts again.
    SnapshotRenewed,
}

/// Runs until `shutdown` turns true or the source's tables change (then flushes, acknowledges
/// and says which), or an error.
pub async fn follow<S: Capture>(
    source: S,
    join: Option<JoinLoad>,
    out: Outputs<'_>,
    start: Position,
    cdc: &CdcConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<StreamEnd, JobError> {
    let mut run = Stream {
        source,
        join,
        joined: TableStates::new(),
        out,
        durable: start,
        seen: start,
    };
    let flush_bytes = cdc.flush_mb.saturating_mul(1 << 20);
    let mut tick = tokio::time::interval(Duration::from_millis(cdc.flush_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Checked first, so a shutdown is never starved by a busy stream.
            biased;
            // (The guard wait_for returns must not live across the awaits below.)
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                run.flush().await?;
                tracing::info!(position = %run.source.show(run.durable), "stopping: changes flushed and acknowledged");
                run.finish().await;
                return Ok(StreamEnd::Shutdown);
            }
            _ = tick.tick() => run.flush().await?,
            event = run.next_event() => match event? {
                None => {
                    return Err(JobError::Transient {
                        kind: "source",
                        message: "the server ended the change stream".into(),
                    })
                }
                Some(CaptureEvent::Committed { end, commit_time_micros }) => {
                    run.seen = run.seen.max(end);
                    run.out.state.received(commit_time_micros);
                    for output in &mut run.out.outputs {
                        output.transaction_committed();
                    }
                    if run.source.buffered_rows() >= cdc.flush_rows
                        || run.source.buffered_bytes() >= flush_bytes
                    {
                        run.flush().await?;
                    }
                }
                Some(CaptureEvent::Idle { wal_end }) => {
                    if run.source.buffered_rows() == 0 && wal_end > run.seen {
                        // Nothing buffered: the position can move on even with no change for
                        // these tables, so the source never keeps its log for an idle task.
                        run.seen = wal_end;
                        run.flush().await?;
                    }
                }
                Some(CaptureEvent::TablesChanged) => {
                    run.flush().await?;
                    if run.durable < run.checkpoint_target() {
                        return Err(JobError::Transient {
                            kind: "source",
                            message: "the source's tables changed while a transaction was open; \
                                      restarting from the last checkpoint"
                                .into(),
                        });
                    }
                    run.finish().await;
                    return Ok(StreamEnd::TablesChanged);
                }
                Some(CaptureEvent::Large { table }) => {
                    for changes in run.source.take(table).map_err(JobError::from_source)? {
                        run.write(changes).await?;
                    }
                    if let Some(part) = run.source.take_part(table).map_err(JobError::from_source)? {
                        run.write(part).await?;
                    }
                }
            },
        }
    }
}

/// The streaming state: what is buffered, what is durable.
struct Stream<'a, S> {
    source: S,
    /// Tables loading beside the stream.
    join: Option<JoinLoad>,
    /// What the checkpoint records of tables whose load beside the stream finished.
    joined: TableStates,
    out: Outputs<'a>,
    /// Acknowledged to the source and recorded in the checkpoint.
    durable: Position,
    /// Everything up to here is buffered or written (a commit end, or an idle server's end).
    seen: Position,
}

impl<S: Capture> Stream<'_, S> {
    /// The source's next event; at a transaction boundary, [`CaptureEvent::TablesChanged`]
    /// when a resync was asked of the task or the tables loading beside the stream are loaded
    /// (what the checkpoint records of them then goes into `joined`).
    async fn next_event(&mut self) -> Result<Option<CaptureEvent>, JobError> {
        let in_transaction = self.source.in_transaction();
        if !in_transaction && crate::resync::is_asked(self.out.task) {
            tracing::info!("a resync was asked: starting again from the last checkpoint to load the table beside the stream");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        let Self {
            source,
            join,
            joined,
            ..
        } = self;
        let next = async { source.next().await.map_err(JobError::from_source) };
        join::next_or_joined(join, joined, in_transaction, next).await
    }

    /// Where the next checkpoint goes: everything seen, unless held lower.
    fn checkpoint_target(&self) -> Position {
        match self.out.hold {
            Some(hold) => self.seen.min(hold).max(self.durable),
            None => self.seen,
        }
    }

    /// Ends the stream politely. That can wait on a large transaction the server is sending;
    /// everything durable is acknowledged already, so give it a few seconds and then close.
    async fn finish(self) {
        if tokio::time::timeout(Duration::from_secs(5), self.source.finish())
            .await
            .is_err()
        {
            tracing::info!("the server did not end the stream within 5 s; closing");
        }
    }

    /// Writes every table's buffered changes, commits the outputs, then the checkpoint, then
    /// acknowledges the source.
    async fn flush(&mut self) -> Result<(), JobError> {
        let started = Instant::now();
        for table in 0..self.source.table_count() {
            for changes in self.source.take(table).map_err(JobError::from_source)? {
                self.write(changes).await?;
            }
        }
        self.source.reset_buffered_bytes();
        let mut held = false;
        for (i, output) in self.out.outputs.iter_mut().enumerate() {
            let w = output.commit(self.seen).await?;
            held |= output.holds_open_transaction();
            if w.rows > 0 {
                let table = &self.out.tables[i];
                self.out.state.add_changes(table, w.rows);
                if let Some(b) = output.index_bytes_per_row() {
                    self.out.state.set_index_bytes_per_row(table, b);
                }
            }
        }
        // A table still holding parts of an open transaction has not made everything up to
        // `seen` durable: the checkpoint and the source wait for it.
        let upto = self.checkpoint_target();
        // A table that finished loading beside the stream changes the checkpoint even if the
        // position did not move.
        if (upto > self.durable || !self.joined.is_empty()) && !held {
            let written = Instant::now();
            self.out.state.observe_flush(written - started);
            // Key ranges of a resumed initial load that no change from here on falls in.
            forget_keys_loaded_before(&mut self.out.checkpoint.tables, upto);
            let mut checkpoint = Checkpoint {
                position: upto,
                ..self.out.checkpoint.clone()
            };
            self.source.fill_checkpoint(&mut checkpoint);
            merge_tables(&mut checkpoint.tables, &self.joined);
            self.out
                .target
                .write_checkpoint(self.out.task, &checkpoint)
                .await?;
            self.source
                .acknowledge(upto)
                .await
                .map_err(JobError::from_source)?;
            self.durable = upto;
            self.out.state.observe_commit(written.elapsed());
        }
        self.out.state.durable(self.source.show(self.durable));
        Ok(())
    }

    async fn write(&mut self, changes: TableChanges) -> Result<(), JobError> {
        let index = changes.table;
        let part = changes.part;
        let Some(output) = self.out.outputs.get_mut(index) else {
            return Err(JobError::Failed(format!(
                "changes for table #{index}, which the task does not have (a bug in the change capture)"
            )));
        };
        let table = &self.out.tables[index];
        // A resumed initial load read some of the table's key ranges in a later snapshot, which
        // holds their changes up to it.
        let changes = match self.out.checkpoint.tables.get(table) {
            Some(state) if !state.keys_loaded_at.is_empty() => {
                match drop_held_rows(changes, &state.keys_loaded_at) {
                    Ok(Some(changes)) => changes,
                    Ok(None) => return Ok(()),
                    Err(truncate) => {
                        // Part of the table was loaded after the TRUNCATE: neither applying it
                        // nor leaving it out keeps the target exact. A reload does; the task
                        // starts again from its checkpoint and loads the table beside the
                        // stream, whose replay guard then skips the TRUNCATE.
                        crate::resync::ask(self.out.task, table);
                        return Err(JobError::Transient {
                            kind: "source",
                            message: format!(
                                "{table} was truncated at {} while its interrupted initial load \
                                 was resumed, after some of its chunks were read: the table is \
                                 loaded again beside the stream",
                                self.source.show(truncate.at)
                            ),
                        });
                    }
                }
            }
            _ => changes,
        };
        let written = output.write(changes).await?;
        if written.rows > 0 {
            self.out.state.add_changes(table, written.rows);
            self.out.state.add_bytes(table, written.bytes);
        }
        tracing::debug!(%table, rows = written.rows, ?part, "changes written");
        Ok(())
    }
}
