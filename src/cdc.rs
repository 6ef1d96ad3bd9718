//! `inlet run` with change data capture: set up the publication and slot, do the full load
//! inside the slot's exported snapshot (or resume from the task checkpoint), then follow the
//! change stream, flushing change files, the checkpoint and the source acknowledgement in that
//! order, so the slot never moves past what the target durably holds. A table that joins is
//! loaded beside the stream, which then starts again from where the load began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_core::{CaptureEvent, CheckStatus, Position, TableChanges, TableId, TableSelection};
use inlet_postgres::{
    discover, drop_slot, ensure_publication, prerequisites, slot_state, ChangeCapture, Lsn,
    PgConnector, ReplicationConnection, SourceTable,
};
use inlet_sink_parquet::Checkpoint;
use tokio::sync::watch;

use crate::config::{Mode, SlotLost, SourceConfig, TaskConfig};
use crate::join::{self, AbortOnDrop, JoinLoad};
use crate::sink::Target;
use crate::state::{Phase, TaskState};
use crate::stream::{self, table_fact, ChangeSource, Outputs, StreamEnd};
use crate::{full_load, JobError};

/// Checkpoint fact naming the slot the checkpoint's position belongs to.
const SLOT_FACT: &str = "slot";
/// How often the slot's retained WAL is read for the metrics.
const SLOT_POLL: Duration = Duration::from_secs(10);

/// Runs until `shutdown` turns true (then flushes, acknowledges and returns Ok) or an error.
pub async fn run(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    loop {
        match run_once(config, state, shutdown.clone()).await? {
            StreamEnd::Shutdown => return Ok(()),
            // A captured table was renamed: everything before it is durable; discover the
            // tables again (a joining one is loaded) and go on from the checkpoint.
            StreamEnd::TablesChanged => state.set_phase(Phase::Starting),
        }
    }
}

