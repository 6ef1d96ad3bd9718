//! Full-load files of one table: `<prefix>/<schema>/<table>/LOAD00000001.parquet`, ...
//!
//! Several workers may load one table in parallel (ctid or key ranges). Each gets its own
//! [`LoadFileWriter`]; they share one [`FullLoadTable`], whose counter hands out file numbers, so
//! files never collide and their numbers are dense.
//!
//! A load may replace an earlier one that readers are reading (a table loaded again beside the
//! stream: a resync, a swapped table, a partition DDL, a column added with a default). So its
//! files are written into the table's staging folder ([`STAGING_DIR`]), which readers do not
//! see, and the earlier load's files and change files stay as they are until the new load is
//! complete. Then [`FullLoadTable::finish`] switches: it records the new load's highest file
//! number in the staging folder ([`SWITCH_MARKER`]), moves the new files into the table's folder
//! (replacing the earlier files of the same numbers), deletes the earlier `LOAD` files past them
//! and every change file (captured before the load, which holds their effect), then the record.
//! Readers see the earlier table or the new one; only while the switch runs (a rename per file)
//! do they see a mix. A switch interrupted by a crash is completed by the table's next load
//! before it writes anything, as its record says; the restarted task loads the table again,
//! as the load was not recorded in its checkpoint.
//!
//! A load that does not finish (a failed writer, an error elsewhere, a signal) calls
//! [`FullLoadTable::abandon`] instead: it deletes the files it staged; the table's folder holds
//! the earlier load as it was. Files a crash left in the staging folder are deleted by the
//! table's next load.
//!
//! A table whose folder holds no earlier load or change file (a first load) of a load that is
//! not resumable has nothing to keep readable: its files go straight into the table's folder,
//! as DMS writes them, since on S3 a move is a copy, which would double the cost of the largest
//! load a task does.
//!
//! A resumable load (`task.mode = "full-load"`, [`FullLoadTable::resume`]) always stages, a
//! first load too, ends its files at the end of each chunk and records the chunks done with
//! their files in `_inlet_load/PROGRESS` ([`PROGRESS_RECORD`]); a restart keeps those files
//! where they are, deletes any other file of the interrupted run, and numbers new files after
//! the kept ones. The numbers of the deleted files are missing from the new load, so its switch
//! also deletes the earlier load's files of those numbers ([`SWITCH_MARKER`]).
//! [`FullLoadTable::suspend`] ends such a load keeping what is recorded (a signal, a transient
//! error): as its files are staged, readers still see the earlier table (or none), never a
//! partial one. `abandon` deletes the record with the files. (A record of an earlier version,
//! whose first load wrote into the table's folder, resumes there.)

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use inlet_core::sink::LoadProgress;
use inlet_core::TableSchema;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;
use tokio_util::task::TaskTracker;

use crate::error::{store_hint, SinkError};
use crate::object_file::{abandon, ObjectFile};
use crate::target::ParquetTarget;

/// Name of the DMS operation column (`IncludeOpForFullLoad`).
pub const OP_COLUMN: &str = "Op";

/// Key-value metadata key naming the table (`schema.table`) in every file.
pub const TABLE_KEY: &str = "inlet.table";
/// Key-value metadata key saying what a file holds; `full-load` for these files.
pub const KIND_KEY: &str = "inlet.kind";

/// The folder, inside the table's, that a load writes its files into until it is complete. Its
/// name starts with `_`, which Athena, Glue, Spark and Trino treat as hidden, and a
/// `<table>/*.parquet` glob does not descend into folders: readers keep reading the earlier
/// load's files meanwhile.
pub const STAGING_DIR: &str = "_inlet_load";

/// In the staging folder while a load's files replace the earlier ones: the highest file number
/// of the new load, so that a switch interrupted by a crash can be completed. A resumed load may
/// lack some numbers below it (files of a chunk in flight at a crash, deleted): a second line
/// `missing N,N,...` names them, and the switch deletes the earlier load's files of those
/// numbers too.
pub const SWITCH_MARKER: &str = "SWITCH";

/// How many staged files a switch moves at once.
const SWITCH_MOVES_AT_ONCE: usize = 16;

