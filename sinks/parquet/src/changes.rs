//! Change-log files of one table (DMS's CDC files) and the task checkpoint.
//!
//! Each file holds whole committed source transactions and is named
//! `<commit time>-<first position>-<last position>.parquet` beside the table's `LOAD` files, so
//! names sort by time and a restart reads, from names alone, how far each table is written: a
//! transaction whose commit position is at or below that is skipped, never written twice. The
//! task checkpoint (`_inlet/<task>/checkpoint`) records how far *every* table is written, which
//! lets the source be acknowledged even while some tables see no changes.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{Field, Schema, SchemaRef};
use futures::StreamExt;
use inlet_core::{
    change_schema, Checkpoint, Position, TableSchema, CHANGE_META_COLUMNS, COMMIT_TS_COLUMN,
    OP_COLUMN,
};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::{store_hint, SinkError};
use crate::object_file::{abandon, ObjectFile};
use crate::target::ParquetTarget;

/// Which operations the change files keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeptOps {
    All,
    Inserts,
    InsertsAndUpdates,
}

/// What one change file covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeFile {
    /// Commit position of the first and last transaction in the file.
    pub first: Position,
    pub last: Position,
    /// Commit time of the last transaction, µs since the Unix epoch: the file's name.
    pub commit_time_micros: i64,
    /// A part (1, 2, …) of one large transaction whose final piece is still to come. Parts are
    /// named `…-p00001.parquet` and sort before the final file; only the final file counts as
    /// the transaction written, so a crash between parts makes the source re-send the whole
    /// transaction, whose parts are then written again under the same names.
    pub part: Option<u32>,
}

impl ChangeFile {
    pub(crate) fn name(&self) -> String {
        let secs = self.commit_time_micros.div_euclid(1_000_000);
        let micros = self.commit_time_micros.rem_euclid(1_000_000);
        let time = chrono::DateTime::from_timestamp(secs, 0)
            .map(|t| t.format("%Y%m%d-%H%M%S").to_string())
            .unwrap_or_else(|| "00000000-000000".into());
        match self.part {
            None => format!("{time}{micros:06}-{}-{}.parquet", self.first, self.last),
            Some(p) => format!(
                "{time}{micros:06}-{}-{}-p{p:05}.parquet",
                self.first, self.last
            ),
        }
    }

    /// Whether `name` is a change file: a transaction's file or a part of one
    /// (`…-p00001.parquet`, which [`Self::parse_positions`] leaves out: a part does not count as
    /// its transaction written). A new full load of the table deletes both kinds.
    pub(crate) fn is_change_file(name: &str) -> bool {
        let part_of = name
            .strip_suffix(".parquet")
            .and_then(|stem| stem.rsplit_once('-'))
            .filter(|(_, p)| {
                p.len() == 6 && p.starts_with('p') && p[1..].bytes().all(|b| b.is_ascii_digit())
            })
            .map(|(stem, _)| format!("{stem}.parquet"));
        Self::parse_positions(name).is_some()
            || part_of.is_some_and(|n| Self::parse_positions(&n).is_some())
    }

    /// The commit position of the first transaction in a change file or a part of one; None
    /// for any other file.
    pub(crate) fn first_position(name: &str) -> Option<Position> {
        if !Self::is_change_file(name) {
            return None;
        }
        let stem = name.strip_suffix(".parquet")?;
        let whole = match stem.rsplit_once('-') {
            Some((rest, p)) if p.len() == 6 && p.starts_with('p') => format!("{rest}.parquet"),
            _ => name.to_string(),
        };
        Self::parse_positions(&whole).map(|(first, _)| first)
    }

    /// The highest last position of the transactions' change files among `names` (parts do not
    /// count: a part does not make its transaction written).
    pub(crate) fn highest_last(names: &[String]) -> Option<Position> {
        names
            .iter()
            .filter_map(|n| Self::parse_positions(n).map(|(_, last)| last))
            .max()
    }

