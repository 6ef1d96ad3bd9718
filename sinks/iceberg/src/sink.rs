//! The Iceberg sink as the daemon drives it ([`inlet_core::sink`]): a full load is one snapshot
//! per table; the change stream applies batches to an open [`UpsertTable`] and commits one
//! snapshot per table per flush, never while part of a source transaction is open, and runs
//! table maintenance on its schedule right after a commit. The task checkpoint lives in the
//! warehouse too (`_inlet/<task>/checkpoint`), in the same form as the Parquet sink's
//! ([`Checkpoint::encode`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use bytes::Bytes;
use inlet_core::sink::{self, LoadSummary, TargetError, Written};
use inlet_core::{Checkpoint, Position, TableChanges, TableSchema, POSITION_COLUMN};
use object_store::path::Path;

use crate::{IcebergError, IcebergTarget, LoadTable, LoadWriter, MaintenanceConfig, UpsertTable};

impl From<IcebergError> for TargetError {
    fn from(e: IcebergError) -> Self {
        TargetError::new(e.is_transient(), e)
    }
}

impl IcebergTarget {
    fn checkpoint_path(&self, task: &str) -> Path {
        let wh = &self.inner.warehouse;
        wh.prefix
            .clone()
            .join("_inlet")
            .join(task)
            .join("checkpoint")
    }
}

// The trait's methods call this crate's own (inherent) methods of the same names, which take
// precedence; they are not recursive.
#[async_trait::async_trait]
impl sink::Sink for IcebergTarget {
    fn describe(&self) -> String {
        format!("iceberg {}", IcebergTarget::describe(self))
    }

    async fn check(&self) -> Result<(), TargetError> {
        Ok(IcebergTarget::check(self).await?)
    }

    async fn full_load(
        &self,
        table: &TableSchema,
    ) -> Result<Box<dyn sink::LoadTable>, TargetError> {
        Ok(Box::new(IcebergTarget::full_load(self, table).await?))
    }

    async fn change_table(
        &self,
        table: &TableSchema,
    ) -> Result<Box<dyn sink::ChangeTable>, TargetError> {
        Ok(Box::new(StreamedUpsertTable {
            table: self.upsert_table(table).await?,
            pending: 0,
            open_part: false,
            maintenance: self.inner.config.maintenance.clone(),
            maintained: Instant::now(),
        }))
    }

    async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, TargetError> {
        let path = self.checkpoint_path(task);
        let subject = format!("task {task}");
        let Some(stored) = self.inner.warehouse.get(&subject, &path).await? else {
            return Ok(None);
        };
        let checkpoint = Checkpoint::decode(&stored).map_err(|why| IcebergError::State {
            table: subject,
            message: format!(
                "the checkpoint {} is unreadable ({why}); delete it to start the task over",
                self.inner.warehouse.uri(&path)
            ),
        })?;
        Ok(Some(checkpoint))
    }

    /// One PUT: atomic on S3 and, via rename, on a folder.
    async fn write_checkpoint(
        &self,
        task: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), TargetError> {
        let path = self.checkpoint_path(task);
        let stored = Bytes::from(checkpoint.encode());
        Ok(self
            .inner
            .warehouse
            .put(&format!("task {task}"), &path, stored)
            .await?)
    }

    fn checkpoint_location(&self, task: &str) -> String {
        format!(
            "{}/_inlet/{task}/checkpoint",
            self.inner.warehouse.describe()
        )
    }

    fn set_owner_epoch(&mut self, epoch: u64) {
        self.inner
            .owner_epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    fn lease_store(&self, task: &str) -> Option<Box<dyn inlet_core::lease::LeaseStore>> {
        Some(Box::new(crate::lease::IcebergLease::new(
            &self.inner.warehouse,
            task,
        )))
    }

    async fn read_back(
        &self,
        table: &TableSchema,
    ) -> Result<Result<Box<dyn inlet_core::validation::TableReadBack>, String>, TargetError> {
        Ok(self
            .live_rows(table)
            .await?
            .map(|l| Box::new(l) as Box<dyn inlet_core::validation::TableReadBack>))
    }
}

#[async_trait::async_trait]
impl sink::LoadTable for LoadTable {
    fn writer(&self) -> Box<dyn sink::LoadWriter> {
        Box::new(LoadTable::writer(self))
    }

    async fn finish(&self, position: Option<Position>) -> Result<LoadSummary, TargetError> {
        let s = LoadTable::finish(self, position).await?;
        Ok(LoadSummary {
            files: s.files as u64,
            rows: s.rows,
            bytes: s.bytes,
        })
    }

