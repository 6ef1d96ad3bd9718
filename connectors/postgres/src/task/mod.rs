//! A PostgreSQL source as the task engine drives it ([`inlet_core::source::Source`]): the
//! publication and the replication slot (whose it is, lost or not, failover and standby rules,
//! `start`), the first load inside the slot's exported snapshot (`begin`), tables that join
//! through a temporary slot's snapshot, the changes the stream does not carry (`rewrites`,
//! `added_defaults`, `seen`), the watch beside the stream (`watch`) and what a stream error
//! means (`capture`).

mod added_defaults;
mod begin;
mod capture;
mod rewrites;
mod seen;
mod start;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use inlet_core::snapshot::SourceError;
use inlet_core::source::{
    Begin, CaptureStart, CheckpointStore, Source, SourceFeedback, SourceReport, TaskSettings,
};
use inlet_core::{
    request_reload, CheckStatus, Checkpoint, Position, PostgresResume, Prerequisite, SourceResume,
    TableId, TableSchema, TableStates,
};

use crate::capture::ChangeCapture;
use crate::catalog::{columns_with_unwritten_defaults, discover, SourceTable};
use crate::check::{prerequisites, published_generated_columns};
use crate::config::{PgConnector, PostgresSourceConfig};
use crate::replication::{Lsn, ReplicationConnection};
use crate::slot::{drop_slot, ensure_publication, publication_plan};
use crate::slot_plan::SlotPlan;
use crate::snapshot::{BatchLimits, ExportedSnapshot, PgLoadSource};
pub use capture::PgCapture;
use capture::{AbortOnDrop, StreamErrors};
use start::StartCheck;

impl inlet_core::source::SourceTable for SourceTable {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }
    /// The relation's oid: a name that comes to hold another relation is loaded again.
    fn identity(&self) -> Option<String> {
        Some(self.oid.to_string())
    }
    fn estimated_rows(&self) -> Option<u64> {
        self.estimated_rows
    }
    fn size_bytes(&self) -> u64 {
        self.pages * 8192
    }
}

/// A consistent snapshot to load from: one exported for a full load, or one a replication slot
/// exported (its connection kept idle meanwhile; a temporary slot's connection goes with the
/// load).
pub enum PgSnapshot {
    Exported(ExportedSnapshot),
    OfSlot {
        name: String,
        exporter: Option<ReplicationConnection>,
    },
}

/// A task's PostgreSQL source.
pub struct PgTask {
    source: PostgresSourceConfig,
    connector: PgConnector,
    settings: TaskSettings,
    feedback: Arc<dyn SourceFeedback>,
    slot: String,
    publication: String,
    /// The first start of this run (later ones follow a re-discovery of the tables).
    first: bool,
    /// Why the slot cannot go on, when the last stream found out (see
    /// [`StreamErrors::publication_lost`]).
    lost: Arc<Mutex<Option<String>>>,
    /// This start's control connection: discovery, the start's checks, then the watch.
    control: Option<tokio_postgres::Client>,
    /// The tables of this start and the relation each is.
    discovered: Vec<(TableId, String)>,
    /// The replication connection the stream starts on.
    repl: Option<ReplicationConnection>,
    checkpoint_at: String,
    /// Each table's storage ([`rewrites`]) and its columns with catalog-only defaults
    /// ([`added_defaults`]) as of this start: the watch's baselines.
    storage: Option<HashMap<TableId, rewrites::Storage>>,
    unwritten_defaults: Option<HashSet<(TableId, String)>>,
}

impl PgTask {
    pub fn new(
        source: &PostgresSourceConfig,
        settings: TaskSettings,
        feedback: Arc<dyn SourceFeedback>,
    ) -> Result<Self, crate::PgError> {
        let publication = source.publication_name(&settings.task);
        let connector = PgConnector::new(source)?.with_publication(publication.clone());
        Ok(Self {
            slot: source.slot_name(&settings.task),
            publication,
            source: source.clone(),
            connector,
            settings,
            feedback,
            first: true,
            lost: Arc::default(),
            control: None,
            discovered: Vec::new(),
            repl: None,
            checkpoint_at: String::new(),
            storage: None,
            unwritten_defaults: None,
        })
    }

