//! CDC into a table: change batches are applied to an open batch in memory, guided by the
//! primary-key index, and each `commit` writes ONE snapshot holding the new data file(s) and a
//! position-delete file, with the source position in its summary.
//!
//! - insert: appended to the open batch;
//! - update / delete of a row already in a data file: a position delete (file, row) found
//!   through the index; of a row still in the open batch: that row is dropped in memory;
//! - truncate: the commit replaces every file of the table.
//!
//! Tables without a key are an append-only change log instead: every change is a row, with
//! its op, position and commit time.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow_schema::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{DataContentType, DataFile, Struct};
use inlet_core::{Position, TableSchema, OP_COLUMN, POSITION_COLUMN};

use crate::files::{read_columns, read_position_deletes, PartitionedWriter, PositionDeleteWriter};
use crate::index::{loc, unpack, Entry, KeyCodec, PkIndex, PENDING_FILE};
use crate::schema::{conform, file_schema, relaxed, same_columns};
use crate::snapshot::SnapshotChange;
use crate::target::OpenedTable;
use crate::{IcebergError, IcebergTarget};

/// A data file of the table as the index knows it.
#[derive(Debug, Clone)]
pub(crate) struct LiveFile {
    pub(crate) uri: Arc<str>,
    pub(crate) size: u64,
    pub(crate) rows: u64,
    pub(crate) deleted: u64,
    /// Partition value and spec id (empty / 0 when unpartitioned).
    pub(crate) partition: Struct,
    pub(crate) spec_id: i32,
}

impl LiveFile {
    pub(crate) fn of(f: &DataFile, spec_id: i32) -> Self {
        Self {
            uri: f.file_path().into(),
            size: f.file_size_in_bytes(),
            rows: f.record_count(),
            deleted: 0,
            partition: f.partition().clone(),
            spec_id,
        }
    }
}

/// What a commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSummary {
    /// Whether a snapshot was committed (false: nothing new, not even the position).
    pub committed: bool,
    pub data_files: usize,
    pub rows_written: u64,
    pub rows_deleted: u64,
}

/// One table open for CDC. Not shared: one task applies a table's changes in order.
pub struct UpsertTable {
    pub(crate) target: IcebergTarget,
    pub(crate) opened: OpenedTable,
    pub(crate) table: String,
    pub(crate) file_schema: SchemaRef,
    /// Indices of the key columns in `file_schema`; empty for a change log.
    pub(crate) key_columns: Vec<usize>,
    pub(crate) codec: Option<Arc<KeyCodec>>,
    pub(crate) index: PkIndex,
    pub(crate) files: Vec<LiveFile>,
    /// The open batch: rows (in the file schema) waiting for the next commit.
    pub(crate) pending: Vec<RecordBatch>,
    /// Rows in `pending` (materialized).
    pub(crate) pending_rows: usize,
    /// Per pending row (including rows of a batch being applied): index key, and whether a
    /// later change replaced or deleted it.
    pub(crate) pending_hash: Vec<u64>,
    pub(crate) pending_dead: Vec<bool>,
    /// Position deletes of the next commit: file id → rows.
    pub(crate) deletes: HashMap<u32, Vec<u32>>,
    pub(crate) truncated: bool,
    pub(crate) committed: Option<Position>,
    /// Set when a commit failed midway: the in-memory state no longer matches the table.
    pub(crate) poisoned: Option<String>,
    /// Key columns of the committed file last read to check a hash collision.
    pub(crate) verify_cache: Option<(u32, Vec<ArrayRef>)>,
    /// The change batches applied since the last commit, with the source shape each came in:
    /// when another engine committed meanwhile, they are applied again to the table as it is
    /// now (see [`UpsertTable::follow_foreign_commits`]).
    pub(crate) applied: Vec<(TableSchema, RecordBatch)>,
    /// The source shape at the last commit (or open): where re-applying `applied` starts.
    pub(crate) base_source: TableSchema,
}

/// How often a commit refused because another engine committed first is planned again on the
/// newer table before the conflict goes to the caller (who restarts from its checkpoint).
const COMMIT_ATTEMPTS: usize = 10;