    async fn abandon(&self, deadline: Instant) -> String {
        // Data files become part of the table only at finish's commit; a record of its chunks
        // would make the next load keep them.
        let forgot = tokio::time::timeout_at(deadline.into(), LoadTable::forget_progress(self));
        let note = match forgot.await {
            Ok(Ok(())) => "",
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                "; its progress record could not be deleted (the next load of the table reads \
                 it)"
            }
            Err(_) => {
                "; its progress record was not deleted in the time a stop allows (the next load \
                 of the table reads it)"
            }
        };
        format!(
            "not loaded; nothing of this run was committed, the table holds what it held \
             before{note}"
        )
    }

    async fn suspend(&self, deadline: Instant) -> String {
        if LoadTable::kept_files(self).unwrap_or(0) == 0 {
            // Nothing to resume after: ended like any load that does not finish.
            return sink::LoadTable::abandon(self, deadline).await;
        }
        match LoadTable::kept_files(self) {
            Some(kept) => format!(
                "not loaded; nothing of this run was committed, the table holds what it held \
                 before; the {kept} data file(s) of its completed chunks are recorded: the next \
                 run of the load resumes after them"
            ),
            None => "not loaded; nothing of this run was committed, the table holds what it \
                     held before"
                .to_string(),
        }
    }

    fn resumable(&self) -> bool {
        LoadTable::resumable(self)
    }

    async fn recorded_progress(&self) -> Result<Option<sink::LoadProgress>, TargetError> {
        Ok(LoadTable::recorded_progress(self).await?)
    }

    async fn resume(&self, progress: &sink::LoadProgress) -> Result<(), TargetError> {
        Ok(LoadTable::resume(self, progress).await?)
    }

    async fn record_progress(&self, progress: &sink::LoadProgress) -> Result<(), TargetError> {
        Ok(LoadTable::record_progress(self, progress).await?)
    }
}

#[async_trait::async_trait]
impl sink::LoadWriter for LoadWriter {
    async fn write(&mut self, batch: &RecordBatch) -> Result<(), TargetError> {
        Ok(LoadWriter::write(self, batch).await?)
    }

    async fn close(self: Box<Self>) -> Result<(), TargetError> {
        Ok(LoadWriter::close(*self).await?)
    }

    async fn end_chunk(&mut self) -> Result<Vec<String>, TargetError> {
        Ok(LoadWriter::end_chunk(self).await?)
    }
}

/// A table of the change stream: batches are applied to the open table and made durable by
/// [`sink::ChangeTable::commit`].
struct StreamedUpsertTable {
    table: UpsertTable,
    /// Change rows applied since the last commit.
    pending: u64,
    /// Part of a transaction still open was applied: the table must not commit until the
    /// transaction's commit has been seen, or a restart would apply its first parts twice.
    open_part: bool,
    maintenance: MaintenanceConfig,
    /// When maintenance last ran (or the table was opened).
    maintained: Instant,
}

#[async_trait::async_trait]
impl sink::ChangeTable for StreamedUpsertTable {
    async fn committed_position(
        &self,
        _table: &TableSchema,
    ) -> Result<Option<Position>, TargetError> {
        Ok(self.table.committed_position())
    }

    async fn write(&mut self, changes: TableChanges) -> Result<Written, TargetError> {
        let batch = lift_part_positions(&changes, self.table.committed_position())?;
        self.table.apply(&changes.schema, &batch).await?;
        self.pending += changes.batch.num_rows() as u64;
        if changes.part.is_some() {
            self.open_part = true;
        }
        // Durable only at commit; counted then.
        Ok(Written::default())
    }

    fn transaction_committed(&mut self) {
        self.open_part = false;
    }

    fn holds_open_transaction(&self) -> bool {
        self.open_part
    }

    /// A no-op for a table with nothing new, or holding part of an open transaction.
    async fn commit(&mut self, position: Position) -> Result<Written, TargetError> {
        if self.pending == 0 || self.open_part {
            return Ok(Written::default());
        }
        self.table.commit(position).await?;
        let rows = std::mem::take(&mut self.pending);
        // Right after a commit nothing is pending, which maintenance requires.
        let every = Duration::from_secs(self.maintenance.interval_minutes.saturating_mul(60));
        if self.maintenance.interval_minutes > 0 && self.maintained.elapsed() >= every {
            self.maintained = Instant::now();
            let report = self
                .table
                .maintain(&self.maintenance, chrono::Utc::now())
                .await?;
            tracing::info!(table = %self.table.location(), ?report, "table maintenance done");
        }
        Ok(Written { rows, bytes: 0 })
    }