    fn control(&self) -> Result<&tokio_postgres::Client, SourceError> {
        self.control
            .as_ref()
            .ok_or_else(|| SourceError::failed("the source was used before discovery (a bug)"))
    }

    /// The start of a task whose first load did not finish, with its slot kept where it was
    /// created (`consistent_point`): the load goes on in the snapshot of a temporary slot
    /// created now, keeping the key-range chunks the earlier runs completed; the stream starts
    /// at the kept slot and drops, for each later chunk's keys, the changes its snapshot holds.
    /// The tables are recorded as the new snapshot sees them.
    async fn continue_load(
        &mut self,
        consistent_point: Lsn,
        tables: &[TableId],
    ) -> Result<Begin<PgSnapshot>, SourceError> {
        let mut exporter = ReplicationConnection::connect(&self.connector).await?;
        let name = format!("inlet_load_{}", std::process::id());
        let created = exporter
            .create_temporary_slot_exporting_snapshot(&name)
            .await?;
        let snapshot = created.snapshot_name.unwrap_or_default();
        let recorded = begin::first_records(self.control()?, Some(&snapshot), tables).await;
        self.repl = Some(ReplicationConnection::connect(&self.connector).await?);
        self.feedback.retained(None, false);
        Ok(Begin::Fresh {
            snapshot: Some(PgSnapshot::OfSlot {
                name: snapshot,
                // The temporary slot, which exported the snapshot, goes with its connection.
                exporter: Some(exporter),
            }),
            loaded_up_to: begin::loaded_up_to(created.consistent_point),
            resume_from: Some(begin::loaded_up_to(consistent_point)),
            first: Checkpoint {
                position: Position(consistent_point.0),
                tables: recorded,
                source: Some(SourceResume::Postgres(PostgresResume {
                    slot: self.slot.clone(),
                    created_by: None,
                })),
            },
            forget_changes: false,
        })
    }

    /// The task reloads tables whose rows changed without a change
    /// (`cdc.reload_on_unstreamed_change`, and a mode that loads).
    fn reloads_unstreamed(&self) -> bool {
        self.settings.load && self.settings.reload_on_unstreamed_change
    }
}

/// The `inlet check` lines of a CDC task's start: the slot (whose it is, lost, free slots), the
/// checkpoint's position against the server, the publication (privileges, replica identity),
/// and published generated columns.
#[allow(clippy::too_many_arguments)]
async fn start_report(
    task: &str,
    source: &PostgresSourceConfig,
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    store: &dyn CheckpointStore,
    tables: &[SourceTable],
    resnapshot: bool,
) -> Result<Vec<Prerequisite>, SourceError> {
    let checkpoint = store.read(task).await.map_err(SourceError::from_target)?;
    let publication = source.publication_name(task);
    let start = StartCheck::read(
        task, source, control, connector, store, checkpoint, tables, None, resnapshot,
    )
    .await?;
    let mut report = start.report(&source.slot_name(task), &publication, &store.location(task));
    report.extend(published_generated_columns(control, connector, &publication, tables).await?);
    Ok(report)
}

impl Source for PgTask {
    type Table = SourceTable;
    type Snapshot = PgSnapshot;
    type Load = PgLoadSource;
    type Capture = PgCapture;

    async fn discover(&mut self) -> Result<Vec<SourceTable>, SourceError> {
        let control = self.connector.connect().await?;
        let tables = discover(
            &control,
            &self.connector,
            &self.settings.selection,
            &self.settings.policy,
        )
        .await?;
        // A table without replica identity that appeared while the task ran is left out (it
        // was reported when it appeared); at the first start it stops the task, before
        // anything is written.
        let tables = if self.first || !self.settings.capture {
            tables
        } else {
            let plan =
                publication_plan(&control, &self.connector, &self.publication, &tables).await?;
            tables
                .into_iter()
                .filter(|t| !plan.no_identity.iter().any(|n| n.table == t.schema.id))
                .collect()
        };
        self.first = false;
        self.discovered = tables
            .iter()
            .map(|t| (t.schema.id.clone(), t.oid.to_string()))
            .collect();
        self.control = Some(control);
        Ok(tables)
    }

