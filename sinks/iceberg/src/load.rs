//! Full load: parallel writers append Parquet data files to a shared list; `finish` commits
//! them all as ONE snapshot that replaces whatever the table held (a re-run of a load must not
//! add to an earlier one), with `inlet.position` and `inlet.task` in its summary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use iceberg::spec::DataFile;
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
                opened: tokio::sync::Mutex::new(Some(opened)),
                target,
                files: Mutex::new(Vec::new()),
                open_writers: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
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
        Ok(summary)
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