/// In the staging folder while a resumable load (`task.mode = "full-load"`) runs: its progress
/// ([`inlet_core::sink::LoadProgress`]), the chunks it completed and their files. Deleted when
/// the load completes.
pub const PROGRESS_RECORD: &str = "PROGRESS";

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
    /// The table's folder holds what an earlier run left, if anything, as it was: this run's
    /// files were staged (and are deleted, or left to the table's next load to delete).
    Untouched,
    /// The table's `LOAD` files were deleted: the folder holds none. (Not produced since loads
    /// are staged; kept for callers that match on it.)
    Removed { files: usize },
    /// Deleting the table's `LOAD` files did not finish in time or failed: `remaining` of them
    /// (possibly all) are still there and must not be read.
    NotRemoved { remaining: usize, why: String },
    /// A resumable load: the `kept` files of its recorded chunks stay, the others were deleted;
    /// the next run resumes. `staged`: they are in the staging folder, readers do not see them
    /// (false only for a first load resumed from an earlier version's record, which wrote into
    /// the table's folder).
    Resumable { kept: usize, staged: bool },
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untouched => f.write_str(
                "not loaded; its folder holds what an earlier run left (if anything), \
                 unchanged",
            ),
            Self::Removed { files: 0 } => f.write_str("not loaded; its folder holds no LOAD file"),
            Self::Removed { files } => write!(
                f,
                "not loaded; its {files} incomplete LOAD file(s) were deleted, its folder holds \
                 none"
            ),
            Self::Resumable { kept, staged: true } => write!(
                f,
                "not loaded; its folder holds what an earlier run left (if anything), \
                 unchanged; the {kept} file(s) of its completed chunks are kept, staged (hidden \
                 from readers) and recorded: the next run of the load resumes after them"
            ),
            Self::Resumable {
                kept,
                staged: false,
            } => write!(
                f,
                "not loaded; the {kept} file(s) of its completed chunks are kept and recorded: \
                 the next run of the load resumes after them (do not read the table before it \
                 completes)"
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
    /// `<prefix>/<schema>/<table>/_inlet_load`: where this load's files are written.
    staging: Path,
    /// Set once an interrupted earlier switch was completed and files an earlier load left in
    /// the staging folder were deleted ([`Shared::prepare`]), before the first file is written.
    prepared: tokio::sync::Mutex<bool>,
    /// Set when the switch to this load's files began: from then on the folder may mix this
    /// load's files with the earlier ones until a switch completes.
    switching: AtomicBool,
    /// Set by [`Shared::prepare`] when the table's folder holds no file of an earlier load or
    /// stream: files are then written straight into it, with no staging and no switch.
    direct: AtomicBool,
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
    /// Set before the first file's completion starts: from then on the staging folder may hold
    /// files of this run, which `abandon` deletes.
    touched: AtomicBool,
    files: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// Writers created and not yet dropped.
    open_writers: AtomicUsize,
    /// Set when a writer failed or was dropped with an open file: the load is incomplete and
    /// `finish` must not present it as done (nor delete the old files).
    failed: AtomicBool,
    /// Set by [`FullLoadTable::resume`]: the load records its chunks, keeps the files of
    /// recorded ones when abandoned, and deletes its progress record when it finishes.
    resumable: AtomicBool,
    /// The writes that put objects into the load's folders (file completions, the progress
    /// record), each a task that runs to its end when its caller is cancelled: a local store
    /// lands a write by a rename on a blocking thread that cancelling does not stop, so
    /// `abandon` and `suspend` wait for these before deleting, or a file landing late would
    /// outlive them.
    landing: TaskTracker,
    /// The files (as recorded: path under the table's folder) the last recorded progress names:
    /// an abandoned resumable load keeps them.
    recorded: Mutex<HashSet<String>>,
    /// Numbers of the completed files of a resumable load (kept and new), for the switch's
    /// record of missing numbers.
    numbers: Mutex<BTreeSet<u64>>,
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

    /// Where file `number` is written: the staging folder, or the table's folder when there is
    /// nothing earlier to keep readable ([`Shared::direct`]).
    fn file_path(&self, number: u64) -> Path {
        self.files_dir().join(load_file_name(number))
    }

    /// The folder this load's files are written into.
    fn files_dir(&self) -> Path {
        if self.direct.load(Ordering::SeqCst) {
            self.dir.clone()
        } else {
            self.staging.clone()
        }
    }

    fn cleanup_error(
        &self,
        action: &'static str,
        path: &Path,
        source: object_store::Error,
    ) -> SinkError {
        SinkError::Cleanup {
            table: self.table.clone(),
            action,
            location: self.target.location(path),
            hint: store_hint(self.target.kind, Some(&source)),
            source: Box::new(source),
        }
    }

    fn marker(&self) -> Path {
        self.staging.clone().join(SWITCH_MARKER)
    }

    fn progress_path(&self) -> Path {
        self.staging.clone().join(PROGRESS_RECORD)
    }

    /// `path` under the table's folder (`LOAD00000001.parquet` or
    /// `_inlet_load/LOAD00000001.parquet`), as a resumable load records its files.
    fn relative(&self, path: &Path) -> String {
        let parts: Vec<String> = path
            .prefix_match(&self.dir)
            .map(|rest| rest.map(|p| p.as_ref().to_string()).collect())
            .unwrap_or_default();
        parts.join("/")
    }

    /// Before this load writes its first file (or finishes with none): completes a switch an
    /// earlier load began and did not end (a crash), then deletes what an earlier load left in
    /// the staging folder. Runs once; writers wait for it.
    async fn prepare(&self) -> Result<(), SinkError> {
        let mut done = self.prepared.lock().await;
        if *done {
            return Ok(());
        }
        let marker = self.marker();
        match self.target.store.get(&marker).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| self.cleanup_error("read", &marker, e))?;
                let (highest, missing) = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(parse_marker)
                    .ok_or_else(|| SinkError::Incomplete {
                        table: self.table.clone(),
                        message: format!(
                            "{} does not hold a file number; delete the table's folder and \
                             load the table again",
                            self.target.location(&marker)
                        ),
                    })?;
                tracing::warn!(
                    table = %self.table,
                    "completing the switch to a full load's files that was interrupted"
                );
                self.switch(highest, &missing).await?;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.cleanup_error("read", &marker, e)),
        }
        let left = self
            .target
            .store
            .list_with_delimiter(Some(&self.staging))
            .await
            .map_err(|e| self.cleanup_error("list", &self.staging, e))?;
        if !left.objects.is_empty() {
            tracing::info!(
                table = %self.table,
                count = left.objects.len(),
                "deleting the files an interrupted full load left in its staging folder"
            );
        }
        for o in left.objects {
            self.delete(&o.location).await?;
        }
        let table_files = self
            .target
            .store
            .list_with_delimiter(Some(&self.dir))
            .await
            .map_err(|e| self.cleanup_error("list", &self.dir, e))?;
        let earlier = table_files.objects.iter().any(|o| {
            o.location.filename().is_some_and(|name| {
                parse_load_file_name(name).is_some()
                    || crate::changes::ChangeFile::is_change_file(name)
            })
        });
        // A resumable load stages even a first load: a load it suspends (a signal, a transient
        // error) keeps its completed chunks' files for the next run, which readers must not
        // see as the table.
        self.direct.store(
            !earlier && !self.resumable.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        *done = true;
        Ok(())
    }

    /// Before each step of a switch: a daemon that lost the task (paused in the middle of a
    /// switch, continued after another daemon took the task) must not move or delete a file
    /// more; the new owner's next load completes the switch, as after a crash.
    fn may_go_on(&self) -> Result<(), SinkError> {
        match &self.target.gate {
            Some(gate) => gate().map_err(|why| SinkError::Incomplete {
                table: self.table.clone(),
                message: format!("the switch to the new load's files stopped: {why}"),
            }),
            None => Ok(()),
        }
    }

    /// Deletes one object; one already gone is fine.
    async fn delete(&self, path: &Path) -> Result<(), SinkError> {
        match self.target.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.cleanup_error("delete", path, e)),
        }
    }

    /// Makes the staged load numbered 1..=`highest` the table's: moves the staged files into the
    /// table's folder (replacing the earlier files of the same numbers), deletes the earlier
    /// `LOAD` files past `highest` and every change file, then the switch record. Each step can
    /// be repeated, so a switch interrupted anywhere is completed by running it again.
    async fn switch(&self, highest: u64, missing: &BTreeSet<u64>) -> Result<(), SinkError> {
        let staged = self
            .target
            .store
            .list_with_delimiter(Some(&self.staging))
            .await
            .map_err(|e| self.cleanup_error("list", &self.staging, e))?;
        let moves: Vec<(Path, Path)> = staged
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                if parse_load_file_name(name).is_none_or(|n| n > highest) {
                    return None;
                }
                let to = self.dir.clone().join(name);
                Some((o.location, to))
            })
            .collect();
        // Several at once: on S3 a move is a copy of the whole file, and a large table has
        // thousands of files (a resumable first load is staged too); until the last one is
        // moved, readers see a mix.
        let mut moving = futures::stream::iter(moves.into_iter().map(|(from, to)| async move {
            self.may_go_on()?;
            match self.target.store.rename(&from, &to).await {
                // Already moved by an earlier, interrupted switch.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.cleanup_error("move a new file into", &self.dir, e)),
            }
        }))
        .buffer_unordered(SWITCH_MOVES_AT_ONCE);
        while let Some(moved) = moving.next().await {
            moved?;
        }
        self.may_go_on()?;
        // Only this folder's direct children: a table's files never live deeper, and another
        // table whose name starts the same is a different folder.
        let listing = self
            .target
            .store
            .list_with_delimiter(Some(&self.dir))
            .await
            .map_err(|e| self.cleanup_error("list", &self.dir, e))?;
        let earlier: Vec<Path> = listing
            .objects
            .into_iter()
            .map(|o| o.location)
            .filter(|p| {
                p.filename().is_some_and(|name| {
                    parse_load_file_name(name).is_some_and(|n| n > highest || missing.contains(&n))
                        || crate::changes::ChangeFile::is_change_file(name)
                })
            })
            .collect();
        if !earlier.is_empty() {
            tracing::info!(
                table = %self.table,
                count = earlier.len(),
                "deleting the earlier full load's files past the new ones and the change files \
                 from before the new load"
            );
        }
        for p in &earlier {
            // The change files deleted here would be the new owner's once another daemon took
            // the task.
            self.may_go_on()?;
            self.delete(p).await?;
        }
        self.may_go_on()?;
        self.delete(&self.marker()).await?;
        self.target.remove_empty_local_folder(&self.staging);
        Ok(())
    }
}

