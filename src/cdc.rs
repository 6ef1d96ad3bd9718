//! `inlet run` with change data capture: set up the publication and slot, do the full load
//! inside the slot's exported snapshot (or resume from the task checkpoint), then follow the
//! change stream, flushing change files, the checkpoint and the source acknowledgement in that
//! order, so the slot never moves past what the target durably holds. A table that joins is
//! loaded beside the stream, which then starts again from where the load began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_core::{
    merge_tables, CaptureEvent, CheckStatus, Checkpoint, Position, PostgresResume, Prerequisite,
    SourceResume, TableChanges, TableId, TableSelection, TableStates,
};
use inlet_postgres::{
    columns_with_unwritten_defaults, discover, drop_slot, ensure_publication, prerequisites,
    publication_plan, published_generated_columns, slot_state, ChangeCapture, Lsn, PgConnector,
    PostgresSourceConfig, ReplicationConnection, SourceTable,
};
use tokio::sync::watch;

use crate::config::{Mode, SlotLost, SourceConfig, TaskConfig};
use crate::join::{self, AbortOnDrop, JoinLoad};
use crate::sink::Target;
use crate::state::{Phase, TaskState};
use crate::stream::{self, ChangeSource, Outputs, StreamEnd};
use crate::{full_load, resync, JobError};

mod added_defaults;
mod rewrites;
mod start;
use inlet_postgres::{publication_lost_reason, SlotPlan, SlotRecord};
use start::{record_key, StartCheck};

/// How often the slot's retained WAL is read for the metrics.
const SLOT_POLL: Duration = Duration::from_secs(10);

/// Runs until `shutdown` turns true (then flushes, acknowledges and returns Ok) or an error.
pub async fn run(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let resnapshot = config.cdc.on_slot_lost == SlotLost::Resnapshot;
    let mut first = true;
    let mut lost: Option<String> = None;
    loop {
        match run_once(config, state, shutdown.clone(), first, lost.take()).await {
            Ok(StreamEnd::Shutdown) => return Ok(()),
            // A captured table was renamed: everything before it is durable; discover the
            // tables again (a joining one is loaded) and go on from the checkpoint.
            Ok(StreamEnd::TablesChanged) => state.set_phase(Phase::Starting),
            // The publication was dropped under the stream: the slot cannot go on (see
            // `slot_error`), and resuming it would fail the same way forever.
            Err(JobError::Transient { kind, message })
                if kind == PUBLICATION_LOST && resnapshot =>
            {
                tracing::warn!("{message}; cdc.on_slot_lost = \"resnapshot\": starting again");
                state.set_phase(Phase::Starting);
                lost = Some(message);
            }
            Err(e) => return Err(e),
        }
        first = false;
    }
}

/// Error kind of a stream that failed because its publication was dropped.
const PUBLICATION_LOST: &str = "publication_lost";

/// The `inlet check` lines of a CDC task's start: the slot (whose it is, lost, free slots), the
/// checkpoint's position against the server, the publication (privileges, replica identity).
pub async fn check(
    config: &TaskConfig,
    source: &PostgresSourceConfig,
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    tables: &[SourceTable],
) -> Result<Vec<Prerequisite>, JobError> {
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?;
    let start = StartCheck::read(config, source, control, connector, &target, tables, None).await?;
    let publication = source.publication_name(task);
    let mut report = start.report(
        &source.slot_name(task),
        &publication,
        &target.checkpoint_location(task),
    );
    report.extend(
        published_generated_columns(control, connector, &publication, tables)
            .await
            .map_err(JobError::source)?,
    );
    Ok(report)
}

