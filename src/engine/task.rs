//! A task's run, whatever its source: discover the tables, check the prerequisites, begin the
//! change capture where the source says (the checkpoint, or a new snapshot loaded first),
//! load what must be loaded beside the stream, then follow the stream until shutdown or until
//! the source's tables change, and start again from the checkpoint.

use inlet_core::source::{Begin, Capture, CaptureStart, Source, SourceTable};
use inlet_core::{AtStart, CheckStatus, Checkpoint, Prerequisite, TableId};
use tokio::sync::watch;

use crate::config::{Mode, TaskConfig};
use crate::sink::Target;
use crate::state::{Phase, TaskState};
use crate::stream::{self, Outputs, StreamEnd};
use crate::{join, resync, JobError};

use super::STARTS_OVER;

/// Runs the task until `shutdown` turns true (then flushes, acknowledges and returns Ok), a
/// full load ends, or an error.
pub async fn run<S: Source>(
    mut source: S,
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    if config.task.mode == Mode::FullLoad {
        let mut stop = shutdown;
        let stopped = async move {
            if stop.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        return super::load::full_load(source, config, state, stopped)
            .await
            .map(|_| ())
            .map_err(crate::load_pool::LoadEnd::into_error);
    }
    loop {
        match run_once(&mut source, config, state, shutdown.clone()).await {
            Ok(StreamEnd::Shutdown) => return Ok(()),
            // The source's tables changed (a DDL statement, a renamed or new table, a load
            // beside the stream done): everything before it is durable; discover the tables
            // again (joining ones are loaded) and go on from the checkpoint.
            Ok(StreamEnd::TablesChanged) => state.set_phase(Phase::Starting),
            // The initial load read `full_load.snapshot_minutes` in one snapshot: it goes on in
            // a new one, keeping the chunks done.
            Ok(StreamEnd::SnapshotRenewed) => state.set_phase(Phase::Starting),
            // The source cannot go on from the checkpoint (it said why), and starts over with
            // a new snapshot.
            Err(JobError::Transient { kind, message }) if kind == STARTS_OVER => {
                tracing::warn!("{message}; cdc.on_slot_lost = \"resnapshot\": starting again");
                // Counted like the runner counts the restarts it makes after an error.
                state.error(STARTS_OVER);
                state.retry(STARTS_OVER);
                state.set_phase(Phase::Starting);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The error of a task whose selection matches no table.
pub fn no_table() -> JobError {
    JobError::Failed(
        "no table matches [tables] include/exclude; run `inlet check` to see what the source has"
            .into(),
    )
}

/// Stops the task on a missing prerequisite, as the connector says it should
/// ([`Prerequisite::at_start`]); logs the others. `resumed`: the task has a checkpoint.
pub fn check_prerequisites(
    prerequisites: Vec<Prerequisite>,
    resumed: bool,
) -> Result<(), JobError> {
    for p in prerequisites {
        match (p.status, p.at_start) {
            (CheckStatus::Missing, AtStart::Warn) => {
                tracing::warn!(check = %p.name, detail = %p.detail, fix = p.fix.as_deref().unwrap_or("-"), "prerequisite missing; starting anyway")
            }
            (CheckStatus::Missing, AtStart::RefuseFirstStart) if resumed => {}
            (CheckStatus::Missing, _) => {
                return Err(JobError::Failed(match p.fix {
                    Some(fix) => format!("{}: {}; fix: {fix}", p.name, p.detail),
                    None => format!("{}: {}", p.name, p.detail),
                }))
            }
            (CheckStatus::Warning, _) => {
                tracing::warn!(check = %p.name, detail = %p.detail, fix = p.fix.as_deref().unwrap_or("-"), "prerequisite")
            }
            (CheckStatus::Ok, _) => {}
        }
    }
    Ok(())
}

/// One discovery of the tables, then the change stream until shutdown or until the source's
/// tables change.
async fn run_once<S: Source>(
    source: &mut S,
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<StreamEnd, JobError> {
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?.with_values(config.values.policy());
    target.check().await?;
    let tables = source.discover().await.map_err(JobError::from_source)?;
    let checkpoint = target.read_checkpoint(task).await?;
    // A running task whose tables are all gone for now may follow its stream until one is
    // created or renamed into [tables]; only a task that has not started has nothing to do.
    let running = tables.is_empty() && checkpoint.is_some() && source.follows_without_tables();
    if tables.is_empty() && !running {
        return Err(no_table());
    }
    if running {
        tracing::warn!("no table of [tables] exists in the source now (dropped or renamed away): following the change stream until one is created or renamed into the selection");
    }
    let prerequisites = source
        .prerequisites(&tables, true)
        .await
        .map_err(JobError::from_source)?;
    check_prerequisites(prerequisites, checkpoint.is_some())?;

    let begin = source
        .begin(&target, checkpoint, &tables)
        .await
        .map_err(JobError::from_source)?;
    let (start, mut recorded) = match begin {
        Begin::Resume(cp) => (cp.position, cp.tables),
        Begin::Fresh {
            snapshot,
            loaded_up_to,
            resume_from,
            mut first,
            forget_changes,
        } => {
            let initial = super::load::InitialLoad {
                target: &target,
                tables: &tables,
                snapshot,
                loaded_up_to,
                resume_from,
                forget_changes,
            };
            match initial
                .run(source, config, state, &mut first, &shutdown)
                .await?
            {
                super::load::InitialLoadEnd::Done => {}
                super::load::InitialLoadEnd::Renewed => return Ok(StreamEnd::SnapshotRenewed),
            }
            (first.position, first.tables)
        }
    };

    let replaced = reloads(source, config, &tables, &mut recorded, start).await;
    let join = super::join::join_new_tables(
        source,
        config,
        state,
        &target,
        &tables,
        &replaced,
        &mut recorded,
    )
    .await?;
    // A table loading beside the stream joins it at the stream's next start, once loaded.
    let tables: Vec<S::Table> = tables
        .into_iter()
        .filter(|t| !join.as_ref().is_some_and(|j| j.includes(&t.schema().id)))
        .collect();
    let schemas: Vec<&inlet_core::TableSchema> = tables.iter().map(|t| t.schema()).collect();
    let (outputs, committed) = stream::open_outputs(&target, &schemas, &recorded).await?;
    // Loads beside earlier streams, which hold the swaps the log shows before them.
    let loaded = recorded.clone();
    join::forget_loads_before(&mut recorded, start);
    let capture = source
        .capture(CaptureStart {
            tables: &tables,
            committed: &committed,
            start,
            held: join.is_some(),
            recorded: &loaded,
        })
        .await
        .map_err(JobError::from_source)?;
    state.set_tables(
        tables
            .iter()
            .map(|t| (t.schema().id.to_string(), None))
            .collect(),
    );
    state.set_phase(Phase::Streaming);
    state.set_connected(true);
    state.durable(capture.show(start));
    // While a table loads beside the stream the checkpoint stays at `start`: once loaded, the
    // stream starts again from there and the table receives every change since its snapshot
    // (the other tables skip what they hold).
    let hold = join.as_ref().map(|_| start);
    let out = Outputs {
        tables: tables.iter().map(|t| t.schema().id.to_string()).collect(),
        outputs,
        target: &target,
        task,
        state,
        checkpoint: Checkpoint {
            position: start,
            tables: recorded,
            source: None,
        },
        hold,
    };
    match stream::follow(capture, join, out, start, &config.cdc, shutdown).await {
        Err(e) if source.starts_again_after(e.message()).await => Ok(StreamEnd::TablesChanged),
        end => end,
    }
}

/// The tables to load again beside the stream: those whose name holds another table now (the
/// source tells by their identity, or its log showed the swap), those whose rows changed in
/// ways the stream does not carry (the source records them as reload requests), and resyncs.
/// A task that loads no table drops them and goes on with what its targets hold.
async fn reloads<S: Source>(
    source: &mut S,
    config: &TaskConfig,
    tables: &[S::Table],
    recorded: &mut inlet_core::TableStates,
    start: inlet_core::Position,
) -> Vec<TableId> {
    let task = config.task.name.as_str();
    let load = config.task.mode == Mode::FullLoadAndCdc;
    let ids: Vec<TableId> = tables.iter().map(|t| t.schema().id.clone()).collect();
    let identities: Vec<(TableId, String)> = tables
        .iter()
        .filter_map(|t| t.identity().map(|i| (t.schema().id.clone(), i)))
        .collect();
    let mut replaced = join::replaced_tables(recorded, &identities);
    for id in &replaced {
        if load {
            tracing::warn!(table = %id, "the table's name now holds another table (a table swap, as online schema change tools do, or DROP and CREATE): it is loaded again beside the stream, and its target's rows are replaced");
        } else {
            tracing::warn!(table = %id, "the table's name now holds another table (a table swap, as online schema change tools do, or DROP and CREATE); task.mode = \"cdc\" loads no table, so its target keeps the old table's rows and gets the new table's changes from now on: run a full load of it to make it exact");
        }
    }
    if !load {
        // Nothing will load them: the relations now are what the targets follow from now on.
        join::record_identities(recorded, &identities);
    }
    // Names the source's log showed coming to hold another table (a table swap) since their
    // last load: the target holds the old table's rows. The capture records swaps again at
    // each flush.
    for id in join::replaced_since_load(recorded, &ids) {
        if load {
            tracing::warn!(table = %id, "the table's rows changed without row events (its name holds another table after a swap as gh-ost and pt-online-schema-change do, or DROP and CREATE; or a statement rewrote them: partition DDL, ADD COLUMN with a value, MODIFY; the capture logged which): it is loaded again beside the stream, and its target's rows are replaced");
        } else {
            tracing::warn!(table = %id, "the table's rows changed without row events (a table swap, DROP and CREATE, or a statement that rewrote them; the capture logged which); task.mode = \"cdc\" loads no table, so its target keeps the rows it had and gets the changes from now on: run a full load of it to make it exact");
        }
        if !replaced.contains(&id) {
            replaced.push(id);
        }
    }
    for state in recorded.values_mut() {
        state.replaced_at = None;
    }
    if !load {
        replaced.clear();
    }
    source
        .unstreamed_changes(recorded, tables, &replaced, start)
        .await;
    // Tables to load again (`inlet resync`): like swapped ones, until a load after the request.
    resync::take_asked(task, recorded, &ids, start);
    for id in resync::pending(recorded, &ids) {
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
        resync::drop_requests(recorded);
    }
    replaced
}

/// Completes when `stop` turns true; never without one (or once its sender is gone).
pub(super) async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a missing prerequisite does at a start is the connector's word
    /// ([`Prerequisite::at_start`]), not a match on its name: a replica id in use only warns; a
    /// selection that matches nothing refuses a first start but not a resumed task.
    #[test]
    fn a_missing_prerequisite_does_what_its_connector_says() {
        let missing = |name: &str| Prerequisite::missing(name, "not there", "do this");
        let warn = missing("server_id").at_start(AtStart::Warn);
        assert!(check_prerequisites(vec![warn], false).is_ok());
        let selection = || missing("table selection").at_start(AtStart::RefuseFirstStart);
        assert!(check_prerequisites(vec![selection()], true).is_ok());
        let Err(JobError::Failed(message)) = check_prerequisites(vec![selection()], false) else {
            panic!("a first start without a table went on");
        };
        assert_eq!(message, "table selection: not there; fix: do this");
        let refused = check_prerequisites(vec![missing("wal_level")], true);
        assert!(
            matches!(refused, Err(JobError::Failed(m)) if m == "wal_level: not there; fix: do this")
        );
    }
}
