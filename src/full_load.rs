//! The full load: export one snapshot, discover the selected tables, cut them into chunks, and
//! let N workers (each its own connection inside the snapshot) stream chunks into the target.
//!
//! A load that ends early (a signal, an error in any table) still settles every table before it
//! returns: a table whose chunks were all read and whose files were all completed is finished
//! like on success; any other is abandoned, which removes its incomplete files (see
//! [`LoadTable::abandon`]), so no partial table is left readable. The state of each table is
//! logged and put in the error.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sink::{LoadSummary, LoadTable, LoadWriter, Target};
use inlet_core::{Position, TableId, TableSelection};
use inlet_postgres::{
    discover, plan_chunks, BatchLimits, ExportedSnapshot, PgConnector, PgError, SnapshotChunk,
    SnapshotReader, SourceTable,
};
use tokio::task::JoinSet;

use crate::config::{SourceConfig, TaskConfig};
use crate::progress::Progress;
use crate::state::{Phase, TaskState};
use crate::JobError;

/// Page size the chunk size is computed with; tables on servers built with another block size
/// get proportionally larger or smaller chunks, which is harmless.
const BLOCK_SIZE: u64 = 8192;

/// How long a load that ends early may spend settling its tables (finishing the complete ones,
/// deleting the incomplete ones' files) and waiting for its workers to stop: a signal must end
/// the process within seconds.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Why a full load did not finish.
pub enum LoadEnd {
    Failed(JobError),
    /// The `stop` future completed (a signal). `tables`: each table's state, for the message.
    Interrupted {
        tables: String,
    },
}

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
    match run_until(
        config,
        snapshot,
        state,
        only,
        position,
        std::future::pending(),
    )
    .await
    {
        Ok(results) => Ok(results),
        Err(LoadEnd::Failed(e)) => Err(e),
        // `pending` never completes.
        Err(LoadEnd::Interrupted { tables }) => {
            Err(JobError::Failed(format!("full load interrupted; {tables}")))
        }
    }
}