/// One discovery of the tables, then streaming until shutdown or a renamed table.
/// `first`: the first start of this process (later ones follow a re-discovery of the tables).
/// `lost`: why the slot cannot go on, when the last stream found out.
async fn run_once(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
    first: bool,
    lost: Option<String>,
) -> Result<StreamEnd, JobError> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Err(JobError::Failed(
            "the PostgreSQL runner was given another source (a bug)".into(),
        ));
    };
    let connector = PgConnector::new(source)
        .map_err(JobError::config)?
        .with_publication(source.publication_name(&config.task.name));
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?.with_values(config.values.policy());
    let slot = source.slot_name(task);
    let publication = source.publication_name(task);
    let policy = config.values.policy();
    target.check().await?;

    let control = connector.connect().await.map_err(JobError::source)?;
    let tables = discover(&control, &connector, &selection, &policy)
        .await
        .map_err(JobError::source)?;
    if tables.is_empty() {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    let generated = published_generated_columns(&control, &connector, &publication, &tables)
        .await
        .map_err(JobError::source)?;
    for p in prerequisites(&control, &connector, &tables, true)
        .await
        .map_err(JobError::source)?
        .into_iter()
        .chain(generated)
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
    // A table without replica identity that appeared while the task ran is left out (it was
    // reported when it appeared); at the first start it stops the task below, before anything
    // is written.
    let tables = if first {
        tables
    } else {
        let plan = publication_plan(&control, &connector, &publication, &tables)
            .await
            .map_err(JobError::source)?;
        tables
            .into_iter()
            .filter(|t| !plan.no_identity.iter().any(|n| n.table == t.schema.id))
            .collect()
    };
    let start_check =
        StartCheck::read(config, source, &control, &connector, &target, &tables, lost).await?;
    let checkpoint_at = target.checkpoint_location(task);
    let refusals: Vec<String> = start_check
        .report(&slot, &publication, &checkpoint_at)
        .into_iter()
        .filter(|p| p.status == CheckStatus::Missing)
        .map(|p| match p.fix {
            Some(fix) if fix != "see above" => format!("{}: {}; fix: {fix}", p.name, p.detail),
            _ => format!("{}: {}", p.name, p.detail),
        })
        .collect();
    if !refusals.is_empty() {
        if matches!(start_check.plan, Ok(SlotPlan::Lost { .. })) {
            state.set_slot(None, true);
        }
        return Err(JobError::Failed(refusals.join("\n")));
    }
    let StartCheck {
        checkpoint, plan, ..
    } = start_check;
    let plan = plan.map_err(JobError::Failed)?;
    ensure_publication(&control, &connector, &publication, &tables)
        .await
        .map_err(JobError::source)?;

    let resnapshot = config.cdc.on_slot_lost == SlotLost::Resnapshot;
    let all_ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let load = config.task.mode == Mode::FullLoadAndCdc;
    let (repl, start, recorded) = match (plan, checkpoint) {
        (
            SlotPlan::Lost {
                reason,
                drop_slot: existing,
            },
            _,
        ) => {
            state.set_slot(None, true);
            tracing::warn!(%slot, "{reason}; cdc.on_slot_lost = \"resnapshot\": new slot and a new full load of every table");
            if existing {
                wait_slot_released(&control, &connector, &slot).await?;
                drop_slot(&control, &connector, &slot)
                    .await
                    .map_err(JobError::source)?;
            }
            // Changes captured through the lost slot must not be replayed over the new load.
            for t in &tables {
                target.forget_changes(&t.schema).await?;
            }
            bootstrap(
                config, state, &connector, &control, &target, &slot, true, &all_ids,
            )
            .await?
        }
        (SlotPlan::Resume, Some(cp)) => {
            tracing::info!(%slot, position = %Lsn(cp.position.0), "resuming from the task checkpoint");
            wait_slot_released(&control, &connector, &slot).await?;
            let repl = ReplicationConnection::connect(&connector)
                .await
                .map_err(JobError::source)?;
            (repl, cp.position, cp.tables)
        }
        (SlotPlan::Recreate, _) => {
            // This task created the slot (its record says so, and the slot never moved), but no
            // checkpoint was ever written: the first load did not finish, and its exported
            // snapshot is gone with it.
            tracing::warn!(%slot, "this task's slot exists but its first load never finished; recreating the slot");
            wait_slot_released(&control, &connector, &slot).await?;
            drop_slot(&control, &connector, &slot)
                .await
                .map_err(JobError::source)?;
            bootstrap(
                config, state, &connector, &control, &target, &slot, load, &all_ids,
            )
            .await?
        }
        (SlotPlan::Create | SlotPlan::Resume, _) => {
            bootstrap(
                config, state, &connector, &control, &target, &slot, load, &all_ids,
            )
            .await?
        }
    };
    state.set_slot(None, false);

    // What the checkpoint records of each table, brought up to date below and carried into
    // every checkpoint of the stream.
    let mut recorded = recorded;
    let identities: Vec<(TableId, String)> = tables
        .iter()
        .map(|t| (t.schema.id.clone(), t.oid.to_string()))
        .collect();
    let mut replaced = join::replaced_tables(&mut recorded, &identities);
    for id in &replaced {
        if load {
            tracing::warn!(table = %id, "the table's name now holds another table (a table swap, as online schema change tools do, or DROP and CREATE): it is loaded again beside the stream, and its target's rows are replaced");
        } else {
            tracing::warn!(table = %id, "the table's name now holds another table (a table swap, as online schema change tools do, or DROP and CREATE); task.mode = \"cdc\" loads no table, so its target keeps the old table's rows and gets the new table's changes from now on: run a full load of it to make it exact");
        }
    }
    if !load {
        // Nothing will load them: the new relations are what the target follows from now on.
        join::record_identities(&mut recorded, &identities);
        replaced.clear();
    }
    // A column added with a DEFAULT since the last start: its older rows' values are in the
    // catalog only, so the table is loaded again (unless the task file says otherwise).
    let unwritten_defaults = match columns_with_unwritten_defaults(&control).await {
        Ok(now) => {
            for id in added_defaults::added_since(&mut recorded, &now, &all_ids, &replaced) {
                if config.cdc.reload_on_unstreamed_change {
                    tracing::warn!(table = %id, "a column was added with a DEFAULT: PostgreSQL filled the existing rows without writing a change, so the table is loaded again beside the stream");
                    resync::request(&mut recorded, &id, start);
                } else {
                    tracing::warn!(table = %id, "a column was added with a DEFAULT: PostgreSQL filled the existing rows without writing a change, and cdc.reload_on_unstreamed_change = false: the target reads NULL for them until you run inlet resync for the table");
                }
            }
            // The poller's baseline: a column that appears later was added while streaming.
            Some(now.into_iter().collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading columns added with a DEFAULT failed; they are looked for at the next start");
            None
        }
    };
    // A table rewritten with new values since the last start (ALTER COLUMN … TYPE, a DEFAULT
    // computed per row): no change carried them, so the table is loaded again.
    let storage = match rewrites::read(&control, &all_ids).await {
        Ok(now) => {
            for (id, cause) in rewrites::rewritten_since(&mut recorded, &now, &all_ids, &replaced) {
                if config.cdc.reload_on_unstreamed_change {
                    tracing::warn!(table = %id, %cause, "the table was rewritten with new values that no change carries, so it is loaded again beside the stream");
                    resync::request(&mut recorded, &id, start);
                } else {
                    tracing::warn!(table = %id, %cause, "the table was rewritten with new values that no change carries, and cdc.reload_on_unstreamed_change = false: the target keeps the old values of the rows not changed since until you run inlet resync for the table");
                }
            }
            // The poller's baseline: a rewrite after it happened while streaming.
            Some(now.into_iter().collect())
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the tables' storage (to find rewrites) failed; rewrites are looked for at the next start");
            None
        }
    };
    // Tables to load again (`inlet resync`): like swapped ones, until a load after the request.
    resync::take_asked(task, &mut recorded, &all_ids, start);
    for id in resync::pending(&mut recorded, &all_ids) {
        if !load {
            tracing::warn!(table = %id, "a resync of the table was asked, but task.mode = \"cdc\" loads no table: dropped");
            continue;
        }
        tracing::warn!(table = %id, "resync: the table is loaded again beside the stream, its target's rows replaced; its changes from before the load are dropped, superseded by it");
        if !replaced.contains(&id) {
            replaced.push(id);
        }
    }
    if !load {
        resync::drop_requests(&mut recorded);
    }
    let (join, seen) = join_new_tables(
        config,
        state,
        &connector,
        &control,
        &target,
        &tables,
        &replaced,
        &mut recorded,
    )
    .await?;
    // The tables loading beside the stream are recorded, and watched, as their load's snapshot
    // sees them: a rewrite or a catalog-only DEFAULT committed while the load runs differs, so
    // the look after it loads the table again; one committed before the snapshot (after the
    // reads above) is in the load, and loads nothing more.
    let (mut storage, mut unwritten_defaults) = (storage, unwritten_defaults);
    if let (Some(join), Some(seen)) = (&join, seen) {
        seen.record(
            join.tables(),
            &mut recorded,
            &mut storage,
            &mut unwritten_defaults,
        );
    }
    let watched: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    // A table loading beside the stream joins it at the stream's next start, once loaded.
    let tables: Vec<SourceTable> = tables
        .into_iter()
        .filter(|t| !join.as_ref().is_some_and(|j| j.includes(&t.schema.id)))
        .collect();
    let schemas: Vec<&inlet_core::TableSchema> = tables.iter().map(|t| &t.schema).collect();
    let (outputs, committed) = stream::open_outputs(&target, &schemas, &recorded).await?;
    join::forget_loads_before(&mut recorded, start);

    let new_tables = Arc::new(AtomicBool::new(false));
    let publication_gone = Arc::new(AtomicBool::new(false));
    let watch = NewTableWatch {
        task: task.to_string(),
        reload_unstreamed: load && config.cdc.reload_on_unstreamed_change,
        connector: connector.clone(),
        publication: publication.clone(),
        selection: selection.clone(),
        policy: policy.clone(),
        known: watched.into_iter().collect(),
        identities: identities.into_iter().collect(),
        swapped: Default::default(),
        found: new_tables.clone(),
        unreadable: Default::default(),
        discovery_failed: None,
        unwritten_defaults,
        storage: storage.clone(),
    };
    let hang_up = Arc::new(std::sync::OnceLock::new());
    let poller = spawn_slot_poller(
        control,
        slot.clone(),
        state.clone(),
        config.cdc.heartbeat_interval_ms,
        watch,
        publication_gone.clone(),
        hang_up.clone(),
    );
    let _poller = AbortOnDrop(poller);

    if let Some(pid) = repl.backend_pid() {
        remember_walsender(&connector, &slot, pid);
    }
    let stream = repl
        .start_replication(&slot, &publication, Lsn(start.0))
        .await
        .map_err(|e| {
            slot_error(
                e,
                &slot,
                &publication,
                &target.checkpoint_location(task),
                resnapshot,
            )
        })?;
    // (Set once: this function makes one stream.)
    let _ = hang_up.set(stream.hang_up_handle());
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
    let capture = capture.silence_limit(Duration::from_secs(config.cdc.stream_silence_timeout_s));
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
        publication_gone,
        slot: slot.clone(),
        publication: publication.clone(),
        checkpoint: target.checkpoint_location(task),
        resnapshot,
        join,
        joined: TableStates::new(),
        task: task.to_string(),
    };
    let out = Outputs {
        tables: tables.iter().map(|t| t.schema.id.to_string()).collect(),
        outputs,
        target: &target,
        task,
        state,
        checkpoint: Checkpoint {
            position: start,
            tables: recorded,
            source: Some(SourceResume::Postgres(PostgresResume {
                slot: slot.clone(),
                created_by: None,
            })),
        },
        hold,
    };
    let end = stream::follow(source, out, start, &config.cdc, shutdown).await;
    match (end, storage) {
        (Err(e), Some(storage)) if load && config.cdc.reload_on_unstreamed_change => {
            // A rewrite's new column type can stop the stream before the poller sees the
            // rewrite (an Iceberg decimal whose scale changed cannot evolve in place): start
            // again, and the start finds the rewrite against the checkpoint and loads the
            // table again. A lasting error of another kind fails the next start as it would.
            let rewritten = match connector.connect().await {
                Ok(client) => rewrites::read(&client, &all_ids).await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let mut again = false;
            for (id, now) in rewritten {
                let Some(cause) = storage.get(&id).and_then(|was| now.rewrite_cause(was)) else {
                    continue;
                };
                tracing::warn!(table = %id, %cause, error = ?e, "the stream stopped after the table was rewritten with new values that no change carries: starting again, to load the table again beside the stream");
                again = true;
            }
            if again {
                Ok(StreamEnd::TablesChanged)
            } else {
                Err(e)
            }
        }
        (end, _) => end,
    }
}

/// The PostgreSQL change capture as the stream loop drives it.
struct PgSource {
    capture: ChangeCapture,
    /// Set by the poller when a table the selection matches appeared.
    new_tables: Arc<AtomicBool>,
    /// Set by the poller when the publication no longer exists (see [`spawn_slot_poller`]).
    publication_gone: Arc<AtomicBool>,
    slot: String,
    publication: String,
    /// Where the task checkpoint is, for the lost-slot message.
    checkpoint: String,
    resnapshot: bool,
    /// Tables loading beside the stream, and what the checkpoint records of them once loaded.
    join: Option<JoinLoad>,
    /// What the checkpoint records of tables whose load beside the stream finished.
    joined: TableStates,
    /// The task's name, whose resyncs asked through the HTTP endpoint end this stream.
    task: String,
}

impl ChangeSource for PgSource {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, JobError> {
        let in_transaction = self.capture.in_transaction();
        if !in_transaction && resync::is_asked(&self.task) {
            tracing::info!("a resync was asked: starting again from the last checkpoint to load the table beside the stream");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        if !in_transaction && self.new_tables.swap(false, Ordering::Relaxed) {
            tracing::info!("a table the selection matches appeared: re-discovering the tables once the changes before now are written");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        if self.publication_gone.load(Ordering::Relaxed) {
            return Err(publication_lost(
                &self.slot,
                &self.publication,
                &self.checkpoint,
                self.resnapshot,
            ));
        }
        let Self {
            capture,
            slot,
            publication,
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
                .map_err(|e| slot_error(e, slot, publication, checkpoint, *resnapshot))
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
    fn fill_checkpoint(&self, checkpoint: &mut Checkpoint) {
        merge_tables(&mut checkpoint.tables, &self.joined);
    }
    fn checkpoint_changed(&self) -> bool {
        !self.joined.is_empty()
    }
    fn show(&self, position: Position) -> String {
        Lsn(position.0).to_string()
    }
}

/// Creates the slot and records in the target that this task created it; with `load`, loads
/// every table inside the snapshot the slot exports. Writes the first checkpoint at the slot's
/// consistent point, naming the loaded tables. If anything fails after the slot was created,
/// the slot is dropped again (when the source still answers), so a first start that fails does
/// not leave a slot behind that pins WAL on the server.
#[allow(clippy::too_many_arguments)]
async fn bootstrap(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    control: &tokio_postgres::Client,
    target: &Target,
    slot: &str,
    load: bool,
    tables: &[TableId],
) -> Result<(ReplicationConnection, Position, TableStates), JobError> {
    let mut repl = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::source)?;
    // The cluster the slot is created in, for the slot record: a later start on another one
    // is refused, a promoted standby of this one accepted.
    let system = repl
        .identify_system()
        .await
        .map_err(JobError::source)?
        .systemid;
    let task = config.task.name.as_str();
    let database: String = control
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| JobError::failed(format!("reading current_database(): {e}")))?
        .get(0);
    // Before the slot exists, a record that this task is creating it, at the server's WAL
    // position now: a process killed between the creation and the record of it below leaves a
    // slot the next start can still prove to be this task's (`SlotRecord::creating`), instead
    // of one refused until dropped by hand.
    let wal_now: i64 = control
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                     ELSE pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::int8",
            &[],
        )
        .await
        .map_err(|e| JobError::failed(format!("reading the server's WAL position: {e}")))?
        .get(0);
    let previous = target.read_checkpoint(&record_key(task)).await?;
    let intent = SlotRecord::new(slot, task, &database, Lsn(wal_now.max(0) as u64))
        .in_system(system.clone())
        .before_creating();
    target
        .write_checkpoint(&record_key(task), &intent.to_checkpoint())
        .await?;
    let created = if load {
        repl.create_slot_exporting_snapshot(slot).await
    } else {
        repl.create_slot(slot).await
    };
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            // No slot was created: the record goes back to what it was, so an intent that came
            // to nothing never vouches for a slot of this name that something else creates.
            let back = previous
                .unwrap_or_else(|| SlotRecord::new("", task, &database, Lsn(0)).to_checkpoint());
            if let Err(w) = target.write_checkpoint(&record_key(task), &back).await {
                tracing::warn!(error = %w.message(), "restoring the slot record failed");
            }
            return Err(JobError::source(e));
        }
    };
    let filled = async {
        // Before the load: a start that finds the slot but no checkpoint knows by this record
        // that the slot is this task's.
        let record = SlotRecord::new(slot, task, &database, created.consistent_point)
            .in_system(system.clone());
        target
            .write_checkpoint(&record_key(task), &record.to_checkpoint())
            .await?;
        tracing::info!(%slot, consistent_point = %created.consistent_point, id = %record.id, "slot created");
        let mut recorded = TableStates::new();
        for id in tables {
            recorded.entry(id.to_string()).or_default().captured = true;
        }
        if let Some(snapshot) = &created.snapshot_name {
            if let Some(seen) = SeenBySnapshot::read(control, snapshot, tables).await {
                seen.record_all(tables, &mut recorded);
            }
            // The walsender connection stays idle meanwhile: its next command would end the
            // snapshot. The load holds every transaction committed before the consistent point.
            let loaded_up_to = Position(created.consistent_point.0.saturating_sub(1));
            let results =
                full_load::run(config, Some(snapshot), state, None, Some(loaded_up_to)).await?;
            let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
            tracing::info!(tables = results.len(), rows, "full load done");
        }
        let position = Position(created.consistent_point.0);
        let checkpoint = Checkpoint {
            position,
            tables: recorded,
            source: Some(SourceResume::Postgres(PostgresResume {
                slot: slot.to_string(),
                created_by: None,
            })),
        };
        target.write_checkpoint(task, &checkpoint).await?;
        Ok::<_, JobError>((position, checkpoint.tables))
    }
    .await;
    match filled {
        Ok((position, recorded)) => Ok((repl, position, recorded)),
        Err(e) => {
            drop(repl);
            let dropped = async {
                wait_slot_released(control, connector, slot).await?;
                drop_slot(control, connector, slot)
                    .await
                    .map_err(JobError::source)
            };
            match dropped.await {
                Ok(()) => {
                    tracing::warn!(%slot, "the first start failed: the slot it created is dropped again")
                }
                Err(d) => {
                    tracing::warn!(%slot, error = %d.message(), "the first start failed and the slot it created could not be dropped; the next start recreates it")
                }
            }
            Err(e)
        }
    }
}