/// One discovery of the tables, then streaming until shutdown or a renamed table.
async fn run_once(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<StreamEnd, JobError> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Err(JobError::Failed(
            "the PostgreSQL runner was given another source (a bug)".into(),
        ));
    };
    let connector = PgConnector::new(source).map_err(JobError::config)?;
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?;
    let slot = source.slot_name(task);
    let publication = source.publication_name(task);
    let policy = config.values.on_unrepresentable;
    target.check().await?;

    let control = connector.connect().await.map_err(JobError::source)?;
    let tables = discover(&control, &connector, &selection, policy)
        .await
        .map_err(JobError::source)?;
    if tables.is_empty() {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    for p in prerequisites(&control, &connector, &tables, true)
        .await
        .map_err(JobError::source)?
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
        .map_err(JobError::source)?;

    let checkpoint = target.read_checkpoint(task).await?;
    let slot_now = slot_state(&control, &connector, &slot)
        .await
        .map_err(JobError::source)?;
    let resnapshot = config.cdc.on_slot_lost == SlotLost::Resnapshot;
    let lost_reason = match (&slot_now, &checkpoint) {
        (Some(s), _) if s.is_lost() => Some(format!(
            "replication slot {slot:?} is lost (wal_status = lost): the server removed WAL the task \
             had not read, so changes are missing"
        )),
        (None, Some(cp)) => Some(format!(
            "replication slot {slot:?} no longer exists, but the task checkpoint says changes up to {} \
             were captured through it: changes since then are lost",
            Lsn(cp.position.0)
        )),
        _ => None,
    };
    let all_ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let (repl, start, facts) = match (lost_reason, slot_now, checkpoint) {
        (Some(reason), _, _) if !resnapshot => {
            state.set_slot(None, true);
            return Err(JobError::Failed(format!(
                "{reason}. inlet never recreates a slot silently: drop the slot if it is still there \
                 (SELECT pg_drop_replication_slot('{slot}')) and the task checkpoint ({}), then run the \
                 task again for a new full load; or set cdc.on_slot_lost = \"resnapshot\" to do this \
                 automatically",
                target.checkpoint_location(task)
            )));
        }
        (Some(reason), existing, _) => {
            state.set_slot(None, true);
            tracing::warn!(%slot, "{reason}; cdc.on_slot_lost = \"resnapshot\": new slot and a new full load of every table");
            if existing.is_some() {
                drop_slot(&control, &connector, &slot)
                    .await
                    .map_err(JobError::source)?;
            }
            // Changes captured through the lost slot must not be replayed over the new load.
            for t in &tables {
                target.forget_changes(&t.schema).await?;
            }
            bootstrap(config, state, &connector, &target, &slot, true, &all_ids).await?
        }
        (None, Some(existing), Some(cp)) => {
            tracing::info!(%slot, position = %Lsn(cp.position.0), "resuming from the task checkpoint");
            if existing.active_pid.is_some() {
                wait_slot_released(&control, &connector, &slot).await?;
            }
            let repl = ReplicationConnection::connect(&connector)
                .await
                .map_err(JobError::source)?;
            (repl, cp.position, cp.facts)
        }
        (None, Some(_), None) => {
            // The slot exists but no checkpoint was ever written: the initial load of an earlier
            // run did not finish, and its exported snapshot is gone with it.
            tracing::warn!(%slot, "the slot exists but the initial load never finished; recreating the slot");
            drop_slot(&control, &connector, &slot)
                .await
                .map_err(JobError::source)?;
            let load = config.task.mode == Mode::FullLoadAndCdc;
            bootstrap(config, state, &connector, &target, &slot, load, &all_ids).await?
        }
        (None, None, _) => {
            let load = config.task.mode == Mode::FullLoadAndCdc;
            bootstrap(config, state, &connector, &target, &slot, load, &all_ids).await?
        }
    };
    state.set_slot(None, false);

    let mut facts = facts;
    let join = join_new_tables(config, state, &connector, &target, &tables, &mut facts).await?;
    let watched: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    // A table loading beside the stream joins it at the stream's next start, once loaded.
    let tables: Vec<SourceTable> = tables
        .into_iter()
        .filter(|t| !join.as_ref().is_some_and(|j| j.includes(&t.schema.id)))
        .collect();
    let mut outputs = Vec::with_capacity(tables.len());
    let mut committed = Vec::with_capacity(tables.len());
    for t in &tables {
        let output = target.change_table(&t.schema).await?;
        // A table loaded beside an earlier stream holds every transaction up to its load.
        let loaded = join::loaded_at(&facts, &t.schema.id);
        committed.push(output.committed_position(&t.schema).await?.max(loaded));
        outputs.push(output);
    }
    join::forget_loads_before(&mut facts, start);

    let new_tables = Arc::new(AtomicBool::new(false));
    let watch = NewTableWatch {
        connector: connector.clone(),
        selection: selection.clone(),
        policy,
        known: watched.into_iter().collect(),
        found: new_tables.clone(),
        unreadable: Default::default(),
    };
    let poller = spawn_slot_poller(
        control,
        slot.clone(),
        state.clone(),
        config.cdc.heartbeat_interval_ms,
        watch,
    );
    let _poller = AbortOnDrop(poller);

    let stream = repl
        .start_replication(&slot, &publication, Lsn(start.0))
        .await
        .map_err(|e| slot_error(e, &slot, &target.checkpoint_location(task), resnapshot))?;
    tracing::info!(%slot, %publication, from = %Lsn(start.0), tables = tables.len(), "streaming changes");
    state.set_tables(
        tables
            .iter()
            .map(|t| (t.schema.id.to_string(), None))
            .collect(),
    );
    state.set_phase(Phase::Streaming);
    state.set_connected(true);
    state.durable(Lsn(start.0).to_string());
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
    let capture = match &config.cdc.spool_dir {
        Some(dir) => capture.spool_in(dir.clone()),
        None => capture,
    };
    // While a table loads beside the stream the checkpoint stays at `start`: once loaded, the
    // stream starts again from there and the table receives every change since its snapshot
    // (the other tables skip what they hold).
    let hold = join.as_ref().map(|_| start);
    let source = PgSource {
        capture,
        new_tables,
        slot: slot.clone(),
        checkpoint: target.checkpoint_location(task),
        resnapshot,
        join,
        joined: Vec::new(),
    };
    let out = Outputs {
        tables: tables.iter().map(|t| t.schema.id.to_string()).collect(),
        outputs,
        target: &target,
        task,
        state,
        facts,
        hold,
    };
    stream::follow(source, out, start, &config.cdc, shutdown).await
}

/// The PostgreSQL change capture as the stream loop drives it.
struct PgSource {
    capture: ChangeCapture,
    /// Set by the poller when a table the selection matches appeared.
    new_tables: Arc<AtomicBool>,
    slot: String,
    /// Where the task checkpoint is, for the lost-slot message.
    checkpoint: String,
    resnapshot: bool,
    /// Tables loading beside the stream, and the facts that record them once loaded.
    join: Option<JoinLoad>,
    /// Facts of tables whose load beside the stream finished.
    joined: Vec<(String, String)>,
}