/// [`run`], stopped early when `stop` completes (a signal): the workers are cancelled, every
/// table is settled within [`SETTLE_LIMIT`], and the result says what each holds.
pub async fn run_until(
    config: &TaskConfig,
    snapshot: Option<&str>,
    state: &TaskState,
    only: Option<&[TableId]>,
    position: Option<Position>,
    stop: impl Future<Output = ()>,
) -> Result<Vec<TableResult>, LoadEnd> {
    let mut stop = std::pin::pin!(stop);
    // Until the sinks exist nothing is written to the target, so a stop can simply drop this.
    let prepared = tokio::select! {
        prepared = prepare(config, snapshot, state, only) => prepared.map_err(LoadEnd::Failed)?,
        () = &mut stop => {
            let tables = "no table was written (the load was still preparing)".to_string();
            tracing::error!("full load interrupted by a signal; {tables}");
            return Err(LoadEnd::Interrupted { tables });
        }
    };
    let Prepared {
        tables,
        sinks,
        remaining,
        gone,
        progress,
        logger,
        mut set,
        snapshot,
    } = prepared;

    // The exporting session stays open until the load ends: workers import its snapshot for
    // every chunk.
    let mut failure = None;
    let mut interrupted = false;
    loop {
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            () = &mut stop, if !interrupted => {
                interrupted = true;
                set.abort_all();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let result = joined.unwrap_or_else(|e| {
            if e.is_cancelled() {
                Ok(())
            } else {
                Err(JobError::Failed(format!("a load worker stopped: {e}")))
            }
        });
        if let Err(e) = result {
            if failure.is_none() && !interrupted {
                failure = Some(e);
                set.abort_all();
            }
        }
    }
    if let Some(logger) = logger {
        logger.abort();
    }
    drop(snapshot);

    // On success every table is complete; otherwise only those whose chunks were all read (their
    // writers may still have lost rows, which `finish` detects). A load that is part of change
    // capture (`position`) is all or nothing: its caller starts it again as a whole, and a table
    // committed with the position of an attempt that failed must not look loaded to it.
    let ended_early = interrupted || failure.is_some();
    let complete: Vec<bool> = remaining
        .iter()
        .map(|r| !ended_early || (position.is_none() && r.load(Ordering::Acquire) == 0))
        .collect();
    let deadline = ended_early.then(|| Instant::now() + SETTLE_LIMIT);
    let settled = settle(
        &tables, &sinks, &complete, &gone, position, &progress, state, deadline,
    )
    .await;
    if !ended_early && settled.finish_error.is_none() {
        return Ok(settled.results);
    }
    let described = settled.describe();
    if interrupted {
        tracing::error!(
            "full load interrupted by a signal before it finished; tables: {described}"
        );
        return Err(LoadEnd::Interrupted { tables: described });
    }
    let error = failure
        .or(settled.finish_error)
        .unwrap_or_else(|| JobError::Failed("the full load failed".into()));
    tracing::error!("full load failed; tables: {described}");
    Err(LoadEnd::Failed(with_tables(error, &described)))
}

/// The error with each table's state appended, keeping its kind (exit code, retry).
fn with_tables(error: JobError, tables: &str) -> JobError {
    let add = |m: String| format!("{m}; tables: {tables}");
    match error {
        JobError::Config(m) => JobError::Config(add(m)),
        JobError::Failed(m) => JobError::Failed(add(m)),
        JobError::Transient { kind, message } => JobError::Transient {
            kind,
            message: add(message),
        },
    }
}

/// What settling the tables gave: the loaded ones, each table's state, and the first error of a
/// `finish`.
struct Settled {
    results: Vec<TableResult>,
    states: Vec<(String, String)>,
    finish_error: Option<JobError>,
}

impl Settled {
    fn describe(&self) -> String {
        self.states
            .iter()
            .map(|(t, s)| format!("{t}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Finishes each complete table and abandons the others (and any whose finish fails, or that is
/// `gone` from the source). With a `deadline` (a load ending early), finishing gives up then too.
#[allow(clippy::too_many_arguments)]
async fn settle(
    tables: &[SourceTable],
    sinks: &[LoadTable],
    complete: &[bool],
    gone: &[AtomicBool],
    position: Option<Position>,
    progress: &Progress,
    state: &TaskState,
    deadline: Option<Instant>,
) -> Settled {
    let mut settled = Settled {
        results: Vec::with_capacity(tables.len()),
        states: Vec::with_capacity(tables.len()),
        finish_error: None,
    };
    for (i, (t, sink)) in tables.iter().zip(sinks.iter()).enumerate() {
        let name = t.schema.id.to_string();
        if gone[i].load(Ordering::Acquire) {
            let abandon_by = deadline.unwrap_or_else(|| Instant::now() + SETTLE_LIMIT);
            let what = sink.abandon(abandon_by).await;
            tracing::warn!(table = %name, "the table no longer exists in the source (dropped or renamed away after it was discovered): its load is skipped; {what}");
            settled
                .states
                .push((name, format!("gone from the source, skipped; {what}")));
            continue;
        }
        if complete[i] {
            let finished = match deadline {
                None => sink.finish(position).await,
                Some(d) => tokio::time::timeout_at(d.into(), sink.finish(position))
                    .await
                    .unwrap_or_else(|_| {
                        Err(JobError::Failed(format!(
                            "completing the full load of {name} did not finish within {} s",
                            SETTLE_LIMIT.as_secs()
                        )))
                    }),
            };
            match finished {
                Ok(summary) => {
                    progress.table_done(i);
                    state.add_bytes(&name, summary.bytes);
                    settled.states.push((
                        name.clone(),
                        format!(
                            "loaded ({} rows in {} LOAD files, complete)",
                            summary.rows, summary.files
                        ),
                    ));
                    settled.results.push(TableResult {
                        table: name,
                        summary,
                    });
                    continue;
                }
                Err(e) => {
                    tracing::error!(table = %name, "the full load of the table failed: {}", e.message());
                    if settled.finish_error.is_none() {
                        settled.finish_error = Some(e);
                    }
                }
            }
        }
        let abandon_by = deadline.unwrap_or_else(|| Instant::now() + SETTLE_LIMIT);
        let what = sink.abandon(abandon_by).await;
        tracing::warn!(table = %name, "{what}");
        settled.states.push((name, what));
    }
    settled
}

/// A load ready to run: tables discovered, sinks opened, workers started.
struct Prepared {
    tables: Arc<Vec<SourceTable>>,
    sinks: Arc<Vec<LoadTable>>,
    remaining: Arc<Vec<AtomicUsize>>,
    /// Per table, whether it turned out to be gone from the source (joins only).
    gone: Arc<Vec<AtomicBool>>,
    progress: Progress,
    logger: Option<tokio::task::JoinHandle<()>>,
    set: JoinSet<Result<(), JobError>>,
    snapshot: ExportedSnapshot,
}

async fn prepare(
    config: &TaskConfig,
    snapshot: Option<&str>,
    state: &TaskState,
    only: Option<&[TableId]>,
) -> Result<Prepared, JobError> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Err(JobError::Failed(
            "the PostgreSQL runner was given another source (a bug)".into(),
        ));
    };
    let connector = PgConnector::new(source)
        .map_err(JobError::config)?
        .with_publication(source.publication_name(&config.task.name));
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let target =
        Target::new(&config.target, &config.task.name)?.with_values(config.values.policy());
    let policy = config.values.policy();

    tracing::info!(task = %config.task.name, source = connector.server(), target = %target.describe(), "full load starting");
    // A wrong bucket or a missing permission should fail now, not after reading a large table.
    target.check().await?;
    let snapshot = match snapshot {
        Some(id) => ExportedSnapshot::import(&connector, id).await,
        None => ExportedSnapshot::export(&connector).await,
    }
    .map_err(JobError::source)?;
    let mut tables = discover(snapshot.client(), &connector, &selection, &policy)
        .await
        .map_err(JobError::source)?;
    if let Some(only) = only {
        tables.retain(|t| only.contains(&t.schema.id));
        for id in only {
            if !tables.iter().any(|t| &t.schema.id == id) {
                tracing::warn!(table = %id, "the table no longer exists in the source (dropped or renamed away after it was discovered): its load is skipped");
            }
        }
    }
    // Tables joining a running task (`only`) may all be gone by now: nothing to load is no
    // failure then.
    if tables.is_empty() && only.is_none() {
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
    let version: i32 = snapshot
        .client()
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| JobError::failed(format!("reading server_version_num: {e}")))?
        .get(0);
    let pages = chunk_pages(config.full_load.chunk_mb, version);
    if pages == u64::MAX && config.full_load.chunk_mb != 0 {
        tracing::info!(
            server_version_num = version,
            "PostgreSQL before 14 has no TID range scans: each table is read in one chunk \
             (full_load.chunk_mb applies from 14 on)"
        );
    }
    let queue = work_queue(&tables, pages);
    let mut chunks_per_table = vec![0usize; tables.len()];
    for item in &queue {
        chunks_per_table[item.table] += 1;
    }
    let remaining: Arc<Vec<AtomicUsize>> =
        Arc::new(chunks_per_table.into_iter().map(AtomicUsize::new).collect());
    let gone: Arc<Vec<AtomicBool>> =
        Arc::new(tables.iter().map(|_| AtomicBool::new(false)).collect());
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
            // A table joining a running task may be dropped before its load reads it.
            gone: only.is_some().then(|| gone.clone()),
            progress: progress.clone(),
            limits,
        };
        set.spawn(worker.run());
    }
    Ok(Prepared {
        tables,
        sinks,
        remaining,
        gone,
        progress,
        logger,
        set,
        snapshot,
    })
}

struct WorkItem {
    table: usize,
    chunk: SnapshotChunk,
}

/// Heap pages per chunk: `chunk_mb` of them, or the whole table (`u64::MAX`) when `chunk_mb` is
/// 0 or the server predates TID range scans (PostgreSQL 14): there each chunk's `ctid` range
/// would be a scan of the whole table, so chunks would multiply the reading instead of sharing
/// it out.
fn chunk_pages(chunk_mb: u64, server_version_num: i32) -> u64 {
    if chunk_mb == 0 || server_version_num < 140_000 {
        u64::MAX
    } else {
        chunk_mb * 1024 * 1024 / BLOCK_SIZE
    }
}

/// Largest tables first, so the long ones start early and the small ones fill the gaps; a
/// table's chunks stay together so each worker keeps one file open at a time.
fn work_queue(tables: &[SourceTable], chunk_pages: u64) -> VecDeque<WorkItem> {
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
    /// Set for a load that skips tables gone from the source.
    gone: Option<Arc<Vec<AtomicBool>>>,
    progress: Progress,
    limits: BatchLimits,
}

/// Whether the server said the relation does not exist (SQLSTATE 42P01): it was dropped or
/// renamed away since the snapshot's catalog showed it (a COPY resolves the name in the
/// current catalog). The SQLSTATE, not the message, which follows the server's `lc_messages`.
fn is_missing_relation(e: &PgError) -> bool {
    matches!(e, PgError::Query { code: Some(code), .. } if code == "42P01")
}

impl Worker {
    /// Whether `e` means `table` is gone and this load skips such tables (then it is marked).
    fn skipped(&self, e: &PgError, table: usize) -> bool {
        match &self.gone {
            Some(gone) if is_missing_relation(e) => {
                gone[table].store(true, Ordering::Release);
                true
            }
            _ => false,
        }
    }

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
            if self
                .gone
                .as_ref()
                .is_some_and(|g| g[item.table].load(Ordering::Acquire))
            {
                self.remaining[item.table].fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            if open.as_ref().is_some_and(|(t, _)| *t != item.table) {
                if let Some((_, w)) = open.take() {
                    w.close().await?;
                }
            }
            let (_, writer) =
                open.get_or_insert_with(|| (item.table, self.sinks[item.table].writer()));
            let table = &self.tables[item.table];
            let mut stream = match self.reader.read(table, item.chunk, self.limits).await {
                Ok(stream) => Some(stream),
                Err(e) if self.skipped(&e, item.table) => None,
                Err(e) => return Err(JobError::source(e)),
            };
            while let Some(s) = stream.as_mut() {
                match s.next_batch().await {
                    Ok(Some(batch)) => {
                        let rows = batch.num_rows() as u64;
                        writer.write(&batch).await?;
                        self.progress.add_rows(item.table, rows);
                    }
                    Ok(None) => break,
                    Err(e) if self.skipped(&e, item.table) => break,
                    Err(e) => return Err(JobError::source(e)),
                }
            }
            drop(stream);
            // Ends the chunk's transaction, also one the missing relation aborted.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A table that joins a running task but is dropped after the join's snapshot was taken:
    /// the snapshot's catalog still lists it, with no size (pg_relation_size is NULL). The join
    /// loads the other tables and skips that one instead of failing (before: a panic reading
    /// the NULL in discovery, which failed the task for good).
    #[tokio::test]
    async fn a_joining_table_dropped_before_its_copy_is_skipped() {
        let pg = inlet_testkit::PgServer::start();
        let client = pg.client("postgres").await;
        client
            .batch_execute(
                "CREATE TABLE kept (id bigint PRIMARY KEY, v text);
                 INSERT INTO kept VALUES (1, 'a'), (2, 'b'), (3, 'c');
                 CREATE TABLE dropped (id bigint PRIMARY KEY);
                 INSERT INTO dropped VALUES (1);",
            )
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let text = format!(
            "[task]\nname = \"join\"\nmode = \"full-load-and-cdc\"\n\
             [source]\nkind = \"postgres\"\nurl = \"{}\"\ntls = \"disable\"\n\
             [target]\nkind = \"parquet\"\nurl = \"{}\"\n\
             [tables]\ninclude = [\"public.*\"]\n",
            pg.url("postgres"),
            out.display()
        );
        let config = crate::config::parse(&text, &|_| None).unwrap();
        let SourceConfig::Postgres(source) = &config.source else {
            unreachable!("the task file names a postgres source")
        };
        let connector = PgConnector::new(source).unwrap();
        let snapshot = ExportedSnapshot::export(&connector).await.unwrap();
        client.batch_execute("DROP TABLE dropped").await.unwrap();
        let state = TaskState::new(
            Arc::new(crate::state::Metrics::new()),
            "join",
            "full-load-and-cdc",
            String::new(),
            String::new(),
        );
        let only = [
            TableId::new("public", "kept"),
            TableId::new("public", "dropped"),
        ];
        let results = run(
            &config,
            Some(snapshot.id()),
            &state,
            Some(&only),
            Some(Position(1)),
        )
        .await
        .unwrap();
        let loaded: Vec<(&str, u64)> = results
            .iter()
            .map(|r| (r.table.as_str(), r.summary.rows))
            .collect();
        assert_eq!(loaded, vec![("public.kept", 3)]);
        let dropped = out.join("public").join("dropped");
        let files: Vec<_> = std::fs::read_dir(&dropped)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(files.is_empty(), "public.dropped has files: {files:?}");
    }

    /// The error a COPY meets when its table was dropped after the snapshot whose catalog
    /// listed it: the server's, classified as a missing relation; another failure is not.
    #[tokio::test]
    async fn a_copy_of_a_dropped_table_is_told_missing() {
        let pg = inlet_testkit::PgServer::start();
        let client = pg.client("postgres").await;
        client
            .batch_execute(
                "CREATE TABLE gone (id bigint PRIMARY KEY); CREATE TABLE altered (id int, v int)",
            )
            .await
            .unwrap();
        let text = format!(
            "[task]\nname = \"join\"\nmode = \"full-load-and-cdc\"\n\
             [source]\nkind = \"postgres\"\nurl = \"{}\"\ntls = \"disable\"\n\
             [target]\nkind = \"parquet\"\nurl = \"/nonexistent\"\n\
             [tables]\ninclude = [\"public.*\"]\n",
            pg.url("postgres"),
        );
        let config = crate::config::parse(&text, &|_| None).unwrap();
        let SourceConfig::Postgres(source) = &config.source else {
            unreachable!("the task file names a postgres source")
        };
        let connector = PgConnector::new(source).unwrap();
        let snapshot = ExportedSnapshot::export(&connector).await.unwrap();
        let selection = TableSelection::new(&config.tables).unwrap();
        let tables = discover(
            snapshot.client(),
            &connector,
            &selection,
            &config.values.policy(),
        )
        .await
        .unwrap();
        let table = |name: &str| tables.iter().find(|t| t.schema.id.name == name).unwrap();
        client
            .batch_execute("DROP TABLE gone; ALTER TABLE altered DROP COLUMN v")
            .await
            .unwrap();
        let limits = BatchLimits {
            rows: 100,
            bytes: 1 << 20,
        };
        let chunk = || plan_chunks(1, u64::MAX).remove(0);
        let reader = SnapshotReader::open(&connector, snapshot.id())
            .await
            .unwrap();
        let Err(e) = reader.read(table("gone"), chunk(), limits).await else {
            panic!("the COPY of a dropped table succeeded");
        };
        assert!(is_missing_relation(&e), "{e}");
        reader.finish_chunk().await.unwrap();
        // A COPY that fails for another reason: a column dropped since the snapshot.
        let Err(e) = reader.read(table("altered"), chunk(), limits).await else {
            panic!("the COPY of a column that does not exist succeeded");
        };
        assert!(!is_missing_relation(&e), "{e}");
    }

    #[test]
    fn servers_before_14_read_each_table_in_one_chunk() {
        assert_eq!(chunk_pages(64, 140_000), 64 * 1024 * 1024 / BLOCK_SIZE);
        assert_eq!(chunk_pages(64, 180_004), 64 * 1024 * 1024 / BLOCK_SIZE);
        assert_eq!(chunk_pages(64, 130_022), u64::MAX);
        assert_eq!(chunk_pages(64, 100_000), u64::MAX);
        assert_eq!(chunk_pages(0, 170_000), u64::MAX);
    }
}
