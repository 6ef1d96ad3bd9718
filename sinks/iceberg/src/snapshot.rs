//! Building and committing one snapshot: manifests for the files a commit adds, a manifest list
//! carrying the table's other manifests over, and the next metadata version with the snapshot
//! as `main`. The iceberg crate can only fast-append, so the row-delta (data plus
//! position-delete files) and the overwrite are assembled here from its public pieces; the
//! crate still (de)serializes every manifest, manifest list and metadata file.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use iceberg::io::{MemoryStorage, OutputFile, Storage};
use iceberg::spec::{
    DataFile, FormatVersion, Manifest, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Schema, Snapshot,
    SnapshotReference, SnapshotRetention, Summary, TableMetadata,
};
use inlet_core::Position;

use crate::catalog::{Catalog, CommittedMetadata, TableIdent};
use crate::IcebergError;

/// Snapshot-summary key of the source position up to which the table is complete.
pub const POSITION_KEY: &str = "inlet.position";
/// Snapshot-summary key of the task that wrote the snapshot.
pub const TASK_KEY: &str = "inlet.task";

/// A table as loaded: its committed metadata and the manifests of its current snapshot.
#[derive(Debug, Clone)]
pub(crate) struct TableState {
    pub(crate) committed: CommittedMetadata,
    pub(crate) manifests: Vec<ManifestFile>,
}

impl TableState {
    pub(crate) fn metadata(&self) -> &TableMetadata {
        &self.committed.metadata
    }

    /// The position the table holds for `task`: `inlet.position` of the newest snapshot `task`
    /// wrote, found by walking back from the current snapshot through the parents. Snapshots
    /// of other engines after it (a compaction, a delete, ...) carry no position and do not
    /// change it. When the walk finds none of the task's snapshots (another engine expired
    /// them), the table property `inlet.position.<task>`, committed with every snapshot the
    /// task writes, still says it.
    pub(crate) fn position(&self, task: &str) -> Option<Position> {
        let metadata = self.metadata();
        let own = self.history().find(|s| {
            s.summary()
                .additional_properties
                .get(TASK_KEY)
                .map(String::as_str)
                == Some(task)
        });
        let text = match own {
            Some(s) => s.summary().additional_properties.get(POSITION_KEY),
            None => metadata.properties().get(&position_property(task)),
        };
        text.and_then(|p| Position::parse(p))
    }

    /// The current snapshot and its ancestors, newest first, as far as the metadata still
    /// holds them.
    pub(crate) fn history(&self) -> impl Iterator<Item = &iceberg::spec::SnapshotRef> {
        let metadata = self.metadata();
        let mut next = metadata.current_snapshot_id();
        // A parent chain is finite and acyclic by the spec; the bound guards against a
        // damaged metadata file looping forever.
        let mut left = metadata.snapshots().count();
        std::iter::from_fn(move || {
            let snapshot = metadata.snapshot_by_id(next?)?;
            left = left.checked_sub(1)?;
            next = snapshot.parent_snapshot_id();
            Some(snapshot)
        })
    }

    /// Whether a snapshot of `task` was committed after `since` (the current snapshot this
    /// process last knew): another instance of the same task writes the table.
    pub(crate) fn written_by_since(&self, task: &str, since: Option<i64>) -> bool {
        self.history()
            .take_while(|s| Some(s.snapshot_id()) != since)
            .any(|s| {
                s.summary()
                    .additional_properties
                    .get(TASK_KEY)
                    .map(String::as_str)
                    == Some(task)
            })
    }
}

/// Table property holding the position of `task` (see [`TableState::position`]).
pub(crate) fn position_property(task: &str) -> String {
    format!("{POSITION_KEY}.{task}")
}

/// What one commit changes.
#[derive(Debug, Default)]
pub(crate) struct SnapshotChange {
    pub(crate) data_files: Vec<DataFile>,
    pub(crate) delete_files: Vec<DataFile>,
    /// Drop every file the table had (full-load overwrite, TRUNCATE) before adding these.
    pub(crate) replace_all: bool,
    /// A new current schema to commit with the snapshot.
    pub(crate) schema: Option<Schema>,
    pub(crate) position: Option<Position>,
    pub(crate) task: String,
}

