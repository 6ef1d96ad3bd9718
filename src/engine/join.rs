//! Tables that join a running task (the selection grew, a table was created or renamed into
//! it), and tables loaded again (their name holds another table, a resync): with
//! `full-load-and-cdc` they are loaded in a consistent snapshot taken now, at position P,
//! beside the stream, which resumes at the older checkpoint and applies to them only
//! transactions after P: no gap, no overlap ([`crate::join`]).

use inlet_core::source::{Source, SourceTable};
use inlet_core::{TableId, TableStates};

use crate::config::{Mode, TaskConfig};
use crate::join::JoinLoad;
use crate::load_pool::{LoadEnd, LoadPool};
use crate::sink::Target;
use crate::state::TaskState;
use crate::stream;
use crate::JobError;

/// Starts the load beside the stream of the tables of `tables` absent from the checkpoint
/// (`recorded`) and of `replaced`; None when there are none, or the task loads no table (then
/// the new ones are captured from the checkpoint on). Tables in the checkpoint the source no
/// longer has leave it; their targets keep the rows they had. Checkpoints of earlier versions
/// name no tables; then every table counts as known.
pub async fn join_new_tables<S: Source>(
    source: &mut S,
    config: &TaskConfig,
    state: &TaskState,
    target: &Target,
    tables: &[S::Table],
    replaced: &[TableId],
    recorded: &mut TableStates,
) -> Result<Option<JoinLoad>, JobError> {
    let ids: Vec<TableId> = tables.iter().map(|t| t.schema().id.clone()).collect();
    let new = stream::tables_to_load(recorded, &ids, replaced);
    if new.is_empty() {
        return Ok(None);
    }
    let joining: Vec<TableId> = new.iter().map(|&i| ids[i].clone()).collect();
    let names: Vec<String> = joining.iter().map(ToString::to_string).collect();
    if config.task.mode != Mode::FullLoadAndCdc {
        tracing::info!(tables = ?names, "new tables join the task; mode cdc: their changes are captured from the checkpoint on");
        for id in &joining {
            recorded.entry(id.to_string()).or_default().captured = true;
        }
        return Ok(None);
    }
    tracing::info!(tables = ?names, "new tables join the task: loading them beside the stream");
    let (snapshot, at) = source
        .join_snapshot(&joining, recorded)
        .await
        .map_err(JobError::from_source)?;
    let subset: Vec<S::Table> = new.iter().map(|&i| tables[i].clone()).collect();
    for t in &subset {
        // A join interrupted earlier may have left change files: the new load replaces them.
        target.forget_changes(t.schema()).await?;
    }
    let identities: Vec<(TableId, String)> = subset
        .iter()
        .filter_map(|t| t.identity().map(|i| (t.schema().id.clone(), i)))
        .collect();
    let load = source
        .load(snapshot, &subset, true)
        .await
        .map_err(JobError::from_source)?;
    let (config, state) = (config.clone(), state.beside());
    let join = JoinLoad::spawn(joining, at, async move {
        let target =
            Target::new(&config.target, &config.task.name)?.with_values(config.values.policy());
        let pool = LoadPool {
            target: &target,
            state: &state,
            workers: config.full_load.worker_count(),
            position: Some(at),
            // A joining table may be gone already (gh-ost drops the table it swapped out a
            // moment after the swap): it is skipped, not a failure.
            resume_from: None,
            renew_after: None,
            skip_gone: true,
        };
        let results = pool
            .run(load, std::future::pending())
            .await
            .map_err(LoadEnd::into_error)?;
        let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
        tracing::info!(tables = results.len(), rows, "full load done");
        Ok(())
    });
    Ok(Some(join.with_identities(identities)))
}