/// The tables' storage ([`rewrites`]) and catalog-only defaults ([`added_defaults`]) as a
/// load's snapshot sees them. Recorded as the tables' state, a rewrite or a column added with a
/// DEFAULT that commits while the load runs is found by the look after the load and the table
/// loaded again: the load read the rows before it (and a table rewritten before its turn as
/// empty, table rewrites not being MVCC-safe), and the stream carries no change for them.
/// Without it the look after the load would take the new state as the loaded one; and a state
/// read before the snapshot would take a change committed in between, which the load holds, for
/// one it missed, and load the table twice.
struct SeenBySnapshot {
    storage: Vec<(TableId, rewrites::Storage)>,
    /// `None`: reading them failed (logged); the tables are then recorded as they are at the
    /// start after the load.
    defaults: Option<Vec<(TableId, String)>>,
}

impl SeenBySnapshot {
    /// Reads `tables` in `snapshot` (exported, and still valid: its exporting connection idle)
    /// on `control`. A failure to read is only logged: None.
    async fn read(
        control: &tokio_postgres::Client,
        snapshot: &str,
        tables: &[TableId],
    ) -> Option<Self> {
        let read = async {
            control
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                    snapshot.replace('\'', "''")
                ))
                .await?;
            let storage = rewrites::read(control, tables).await?;
            let defaults = columns_with_unwritten_defaults(control)
                .await
                .map_err(|e| e.to_string());
            control.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>((storage, defaults))
        };
        match read.await {
            Ok((storage, defaults)) => {
                let defaults = match defaults {
                    Ok(defaults) => Some(defaults),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the columns with catalog-only defaults in the load's snapshot failed; they are recorded at the start after the load");
                        None
                    }
                };
                Some(Self { storage, defaults })
            }
            Err(e) => {
                let _ = control.batch_execute("ROLLBACK").await;
                tracing::warn!(error = %e, "reading the tables' storage in the load's snapshot failed; it is recorded at the start after the load");
                None
            }
        }
    }

    /// Records what was read as the state of every one of `tables` (the first load: the
    /// checkpoint records nothing else).
    fn record_all(&self, tables: &[TableId], recorded: &mut TableStates) {
        rewrites::rewritten_since(recorded, &self.storage, tables, &[]);
        if let Some(defaults) = &self.defaults {
            added_defaults::added_since(recorded, defaults, tables, &[]);
        }
    }

    /// Records what was read as the state of `tables` (loading beside the stream), in the
    /// checkpoint's record and in the poller's baselines (`storage`, `defaults`); the other
    /// tables keep theirs.
    fn record(
        self,
        tables: &[TableId],
        recorded: &mut TableStates,
        storage: &mut Option<std::collections::HashMap<TableId, rewrites::Storage>>,
        defaults: &mut Option<std::collections::HashSet<(TableId, String)>>,
    ) {
        let mut seen = TableStates::new();
        rewrites::rewritten_since(&mut seen, &self.storage, tables, tables);
        if let Some(now) = &self.defaults {
            added_defaults::added_since(&mut seen, now, tables, tables);
        }
        for (name, state) in seen {
            let entry = recorded.entry(name).or_default();
            if state.storage.is_some() {
                entry.storage = state.storage;
            }
            if self.defaults.is_some() {
                entry.unwritten_defaults = state.unwritten_defaults;
            }
        }
        if let Some(baseline) = storage {
            for (id, now) in self.storage {
                if tables.contains(&id) {
                    baseline.insert(id, now);
                }
            }
        }
        if let (Some(baseline), Some(now)) = (defaults, self.defaults) {
            baseline.retain(|(id, _)| !tables.contains(id));
            baseline.extend(now.into_iter().filter(|(id, _)| tables.contains(id)));
        }
    }
}