/// The table's catalog plus what is needed to write its metadata files.
#[derive(Debug, Clone)]
pub(crate) struct TableCatalog {
    pub(crate) catalog: Catalog,
    pub(crate) ident: TableIdent,
    /// The lease epoch under which the task is owned (0: none), recorded with each commit
    /// ([`crate::lease::owned_by`]).
    pub(crate) owner_epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl TableCatalog {
    fn table(&self) -> String {
        self.ident.to_string()
    }

    /// Where a commit's manifests and manifest list go: the `metadata` folder of the table's
    /// files (see [`Catalog::files_dir`]).
    fn metadata_dir(
        &self,
        metadata: &TableMetadata,
    ) -> Result<object_store::path::Path, IcebergError> {
        Ok(self
            .catalog
            .files_dir(&self.ident, metadata)?
            .join("metadata"))
    }

    /// Loads the table and the manifest list of its current snapshot.
    pub(crate) async fn load(&self) -> Result<Option<TableState>, IcebergError> {
        let Some(committed) = self.catalog.load(&self.ident).await? else {
            return Ok(None);
        };
        let manifests = match committed.metadata.current_snapshot() {
            Some(s) => self.read_manifest_list(s.manifest_list()).await?,
            None => Vec::new(),
        };
        Ok(Some(TableState {
            committed,
            manifests,
        }))
    }

    /// Creates the table with `schema` and `spec` (format v2); fails with a conflict if
    /// another writer created it first.
    pub(crate) async fn create(
        &self,
        schema: Schema,
        spec: iceberg::spec::PartitionSpec,
        location: String,
        task: &str,
        more_properties: Vec<(String, String)>,
    ) -> Result<TableState, IcebergError> {
        let mut properties = HashMap::from([
            (
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            ),
            ("inlet.task".to_string(), task.to_string()),
        ]);
        properties.extend(more_properties);
        let built = iceberg::spec::TableMetadataBuilder::new(
            schema,
            spec,
            iceberg::spec::SortOrder::unsorted_order(),
            location,
            FormatVersion::V2,
            properties,
        )
        .and_then(|b| b.build())
        .map_err(|e| IcebergError::metadata(self.table(), "cannot create table metadata", e))?;
        let committed = self
            .catalog
            .commit(&self.ident, built.metadata, built.changes, None)
            .await?;
        Ok(TableState {
            committed,
            manifests: Vec::new(),
        })
    }

    pub(crate) async fn read_manifest_list(
        &self,
        uri: &str,
    ) -> Result<Vec<ManifestFile>, IcebergError> {
        let bytes = self.read(uri).await?;
        let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2).map_err(|e| {
            IcebergError::metadata(
                self.table(),
                format!("{uri} is not a valid manifest list"),
                e,
            )
        })?;
        Ok(list.consume_entries().into_iter().collect())
    }

    /// Live entries (added or existing) of a manifest, with their data sequence numbers.
    pub(crate) async fn read_manifest(
        &self,
        manifest: &ManifestFile,
    ) -> Result<Vec<(DataFile, i64)>, IcebergError> {
        let bytes = self.read(&manifest.manifest_path).await?;
        let parsed = Manifest::parse_avro(&bytes).map_err(|e| {
            IcebergError::metadata(
                self.table(),
                format!("{} is not a valid manifest", manifest.manifest_path),
                e,
            )
        })?;
        let (entries, _) = parsed.into_parts();
        Ok(entries
            .iter()
            .filter(|e| e.status() != ManifestStatus::Deleted)
            .map(|e| {
                (
                    e.data_file().clone(),
                    e.sequence_number().unwrap_or(manifest.sequence_number),
                )
            })
            .collect())
    }

    async fn read(&self, uri: &str) -> Result<Bytes, IcebergError> {
        let wh = self.catalog.warehouse();
        let path = wh
            .path_of(uri)
            .map_err(|m| IcebergError::state(self.table(), m))?;
        wh.get(&format!("table {}", self.ident), &path)
            .await?
            .ok_or_else(|| {
                IcebergError::state(
                    self.table(),
                    format!("{uri} is referenced by the table's metadata but does not exist"),
                )
            })
    }