impl ChangeSource for PgSource {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, JobError> {
        let in_transaction = self.capture.in_transaction();
        if !in_transaction && self.new_tables.swap(false, Ordering::Relaxed) {
            tracing::info!("a table the selection matches appeared: re-discovering the tables once the changes before now are written");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        let Self {
            capture,
            slot,
            checkpoint,
            resnapshot,
            join,
            joined,
            ..
        } = self;
        let next = async {
            capture
                .next()
                .await
                .map_err(|e| slot_error(e, slot, checkpoint, *resnapshot))
        };
        join::next_or_joined(join, joined, in_transaction, next).await
    }
    fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, JobError> {
        self.capture.take(table).map_err(JobError::source)
    }
    fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, JobError> {
        self.capture.take_part(table).map_err(JobError::source)
    }
    async fn acknowledge(&mut self, position: Position) -> Result<(), JobError> {
        self.capture
            .acknowledge(position)
            .await
            .map_err(JobError::source)
    }
    async fn finish(self) -> Result<(), JobError> {
        self.capture.finish().await.map_err(JobError::source)
    }
    fn table_count(&self) -> usize {
        self.capture.table_count()
    }
    fn buffered_rows(&self) -> usize {
        self.capture.buffered_rows()
    }
    fn buffered_bytes(&self) -> usize {
        self.capture.buffered_bytes()
    }
    fn reset_buffered_bytes(&mut self) {
        self.capture.reset_buffered_bytes()
    }
    fn checkpoint_facts(&self) -> Vec<(String, String)> {
        self.joined.clone()
    }
    fn facts_changed(&self) -> bool {
        !self.joined.is_empty()
    }
    fn show(&self, position: Position) -> String {
        Lsn(position.0).to_string()
    }
}

/// Creates the slot; with `load`, loads every table inside the snapshot the slot exports.
/// Writes the first checkpoint at the slot's consistent point, naming the loaded tables.
async fn bootstrap(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    target: &Target,
    slot: &str,
    load: bool,
    tables: &[TableId],
) -> Result<(ReplicationConnection, Position, Vec<(String, String)>), JobError> {
    let mut repl = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::source)?;
    let consistent_point = if load {
        let created = repl
            .create_slot_exporting_snapshot(slot)
            .await
            .map_err(JobError::source)?;
        let snapshot = created.snapshot_name.unwrap_or_default();
        tracing::info!(%slot, consistent_point = %created.consistent_point, "slot created; full load inside its snapshot");
        // The walsender connection stays idle meanwhile: its next command would end the snapshot.
        // The load holds every transaction committed before the consistent point.
        let loaded_up_to = Position(created.consistent_point.0.saturating_sub(1));
        let results =
            full_load::run(config, Some(&snapshot), state, None, Some(loaded_up_to)).await?;
        let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
        tracing::info!(tables = results.len(), rows, "full load done");
        created.consistent_point
    } else {
        let created = repl.create_slot(slot).await.map_err(JobError::source)?;
        tracing::info!(%slot, consistent_point = %created.consistent_point, "slot created");
        created.consistent_point
    };
    let position = Position(consistent_point.0);
    let mut facts = vec![(SLOT_FACT.to_string(), slot.to_string())];
    facts.extend(tables.iter().map(table_fact));
    let checkpoint = Checkpoint {
        position,
        facts: facts.clone(),
    };
    target
        .write_checkpoint(&config.task.name, &checkpoint)
        .await?;
    Ok((repl, position, facts))
}

/// Tables selected now but absent from the checkpoint (the selection grew, or the tables were
/// created since) join the task. With `full-load-and-cdc` each is loaded inside the snapshot of
/// a temporary slot created now: the snapshot holds every transaction committed before that
/// slot's consistent point C, and the stream applies to these tables only transactions
/// committed at or after C, so there is no gap and no overlap. Checkpoints written by earlier
/// versions name no tables; then every table counts as known.
async fn join_new_tables(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    target: &Target,
    tables: &[SourceTable],
    facts: &mut Vec<(String, String)>,
) -> Result<Option<JoinLoad>, JobError> {
    let now: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let new = stream::joining_tables(facts, &now);
    if new.is_empty() {
        return Ok(None);
    }
    let ids: Vec<TableId> = new.iter().map(|&i| tables[i].schema.id.clone()).collect();
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if config.task.mode != Mode::FullLoadAndCdc {
        tracing::info!(tables = ?names, "new tables join the task; mode cdc: their changes are captured from now on");
        facts.extend(ids.iter().map(table_fact));
        return Ok(None);
    }
    tracing::info!(tables = ?names, "new tables join the task: loading them beside the stream");
    let mut join = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::source)?;
    let slot = format!("inlet_join_{}", std::process::id());
    let created = join
        .create_temporary_slot_exporting_snapshot(&slot)
        .await
        .map_err(JobError::source)?;
    let snapshot = created.snapshot_name.unwrap_or_default();
    for &i in &new {
        // A join interrupted earlier may have left change files: the new load replaces them.
        target.forget_changes(&tables[i].schema).await?;
    }
    let before = Position(created.consistent_point.0.saturating_sub(1));
    let (config, state, only) = (config.clone(), state.beside(), ids.clone());
    Ok(Some(JoinLoad::spawn(ids, before, async move {
        full_load::run(&config, Some(&snapshot), &state, Some(&only), Some(before)).await?;
        // The temporary slot, which exported the snapshot, goes with its connection.
        drop(join);
        Ok(())
    })))
}