/// Tables selected now but absent from the checkpoint (the selection grew, or the tables were
/// created since) join the task. With `full-load-and-cdc` each is loaded inside the snapshot of
/// a temporary slot created now: the snapshot holds every transaction committed before that
/// slot's consistent point C, and the stream applies to these tables only transactions
/// committed at or after C, so there is no gap and no overlap. Checkpoints written by earlier
/// versions name no tables; then every table counts as known. `replaced` tables (their name now
/// holds another relation) are loaded again the same way.
#[allow(clippy::too_many_arguments)]
async fn join_new_tables(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    control: &tokio_postgres::Client,
    target: &Target,
    tables: &[SourceTable],
    replaced: &[TableId],
    recorded: &mut TableStates,
) -> Result<(Option<JoinLoad>, Option<SeenBySnapshot>), JobError> {
    let now: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let new = stream::tables_to_load(recorded, &now, replaced);
    if new.is_empty() {
        return Ok((None, None));
    }
    let ids: Vec<TableId> = new.iter().map(|&i| tables[i].schema.id.clone()).collect();
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if config.task.mode != Mode::FullLoadAndCdc {
        tracing::info!(tables = ?names, "new tables join the task; mode cdc: their changes are captured from now on");
        for id in &ids {
            recorded.entry(id.to_string()).or_default().captured = true;
        }
        return Ok((None, None));
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
    // Read before the load starts: the snapshot lives only while the slot's connection, which
    // the load drops when done, stays idle.
    let seen = SeenBySnapshot::read(control, &snapshot, &ids).await;
    for &i in &new {
        // A join interrupted earlier may have left change files: the new load replaces them.
        target.forget_changes(&tables[i].schema).await?;
    }
    let before = Position(created.consistent_point.0.saturating_sub(1));
    let loaded: Vec<(TableId, String)> = new
        .iter()
        .map(|&i| (tables[i].schema.id.clone(), tables[i].oid.to_string()))
        .collect();
    let (config, state, only) = (config.clone(), state.beside(), ids.clone());
    let load = JoinLoad::spawn(ids, before, async move {
        full_load::run(&config, Some(&snapshot), &state, Some(&only), Some(before)).await?;
        // The temporary slot, which exported the snapshot, goes with its connection.
        drop(join);
        Ok(())
    });
    Ok((Some(load.with_identities(loaded)), seen))
}

/// The walsender each slot of this process last streamed through, by (server, slot).
fn our_walsenders() -> &'static std::sync::Mutex<std::collections::HashMap<(String, String), i32>> {
    static WALSENDERS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(String, String), i32>>,
    > = std::sync::OnceLock::new();
    WALSENDERS.get_or_init(Default::default)
}

