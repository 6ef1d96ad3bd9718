//! The full load's worker pool, the same for every source: a source's consistent snapshot
//! ([`LoadSource`]) is cut into chunks, and N workers (each with its own reader inside the
//! snapshot) stream the chunks into the target's tables.
//!
//! A load that ends early (a signal, an error in any table) still settles every table before it
//! returns: a table whose chunks were all read and whose files were all completed is finished
//! like on success when the load stands alone; any other is abandoned, which removes its
//! incomplete files (see [`LoadTable::abandon`]), so no partial table is left readable. A load
//! that is part of change capture (`position`) finishes no table early: its caller starts it
//! again, and it resumes (below) when the caller says from where (`resume_from`). The state of
//! each table is logged and put in the error.
//!
//! A load that stands alone (`task.mode = "full-load"`), and the initial load of a change
//! capture that may resume, resume after a crash: each table's
//! chunk plan and its completed chunks are recorded in the target ([`LoadProgress`], kept by the
//! sink beside the table's files, written when a chunk begins and when its files are complete),
//! and a restart reads only the chunks not recorded as done, each in the new snapshot. The files
//! of done chunks stay; what a killed chunk left is removed by the sink. A table is loaded from
//! its start instead when the source's guard says chunks of different snapshots would not fit
//! together (see [`LoadSource::resume_guard`]) or its columns changed. Each chunk ends its
//! files, so a table has at least a file per chunk. A load ended by a signal or a transient
//! error is suspended: its tables keep their recorded chunks (staged by the sink, so readers
//! see no partial table), and the next run resumes as after a crash. One ended by another
//! error is abandoned as above, its record deleted, and the next run starts over. In an initial
//! load of a change capture, each done chunk also records the position its snapshot holds, and
//! only key-range chunks read at or after the stream's start are kept: the stream then drops,
//! per key range, the changes a later chunk holds ([`inlet_core::held_keys`]).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet_core::held_keys::{KeyInterval, KeysLoadedAt};
use inlet_core::sink::{DoneChunk, LoadProgress};
use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable, SourceError};
use inlet_core::Position;
use tokio::task::JoinSet;

use crate::progress::Progress;
use crate::sink::{LoadSummary, LoadTable, LoadWriter, Target};
use crate::state::{Phase, TaskState};
use crate::JobError;

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
    /// The load read [`LoadPool::renew_after`] in its snapshot and stopped once the chunks in
    /// hand were complete, keeping them: the caller goes on in a new snapshot.
    Renewed,
}

impl LoadEnd {
    /// The error of a load that had no signal of its own to stop it, or whose caller reports
    /// an interruption like any failure.
    pub fn into_error(self) -> JobError {
        match self {
            LoadEnd::Failed(e) => e,
            LoadEnd::Interrupted { tables } => {
                JobError::Failed(format!("full load interrupted; {tables}"))
            }
            LoadEnd::Renewed => JobError::Transient {
                kind: "source",
                message: "the full load stopped to go on in a new snapshot".into(),
            },
        }
    }
}

pub struct TableResult {
    pub table: String,
    pub summary: LoadSummary,
    /// For the initial load of a change capture: the position the table holds every
    /// transaction up to (a resumed load's oldest chunks').
    pub loaded_up_to: Option<Position>,
    /// For a resumed initial load of a change capture: the key ranges read in a later snapshot
    /// than the oldest chunks', whose older changes the stream must drop.
    pub keys_loaded_at: Vec<KeysLoadedAt>,
}