    /// The positions in a change-file name; None for any other file (LOAD files, staging files).
    pub(crate) fn parse_positions(name: &str) -> Option<(Position, Position)> {
        let stem = name.strip_suffix(".parquet")?;
        let mut parts = stem.rsplitn(3, '-');
        let last = Position::parse(parts.next()?)?;
        let first = Position::parse(parts.next()?)?;
        let time = parts.next()?;
        (time.len() == 21 && time.as_bytes()[8] == b'-').then_some((first, last))
    }
}

/// What one [`ChangeLogTable::write`] put in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeFileWritten {
    pub rows: u64,
    pub bytes: u64,
}

/// The change log of one table. Cheap to clone.
#[derive(Clone)]
pub struct ChangeLogTable {
    target: ParquetTarget,
    table: String,
    dir: Path,
    /// Columns of a change batch of the table ([`inlet_core::change_schema`]).
    input_columns: usize,
    file_schema: SchemaRef,
    /// For each column of the file: the change batch's column it comes from, and how.
    layout: Arc<[(usize, FileColumn)]>,
    props: WriterProperties,
}

/// How a column of a change batch becomes a column of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileColumn {
    /// The operation (`I`/`U`/`D`/`T`), named `op_column`.
    Op,
    /// The commit time as DMS's timestamp column (`timestamp_column`, typed by
    /// `timestamp_column_type`).
    DmsTimestamp,
    /// The column in its file form ([`ParquetTarget::written_array`]).
    Written,
}

impl ChangeLogTable {
    pub(crate) fn new(target: &ParquetTarget, table: &TableSchema) -> Self {
        let (file_schema, layout) = file_layout(target, table);
        Self {
            target: target.clone(),
            table: table.id.to_string(),
            dir: target.table_dir(table),
            input_columns: CHANGE_META_COLUMNS + table.columns.len(),
            file_schema,
            layout: layout.into(),
            props: target.writer_properties(table, "cdc"),
        }
    }

    /// The highest commit position any change file of this table covers, or None if it has none.
    pub async fn committed_position(&self) -> Result<Option<Position>, SinkError> {
        Ok(ChangeFile::highest_last(&self.change_file_names().await?))
    }

    /// The names of this table's change files (transactions' and parts).
    pub(crate) async fn change_file_names(&self) -> Result<Vec<String>, SinkError> {
        let mut list = self.target.store.list(Some(&self.dir));
        let mut names = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| self.store_error("list", &self.dir, e))?;
            if let Some(name) = meta.location.filename() {
                if ChangeFile::is_change_file(name) {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    /// Deletes the change file `name` of this table; one already gone is no error. Asks the
    /// write gate first: a daemon paused between its commit's fence check and this delete, and
    /// continued after another daemon took the task, must not delete the new owner's files.
    pub(crate) async fn delete_file(&self, name: &str) -> Result<(), SinkError> {
        if let Some(gate) = &self.target.gate {
            gate().map_err(|why| SinkError::Incomplete {
                table: self.table.clone(),
                message: format!("change file {name} was not deleted: {why}"),
            })?;
        }
        let path = self.dir.clone().join(name);
        match self.target.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("delete", &path, e)),
        }
    }

    /// Where the table's folder is (also what tells two tables apart).
    pub(crate) fn folder_location(&self) -> String {
        self.target.location(&self.dir)
    }

    /// Where `name` is, for messages.
    pub(crate) fn location_of(&self, name: &str) -> String {
        self.target.location(&self.dir.clone().join(name))
    }