fn remember_walsender(connector: &PgConnector, slot: &str, pid: i32) {
    if let Ok(mut map) = our_walsenders().lock() {
        map.insert((connector.server().to_string(), slot.to_string()), pid);
    }
}

/// Waits (up to 30 s) for the walsender of an earlier stream, ours, to release the slot: a stream
/// ended a moment ago, or a process killed before its connection was noticed gone. A walsender
/// this very process streamed through, on a connection it gave up as silent (a network cut the
/// server has not noticed: it would hold the slot until its wal_sender_timeout), is ended.
async fn wait_slot_released(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<(), JobError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = our_walsenders().lock().ok().and_then(|map| {
        map.get(&(connector.server().to_string(), slot.to_string()))
            .copied()
    });
    let mut ended = false;
    loop {
        let state = slot_state(control, connector, slot)
            .await
            .map_err(JobError::source)?;
        let Some(pid) = state.and_then(|s| s.active_pid) else {
            return Ok(());
        };
        if Some(pid) == ours && !ended {
            ended = true;
            match control
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await
            {
                Ok(_) => {
                    tracing::info!(%slot, pid, "the slot is held by this process's earlier walsender, on a connection given up as lost: ended it")
                }
                Err(e) => {
                    tracing::warn!(%slot, pid, error = %e, "the slot is held by this process's earlier walsender, on a connection given up as lost, and ending it failed; waiting for the server's wal_sender_timeout")
                }
            }
        }
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
    task: String,
    /// A column added with a DEFAULT, or a rewrite with new values, while the task streams asks
    /// for a reload of its table (`cdc.reload_on_unstreamed_change`).
    reload_unstreamed: bool,
    connector: PgConnector,
    publication: String,
    selection: TableSelection,
    policy: inlet_core::ValuePolicy,
    known: std::collections::HashSet<TableId>,
    /// The relation (oid) each known table was when the stream started: the same name on
    /// another relation later is a swapped-in table, which must be loaded again.
    identities: std::collections::HashMap<TableId, String>,
    /// Tables whose name came to hold another relation while this stream ran.
    swapped: std::collections::HashSet<TableId>,
    found: Arc<AtomicBool>,
    /// New tables already reported as not readable or not capturable (once each).
    unreadable: std::collections::HashSet<TableId>,
    /// The last discovery error reported, so a lasting one is logged once, not every poll.
    discovery_failed: Option<String>,
    /// Columns whose older rows read a default the server never wrote (see
    /// [`columns_with_unwritten_defaults`]), as of the first poll: one that appears later was
    /// added while the task streamed.
    unwritten_defaults: Option<std::collections::HashSet<(TableId, String)>>,
    /// Each known table's storage (see [`rewrites`]) as of the last poll: a rewrite with new
    /// values after it happened while the task streamed.
    storage: Option<std::collections::HashMap<TableId, rewrites::Storage>>,
}

impl NewTableWatch {
    async fn check(&mut self, client: &tokio_postgres::Client) {
        // Tables first: a swapped-in table's columns are not columns added to the old one.
        self.check_tables(client).await;
        self.check_unwritten_defaults(client).await;
        self.check_rewrites(client).await;
    }

    async fn check_tables(&mut self, client: &tokio_postgres::Client) {
        match discover(client, &self.connector, &self.selection, &self.policy).await {
            Ok(tables) => {
                self.discovery_failed = None;
                // A captured table that is gone: dropped, or renamed out of the selection (a
                // rename within it shows at the table's next change). Its target keeps it as
                // it was at its last change.
                let present: std::collections::HashSet<&TableId> =
                    tables.iter().map(|t| &t.schema.id).collect();
                let gone: Vec<TableId> = self
                    .known
                    .iter()
                    .filter(|id| !present.contains(id))
                    .cloned()
                    .collect();
                for id in gone {
                    tracing::warn!(table = %id, "a captured table is no longer in the source (dropped, or renamed out of [tables]); its target keeps the table as it was at its last change");
                    self.known.remove(&id);
                }
                for t in &tables {
                    let id = &t.schema.id;
                    let oid = t.oid.to_string();
                    if self.identities.get(id).is_some_and(|was| *was != oid) {
                        tracing::info!(table = %id, "a captured table's name now holds another table (a table swap, or DROP and CREATE): re-discovering the tables once the changes before now are written");
                        self.identities.insert(id.clone(), oid);
                        self.swapped.insert(id.clone());
                        self.found.store(true, Ordering::Relaxed);
                    }
                }
                let new: Vec<SourceTable> = tables
                    .into_iter()
                    .filter(|t| !self.known.contains(&t.schema.id))
                    .collect();
                // Adding a table without replica identity to the publication would make the
                // application's UPDATEs and DELETEs of it fail: it does not join.
                let no_identity = match publication_plan(
                    client,
                    &self.connector,
                    &self.publication,
                    &new,
                )
                .await
                {
                    Ok(plan) => plan.no_identity,
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the new tables' replica identity failed");
                        return;
                    }
                };
                for t in &new {
                    if let Some(n) = no_identity.iter().find(|n| n.table == t.schema.id) {
                        if self.unreadable.insert(t.schema.id.clone()) {
                            tracing::warn!(table = %t.schema.id, fix = %n.fix(), "a new table matches the selection but has no primary key or other replica identity: adding it to the publication would make every UPDATE and DELETE of it fail, so it is not captured; make it capturable, or exclude it (the next start of the task refuses it until then)");
                        }
                    } else if t.can_select {
                        tracing::debug!(table = %t.schema.id, "a new table matches the selection");
                        self.found.store(true, Ordering::Relaxed);
                    } else if self.unreadable.insert(t.schema.id.clone()) {
                        // Joining it now would stop the task on the missing privilege; the
                        // others stream on, and the next start says what to grant.
                        tracing::warn!(table = %t.schema.id, "a new table matches the selection but inlet may not SELECT it; GRANT SELECT for it to join");
                    }
                }
            }
            Err(e) => {
                // A lasting error (e.g. an exclude_columns entry whose table was dropped) would
                // otherwise keep new tables from joining without a word.
                let message = e.to_string();
                if self.discovery_failed.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "looking for new tables failed; tables created or selected from now on join once it succeeds");
                    self.discovery_failed = Some(message);
                }
            }
        }
    }
}

