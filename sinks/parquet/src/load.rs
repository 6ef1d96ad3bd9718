//! Full-load files of one table: `<prefix>/<schema>/<table>/LOAD00000001.parquet`, ...
//!
//! Several workers may load one table in parallel (ctid or key ranges). Each gets its own
//! [`LoadFileWriter`]; they share one [`FullLoadTable`], whose counter hands out file numbers, so
//! files never collide and their numbers are dense. After all writers are closed,
//! [`FullLoadTable::finish`] deletes files with higher numbers left by an earlier, larger run:
//! a re-run replaces a table's files instead of adding to them, as DMS does.
//!
//! A load that does not finish (a failed writer, an error elsewhere, a signal) calls
//! [`FullLoadTable::abandon`] instead: once this run completed a file it has overwritten part of
//! an earlier run's set, so neither set is whole and every `LOAD` file of the table is deleted;
//! a reader then sees no table rather than a partial one. A run that completed no file of the
//! table leaves the folder as it was.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use inlet_core::TableSchema;
use object_store::path::Path;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::{store_hint, SinkError};
use crate::object_file::{abandon, ObjectFile};
use crate::target::ParquetTarget;

/// Name of the DMS operation column (`IncludeOpForFullLoad`).
pub const OP_COLUMN: &str = "Op";

/// Key-value metadata key naming the table (`schema.table`) in every file.
pub const TABLE_KEY: &str = "inlet.table";
/// Key-value metadata key saying what a file holds; `full-load` for these files.
pub const KIND_KEY: &str = "inlet.kind";

/// Totals of one table's full load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Files written by this run.
    pub files: u64,
    /// Rows in those files.
    pub rows: u64,
    /// Size of those files in bytes.
    pub bytes: u64,
}

/// What [`FullLoadTable::abandon`] left in the table's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abandoned {
    /// This run completed no file of the table, so it changed nothing there: the folder holds
    /// what an earlier run left, if anything.
    Untouched,
    /// The table's `LOAD` files (this run's and any an earlier run left) were deleted: the
    /// folder holds none.
    Removed { files: usize },
    /// Deleting the table's `LOAD` files did not finish in time or failed: `remaining` of them
    /// (possibly all) are still there and must not be read.
    NotRemoved { remaining: usize, why: String },
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untouched => f.write_str(
                "not loaded; this run wrote no file of it, its folder holds what an earlier \
                 run left (if anything)",
            ),
            Self::Removed { files: 0 } => f.write_str("not loaded; its folder holds no LOAD file"),
            Self::Removed { files } => write!(
                f,
                "not loaded; its {files} incomplete LOAD file(s) were deleted, its folder holds \
                 none"
            ),
            Self::NotRemoved { remaining, why } => write!(
                f,
                "NOT loaded and NOT cleaned: {remaining} LOAD file(s) of an incomplete load are \
                 still in its folder ({why}); do not read it, delete them or run the full load \
                 again"
            ),
        }
    }
}

/// The full load of one table, shared by all writers loading it. Cloning is cheap.
#[derive(Clone)]
pub struct FullLoadTable {
    shared: Arc<Shared>,
}

struct Shared {
    target: ParquetTarget,
    /// `schema.table`, for messages and metadata.
    table: String,
    /// `<prefix>/<schema>/<table>`.
    dir: Path,
    /// Columns in each batch the source sends.
    input_columns: usize,
    /// The schema of the files, or why the table cannot be written (a column name collides with
    /// `Op` or the timestamp column). Reported on the first write, as `full_load` is
    /// infallible.
    file_schema: Result<SchemaRef, String>,
    props: WriterProperties,
    /// The last file number handed out; the next file takes this + 1.
    last_number: AtomicU64,
    /// The highest number of a file that was completed.
    highest_completed: AtomicU64,
    /// Set before the first file's completion starts: from then on the folder may hold files
    /// of this run, which replace an earlier run's of the same numbers.
    touched: AtomicBool,
    files: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Writers created and not yet dropped.
    open_writers: AtomicUsize,
    /// Set when a writer failed or was dropped with an open file: the load is incomplete and
    /// `finish` must not present it as done (nor delete the old files).
    failed: AtomicBool,
    /// What went wrong first, for `finish`'s message.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.failed.store(true, Ordering::SeqCst);
        let mut first = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(why);
        }
    }

    fn file_path(&self, number: u64) -> Path {
        self.dir.clone().join(load_file_name(number))
    }
}

