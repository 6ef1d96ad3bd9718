//! Table maintenance, called by the daemon on a schedule ([`UpsertTable::maintain`]):
//!
//! 1. **Rewrite** data files whose deleted fraction reaches `rewrite_deleted_fraction`, and
//!    compact data files smaller than `small_file_mb` (two or more in a partition), into files
//!    of `file_size_mb`, without their deleted rows. Position-delete files that only name
//!    rewritten files go too. This is ONE `replace` snapshot carrying the same
//!    `inlet.position`, so the table reads the same before and after and the position is
//!    unchanged. Every manifest is rewritten into one data and one delete manifest, which also
//!    compacts the manifests CDC commits pile up.
//! 2. **Expire** snapshots older than `expire_snapshots_hours`, keeping the newest
//!    `keep_snapshots` (and always the current one).
//! 3. **Delete** objects under the table's folder that no remaining snapshot or logged
//!    metadata file references and that are older than `orphan_grace_minutes`: files of
//!    expired snapshots, of failed or killed commits. A file a live snapshot needs is never
//!    deleted (the table's latest metadata is read for it, not only this task's view); the
//!    grace period protects the files of a commit in flight (another process writing the
//!    table: a task starting up, another engine's compaction job, which may write for hours
//!    before it commits; 3 days by default, as Iceberg's own `remove_orphan_files`).
//!
//! The table must have nothing pending (commit first); the index is rebuilt after a rewrite.

use std::collections::{HashMap, HashSet};

use arrow_array::{BooleanArray, RecordBatch};
use iceberg::spec::{DataContentType, DataFile, Struct};

use crate::config::MaintenanceConfig;
use crate::files::{read_all, read_position_deletes, DataFileWriter};
use crate::schema::conform;
use crate::snapshot::{EntryInfo, Rewrite};
use crate::{IcebergError, UpsertTable};

/// What one maintenance run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaintenanceReport {
    /// Data files rewritten (removed from the table) and the files written in their place.
    pub rewritten_files: usize,
    pub added_files: usize,
    /// Rows copied into the new files, and deleted rows dropped on the way.
    pub rewritten_rows: u64,
    pub purged_deleted_rows: u64,
    /// Position-delete files removed because every file they named was rewritten.
    pub removed_delete_files: usize,
    pub expired_snapshots: usize,
    /// Unreferenced objects deleted from the table's folder.
    pub deleted_objects: usize,
}

