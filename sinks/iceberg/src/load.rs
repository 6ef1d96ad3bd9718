//! Full load: parallel writers append Parquet data files to a shared list; `finish` commits
//! them all as ONE snapshot that replaces whatever the table held (a re-run of a load must not
//! add to an earlier one), with `inlet.position` and `inlet.task` in its summary.
//!
//! A resumable load (`task.mode = "full-load"`, see [`inlet_core::sink::LoadProgress`]) records
//! the data files of each completed chunk (the Iceberg JSON form of each `DataFile`: path, row
//! count, size, column bounds) in `_inlet/<task>/load/<table>` under the warehouse. Nothing is
//! committed before the table is complete, so readers never see part of it; a restart takes
//! the recorded files back into the load, and `finish` commits them with the new ones in the
//! one snapshot. Files of a chunk in flight at a crash were never recorded nor committed: they
//! are orphans, as those of any interrupted load. Partitioned tables start over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use iceberg::spec::{
    deserialize_data_file_from_json, serialize_data_file_to_json, DataFile, FormatVersion,
    StructType,
};
use inlet_core::sink::LoadProgress;
use inlet_core::Position;

use crate::files::PartitionedWriter;
use crate::partition::Partitioner;
use crate::schema::{conform, file_schema};
use crate::snapshot::SnapshotChange;
use crate::target::OpenedTable;
use crate::{IcebergError, IcebergTarget};

/// What a finished full load committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSummary {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// The full load of one table, shared by its parallel writers (clone it).
#[derive(Clone)]
pub struct LoadTable {
    shared: Arc<LoadShared>,
}

struct LoadShared {
    target: IcebergTarget,
    opened: tokio::sync::Mutex<Option<OpenedTable>>,
    table: String,
    /// How the table's columns are named (batches are renamed so).
    column_names: crate::TableNames,
    file_schema: SchemaRef,
    locations: crate::files::FileLocations,
    partitioner: Option<Arc<Partitioner>>,
    files: Mutex<Vec<DataFile>>,
    open_writers: AtomicUsize,
    failed: AtomicBool,
    /// The schema data files are written with, for reading recorded files back.
    schema: iceberg::spec::Schema,
    /// Set by [`LoadTable::resume`]: chunks are recorded, and `finish` deletes the record.
    resumable: AtomicBool,
    /// Data files in the last recorded progress: a suspended resumable load keeps them.
    recorded_files: AtomicUsize,
    /// Set when a progress record was found (then a load that starts over replaces it).
    found_record: AtomicBool,
}

impl LoadShared {
    /// `_inlet/<task>/load/<namespace.table>` under the warehouse.
    fn progress_path(&self) -> object_store::path::Path {
        self.target
            .inner
            .warehouse
            .prefix
            .clone()
            .join("_inlet")
            .join(self.target.inner.task.as_str())
            .join("load")
            .join(self.table.as_str())
    }

    /// The record of a data file: its Iceberg JSON form (unpartitioned tables only).
    fn file_record(&self, file: DataFile) -> Result<String, IcebergError> {
        serialize_data_file_to_json(file, &StructType::new(Vec::new()), FormatVersion::V2)
            .map_err(|e| IcebergError::state(&self.table, format!("recording a data file: {e}")))
    }

    fn read_file_record(&self, record: &str) -> Option<DataFile> {
        deserialize_data_file_from_json(record, 0, &StructType::new(Vec::new()), &self.schema).ok()
    }
}

impl LoadTable {
    pub(crate) fn new(target: IcebergTarget, opened: OpenedTable) -> Self {
        Self {
            shared: Arc::new(LoadShared {
                table: opened.catalog.ident.to_string(),
                column_names: opened.column_names,
                file_schema: file_schema(&opened.schema),
                locations: opened.locations.clone(),
                partitioner: opened.partitioner.clone(),
                schema: opened.schema.clone(),
                opened: tokio::sync::Mutex::new(Some(opened)),
                target,
                files: Mutex::new(Vec::new()),
                open_writers: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
                resumable: AtomicBool::new(false),
                recorded_files: AtomicUsize::new(0),
                found_record: AtomicBool::new(false),
            }),
        }
    }

