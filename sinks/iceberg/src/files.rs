//! Parquet files of a table: data files written in rolls of a target size, position-delete
//! files, and the readers the PK index uses (key columns by projection, delete positions).
//! Each written file becomes an Iceberg `DataFile` entry for the next snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use futures::TryStreamExt;
use iceberg::spec::{DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, Struct};
use object_store::path::Path;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::{AsyncArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::partition::Partitioner;
use crate::schema::FIELD_ID_KEY;
use crate::store::{ObjectFile, ObjectReader, Warehouse};
use crate::IcebergError;

/// Reserved Iceberg field ids of a position-delete file's columns.
pub(crate) const DELETE_FILE_PATH_ID: i32 = 2147483546;
pub(crate) const DELETE_POS_ID: i32 = 2147483545;

/// Rows per row group; also bounded by bytes through the file roll.
const ROW_GROUP_ROWS: usize = 122_880;

/// Encoding of every Parquet file inlet writes into a table.
pub(crate) fn writer_properties(zstd_level: i32) -> WriterProperties {
    // IcebergTargetConfig::validate bounds the level to 1..=22, so try_new cannot fail; the
    // default level is the fallback all the same.
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // A list's element as the Parquet spec and Iceberg Java name it (`<col>.list.element`).
        // schema::file_schema names it so already (with its field id); this holds for any schema
        // a writer is given. The other coercions are of Date64 and maps, which inlet never writes.
        .set_coerce_types(true)
        .build()
}

/// Where a table's files go: `<table location>/data/<name>.parquet`.
#[derive(Clone)]
pub(crate) struct FileLocations {
    pub(crate) warehouse: Warehouse,
    /// Key of the table's folder.
    pub(crate) table_dir: Path,
    /// Included in messages.
    pub(crate) table: String,
}

impl FileLocations {
    pub(crate) fn new_data_path(&self, kind: &str) -> Path {
        let name = format!(
            "{}-{kind}-{}.parquet",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            uuid::Uuid::new_v4().simple()
        );
        self.table_dir.clone().join("data").join(name)
    }
}

/// A data file being written.
struct OpenFile {
    writer: AsyncArrowWriter<ObjectFile>,
    path: Path,
    rows: u64,
}

/// Writes batches into data files of about `target_bytes` each; each finished file is a
/// `DataFile` (with its row count, so a caller can map written rows to file positions).
pub(crate) struct DataFileWriter {
    locations: FileLocations,
    schema: SchemaRef,
    props: WriterProperties,
    target_bytes: u64,
    kind: &'static str,
    open: Option<OpenFile>,
    pub(crate) done: Vec<DataFile>,
    /// Partition value and spec id recorded with each file.
    partition: Struct,
    spec_id: i32,
}

impl DataFileWriter {
    pub(crate) fn new(
        locations: FileLocations,
        schema: SchemaRef,
        props: WriterProperties,
        target_bytes: u64,
        kind: &'static str,
    ) -> Self {
        Self {
            locations,
            schema,
            props,
            target_bytes,
            kind,
            open: None,
            done: Vec::new(),
            partition: Struct::empty(),
            spec_id: 0,
        }
    }

    /// Files of this writer belong to `partition` of spec `spec_id`.
    pub(crate) fn with_partition(mut self, partition: Struct, spec_id: i32) -> Self {
        self.partition = partition;
        self.spec_id = spec_id;
        self
    }

    /// Whether a file is open (being written).
    pub(crate) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn parquet_error(
        &self,
        action: &'static str,
        path: &Path,
        e: parquet::errors::ParquetError,
    ) -> IcebergError {
        IcebergError::Parquet {
            table: self.locations.table.clone(),
            action,
            location: self.locations.warehouse.uri(path),
            hint: self.locations.warehouse.hint(None),
            source: Box::new(e),
        }
    }

    /// Appends a batch (already in the file schema). A file is rolled over once it reaches
    /// the target size; rows are never split across a roll mid-batch, so a file may exceed
    /// the target by one batch.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<(), IcebergError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            let path = self.locations.new_data_path(self.kind);
            let sink = ObjectFile::new(self.locations.warehouse.store.clone(), path.clone());
            let writer =
                AsyncArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))
                    .map_err(|e| self.parquet_error("opening", &path, e))?;
            self.open = Some(OpenFile {
                writer,
                path,
                rows: 0,
            });
        }
        // Checked just above.
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if let Err(e) = open.writer.write(batch).await {
            let path = open.path.clone();
            self.abort().await;
            return Err(self.parquet_error("writing", &path, e));
        }
        open.rows += batch.num_rows() as u64;
        let size = (open.writer.bytes_written() + open.writer.in_progress_size()) as u64;
        if size >= self.target_bytes {
            self.roll().await?;
        }
        Ok(())
    }

    /// Finishes the open file, if any, adding it to `done`.
    pub(crate) async fn roll(&mut self) -> Result<(), IcebergError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        if let Err(e) = open.writer.finish().await {
            let path = open.path.clone();
            open.writer.into_inner().abort().await;
            return Err(self.parquet_error("finishing", &path, e));
        }
        let size = open.writer.bytes_written() as u64;
        let uri = self.locations.warehouse.uri(&open.path);
        let file = DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(uri)
            .file_format(DataFileFormat::Parquet)
            .record_count(open.rows)
            .file_size_in_bytes(size)
            .partition(self.partition.clone())
            .partition_spec_id(self.spec_id)
            .build()
            .map_err(|e| {
                IcebergError::metadata(&self.locations.table, "cannot describe a data file", e)
            })?;
        self.done.push(file);
        Ok(())
    }

    /// Drops the open file without making it visible.
    pub(crate) async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            open.writer.into_inner().abort().await;
        }
    }
}

