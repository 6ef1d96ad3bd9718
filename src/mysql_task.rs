//! A task whose source is MySQL or MariaDB: the full load inside one consistent snapshot at a
//! known binlog position, then the binlog from exactly that position, through the same stream
//! loop and targets as PostgreSQL. The binlog position and GTID set live in the task checkpoint.

use inlet_core::{
    merge_tables, CaptureEvent, CheckStatus, Checkpoint, MysqlResume, Position, SourceResume,
    TableChanges, TableId, TableSelection, TableStates,
};
use inlet_mysql::{
    discover, plan_resume, prerequisites, BatchLimits, BinlogCapture, BinlogPosition,
    CaptureOptions, ConsistentSnapshot, Flavor, MysqlConnector, MysqlError, MysqlLoadSource,
    MysqlSourceConfig, MysqlTable, ResumePlan,
};
use tokio::sync::watch;

use crate::config::{Mode, TaskConfig};
use crate::join::{self, JoinLoad};
use crate::load_pool::{LoadEnd, LoadPool};
use crate::resync;
use crate::sink::Target;
use crate::state::{Phase, TaskState};
use crate::stream::{self, ChangeSource, Outputs, StreamEnd};
use crate::JobError;

/// A MySQL error as the connector classifies it; a change it says cannot be completed (a row
/// image that lacks columns) adds how to get past it (see `resync`).
pub fn mysql_error(e: MysqlError) -> JobError {
    if let Some(table) = e.incomplete_change_table() {
        return JobError::Failed(format!("{e}{}", resync::hint(table)));
    }
    JobError::source(e)
}

/// Full load (mode `full-load`), or full load and/or binlog capture until `shutdown`.
pub async fn run(
    config: &TaskConfig,
    source: &MysqlSourceConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    loop {
        match run_once(config, source, state, shutdown.clone()).await? {
            StreamEnd::Shutdown => return Ok(()),
            // A DDL statement changed the tables: everything before it is durable; discover
            // the tables again (joining ones are loaded) and go on from the checkpoint.
            StreamEnd::TablesChanged => state.set_phase(Phase::Starting),
        }
    }
}