    /// Deletes every change file of this table (not its full-load files) and returns how many
    /// there were: before a new full load replaces the table, changes captured before it must
    /// not be replayed on top of it.
    pub async fn remove_all(&self) -> Result<u64, SinkError> {
        let mut list = self.target.store.list(Some(&self.dir));
        let mut doomed = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| self.store_error("list", &self.dir, e))?;
            if meta
                .location
                .filename()
                .is_some_and(ChangeFile::is_change_file)
            {
                doomed.push(meta.location);
            }
        }
        for path in &doomed {
            self.target
                .store
                .delete(path)
                .await
                .map_err(|e| self.store_error("delete", path, e))?;
        }
        Ok(doomed.len() as u64)
    }

    /// Writes `batches` (in [`inlet_core::change_schema`] layout) as one file, whole or not at
    /// all. Returns the rows and bytes written: 0 rows, and no file, when the kept operations
    /// leave nothing.
    pub async fn write(
        &self,
        batches: &[RecordBatch],
        file: ChangeFile,
    ) -> Result<ChangeFileWritten, SinkError> {
        let path = self.dir.clone().join(file.name());
        let location = self.target.location(&path);
        let mut rows = 0;
        let mut writer: Option<AsyncArrowWriter<ObjectFile>> = None;
        for batch in batches {
            let out = self.file_batch(batch)?;
            if out.num_rows() == 0 {
                continue;
            }
            rows += out.num_rows() as u64;
            let w = match writer.as_mut() {
                Some(w) => w,
                None => {
                    let sink = ObjectFile::new(
                        Arc::clone(&self.target.store),
                        path.clone(),
                        self.target.kind,
                    );
                    let options = ArrowWriterOptions::new().with_properties(self.props.clone());
                    let w = AsyncArrowWriter::try_new_with_options(
                        sink,
                        self.file_schema.clone(),
                        options,
                    )
                    .map_err(|e| self.write_error(&location, e, None))?;
                    writer.insert(w)
                }
            };
            if let Err(e) = w.write(&out).await {
                return Err(self.abort(writer, &location, e).await);
            }
        }
        let Some(mut w) = writer else {
            return Ok(ChangeFileWritten::default());
        };
        if let Err(e) = w.finish().await {
            return Err(self.abort(Some(w), &location, e).await);
        }
        let bytes = w.bytes_written() as u64;
        tracing::debug!(table = %self.table, file = %location, rows, bytes, "change file written");
        Ok(ChangeFileWritten { rows, bytes })
    }

    /// Renames the change columns to DMS's and drops the operations the task does not keep.
    fn file_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, SinkError> {
        let schema_error = |m: String| {
            SinkError::Schema {
            table: self.table.clone(),
            message: format!("a change batch does not match the table ({m}); this is a bug in the source connector"),
        }
        };
        if batch.num_columns() != self.input_columns {
            return Err(schema_error(format!(
                "{} columns, expected {}",
                batch.num_columns(),
                self.input_columns
            )));
        }
        let columns = self
            .layout
            .iter()
            .map(|&(i, form)| {
                let column = batch.column(i);
                match form {
                    FileColumn::Op => Ok(Arc::clone(column)),
                    FileColumn::DmsTimestamp => self.target.timestamp_values(column),
                    FileColumn::Written => self.target.written_array(column),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| schema_error(e.to_string()))?;
        let out = RecordBatch::try_new(self.file_schema.clone(), columns)
            .map_err(|e| schema_error(e.to_string()))?;
        let keep = |op: &str| match self.target.cdc_keep {
            KeptOps::All => true,
            KeptOps::Inserts => op == "I",
            // A truncate ("T") is a mass delete: dropped too.
            KeptOps::InsertsAndUpdates => op == "I" || op == "U",
        };
        if self.target.cdc_keep == KeptOps::All {
            return Ok(out);
        }
        let ops = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| schema_error("the first column is not the Utf8 operation".into()))?;
        let mask: BooleanArray = ops.iter().map(|op| Some(op.is_some_and(keep))).collect();
        arrow_select::filter::filter_record_batch(&out, &mask)
            .map_err(|e| schema_error(e.to_string()))
    }

    async fn abort(
        &self,
        writer: Option<AsyncArrowWriter<ObjectFile>>,
        location: &str,
        source: parquet::errors::ParquetError,
    ) -> SinkError {
        let hint = match writer {
            Some(w) => abandon(w, &self.table).await,
            None => None,
        };
        self.write_error(location, source, hint)
    }

    fn write_error(
        &self,
        location: &str,
        source: parquet::errors::ParquetError,
        hint: Option<String>,
    ) -> SinkError {
        SinkError::Write {
            table: self.table.clone(),
            location: location.to_string(),
            source: Box::new(source),
            hint: hint.unwrap_or_else(|| store_hint(self.target.kind, None)),
        }
    }

    fn store_error(&self, action: &'static str, path: &Path, e: object_store::Error) -> SinkError {
        SinkError::Store {
            subject: format!("table {}", self.table),
            action,
            location: self.target.location(path),
            hint: store_hint(self.target.kind, Some(&e)),
            source: Box::new(e),
        }
    }
}