/// Position-delete files a commit writes at once.
const DELETE_FILE_WRITES: usize = 8;

impl std::fmt::Debug for UpsertTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpsertTable")
            .field("table", &self.table)
            .field("committed", &self.committed)
            .field("pending_rows", &self.pending_rows)
            .finish()
    }
}

fn key_indices(layout_key: &[String], schema: &SchemaRef) -> Vec<usize> {
    layout_key
        .iter()
        .filter_map(|k| schema.index_of(k).ok())
        .collect()
}

fn make_codec(
    table: &str,
    key_columns: &[usize],
    schema: &SchemaRef,
) -> Result<Option<Arc<KeyCodec>>, IcebergError> {
    if key_columns.is_empty() {
        return Ok(None);
    }
    let types = key_columns
        .iter()
        .map(|i| schema.field(*i).data_type().clone())
        .collect();
    let nullable = key_columns.iter().any(|i| schema.field(*i).is_nullable());
    KeyCodec::new(types, nullable)
        .map(|c| Some(Arc::new(c)))
        .map_err(|m| IcebergError::schema(table, m))
}

impl UpsertTable {
    pub(crate) async fn open(
        target: IcebergTarget,
        opened: OpenedTable,
    ) -> Result<Self, IcebergError> {
        let table = opened.catalog.ident.to_string();
        let file_schema = file_schema(&opened.schema);
        let key_columns = key_indices(&opened.layout.key, &file_schema);
        let codec = make_codec(&table, &key_columns, &file_schema)?;
        let committed = opened.state.position(&target.inner.task);
        let base_source = opened.layout.source.clone();
        let mut this = Self {
            target,
            opened,
            table,
            file_schema,
            key_columns,
            codec,
            index: PkIndex::default(),
            files: Vec::new(),
            pending: Vec::new(),
            pending_rows: 0,
            pending_hash: Vec::new(),
            pending_dead: Vec::new(),
            deletes: HashMap::new(),
            truncated: false,
            committed,
            poisoned: None,
            verify_cache: None,
            applied: Vec::new(),
            base_source,
        };
        this.rebuild().await?;
        Ok(this)
    }

    /// Rebuilds the file list and the index from the table: live data files, minus the rows
    /// its position-delete files remove; key columns only, read by projection.
    pub(crate) async fn rebuild(&mut self) -> Result<(), IcebergError> {
        let catalog = self.opened.catalog.clone();
        let wh = self.target.inner.warehouse.clone();
        let mut data: Vec<(DataFile, i32)> = Vec::new();
        let mut deleted: HashMap<String, Vec<u32>> = HashMap::new();
        for manifest in self.opened.state.manifests.clone() {
            for (file, _seq) in catalog.read_manifest(&manifest).await? {
                match file.content_type() {
                    DataContentType::Data => data.push((file, manifest.partition_spec_id)),
                    DataContentType::PositionDeletes => {
                        read_position_deletes(&wh, &self.table, &file, &mut deleted).await?
                    }
                    DataContentType::EqualityDeletes => {
                        return Err(IcebergError::state(
                            &self.table,
                            format!(
                                "{} is an equality-delete file, written by another tool; \
                                 inlet keeps tables with position deletes only. Rewrite the \
                                 table's deletes (e.g. Spark rewrite_position_delete_files / \
                                 compaction) or reload the table",
                                file.file_path()
                            ),
                        ))
                    }
                }
            }
        }
        let Some(codec) = self.codec.clone() else {
            self.files = data
                .iter()
                .map(|(f, spec)| LiveFile::of(f, *spec))
                .collect();
            return Ok(());
        };
        let key_ids: Vec<i32> = self
            .key_columns
            .iter()
            .filter_map(|i| {
                self.opened
                    .schema
                    .field_by_name(self.file_schema.field(*i).name())
                    .map(|f| f.id)
            })
            .collect();
        let total: u64 = data.iter().map(|(f, _)| f.record_count()).sum();
        let gone: usize = deleted.values().map(Vec::len).sum();
        self.index.reserve((total as usize).saturating_sub(gone));
        for (file, spec_id) in &data {
            let id = u32::try_from(self.files.len()).map_err(|_| {
                IcebergError::state(
                    &self.table,
                    "more than 4 billion data files; compact the table",
                )
            })?;
            let mut gone = deleted.remove(file.file_path()).unwrap_or_default();
            gone.sort_unstable();
            gone.dedup();
            self.files.push(LiveFile {
                deleted: gone.len() as u64,
                ..LiveFile::of(file, *spec_id)
            });
            let batches = read_columns(
                &wh,
                &self.table,
                file.file_path(),
                file.file_size_in_bytes(),
                &key_ids,
            )
            .await?;
            let mut row: u32 = 0;
            for batch in batches {
                let columns = self.cast_keys(batch.columns(), codec.types())?;
                let hashes = codec
                    .hashes(&columns)
                    .map_err(|m| IcebergError::schema(&self.table, m))?;
                for (i, h) in hashes.into_iter().enumerate() {
                    let here = loc(id, row);
                    row += 1;
                    if gone.binary_search(&(row - 1)).is_ok() {
                        continue;
                    }
                    self.index_insert_committed(h, here, &columns, i).await?;
                }
            }
        }
        self.index.shrink_if_sparse();
        tracing::info!(
            table = %self.table,
            rows = self.index.len(),
            files = self.files.len(),
            bytes_per_row = self.index_bytes_per_row(),
            "primary-key index rebuilt"
        );
        Ok(())
    }