    /// Commits one snapshot; on success `state` is the new version.
    pub(crate) async fn commit(
        &self,
        state: &mut TableState,
        change: SnapshotChange,
    ) -> Result<(), IcebergError> {
        let table = self.table();
        let meta_err = |m: &str, e: iceberg::Error| IcebergError::metadata(&table, m, e);
        let metadata = state.metadata().clone();
        let mut builder = metadata
            .clone()
            .into_builder(Some(state.committed.uri.clone()));
        builder = crate::lease::owned_by(builder, &metadata, &change.task, self)?;
        // The builder numbers an added schema itself (reusing an identical earlier one); the
        // snapshot must name the same id, so it is worked out here the same way.
        let new_schema = match change.schema.clone() {
            Some(schema) => {
                let id = metadata
                    .schemas_iter()
                    .find(|s| crate::schema::same_columns(s, &schema))
                    .map(|s| s.schema_id())
                    .unwrap_or_else(|| {
                        metadata
                            .schemas_iter()
                            .map(|s| s.schema_id())
                            .max()
                            .unwrap_or(0)
                            + 1
                    });
                Some(
                    schema
                        .into_builder()
                        .with_schema_id(id)
                        .build()
                        .map_err(|e| meta_err("cannot renumber the new schema", e))?,
                )
            }
            None => None,
        };
        if let Some(schema) = new_schema.clone() {
            builder = builder
                .add_current_schema(schema)
                .map_err(|e| meta_err("cannot add the new schema", e))?;
        }
        let schema = new_schema
            .map(Arc::new)
            .unwrap_or_else(|| metadata.current_schema().clone());
        if let Some(position) = change.position {
            builder = with_position_property(builder, &change.task, position)
                .map_err(|e| meta_err("cannot record the position as a table property", e))?;
        }
        let spec = metadata.default_partition_spec().as_ref().clone();
        let snapshot_id = new_snapshot_id(&metadata);
        let parent = metadata.current_snapshot_id();
        let sequence_number = metadata.next_sequence_number();

        // Manifests are produced in memory by the iceberg crate, then stored through
        // object_store like every other byte inlet writes.
        let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let dir = self.metadata_dir(&metadata)?;
        let wh = self.catalog.warehouse();
        let stem = uuid::Uuid::new_v4().simple().to_string();
        let mut new_manifests = Vec::new();
        for (content, files) in [
            (ManifestContentType::Data, &change.data_files),
            (ManifestContentType::Deletes, &change.delete_files),
        ] {
            if files.is_empty() {
                continue;
            }
            let n = new_manifests.len();
            let path = dir.clone().join(format!("{stem}-m{n}.avro"));
            let uri = wh.uri(&path);
            let output = OutputFile::new(memory.clone(), uri.clone());
            let builder =
                ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec.clone());
            let mut writer = match content {
                ManifestContentType::Data => builder.build_v2_data(),
                ManifestContentType::Deletes => builder.build_v2_deletes(),
            };
            for f in files {
                // -1: the entry inherits the snapshot's sequence number from the list.
                writer
                    .add_file(f.clone(), -1)
                    .map_err(|e| meta_err("cannot add a file to a manifest", e))?;
            }
            let mut manifest = writer
                .write_manifest_file()
                .await
                .map_err(|e| meta_err("cannot write a manifest", e))?;
            let bytes = memory
                .read(&uri)
                .await
                .map_err(|e| meta_err("cannot take the manifest from memory", e))?;
            // The schema in the header as Iceberg Java writes it (no `"default": 0`), which
            // readers such as Tableau Hyper require; the list records the new length.
            let bytes = crate::avro_header::without_value_defaults(&bytes).map_err(|e| {
                IcebergError::metadata(&table, "cannot rewrite the manifest's Avro schema", e)
            })?;
            manifest.manifest_length = bytes.len() as i64;
            wh.put(&format!("table {table}"), &path, bytes).await?;
            new_manifests.push(manifest);
        }
        let carried: Vec<ManifestFile> = if change.replace_all {
            Vec::new()
        } else {
            state.manifests.clone()
        };
        // New manifests first: readers plan them first, and they hold the newest rows.
        let (list_uri, manifests) = self
            .write_manifest_list(
                &memory,
                &dir,
                &stem,
                (snapshot_id, parent, sequence_number),
                new_manifests.into_iter().chain(carried).collect(),
            )
            .await?;