/// DMS's change-file columns: `Op`, the commit timestamp (named by `timestamp_column`, else
/// `_inlet_commit_ts`), `_inlet_lsn`, `_inlet_txid`, then the table's columns; with
/// `inlet_columns = false` the three `_inlet_*` columns are left out (a `timestamp_column`
/// stays). Returns the schema and, per file column, the change batch's column it comes from.
fn file_layout(
    target: &ParquetTarget,
    table: &TableSchema,
) -> (SchemaRef, Vec<(usize, FileColumn)>) {
    let changes = change_schema(&target.written_table(table));
    let mut fields = Vec::with_capacity(changes.fields().len());
    let mut layout = Vec::with_capacity(changes.fields().len());
    for (i, f) in changes.fields().iter().enumerate() {
        let (field, form) = match (i, f.name().as_str()) {
            (0, OP_COLUMN) => (
                f.as_ref().clone().with_name(&*target.op_column),
                FileColumn::Op,
            ),
            (1, COMMIT_TS_COLUMN) => match &target.timestamp_column {
                Some(name) => (target.timestamp_field(name), FileColumn::DmsTimestamp),
                None if target.inlet_columns => (written_meta(target, f), FileColumn::Written),
                None => continue,
            },
            (2 | 3, _) if !target.inlet_columns => continue,
            (0..CHANGE_META_COLUMNS, _) => (written_meta(target, f), FileColumn::Written),
            // The table's columns are already in their file form (written_table).
            _ => (f.as_ref().clone(), FileColumn::Written),
        };
        fields.push(field);
        layout.push((i, form));
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        changes.metadata().clone(),
    ));
    (schema, layout)
}

/// A change column inlet adds, in its file form (the commit time in `timestamp_unit`).
fn written_meta(target: &ParquetTarget, field: &Field) -> Field {
    if target.millis {
        crate::timestamps::millis_field(field)
    } else {
        field.clone()
    }
}