    /// A writer for one stream of batches (one per parallel worker). Its batches have the
    /// schema `TableSchema::arrow_schema()`.
    pub fn writer(&self) -> LoadWriter {
        self.shared.open_writers.fetch_add(1, Ordering::SeqCst);
        let s = &self.shared;
        LoadWriter {
            shared: self.shared.clone(),
            writer: PartitionedWriter::new(
                s.locations.clone(),
                s.file_schema.clone(),
                s.target.inner.props.clone(),
                s.target.inner.config.file_size_mb << 20,
                "load",
                s.partitioner.clone(),
            ),
            closed: false,
        }
    }

    /// Commits every file the closed writers wrote as one snapshot replacing the table's
    /// contents. Fails (committing nothing) if a writer is still open or failed.
    pub async fn finish(&self, position: Option<Position>) -> Result<LoadSummary, IcebergError> {
        let s = &self.shared;
        if s.open_writers.load(Ordering::SeqCst) != 0 {
            return Err(IcebergError::state(
                &s.table,
                "finish was called while load writers are still open; close every writer first",
            ));
        }
        if s.failed.load(Ordering::SeqCst) {
            return Err(IcebergError::state(
                &s.table,
                "a load writer failed or was dropped without close; nothing was committed, \
                 restart the load of this table",
            ));
        }
        let mut guard = s.opened.lock().await;
        let Some(opened) = guard.as_mut() else {
            return Err(IcebergError::state(&s.table, "finish was already called"));
        };
        let files = match s.files.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let summary = LoadSummary {
            files: files.len(),
            rows: files.iter().map(|f| f.record_count()).sum(),
            bytes: files.iter().map(|f| f.file_size_in_bytes()).sum(),
        };
        let change = SnapshotChange {
            data_files: files,
            replace_all: true,
            schema: opened.schema_changed.then(|| opened.schema.clone()),
            position,
            task: s.target.inner.task.clone(),
            ..Default::default()
        };
        opened
            .catalog
            .clone()
            .commit(&mut opened.state, change)
            .await?;
        *guard = None;
        tracing::info!(table = %s.table, files = summary.files, rows = summary.rows, "full load committed");
        if s.resumable.load(Ordering::SeqCst) || s.partitioner.is_none() {
            // Committed: the record (this load's, or one a killed resumable load of the table
            // left before a load that does not resume replaced the table) would make the next
            // resumable load keep files that are not the table's.
            s.target
                .inner
                .warehouse
                .delete(&s.table, vec![s.progress_path()])
                .await?;
        }
        Ok(summary)
    }

    /// Whether this load can record its chunks: unpartitioned tables.
    pub fn resumable(&self) -> bool {
        self.shared.partitioner.is_none()
    }

    /// The data files of recorded chunks a suspended resumable load keeps for the next run.
    pub fn kept_files(&self) -> Option<usize> {
        let s = &self.shared;
        s.resumable
            .load(Ordering::SeqCst)
            .then(|| s.recorded_files.load(Ordering::SeqCst))
    }

    /// The progress an earlier, interrupted run recorded; None if there is none, or it cannot be
    /// read, or a file it names is gone (then the load starts over).
    pub async fn recorded_progress(&self) -> Result<Option<LoadProgress>, IcebergError> {
        let s = &self.shared;
        let wh = &s.target.inner.warehouse;
        let path = s.progress_path();
        let Some(bytes) = wh.get(&s.table, &path).await? else {
            return Ok(None);
        };
        s.found_record.store(true, Ordering::SeqCst);
        let Some(progress) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(LoadProgress::decode)
        else {
            tracing::warn!(table = %s.table, record = %wh.uri(&path), "the progress record of an interrupted full load is unreadable: the table is loaded from its start");
            return Ok(None);
        };
        for record in progress.done.iter().flat_map(|d| &d.files) {
            let present = match s.read_file_record(record) {
                Some(file) => match wh.path_of(file.file_path()) {
                    Ok(p) => wh.exists(&s.table, &p).await?,
                    Err(_) => false,
                },
                None => false,
            };
            if !present {
                tracing::warn!(table = %s.table, "a data file an interrupted full load recorded is unreadable or gone: the table is loaded from its start");
                return Ok(None);
            }
        }
        Ok(Some(progress))
    }