    fn index_bytes_per_row(&self) -> Option<f64> {
        (self.table.indexed_rows() > 0).then(|| self.table.index_bytes_per_row())
    }
}

/// The batch to apply to an upserting table. The table skips rows at or below its committed
/// position, a guard against replays. A part of a transaction still open may carry a position
/// that is not yet its commit's: MySQL stamps parts with the transaction's start, which equals
/// the end of the previous transaction and so may equal the table's position. The capture has
/// already decided that the transaction is new for this table, so such rows are lifted just
/// above the committed position (the table's own position is set at commit, not from rows).
///
/// A fix-up of the MySQL connector's part positions, kept here (moved from the daemon) until
/// the connector stamps parts with positions a sink can take as they are.
fn lift_part_positions(
    changes: &TableChanges,
    committed: Option<Position>,
) -> Result<RecordBatch, TargetError> {
    let (Some(_), Some(committed)) = (changes.part, committed) else {
        return Ok(changes.batch.clone());
    };
    let floor = i64::try_from(committed.0.saturating_add(1)).unwrap_or(i64::MAX);
    let Some(index) = changes.batch.schema().index_of(POSITION_COLUMN).ok() else {
        return Ok(changes.batch.clone());
    };
    let Some(positions) = changes
        .batch
        .column(index)
        .as_any()
        .downcast_ref::<Int64Array>()
    else {
        return Err(TargetError::failed(format!(
            "{POSITION_COLUMN} of a change batch is not Int64 (a bug in the change capture)"
        )));
    };
    let lifted: Int64Array = positions.iter().map(|p| p.map(|v| v.max(floor))).collect();
    let mut columns = changes.batch.columns().to_vec();
    columns[index] = Arc::new(lifted);
    RecordBatch::try_new(changes.batch.schema(), columns)
        .map_err(|e| TargetError::failed(format!("rebuilding a change batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field};
    use inlet_core::sink::Sink;
    use inlet_core::{change_schema, Column, TableId};

    fn target(dir: &std::path::Path) -> IcebergTarget {
        let text = format!("warehouse = \"file://{}\"\n", dir.display());
        let config: crate::IcebergTargetConfig = toml::from_str(&text).unwrap();
        IcebergTarget::new(&config, "t").unwrap()
    }

    fn table() -> TableSchema {
        let col = |name: &str, dt| Column {
            name: name.into(),
            source_type: "bigint".into(),
            field: Field::new(name, dt, true),
            distinct_values: None,
        };
        TableSchema {
            id: TableId::new("public", "items"),
            columns: vec![col("id", DataType::Int64), col("qty", DataType::Int64)],
            primary_key: vec!["id".into()],
        }
    }

    /// Inserts of `ids`, all stamped with `position`.
    fn inserts(table: &TableSchema, ids: &[i64], position: u64, part: Option<u32>) -> TableChanges {
        let n = ids.len();
        let batch = RecordBatch::try_new(
            change_schema(table),
            vec![
                Arc::new(StringArray::from(vec!["I"; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![position as i64; n])),
                Arc::new(Int64Array::from(vec![1; n])),
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(Int64Array::from(vec![7; n])),
            ],
        )
        .unwrap();
        TableChanges {
            table: 0,
            schema: table.clone(),
            batch,
            first: Position(position),
            last: Position(position),
            commit_time_micros: 0,
            part,
        }
    }

    /// Checkpoints written by earlier versions (through the Parquet target, at the warehouse
    /// root, in the text form) are read, and new ones are written in the same place, in the
    /// JSON form.
    #[tokio::test]
    async fn checkpoint_keeps_the_parquet_targets_place_and_reads_the_text_form() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path());
        let file = dir.path().join("_inlet/task-a/checkpoint");
        assert_eq!(target.read_checkpoint("task-a").await.unwrap(), None);

        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "position=000000000000002A\nslot=inlet_a\n").unwrap();
        let read = target.read_checkpoint("task-a").await.unwrap();
        let expected = Checkpoint {
            position: Position(0x2A),
            tables: Default::default(),
            source: Some(inlet_core::SourceResume::Postgres(
                inlet_core::PostgresResume {
                    slot: "inlet_a".into(),
                    created_by: None,
                },
            )),
        };
        assert_eq!(read, Some(expected.clone()));

        let next = Checkpoint {
            position: Position(0x30),
            ..expected
        };
        target.write_checkpoint("task-a", &next).await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), next.encode());
        assert_eq!(target.read_checkpoint("task-a").await.unwrap(), Some(next));
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            target.checkpoint_location("task-a"),
            format!("file://{}/_inlet/task-a/checkpoint", canonical.display())
        );

        std::fs::write(&file, "nonsense").unwrap();
        let e = target.read_checkpoint("task-a").await.unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            format!(
                "table task task-a: the checkpoint {} is unreadable (line \"nonsense\" is not \
                 key=value); delete it to start the task over",
                target.checkpoint_location("task-a")
            )
        );
    }

    /// A store whose reads of `version-hint.text` fail as a short read does (the file shrank
    /// between its size and its read: another writer rewriting it in place).
    #[derive(Debug)]
    struct HintRewrittenMeanwhile(Arc<dyn object_store::ObjectStore>);

    impl std::fmt::Display for HintRewrittenMeanwhile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "HintRewrittenMeanwhile({})", self.0)
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for HintRewrittenMeanwhile {
        async fn put_opts(
            &self,
            location: &Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            if location.filename() == Some("version-hint.text") {
                return Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: "Requested range was invalid".into(),
                });
            }
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    /// A `version-hint.text` that cannot be read is passed over for the listing of the metadata
    /// files, as Iceberg's HadoopCatalog does: the hint only saves a listing. Another writer of
    /// the folder catalog may be rewriting it in place at that moment: pyiceberg's commits in
    /// tests/pg_iceberg.rs (racing test) did, and the short read ("Requested range was invalid")
    /// restarted the task.
    #[tokio::test]
    async fn a_version_hint_that_cannot_be_read_is_passed_over_for_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path());
        let t = table();
        let mut stream = target.change_table(&t).await.unwrap();
        for (id, position) in [(1, 0x20), (2, 0x30), (3, 0x40)] {
            stream
                .write(inserts(&t, &[id], position, None))
                .await
                .unwrap();
            stream.commit(Position(position)).await.unwrap();
        }
        // The hint lags behind the newest version, as when another writer is rewriting it.
        let hint = dir.path().join("public/items/metadata/version-hint.text");
        let newest = std::fs::read_to_string(&hint).unwrap();
        std::fs::write(&hint, "1").unwrap();

        let wh = &target.inner.warehouse;
        let catalog = crate::catalog::FolderCatalog {
            warehouse: crate::store::Warehouse {
                store: Arc::new(HintRewrittenMeanwhile(wh.store.clone())),
                ..wh.clone()
            },
        };
        let ident = crate::TableIdent {
            namespace: "public".into(),
            name: "items".into(),
        };
        let loaded = catalog.load(&ident).await.unwrap().expect("the table");
        assert_eq!(loaded.version.to_string(), newest.trim());
    }

    /// A table holding part of an open transaction does not commit until the source commits
    /// the transaction; a part stamped with the table's committed position (MySQL stamps parts
    /// with the transaction's start) is applied, not skipped as a replay.
    #[tokio::test]
    async fn commits_wait_for_the_open_transaction_and_parts_are_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path());
        let t = table();
        let mut stream = target.change_table(&t).await.unwrap();
        stream.write(inserts(&t, &[1], 0x20, None)).await.unwrap();
        let w = stream.commit(Position(0x20)).await.unwrap();
        assert_eq!(w, Written { rows: 1, bytes: 0 });
        assert_eq!(
            stream.committed_position(&t).await.unwrap(),
            Some(Position(0x20))
        );

        let written = stream
            .write(inserts(&t, &[2, 3], 0x20, Some(1)))
            .await
            .unwrap();
        assert_eq!(written, Written::default());
        assert!(stream.holds_open_transaction());
        assert_eq!(
            stream.commit(Position(0x25)).await.unwrap(),
            Written::default()
        );
        assert_eq!(
            stream.committed_position(&t).await.unwrap(),
            Some(Position(0x20))
        );

        stream.transaction_committed();
        assert!(!stream.holds_open_transaction());
        let w = stream.commit(Position(0x30)).await.unwrap();
        assert_eq!(w, Written { rows: 2, bytes: 0 });
        assert_eq!(
            stream.committed_position(&t).await.unwrap(),
            Some(Position(0x30))
        );
        // Reopened from the warehouse: all three rows are in the table.
        let reopened = target.upsert_table(&t).await.unwrap();
        assert_eq!(reopened.indexed_rows(), 3);
    }
}