/// Open data files beyond which a partitioned writer finishes its open files (bounds memory
/// when rows spread over many partitions).
const MAX_OPEN_PARTITIONS: usize = 32;

/// Data files of a possibly partitioned table: one [`DataFileWriter`] per partition (a slot),
/// created as rows of the partition arrive. An unpartitioned table has one slot.
pub(crate) struct PartitionedWriter {
    template: (
        FileLocations,
        SchemaRef,
        WriterProperties,
        u64,
        &'static str,
    ),
    partitioner: Option<Arc<Partitioner>>,
    pub(crate) slots: Vec<DataFileWriter>,
    index: HashMap<Struct, usize>,
}

impl PartitionedWriter {
    pub(crate) fn new(
        locations: FileLocations,
        schema: SchemaRef,
        props: WriterProperties,
        target_bytes: u64,
        kind: &'static str,
        partitioner: Option<Arc<Partitioner>>,
    ) -> Self {
        Self {
            template: (locations, schema, props, target_bytes, kind),
            partitioner,
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn slot(&mut self, partition: Struct, spec_id: i32) -> usize {
        if let Some(slot) = self.index.get(&partition) {
            return *slot;
        }
        let (l, s, p, t, k) = &self.template;
        let writer = DataFileWriter::new(l.clone(), s.clone(), p.clone(), *t, k)
            .with_partition(partition.clone(), spec_id);
        self.slots.push(writer);
        self.index.insert(partition, self.slots.len() - 1);
        self.slots.len() - 1
    }

    /// Writes a batch (in the file schema); returns which slot each group of its rows went to
    /// (row indices in batch order). Rows of a slot are appended to its files in order.
    pub(crate) async fn write(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<Vec<(usize, Vec<u32>)>, IcebergError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let Some(partitioner) = self.partitioner.clone() else {
            let slot = self.slot(Struct::empty(), 0);
            self.slots[slot].write(batch).await?;
            return Ok(vec![(slot, (0..batch.num_rows() as u32).collect())]);
        };
        let table = self.template.0.table.clone();
        let groups = partitioner.split(&table, batch)?;
        let mut out = Vec::with_capacity(groups.len());
        let single = groups.len() == 1;
        for (value, rows) in groups {
            let slot = self.slot(value, partitioner.spec_id);
            if !self.slots[slot].is_open()
                && self.slots.iter().filter(|w| w.is_open()).count() >= MAX_OPEN_PARTITIONS
            {
                for w in &mut self.slots {
                    w.roll().await?;
                }
            }
            let part = if single {
                batch.clone()
            } else {
                arrow_select::take::take_record_batch(
                    batch,
                    &arrow_array::UInt32Array::from(rows.clone()),
                )
                .map_err(|e| IcebergError::schema(&table, format!("splitting by partition: {e}")))?
            };
            self.slots[slot].write(&part).await?;
            out.push((slot, rows));
        }
        Ok(out)
    }

    /// Finishes every open file; returns each slot's files, in slot order.
    pub(crate) async fn finish(&mut self) -> Result<Vec<Vec<DataFile>>, IcebergError> {
        let mut out = Vec::with_capacity(self.slots.len());
        for w in &mut self.slots {
            w.roll().await?;
            out.push(std::mem::take(&mut w.done));
        }
        Ok(out)
    }

    /// Drops the open files without making them visible.
    pub(crate) async fn abort(&mut self) {
        for w in &mut self.slots {
            w.abort().await;
        }
    }
}

/// The Arrow schema of a position-delete file.
fn delete_file_schema() -> SchemaRef {
    let id = |id: i32| HashMap::from([(FIELD_ID_KEY.to_string(), id.to_string())]);
    Arc::new(ArrowSchema::new(vec![
        Field::new("file_path", DataType::Utf8, false).with_metadata(id(DELETE_FILE_PATH_ID)),
        Field::new("pos", DataType::Int64, false).with_metadata(id(DELETE_POS_ID)),
    ]))
}

/// Writes one position-delete file: `(data file URI, row position)` pairs, sorted by path and
/// position as the spec requires. Its `file_path` bounds let readers skip it for data files
/// it cannot touch.
pub(crate) struct PositionDeleteWriter;

impl PositionDeleteWriter {
    /// `deletes` maps data-file URIs to row positions (any order). Returns `None` when empty.
    /// `partition`: the partition (and spec id) of every data file named, for a partitioned
    /// table; the caller groups deletes by partition.
    pub(crate) async fn write(
        locations: &FileLocations,
        props: WriterProperties,
        mut deletes: Vec<(Arc<str>, Vec<u32>)>,
        partition: (Struct, i32),
    ) -> Result<Option<DataFile>, IcebergError> {
        deletes.retain(|(_, p)| !p.is_empty());
        if deletes.is_empty() {
            return Ok(None);
        }
        deletes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut paths = Vec::new();
        let mut positions = Vec::new();
        for (path, mut rows) in deletes {
            rows.sort_unstable();
            rows.dedup();
            for r in rows {
                paths.push(path.clone());
                positions.push(i64::from(r));
            }
        }
        let count = positions.len() as u64;
        let lower = paths.first().map(|p| p.to_string()).unwrap_or_default();
        let upper = paths.last().map(|p| p.to_string()).unwrap_or_default();
        let schema = delete_file_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(paths.iter().map(|p| &**p))),
                Arc::new(Int64Array::from(positions)),
            ],
        )
        .map_err(|e| IcebergError::schema(&locations.table, format!("delete batch: {e}")))?;
        let path = locations.new_data_path("deletes");
        let uri = locations.warehouse.uri(&path);
        let parquet_error = |action, e| IcebergError::Parquet {
            table: locations.table.clone(),
            action,
            location: uri.clone(),
            hint: locations.warehouse.hint(None),
            source: Box::new(e),
        };
        let sink = ObjectFile::new(locations.warehouse.store.clone(), path.clone());
        let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(props))
            .map_err(|e| parquet_error("opening", e))?;
        if let Err(e) = writer.write(&batch).await {
            writer.into_inner().abort().await;
            return Err(parquet_error("writing", e));
        }
        if let Err(e) = writer.finish().await {
            writer.into_inner().abort().await;
            return Err(parquet_error("finishing", e));
        }
        let size = writer.bytes_written() as u64;
        let mut builder = DataFileBuilder::default();
        builder
            .content(DataContentType::PositionDeletes)
            .file_path(uri)
            .file_format(DataFileFormat::Parquet)
            .record_count(count)
            .file_size_in_bytes(size)
            .partition(partition.0)
            .partition_spec_id(partition.1)
            .lower_bounds(HashMap::from([(
                DELETE_FILE_PATH_ID,
                Datum::string(&lower),
            )]))
            .upper_bounds(HashMap::from([(
                DELETE_FILE_PATH_ID,
                Datum::string(&upper),
            )]));
        if lower == upper {
            builder.referenced_data_file(Some(lower));
        }
        let file = builder.build().map_err(|e| {
            IcebergError::metadata(&locations.table, "cannot describe a delete file", e)
        })?;
        Ok(Some(file))
    }
}