        let summary = summarize(&change, &state.manifests, &manifests, parent.is_some());
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence_number)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_uri)
            .with_summary(summary)
            .with_schema_id(schema.schema_id())
            .build();
        self.commit_snapshot(state, builder, snapshot, manifests)
            .await
    }

    /// Writes a manifest list for snapshot `(id, parent, sequence number)` and returns its URI
    /// and its entries as written (sequence numbers assigned).
    async fn write_manifest_list(
        &self,
        memory: &Arc<dyn Storage>,
        dir: &object_store::path::Path,
        stem: &str,
        (snapshot_id, parent, sequence_number): (i64, Option<i64>, i64),
        manifests: Vec<ManifestFile>,
    ) -> Result<(String, Vec<ManifestFile>), IcebergError> {
        let table = self.table();
        let meta_err = |m: &str, e: iceberg::Error| IcebergError::metadata(&table, m, e);
        let wh = self.catalog.warehouse();
        let list_path = dir
            .clone()
            .join(format!("snap-{snapshot_id}-1-{stem}.avro"));
        let list_uri = wh.uri(&list_path);
        let list_writer = memory
            .writer(&list_uri)
            .await
            .map_err(|e| meta_err("cannot open the manifest list", e))?;
        let mut list = ManifestListWriter::v2(list_writer, snapshot_id, parent, sequence_number);
        list.add_manifests(manifests.into_iter())
            .map_err(|e| meta_err("cannot write the manifest list", e))?;
        list.close()
            .await
            .map_err(|e| meta_err("cannot write the manifest list", e))?;
        let bytes = memory
            .read(&list_uri)
            .await
            .map_err(|e| meta_err("cannot take the manifest list from memory", e))?;
        let manifests = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
            .map_err(|e| meta_err("cannot re-read the manifest list", e))?
            .consume_entries()
            .into_iter()
            .collect::<Vec<_>>();
        wh.put(&format!("table {table}"), &list_path, bytes).await?;
        Ok((list_uri, manifests))
    }

    /// Adds `snapshot` as the new head of `main` and commits the metadata version through the
    /// catalog (refused if another writer committed since `state`).
    async fn commit_snapshot(
        &self,
        state: &mut TableState,
        builder: iceberg::spec::TableMetadataBuilder,
        snapshot: Snapshot,
        manifests: Vec<ManifestFile>,
    ) -> Result<(), IcebergError> {
        let table = self.table();
        let snapshot_id = snapshot.snapshot_id();
        let built = builder
            .add_snapshot(snapshot)
            .and_then(|b| {
                b.set_ref(
                    "main",
                    SnapshotReference::new(
                        snapshot_id,
                        SnapshotRetention::branch(None, None, None),
                    ),
                )
            })
            .and_then(|b| b.build())
            .map_err(|e| {
                IcebergError::metadata(&table, "cannot build the next metadata version", e)
            })?;
        let committed = self
            .catalog
            .commit(
                &self.ident,
                built.metadata,
                built.changes,
                Some(&state.committed),
            )
            .await?;
        *state = TableState {
            committed,
            manifests,
        };
        Ok(())
    }
}

/// Records `position` in the table property of `task`, so the position outlives the task's
/// snapshots when another engine expires them.
fn with_position_property(
    builder: iceberg::spec::TableMetadataBuilder,
    task: &str,
    position: Position,
) -> Result<iceberg::spec::TableMetadataBuilder, iceberg::Error> {
    builder.set_properties(HashMap::from([(
        position_property(task),
        position.to_string(),
    )]))
}

