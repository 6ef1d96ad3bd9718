//! Reading a table back as its files hold it, for `inlet validate`: the table's files in the
//! order a reader replays them (its `LOAD` files, then its change files in name order: commit
//! time, then position), each read whole into record batches, and a source batch turned into
//! the form the files hold (uuid and time as text, timestamps in milliseconds, as configured).
//!
//! Applying the operations (insert, update, delete, truncate) is the caller's: it keys the rows
//! as it compares them ([`TableFiles`], the sink's [`TableReadBack`]).

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::SchemaRef;
use bytes::Bytes;
use inlet_core::sink::TargetError;
use inlet_core::validation::{ReadBackStep, TableReadBack};
use inlet_core::TableSchema;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::changes::ChangeFile;
use crate::target::ParquetTarget;

/// One file of a table, in replay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableFile {
    /// The file name (`LOAD00000001.parquet`, `<time>-<first>-<last>.parquet`).
    pub name: String,
    /// A full-load file: every row is an insert (an `Op` column, if written, says `I`).
    pub load: bool,
    path: Path,
}

/// A table read back as its files hold it (see [`inlet_core::validation::TableReadBack`]).
pub struct TableFiles {
    target: ParquetTarget,
    table: TableSchema,
    /// The table as its files hold it: column names and Arrow types.
    written: TableSchema,
}

impl TableFiles {
    /// The table's read-back, or why its files do not replay to its rows.
    pub(crate) fn open(target: &ParquetTarget, table: &TableSchema) -> Result<Self, String> {
        if target.cdc_keep != crate::changes::KeptOps::All {
            return Err("its change files keep inserts only or inserts and updates \
                        (cdc_inserts_only / cdc_inserts_and_updates): they are a log that does \
                        not replay to the table's rows"
                .into());
        }
        Ok(Self {
            target: target.clone(),
            table: table.clone(),
            written: target.written_table(table),
        })
    }
}

#[async_trait::async_trait]
impl TableReadBack for TableFiles {
    fn columns(&self) -> SchemaRef {
        self.written.arrow_schema()
    }

    fn key(&self) -> Vec<String> {
        self.written.primary_key.clone()
    }

    fn written_source_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, TargetError> {
        let what = |e| {
            TargetError::failed(format!(
                "{}: cannot put a batch in its written form: {e}",
                self.table.id
            ))
        };
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|a| self.target.written_array(a))
            .collect::<Result<_, _>>()
            .map_err(what)?;
        RecordBatch::try_new(self.written.arrow_schema(), columns).map_err(what)
    }

    /// `LOAD` files, then change files replayed in name order. A file removed between the
    /// listing and its reading (a reload of the table switched to its new files): the table is
    /// listed and read again, up to three times.
    async fn read(
        &mut self,
        visit: &mut (dyn for<'b> FnMut(ReadBackStep<'b>) -> Result<(), String> + Send),
    ) -> Result<Result<(), String>, TargetError> {
        let op_column = self.target.op_column.clone();
        'attempt: for attempt in 1..=3 {
            let files = self
                .target
                .table_files(&self.table)
                .await
                .map_err(TargetError::failed)?;
            let begin = ReadBackStep::Begin {
                inserts_only: files.iter().all(|f| f.load),
                rows: None,
            };
            if let Err(e) = visit(begin) {
                return Ok(Err(e));
            }
            for file in &files {
                let Some(batches) = self
                    .target
                    .read_table_file(&self.table, file)
                    .await
                    .map_err(TargetError::failed)?
                else {
                    if attempt < 3 {
                        continue 'attempt;
                    }
                    return Ok(Err(format!(
                        "{} was removed while it was read, three times (the table is being \
                         loaded again); validate it once the load is done",
                        file.name
                    )));
                };
                for batch in batches {
                    let batch = batch.map_err(TargetError::failed)?;
                    let ops = if file.load {
                        None
                    } else {
                        let Some(ops) = batch
                            .column_by_name(&op_column)
                            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                            .cloned()
                        else {
                            return Ok(Err(format!(
                                "change file {} has no text column {op_column}",
                                file.name
                            )));
                        };
                        Some(ops)
                    };
                    let rows = ReadBackStep::Rows {
                        batch: &batch,
                        ops: ops.as_ref(),
                    };
                    if let Err(why) = visit(rows) {
                        return Ok(Err(format!("{}: {why}", file.name)));
                    }
                }
            }
            break;
        }
        Ok(Ok(()))
    }
}

impl ParquetTarget {
    /// The table's files in replay order: `LOAD` files by number, then change files (and parts
    /// of streamed transactions) by name. Staging files and anything else are left out.
    async fn table_files(&self, table: &TableSchema) -> Result<Vec<TableFile>, String> {
        let dir = self.table_dir(table);
        // The folder's own files only: not those a reload stages in `_inlet_load/`.
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| format!("{}: cannot list {}: {e}", table.id, self.location(&dir)))?;
        let mut loads = Vec::new();
        let mut changes = Vec::new();
        for meta in listed.objects {
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if name.starts_with("LOAD") && name.ends_with(".parquet") {
                loads.push(TableFile {
                    name,
                    load: true,
                    path: meta.location,
                });
            } else if ChangeFile::is_change_file(&name) {
                changes.push(TableFile {
                    name,
                    load: false,
                    path: meta.location,
                });
            }
        }
        // LOAD names have a fixed width; change file names start with their commit time.
        loads.sort_by(|a, b| a.name.cmp(&b.name));
        changes.sort_by(|a, b| a.name.cmp(&b.name));
        loads.extend(changes);
        Ok(loads)
    }

    /// The rows of `file`, decoded batch by batch as they are taken (the file's bytes are
    /// held, not its decoded rows). None when the file is gone since it was listed (a new full
    /// load of the table replaced it): the caller reads the table again.
    async fn read_table_file(
        &self,
        table: &TableSchema,
        file: &TableFile,
    ) -> Result<Option<TableFileRows>, String> {
        let location = self.location(&file.path);
        let bytes: Bytes = match self.store.get(&file.path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| format!("{}: cannot read {location}: {e}", table.id))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("{}: cannot read {location}: {e}", table.id)),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.with_batch_size(65_536).build())
            .map_err(|e| format!("{}: cannot read {location}: {e}", table.id))?;
        Ok(Some(TableFileRows {
            reader,
            what: format!("{}: cannot read {location}", table.id),
        }))
    }
}

/// The record batches of one file of a table, decoded as they are taken.
pub(crate) struct TableFileRows {
    reader: ParquetRecordBatchReader,
    /// The start of an error message: the table and the file.
    what: String,
}

impl Iterator for TableFileRows {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader
            .next()
            .map(|b| b.map_err(|e| format!("{}: {e}", self.what)))
    }
}