impl NewTableWatch {
    /// Warns once per column when `ALTER TABLE … ADD COLUMN … DEFAULT x` ran on a captured
    /// table while the task streamed: the target holds NULL for the rows from before it, where
    /// the source reads x (PostgreSQL filled them without writing a change).
    async fn check_unwritten_defaults(&mut self, client: &tokio_postgres::Client) {
        let Ok(columns) = columns_with_unwritten_defaults(client).await else {
            return;
        };
        let now: std::collections::HashSet<(TableId, String)> = columns
            .into_iter()
            .filter(|(t, _)| self.known.contains(t) && !self.swapped.contains(t))
            .collect();
        let Some(seen) = &mut self.unwritten_defaults else {
            self.unwritten_defaults = Some(now);
            return;
        };
        for (table, column) in now {
            if !seen.insert((table.clone(), column.clone())) {
                continue;
            }
            if self.reload_unstreamed {
                tracing::warn!(table = %table, %column, "a column was added with a DEFAULT while the task streamed: PostgreSQL filled the existing rows without writing a change, so the table is loaded again beside the stream");
                resync::ask(&self.task, &table.to_string());
            } else {
                tracing::warn!(table = %table, %column, "a column was added with a DEFAULT while the task streamed: the rows that existed before read the default in the source but NULL in the target, since PostgreSQL filled them without writing a change; run inlet resync for the table to carry them");
            }
        }
    }
}