/// A snapshot id not used by the table yet (random, positive, as other writers make them).
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
        let id = (high & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// The snapshot summary: operation, the standard counters, and inlet's position and task.
fn summarize(
    change: &SnapshotChange,
    before: &[ManifestFile],
    after: &[ManifestFile],
    has_parent: bool,
) -> Summary {
    let adds = !change.data_files.is_empty();
    let deletes = !change.delete_files.is_empty();
    let removed_any = change.replace_all
        && before
            .iter()
            .any(|m| m.has_added_files() || m.has_existing_files());
    // Spec: append = only data files added; delete = only deletes (files removed, or delete
    // files added); overwrite = both, as a row-level update or full replacement.
    let operation = match (adds, deletes || removed_any) {
        (true, false) | (false, false) => Operation::Append,
        (false, true) => Operation::Delete,
        (true, true) => Operation::Overwrite,
    };
    let mut p = HashMap::new();
    let sum = |files: &[DataFile]| files.iter().map(|f| f.record_count()).sum::<u64>();
    let size = |files: &[DataFile]| files.iter().map(|f| f.file_size_in_bytes()).sum::<u64>();
    if adds {
        p.insert(
            "added-data-files".into(),
            change.data_files.len().to_string(),
        );
        p.insert("added-records".into(), sum(&change.data_files).to_string());
    }
    if deletes {
        p.insert(
            "added-delete-files".into(),
            change.delete_files.len().to_string(),
        );
        p.insert(
            "added-position-delete-files".into(),
            change.delete_files.len().to_string(),
        );
        p.insert(
            "added-position-deletes".into(),
            sum(&change.delete_files).to_string(),
        );
    }
    let added_size = size(&change.data_files) + size(&change.delete_files);
    if added_size > 0 {
        p.insert("added-files-size".into(), added_size.to_string());
    }
    let totals = |list: &[ManifestFile], content: ManifestContentType| {
        list.iter()
            .filter(|m| m.content == content)
            .fold((0u64, 0u64), |(files, rows), m| {
                (
                    files
                        + u64::from(m.added_files_count.unwrap_or(0))
                        + u64::from(m.existing_files_count.unwrap_or(0)),
                    rows + m.added_rows_count.unwrap_or(0) + m.existing_rows_count.unwrap_or(0),
                )
            })
    };
    if removed_any {
        let (files, rows) = totals(before, ManifestContentType::Data);
        p.insert("deleted-data-files".into(), files.to_string());
        p.insert("deleted-records".into(), rows.to_string());
    }
    let (data_files, records) = totals(after, ManifestContentType::Data);
    let (delete_files, position_deletes) = totals(after, ManifestContentType::Deletes);
    p.insert("total-data-files".into(), data_files.to_string());
    p.insert("total-records".into(), records.to_string());
    p.insert("total-delete-files".into(), delete_files.to_string());
    p.insert(
        "total-position-deletes".into(),
        position_deletes.to_string(),
    );
    p.insert("total-equality-deletes".into(), "0".into());
    if change.replace_all && has_parent {
        p.insert("replace-partitions".into(), "true".into());
    }
    if let Some(position) = change.position {
        p.insert(POSITION_KEY.into(), position.to_string());
    }
    p.insert(TASK_KEY.into(), change.task.clone());
    Summary {
        operation,
        additional_properties: p,
    }
}

/// A manifest entry as maintenance sees it, with inherited values filled in.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub(crate) file: DataFile,
    pub(crate) snapshot_id: i64,
    pub(crate) sequence_number: i64,
    pub(crate) file_sequence_number: i64,
}

/// What a maintenance commit changes: the files it adds (compacted), the live files it keeps
/// and the ones it removes, and the snapshots it expires. Every manifest is rewritten, so the
/// table's manifests are compacted too.
#[derive(Debug, Default)]
pub(crate) struct Rewrite {
    pub(crate) added: Vec<DataFile>,
    pub(crate) kept_data: Vec<EntryInfo>,
    pub(crate) kept_deletes: Vec<EntryInfo>,
    pub(crate) removed_data: Vec<EntryInfo>,
    pub(crate) removed_deletes: Vec<EntryInfo>,
    pub(crate) position: Option<Position>,
    pub(crate) task: String,
}