/// What a load writes to and how: the same for every source.
pub struct LoadPool<'a> {
    pub target: &'a Target,
    pub state: &'a TaskState,
    /// The most workers (`full_load.workers`); never more than there are chunks.
    pub workers: usize,
    /// The source position the snapshot is consistent with, for a load that is part of change
    /// capture.
    pub position: Option<Position>,
    /// For the initial load of a change capture that may resume (`position` set): the position
    /// the stream's start holds every transaction up to. The key-range chunks an interrupted
    /// earlier load of this capture completed are kept when read at or after it; the others
    /// are read in this snapshot. None: the load is all or nothing.
    pub resume_from: Option<Position>,
    /// For a load that resumes: after this long, its workers take no new chunk, and once the
    /// ones in hand are complete it ends with [`LoadEnd::Renewed`], to go on in a new snapshot
    /// (`full_load.snapshot_minutes`): the source never holds an older one.
    pub renew_after: Option<Duration>,
    /// A table the source says does not exist (dropped or renamed away since it was discovered,
    /// as online schema change tools do with the table they swapped out) is skipped, its files
    /// of this run deleted, its target keeping what it had, instead of failing the load. For
    /// tables joining a running task.
    pub skip_gone: bool,
}

/// A source error, transient or not as the connector classified it.
pub fn source_error(e: SourceError) -> JobError {
    JobError::from_source(e)
}