/// What the switch marker says: the highest file number, and the numbers below it the load
/// lacks (`missing N,N`, a resumed load's).
fn parse_marker(text: &str) -> Option<(u64, BTreeSet<u64>)> {
    let mut lines = text.lines();
    let highest = lines.next()?.trim().parse::<u64>().ok()?;
    let mut missing = BTreeSet::new();
    if let Some(line) = lines.next() {
        let list = line.strip_prefix("missing ")?;
        for n in list.split(',').filter(|n| !n.is_empty()) {
            missing.insert(n.trim().parse::<u64>().ok()?);
        }
    }
    Some((highest, missing))
}

/// A file as a resumable load records it: its path under the table's folder and its size.
fn file_record(relative: &str, bytes: u64) -> String {
    format!("{relative} {bytes}")
}

/// The path and size of a recorded file, or None for another text.
fn parse_file_record(record: &str) -> Option<(&str, u64)> {
    let (path, bytes) = record.rsplit_once(' ')?;
    Some((path, bytes.parse().ok()?))
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
                staging: target.table_dir(table).join(STAGING_DIR),
                prepared: tokio::sync::Mutex::new(false),
                switching: AtomicBool::new(false),
                direct: AtomicBool::new(false),
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
                resumable: AtomicBool::new(false),
                landing: TaskTracker::new(),
                recorded: Mutex::new(HashSet::new()),
                numbers: Mutex::new(BTreeSet::new()),
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
            chunk_files: Vec::new(),
        }
    }

    /// Completes the load once every writer was closed: makes its staged files the table's, and
    /// deletes the earlier `LOAD*.parquet` files numbered above the highest this run wrote (all
    /// of them if it wrote none) and the table's change files, which the new load supersedes
    /// (see the module doc). Returns the totals. Fails, changing nothing in the table's folder,
    /// if a writer failed or is still open (the caller then abandons the load).
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

        // A load that wrote no file did not prepare yet.
        s.prepare().await?;
        let summary = LoadSummary {
            files: s.files.load(Ordering::SeqCst),
            rows: s.rows.load(Ordering::SeqCst),
            bytes: s.bytes.load(Ordering::SeqCst),
        };
        if s.direct.load(Ordering::SeqCst) {
            // Written in place: there was nothing to switch from.
            s.delete(&s.progress_path()).await?;
            s.target.remove_empty_local_folder(&s.staging);
            return Ok(summary);
        }
        let highest = s.highest_completed.load(Ordering::SeqCst);
        // A resumed load lacks the numbers of files a crash left incomplete (deleted).
        let missing: BTreeSet<u64> = if s.resumable.load(Ordering::SeqCst) {
            let numbers = s.numbers.lock().unwrap_or_else(PoisonError::into_inner);
            (1..=highest).filter(|n| !numbers.contains(n)).collect()
        } else {
            BTreeSet::new()
        };
        let mut marker = highest.to_string();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(u64::to_string).collect();
            marker.push_str(&format!("\nmissing {}", list.join(",")));
        }
        s.switching.store(true, Ordering::SeqCst);
        s.target
            .store
            .put(&s.marker(), marker.into())
            .await
            .map_err(|e| s.cleanup_error("record the switch in", &s.marker(), e))?;
        s.delete(&s.progress_path()).await?;
        s.switch(highest, &missing).await?;
        Ok(summary)
    }
}