impl TableCatalog {
    /// Live entries of a manifest with their snapshot ids and sequence numbers (inherited
    /// from the manifest where the entry leaves them out).
    pub(crate) async fn read_entries(
        &self,
        manifest: &ManifestFile,
    ) -> Result<Vec<EntryInfo>, IcebergError> {
        let bytes = self.read(&manifest.manifest_path).await?;
        let parsed = Manifest::parse_avro(&bytes).map_err(|e| {
            IcebergError::metadata(
                self.table(),
                format!("{} is not a valid manifest", manifest.manifest_path),
                e,
            )
        })?;
        let (entries, _) = parsed.into_parts();
        Ok(entries
            .iter()
            .filter(|e| e.status() != ManifestStatus::Deleted)
            .map(|e| {
                let seq = e.sequence_number().unwrap_or(manifest.sequence_number);
                EntryInfo {
                    file: e.data_file().clone(),
                    snapshot_id: e.snapshot_id().unwrap_or(manifest.added_snapshot_id),
                    sequence_number: seq,
                    file_sequence_number: e.file_sequence_number.unwrap_or(seq),
                }
            })
            .collect())
    }

    /// Commits a `replace` snapshot (same rows, other files) carrying `position`.
    pub(crate) async fn commit_rewrite(
        &self,
        state: &mut TableState,
        rewrite: Rewrite,
    ) -> Result<(), IcebergError> {
        let table = self.table();
        let meta_err = |m: &str, e: iceberg::Error| IcebergError::metadata(&table, m, e);
        let metadata = state.metadata().clone();
        let mut builder = metadata
            .clone()
            .into_builder(Some(state.committed.uri.clone()));
        builder = crate::lease::owned_by(builder, &metadata, &rewrite.task, self)?;
        if let Some(position) = rewrite.position {
            builder = with_position_property(builder, &rewrite.task, position)
                .map_err(|e| meta_err("cannot record the position as a table property", e))?;
        }
        let schema = metadata.current_schema().clone();
        let spec = metadata.default_partition_spec().as_ref().clone();
        let snapshot_id = new_snapshot_id(&metadata);
        let parent = metadata.current_snapshot_id();
        let sequence_number = metadata.next_sequence_number();
        let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let dir = self.metadata_dir(&metadata)?;
        let wh = self.catalog.warehouse();
        let stem = uuid::Uuid::new_v4().simple().to_string();
        let mut manifests = Vec::new();
        for (content, added, kept, removed) in [
            (
                ManifestContentType::Data,
                &rewrite.added,
                &rewrite.kept_data,
                &rewrite.removed_data,
            ),
            (
                ManifestContentType::Deletes,
                &Vec::new(),
                &rewrite.kept_deletes,
                &rewrite.removed_deletes,
            ),
        ] {
            if added.is_empty() && kept.is_empty() && removed.is_empty() {
                continue;
            }
            let path = dir
                .clone()
                .join(format!("{stem}-r{}.avro", manifests.len()));
            let uri = wh.uri(&path);
            let output = OutputFile::new(memory.clone(), uri.clone());
            let builder =
                ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec.clone());
            let mut writer = match content {
                ManifestContentType::Data => builder.build_v2_data(),
                ManifestContentType::Deletes => builder.build_v2_deletes(),
            };
            for f in added {
                writer
                    .add_file(f.clone(), -1)
                    .map_err(|e| meta_err("cannot add a file to a manifest", e))?;
            }
            for e in kept {
                writer
                    .add_existing_file(
                        e.file.clone(),
                        e.snapshot_id,
                        e.sequence_number,
                        Some(e.file_sequence_number),
                    )
                    .map_err(|e| meta_err("cannot add a file to a manifest", e))?;
            }
            for e in removed {
                writer
                    .add_delete_file(
                        e.file.clone(),
                        e.sequence_number,
                        Some(e.file_sequence_number),
                    )
                    .map_err(|e| meta_err("cannot add a file to a manifest", e))?;
            }
            let mut manifest = writer
                .write_manifest_file()
                .await
                .map_err(|e| meta_err("cannot write a manifest", e))?;
            let bytes = memory
                .read(&uri)
                .await
                .map_err(|e| meta_err("cannot take the manifest from memory", e))?;
            // The schema in the header as Iceberg Java writes it (no `"default": 0`), which
            // readers such as Tableau Hyper require; the list records the new length.
            let bytes = crate::avro_header::without_value_defaults(&bytes).map_err(|e| {
                IcebergError::metadata(&table, "cannot rewrite the manifest's Avro schema", e)
            })?;
            manifest.manifest_length = bytes.len() as i64;
            wh.put(&format!("table {table}"), &path, bytes).await?;
            manifests.push(manifest);
        }
        let (list_uri, manifests) = self
            .write_manifest_list(
                &memory,
                &dir,
                &stem,
                (snapshot_id, parent, sequence_number),
                manifests,
            )
            .await?;