/// `LOAD00000001.parquet`: DMS's full-load file name, numbered from 1 with 8 hexadecimal digits
/// as DMS numbers them (`LOAD00000009`, `LOAD0000000A`, ..., `LOAD00000010` is the 16th).
fn load_file_name(number: u64) -> String {
    format!("LOAD{number:08X}.parquet")
}

/// The number in a full-load file name, or `None` for any other name (including the staging
/// files a local upload leaves while in progress).
fn parse_load_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("LOAD")?.strip_suffix(".parquet")?;
    // Hexadecimal; names inlet wrote before it numbered as DMS does are decimal, which parse as
    // hexadecimal numbers at least as large, so a rerun still removes the ones past its own.
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

impl fmt::Debug for FullLoadTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FullLoadTable")
            .field("table", &self.shared.table)
            .field("dir", &self.shared.target.location(&self.shared.dir))
            .finish_non_exhaustive()
    }
}

impl FullLoadTable {
    pub(crate) fn new(target: &ParquetTarget, table: &TableSchema) -> Self {
        let name = table.id.to_string();
        let props = target.writer_properties(table, "full-load");
        Self {
            shared: Arc::new(Shared {
                dir: target.table_dir(table),
                input_columns: table.columns.len(),
                file_schema: file_schema(target, table),
                props,
                target: target.clone(),
                table: name,
                last_number: AtomicU64::new(0),
                highest_completed: AtomicU64::new(0),
                touched: AtomicBool::new(false),
                files: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                open_writers: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
                failure: Mutex::new(None),
            }),
        }
    }

    /// A writer for one worker. It opens a file on its first non-empty batch.
    pub fn writer(&self) -> LoadFileWriter {
        self.shared.open_writers.fetch_add(1, Ordering::SeqCst);
        LoadFileWriter {
            shared: Arc::clone(&self.shared),
            open: None,
            rows_written: 0,
            failed: false,
            completing: None,
        }
    }

    /// Completes the load once every writer was closed: deletes the table's `LOAD*.parquet`
    /// files numbered above the highest this run wrote (all of them if it wrote none), and
    /// returns the totals. Fails, deleting nothing, if a writer failed or is still open (the
    /// caller then abandons the load).
    pub async fn finish(&self) -> Result<LoadSummary, SinkError> {
        let s = &self.shared;
        let open = s.open_writers.load(Ordering::SeqCst);
        if open > 0 {
            return Err(SinkError::Incomplete {
                table: s.table.clone(),
                message: format!(
                    "finish was called while {open} writer(s) were still open; close every \
                     writer first (this is a bug in the caller)"
                ),
            });
        }
        if s.failed.load(Ordering::SeqCst) {
            let why = s
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "a writer failed".into());
            return Err(SinkError::Incomplete {
                table: s.table.clone(),
                message: format!(
                    "the full load of {} is incomplete ({why}); run the full load of this \
                     table again",
                    s.target.location(&s.dir)
                ),
            });
        }