impl ParquetTarget {
    /// Refuses a table one of whose columns has the name of a column that change files add
    /// before the table's own (compared case-insensitively, as Athena and Glue fold names):
    /// the file would hold two columns of one name, and a reader would get the wrong one.
    pub fn check_change_columns(&self, table: &TableSchema) -> Result<(), SinkError> {
        let (schema, layout) = file_layout(self, table);
        let added_count = layout
            .iter()
            .filter(|(i, _)| *i < CHANGE_META_COLUMNS)
            .count();
        let added = &schema.fields()[..added_count];
        for (f, (_, form)) in added.iter().zip(layout.iter()) {
            if let Some(c) = table
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(f.name()))
            {
                let fix = match form {
                    FileColumn::Op => {
                        "set `op_column` in [target] to another name (e.g. \"dms_op\")".to_string()
                    }
                    FileColumn::DmsTimestamp => {
                        "set `timestamp_column` in [target] to another name".to_string()
                    }
                    FileColumn::Written => format!(
                        "rename the column in the source, leave it out with \
                         [tables.exclude_columns] \"{}\" = [\"{}\"], or set \
                         `inlet_columns = false` in [target]",
                        table.id, c.name
                    ),
                };
                return Err(SinkError::Schema {
                    table: table.id.to_string(),
                    message: format!(
                        "the table has a column {:?}, which collides with the {:?} column \
                         that change files add; {fix}",
                        c.name,
                        f.name()
                    ),
                });
            }
        }
        Ok(())
    }

    fn checkpoint_path(&self, task: &str) -> Path {
        self.prefix
            .clone()
            .join("_inlet")
            .join(task)
            .join("checkpoint")
    }

    /// The task's checkpoint, or None before its first one.
    pub async fn read_checkpoint(&self, task: &str) -> Result<Option<Checkpoint>, SinkError> {
        let path = self.checkpoint_path(task);
        let error = |action, e: object_store::Error| SinkError::Store {
            subject: format!("task {task}"),
            action,
            location: self.location(&path),
            hint: store_hint(self.kind, Some(&e)),
            source: Box::new(e),
        };
        let bytes = match self.store.get(&path).await {
            Ok(got) => {
                self.checkpoint_versions.read(&path, &got.meta);
                got.bytes().await.map_err(|e| error("read", e))?
            }
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(error("read", e)),
        };
        Checkpoint::decode(&bytes)
            .map(Some)
            .map_err(|why| SinkError::Incomplete {
                table: format!("task {task}"),
                message: format!(
                    "the checkpoint {} is unreadable ({why}); delete it to start the task over",
                    self.location(&path)
                ),
            })
    }

    /// Replaces the task's checkpoint (one PUT: atomic on S3 and, via rename, on a folder).
    pub async fn write_checkpoint(
        &self,
        task: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), SinkError> {
        let path = self.checkpoint_path(task);
        self.put_checkpoint(&path, PutPayload::from(checkpoint.encode()))
            .await
            .map_err(|e| SinkError::Store {
                subject: format!("task {task}"),
                action: "write",
                location: self.location(&path),
                hint: store_hint(self.kind, Some(&e)),
                source: Box::new(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_time() {
        let f = ChangeFile {
            first: Position(0x10),
            last: Position(0x2A0),
            commit_time_micros: 1_763_700_000_123_456,
            part: None,
        };
        let name = f.name();
        assert_eq!(
            name,
            "20251121-044000123456-0000000000000010-00000000000002A0.parquet"
        );
        assert_eq!(
            ChangeFile::parse_positions(&name),
            Some((Position(0x10), Position(0x2A0)))
        );
        assert_eq!(ChangeFile::parse_positions("LOAD00000001.parquet"), None);
        assert_eq!(
            ChangeFile::parse_positions("x-0000000000000010-00000000000002A0.parquet"),
            None
        );
        let later = ChangeFile {
            commit_time_micros: f.commit_time_micros + 1,
            ..f
        };
        assert!(later.name() > name);
    }

    /// A new full load deletes the parts of a transaction too: left behind, they replayed its
    /// rows a second time over the new LOAD files (seen in pg_cdc's streamed-transaction test
    /// once a reload ran there).
    #[test]
    fn parts_are_change_files_but_not_written_transactions() {
        let part = ChangeFile {
            first: Position(0x10),
            last: Position(0x10),
            commit_time_micros: 1_763_700_000_123_456,
            part: Some(3),
        }
        .name();
        assert_eq!(
            part,
            "20251121-044000123456-0000000000000010-0000000000000010-p00003.parquet"
        );
        assert_eq!(ChangeFile::parse_positions(&part), None);
        assert!(ChangeFile::is_change_file(&part));
        assert!(ChangeFile::is_change_file(
            "20251121-044000123456-0000000000000010-00000000000002A0.parquet"
        ));
        for other in [
            "LOAD00000001.parquet",
            "LOAD00000001-p00001.parquet",
            "x-0000000000000010-00000000000002A0-p00001.parquet",
            "20251121-044000123456-0000000000000010-0000000000000010-p1.parquet",
        ] {
            assert!(!ChangeFile::is_change_file(other), "{other}");
        }
    }
}
