//! Reading a table back as its files hold it, for `inlet validate`: the table's files in the
//! order a reader replays them (its `LOAD` files, then its change files in name order: commit
//! time, then position), each read whole into record batches, and a source batch turned into
//! the form the files hold (uuid and time as text, timestamps in milliseconds, as configured).
//!
//! Applying the operations (insert, update, delete, truncate) is the caller's: it keys the rows
//! as it compares them.

use arrow_array::{ArrayRef, RecordBatch};
use bytes::Bytes;
use inlet_core::TableSchema;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::changes::ChangeFile;
use crate::target::ParquetTarget;

/// One file of a table, in replay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// The file name (`LOAD00000001.parquet`, `<time>-<first>-<last>.parquet`).
    pub name: String,
    /// A full-load file: every row is an insert (an `Op` column, if written, says `I`).
    pub load: bool,
    path: Path,
}

impl ParquetTarget {
    /// The table as its files hold it: column names and Arrow types (see `written_table`).
    pub fn written_form(&self, table: &TableSchema) -> TableSchema {
        self.written_table(table)
    }

    /// Whether change files keep every operation: not under `cdc_inserts_only` or
    /// `cdc_inserts_and_updates`, whose files are a log that does not replay to the table.
    pub fn keeps_every_operation(&self) -> bool {
        self.cdc_keep == crate::changes::KeptOps::All
    }

    /// The name of the operation column change files carry (`op_column`).
    pub fn op_column_name(&self) -> &str {
        &self.op_column
    }

    /// `batch` (a source batch of `table`, as the full load reads it) in the form the files
    /// hold it.
    pub fn written_source_batch(
        &self,
        table: &TableSchema,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, String> {
        let written = self.written_table(table);
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|a| self.written_array(a))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: cannot put a batch in its written form: {e}", table.id))?;
        RecordBatch::try_new(written.arrow_schema(), columns)
            .map_err(|e| format!("{}: cannot put a batch in its written form: {e}", table.id))
    }

    /// The table's files in replay order: `LOAD` files by number, then change files (and parts
    /// of streamed transactions) by name. Staging files and anything else are left out.
    pub async fn table_files(&self, table: &TableSchema) -> Result<Vec<TableFile>, String> {
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
    pub async fn read_table_file(
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
pub struct TableFileRows {
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