        let highest = s.highest_completed.load(Ordering::SeqCst);
        let cleanup_error =
            |action: &'static str, location: String, source: object_store::Error| {
                SinkError::Cleanup {
                    table: s.table.clone(),
                    action,
                    location,
                    hint: store_hint(s.target.kind, Some(&source)),
                    source: Box::new(source),
                }
            };
        // Only this folder's direct children: a table's files never live deeper, and another
        // table whose name starts the same is a different folder.
        let listing = s
            .target
            .store
            .list_with_delimiter(Some(&s.dir))
            .await
            .map_err(|e| cleanup_error("list", s.target.location(&s.dir), e))?;
        let stale: Vec<Path> = listing
            .objects
            .into_iter()
            .map(|o| o.location)
            .filter(|p| {
                p.filename()
                    .and_then(parse_load_file_name)
                    .is_some_and(|n| n > highest)
            })
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                table = %s.table,
                count = stale.len(),
                "deleting full-load files left by an earlier, larger run"
            );
            let locations = futures::stream::iter(stale.into_iter().map(Ok)).boxed();
            let mut deleted = s.target.store.delete_stream(locations);
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) => {}
                    // Already gone (deleted concurrently, or a listing that lagged): the goal
                    // is reached.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(cleanup_error(
                            "delete stale files in",
                            s.target.location(&s.dir),
                            e,
                        ))
                    }
                }
            }
        }

        Ok(LoadSummary {
            files: s.files.load(Ordering::SeqCst),
            rows: s.rows.load(Ordering::SeqCst),
            bytes: s.bytes.load(Ordering::SeqCst),
        })
    }
}

impl FullLoadTable {
    /// Ends a load that will not finish, after every writer was closed or dropped, so that no
    /// partial table stays readable. If this run never began completing a file, the folder is
    /// left as it was (an earlier run's set, untouched, since uploads in progress become visible
    /// only on completion). Otherwise it may have overwritten part of the earlier set, so every
    /// `LOAD` file of the table is deleted. Gives up at `deadline` (a signal must end the process
    /// within seconds) and says what is left.
    pub async fn abandon(&self, deadline: Instant) -> Abandoned {
        let s = &self.shared;
        s.fail("the load was abandoned".into());
        if !s.touched.load(Ordering::SeqCst) {
            return Abandoned::Untouched;
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut deleted = 0;
        // Two passes: a file whose completion was under way when its writer was cancelled may
        // land just after the first listing (a local upload is completed by a rename on a
        // blocking thread, which cancelling the task does not stop).
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep_until(
                    (tokio::time::Instant::now() + std::time::Duration::from_millis(200))
                        .min(deadline),
                )
                .await;
            }
            match self.delete_load_files(deadline).await {
                Ok(0) => break,
                Ok(n) => deleted += n,
                Err((remaining, why)) => return Abandoned::NotRemoved { remaining, why },
            }
        }
        Abandoned::Removed { files: deleted }
    }

    /// Deletes every `LOAD` file of the table by `deadline`: how many, or how many are left
    /// (at least 1 when unknown) and why.
    async fn delete_load_files(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<usize, (usize, String)> {
        let s = &self.shared;
        let at_least = (s.files.load(Ordering::SeqCst) as usize).max(1);
        let listing =
            tokio::time::timeout_at(deadline, s.target.store.list_with_delimiter(Some(&s.dir)))
                .await;
        let listing = match listing {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                return Err((
                    at_least,
                    format!(
                        "listing {} failed: {e}; {}",
                        s.target.location(&s.dir),
                        store_hint(s.target.kind, Some(&e))
                    ),
                ))
            }
            Err(_) => {
                return Err((
                    at_least,
                    format!(
                        "listing {} did not finish in the time a stop allows",
                        s.target.location(&s.dir)
                    ),
                ))
            }
        };
        let files: Vec<Path> = listing
            .objects
            .into_iter()
            .map(|o| o.location)
            .filter(|p| p.filename().and_then(parse_load_file_name).is_some())
            .collect();
        let total = files.len();
        if total == 0 {
            return Ok(0);
        }
        tracing::info!(
            table = %s.table,
            count = total,
            "deleting the LOAD files of an incomplete full load"
        );
        let mut deleted = 0usize;
        let mut why = None;
        let locations = futures::stream::iter(files.into_iter().map(Ok)).boxed();
        let mut stream = s.target.store.delete_stream(locations);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(None) => break,
                // Already gone: the goal is reached.
                Ok(Some(Ok(_))) | Ok(Some(Err(object_store::Error::NotFound { .. }))) => {
                    deleted += 1
                }
                Ok(Some(Err(e))) => {
                    why.get_or_insert_with(|| {
                        format!(
                            "a delete failed: {e}; {}",
                            store_hint(s.target.kind, Some(&e))
                        )
                    });
                }
                Err(_) => {
                    why = Some("deleting did not finish in the time a stop allows".into());
                    break;
                }
            }
        }
        match why {
            None => Ok(deleted),
            Some(why) => Err((total - deleted, why)),
        }
    }
}