/// Waits (up to 30 s) for the walsender of an earlier stream, ours, to release the slot: a stream
/// ended a moment ago, or a process killed before its connection was noticed gone.
async fn wait_slot_released(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<(), JobError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = slot_state(control, connector, slot)
            .await
            .map_err(JobError::source)?;
        let Some(pid) = state.and_then(|s| s.active_pid) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(JobError::Transient {
                kind: "source",
                message: format!(
                    "replication slot {slot:?} is still in use by server process {pid}; another \
                     inlet with this task's slot may be running"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the poller needs to notice a table that should join the running task.
struct NewTableWatch {
    connector: PgConnector,
    selection: TableSelection,
    policy: inlet_core::Unrepresentable,
    known: std::collections::HashSet<TableId>,
    found: Arc<AtomicBool>,
    /// New tables already reported as not readable (once each).
    unreadable: std::collections::HashSet<TableId>,
}

impl NewTableWatch {
    async fn check(&mut self, client: &tokio_postgres::Client) {
        match discover(client, &self.connector, &self.selection, self.policy).await {
            Ok(tables) => {
                for t in tables.iter().filter(|t| !self.known.contains(&t.schema.id)) {
                    if t.can_select {
                        tracing::debug!(table = %t.schema.id, "a new table matches the selection");
                        self.found.store(true, Ordering::Relaxed);
                    } else if self.unreadable.insert(t.schema.id.clone()) {
                        // Joining it now would stop the task on the missing privilege; the
                        // others stream on, and the next start says what to grant.
                        tracing::warn!(table = %t.schema.id, "a new table matches the selection but inlet may not SELECT it; GRANT SELECT for it to join");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "looking for new tables failed"),
        }
    }
}

/// Reads the slot's retained WAL for the metrics every [`SLOT_POLL`], looks for tables that
/// should join, and writes heartbeats into the source's WAL when configured.
fn spawn_slot_poller(
    client: tokio_postgres::Client,
    slot: String,
    state: TaskState,
    heartbeat_ms: u64,
    mut watch: NewTableWatch,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let heartbeat = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
        let every = heartbeat.map_or(SLOT_POLL, |h| h.min(SLOT_POLL));
        let mut last_poll: Option<Instant> = None;
        loop {
            if heartbeat.is_some() {
                // Non-transactional, so it reaches the WAL (and moves the slot) at once.
                if let Err(e) = client
                    .execute(
                        "SELECT pg_logical_emit_message(false, 'inlet.heartbeat', '')",
                        &[],
                    )
                    .await
                {
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
            if last_poll.is_none_or(|t| t.elapsed() >= SLOT_POLL) {
                last_poll = Some(Instant::now());
                watch.check(&client).await;
                let row = client
                    .query_opt(
                        "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, wal_status \
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&slot],
                    )
                    .await;
                match row {
                    Ok(Some(r)) => {
                        let retained: Option<i64> = r.get(0);
                        let status: Option<String> = r.get(1);
                        state.set_slot(retained, status.as_deref() == Some("lost"));
                    }
                    Ok(None) => state.set_slot(None, true),
                    Err(e) => tracing::debug!(error = %e, "reading the slot's retained WAL failed"),
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// A slot dropped while streaming gets the same clear message as at start-up (or, with
/// `on_slot_lost = "resnapshot"`, a restart that resnapshots); other errors are classified by
/// the connector.
fn slot_error(
    e: inlet_postgres::PgError,
    slot: &str,
    checkpoint: &str,
    resnapshot: bool,
) -> JobError {
    if let inlet_postgres::PgError::Replication {
        code: Some(code), ..
    } = &e
    {
        if code == "42704" {
            let message = format!(
                "replication slot {slot:?} was dropped while the task used it: changes since the last \
                 checkpoint may be lost. inlet never recreates a slot silently; delete the task \
                 checkpoint ({}) and run the task again for a new full load, or set \
                 cdc.on_slot_lost = \"resnapshot\"",
                checkpoint
            );
            return if resnapshot {
                JobError::Transient {
                    kind: "slot_lost",
                    message,
                }
            } else {
                JobError::Failed(message)
            };
        }
    }
    JobError::source(e)
}