/// Reads the columns with the given top-level field ids of a Parquet file, in file order.
pub(crate) async fn read_columns(
    warehouse: &Warehouse,
    table: &str,
    uri: &str,
    size: u64,
    field_ids: &[i32],
) -> Result<Vec<RecordBatch>, IcebergError> {
    let path = warehouse
        .path_of(uri)
        .map_err(|m| IcebergError::state(table, m))?;
    let parquet_error = |e| IcebergError::Parquet {
        table: table.to_string(),
        action: "reading",
        location: uri.to_string(),
        hint: warehouse.hint(None),
        source: Box::new(e),
    };
    let reader = ObjectReader::new(warehouse.store.clone(), path, size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(parquet_error)?;
    let descr = builder.metadata().file_metadata().schema_descr_ptr();
    let roots = descr.root_schema().get_fields();
    let mut indices = Vec::new();
    for id in field_ids {
        let index = roots
            .iter()
            .position(|f| f.get_basic_info().has_id() && f.get_basic_info().id() == *id)
            .ok_or_else(|| {
                IcebergError::state(
                    table,
                    format!(
                        "{uri} has no column with field id {id}; the file was not written \
                         for this table's schema"
                    ),
                )
            })?;
        indices.push(index);
    }
    // The projection yields columns in file order; callers want them in the order asked for
    // (a key's column order defines its encoding).
    let mut sorted = indices.clone();
    sorted.sort_unstable();
    let order: Vec<usize> = indices
        .iter()
        .filter_map(|i| sorted.iter().position(|s| s == i))
        .collect();
    let mask = ProjectionMask::roots(&descr, indices);
    let stream = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(parquet_error)?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(parquet_error)?;
    batches
        .iter()
        .map(|b| {
            b.project(&order).map_err(|e| {
                IcebergError::state(table, format!("{uri}: cannot order its columns: {e}"))
            })
        })
        .collect()
}

/// Reads a position-delete file into (data-file URI → deleted positions).
pub(crate) async fn read_position_deletes(
    warehouse: &Warehouse,
    table: &str,
    file: &DataFile,
    into: &mut HashMap<String, Vec<u32>>,
) -> Result<(), IcebergError> {
    let batches = read_columns(
        warehouse,
        table,
        file.file_path(),
        file.file_size_in_bytes(),
        &[DELETE_FILE_PATH_ID, DELETE_POS_ID],
    )
    .await?;
    for batch in batches {
        let paths = arrow_cast::cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| IcebergError::state(table, format!("{}: {e}", file.file_path())))?;
        let positions = arrow_cast::cast(batch.column(1), &DataType::Int64)
            .map_err(|e| IcebergError::state(table, format!("{}: {e}", file.file_path())))?;
        let (Some(paths), Some(positions)) = (
            paths.as_any().downcast_ref::<StringArray>(),
            positions.as_any().downcast_ref::<Int64Array>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            if paths.is_null(i) || positions.is_null(i) {
                continue;
            }
            let pos = u32::try_from(positions.value(i)).map_err(|_| {
                IcebergError::state(
                    table,
                    format!(
                        "{}: position {} out of range",
                        file.file_path(),
                        positions.value(i)
                    ),
                )
            })?;
            into.entry(paths.value(i).to_string())
                .or_default()
                .push(pos);
        }
    }
    Ok(())
}

/// Reads every column of a Parquet file.
pub(crate) async fn read_all(
    warehouse: &Warehouse,
    table: &str,
    uri: &str,
    size: u64,
) -> Result<Vec<RecordBatch>, IcebergError> {
    let path = warehouse
        .path_of(uri)
        .map_err(|m| IcebergError::state(table, m))?;
    let parquet_error = |e| IcebergError::Parquet {
        table: table.to_string(),
        action: "reading",
        location: uri.to_string(),
        hint: warehouse.hint(None),
        source: Box::new(e),
    };
    let reader = ObjectReader::new(warehouse.store.clone(), path, size);
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(parquet_error)?
        .with_batch_size(65_536)
        .build()
        .map_err(parquet_error)?
        .try_collect()
        .await
        .map_err(parquet_error)
}