/// The schema of the files: `Op`, then the timestamp column, then the table's columns (with
/// their `inlet.source_type` metadata), or why that is impossible.
fn file_schema(target: &ParquetTarget, table: &TableSchema) -> Result<SchemaRef, String> {
    let source = target.written_table(table).arrow_schema();
    let mut extra: Vec<Field> = Vec::new();
    if target.include_op {
        extra.push(Field::new(&*target.op_column, DataType::Utf8, false));
    }
    if let Some(name) = &target.timestamp_column {
        extra.push(target.timestamp_field(name));
    }
    if extra.is_empty() {
        return Ok(source);
    }
    // Case-insensitive, because Athena and Glue fold column names to lower case.
    for f in &extra {
        if let Some(c) = source
            .fields()
            .iter()
            .find(|c| c.name().eq_ignore_ascii_case(f.name()))
        {
            let fix = if *f.name() == *target.op_column && target.include_op {
                "`include_op_for_full_load` adds; set `op_column` to another name (e.g. \
                 \"dms_op\")"
            } else {
                "`timestamp_column` adds; change `timestamp_column`"
            };
            return Err(format!(
                "the table has a column {:?}, which collides with the {:?} column that {fix}, \
                 or exclude/rename the column",
                c.name(),
                f.name()
            ));
        }
    }
    let fields: Vec<Field> = extra
        .into_iter()
        .chain(source.fields().iter().map(|f| f.as_ref().clone()))
        .collect();
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        source.metadata().clone(),
    )))
}

/// Writes one worker's batches of a table into a sequence of files.
///
/// Memory: one in-progress row group (bounded by `row_group_rows` and
/// [`ROW_GROUP_MAX_BYTES`]), the encoded bytes of the last finished row group on their way to
/// the store, and the upload buffer (a few multipart parts). Files are never held whole.
pub struct LoadFileWriter {
    shared: Arc<Shared>,
    open: Option<OpenFile>,
    rows_written: u64,
    /// Set after an error: the rows of the failed file are lost, so the writer refuses to go on
    /// rather than leave a hole in the load.
    failed: bool,
    /// The file whose completion is under way, if any.
    completing: Option<Path>,
}

struct OpenFile {
    number: u64,
    path: Path,
    writer: AsyncArrowWriter<ObjectFile>,
    rows: u64,
}

impl fmt::Debug for LoadFileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadFileWriter")
            .field("table", &self.shared.table)
            .field("open_file", &self.open.as_ref().map(|o| o.number))
            .field("rows_written", &self.rows_written)
            .field("failed", &self.failed)
            .finish()
    }
}