impl LoadPool<'_> {
    /// Loads every table of `source`, stopped early when `stop` completes (a signal): the
    /// workers are cancelled, every table is settled within [`SETTLE_LIMIT`], and the result
    /// says what each holds. `source` (and so its snapshot) stays open until the workers end.
    pub async fn run<S: LoadSource>(
        &self,
        mut source: S,
        stop: impl Future<Output = ()>,
    ) -> Result<Vec<TableResult>, LoadEnd> {
        let mut stop = std::pin::pin!(stop);
        // Until the workers run nothing is written to the target, so a stop can simply drop
        // this.
        let prepared = tokio::select! {
            prepared = self.prepare(&mut source) => prepared.map_err(LoadEnd::Failed)?,
            () = &mut stop => return Err(interrupted_preparing()),
        };
        let mut prepared = prepared;
        let mut set = std::mem::take(&mut prepared.set);

        let mut failure = None;
        let mut interrupted = false;
        let mut drained = false;
        // A new snapshot keeps only key-range chunks: a load with a table in other chunks
        // (page ranges) would read that table again after every renewal, and might never end.
        let renew_after = self.renew_after.filter(|_| {
            let kept = |t: usize| prepared.records[t].as_ref().is_some_and(|r| r.all_keys());
            match (0..prepared.tables.len()).find(|&t| !kept(t)) {
                None => true,
                Some(t) => {
                    tracing::info!(table = %prepared.tables[t].schema().id, "the initial load stays in one snapshot (full_load.snapshot_minutes does not apply): the table is not read in key ranges, which a new snapshot could keep");
                    false
                }
            }
        });
        let renew = async {
            let Some(after) = renew_after else {
                return std::future::pending().await;
            };
            tokio::time::sleep(after).await;
            let mut said = None;
            loop {
                match source.renewal_waits_for().await {
                    Ok(None) => return,
                    Ok(Some(why)) => {
                        if said.as_ref() != Some(&why) {
                            tracing::info!("the initial load stays in its snapshot past `full_load.snapshot_minutes` while {why}: a new snapshot would wait for it; it asks again every {} s", inlet_core::snapshot::RENEWAL_RECHECK.as_secs());
                            said = Some(why);
                        }
                    }
                    // The workers' connections most likely fail too; if not, renewing is what
                    // the setting asks.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot tell whether a new snapshot would wait; renewing it");
                        return;
                    }
                }
                tokio::time::sleep(inlet_core::snapshot::RENEWAL_RECHECK).await;
            }
        };
        // Boxed, not pinned in place: it borrows `source`, which must outlive it and go before
        // the settling below.
        let mut renew = Box::pin(renew);
        loop {
            let joined = tokio::select! {
                joined = set.join_next() => joined,
                () = &mut stop, if !interrupted => {
                    interrupted = true;
                    set.abort_all();
                    continue;
                }
                () = &mut renew, if !drained && !interrupted => {
                    drained = true;
                    tracing::info!("the load read `full_load.snapshot_minutes` in one snapshot: its workers complete the chunks in hand, then it goes on in a new one");
                    (prepared.drain)();
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
        if let Some(logger) = prepared.logger.take() {
            logger.abort();
        }
        // The snapshot was needed until every worker ended.
        drop(renew);
        drop(source);

        // On success every table is complete; otherwise only those whose chunks were all read
        // (their writers may still have lost rows, which `finish` detects), when the load
        // stands alone. A drained load whose chunks were all taken anyway is complete.
        let drained = drained
            && prepared
                .remaining
                .iter()
                .any(|r| r.load(Ordering::Acquire) > 0);
        let ended_early = interrupted || failure.is_some() || drained;
        let complete: Vec<bool> = prepared
            .remaining
            .iter()
            .map(|r| !ended_early || (self.position.is_none() && r.load(Ordering::Acquire) == 0))
            .collect();
        let deadline = ended_early.then(|| Instant::now() + SETTLE_LIMIT);
        // A signal (a deploy, an eviction) or a transient error ends a load that is run again
        // (`inlet run` retries, or the next `inlet full-load`): a resumable table keeps its
        // recorded chunks for that, staged where readers do not see them. Another error (a
        // value the target cannot hold, a refused write) would most likely end the next run
        // the same way, or be fixed by a configuration change that chunks written before it
        // must not outlive: it ends the load as one that is not resumed.
        let suspend = interrupted || drained || matches!(failure, Some(JobError::Transient { .. }));
        let settled = self
            .settle(&prepared, &complete, suspend, deadline, drained)
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
        if drained && failure.is_none() && settled.finish_error.is_none() {
            return Err(LoadEnd::Renewed);
        }
        let error = failure
            .or(settled.finish_error)
            .unwrap_or_else(|| JobError::Failed("the full load failed".into()));
        tracing::error!("full load failed; tables: {described}");
        Err(LoadEnd::Failed(with_tables(error, &described)))
    }

    /// Plans every table's chunks, opens its sinks, and starts the workers.
    async fn prepare<S: LoadSource>(&self, source: &mut S) -> Result<Prepared<S::Table>, JobError> {
        let tables = source.tables();
        let gone: Arc<Vec<AtomicBool>> =
            Arc::new(tables.iter().map(|_| AtomicBool::new(false)).collect());
        let mut sinks = Vec::with_capacity(tables.len());
        for t in tables.iter() {
            sinks.push(self.target.full_load(t.schema()).await?);
        }
        let mut queue = VecDeque::new();
        let mut chunks_per_table = vec![0usize; tables.len()];
        let mut records: Vec<Option<Arc<TableRecord>>> = (0..tables.len()).map(|_| None).collect();
        for table in source.read_order() {
            let resumes = self.position.is_none() || self.resume_from.is_some();
            let plan = if resumes && sinks[table].resumable() {
                self.plan_resumable(source, table, &tables[table], &sinks[table])
                    .await?
            } else {
                match source.chunks(table).await {
                    Ok(chunks) => TablePlan {
                        chunks: chunks.into_iter().enumerate().collect(),
                        record: None,
                    },
                    Err(e) if self.skip_gone && e.is_missing_table() => {
                        gone[table].store(true, Ordering::Release);
                        continue;
                    }
                    Err(e) => return Err(source_error(e)),
                }
            };
            for (index, chunk) in plan.chunks {
                queue.push_back(WorkItem {
                    table,
                    index,
                    chunk,
                });
                chunks_per_table[table] += 1;
            }
            records[table] = plan.record.map(Arc::new);
        }
        let sinks: Arc<Vec<LoadTable>> = Arc::new(sinks);
        let records = Arc::new(records);
        // Per table, its chunks not yet read to the end and written.
        let remaining: Arc<Vec<AtomicUsize>> =
            Arc::new(chunks_per_table.into_iter().map(AtomicUsize::new).collect());
        let workers = self.workers.min(queue.len()).max(1);
        let queue = Arc::new(Mutex::new(queue));
        let estimates: Vec<(String, Option<u64>)> = tables
            .iter()
            .map(|t| (t.schema().id.to_string(), t.estimated_rows()))
            .collect();
        self.state.set_tables(estimates.clone());
        self.state.set_phase(Phase::Snapshotting);
        self.state.set_connected(true);
        let progress = Progress::new(estimates, self.state.clone());
        for (i, r) in records.iter().enumerate() {
            if let Some(r) = r.as_ref().filter(|r| r.kept_chunks > 0) {
                progress.resumed(i, r.kept_rows);
            }
        }
        let logger = progress.spawn_logger();
        let readers = match source.readers(workers).await {
            Ok(readers) => readers,
            Err(e) => {
                if let Some(logger) = logger {
                    logger.abort();
                }
                return Err(source_error(e));
            }
        };
        let mut set = JoinSet::new();
        for reader in readers {
            let worker = Worker {
                reader,
                tables: tables.clone(),
                sinks: sinks.clone(),
                queue: queue.clone(),
                remaining: remaining.clone(),
                gone: self.skip_gone.then(|| gone.clone()),
                progress: progress.clone(),
                records: records.clone(),
            };
            set.spawn(worker.run());
        }
        let drain = Box::new(move || {
            if let Ok(mut q) = queue.lock() {
                q.clear();
            }
        });
        Ok(Prepared {
            tables,
            sinks,
            records,
            remaining,
            gone,
            progress,
            logger,
            set,
            drain,
        })
    }

    /// The chunks of table `table` this run reads, for a load that stands alone and whose sink
    /// can record chunks: an earlier run's record with the same guard gives the plan (that
    /// run's, not planned again), and its done chunks are skipped and their files kept;
    /// otherwise the table is planned now and starts over, recorded as its chunks complete. A
    /// source that cannot record its chunks or tell a guard loads the table as usual.
    async fn plan_resumable<S: LoadSource>(
        &self,
        source: &mut S,
        table: usize,
        snapshot_table: &S::Table,
        sink: &LoadTable,
    ) -> Result<TablePlan<S::Chunk>, JobError> {
        let whole = |chunks: Vec<S::Chunk>| TablePlan {
            chunks: chunks.into_iter().enumerate().collect(),
            record: None,
        };
        let recorded = sink.recorded_progress().await?;
        let recorded_guard = recorded.as_ref().map(|r| r.guard.as_str());
        let Some(guard) = source
            .resume_guard(table, recorded_guard)
            .await
            .map_err(source_error)?
        else {
            let chunks = source.chunks(table).await.map_err(source_error)?;
            return Ok(whole(chunks));
        };
        let schema = snapshot_table.schema();
        let name = schema.id.to_string();
        // Files of other columns cannot be kept beside this run's.
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| format!("{}:{}:{:?}", c.name, c.source_type, c.data_type()))
            .collect();
        let guard = format!("{guard} | {}", columns.join(",")).replace(['\n', '\r'], " ");
        let recorded = match recorded {
            Some(recorded) if recorded.guard == guard => {
                let parsed: Option<Vec<S::Chunk>> = recorded
                    .chunks
                    .iter()
                    .map(|t| source.parse_chunk(t))
                    .collect();
                match parsed {
                    Some(planned) if !self.keeps(&recorded, &keys_of(source, table, &planned)) => {
                        tracing::warn!(table = %name, done_chunks = recorded.done.len(), "the chunks an interrupted initial load of the table completed cannot be kept beside chunks read now (they are not key ranges, or were read before the change stream's start): the table is loaded from its start");
                        None
                    }
                    Some(planned) => Some((recorded, planned)),
                    None => {
                        tracing::warn!(table = %name, "the record of an interrupted full load of the table names chunks this version cannot read: the table is loaded from its start");
                        None
                    }
                }
            }
            Some(recorded) => {
                tracing::warn!(
                    table = %name,
                    done_chunks = recorded.done.len(),
                    "the table changed since an interrupted full load of it recorded its chunks \
                     (rows written, moved or its columns changed): the chunks it completed cannot \
                     be kept beside chunks read now, so the table is loaded from its start"
                );
                None
            }
            None => None,
        };
        let (progress, planned) = match recorded {
            Some(resumed) => resumed,
            None => {
                let chunks = source.chunks(table).await.map_err(source_error)?;
                let texts: Option<Vec<String>> =
                    chunks.iter().map(|c| source.chunk_text(c)).collect();
                let Some(texts) = texts else {
                    return Ok(whole(chunks));
                };
                let fresh = LoadProgress {
                    guard,
                    chunks: texts,
                    done: Vec::new(),
                    started: Vec::new(),
                };
                (fresh, chunks)
            }
        };
        let done: HashSet<usize> = progress.done.iter().map(|d| d.chunk).collect();
        // Only chunks not done count as in flight.
        let mut progress = progress;
        progress.started.retain(|s| !done.contains(s));
        sink.resume(&progress).await?;
        let keys = keys_of(source, table, &planned);
        let record = TableRecord::new(progress, self.position, keys);
        if record.kept_chunks > 0 {
            tracing::info!(
                table = %name,
                chunks = planned.len(),
                kept_chunks = record.kept_chunks,
                kept_rows = record.kept_rows,
                in_flight_chunks = record.in_flight_before.len(),
                "resuming the table's interrupted full load: the chunks it completed are kept and \
                 skipped; the others are read now, the ones in flight at the interruption again"
            );
        }
        let chunks = planned
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !done.contains(i))
            .collect();
        Ok(TablePlan {
            chunks,
            record: Some(record),
        })
    }

    /// Whether the done chunks of `recorded` (whose chunks' key ranges are `keys`) can be kept:
    /// always for a load that stands alone; for the initial load of a change capture, when
    /// every chunk is a key range and every done chunk was read at or after the stream's start,
    /// which then holds each key's changes since its chunk's snapshot.
    fn keeps(&self, recorded: &LoadProgress, keys: &[Option<KeyInterval>]) -> bool {
        let Some(position) = self.position else {
            return true;
        };
        let Some(from) = self.resume_from else {
            return false;
        };
        keys.iter().all(Option::is_some)
            && recorded
                .done
                .iter()
                .all(|d| d.at.is_some_and(|at| at >= from && at <= position))
    }

    /// Finishes each complete table and abandons the others (and any whose finish fails, or
    /// that is `gone` from the source), or with `suspend` (a signal, a transient error)
    /// suspends the resumable ones, which keep their recorded chunks. With a `deadline` (a load ending
    /// early), finishing gives up then too. `renewing`: the load goes on in a new snapshot at
    /// once (what each table holds is routine then, not a warning).
    async fn settle<T: SnapshotTable>(
        &self,
        prepared: &Prepared<T>,
        complete: &[bool],
        suspend: bool,
        deadline: Option<Instant>,
        renewing: bool,
    ) -> Settled {
        let Prepared {
            tables,
            sinks,
            gone,
            progress,
            records,
            ..
        } = prepared;
        let mut settled = Settled {
            results: Vec::with_capacity(tables.len()),
            states: Vec::with_capacity(tables.len()),
            finish_error: None,
        };
        let position = self.position;
        for (i, (t, sink)) in tables.iter().zip(sinks.iter()).enumerate() {
            let name = t.schema().id.to_string();
            if gone[i].load(Ordering::Acquire) {
                let abandon_by = deadline.unwrap_or_else(|| Instant::now() + SETTLE_LIMIT);
                let what = sink.abandon(abandon_by).await;
                tracing::warn!(table = %name, "the table no longer exists in the source (dropped or renamed away after it was discovered, as online schema change tools do with the table they swapped out): its load is skipped; {what}");
                settled
                    .states
                    .push((name, format!("gone from the source, skipped; {what}")));
                continue;
            }
            if complete[i] {
                // A resumed initial load holds its table as of its oldest chunks; the stream
                // drops the changes the later ones hold.
                let (position, keys_loaded_at) = match (position, records[i].as_ref()) {
                    (Some(at), Some(r)) => r.held_keys(at).await,
                    _ => (position, Vec::new()),
                };
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
                        if let Some(r) = records[i].as_ref().filter(|r| r.kept_chunks > 0) {
                            r.log_resumed(&name);
                        }
                        progress.table_done(i);
                        self.state.add_bytes(&name, summary.bytes);
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
                            loaded_up_to: position,
                            keys_loaded_at,
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
            let what = if suspend && records[i].is_some() {
                sink.suspend(abandon_by).await
            } else {
                sink.abandon(abandon_by).await
            };
            if renewing {
                tracing::info!(table = %name, "{what}");
            } else {
                tracing::warn!(table = %name, "{what}");
            }
            settled.states.push((name, what));
        }
        settled
    }
}