impl UpsertTable {
    /// Runs maintenance now (`now`: the current time; tests pass a later one to age files).
    /// Fails if changes are waiting for a commit. On a commit conflict nothing of the rewrite
    /// is visible; reopen the table as after any failed commit.
    pub async fn maintain(
        &mut self,
        config: &MaintenanceConfig,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<MaintenanceReport, IcebergError> {
        self.check_usable()?;
        if self.pending_rows > 0
            || !self.deletes.is_empty()
            || self.truncated
            || self.opened.schema_changed
        {
            return Err(IcebergError::state(
                &self.table,
                "maintenance needs a committed table; commit the pending changes first",
            ));
        }
        let mut report = MaintenanceReport::default();
        let result = match self.rewrite(config, &mut report).await {
            Ok(()) => self.expire_and_clean(config, now, &mut report).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // Another engine committed meanwhile: take the table as it is now and leave the
            // maintenance to the next run (its plan was made on the older table).
            if matches!(e, IcebergError::CommitConflict { .. }) {
                match self.follow_foreign_commits().await {
                    Ok(true) => {
                        tracing::info!(table = %self.table, "another engine committed during maintenance; it runs again next time");
                        return Ok(report);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.poisoned = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        tracing::info!(table = %self.table, ?report, "maintenance done");
        Ok(report)
    }

    async fn rewrite(
        &mut self,
        config: &MaintenanceConfig,
        report: &mut MaintenanceReport,
    ) -> Result<(), IcebergError> {
        let catalog = self.opened.catalog.clone();
        let wh = self.target.inner.warehouse.clone();
        let mut data: Vec<EntryInfo> = Vec::new();
        let mut deletes: Vec<EntryInfo> = Vec::new();
        for manifest in self.opened.state.manifests.clone() {
            for e in catalog.read_entries(&manifest).await? {
                match e.file.content_type() {
                    DataContentType::Data => data.push(e),
                    _ => deletes.push(e),
                }
            }
        }
        // Which rows each data file has lost, and which files each delete file names.
        let mut gone: HashMap<String, Vec<u32>> = HashMap::new();
        let mut names: Vec<HashSet<String>> = Vec::with_capacity(deletes.len());
        for d in &deletes {
            let mut one = HashMap::new();
            read_position_deletes(&wh, &self.table, &d.file, &mut one).await?;
            names.push(one.keys().cloned().collect());
            for (k, mut v) in one {
                gone.entry(k).or_default().append(&mut v);
            }
        }
        for v in gone.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        let small = config.small_file_mb << 20;
        let mut groups: HashMap<Struct, Vec<usize>> = HashMap::new();
        for (i, e) in data.iter().enumerate() {
            let rows = e.file.record_count();
            let deleted = gone.get(e.file.file_path()).map_or(0, Vec::len) as u64;
            let by_deletes = deleted > 0
                && rows > 0
                && deleted as f64 / rows as f64 >= config.rewrite_deleted_fraction;
            let is_small = e.file.file_size_in_bytes() < small;
            if by_deletes || is_small || deleted >= rows {
                groups
                    .entry(e.file.partition().clone())
                    .or_default()
                    .push(i);
            }
        }
        // A lone small file without deletes gains nothing from a rewrite.
        groups.retain(|_, files| {
            files.len() > 1
                || files.iter().any(|i| {
                    gone.get(data[*i].file.file_path())
                        .is_some_and(|g| !g.is_empty())
                })
        });
        if groups.is_empty() {
            return Ok(());
        }
        let spec_id = self.opened.state.metadata().default_partition_spec_id();
        let mut added: Vec<DataFile> = Vec::new();
        let mut removed: HashSet<usize> = HashSet::new();
        let mut writers: Vec<DataFileWriter> = Vec::new();
        let result: Result<(), IcebergError> = async {
            for (partition, files) in &groups {
                let mut writer = DataFileWriter::new(
                    self.opened.locations.clone(),
                    self.file_schema.clone(),
                    self.target.inner.props.clone(),
                    self.target.inner.config.file_size_mb << 20,
                    "compact",
                )
                .with_partition(partition.clone(), spec_id);
                for &i in files {
                    let e = &data[i];
                    let dead = gone.get(e.file.file_path());
                    let batches = read_all(
                        &wh,
                        &self.table,
                        e.file.file_path(),
                        e.file.file_size_in_bytes(),
                    )
                    .await?;
                    let mut row = 0u32;
                    for batch in batches {
                        let n = batch.num_rows() as u32;
                        let batch = match dead {
                            Some(dead) if !dead.is_empty() => {
                                let keep = BooleanArray::from_iter(
                                    (row..row + n).map(|r| Some(dead.binary_search(&r).is_err())),
                                );
                                arrow_select::filter::filter_record_batch(&batch, &keep)
                                    .map_err(|e| IcebergError::schema(&self.table, e.to_string()))?
                            }
                            _ => batch,
                        };
                        row += n;
                        report.purged_deleted_rows += u64::from(n) - batch.num_rows() as u64;
                        let batch: RecordBatch = conform(&self.table, &batch, &self.file_schema)?;
                        writer.write(&batch).await?;
                    }
                    removed.insert(i);
                }
                writer.roll().await?;
                added.append(&mut writer.done);
                writers.push(writer);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            for w in &mut writers {
                w.abort().await;
            }
            return Err(e);
        }
        let removed_paths: HashSet<&str> =
            removed.iter().map(|i| data[*i].file.file_path()).collect();
        let live_paths: HashSet<&str> = data
            .iter()
            .map(|e| e.file.file_path())
            .filter(|p| !removed_paths.contains(p))
            .collect();
        let mut rewrite = Rewrite {
            position: self.committed,
            task: self.target.inner.task.clone(),
            ..Default::default()
        };
        for (d, named) in deletes.into_iter().zip(names) {
            if named.iter().any(|p| live_paths.contains(p.as_str())) {
                rewrite.kept_deletes.push(d);
            } else {
                rewrite.removed_deletes.push(d);
            }
        }
        for (i, e) in data.into_iter().enumerate() {
            if removed.contains(&i) {
                rewrite.removed_data.push(e);
            } else {
                rewrite.kept_data.push(e);
            }
        }
        report.rewritten_files = rewrite.removed_data.len();
        report.added_files = added.len();
        report.rewritten_rows = added.iter().map(DataFile::record_count).sum();
        report.removed_delete_files = rewrite.removed_deletes.len();
        rewrite.added = added;
        catalog
            .commit_rewrite(&mut self.opened.state, rewrite)
            .await?;
        // Rows moved: rebuild the file list and the index from the table.
        self.files.clear();
        self.index.clear();
        self.verify_cache = None;
        self.rebuild().await
    }

    async fn expire_and_clean(
        &mut self,
        config: &MaintenanceConfig,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut MaintenanceReport,
    ) -> Result<(), IcebergError> {
        let catalog = self.opened.catalog.clone();
        let metadata = self.opened.state.metadata();
        let current = metadata.current_snapshot_id();
        let mut snapshots: Vec<(i64, i64)> = metadata
            .snapshots()
            .map(|s| (s.timestamp_ms(), s.snapshot_id()))
            .collect();
        snapshots.sort_unstable_by(|a, b| b.cmp(a));
        let cutoff = now.timestamp_millis()
            - i64::try_from(config.expire_snapshots_hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000);
        let expire: Vec<i64> = snapshots
            .iter()
            .skip(config.keep_snapshots)
            .filter(|(ts, id)| *ts < cutoff && Some(*id) != current)
            .map(|(_, id)| *id)
            .collect();
        if !expire.is_empty() {
            catalog.expire(&mut self.opened.state, &expire).await?;
            report.expired_snapshots = expire.len();
        }
        let mut referenced = catalog.referenced(&self.opened.state).await?;
        // The table as it is now, not only as this task last committed it: another engine
        // (or, in a fleet, the task's new owner after this daemon was paused) may have
        // committed since without a conflict here (no commit was made above), and the files of
        // its commits are referenced only there.
        if let Some(latest) = catalog.load().await? {
            if latest.committed.uri != self.opened.state.committed.uri {
                referenced.extend(catalog.referenced(&latest).await?);
            }
        }
        let wh = self.target.inner.warehouse.clone();
        let dir = self.opened.locations.table_dir.clone();
        let grace = chrono::Duration::minutes(
            i64::try_from(config.orphan_grace_minutes).unwrap_or(i64::MAX / 60_000),
        );
        let subject = format!("table {}", self.table);
        let orphans: Vec<object_store::path::Path> = wh
            .list(&subject, &dir)
            .await?
            .into_iter()
            .filter(|o| {
                let name = o.location.filename().unwrap_or_default();
                name != "version-hint.text"
                    && !referenced.contains(&wh.uri(&o.location))
                    && o.last_modified + grace < now
            })
            .map(|o| o.location)
            .collect();
        report.deleted_objects = orphans.len();
        if !orphans.is_empty() {
            wh.delete(&subject, orphans).await?;
        }
        Ok(())
    }
}