impl LoadFileWriter {
    /// Appends a batch whose schema is the table's `arrow_schema()`. Adds the `Op` and timestamp
    /// columns if configured. Opens a file if none is open, and completes it once its written
    /// plus in-progress bytes reach the target's file size. Empty batches are ignored.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if self.failed {
            return Err(self.already_failed());
        }
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        // A rejected batch leaves a hole in the load just like a failed upload would.
        let batch = match self.file_batch(batch) {
            Ok(b) => b,
            Err(err) => {
                self.mark_failed(&err);
                return Err(err);
            }
        };

        if self.open.is_none() {
            self.open = Some(self.open_file(batch.schema())?);
        }
        let Some(file) = self.open.as_mut() else {
            // Unreachable: set just above. Kept as an error rather than a panic.
            return Err(self.already_failed());
        };
        if let Err(e) = file.writer.write(&batch).await {
            return Err(self.discard(e).await);
        }
        file.rows += n as u64;
        self.rows_written += n as u64;

        let size = file.writer.bytes_written() + file.writer.in_progress_size();
        if size as u64 >= self.shared.target.file_size_bytes {
            self.complete_file().await?;
        }
        Ok(())
    }

    /// Completes the open file, if any. Every writer must be closed before
    /// [`FullLoadTable::finish`].
    pub async fn close(mut self) -> Result<(), SinkError> {
        if self.failed {
            return Err(self.already_failed());
        }
        self.complete_file().await
    }

    /// Rows accepted by this writer so far (including those of its open file).
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// The batch as written: extra DMS columns first, then the source columns, under the file
    /// schema. `RecordBatch::try_new` checks the column types and nullability against it.
    fn file_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, SinkError> {
        let s = &self.shared;
        let schema_error = |message: String| SinkError::Schema {
            table: s.table.clone(),
            message,
        };
        let schema = s.file_schema.clone().map_err(schema_error)?;
        if batch.num_columns() != s.input_columns {
            return Err(schema_error(format!(
                "a batch has {} columns but the table has {}; the source and the table schema \
                 disagree (this is a bug in the source connector)",
                batch.num_columns(),
                s.input_columns
            )));
        }
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        if s.target.include_op {
            columns.push(Arc::new(StringArray::from_iter_values(
                std::iter::repeat_n("I", n),
            )));
        }
        if s.target.timestamp_column.is_some() {
            let now = chrono::Utc::now().timestamp_micros();
            let now: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from_value(now, n).with_timezone("UTC"));
            columns.push(
                s.target
                    .timestamp_values(&now)
                    .map_err(|e| schema_error(format!("cannot write the timestamp column: {e}")))?,
            );
        }
        for c in batch.columns() {
            columns.push(s.target.written_array(c).map_err(|e| {
                schema_error(format!("cannot write a column in its file form: {e}"))
            })?);
        }
        RecordBatch::try_new(schema, columns).map_err(|e| {
            schema_error(format!(
                "a batch does not match the table schema ({e}); this is a bug in the source \
                 connector"
            ))
        })
    }

    fn open_file(&mut self, schema: SchemaRef) -> Result<OpenFile, SinkError> {
        let s = &self.shared;
        let number = s.last_number.fetch_add(1, Ordering::SeqCst) + 1;
        let path = s.file_path(number);
        let sink = ObjectFile::new(Arc::clone(&s.target.store), path.clone(), s.target.kind);
        let options = ArrowWriterOptions::new().with_properties(s.props.clone());
        match AsyncArrowWriter::try_new_with_options(sink, schema, options) {
            Ok(writer) => Ok(OpenFile {
                number,
                path,
                writer,
                rows: 0,
            }),
            Err(source) => {
                // Nothing was sent to the store yet, so there is nothing to abort.
                let err = SinkError::Write {
                    table: s.table.clone(),
                    location: s.target.location(&path),
                    source: Box::new(source),
                    hint: "the table's Arrow schema cannot be written as Parquet; this is a bug \
                           in the type mapping"
                        .into(),
                };
                self.mark_failed(&err);
                Err(err)
            }
        }
    }

    /// Finishes the open file (footer, upload completion) and counts it.
    async fn complete_file(&mut self) -> Result<(), SinkError> {
        let Some(mut file) = self.open.take() else {
            return Ok(());
        };
        self.shared.touched.store(true, Ordering::SeqCst);
        // Until the file is counted: a writer dropped in between (its task cancelled) lost it.
        self.completing = Some(file.path.clone());
        if let Err(source) = file.writer.finish().await {
            let hint = abandon(file.writer, &self.shared.table).await;
            let err = self.write_error(&file.path, source, hint);
            self.mark_failed(&err);
            return Err(err);
        }
        let bytes = file.writer.bytes_written() as u64;
        let s = &self.shared;
        s.highest_completed.fetch_max(file.number, Ordering::SeqCst);
        s.files.fetch_add(1, Ordering::SeqCst);
        s.rows.fetch_add(file.rows, Ordering::SeqCst);
        s.bytes.fetch_add(bytes, Ordering::SeqCst);
        self.completing = None;
        tracing::debug!(
            table = %s.table,
            file = %s.target.location(&file.path),
            rows = file.rows,
            bytes,
            "full-load file written"
        );
        Ok(())
    }

    /// After a failed write: aborts the upload of the open file and returns the error.
    async fn discard(&mut self, source: parquet::errors::ParquetError) -> SinkError {
        let Some(file) = self.open.take() else {
            let err = self.write_error(&self.shared.dir, source, None);
            self.mark_failed(&err);
            return err;
        };
        let hint = abandon(file.writer, &self.shared.table).await;
        let err = self.write_error(&file.path, source, hint);
        self.mark_failed(&err);
        err
    }

    fn write_error(
        &self,
        path: &Path,
        source: parquet::errors::ParquetError,
        hint: Option<String>,
    ) -> SinkError {
        let s = &self.shared;
        SinkError::Write {
            table: s.table.clone(),
            location: s.target.location(path),
            source: Box::new(source),
            hint: hint.unwrap_or_else(|| store_hint(s.target.kind, None)),
        }
    }

    fn mark_failed(&mut self, err: &SinkError) {
        self.failed = true;
        self.shared.fail(err.to_string());
    }

    fn already_failed(&self) -> SinkError {
        SinkError::Incomplete {
            table: self.shared.table.clone(),
            message: "this writer failed earlier and cannot continue; run the full load of the \
                      table again"
                .into(),
        }
    }
}