/// A stop before any table was written.
pub fn interrupted_preparing() -> LoadEnd {
    let tables = "no table was written (the load was still preparing)".to_string();
    tracing::error!("full load interrupted by a signal; {tables}");
    LoadEnd::Interrupted { tables }
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

/// A load ready to run: chunks planned, sinks opened, workers started.
struct Prepared<T> {
    tables: Arc<Vec<T>>,
    sinks: Arc<Vec<LoadTable>>,
    /// Per table, its progress record when the load resumes after a crash.
    records: Arc<Vec<Option<Arc<TableRecord>>>>,
    remaining: Arc<Vec<AtomicUsize>>,
    /// Per table, whether the source said it is gone (with `skip_gone`).
    gone: Arc<Vec<AtomicBool>>,
    progress: Progress,
    logger: Option<tokio::task::JoinHandle<()>>,
    set: JoinSet<Result<(), JobError>>,
    /// Empties the work queue: each worker ends after the chunk in hand.
    drain: Box<dyn Fn() + Send + Sync>,
}

struct WorkItem<C> {
    table: usize,
    /// The chunk's index in its table's plan.
    index: usize,
    chunk: C,
}

/// A table's chunks to read in this run (each with its index in the table's plan), and its
/// progress record when the load can resume.
struct TablePlan<C> {
    chunks: Vec<(usize, C)>,
    record: Option<TableRecord>,
}

/// The progress record of one table of a resumable load, shared by the workers.
struct TableRecord {
    /// What the sink keeps; replaced in the target (under this lock) whenever it changes.
    progress: tokio::sync::Mutex<LoadProgress>,
    /// Chunks an earlier run began and did not complete: reading them again re-reads rows.
    in_flight_before: HashSet<usize>,
    /// Chunks and rows earlier runs completed, kept.
    kept_chunks: usize,
    kept_rows: u64,
    /// Chunks this run read.
    chunks_read: AtomicUsize,
    /// Rows this run read of the chunks in `in_flight_before`.
    reread_rows: AtomicU64,
    reread_chunks: AtomicUsize,
    /// The position this run's snapshot holds every transaction up to, recorded with each chunk
    /// it completes (the initial load of a change capture).
    at: Option<Position>,
    /// Each planned chunk's key range, when it is one.
    keys: Vec<Option<KeyInterval>>,
}

impl TableRecord {
    fn new(progress: LoadProgress, at: Option<Position>, keys: Vec<Option<KeyInterval>>) -> Self {
        let in_flight_before = progress.started.iter().copied().collect();
        Self {
            kept_chunks: progress.done.len(),
            kept_rows: progress.done.iter().map(|d| d.rows).sum(),
            progress: tokio::sync::Mutex::new(progress),
            in_flight_before,
            chunks_read: AtomicUsize::new(0),
            reread_rows: AtomicU64::new(0),
            reread_chunks: AtomicUsize::new(0),
            at,
            keys,
        }
    }

    /// Whether every chunk of the table is a key range (a later snapshot can keep them).
    fn all_keys(&self) -> bool {
        self.keys.iter().all(Option::is_some)
    }

    /// For a complete initial load of a change capture whose snapshot holds everything up to
    /// `at`: the position the table holds every transaction up to (its oldest chunks'), and the
    /// key ranges read in later snapshots, whose older changes the stream drops.
    async fn held_keys(&self, at: Position) -> (Option<Position>, Vec<KeysLoadedAt>) {
        let p = self.progress.lock().await;
        let oldest = p
            .done
            .iter()
            .filter_map(|d| d.at)
            .min()
            .unwrap_or(at)
            .min(at);
        let held = p
            .done
            .iter()
            .filter_map(|d| {
                let chunk_at = d.at.unwrap_or(at);
                let keys = self.keys.get(d.chunk).cloned().flatten()?;
                (chunk_at > oldest).then_some(KeysLoadedAt { keys, at: chunk_at })
            })
            .collect();
        (Some(oldest), merge_adjacent(held))
    }

    /// A worker begins chunk `index`: recorded, so that a crash before it completes counts its
    /// rows as read again by the next run.
    async fn chunk_started(&self, sink: &LoadTable, index: usize) -> Result<(), JobError> {
        let mut p = self.progress.lock().await;
        if p.started.contains(&index) {
            return Ok(());
        }
        p.started.push(index);
        sink.record_progress(&p).await
    }

    /// Chunk `index` is complete in the target with `files`.
    async fn chunk_done(
        &self,
        sink: &LoadTable,
        index: usize,
        rows: u64,
        files: Vec<String>,
    ) -> Result<(), JobError> {
        self.chunks_read.fetch_add(1, Ordering::Relaxed);
        if self.in_flight_before.contains(&index) {
            self.reread_rows.fetch_add(rows, Ordering::Relaxed);
            self.reread_chunks.fetch_add(1, Ordering::Relaxed);
        }
        let mut p = self.progress.lock().await;
        p.started.retain(|&s| s != index);
        p.done.push(DoneChunk {
            chunk: index,
            rows,
            files,
            at: self.at,
        });
        sink.record_progress(&p).await
    }

    /// The line a resumed table's completion adds to the log: what was kept and what was read
    /// again.
    fn log_resumed(&self, table: &str) {
        tracing::info!(
            table = %table,
            kept_chunks = self.kept_chunks,
            kept_rows = self.kept_rows,
            chunks_read = self.chunks_read.load(Ordering::Relaxed),
            reread_chunks = self.reread_chunks.load(Ordering::Relaxed),
            reread_rows = self.reread_rows.load(Ordering::Relaxed),
            "resumed full load complete: the chunks earlier runs completed were kept, the chunks \
             in flight at the interruption were read again"
        );
    }
}

/// Each of `chunks`' key range, when it is one ([`LoadSource::chunk_keys`]).
fn keys_of<S: LoadSource>(
    source: &S,
    table: usize,
    chunks: &[S::Chunk],
) -> Vec<Option<KeyInterval>> {
    chunks.iter().map(|c| source.chunk_keys(table, c)).collect()
}

/// `held` with adjacent key ranges of one snapshot made one: the checkpoint carries them while
/// the stream catches up, and the stream tests each change against them, so a table of
/// thousands of chunks read in a few runs is a few ranges.
fn merge_adjacent(mut held: Vec<KeysLoadedAt>) -> Vec<KeysLoadedAt> {
    // An open start (None) sorts first.
    held.sort_by(|a, b| {
        (a.at, &a.keys.column, a.keys.start).cmp(&(b.at, &b.keys.column, b.keys.start))
    });
    let mut out: Vec<KeysLoadedAt> = Vec::with_capacity(held.len());
    for h in held {
        match out.last_mut() {
            Some(last)
                if last.at == h.at
                    && last.keys.column == h.keys.column
                    && last.keys.end.is_some()
                    && last.keys.end == h.keys.start =>
            {
                last.keys.end = h.keys.end;
            }
            _ => out.push(h),
        }
    }
    out
}

/// One load worker: reads queued chunks through its reader into the tables' sinks.
struct Worker<R: ChunkReader> {
    reader: R,
    tables: Arc<Vec<R::Table>>,
    sinks: Arc<Vec<LoadTable>>,
    queue: Arc<Mutex<VecDeque<WorkItem<R::Chunk>>>>,
    remaining: Arc<Vec<AtomicUsize>>,
    /// Set for a load that skips tables gone from the source.
    gone: Option<Arc<Vec<AtomicBool>>>,
    progress: Progress,
    /// Per table, its progress record when the load resumes after a crash.
    records: Arc<Vec<Option<Arc<TableRecord>>>>,
}

/// Whether `e` means `table` is gone and the load skips such tables (`gone`): then it is
/// marked there.
fn skipped(gone: &Option<Arc<Vec<AtomicBool>>>, e: &SourceError, table: usize) -> bool {
    match gone {
        Some(gone) if e.is_missing_table() => {
            gone[table].store(true, Ordering::Release);
            true
        }
        _ => false,
    }
}

impl<R: ChunkReader> Worker<R> {
    async fn run(self) -> Result<(), JobError> {
        let Worker {
            mut reader,
            tables,
            sinks,
            queue,
            remaining,
            gone,
            progress,
            records,
        } = self;
        let mut open: Option<(usize, LoadWriter)> = None;
        loop {
            // A poisoned lock means another worker panicked; the join loop reports that.
            let next = queue
                .lock()
                .map_err(|_| JobError::Failed("work queue poisoned".into()))?
                .pop_front();
            let Some(item) = next else { break };
            if gone
                .as_ref()
                .is_some_and(|g| g[item.table].load(Ordering::Acquire))
            {
                remaining[item.table].fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            if open.as_ref().is_some_and(|(t, _)| *t != item.table) {
                if let Some((_, w)) = open.take() {
                    w.close().await?;
                }
            }
            let (_, writer) = open.get_or_insert_with(|| (item.table, sinks[item.table].writer()));
            let record = records[item.table].as_ref();
            if let Some(r) = record {
                r.chunk_started(&sinks[item.table], item.index).await?;
            }
            let mut chunk_rows = 0u64;
            let mut batches = match reader.read(&tables[item.table], item.chunk).await {
                Ok(batches) => Some(batches),
                Err(e) if skipped(&gone, &e, item.table) => None,
                Err(e) => return Err(source_error(e)),
            };
            while let Some(b) = batches.as_mut() {
                match b.next_batch().await {
                    Ok(Some(batch)) => {
                        let rows = batch.num_rows() as u64;
                        writer.write(&batch).await?;
                        chunk_rows += rows;
                        progress.add_rows(item.table, rows);
                    }
                    Ok(None) => break,
                    Err(e) if skipped(&gone, &e, item.table) => break,
                    Err(e) => return Err(source_error(e)),
                }
            }
            drop(batches);
            reader.finish_chunk().await.map_err(source_error)?;
            if let Some(r) = record {
                let files = writer.end_chunk().await?;
                r.chunk_done(&sinks[item.table], item.index, chunk_rows, files)
                    .await?;
            }
            if remaining[item.table].fetch_sub(1, Ordering::AcqRel) == 1 {
                // Other workers may still be closing their files of this table (which can
                // fail): "loaded" is said only once the sink finished the table.
                progress.table_read(item.table);
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
    use inlet_core::held_keys::{KeyInterval, KeysLoadedAt};
    use inlet_core::Position;

    #[test]
    fn adjacent_key_ranges_of_one_snapshot_merge() {
        let k = |start: Option<i64>, end: Option<i64>, at: u64| KeysLoadedAt {
            keys: KeyInterval {
                column: "id".into(),
                start,
                end,
            },
            at: Position(at),
        };
        let merged = super::merge_adjacent(vec![
            k(Some(20), Some(30), 5),
            k(None, Some(10), 5),
            k(Some(30), None, 5),
            k(Some(10), Some(20), 7),
            k(Some(40), Some(50), 7),
        ]);
        assert_eq!(
            merged,
            vec![
                k(None, Some(10), 5),
                k(Some(20), None, 5),
                k(Some(10), Some(20), 7),
                k(Some(40), Some(50), 7),
            ]
        );
    }
}
