//! Loads through a source's snapshot: the whole task once (`full-load`), or the tables of a
//! change capture task inside the snapshot its stream continues from. The load pool
//! ([`crate::load_pool`]) does the work; this picks its settings.

use std::future::Future;

use inlet_core::source::{Source, SourceTable};
use inlet_core::Position;

use crate::load_pool::{interrupted_preparing, LoadEnd, LoadPool, TableResult};
use crate::sink::Target;
use crate::state::TaskState;
use crate::JobError;

use super::task::{check_prerequisites, no_table};

/// Loads `tables` inside `snapshot` into `target`. `position`: the source position the
/// snapshot is consistent with (then the load is all or nothing, unless `resume_from` says
/// where an interrupted earlier load's chunks may be kept from, [`LoadPool::resume_from`]).
/// Stopped early when `stop` completes.
#[allow(clippy::too_many_arguments)]
pub async fn load<S: Source>(
    source: &S,
    snapshot: S::Snapshot,
    tables: &[S::Table],
    target: &Target,
    state: &TaskState,
    workers: usize,
    position: Option<Position>,
    resume_from: Option<Position>,
    renew_after: Option<std::time::Duration>,
    stop: impl Future<Output = ()>,
) -> Result<Vec<TableResult>, LoadEnd> {
    let load = source
        .load(snapshot, tables, false)
        .await
        .map_err(|e| LoadEnd::Failed(JobError::from_source(e)))?;
    let pool = LoadPool {
        target,
        state,
        workers,
        position,
        resume_from,
        renew_after,
        skip_gone: false,
    };
    let results = pool.run(load, stop).await?;
    let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
    tracing::info!(tables = results.len(), rows, "full load done");
    Ok(results)
}

/// The initial load of a change capture ([`Begin::Fresh`](inlet_core::source::Begin)), up to
/// its first checkpoint.
pub struct InitialLoad<'a, S: Source> {
    pub target: &'a Target,
    pub tables: &'a [S::Table],
    pub snapshot: Option<S::Snapshot>,
    pub loaded_up_to: Position,
    pub resume_from: Option<Position>,
    pub forget_changes: bool,
}

/// How an [`InitialLoad`] ended without an error.
pub enum InitialLoadEnd {
    /// Loaded, and the first checkpoint (`first`) written.
    Done,
    /// It read `full_load.snapshot_minutes` in one snapshot and stopped, keeping its chunks and
    /// what the source began: the task starts again and the load goes on in a new snapshot.
    Renewed,
}

impl<S: Source> InitialLoad<'_, S> {
    /// Loads the tables (when the task loads them) and writes `first`, the first checkpoint, with
    /// what the load holds past the stream's start: tables read whole in a later snapshot
    /// (`loaded_at`) and key ranges read in one (`keys_loaded_at`). A load that fails undoes
    /// what the source began, unless it can resume (stopped by a signal or a transient error).
    pub async fn run(
        self,
        source: &mut S,
        config: &crate::config::TaskConfig,
        state: &TaskState,
        first: &mut inlet_core::Checkpoint,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<InitialLoadEnd, JobError> {
        let Self {
            target,
            tables,
            snapshot,
            loaded_up_to,
            resume_from,
            forget_changes,
        } = self;
        let done = async {
            if forget_changes {
                // Changes captured before must not be replayed over the new load.
                for t in tables {
                    target
                        .forget_changes(t.schema())
                        .await
                        .map_err(|e| (e, false, false))?;
                }
            }
            if let Some(snapshot) = snapshot {
                // A load that resumes goes on in a new snapshot after `snapshot_minutes`.
                let minutes = config.full_load.snapshot_minutes;
                let renew_after = (resume_from.is_some() && minutes > 0.0)
                    .then(|| std::time::Duration::from_secs_f64(minutes * 60.0));
                let loaded = load(
                    &*source,
                    snapshot,
                    tables,
                    target,
                    state,
                    config.full_load.worker_count(),
                    Some(loaded_up_to),
                    resume_from,
                    renew_after,
                    super::task::stopped(shutdown.clone()),
                )
                .await
                .map_err(|end| {
                    // An interrupted load that can resume keeps what the source began (its
                    // slot) for the next start.
                    let resumes = resume_from.is_some()
                        && match &end {
                            LoadEnd::Interrupted { .. } | LoadEnd::Renewed => true,
                            LoadEnd::Failed(e) => matches!(e, JobError::Transient { .. }),
                        };
                    let renewed = matches!(end, LoadEnd::Renewed);
                    (end.into_error(), resumes, renewed)
                })?;
                // A load that went on in a later snapshot than the stream's start holds its
                // tables (or their later key ranges) past it: the stream skips what they hold,
                // as for a table loaded beside an earlier stream.
                for table in loaded {
                    let past_start = table
                        .loaded_up_to
                        .filter(|at| resume_from.is_some_and(|from| *at > from));
                    if past_start.is_none() && table.keys_loaded_at.is_empty() {
                        continue;
                    }
                    let state = first.tables.entry(table.table).or_default();
                    state.loaded_at = past_start;
                    state.keys_loaded_at = table.keys_loaded_at;
                }
            }
            target
                .write_checkpoint(&config.task.name, first)
                .await
                .map_err(|e| (e, false, false))
        }
        .await;
        if let Err((e, resumes, renewed)) = done {
            if renewed {
                tracing::info!(
                    "the initial load goes on in a new snapshot, keeping the chunks it completed"
                );
                return Ok(InitialLoadEnd::Renewed);
            }
            if !resumes {
                source.abandon_begin().await;
            }
            return Err(e);
        }
        source.begun(target).await.map_err(JobError::from_source)?;
        Ok(InitialLoadEnd::Done)
    }
}