        let mut p = HashMap::new();
        let count = |v: usize| v.to_string();
        let records = |files: &mut dyn Iterator<Item = &DataFile>| {
            files.map(|f| f.record_count()).sum::<u64>().to_string()
        };
        p.insert("added-data-files".into(), count(rewrite.added.len()));
        p.insert("added-records".into(), records(&mut rewrite.added.iter()));
        p.insert(
            "deleted-data-files".into(),
            count(rewrite.removed_data.len()),
        );
        p.insert(
            "deleted-records".into(),
            records(&mut rewrite.removed_data.iter().map(|e| &e.file)),
        );
        p.insert(
            "removed-delete-files".into(),
            count(rewrite.removed_deletes.len()),
        );
        p.insert(
            "removed-position-delete-files".into(),
            count(rewrite.removed_deletes.len()),
        );
        let data_files = rewrite.added.len() + rewrite.kept_data.len();
        p.insert("total-data-files".into(), count(data_files));
        p.insert(
            "total-records".into(),
            records(
                &mut rewrite
                    .added
                    .iter()
                    .chain(rewrite.kept_data.iter().map(|e| &e.file)),
            ),
        );
        p.insert(
            "total-delete-files".into(),
            count(rewrite.kept_deletes.len()),
        );
        p.insert(
            "total-position-deletes".into(),
            records(&mut rewrite.kept_deletes.iter().map(|e| &e.file)),
        );
        p.insert("total-equality-deletes".into(), "0".into());
        if let Some(position) = rewrite.position {
            p.insert(POSITION_KEY.into(), position.to_string());
        }
        p.insert(TASK_KEY.into(), rewrite.task.clone());
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence_number)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_uri)
            .with_summary(Summary {
                operation: Operation::Replace,
                additional_properties: p,
            })
            .with_schema_id(schema.schema_id())
            .build();
        self.commit_snapshot(state, builder, snapshot, manifests)
            .await
    }

    /// Commits a metadata version without the given snapshots (the current one is never
    /// among them).
    pub(crate) async fn expire(
        &self,
        state: &mut TableState,
        snapshot_ids: &[i64],
    ) -> Result<(), IcebergError> {
        let table = self.table();
        let built = state
            .metadata()
            .clone()
            .into_builder(Some(state.committed.uri.clone()))
            .remove_snapshots(snapshot_ids)
            .build()
            .map_err(|e| IcebergError::metadata(&table, "cannot expire snapshots", e))?;
        let committed = self
            .catalog
            .commit(
                &self.ident,
                built.metadata,
                built.changes,
                Some(&state.committed),
            )
            .await?;
        state.committed = committed;
        Ok(())
    }

    /// Every object the table's metadata references: the current and logged metadata files,
    /// and for each snapshot its manifest list, manifests and live files.
    pub(crate) async fn referenced(
        &self,
        state: &TableState,
    ) -> Result<std::collections::HashSet<String>, IcebergError> {
        let metadata = state.metadata();
        let mut refs = std::collections::HashSet::new();
        refs.insert(state.committed.uri.clone());
        for log in metadata.metadata_log() {
            refs.insert(log.metadata_file.clone());
        }
        let mut seen_manifests = std::collections::HashSet::new();
        for snapshot in metadata.snapshots() {
            refs.insert(snapshot.manifest_list().to_string());
            for manifest in self.read_manifest_list(snapshot.manifest_list()).await? {
                if !seen_manifests.insert(manifest.manifest_path.clone()) {
                    continue;
                }
                refs.insert(manifest.manifest_path.clone());
                for e in self.read_entries(&manifest).await? {
                    refs.insert(e.file.file_path().to_string());
                }
            }
        }
        Ok(refs)
    }
}