    /// Takes the data files of `progress`'s done chunks into this load (committed by `finish`
    /// with the new ones) and records `progress`.
    pub async fn resume(&self, progress: &LoadProgress) -> Result<(), IcebergError> {
        let s = &self.shared;
        s.resumable.store(true, Ordering::SeqCst);
        let mut kept = Vec::new();
        for record in progress.done.iter().flat_map(|d| &d.files) {
            let file = s.read_file_record(record).ok_or_else(|| {
                IcebergError::state(&s.table, "a recorded data file cannot be read back")
            })?;
            kept.push(file);
        }
        let fresh = kept.is_empty() && progress.started.is_empty();
        match s.files.lock() {
            Ok(mut f) => f.extend(kept),
            Err(poisoned) => poisoned.into_inner().extend(kept),
        }
        if fresh {
            // Recorded when its first chunk begins; an earlier record must not outlive this.
            if s.found_record.load(Ordering::SeqCst) {
                s.target
                    .inner
                    .warehouse
                    .delete(&s.table, vec![s.progress_path()])
                    .await?;
            }
            return Ok(());
        }
        self.record_progress(progress).await
    }

    /// Ends a load that will not finish and will not be resumed: deletes its progress record
    /// (the data files of its chunks were never committed; they are orphans).
    pub async fn forget_progress(&self) -> Result<(), IcebergError> {
        let s = &self.shared;
        if !s.resumable.load(Ordering::SeqCst) {
            return Ok(());
        }
        s.recorded_files.store(0, Ordering::SeqCst);
        s.target
            .inner
            .warehouse
            .delete(&s.table, vec![s.progress_path()])
            .await
    }

    /// Replaces the progress record (one PUT).
    pub async fn record_progress(&self, progress: &LoadProgress) -> Result<(), IcebergError> {
        let s = &self.shared;
        s.target
            .inner
            .warehouse
            .put(&s.table, &s.progress_path(), progress.encode().into())
            .await?;
        let files = progress.done.iter().map(|d| d.files.len()).sum();
        s.recorded_files.store(files, Ordering::SeqCst);
        Ok(())
    }
}

/// One worker's writer of a full load.
pub struct LoadWriter {
    shared: Arc<LoadShared>,
    writer: PartitionedWriter,
    closed: bool,
}

impl LoadWriter {
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), IcebergError> {
        if self.closed {
            return Err(IcebergError::state(&self.shared.table, "write after close"));
        }
        let result = async {
            let batch = self.shared.target.written_batch(
                &self.shared.table,
                batch,
                self.shared.column_names,
            )?;
            let batch = conform(&self.shared.table, &batch, &self.shared.file_schema)?;
            self.writer.write(&batch).await.map(|_| ())
        }
        .await;
        if result.is_err() {
            self.shared.failed.store(true, Ordering::SeqCst);
            self.writer.abort().await;
        }
        result
    }

    /// Completes the files written since the last call (a chunk of a resumable load): they
    /// join the load's files, and their records are returned for the progress record.
    pub async fn end_chunk(&mut self) -> Result<Vec<String>, IcebergError> {
        let done = match self.writer.finish().await {
            Ok(done) => done.into_iter().flatten().collect::<Vec<DataFile>>(),
            Err(e) => {
                self.writer.abort().await;
                self.shared.failed.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        let records = done
            .iter()
            .map(|f| self.shared.file_record(f.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        match self.shared.files.lock() {
            Ok(mut f) => f.extend(done),
            Err(poisoned) => poisoned.into_inner().extend(done),
        }
        Ok(records)
    }

    /// Finishes this writer's last file; its files are committed by `LoadTable::finish`.
    pub async fn close(mut self) -> Result<(), IcebergError> {
        self.closed = true;
        let result = self.writer.finish().await;
        let result = match result {
            Ok(done) => {
                let done: Vec<DataFile> = done.into_iter().flatten().collect();
                match self.shared.files.lock() {
                    Ok(mut f) => f.extend(done),
                    Err(poisoned) => poisoned.into_inner().extend(done),
                }
                Ok(())
            }
            Err(e) => {
                self.writer.abort().await;
                self.shared.failed.store(true, Ordering::SeqCst);
                Err(e)
            }
        };
        self.shared.open_writers.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl Drop for LoadWriter {
    fn drop(&mut self) {
        if !self.closed {
            // Dropped mid-load (error or cancellation): the load must not be committed with
            // this writer's rows missing.
            self.shared.failed.store(true, Ordering::SeqCst);
            self.shared.open_writers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