/// A `full-load` task: every selected table once, in one consistent snapshot, stopped early
/// when `stop` completes (a signal).
pub async fn full_load<S: Source>(
    mut source: S,
    config: &crate::config::TaskConfig,
    state: &TaskState,
    stop: impl Future<Output = ()>,
) -> Result<Vec<TableResult>, LoadEnd> {
    let mut stop = std::pin::pin!(stop);
    let task = config.task.name.as_str();
    // Until the load pool runs nothing is written to the target, so a stop can simply drop
    // this.
    let prepare = async {
        let target = Target::new(&config.target, task)?.with_values(config.values.policy());
        let source_at = super::describe_source(config).unwrap_or_default();
        tracing::info!(%task, source = %source_at, target = %target.describe(), "full load starting");
        // A wrong bucket or a missing permission should fail now, not after a large table.
        target.check().await?;
        let tables = source.discover().await.map_err(JobError::from_source)?;
        if tables.is_empty() {
            return Err(no_table());
        }
        let prerequisites = source
            .prerequisites(&tables, false)
            .await
            .map_err(JobError::from_source)?;
        check_prerequisites(prerequisites, false)?;
        let snapshot = source.snapshot().await.map_err(JobError::from_source)?;
        Ok((target, tables, snapshot))
    };
    let (target, tables, snapshot) = tokio::select! {
        prepared = prepare => prepared.map_err(LoadEnd::Failed)?,
        () = &mut stop => return Err(interrupted_preparing()),
    };
    load(
        &source,
        snapshot,
        &tables,
        &target,
        state,
        config.full_load.worker_count(),
        None,
        None,
        None,
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use inlet_core::snapshot::SourceError;
    use inlet_core::{Position, TableSelection};
    use inlet_postgres::{
        discover, plan_chunks, BatchLimits, ExportedSnapshot, PgConnector, PgSnapshot, PgTask,
        SnapshotReader,
    };

    use crate::config::SourceConfig;
    use crate::load_pool::LoadPool;
    use crate::sink::Target;
    use crate::state::TaskState;

    fn pg_task_file(url: &str, out: &str) -> crate::config::TaskConfig {
        let text = format!(
            "[task]\nname = \"join\"\nmode = \"full-load-and-cdc\"\n\
             [source]\nkind = \"postgres\"\nurl = \"{url}\"\ntls = \"disable\"\n\
             [target]\nkind = \"parquet\"\nurl = \"{out}\"\n\
             [tables]\ninclude = [\"public.*\"]\n",
        );
        crate::config::parse(&text, &|_| None).unwrap()
    }

    /// A table that joins a running task but is dropped after the join's snapshot was taken:
    /// the snapshot's catalog still lists it, with no size (pg_relation_size is NULL). The
    /// join loads the other tables and skips that one instead of failing (before: a panic
    /// reading the NULL in discovery, which failed the task for good).
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
        let config = pg_task_file(&pg.url("postgres"), &out.display().to_string());
        let SourceConfig::Postgres(source) = &config.source else {
            unreachable!("the task file names a postgres source")
        };
        let connector = PgConnector::new(source).unwrap();
        let state = TaskState::new(
            Arc::new(crate::state::Metrics::new()),
            "join",
            "full-load-and-cdc",
            String::new(),
            String::new(),
        );
        let settings = super::super::settings(&config).unwrap();
        let feedback = Arc::new(super::super::Feedback::new(&state, "join"));
        let task = PgTask::new(source, settings, feedback).unwrap();
        let selection = TableSelection::new(&config.tables).unwrap();
        let tables = discover(&client, &connector, &selection, &config.values.policy())
            .await
            .unwrap();
        let snapshot = ExportedSnapshot::export(&connector).await.unwrap();
        client.batch_execute("DROP TABLE dropped").await.unwrap();
        let joining = PgSnapshot::OfSlot {
            name: snapshot.id().to_string(),
            exporter: None,
        };
        let load = inlet_core::source::Source::load(&task, joining, &tables, true)
            .await
            .unwrap();
        let target = Target::new(&config.target, "join").unwrap();
        let pool = LoadPool {
            target: &target,
            state: &state,
            workers: 2,
            position: Some(Position(1)),
            resume_from: None,
            renew_after: None,
            skip_gone: true,
        };
        let results = match pool.run(load, std::future::pending()).await {
            Ok(results) => results,
            Err(e) => panic!("{}", e.into_error().message()),
        };
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
        drop(snapshot);
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
        let config = pg_task_file(&pg.url("postgres"), "/nonexistent");
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
        let e = SourceError::from(e);
        assert!(e.is_missing_table(), "{e}");
        reader.finish_chunk().await.unwrap();
        // A COPY that fails for another reason: a column dropped since the snapshot.
        let Err(e) = reader.read(table("altered"), chunk(), limits).await else {
            panic!("the COPY of a column that does not exist succeeded");
        };
        let e = SourceError::from(e);
        assert!(!e.is_missing_table(), "{e}");
    }
}