    /// Adds a committed row to the index during the rebuild, resolving hash collisions.
    async fn index_insert_committed(
        &mut self,
        h: u64,
        here: u64,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<(), IcebergError> {
        let exact = self.codec.as_ref().is_some_and(|c| c.is_exact());
        match self.index.entry(h) {
            Entry::Absent => self.index.set(h, here),
            Entry::One(other) if exact => {
                tracing::warn!(table = %self.table, "a key occurs twice in the table; keeping the later row");
                self.kill(other);
                self.index.set(h, here);
            }
            Entry::One(other) => {
                let mine = self.key_bytes(columns, row)?;
                let theirs = self.key_at(other, None).await?;
                if mine == theirs {
                    tracing::warn!(table = %self.table, "a key occurs twice in the table; keeping the later row");
                    self.kill(other);
                    self.index.set(h, here);
                } else {
                    self.index.collide(h, (theirs, other), (mine, here));
                }
            }
            Entry::Collided => {
                let mine = self.key_bytes(columns, row)?;
                if let Some(other) = self.index.exact_get(&mine) {
                    self.kill(other);
                }
                self.index.exact_set(mine, here);
            }
        }
        Ok(())
    }

    fn cast_keys(
        &self,
        columns: &[ArrayRef],
        types: &[arrow_schema::DataType],
    ) -> Result<Vec<ArrayRef>, IcebergError> {
        columns
            .iter()
            .zip(types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    arrow_cast::cast(c, t).map_err(|e| {
                        IcebergError::schema(&self.table, format!("key column to {t}: {e}"))
                    })
                }
            })
            .collect()
    }

    fn key_bytes(&self, columns: &[ArrayRef], row: usize) -> Result<Arc<[u8]>, IcebergError> {
        let Some(codec) = &self.codec else {
            return Err(IcebergError::state(
                &self.table,
                "key of a table without a key",
            ));
        };
        codec
            .key_bytes(columns, row)
            .map_err(|m| IcebergError::schema(&self.table, m))
    }

    /// The exact key of the row at `location`: from the open batch, from the batch being
    /// applied (`current`: its key columns and the rows taken from it so far), or read back
    /// from its data file. Only needed when two keys share a hash, which is rare.
    async fn key_at(
        &mut self,
        location: u64,
        current: Option<(&[ArrayRef], &[u32])>,
    ) -> Result<Arc<[u8]>, IcebergError> {
        let (file, row) = unpack(location);
        if file == PENDING_FILE {
            let p = row as usize;
            if p >= self.pending_rows {
                let Some((columns, taken)) = current else {
                    return Err(IcebergError::state(
                        &self.table,
                        "index points past the open batch",
                    ));
                };
                let i = taken.get(p - self.pending_rows).copied().unwrap_or(0) as usize;
                return self.key_bytes(columns, i);
            }
            let mut start = 0;
            for batch in &self.pending {
                if p < start + batch.num_rows() {
                    let columns: Vec<ArrayRef> = self
                        .key_columns
                        .iter()
                        .map(|i| batch.column(*i).clone())
                        .collect();
                    return self.key_bytes(&columns, p - start);
                }
                start += batch.num_rows();
            }
            return Err(IcebergError::state(
                &self.table,
                "index points past the open batch",
            ));
        }
        let cached = matches!(&self.verify_cache, Some((f, _)) if *f == file);
        if !cached {
            let Some(live) = self.files.get(file as usize).cloned() else {
                return Err(IcebergError::state(
                    &self.table,
                    "index points at an unknown file",
                ));
            };
            let key_ids: Vec<i32> = self
                .key_columns
                .iter()
                .filter_map(|i| {
                    self.opened
                        .schema
                        .field_by_name(self.file_schema.field(*i).name())
                        .map(|f| f.id)
                })
                .collect();
            let wh = self.target.inner.warehouse.clone();
            let batches = read_columns(&wh, &self.table, &live.uri, live.size, &key_ids).await?;
            let types = self
                .codec
                .as_ref()
                .map(|c| c.types().to_vec())
                .unwrap_or_default();
            let mut columns = Vec::new();
            for k in 0..key_ids.len() {
                let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(k).clone()).collect();
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                let joined = arrow_select::concat::concat(&refs)
                    .map_err(|e| IcebergError::state(&self.table, format!("{}: {e}", live.uri)))?;
                columns.push(joined);
            }
            let columns = self.cast_keys(&columns, &types)?;
            self.verify_cache = Some((file, columns));
        }
        let Some((_, columns)) = &self.verify_cache else {
            return Err(IcebergError::state(&self.table, "key cache vanished"));
        };
        let columns = columns.clone();
        self.key_bytes(&columns, row as usize)
    }

    /// Marks the row at `location` as gone: dropped from the open batch, or a position delete.
    fn kill(&mut self, location: u64) {
        let (file, row) = unpack(location);
        if file == PENDING_FILE {
            if let Some(dead) = self.pending_dead.get_mut(row as usize) {
                *dead = true;
            }
        } else {
            self.deletes.entry(file).or_default().push(row);
            if let Some(f) = self.files.get_mut(file as usize) {
                f.deleted += 1;
            }
        }
    }

    /// The source position the table holds everything up to (`inlet.position` of its
    /// current snapshot). The caller re-sends changes after it; changes at or below it are
    /// skipped by `apply` too.
    pub fn committed_position(&self) -> Option<Position> {
        self.committed
    }

    /// Live rows the index holds (keyed tables).
    pub fn indexed_rows(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes of the primary-key index per indexed row (0 when empty or for a change log).
    pub fn index_bytes_per_row(&self) -> f64 {
        let rows = self.index.len();
        if rows == 0 {
            0.0
        } else {
            self.index.heap_bytes() as f64 / rows as f64
        }
    }

    /// Rows waiting in the open batch (including ones already replaced in memory).
    pub fn pending_rows(&self) -> usize {
        self.pending_hash.len()
    }

    /// The table's location (what readers open).
    pub fn location(&self) -> String {
        self.opened.state.metadata().location().to_string()
    }

    /// Whether the table is an append-only change log (no primary key, no key configured).
    pub fn is_change_log(&self) -> bool {
        self.codec.is_none()
    }

    pub(crate) fn check_usable(&self) -> Result<(), IcebergError> {
        match &self.poisoned {
            Some(m) => Err(IcebergError::state(
                &self.table,
                format!(
                    "an earlier commit failed ({m}); reopen the table with upsert_table, which \
                     resumes from its committed position"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Applies a change batch (`inlet_core::change_schema(table)` layout). `table` is the
    /// source's current shape: when it differs from the table's, the Iceberg schema evolves
    /// (committed with the next snapshot). Rows at or below the committed position are
    /// skipped (already in the table).
    pub async fn apply(
        &mut self,
        table: &TableSchema,
        batch: &RecordBatch,
    ) -> Result<(), IcebergError> {
        self.check_usable()?;
        let names = self.opened.column_names;
        let table = &self.target.written_table(table, names)?;
        let batch = &self.target.written_batch(&self.table, batch, names)?;
        self.applied.push((table.clone(), batch.clone()));
        if table != &self.opened.layout.source {
            self.evolve(table)?;
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let name = self.table.clone();
        let missing = |c: &str| {
            IcebergError::schema(
                &name,
                format!("change batch lacks the column {c} (expected inlet_core::change_schema)"),
            )
        };
        let ops = batch
            .column_by_name(OP_COLUMN)
            .ok_or_else(|| missing(OP_COLUMN))?;
        let ops =
            arrow_cast::cast(ops, &arrow_schema::DataType::Utf8).map_err(|_| missing(OP_COLUMN))?;
        let ops = ops.as_string::<i32>();
        let lsns = batch
            .column_by_name(POSITION_COLUMN)
            .ok_or_else(|| missing(POSITION_COLUMN))?;
        let lsns = arrow_cast::cast(lsns, &arrow_schema::DataType::Int64)
            .map_err(|_| missing(POSITION_COLUMN))?;
        let lsns = lsns.as_primitive::<arrow_array::types::Int64Type>();
        let committed = self.committed;
        // Defensive exactly-once: changes the table already holds are not applied twice.
        let fresh = |i: usize| committed.is_none_or(|c| (lsns.value(i) as u64) > c.0);
        // Relaxed: a delete may carry only its key, with NULL in NOT NULL columns; the rows
        // kept for writing are checked against the real schema at commit.
        let data = conform(&self.table, batch, &relaxed(&self.file_schema))?;

        let Some(codec) = &self.codec else {
            let keep = BooleanArray::from_iter((0..batch.num_rows()).map(|i| Some(fresh(i))));
            let kept = arrow_select::filter::filter_record_batch(&data, &keep)
                .map_err(|e| IcebergError::schema(&self.table, e.to_string()))?;
            self.push_pending(kept, None);
            return Ok(());
        };
        let exact = codec.is_exact();
        let key_cols: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|i| data.column(*i).clone())
            .collect();
        let hashes = codec
            .hashes(&key_cols)
            .map_err(|m| IcebergError::schema(&self.table, m))?;
        let mut taken: Vec<u32> = Vec::new();
        for (i, &h) in hashes.iter().enumerate() {
            if !fresh(i) || ops.is_null(i) {
                continue;
            }
            match ops.value(i) {
                "T" => {
                    self.truncate_all();
                    taken.clear();
                }
                "D" => match self.index.entry(h) {
                    Entry::Absent => {}
                    // Trusted without reading the key back: a delete names a row the source
                    // (and so this table) holds; see the crate docs.
                    Entry::One(l) => {
                        self.kill(l);
                        self.index.remove(h);
                    }
                    Entry::Collided => {
                        let k = self.key_bytes(&key_cols, i)?;
                        if let Some(l) = self.index.exact_get(&k) {
                            self.kill(l);
                            self.index.exact_remove(&k);
                        }
                    }
                },
                op @ ("I" | "U") => {
                    let p = self.pending_rows + taken.len();
                    let p = u32::try_from(p).map_err(|_| {
                        IcebergError::state(
                            &self.table,
                            "open batch over 4 billion rows; commit more often",
                        )
                    })?;
                    let here = loc(PENDING_FILE, p);
                    match self.index.entry(h) {
                        Entry::Absent => self.index.set(h, here),
                        Entry::One(l) => {
                            // An insert meeting a present hash: the same key inserted again
                            // (replace it) or a different key with the same hash (keep both).
                            let same = exact || op == "U" || {
                                let theirs = self.key_at(l, Some((&key_cols, &taken))).await?;
                                let mine = self.key_bytes(&key_cols, i)?;
                                let same = theirs == mine;
                                if !same {
                                    self.index.collide(h, (theirs, l), (mine, here));
                                }
                                same
                            };
                            if same {
                                self.kill(l);
                                self.index.set(h, here);
                            }
                        }
                        Entry::Collided => {
                            let k = self.key_bytes(&key_cols, i)?;
                            if let Some(l) = self.index.exact_get(&k) {
                                self.kill(l);
                            }
                            self.index.exact_set(k, here);
                        }
                    }
                    taken.push(i as u32);
                    self.pending_hash.push(h);
                    self.pending_dead.push(false);
                }
                other => {
                    return Err(IcebergError::schema(
                        &self.table,
                        format!(
                            "unknown change op {other:?} in {OP_COLUMN}; expected I, U, D or T"
                        ),
                    ))
                }
            }
        }
        if !taken.is_empty() {
            let rows = arrow_select::take::take_record_batch(&data, &UInt32Array::from(taken))
                .map_err(|e| IcebergError::schema(&self.table, e.to_string()))?;
            self.pending_rows += rows.num_rows();
            self.pending.push(rows);
        }
        Ok(())
    }

    /// Appends rows to the open batch of a change log (no index involved).
    fn push_pending(&mut self, rows: RecordBatch, _hash: Option<u64>) {
        if rows.num_rows() == 0 {
            return;
        }
        self.pending_hash
            .extend(std::iter::repeat_n(0, rows.num_rows()));
        self.pending_dead
            .extend(std::iter::repeat_n(false, rows.num_rows()));
        self.pending_rows += rows.num_rows();
        self.pending.push(rows);
    }

    /// TRUNCATE: every row goes, committed or pending.
    fn truncate_all(&mut self) {
        self.index.clear();
        self.files.clear();
        self.deletes.clear();
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_hash.clear();
        self.pending_dead.clear();
        self.verify_cache = None;
        self.truncated = true;
    }

    /// Follows a change of the source table's columns.
    fn evolve(&mut self, table: &TableSchema) -> Result<(), IcebergError> {
        let layout = self.target.layout(table, self.opened.column_names)?;
        if layout.key != self.opened.layout.key {
            return Err(IcebergError::schema(
                &self.table,
                format!(
                    "the key changed from {:?} to {:?}; inlet cannot re-key a table in place: \
                     reload the table (full load)",
                    self.opened.layout.key, layout.key
                ),
            ));
        }
        let current = &self.opened.schema;
        let last = current
            .highest_field_id()
            .max(self.opened.state.metadata().last_column_id());
        let wanted = layout.iceberg_schema(Some((current, last)), false)?;
        self.opened.layout = layout;
        if same_columns(&wanted, current) {
            return Ok(());
        }
        let new_file_schema = file_schema(&wanted);
        let key_columns = key_indices(&self.opened.layout.key, &new_file_schema);
        let codec = make_codec(&self.table, &key_columns, &new_file_schema)?;
        if let (Some(old), Some(new)) = (&self.codec, &codec) {
            if old.types() != new.types() && !(old.is_exact() && new.is_exact()) {
                return Err(IcebergError::schema(
                    &self.table,
                    "a key column's type changed; commit, then reopen the table with \
                     upsert_table so the index is rebuilt with the new type",
                ));
            }
        }
        let mut pending = Vec::with_capacity(self.pending.len());
        for batch in &self.pending {
            pending.push(conform(&self.table, batch, &relaxed(&new_file_schema))?);
        }
        tracing::info!(table = %self.table, "schema changed; committed with the next snapshot");
        self.pending = pending;
        self.file_schema = new_file_schema;
        self.key_columns = key_columns;
        self.codec = codec;
        self.opened.partitioner = crate::partition::Partitioner::new(
            &self.table,
            self.opened.state.metadata().default_partition_spec(),
            &wanted,
        )?;
        self.opened.schema = wanted;
        self.opened.schema_changed = true;
        Ok(())
    }

    /// Writes the open batch and the position deletes and commits ONE snapshot recording
    /// `position`. With nothing to write but a newer position, it commits a snapshot that
    /// adds no file (a new manifest list over the same manifests), so idle tables advance.
    pub async fn commit(&mut self, position: Position) -> Result<CommitSummary, IcebergError> {
        self.check_usable()?;
        let position = self.committed.map_or(position, |c| c.max(position));
        let live_rows = self.pending_dead.iter().filter(|d| !**d).count();
        let nothing = live_rows == 0
            && self.deletes.is_empty()
            && !self.truncated
            && !self.opened.schema_changed;
        if nothing && self.committed == Some(position) {
            // Whatever was applied changed nothing (a replay of committed changes).
            self.applied.clear();
            return Ok(CommitSummary::default());
        }
        let mut attempt = 1;
        loop {
            let refused = match self.commit_inner(position).await {
                Ok(summary) => {
                    self.applied.clear();
                    self.base_source = self.opened.layout.source.clone();
                    return Ok(summary);
                }
                Err(e) => e,
            };
            // Optimistic concurrency: the table changed between load and commit (metadata
            // version taken, Glue location or version moved, REST 409). If only other engines
            // committed, plan the commit again on the table as it is now.
            let again = match &refused {
                IcebergError::CommitConflict { .. } if attempt < COMMIT_ATTEMPTS => {
                    self.follow_foreign_commits().await
                }
                _ => Ok(false),
            };
            match again {
                Ok(true) => attempt += 1,
                Ok(false) => {
                    self.poisoned = Some(refused.to_string());
                    return Err(refused);
                }
                Err(e) => {
                    self.poisoned = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }

    /// After a commit was refused: reloads the table and, when the snapshots committed since
    /// the one this table last knew are all another engine's (a compaction, a delete, an
    /// expiry), takes the table as it is now: rebuilds the file list and the key index from
    /// its current snapshot's live data and delete files (so position deletes name files and
    /// rows that are live), and applies the changes since the last commit again. Returns false
    /// when a snapshot of this same task was committed meanwhile: a second instance of the
    /// task writes the table, and this one must not write over it.
    pub(crate) async fn follow_foreign_commits(&mut self) -> Result<bool, IcebergError> {
        let task = self.target.inner.task.clone();
        let known = self.opened.state.metadata().current_snapshot_id();
        let opened = self.target.open(&self.base_source, false).await?;
        if opened.state.written_by_since(&task, known) {
            return Ok(false);
        }
        let (now, before) = (opened.state.metadata(), self.opened.state.metadata());
        if now.current_snapshot_id() == known
            && now.current_schema_id() == before.current_schema_id()
            && now.default_partition_spec_id() == before.default_partition_spec_id()
        {
            // Only the metadata changed (snapshots expired, properties set): same files, same
            // rows; the next attempt builds on the new version.
            tracing::info!(table = %self.table, "the table's metadata changed meanwhile; committing on top");
            self.opened.state = opened.state;
            return Ok(true);
        }
        tracing::info!(
            table = %self.table,
            "another engine committed to the table; rebuilding the key index from its current \
             snapshot and applying the changes since the last commit again"
        );
        let applied = std::mem::take(&mut self.applied);
        let committed = self.committed;
        let mut now = UpsertTable::open(self.target.clone(), opened).await?;
        // The position is what this task committed last, whatever the other engine wrote.
        now.committed = committed;
        *self = now;
        for (schema, batch) in &applied {
            self.apply(schema, batch).await?;
        }
        Ok(true)
    }

    async fn commit_inner(&mut self, position: Position) -> Result<CommitSummary, IcebergError> {
        let inner = self.target.inner.clone();
        let mut writer = PartitionedWriter::new(
            self.opened.locations.clone(),
            self.file_schema.clone(),
            inner.props.clone(),
            inner.config.cdc_file_size_mb << 20,
            "cdc",
            self.opened.partitioner.clone(),
        );
        // Per writer slot (partition): the pending rows written to it, in order.
        let mut slot_rows: Vec<Vec<u32>> = Vec::new();
        let mut start = 0usize;
        for batch in &self.pending {
            let n = batch.num_rows();
            let dead = &self.pending_dead[start..start + n];
            let live: Vec<u32> = (0..n)
                .filter(|i| !dead[*i])
                .map(|i| (start + i) as u32)
                .collect();
            let batch = if dead.iter().any(|d| *d) {
                let keep = BooleanArray::from_iter(dead.iter().map(|d| Some(!d)));
                arrow_select::filter::filter_record_batch(batch, &keep)
                    .map_err(|e| IcebergError::schema(&self.table, e.to_string()))?
            } else {
                batch.clone()
            };
            let written = match conform(&self.table, &batch, &self.file_schema) {
                Ok(b) => writer.write(&b).await,
                Err(e) => Err(e),
            };
            let groups = match written {
                Ok(g) => g,
                Err(e) => {
                    writer.abort().await;
                    return Err(e);
                }
            };
            for (slot, rows) in groups {
                if slot_rows.len() <= slot {
                    slot_rows.resize_with(slot + 1, Vec::new);
                }
                slot_rows[slot].extend(rows.iter().map(|r| live[*r as usize]));
            }
            start += n;
        }
        let slot_files = match writer.finish().await {
            Ok(f) => f,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let new_files: Vec<DataFile> = slot_files.iter().flatten().cloned().collect();
        // Position deletes, file-scoped: one delete file per data file, naming it as its
        // `referenced_data_file` (Iceberg Java's default since 1.7). Readers then apply each
        // delete file to its one data file; polars' native reader reads nothing else.
        let mut named: Vec<(&u32, &Vec<u32>)> = self.deletes.iter().collect();
        named.sort_unstable_by_key(|(f, _)| **f);
        let mut rows_deleted = 0;
        let mut writes = Vec::with_capacity(named.len());
        for (f, rows) in named {
            let Some(lf) = self.files.get(*f as usize) else {
                return Err(IcebergError::state(
                    &self.table,
                    "a position delete names a data file the index does not know (a bug); \
                     restart the task, which rebuilds the index from the table",
                ));
            };
            rows_deleted += rows.len() as u64;
            writes.push(PositionDeleteWriter::write(
                &self.opened.locations,
                inner.props.clone(),
                vec![(lf.uri.clone(), rows.clone())],
                (lf.partition.clone(), lf.spec_id),
            ));
        }
        // An update touching many data files writes as many small files: a few at a time, so
        // the commit does not wait for each PUT in turn.
        let delete_files: Vec<DataFile> = futures::stream::iter(writes)
            .buffered(DELETE_FILE_WRITES)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let change = SnapshotChange {
            data_files: new_files.clone(),
            delete_files,
            replace_all: self.truncated,
            schema: self
                .opened
                .schema_changed
                .then(|| self.opened.schema.clone()),
            position: Some(position),
            task: inner.task.clone(),
        };
        self.opened
            .catalog
            .clone()
            .commit(&mut self.opened.state, change)
            .await?;

        // Committed: move the open batch's rows to their files in the index.
        for (slot, files) in slot_files.iter().enumerate() {
            let first = self.files.len();
            let spec_id = self.opened.state.metadata().default_partition_spec_id();
            self.files
                .extend(files.iter().map(|f| LiveFile::of(f, spec_id)));
            if self.codec.is_none() {
                continue;
            }
            let (mut k, mut pos) = (0usize, 0u64);
            for &p in slot_rows.get(slot).map(Vec::as_slice).unwrap_or_default() {
                while files.get(k).is_some_and(|f| pos >= f.record_count()) {
                    k += 1;
                    pos = 0;
                }
                let here = loc((first + k) as u32, pos as u32);
                pos += 1;
                let h = self.pending_hash[p as usize];
                match self.index.entry(h) {
                    Entry::Collided => {
                        let key = self.key_at(loc(PENDING_FILE, p), None).await?;
                        self.index.exact_set(key, here);
                    }
                    _ => self.index.set(h, here),
                }
            }
        }
        self.index.shrink_if_sparse();
        let summary = CommitSummary {
            committed: true,
            data_files: new_files.len(),
            rows_written: new_files.iter().map(|f| f.record_count()).sum(),
            rows_deleted,
        };
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_hash.clear();
        self.pending_dead.clear();
        self.deletes.clear();
        self.truncated = false;
        self.opened.schema_changed = false;
        self.committed = Some(position);
        Ok(summary)
    }

    /// Fraction of rows deleted per data file (maintenance picks files to rewrite by it).
    pub fn deleted_fractions(&self) -> Vec<(String, f64)> {
        self.files
            .iter()
            .filter(|f| f.rows > 0)
            .map(|f| (f.uri.to_string(), f.deleted as f64 / f.rows as f64))
            .collect()
    }
}
