//! The full load: export one snapshot, discover the selected tables, cut them into chunks, and
//! let N workers (each its own connection inside the snapshot) stream chunks into the target.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::sink::{LoadSummary, LoadTable, LoadWriter, Target};
use inlet_core::{Position, TableId, TableSelection, Unrepresentable};
use inlet_postgres::{
    discover, plan_chunks, BatchLimits, ExportedSnapshot, PgConnector, SnapshotChunk,
    SnapshotReader, SourceTable,
};
use tokio::task::JoinSet;

use crate::config::{FullLoadConfig, SourceConfig, TaskConfig};
use crate::progress::Progress;
use crate::state::{Phase, TaskState};
use crate::JobError;

/// Page size the chunk size is computed with; tables on servers built with another block size
/// get proportionally larger or smaller chunks, which is harmless.
const BLOCK_SIZE: u64 = 8192;

pub struct TableResult {
    pub table: String,
    pub summary: LoadSummary,
}

/// Loads every selected table. With `snapshot`, inside that exported snapshot (a replication
/// slot's), so the change stream continues exactly where the load ends; without, inside a
/// snapshot exported for the load.
pub async fn run(
    config: &TaskConfig,
    snapshot: Option<&str>,
    state: &TaskState,
    only: Option<&[TableId]>,
    position: Option<Position>,
) -> Result<Vec<TableResult>, JobError> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Err(JobError::Failed(
            "the PostgreSQL runner was given another source (a bug)".into(),
        ));
    };
    let connector = PgConnector::new(source).map_err(JobError::config)?;
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let target = Target::new(&config.target, &config.task.name)?;
    let policy = config.values.on_unrepresentable;

    tracing::info!(task = %config.task.name, source = connector.server(), target = %target.describe(), "full load starting");
    // A wrong bucket or a missing permission should fail now, not after reading a large table.
    target.check().await?;
    let snapshot = match snapshot {
        Some(id) => ExportedSnapshot::import(&connector, id).await,
        None => ExportedSnapshot::export(&connector).await,
    }
    .map_err(JobError::source)?;
    let mut tables = discover(snapshot.client(), &connector, &selection, policy)
        .await
        .map_err(JobError::source)?;
    if let Some(only) = only {
        tables.retain(|t| only.contains(&t.schema.id));
    }
    if tables.is_empty() {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    let denied: Vec<String> = tables
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| t.schema.id.to_string())
        .collect();
    if !denied.is_empty() {
        return Err(JobError::Failed(format!(
            "the source user lacks SELECT on {0}; run GRANT SELECT ON {0} TO <user>",
            denied.join(", ")
        )));
    }
    tracing::info!(
        tables = tables.len(),
        snapshot = snapshot.id(),
        "snapshot exported"
    );

    let tables = Arc::new(tables);
    let mut sinks = Vec::with_capacity(tables.len());
    for t in tables.iter() {
        sinks.push(target.full_load(&t.schema).await?);
    }
    let sinks: Arc<Vec<LoadTable>> = Arc::new(sinks);
    let queue = work_queue(&tables, &config.full_load);
    let mut chunks_per_table = vec![0usize; tables.len()];
    for item in &queue {
        chunks_per_table[item.table] += 1;
    }
    let remaining: Arc<Vec<AtomicUsize>> =
        Arc::new(chunks_per_table.into_iter().map(AtomicUsize::new).collect());
    let workers = config.full_load.worker_count().min(queue.len()).max(1);
    let queue = Arc::new(Mutex::new(queue));
    let estimates: Vec<(String, Option<u64>)> = tables
        .iter()
        .map(|t| (t.schema.id.to_string(), t.estimated_rows))
        .collect();
    state.set_tables(estimates.clone());
    state.set_phase(Phase::Snapshotting);
    state.set_connected(true);
    let progress = Progress::new(estimates, state.clone());
    let logger = progress.spawn_logger();

    let fl = &config.full_load;
    let limits = BatchLimits {
        rows: fl.batch_rows,
        bytes: fl.batch_mb * 1024 * 1024,
    };
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let reader = SnapshotReader::open(&connector, snapshot.id())
            .await
            .map_err(JobError::source)?;
        let worker = Worker {
            reader,
            tables: tables.clone(),
            sinks: sinks.clone(),
            queue: queue.clone(),
            remaining: remaining.clone(),
            progress: progress.clone(),
            limits,
            policy,
        };
        set.spawn(worker.run());
    }
    // The exporting session stays open until the load ends: workers import its snapshot for
    // every chunk.
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        let result =
            joined.unwrap_or_else(|e| Err(JobError::Failed(format!("a load worker stopped: {e}"))));
        if let Err(e) = result {
            if failure.is_none() {
                failure = Some(e);
                set.abort_all();
            }
        }
    }
    if let Some(logger) = logger {
        logger.abort();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    drop(snapshot);

    let mut results = Vec::with_capacity(tables.len());
    for (i, (t, sink)) in tables.iter().zip(sinks.iter()).enumerate() {
        let summary = sink.finish(position).await?;
        progress.table_done(i);
        state.add_bytes(&t.schema.id.to_string(), summary.bytes);
        results.push(TableResult {
            table: t.schema.id.to_string(),
            summary,
        });
    }
    Ok(results)
}