    async fn check(
        &mut self,
        store: &dyn CheckpointStore,
        capture: bool,
    ) -> Result<SourceReport, SourceError> {
        let client = match self.connector.connect().await {
            Ok(client) => client,
            Err(e) => return Ok(SourceReport::unreachable(e.to_string())),
        };
        let tables = match discover(
            &client,
            &self.connector,
            &self.settings.selection,
            &self.settings.policy,
        )
        .await
        {
            Err(crate::PgError::Selection(e)) => return Ok(SourceReport::selection(&e)),
            other => other?,
        };
        let mut report = prerequisites(&client, &self.connector, &tables, capture).await?;
        if capture && !tables.is_empty() {
            // What the start checks before it writes anything: the slot, the checkpoint, the
            // publication.
            report.extend(
                start_report(
                    &self.settings.task,
                    &self.source,
                    &client,
                    &self.connector,
                    store,
                    &tables,
                    self.settings.resnapshot_when_lost,
                )
                .await?,
            );
        }
        Ok(SourceReport::listing(&tables, report))
    }

    /// A full load's needs (privileges, a selection that matches) are checked in its snapshot
    /// by [`Source::load`].
    async fn prerequisites(
        &mut self,
        tables: &[SourceTable],
        capture: bool,
    ) -> Result<Vec<Prerequisite>, SourceError> {
        if !capture {
            return Ok(Vec::new());
        }
        let control = self.control()?;
        let mut out = prerequisites(control, &self.connector, tables, true).await?;
        out.extend(
            published_generated_columns(control, &self.connector, &self.publication, tables)
                .await?,
        );
        Ok(out)
    }

    async fn snapshot(&mut self) -> Result<PgSnapshot, SourceError> {
        // A full load reads the catalog in its snapshot: the control connection is not needed.
        self.control = None;
        Ok(PgSnapshot::Exported(
            ExportedSnapshot::export(&self.connector).await?,
        ))
    }

    async fn load(
        &self,
        snapshot: PgSnapshot,
        tables: &[SourceTable],
        joining: bool,
    ) -> Result<PgLoadSource, SourceError> {
        let snapshot = match snapshot {
            PgSnapshot::Exported(snapshot) => snapshot,
            PgSnapshot::OfSlot { name, exporter } => {
                let imported = ExportedSnapshot::import(&self.connector, &name).await?;
                match exporter {
                    Some(exporter) => imported.holding(exporter),
                    None => imported,
                }
            }
        };
        // The tables as the snapshot sees them.
        let mut found = discover(
            snapshot.client(),
            &self.connector,
            &self.settings.selection,
            &self.settings.policy,
        )
        .await?;
        if joining {
            found.retain(|t| tables.iter().any(|j| j.schema.id == t.schema.id));
            for t in tables {
                if !found.iter().any(|f| f.schema.id == t.schema.id) {
                    tracing::warn!(table = %t.schema.id, "the table no longer exists in the source (dropped or renamed away after it was discovered): its load is skipped");
                }
            }
        } else if found.is_empty() {
            return Err(SourceError::failed(
                "no table matches [tables] include/exclude; run `inlet check` to see what the source has",
            ));
        }
        let denied: Vec<String> = found
            .iter()
            .filter(|t| !t.can_select)
            .map(|t| t.schema.id.to_string())
            .collect();
        if !denied.is_empty() {
            return Err(SourceError::failed(format!(
                "the source user lacks SELECT on {0}; run GRANT SELECT ON {0} TO <user>",
                denied.join(", ")
            )));
        }
        tracing::info!(
            tables = found.len(),
            snapshot = snapshot.id(),
            "snapshot exported"
        );
        let limits = BatchLimits {
            rows: self.settings.batch_rows,
            bytes: self.settings.batch_bytes,
        };
        Ok(PgLoadSource::new(
            &self.connector,
            snapshot,
            found,
            self.settings.chunk_mb,
            limits,
        )
        .await?)
    }