impl Drop for LoadFileWriter {
    fn drop(&mut self) {
        self.shared.open_writers.fetch_sub(1, Ordering::SeqCst);
        if let Some(path) = self.completing.take() {
            // Cancelled while completing a file: whether it was stored is unknown, and its rows
            // were not counted, so the load cannot finish.
            self.shared.fail(format!(
                "a writer was dropped while completing {}",
                self.shared.target.location(&path)
            ));
        }
        let Some(file) = self.open.take() else {
            return;
        };
        // Dropped without close (a cancelled task, or an error elsewhere): the rows of the open
        // file are lost, so the load cannot finish. The object never became visible; abort the
        // upload so no parts linger (a local staging file is removed by object_store itself).
        self.shared.fail(format!(
            "a writer was dropped without close while {} was open",
            self.shared.target.location(&file.path)
        ));
        let mut sink = file.writer.into_inner();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = sink.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn load_file_names_round_trip() {
        assert_eq!(load_file_name(1), "LOAD00000001.parquet");
        assert_eq!(parse_load_file_name("LOAD00000001.parquet"), Some(1));
        // DMS numbers in hexadecimal.
        assert_eq!(load_file_name(10), "LOAD0000000A.parquet");
        assert_eq!(load_file_name(16), "LOAD00000010.parquet");
        assert_eq!(parse_load_file_name("LOAD0000000A.parquet"), Some(10));
        assert_eq!(parse_load_file_name("LOAD000000FF.parquet"), Some(255));
        assert_eq!(
            parse_load_file_name("LOAD123456789.parquet"),
            Some(0x1_2345_6789)
        );
        assert_eq!(parse_load_file_name("LOAD0001.parquet"), None);
        assert_eq!(parse_load_file_name("LOAD00000001.parquet#1"), None);
        assert_eq!(parse_load_file_name("LOAD0000000x.parquet"), None);
        assert_eq!(parse_load_file_name("20240101-000000.parquet"), None);
    }
}