/// A resumable load (`task.mode = "full-load"`, see [`inlet_core::sink::LoadProgress`]): its
/// record lives in the table's staging folder ([`PROGRESS_RECORD`]); each done chunk names its
/// files by their path under the table's folder, so a load that wrote straight into the table's
/// folder (a first load) resumes there, and one that staged its files resumes staging.
impl FullLoadTable {
    /// The progress an earlier, interrupted run recorded; None if there is none or it cannot be
    /// read (then the load starts over, which deletes what that run left).
    pub async fn recorded_progress(&self) -> Result<Option<LoadProgress>, SinkError> {
        let s = &self.shared;
        let path = s.progress_path();
        let bytes = match s.target.store.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| s.cleanup_error("read", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s.cleanup_error("read", &path, e)),
        };
        let progress = std::str::from_utf8(&bytes)
            .ok()
            .and_then(LoadProgress::decode)
            .filter(|p| {
                p.done
                    .iter()
                    .flat_map(|d| &d.files)
                    .all(|f| parse_file_record(f).is_some())
            });
        if progress.is_none() {
            tracing::warn!(table = %s.table, record = %s.target.location(&path), "the progress record of an interrupted full load is unreadable: the table is loaded from its start");
        }
        Ok(progress)
    }

    /// Continues `progress` before any writer writes: keeps the files of its done chunks (and
    /// counts them in the load's totals), deletes every other file an earlier run of this load
    /// left, numbers new files after the kept ones, and records `progress`. A progress with no
    /// done chunk starts the load as usual.
    pub async fn resume(&self, progress: &LoadProgress) -> Result<(), SinkError> {
        let s = &self.shared;
        s.resumable.store(true, Ordering::SeqCst);
        let kept: Vec<(String, u64)> = progress
            .done
            .iter()
            .flat_map(|d| &d.files)
            .filter_map(|f| parse_file_record(f).map(|(p, b)| (p.to_string(), b)))
            .collect();
        if kept.is_empty() {
            // Deletes what an earlier run left staged, its record included.
            s.prepare().await?;
            // Recorded when its first chunk begins; only chunks an earlier run left in flight
            // are worth recording now (for the count of rows read again).
            if progress.started.is_empty() {
                return Ok(());
            }
            return self.record_progress(progress).await;
        }
        let mut prepared = s.prepared.lock().await;
        let staged_prefix = format!("{STAGING_DIR}/");
        let marker = s.marker();
        let mut kept = kept;
        match s.target.store.head(&marker).await {
            Ok(_) => {
                // Every chunk was done and the switch to the staged files began: complete it;
                // the files are then the table's.
                drop(prepared);
                s.prepare().await?;
                prepared = s.prepared.lock().await;
                for (path, _) in kept.iter_mut() {
                    if let Some(name) = path.strip_prefix(&staged_prefix) {
                        *path = name.to_string();
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(s.cleanup_error("read", &marker, e)),
        }
        let direct = kept.iter().any(|(p, _)| !p.starts_with(&staged_prefix));
        s.direct.store(direct, Ordering::SeqCst);
        let keep: HashSet<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
        // What a killed chunk left: its completed files (not recorded), a local upload's
        // temporary file (`LOAD00000007.parquet#1`).
        let folder = s.files_dir();
        let listing = s
            .target
            .store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|e| s.cleanup_error("list", &folder, e))?;
        let progress_path = s.progress_path();
        let left: Vec<Path> = listing
            .objects
            .into_iter()
            .map(|o| o.location)
            .filter(|p| *p != progress_path && !keep.contains(s.relative(p).as_str()))
            .filter(|p| {
                !direct
                    || p.filename()
                        .is_some_and(|n| n.starts_with("LOAD") && n.contains(".parquet"))
            })
            .collect();
        if !left.is_empty() {
            tracing::info!(table = %s.table, count = left.len(), "deleting the files of chunks an interrupted full load did not complete");
        }
        for p in &left {
            s.delete(p).await?;
        }
        {
            let mut numbers = s.numbers.lock().unwrap_or_else(PoisonError::into_inner);
            for (path, bytes) in &kept {
                let name = path.rsplit('/').next().unwrap_or(path);
                if let Some(n) = parse_load_file_name(name) {
                    numbers.insert(n);
                    s.last_number.fetch_max(n, Ordering::SeqCst);
                    s.highest_completed.fetch_max(n, Ordering::SeqCst);
                }
                s.files.fetch_add(1, Ordering::SeqCst);
                s.bytes.fetch_add(*bytes, Ordering::SeqCst);
            }
        }
        let rows: u64 = progress.done.iter().map(|d| d.rows).sum();
        s.rows.fetch_add(rows, Ordering::SeqCst);
        s.touched.store(true, Ordering::SeqCst);
        *prepared = true;
        drop(prepared);
        // The record names the files where they are now.
        let mut progress = progress.clone();
        for d in &mut progress.done {
            for f in &mut d.files {
                if let Some((path, bytes)) = parse_file_record(f) {
                    let name = path.rsplit('/').next().unwrap_or(path);
                    let relative = if direct {
                        name.to_string()
                    } else {
                        format!("{staged_prefix}{name}")
                    };
                    *f = file_record(&relative, bytes);
                }
            }
        }
        self.record_progress(&progress).await
    }

    /// Replaces the progress record (one PUT: atomic on S3 and, via rename, on a folder).
    pub async fn record_progress(&self, progress: &LoadProgress) -> Result<(), SinkError> {
        let s = &self.shared;
        let path = s.progress_path();
        // Known as recorded before the write: a task cancelled once the record landed (a
        // failure elsewhere) must not have these files deleted by `suspend`. If the write does
        // not land, they are kept unrecorded, and the next run deletes them.
        let files: HashSet<String> = progress
            .done
            .iter()
            .flat_map(|d| &d.files)
            .filter_map(|f| parse_file_record(f).map(|(p, _)| p.to_string()))
            .collect();
        s.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(files);
        let store = Arc::clone(&s.target.store);
        let (at, record) = (path.clone(), progress.encode());
        s.landing
            .spawn(async move { store.put(&at, record.into()).await })
            .await
            .unwrap_or_else(|e| Err(object_store::Error::JoinError { source: e }))
            .map_err(|e| s.cleanup_error("record the load's progress in", &path, e))?;
        Ok(())
    }
}

impl FullLoadTable {
    /// Ends a load that will not finish, after every writer was closed or dropped: deletes the
    /// files it staged, so the table's folder holds the earlier load as it was. If the switch to
    /// its files had begun, the folder mixes both until the table's next load completes it.
    /// Gives up at `deadline` (a signal must end the process within seconds): staged files left
    /// are not read, and the table's next load deletes them.
    pub async fn abandon(&self, deadline: Instant) -> Abandoned {
        let s = &self.shared;
        s.fail("the load was abandoned".into());
        self.wait_for_landing(deadline).await;
        if s.resumable.load(Ordering::SeqCst) && !s.switching.load(Ordering::SeqCst) {
            // Nothing of it is kept, so nothing is to be resumed: the record goes first.
            s.recorded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            let path = s.progress_path();
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, s.delete(&path)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(table = %s.table, "{e}; the table's next load deletes it")
                }
                Err(_) => {
                    tracing::warn!(table = %s.table, "deleting {} did not finish in the time a stop allows; the table's next load deletes it", s.target.location(&path))
                }
            }
        }
        if s.switching.load(Ordering::SeqCst) {
            return Abandoned::NotRemoved {
                remaining: (s.files.load(Ordering::SeqCst) as usize).max(1),
                why: "the switch from the earlier load's files to this load's was interrupted; \
                      the next load of the table completes it"
                    .into(),
            };
        }
        if !s.touched.load(Ordering::SeqCst) {
            s.target.remove_empty_local_folder(&s.staging);
            return Abandoned::Untouched;
        }
        if let Err(why) = self
            .delete_staged_files(tokio::time::Instant::from_std(deadline))
            .await
        {
            tracing::warn!(table = %s.table, "{why}; the table's next load deletes them");
            return Abandoned::Untouched;
        }
        s.target.remove_empty_local_folder(&s.staging);
        Abandoned::Untouched
    }

    /// Ends a resumable load that its caller will resume (a signal, a transient error),
    /// after every writer was closed or dropped: deletes the files of chunks not recorded as
    /// done and keeps the recorded ones and the record, for the next run to resume after them.
    /// A load that is not resumable is abandoned instead.
    pub async fn suspend(&self, deadline: Instant) -> Abandoned {
        let s = &self.shared;
        if !s.resumable.load(Ordering::SeqCst) || s.switching.load(Ordering::SeqCst) {
            return self.abandon(deadline).await;
        }
        let kept = s
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if kept == 0 {
            // Nothing to resume after: ended like any load that does not finish.
            return self.abandon(deadline).await;
        }
        s.fail("the load was suspended".into());
        self.wait_for_landing(deadline).await;
        if let Err(why) = self
            .delete_staged_files(tokio::time::Instant::from_std(deadline))
            .await
        {
            tracing::warn!(table = %s.table, "{why}; the table's next load deletes them");
        }
        Abandoned::Resumable {
            kept,
            staged: !s.direct.load(Ordering::SeqCst),
        }
    }

    /// Waits until every write of the load that was under way has landed ([`Shared::landing`]),
    /// by `deadline`: then no write can add a file after what is deleted next. Writers are all
    /// closed or dropped when this is called, so no write starts after it.
    async fn wait_for_landing(&self, deadline: Instant) {
        let s = &self.shared;
        s.landing.close();
        let deadline = tokio::time::Instant::from_std(deadline);
        if tokio::time::timeout_at(deadline, s.landing.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                table = %s.table,
                "{} write(s) of the load were still under way when the time a stop allows ran \
                 out; what they land is deleted by the table's next load",
                s.landing.len()
            );
        }
    }

    /// Deletes the files this load wrote (staged, or in the table's folder when it had no
    /// earlier files) by `deadline`: how many, or why not all. A resumable load's record and
    /// the files it names are kept (an abandoned load cleared the record first).
    async fn delete_staged_files(&self, deadline: tokio::time::Instant) -> Result<usize, String> {
        let s = &self.shared;
        let folder = s.files_dir();
        let listing =
            tokio::time::timeout_at(deadline, s.target.store.list_with_delimiter(Some(&folder)))
                .await;
        let files: Vec<Path> = match listing {
            Ok(Ok(l)) => l
                .objects
                .into_iter()
                .map(|o| o.location)
                // In the table's folder only this load's LOAD files (there were no others).
                .filter(|p| {
                    folder == s.staging
                        || p.filename()
                            .is_some_and(|n| parse_load_file_name(n).is_some())
                })
                // A resumable load keeps its record and the files it names.
                .filter(|p| {
                    !s.resumable.load(Ordering::SeqCst)
                        || (*p != s.progress_path()
                            && !s
                                .recorded
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .contains(&s.relative(p)))
                })
                .collect(),
            Ok(Err(e)) => {
                return Err(format!(
                    "listing {} failed: {e}; {}",
                    s.target.location(&folder),
                    store_hint(s.target.kind, Some(&e))
                ))
            }
            Err(_) => {
                return Err(format!(
                    "listing {} did not finish in the time a stop allows",
                    s.target.location(&folder)
                ))
            }
        };
        let total = files.len();
        for f in files {
            match tokio::time::timeout_at(deadline, s.delete(&f)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("deleting a staged file failed: {e}")),
                Err(_) => return Err("deleting did not finish in the time a stop allows".into()),
            }
        }
        Ok(total)
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
    /// Files completed since the last [`LoadFileWriter::end_chunk`], as recorded.
    chunk_files: Vec<String>,
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
            if let Err(err) = self.shared.prepare().await {
                self.mark_failed(&err);
                return Err(err);
            }
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

    /// Completes the open file (the end of a chunk of a resumable load) and returns the record
    /// of each file completed since the last call: `<path under the table's folder> <bytes>`.
    pub async fn end_chunk(&mut self) -> Result<Vec<String>, SinkError> {
        if self.failed {
            return Err(self.already_failed());
        }
        self.complete_file().await?;
        Ok(std::mem::take(&mut self.chunk_files))
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
        let sink = ObjectFile::new(Arc::clone(&s.target.store), path.clone(), s.target.kind)
            .landing_on(s.landing.clone());
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
        if s.resumable.load(Ordering::SeqCst) {
            s.numbers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(file.number);
            self.chunk_files
                .push(file_record(&s.relative(&file.path), bytes));
        }
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
    fn switch_markers_and_file_records_round_trip() {
        assert_eq!(parse_marker("12"), Some((12, BTreeSet::new())));
        assert_eq!(
            parse_marker("12\nmissing 3,7"),
            Some((12, BTreeSet::from([3, 7])))
        );
        assert_eq!(parse_marker("12\nsomething"), None);
        assert_eq!(parse_marker("x"), None);
        let record = file_record("_inlet_load/LOAD00000003.parquet", 1234);
        assert_eq!(
            parse_file_record(&record),
            Some(("_inlet_load/LOAD00000003.parquet", 1234))
        );
        assert_eq!(parse_file_record("LOAD00000003.parquet"), None);
    }

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

#[cfg(test)]
mod resume_tests {
    use super::*;
    use crate::ParquetTargetConfig;
    use arrow_array::Int64Array;
    use inlet_core::sink::DoneChunk;
    use inlet_core::{Column, TableId};

    fn table() -> TableSchema {
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![Column {
                name: "id".into(),
                source_type: "bigint".into(),
                field: Field::new("id", DataType::Int64, false),
                distinct_values: None,
            }],
            primary_key: vec!["id".into()],
        }
    }

    fn batch(table: &TableSchema, ids: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            table.arrow_schema(),
            vec![Arc::new(Int64Array::from_iter_values(ids))],
        )
        .expect("batch")
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("LOAD"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn ids(dir: &std::path::Path) -> Vec<i64> {
        let mut ids = Vec::new();
        for name in names(dir) {
            let file = std::fs::File::open(dir.join(name)).expect("open");
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("footer")
                    .build()
                    .expect("reader");
            for b in reader {
                let b = b.expect("batch");
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("ids");
                ids.extend(col.values().iter().copied());
            }
        }
        ids.sort();
        ids
    }

    /// A resumed load that replaces an earlier one lacks the number of a file a crash left
    /// incomplete (a worker opened file 1 for a chunk that never completed while another
    /// completed file 2): the switch deletes the earlier load's file 1 too, so the table holds
    /// exactly the new load's rows.
    #[tokio::test]
    async fn a_resumed_reload_deletes_the_earlier_files_of_the_numbers_it_lacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = ParquetTarget::new(&ParquetTargetConfig::with_url(
            dir.path().to_str().expect("utf-8"),
        ))
        .expect("target");
        let table = table();
        let table_dir = dir.path().join("public").join("t");

        // The earlier load: files 1..=3, ids 0..300.
        let earlier = target.full_load(&table);
        for part in 0..3 {
            let mut w = earlier.writer();
            w.write(&batch(&table, part * 100..part * 100 + 100))
                .await
                .expect("write");
            w.close().await.expect("close");
        }
        earlier.finish().await.expect("finish");
        assert_eq!(names(&table_dir).len(), 3);

        // The new load, killed: chunk 0 opened file 1 and never completed; chunk 1 completed
        // file 2 and was recorded.
        let killed = target.full_load(&table);
        let mut progress = LoadProgress {
            guard: "g".into(),
            chunks: vec!["a".into(), "b".into(), "c".into()],
            ..Default::default()
        };
        killed.resume(&progress).await.expect("resume");
        let mut in_flight = killed.writer();
        in_flight
            .write(&batch(&table, 1000..1010))
            .await
            .expect("write");
        let mut done = killed.writer();
        done.write(&batch(&table, 1010..1020)).await.expect("write");
        let files = done.end_chunk().await.expect("end chunk");
        assert_eq!(
            files,
            vec![format!("{STAGING_DIR}/LOAD00000002.parquet {}", {
                let (_, bytes) = parse_file_record(&files[0]).expect("record");
                bytes
            })]
        );
        progress.done.push(DoneChunk {
            chunk: 1,
            rows: 10,
            files,
            at: None,
        });
        progress.started = vec![0];
        killed.record_progress(&progress).await.expect("record");
        // The crash: nothing settles (the open file's upload never completes).
        std::mem::forget(in_flight);
        std::mem::forget(done);
        drop(killed);

        // The restart resumes: chunk 1 is kept, chunks 0 and 2 are read now.
        let resumed = target.full_load(&table);
        let recorded = resumed
            .recorded_progress()
            .await
            .expect("read")
            .expect("a record");
        assert_eq!(recorded, progress);
        resumed.resume(&recorded).await.expect("resume");
        let mut w = resumed.writer();
        w.write(&batch(&table, 1000..1010)).await.expect("write");
        w.end_chunk().await.expect("end chunk");
        w.write(&batch(&table, 1020..1030)).await.expect("write");
        w.end_chunk().await.expect("end chunk");
        w.close().await.expect("close");
        let summary = resumed.finish().await.expect("finish");
        assert_eq!((summary.files, summary.rows), (3, 30));

        // Files 2, 3, 4; the earlier load's file 1 is gone (its 3 is replaced).
        assert_eq!(
            names(&table_dir),
            [
                "LOAD00000002.parquet",
                "LOAD00000003.parquet",
                "LOAD00000004.parquet"
            ]
        );
        assert_eq!(ids(&table_dir), (1000..1030).collect::<Vec<_>>());
        assert!(!table_dir.join(STAGING_DIR).join(PROGRESS_RECORD).exists());
    }
}