    async fn begin(
        &mut self,
        store: &dyn CheckpointStore,
        checkpoint: Option<Checkpoint>,
        tables: &[SourceTable],
    ) -> Result<Begin<PgSnapshot>, SourceError> {
        let task = self.settings.task.clone();
        let slot = self.slot.clone();
        // An earlier start's connection (a load that went on in a new snapshot) goes first, so
        // it holds nothing of the slot.
        self.repl = None;
        self.checkpoint_at = store.location(&task);
        let lost = self.lost.lock().ok().and_then(|mut l| l.take());
        let control = self.control()?;
        let start_check = StartCheck::read(
            &task,
            &self.source,
            control,
            &self.connector,
            store,
            checkpoint,
            tables,
            lost,
            self.settings.resnapshot_when_lost,
        )
        .await?;
        let refusals: Vec<String> = start_check
            .report(&slot, &self.publication, &self.checkpoint_at)
            .into_iter()
            .filter(|p| p.status == CheckStatus::Missing)
            .map(|p| match p.fix {
                Some(fix) if fix != "see above" => format!("{}: {}; fix: {fix}", p.name, p.detail),
                _ => format!("{}: {}", p.name, p.detail),
            })
            .collect();
        if !refusals.is_empty() {
            if matches!(start_check.plan, Ok(SlotPlan::Lost { .. })) {
                self.feedback.retained(None, true);
            }
            return Err(SourceError::failed(refusals.join("\n")));
        }
        let StartCheck {
            checkpoint, plan, ..
        } = start_check;
        let plan = plan.map_err(SourceError::failed)?;
        ensure_publication(control, &self.connector, &self.publication, tables).await?;
        let ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
        // Whether the new slot exports its snapshot (to load), and whether the changes the
        // target holds from before must be forgotten.
        let (export, forget_changes) = match (plan, checkpoint) {
            (
                SlotPlan::Lost {
                    reason,
                    drop_slot: existing,
                },
                _,
            ) => {
                self.feedback.retained(None, true);
                tracing::warn!(%slot, "{reason}; cdc.on_slot_lost = \"resnapshot\": new slot and a new full load of every table");
                if existing {
                    begin::wait_slot_released(control, &self.connector, &slot).await?;
                    drop_slot(control, &self.connector, &slot).await?;
                }
                // Changes captured through the lost slot must not be replayed over the new
                // load.
                (true, true)
            }
            (SlotPlan::Resume, Some(cp)) => {
                tracing::info!(%slot, position = %Lsn(cp.position.0), "resuming from the task checkpoint");
                begin::wait_slot_released(control, &self.connector, &slot).await?;
                self.repl = Some(ReplicationConnection::connect(&self.connector).await?);
                self.feedback.retained(None, false);
                return Ok(Begin::Resume(cp));
            }
            (SlotPlan::ContinueLoad { consistent_point }, _) if self.settings.load => {
                tracing::info!(%slot, consistent_point = %consistent_point, "this task's slot exists and its first load did not finish: the load resumes in a new snapshot, keeping the chunks it completed, and the stream starts at the slot");
                begin::wait_slot_released(control, &self.connector, &slot).await?;
                return self.continue_load(consistent_point, &ids).await;
            }
            (SlotPlan::Recreate | SlotPlan::ContinueLoad { .. }, _) => {
                // This task created the slot (its record says so, and the slot never moved),
                // but no checkpoint was ever written: the first load did not finish, and its
                // exported snapshot is gone with it.
                tracing::warn!(%slot, "this task's slot exists but its first load never finished; recreating the slot");
                begin::wait_slot_released(control, &self.connector, &slot).await?;
                drop_slot(control, &self.connector, &slot).await?;
                (self.settings.load, false)
            }
            (SlotPlan::Create | SlotPlan::Resume, _) => (self.settings.load, false),
        };
        let created =
            begin::create_slot(&task, &self.connector, control, store, &slot, export, &ids).await?;
        self.feedback.retained(None, false);
        let begin::Created {
            repl,
            consistent_point,
            snapshot,
            recorded,
        } = created;
        self.repl = Some(repl);
        // The walsender connection stays idle while the snapshot is loaded: its next command
        // would end the snapshot. The load holds every transaction committed before the
        // consistent point.
        Ok(Begin::Fresh {
            snapshot: snapshot.map(|name| PgSnapshot::OfSlot {
                name,
                exporter: None,
            }),
            loaded_up_to: begin::loaded_up_to(consistent_point),
            resume_from: export.then(|| begin::loaded_up_to(consistent_point)),
            first: Checkpoint {
                position: Position(consistent_point.0),
                tables: recorded,
                source: Some(SourceResume::Postgres(PostgresResume {
                    slot,
                    created_by: None,
                })),
            },
            forget_changes,
        })
    }