impl NewTableWatch {
    /// Warns once per rewrite of a captured table that changed values without writing a change
    /// (ALTER COLUMN … TYPE, a DEFAULT computed per row) while the task streamed, and asks for
    /// a reload of the table: the target keeps the old values of every row not changed since.
    async fn check_rewrites(&mut self, client: &tokio_postgres::Client) {
        let tables: Vec<TableId> = self
            .known
            .iter()
            .filter(|t| !self.swapped.contains(*t))
            .cloned()
            .collect();
        let Ok(now) = rewrites::read(client, &tables).await else {
            return;
        };
        let Some(seen) = &mut self.storage else {
            self.storage = Some(now.into_iter().collect());
            return;
        };
        for (table, storage) in now {
            let cause = seen.get(&table).and_then(|was| storage.rewrite_cause(was));
            seen.insert(table.clone(), storage);
            let Some(cause) = cause else {
                continue;
            };
            if self.reload_unstreamed {
                tracing::warn!(table = %table, %cause, "the table was rewritten with new values that no change carries while the task streamed, so it is loaded again beside the stream");
                resync::ask(&self.task, &table.to_string());
            } else {
                tracing::warn!(table = %table, %cause, "the table was rewritten with new values that no change carries while the task streamed, and the task does not reload tables (cdc.reload_on_unstreamed_change = false, or task.mode = \"cdc\"): the target keeps the old values of the rows not changed since until you run inlet resync for the table");
            }
        }
    }
}