/// One discovery of the tables, then the full load and/or the binlog until shutdown or until
/// a DDL statement changes which tables are captured.
async fn run_once(
    config: &TaskConfig,
    source: &MysqlSourceConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<StreamEnd, JobError> {
    let connector = MysqlConnector::new(source).map_err(JobError::config)?;
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?.with_values(config.values.policy());
    let server_id = source.server_id(task);
    let policy = config.values.policy();
    target.check().await?;

    let mut conn = connector.connect().await.map_err(mysql_error)?;
    let tables = discover(&mut conn, &connector, &selection, &policy)
        .await
        .map_err(mysql_error)?;
    let capture = config.task.mode != Mode::FullLoad;
    // A running task whose tables are all gone for now (DROP and CREATE of its only table, the
    // stream started again between them) follows the binlog until one is created or renamed
    // into [tables]; only a task that has not started has nothing to do.
    let running = capture && tables.is_empty() && target.read_checkpoint(task).await?.is_some();
    if tables.is_empty() && !running {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    if running {
        tracing::warn!("no table of [tables] exists in the source now (dropped or renamed away): following the binlog until one is created or renamed into the selection");
    }
    for p in prerequisites(&mut conn, &connector, &tables, capture, server_id)
        .await
        .map_err(mysql_error)?
    {
        match p.status {
            // A replica with our id is usually this task's own earlier run (killed, its dump
            // thread not yet reaped): the server disconnects the old one when we register. A
            // genuinely shared id shows in the log, and `inlet check` reports it.
            CheckStatus::Missing if p.name == "server_id" => {
                tracing::warn!(detail = %p.detail, fix = ?p.fix, "server_id already registered (an earlier run of this task?)")
            }
            CheckStatus::Missing if p.name == "table selection" && running => {}
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
    // Binlog positions belong to one server: the checkpoint names it, so that a resume on
    // another one (a failover) goes by GTID rather than misread the other server's positions.
    let source_id = Flavor::server_id(&mut conn, &connector)
        .await
        .map_err(mysql_error)?;
    let flavor = Flavor::detect(&mut conn, &connector)
        .await
        .map_err(mysql_error)?;
    drop(conn);

    if !capture {
        let snapshot = ConsistentSnapshot::open(&connector, config.full_load.worker_count())
            .await
            .map_err(mysql_error)?;
        load(
            config,
            state,
            &target,
            &tables,
            snapshot,
            None,
            Some(shutdown.clone()),
            false,
        )
        .await?;
        return Ok(StreamEnd::Shutdown);
    }

    let checkpoint = target.read_checkpoint(task).await?;
    // Set when the checkpoint is another server's: (its server_id, the GTID set resumed from).
    let mut failover: Option<(u64, String)> = None;
    // The checkpoint's own resume facts and swaps, which stay with its position while it is
    // held.
    let mut checkpoint_held = Held::default();
    let (start, position, known, epoch, gtid_at_start) = match checkpoint {
        Some(cp) => {
            let resume = cp
                .source
                .as_ref()
                .and_then(SourceResume::mysql)
                .cloned()
                .unwrap_or_default();
            // The swaps come from the capture at each flush (or from `checkpoint_held`).
            let mut known = cp.tables.clone();
            for state in known.values_mut() {
                state.replaced_at = None;
            }
            checkpoint_held = Held {
                resume: resume.clone(),
                replaced: cp.tables,
            };
            let plan = plan_resume(&resume, cp.position, source_id, flavor)
                .map_err(|r| JobError::Failed(r.message(&target.checkpoint_location(task))))?;
            let epoch = plan.epoch();
            let start = plan.start();
            match plan {
                ResumePlan::Position { from, gtid_set, .. } => {
                    tracing::info!(file = %from.file, offset = from.offset, "resuming from the task checkpoint");
                    (start, cp.position, known, epoch, gtid_set)
                }
                ResumePlan::Failover { was, gtid_set, .. } => {
                    tracing::warn!(was, now = source_id, gtid = %gtid_set, "the source is not the server the checkpoint was written on (a failover?): resuming at the checkpoint's GTID set");
                    failover = Some((was, gtid_set));
                    (start, cp.position, known, epoch, None)
                }
            }
        }
        None => {
            let load_tables = config.task.mode == Mode::FullLoadAndCdc;
            let workers = if load_tables {
                config.full_load.worker_count()
            } else {
                1
            };
            let snapshot = ConsistentSnapshot::open(&connector, workers)
                .await
                .map_err(mysql_error)?;
            let point = snapshot.point.clone();
            let position = point.binlog.to_position(0).map_err(mysql_error)?;
            tracing::info!(file = %point.binlog.file, offset = point.binlog.offset, "snapshot at this binlog position");
            if load_tables {
                // The load holds every transaction that ended at or before the position.
                load(
                    config,
                    state,
                    &target,
                    &tables,
                    snapshot,
                    Some(position),
                    Some(shutdown.clone()),
                    false,
                )
                .await?;
            } else {
                drop(snapshot);
            }
            let mut known = TableStates::new();
            for t in &tables {
                known.entry(t.schema.id.to_string()).or_default().captured = true;
            }
            let resume = MysqlResume {
                binlog_file: Some(point.binlog.file.clone()),
                gtid_set: point.gtid.clone(),
                flavor: Some(point.flavor.as_str().to_string()),
                server_id: Some(source_id),
                xa_prepared_from: None,
            };
            checkpoint_held.resume = resume.clone();
            let first = Checkpoint {
                position,
                tables: known.clone(),
                source: Some(SourceResume::Mysql(resume)),
            };
            target.write_checkpoint(task, &first).await?;
            (point.start(), position, known, 0, point.gtid.clone())
        }
    };
    let mut known = known;
    // Names the binlog showed coming to hold another table (a table swap) since their last
    // load: the target holds the old table's rows, so they are loaded again like joining ones.
    let ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let mut recorded = known.clone();
    merge_tables(&mut recorded, &checkpoint_held.replaced);
    let mut replaced = join::replaced_since_load(&recorded, &ids);
    for id in &replaced {
        if config.task.mode == Mode::FullLoadAndCdc {
            tracing::warn!(table = %id, "the table's rows changed without row events (its name holds another table after a swap as gh-ost and pt-online-schema-change do, or DROP and CREATE; or a statement rewrote them: partition DDL, ADD COLUMN with a value, MODIFY; the capture logged which): it is loaded again beside the stream, and its target's rows are replaced");
        } else {
            tracing::warn!(table = %id, "the table's rows changed without row events (a table swap, DROP and CREATE, or a statement that rewrote them; the capture logged which); task.mode = \"cdc\" loads no table, so its target keeps the rows it had and gets the changes from now on: run a full load of it to make it exact");
        }
    }
    if config.task.mode != Mode::FullLoadAndCdc {
        replaced.clear();
    }
    // Tables to load again (`inlet resync`): like swapped ones, until a load after the request.
    resync::take_asked(task, &mut known, &ids, position);
    for id in resync::pending(&mut known, &ids) {
        if config.task.mode != Mode::FullLoadAndCdc {
            tracing::warn!(table = %id, "a resync of the table was asked, but task.mode = \"cdc\" loads no table: dropped");
            resync::drop_requests(&mut known);
            continue;
        }
        tracing::warn!(table = %id, "resync: the table is loaded again beside the stream, its target's rows replaced; its changes from before the load are dropped, superseded by it");
        if !replaced.contains(&id) {
            replaced.push(id);
        }
    }
    let join = join_new_tables(
        config, state, &connector, &target, &tables, &replaced, &mut known, epoch,
    )
    .await?;
    // A table loading beside the stream joins it at the stream's next start, once loaded.
    let tables: Vec<MysqlTable> = tables
        .into_iter()
        .filter(|t| !join.as_ref().is_some_and(|j| j.includes(&t.schema.id)))
        .collect();

    let schemas: Vec<&inlet_core::TableSchema> = tables.iter().map(|t| &t.schema).collect();
    let (outputs, committed) = stream::open_outputs(&target, &schemas, &known).await?;
    // Loads beside earlier streams, which hold the swaps the binlog shows before them.
    let loaded = known.clone();
    join::forget_loads_before(&mut known, position);
    if let Some((was, _)) = &failover {
        // A table written past the checkpoint holds transactions that only the old server's
        // positions identify; by GTID they would be applied to it again.
        for (t, c) in tables.iter().zip(&committed) {
            if c.is_some_and(|c| c > position) {
                return Err(JobError::Failed(format!(
                    "{}: its target holds changes past the task checkpoint ({}), written by a run \
                     that stopped before checkpointing them; on another server they cannot be \
                     told apart by GTID. Point source.url at the server with server_id {was} \
                     for one run so the checkpoint catches up, then switch; or delete the \
                     checkpoint to run a new full load",
                    t.schema.id,
                    target.checkpoint_location(task)
                )));
            }
        }
    }
    let options = CaptureOptions {
        selection,
        policy,
        schema_changes: config.cdc.schema_changes,
        part_rows: config.cdc.part_rows,
        position_epoch: epoch,
        gtid_at_start,
    };
    let by_gtid = failover.map(|(_, set)| set);
    let capture = BinlogCapture::start(&connector, server_id, &start, &tables, &committed, options)
        .await
        .map_err(|e| missing_binlog(e, &target.checkpoint_location(task), by_gtid.as_deref()))?;
    tracing::info!(tables = tables.len(), server_id, "streaming the binlog");
    state.set_tables(
        tables
            .iter()
            .map(|t| (t.schema.id.to_string(), None))
            .collect(),
    );
    state.set_phase(Phase::Streaming);
    state.set_connected(true);
    // While a table loads beside the stream the checkpoint stays at `position`: once loaded,
    // the stream starts again from there for it (the other tables skip what they hold).
    let hold = join.as_ref().map(|_| position);
    let source = MysqlSource {
        capture,
        checkpoint: target.checkpoint_location(task),
        by_gtid,
        server_id: source_id,
        held: join.as_ref().map(|_| checkpoint_held),
        loaded,
        join,
        joined: TableStates::new(),
        task: task.to_string(),
    };
    state.durable(source.show(position));
    // The source's own facts (binlog file, GTID set, flavor, server) and the swaps come from
    // the capture at each flush; the loop carries the tables the task has.
    let out = Outputs {
        tables: tables.iter().map(|t| t.schema.id.to_string()).collect(),
        outputs,
        target: &target,
        task,
        state,
        checkpoint: Checkpoint {
            position,
            tables: known,
            source: None,
        },
        hold,
    };
    stream::follow(source, out, position, &config.cdc, shutdown).await
}

/// Tables selected now but absent from the checkpoint (the selection grew, a table was created
/// or renamed into it) join the task. With `full-load-and-cdc` they are loaded in a consistent
/// snapshot taken now, at binlog position P, and the stream (which resumes at the older
/// checkpoint) applies to them only transactions that start at or after P: no gap, no overlap.
/// Tables in the checkpoint the source no longer has (dropped, renamed away, deselected) leave
/// it; their targets keep the rows they had. Checkpoints of earlier versions name no tables;
/// then every table counts as known. `replaced` tables (their name now holds another table) are
/// loaded again the same way, their targets' rows replaced.
#[allow(clippy::too_many_arguments)]
async fn join_new_tables(
    config: &TaskConfig,
    state: &TaskState,
    connector: &MysqlConnector,
    target: &Target,
    tables: &[MysqlTable],
    replaced: &[TableId],
    known: &mut TableStates,
    epoch: u8,
) -> Result<Option<JoinLoad>, JobError> {
    let ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let new = stream::tables_to_load(known, &ids, replaced);
    if new.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = new
        .iter()
        .map(|&i| tables[i].schema.id.to_string())
        .collect();
    if config.task.mode != Mode::FullLoadAndCdc {
        tracing::info!(tables = ?names, "new tables join the task; mode cdc: their changes are captured from the checkpoint on");
        for &i in &new {
            known.entry(ids[i].to_string()).or_default().captured = true;
        }
        return Ok(None);
    }
    tracing::info!(tables = ?names, "new tables join the task: loading them beside the stream");
    let snapshot = ConsistentSnapshot::open(connector, config.full_load.worker_count())
        .await
        .map_err(mysql_error)?;
    let at = snapshot
        .point
        .binlog
        .to_position(epoch)
        .map_err(mysql_error)?;
    let subset: Vec<MysqlTable> = new.iter().map(|&i| tables[i].clone()).collect();
    for t in &subset {
        // A join interrupted earlier may have left change files: the new load replaces them.
        target.forget_changes(&t.schema).await?;
    }
    let joining: Vec<TableId> = subset.iter().map(|t| t.schema.id.clone()).collect();
    let (config, state) = (config.clone(), state.beside());
    Ok(Some(JoinLoad::spawn(joining, at, async move {
        let target =
            Target::new(&config.target, &config.task.name)?.with_values(config.values.policy());
        // A joining table may be gone already (gh-ost drops the table it swapped out a moment
        // after the swap): it is skipped, not a failure.
        load(
            &config,
            &state,
            &target,
            &subset,
            snapshot,
            Some(at),
            None,
            true,
        )
        .await
    })))
}

/// A capture that could not start: the connector tells a binlog the server cannot send from
/// where the task resumes ([`inlet_mysql::missing_binlog`]), which stops the task saying how to
/// start over; any other error is classified as usual.
fn missing_binlog(e: MysqlError, checkpoint: &str, by_gtid: Option<&str>) -> JobError {
    match inlet_mysql::missing_binlog(&e, by_gtid) {
        Some(missing) => JobError::Failed(missing.message(&e.to_string(), checkpoint)),
        None => mysql_error(e),
    }
}

/// What a checkpoint held at its position (while tables load beside the stream) keeps of the
/// checkpoint read at the start: its resume facts, and the swaps it recorded (`replaced_at`).
#[derive(Default)]
struct Held {
    resume: MysqlResume,
    replaced: TableStates,
}

/// The binlog capture as the stream loop drives it.
struct MysqlSource {
    capture: BinlogCapture,
    checkpoint: String,
    /// The GTID set the stream started from, when it resumed on another server.
    by_gtid: Option<String>,
    /// The `@@server_id` of the server the stream reads, recorded in every checkpoint.
    server_id: u64,
    /// Tables loading beside the stream.
    join: Option<JoinLoad>,
    /// What the checkpoint records of tables whose load beside the stream finished.
    joined: TableStates,
    /// While a join holds the checkpoint at its position, what goes with that position.
    held: Option<Held>,
    /// The checkpoint's loads beside earlier streams (`loaded_at`).
    loaded: TableStates,
    /// The task's name, whose resyncs asked through the HTTP endpoint end this stream.
    task: String,
}

impl ChangeSource for MysqlSource {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, JobError> {
        let in_transaction = self.capture.in_transaction();
        if !in_transaction && resync::is_asked(&self.task) {
            tracing::info!("a resync was asked: starting again from the last checkpoint to load the table beside the stream");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        let Self {
            capture,
            checkpoint,
            by_gtid,
            join,
            joined,
            ..
        } = self;
        let next = async {
            capture
                .next()
                .await
                .map_err(|e| missing_binlog(e, checkpoint, by_gtid.as_deref()))
        };
        join::next_or_joined(join, joined, in_transaction, next).await
    }
    fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, JobError> {
        self.capture.take(table).map_err(mysql_error)
    }
    fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, JobError> {
        self.capture.take_part(table).map_err(mysql_error)
    }
    async fn acknowledge(&mut self, position: Position) -> Result<(), JobError> {
        self.capture
            .acknowledge(position)
            .await
            .map_err(mysql_error)
    }
    async fn finish(self) -> Result<(), JobError> {
        self.capture.finish().await.map_err(mysql_error)
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
        let mut resume = match &self.held {
            Some(held) => {
                for (name, state) in &held.replaced {
                    if let Some(at) = state.replaced_at {
                        let recorded = checkpoint.table(name);
                        recorded.replaced_at = recorded.replaced_at.max(Some(at));
                    }
                }
                held.resume.clone()
            }
            None => {
                // A swap stays in the checkpoint until the next start loads the table again,
                // unless a load that began after it (read again from an older checkpoint)
                // holds the new table already.
                for (id, at) in self.capture.replaced_tables() {
                    if join::replaced_after_load(&self.loaded, id, *at) {
                        join::record_replaced(&mut checkpoint.tables, id, *at);
                    }
                }
                self.capture.resume()
            }
        };
        resume.server_id = Some(self.server_id);
        checkpoint.source = Some(SourceResume::Mysql(resume));
        merge_tables(&mut checkpoint.tables, &self.joined);
    }
    fn checkpoint_changed(&self) -> bool {
        !self.joined.is_empty()
    }
    fn show(&self, position: Position) -> String {
        let file = self.capture.resume().binlog_file.unwrap_or_default();
        let at = BinlogPosition::from_position(position, &file);
        format!("{}:{}", at.file, at.offset)
    }
}

/// Loads every table through the snapshot's connections in the load pool
/// ([`crate::load_pool`]), in primary-key ranges. `position`: the binlog position the snapshot
/// is consistent with (then the load is all or nothing). `stop`: turns true on a signal.
/// `skip_gone`: a table the server says does not exist (dropped or renamed away since it was
/// discovered) is skipped, its LOAD files of this run deleted, its target keeping what it had,
/// instead of failing the load.
#[allow(clippy::too_many_arguments)]
async fn load(
    config: &TaskConfig,
    state: &TaskState,
    target: &Target,
    tables: &[MysqlTable],
    snapshot: ConsistentSnapshot,
    position: Option<Position>,
    mut stop: Option<watch::Receiver<bool>>,
    skip_gone: bool,
) -> Result<(), JobError> {
    let fl = &config.full_load;
    let limits = BatchLimits {
        rows: fl.batch_rows,
        bytes: fl.batch_mb << 20,
    };
    let source = MysqlLoadSource::new(snapshot, tables.to_vec(), fl.chunk_mb, limits);
    let pool = LoadPool {
        target,
        state,
        workers: fl.worker_count(),
        position,
        skip_gone,
    };
    let results = pool
        .run(source, stopped(&mut stop))
        .await
        .map_err(LoadEnd::into_error)?;
    let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
    tracing::info!(tables = tables.len(), rows, "full load done");
    Ok(())
}

/// Completes when `stop` turns true; never without one (or once its sender is gone).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = stop {
        if rx.wait_for(|s| *s).await.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_changed_under_the_snapshot_is_retried() {
        let query = |reason: &str| MysqlError::Query {
            server: "db:3306".into(),
            what: "reading app._t_gho".into(),
            reason: reason.into(),
        };
        let changed =
            query("ERROR 1412 (HY000): Table definition has changed, please retry transaction");
        assert!(matches!(
            mysql_error(changed),
            JobError::Transient { kind: "source", .. }
        ));
        let denied = query("ERROR 1142 (42000): SELECT command denied to user");
        assert!(matches!(mysql_error(denied), JobError::Failed(_)));
    }
}