    async fn abandon_begin(&mut self) {
        self.repl = None;
        if let Some(control) = &self.control {
            begin::drop_created_slot(control, &self.connector, &self.slot).await;
        }
    }

    async fn unstreamed_changes(
        &mut self,
        recorded: &mut TableStates,
        tables: &[SourceTable],
        replaced: &[TableId],
        start: Position,
    ) {
        let Ok(control) = self.control() else {
            return;
        };
        let all_ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
        let reload = self.settings.reload_on_unstreamed_change;
        // A column added with a DEFAULT since the last start: its older rows' values are in the
        // catalog only, so the table is loaded again (unless the task file says otherwise).
        let unwritten_defaults = match columns_with_unwritten_defaults(control).await {
            Ok(now) => {
                for id in added_defaults::added_since(recorded, &now, &all_ids, replaced) {
                    if reload {
                        tracing::warn!(table = %id, "a column was added with a DEFAULT: PostgreSQL filled the existing rows without writing a change, so the table is loaded again beside the stream");
                        request_reload(recorded, &id, start);
                    } else {
                        tracing::warn!(table = %id, "a column was added with a DEFAULT: PostgreSQL filled the existing rows without writing a change, and cdc.reload_on_unstreamed_change = false: the target reads NULL for them until you run inlet resync for the table");
                    }
                }
                // The watch's baseline: a column that appears later was added while streaming.
                Some(now.into_iter().collect())
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading columns added with a DEFAULT failed; they are looked for at the next start");
                None
            }
        };
        // A table rewritten with new values since the last start (ALTER COLUMN … TYPE, a
        // DEFAULT computed per row): no change carried them, so the table is loaded again.
        let storage = match rewrites::read(control, &all_ids).await {
            Ok(now) => {
                for (id, cause) in rewrites::rewritten_since(recorded, &now, &all_ids, replaced) {
                    if reload {
                        tracing::warn!(table = %id, %cause, "the table was rewritten with new values that no change carries, so it is loaded again beside the stream");
                        request_reload(recorded, &id, start);
                    } else {
                        tracing::warn!(table = %id, %cause, "the table was rewritten with new values that no change carries, and cdc.reload_on_unstreamed_change = false: the target keeps the old values of the rows not changed since until you run inlet resync for the table");
                    }
                }
                // The watch's baseline: a rewrite after it happened while streaming.
                Some(now.into_iter().collect())
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the tables' storage (to find rewrites) failed; rewrites are looked for at the next start");
                None
            }
        };
        self.unwritten_defaults = unwritten_defaults;
        self.storage = storage;
    }

    /// Each joining table is loaded inside the snapshot of a temporary slot created now: the
    /// snapshot holds every transaction committed before that slot's consistent point C, and
    /// the stream applies to these tables only transactions committed at or after C, so there
    /// is no gap and no overlap.
    async fn join_snapshot(
        &mut self,
        joining: &[TableId],
        recorded: &mut TableStates,
    ) -> Result<(PgSnapshot, Position), SourceError> {
        let mut join = ReplicationConnection::connect(&self.connector).await?;
        let slot = format!("inlet_join_{}", std::process::id());
        let created = join.create_temporary_slot_exporting_snapshot(&slot).await?;
        let snapshot = created.snapshot_name.unwrap_or_default();
        // Read before the load starts: the snapshot lives only while the slot's connection,
        // which the load drops when done, stays idle. The tables loading beside the stream are
        // recorded, and watched, as their load's snapshot sees them: a rewrite or a
        // catalog-only DEFAULT committed while the load runs differs, so the look after it
        // loads the table again; one committed before the snapshot is in the load.
        if let Some(seen) = seen::SeenBySnapshot::read(self.control()?, &snapshot, joining).await {
            seen.record(
                joining,
                recorded,
                &mut self.storage,
                &mut self.unwritten_defaults,
            );
        }
        let before = begin::loaded_up_to(created.consistent_point);
        Ok((
            PgSnapshot::OfSlot {
                name: snapshot,
                // The temporary slot, which exported the snapshot, goes with its connection.
                exporter: Some(join),
            },
            before,
        ))
    }