struct WorkItem {
    table: usize,
    chunk: SnapshotChunk,
}

/// Largest tables first, so the long ones start early and the small ones fill the gaps; a
/// table's chunks stay together so each worker keeps one file open at a time.
fn work_queue(tables: &[SourceTable], config: &FullLoadConfig) -> VecDeque<WorkItem> {
    let chunk_pages = if config.chunk_mb == 0 {
        u64::MAX
    } else {
        config.chunk_mb * 1024 * 1024 / BLOCK_SIZE
    };
    let mut order: Vec<usize> = (0..tables.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tables[i].pages));
    order
        .into_iter()
        .flat_map(|i| {
            plan_chunks(tables[i].pages, chunk_pages)
                .into_iter()
                .map(move |chunk| WorkItem { table: i, chunk })
        })
        .collect()
}

struct Worker {
    reader: SnapshotReader,
    tables: Arc<Vec<SourceTable>>,
    sinks: Arc<Vec<LoadTable>>,
    queue: Arc<Mutex<VecDeque<WorkItem>>>,
    remaining: Arc<Vec<AtomicUsize>>,
    progress: Progress,
    limits: BatchLimits,
    policy: Unrepresentable,
}

impl Worker {
    async fn run(self) -> Result<(), JobError> {
        let mut open: Option<(usize, LoadWriter)> = None;
        loop {
            // A poisoned lock means another worker panicked; the join loop reports that.
            let next = self
                .queue
                .lock()
                .map_err(|_| JobError::Failed("work queue poisoned".into()))?
                .pop_front();
            let Some(item) = next else { break };
            if open.as_ref().is_some_and(|(t, _)| *t != item.table) {
                if let Some((_, w)) = open.take() {
                    w.close().await?;
                }
            }
            let (_, writer) =
                open.get_or_insert_with(|| (item.table, self.sinks[item.table].writer()));
            let table = &self.tables[item.table];
            let mut stream = self
                .reader
                .read(table, item.chunk, self.limits, self.policy)
                .await
                .map_err(JobError::source)?;
            while let Some(batch) = stream.next_batch().await.map_err(JobError::source)? {
                let rows = batch.num_rows() as u64;
                writer.write(&batch).await?;
                self.progress.add_rows(item.table, rows);
            }
            self.reader.finish_chunk().await.map_err(JobError::source)?;
            if self.remaining[item.table].fetch_sub(1, Ordering::AcqRel) == 1 {
                // Other workers may still be closing their files of this table (which can
                // fail): "loaded" is said only once the sink finished the table.
                self.progress.table_read(item.table);
            }
        }
        if let Some((_, w)) = open.take() {
            w.close().await?;
        }
        Ok(())
    }
}