/// How often the poller looks whether the server ended its session.
const SESSION_CHECK: Duration = Duration::from_millis(100);

/// Reads the slot's retained WAL for the metrics every [`SLOT_POLL`], looks for tables that
/// should join, sets `publication_gone` once the publication no longer exists, and writes
/// heartbeats into the source's WAL when configured.
///
/// When the server ends the poller's session, hangs the change stream up (`hang_up`, once the
/// stream exists): a fast shutdown (pg_ctl's default) ends ordinary sessions first, then waits
/// until the task has confirmed every bit of WAL sent, which takes as long as the task is
/// behind or busy writing the target (over 60 s in a 10-minute soak into Iceberg). Hanging up,
/// the task is not waited for; it starts again from its checkpoint, losing nothing. A session
/// ended for another reason (pg_terminate_backend) restarts the task the same way, with a new
/// session.
fn spawn_slot_poller(
    client: tokio_postgres::Client,
    slot: String,
    state: TaskState,
    heartbeat_ms: u64,
    mut watch: NewTableWatch,
    publication_gone: Arc<AtomicBool>,
    hang_up: Arc<std::sync::OnceLock<inlet_postgres::StreamHangUp>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let heartbeat = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
        let every = heartbeat.map_or(SLOT_POLL, |h| h.min(SLOT_POLL));
        let mut last_poll: Option<Instant> = None;
        let session_ended = || async {
            while !client.is_closed() {
                tokio::time::sleep(SESSION_CHECK).await;
            }
            tracing::info!("the server ended inlet's session (a shutdown, a restart, or pg_terminate_backend): ending the change stream, to start again from the checkpoint");
            loop {
                if let Some(stream) = hang_up.get() {
                    stream.hang_up();
                    return;
                }
                tokio::time::sleep(SESSION_CHECK).await;
            }
        };
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
                // Up to 17 a dropped publication fails the stream at the next change. From 18
                // on the server streams on, skipping the publication it cannot find with only
                // a WARNING: every change since the drop would be left out without a word (and
                // confirmed), so the task is stopped here as the error would stop it.
                match client
                    .query_opt(
                        "SELECT 1 FROM pg_publication WHERE pubname = $1",
                        &[&watch.publication],
                    )
                    .await
                {
                    Ok(None) => publication_gone.store(true, Ordering::Relaxed),
                    Ok(Some(_)) => {}
                    Err(e) => tracing::debug!(error = %e, "reading pg_publication failed"),
                }
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
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = session_ended() => return,
            }
        }
    })
}

/// The task's publication was dropped while it streamed: the slot cannot go on (see
/// [`publication_lost_reason`]); with `resnapshot`, `run` loads again through a new slot.
fn publication_lost(slot: &str, publication: &str, checkpoint: &str, resnapshot: bool) -> JobError {
    let reason = publication_lost_reason(publication, slot);
    if resnapshot {
        // `run` takes this kind as "resnapshot now", whatever the start then finds.
        JobError::Transient {
            kind: PUBLICATION_LOST,
            message: reason,
        }
    } else {
        JobError::Failed(format!(
            "{reason}. To load every table again: drop the slot \
             (SELECT pg_drop_replication_slot('{slot}')) and delete the task checkpoint \
             ({checkpoint}), then run the task again (inlet creates the publication anew); \
             or set cdc.on_slot_lost = \"resnapshot\" to do this automatically"
        ))
    }
}

/// A slot dropped while streaming gets the same clear message as at start-up (or, with
/// `on_slot_lost = "resnapshot"`, a restart that resnapshots); so does a dropped publication.
/// The connector tells which error is which; others are classified by it.
fn slot_error(
    e: inlet_postgres::PgError,
    slot: &str,
    publication: &str,
    checkpoint: &str,
    resnapshot: bool,
) -> JobError {
    if e.is_publication_missing() {
        return publication_lost(slot, publication, checkpoint, resnapshot);
    }
    if e.is_slot_missing() {
        let message = format!(
            "replication slot {slot:?} was dropped while the task used it: changes since the last \
             checkpoint may be lost. inlet never recreates a slot silently; delete the task \
             checkpoint ({checkpoint}) and run the task again for a new full load, or set \
             cdc.on_slot_lost = \"resnapshot\""
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
    // An update whose unchanged TOASTed value the server did not send cannot be completed,
    // now or at any restart: say how to get past it (see `resync`).
    if let Some(table) = e.incomplete_change_table() {
        return JobError::Failed(format!("{e}{}", resync::hint(table)));
    }
    JobError::source(e)
}
