//! The PostgreSQL full load: export one snapshot (or import a replication slot's), discover the
//! selected tables in it, and hand them to the load pool ([`crate::load_pool`]), whose workers
//! each import the snapshot and stream page-range chunks into the target.

use std::future::Future;

use inlet_core::{Position, TableId, TableSelection};
use inlet_postgres::{discover, BatchLimits, ExportedSnapshot, PgConnector, PgLoadSource};

use crate::config::{SourceConfig, TaskConfig};
use crate::load_pool::{interrupted_preparing, LoadPool};
pub use crate::load_pool::{LoadEnd, TableResult};
use crate::sink::Target;
use crate::state::TaskState;
use crate::JobError;

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
    // `pending` never completes, so the load is never interrupted.
    run_until(
        config,
        snapshot,
        state,
        only,
        position,
        std::future::pending(),
    )
    .await
    .map_err(LoadEnd::into_error)
}

/// [`run`], stopped early when `stop` completes (a signal): the workers are cancelled, every
/// table is settled within seconds, and the result says what each holds.
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
    let (target, source) = tokio::select! {
        prepared = prepare(config, snapshot, only) => prepared.map_err(LoadEnd::Failed)?,
        () = &mut stop => return Err(interrupted_preparing()),
    };
    let pool = LoadPool {
        target: &target,
        state,
        workers: config.full_load.worker_count(),
        position,
        // A table joining a running task may be dropped before its load reads it.
        skip_gone: only.is_some(),
    };
    // The exporting session stays open until the load ends: workers import its snapshot for
    // every chunk.
    pool.run(source, stop.as_mut()).await
}

/// The target, and the snapshot with the selected tables discovered in it.
async fn prepare(
    config: &TaskConfig,
    snapshot: Option<&str>,
    only: Option<&[TableId]>,
) -> Result<(Target, PgLoadSource), JobError> {
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
    let fl = &config.full_load;
    let limits = BatchLimits {
        rows: fl.batch_rows,
        bytes: fl.batch_mb * 1024 * 1024,
    };
    let source = PgLoadSource::new(&connector, snapshot, tables, fl.chunk_mb, limits)
        .await
        .map_err(JobError::source)?;
    Ok((target, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TaskState;
    use inlet_core::snapshot::SourceError;
    use inlet_postgres::{plan_chunks, SnapshotReader};
    use std::sync::Arc;

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