    async fn capture(
        &mut self,
        from: CaptureStart<'_, SourceTable>,
    ) -> Result<PgCapture, SourceError> {
        let (tables, committed, start) = (from.tables, from.committed, from.start);
        let (Some(control), Some(repl)) = (self.control.take(), self.repl.take()) else {
            return Err(SourceError::failed(
                "the change stream was started before its slot was ready (a bug)",
            ));
        };
        let new_tables = Arc::new(AtomicBool::new(false));
        let publication_gone = Arc::new(AtomicBool::new(false));
        let watch = watch::NewTableWatch {
            feedback: self.feedback.clone(),
            reload_unstreamed: self.reloads_unstreamed(),
            connector: self.connector.clone(),
            publication: self.publication.clone(),
            selection: self.settings.selection.clone(),
            policy: self.settings.policy.clone(),
            known: self.discovered.iter().map(|(id, _)| id.clone()).collect(),
            identities: self.discovered.iter().cloned().collect(),
            swapped: Default::default(),
            found: new_tables.clone(),
            unreadable: Default::default(),
            discovery_failed: None,
            unwritten_defaults: self.unwritten_defaults.clone(),
            storage: self.storage.clone(),
        };
        let hang_up = Arc::new(OnceLock::new());
        let poller = watch::spawn_slot_poller(
            control,
            self.slot.clone(),
            self.feedback.clone(),
            self.settings.heartbeat_interval_ms,
            watch,
            publication_gone.clone(),
            hang_up.clone(),
        );
        let watch = AbortOnDrop(poller);
        let errors = StreamErrors {
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            checkpoint_at: self.checkpoint_at.clone(),
            resnapshot: self.settings.resnapshot_when_lost,
            lost: self.lost.clone(),
        };
        if let Some(pid) = repl.backend_pid() {
            begin::remember_walsender(&self.connector, &self.slot, pid);
        }
        let stream = repl
            .start_replication(&self.slot, &self.publication, Lsn(start.0))
            .await
            .map_err(|e| errors.classify(e))?;
        // (Set once: this start makes one stream.)
        let _ = hang_up.set(stream.hang_up_handle());
        tracing::info!(slot = %self.slot, publication = %self.publication, from = %Lsn(start.0), tables = tables.len(), "streaming changes");
        let capture = ChangeCapture::new(
            stream,
            self.connector.server(),
            tables,
            committed,
            self.settings.selection.clone(),
            self.settings.policy.clone(),
            self.settings.schema_changes,
            self.settings.part_rows,
        )
        .silence_limit(Duration::from_secs(self.settings.stream_silence_timeout_s));
        let capture = match &self.settings.spool_dir {
            Some(dir) => capture.spool_in(dir.clone()),
            None => capture,
        };
        Ok(PgCapture {
            capture,
            new_tables,
            publication_gone,
            errors,
            _watch: watch,
        })
    }

    /// A rewrite's new column type can stop the stream before the watch sees the rewrite (an
    /// Iceberg decimal whose scale changed cannot evolve in place): start again, and the start
    /// finds the rewrite against the checkpoint and loads the table again. A lasting error of
    /// another kind fails the next start as it would.
    async fn starts_again_after(&mut self, error: &str) -> bool {
        let Some(storage) = self.storage.as_ref().filter(|_| self.reloads_unstreamed()) else {
            return false;
        };
        let all_ids: Vec<TableId> = self.discovered.iter().map(|(id, _)| id.clone()).collect();
        let rewritten = match self.connector.connect().await {
            Ok(client) => rewrites::read(&client, &all_ids).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut again = false;
        for (id, now) in rewritten {
            let Some(cause) = storage.get(&id).and_then(|was| now.rewrite_cause(was)) else {
                continue;
            };
            tracing::warn!(table = %id, %cause, error, "the stream stopped after the table was rewritten with new values that no change carries: starting again, to load the table again beside the stream");
            again = true;
        }
        again
    }
}
