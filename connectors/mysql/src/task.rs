//! A MySQL/MariaDB source as the task engine drives it ([`inlet_core::source::Source`]): the
//! full load inside one consistent snapshot at a known binlog position, then the binlog from
//! exactly there. It owns the resume rules: at the checkpoint's file and offset on the server
//! that wrote it, by its GTID set on another (a failover), and what the task checkpoint
//! records of the binlog (file, GTID set, flavor, server) and of table swaps it showed.

use inlet_core::snapshot::SourceError;
use inlet_core::source::{
    Begin, Capture, CaptureStart, CheckpointStore, Source, SourceReport, SourceTable, TaskSettings,
};
use inlet_core::{
    record_replaced, replaced_after_load, CaptureEvent, Checkpoint, MysqlResume, Position,
    Prerequisite, SourceResume, TableId, TableSchema, TableStates,
};

use crate::binlog::Flavor;
use crate::capture::{BinlogCapture, CaptureOptions};
use crate::catalog::{discover, MysqlTable};
use crate::check::prerequisites;
use crate::config::{MysqlConnector, MysqlSourceConfig};
use crate::error::MysqlError;
use crate::position::{BinlogPosition, StartFrom};
use crate::resume::{missing_binlog, plan_resume, ResumePlan};
use crate::snapshot::{BatchLimits, ConsistentSnapshot, MysqlLoadSource};

impl SourceTable for MysqlTable {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }
    fn estimated_rows(&self) -> Option<u64> {
        self.estimated_rows
    }
    fn size_bytes(&self) -> u64 {
        self.data_bytes
    }
}

/// A task's MySQL or MariaDB source.
pub struct MysqlTask {
    connector: MysqlConnector,
    settings: TaskSettings,
    /// The replica id the binlog connection registers with.
    replica_id: u32,
    /// Where the task checkpoint is, for messages.
    checkpoint_at: String,
    /// How the capture starts, decided by [`Source::begin`].
    resume: Resume,
}

/// Where the capture starts and what goes with it, as [`Source::begin`] found it.
#[derive(Default)]
struct Resume {
    start: Option<StartFrom>,
    /// The epoch the task's positions count in.
    epoch: u8,
    gtid_at_start: Option<String>,
    /// Set when the checkpoint is another server's: (its server_id, the GTID set resumed from).
    failover: Option<(u64, String)>,
    /// The `@@server_id` of the server the stream reads, recorded in every checkpoint.
    server_id: u64,
    /// The checkpoint's own resume facts and swaps, which stay with its position while it is
    /// held.
    held: Held,
}

/// What a checkpoint held at its position (while tables load beside the stream) keeps of the
/// checkpoint read at the start: its resume facts, and the swaps it recorded (`replaced_at`).
#[derive(Default, Clone)]
struct Held {
    resume: MysqlResume,
    replaced: TableStates,
}

impl MysqlTask {
    pub fn new(source: &MysqlSourceConfig, settings: TaskSettings) -> Result<Self, MysqlError> {
        let connector = MysqlConnector::new(source)?;
        let replica_id = source.server_id(&settings.task);
        Ok(Self {
            connector,
            settings,
            replica_id,
            checkpoint_at: String::new(),
            resume: Resume::default(),
        })
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            rows: self.settings.batch_rows,
            bytes: self.settings.batch_bytes,
        }
    }
}

/// Where the first load of a `full-load-and-cdc` task records the start of its stream (a
/// checkpoint at the snapshot's position) until the task checkpoint is written.
fn start_key(task: &str) -> String {
    format!("{task}.load-start")
}

/// What `cp` records for resuming a MySQL/MariaDB stream (empty for a checkpoint of another
/// source, which the resume plan then refuses).
fn resume_of(cp: &Checkpoint) -> MysqlResume {
    cp.source
        .as_ref()
        .and_then(SourceResume::mysql)
        .cloned()
        .unwrap_or_default()
}

impl MysqlTask {
    /// Where the stream of a first load that did not finish starts (its binlog position and
    /// GTID set, from `record`), when it still can: the same server (`conn`'s), its binlog file
    /// still on it.
    async fn kept_start(
        &self,
        conn: &mut mysql_async::Conn,
        record: &Checkpoint,
        server_id: u64,
        flavor: Flavor,
    ) -> Result<Option<(BinlogPosition, Option<String>)>, SourceError> {
        let (from, gtid_set) = match plan_resume(
            &resume_of(record),
            record.position,
            server_id,
            flavor,
        ) {
            Ok(ResumePlan::Position { from, gtid_set, .. }) => (from, gtid_set),
            _ => {
                tracing::warn!("the first load did not finish, on another server or at a position that cannot be resumed: it starts over");
                return Ok(None);
            }
        };
        let files = crate::binlog::binlog_files(conn, &self.connector).await?;
        if !files.iter().any(|(f, _)| *f == from.file) {
            tracing::warn!(file = %from.file, "the first load did not finish, and the binlog file it started in is gone from the server: it starts over");
            return Ok(None);
        }
        Ok(Some((from, gtid_set)))
    }
}

impl Source for MysqlTask {
    type Table = MysqlTable;
    type Snapshot = ConsistentSnapshot;
    type Load = MysqlLoadSource;
    type Capture = MysqlCapture;

    /// A running task whose tables are all gone for now (DROP and CREATE of its only table,
    /// the stream started again between them) follows the binlog until one is created or
    /// renamed into [tables].
    fn follows_without_tables(&self) -> bool {
        true
    }

    async fn discover(&mut self) -> Result<Vec<MysqlTable>, SourceError> {
        let mut conn = self.connector.connect().await?;
        Ok(discover(
            &mut conn,
            &self.connector,
            &self.settings.selection,
            &self.settings.policy,
        )
        .await?)
    }

    async fn prerequisites(
        &mut self,
        tables: &[MysqlTable],
        capture: bool,
    ) -> Result<Vec<Prerequisite>, SourceError> {
        let mut conn = self.connector.connect().await?;
        Ok(prerequisites(&mut conn, &self.connector, tables, capture, self.replica_id).await?)
    }

    async fn check(
        &mut self,
        _store: &dyn CheckpointStore,
        capture: bool,
    ) -> Result<SourceReport, SourceError> {
        let mut conn = match self.connector.connect().await {
            Ok(conn) => conn,
            Err(e) => return Ok(SourceReport::unreachable(e.to_string())),
        };
        let found = discover(
            &mut conn,
            &self.connector,
            &self.settings.selection,
            &self.settings.policy,
        )
        .await;
        if let Err(MysqlError::Selection(e)) = &found {
            return Ok(SourceReport::selection(e));
        }
        let tables = found?;
        let checks = prerequisites(
            &mut conn,
            &self.connector,
            &tables,
            capture,
            self.replica_id,
        )
        .await?;
        Ok(SourceReport::listing(&tables, checks))
    }

    async fn snapshot(&mut self) -> Result<ConsistentSnapshot, SourceError> {
        Ok(ConsistentSnapshot::open(&self.connector, self.settings.workers).await?)
    }

    async fn load(
        &self,
        snapshot: ConsistentSnapshot,
        tables: &[MysqlTable],
        _joining: bool,
    ) -> Result<MysqlLoadSource, SourceError> {
        Ok(MysqlLoadSource::new(
            snapshot,
            tables.to_vec(),
            self.settings.chunk_mb,
            self.limits(),
        ))
    }

    async fn begin(
        &mut self,
        store: &dyn CheckpointStore,
        checkpoint: Option<Checkpoint>,
        tables: &[MysqlTable],
    ) -> Result<Begin<ConsistentSnapshot>, SourceError> {
        self.checkpoint_at = store.location(&self.settings.task);
        // Binlog positions belong to one server: the checkpoint names it, so that a resume on
        // another one (a failover) goes by GTID rather than misread the other server's
        // positions.
        let mut conn = self.connector.connect().await?;
        let source_id = Flavor::server_id(&mut conn, &self.connector).await?;
        let flavor = Flavor::detect(&mut conn, &self.connector).await?;
        self.resume = Resume {
            server_id: source_id,
            ..Resume::default()
        };
        if let Some(cp) = checkpoint {
            // A process killed between the first checkpoint and the retirement of the load's
            // start record (`begun`) left it behind.
            if self.settings.load {
                let key = start_key(&self.settings.task);
                let record = store.read(&key).await.map_err(SourceError::from_target)?;
                if record.is_some_and(|r| r.position.0 != 0) {
                    self.begun(store).await?;
                }
            }
            let resume = resume_of(&cp);
            self.resume.held = Held {
                resume: resume.clone(),
                replaced: cp.tables.clone(),
            };
            let plan = plan_resume(&resume, cp.position, source_id, flavor)
                .map_err(|r| SourceError::failed(r.message(&self.checkpoint_at)))?;
            self.resume.epoch = plan.epoch();
            self.resume.start = Some(plan.start());
            match plan {
                ResumePlan::Position { from, gtid_set, .. } => {
                    tracing::info!(file = %from.file, offset = from.offset, "resuming from the task checkpoint");
                    self.resume.gtid_at_start = gtid_set;
                }
                ResumePlan::Failover { was, gtid_set, .. } => {
                    tracing::warn!(was, now = source_id, gtid = %gtid_set, "the source is not the server the checkpoint was written on (a failover?): resuming at the checkpoint's GTID set");
                    self.resume.failover = Some((was, gtid_set));
                }
            }
            return Ok(Begin::Resume(cp));
        }
        let workers = if self.settings.load {
            self.settings.workers
        } else {
            1
        };
        // A first load that did not finish recorded where its stream starts: it goes on from
        // there, keeping the chunks it completed.
        let started = if self.settings.load {
            let key = start_key(&self.settings.task);
            let record = store.read(&key).await.map_err(SourceError::from_target)?;
            match record.filter(|r| r.position.0 != 0) {
                Some(r) => self
                    .kept_start(&mut conn, &r, source_id, flavor)
                    .await?
                    .map(|start| (r, start)),
                None => None,
            }
        } else {
            None
        };
        drop(conn);
        let snapshot = ConsistentSnapshot::open(&self.connector, workers).await?;
        let point = snapshot.point.clone();
        let position = point.binlog.to_position(0)?;
        tracing::info!(file = %point.binlog.file, offset = point.binlog.offset, "snapshot at this binlog position");
        let mut known = TableStates::new();
        for t in tables {
            known.entry(t.schema.id.to_string()).or_default().captured = true;
        }
        let (first, start) = match started {
            Some((record, (from, gtid_set))) => {
                tracing::info!(file = %from.file, offset = from.offset, "the first load did not finish: it goes on in this snapshot, keeping the chunks it completed, and the stream starts where it did");
                self.resume.gtid_at_start = gtid_set;
                let resume = resume_of(&record);
                self.resume.held.resume = resume.clone();
                let first = Checkpoint {
                    position: record.position,
                    tables: known,
                    source: Some(SourceResume::Mysql(resume)),
                };
                (first, StartFrom::Position(from))
            }
            None => {
                let resume = MysqlResume {
                    binlog_file: Some(point.binlog.file.clone()),
                    gtid_set: point.gtid.clone(),
                    flavor: Some(point.flavor.as_str().to_string()),
                    server_id: Some(source_id),
                    xa_prepared_from: None,
                };
                self.resume.held.resume = resume.clone();
                self.resume.gtid_at_start = point.gtid.clone();
                let first = Checkpoint {
                    position,
                    tables: known,
                    source: Some(SourceResume::Mysql(resume)),
                };
                if self.settings.load {
                    // Before the load writes: a restart before the first checkpoint goes on
                    // from here.
                    store
                        .write(&start_key(&self.settings.task), &first)
                        .await
                        .map_err(SourceError::from_target)?;
                }
                (first, point.start())
            }
        };
        self.resume.start = Some(start);
        Ok(Begin::Fresh {
            // The load holds every transaction that ended at or before the position.
            snapshot: self.settings.load.then_some(snapshot),
            loaded_up_to: position,
            resume_from: self.settings.load.then_some(first.position),
            first,
            forget_changes: false,
        })
    }

    async fn begun(&mut self, store: &dyn CheckpointStore) -> Result<(), SourceError> {
        if !self.settings.load {
            return Ok(());
        }
        // The task checkpoint says where to resume from now on; a start recorded for the first
        // load must not outlive it (a new load after the checkpoint is deleted starts anew).
        store
            .write(&start_key(&self.settings.task), &Checkpoint::default())
            .await
            .map_err(SourceError::from_target)
    }

    async fn join_snapshot(
        &mut self,
        _joining: &[TableId],
        _recorded: &mut TableStates,
    ) -> Result<(ConsistentSnapshot, Position), SourceError> {
        let snapshot = ConsistentSnapshot::open(&self.connector, self.settings.workers).await?;
        let at = snapshot.point.binlog.to_position(self.resume.epoch)?;
        Ok((snapshot, at))
    }

    async fn capture(
        &mut self,
        from: CaptureStart<'_, MysqlTable>,
    ) -> Result<MysqlCapture, SourceError> {
        let CaptureStart {
            tables,
            committed,
            start,
            held,
            recorded,
        } = from;
        if let Some((was, _)) = &self.resume.failover {
            // A table written past the checkpoint holds transactions that only the old
            // server's positions identify; by GTID they would be applied to it again.
            for (t, c) in tables.iter().zip(committed) {
                if c.is_some_and(|c| c > start) {
                    return Err(SourceError::failed(format!(
                        "{}: its target holds changes past the task checkpoint ({}), written by \
                         a run that stopped before checkpointing them; on another server they \
                         cannot be told apart by GTID. Point source.url at the server with \
                         server_id {was} for one run so the checkpoint catches up, then switch; \
                         or delete the checkpoint to run a new full load",
                        t.schema.id, self.checkpoint_at
                    )));
                }
            }
        }
        let Some(from) = self.resume.start.clone() else {
            return Err(SourceError::failed(
                "the binlog capture was started before its start was decided (a bug)",
            ));
        };
        let options = CaptureOptions {
            selection: self.settings.selection.clone(),
            policy: self.settings.policy.clone(),
            schema_changes: self.settings.schema_changes,
            part_rows: self.settings.part_rows,
            position_epoch: self.resume.epoch,
            gtid_at_start: self.resume.gtid_at_start.clone(),
        };
        let by_gtid = self.resume.failover.as_ref().map(|(_, set)| set.clone());
        let capture = BinlogCapture::start(
            &self.connector,
            self.replica_id,
            &from,
            tables,
            committed,
            options,
        )
        .await
        .map_err(|e| stream_error(e, &self.checkpoint_at, by_gtid.as_deref()))?;
        tracing::info!(
            tables = tables.len(),
            server_id = self.replica_id,
            "streaming the binlog"
        );
        Ok(MysqlCapture {
            capture,
            checkpoint_at: self.checkpoint_at.clone(),
            by_gtid,
            server_id: self.resume.server_id,
            held: held.then(|| self.resume.held.clone()),
            loaded: recorded.clone(),
        })
    }
}

/// A binlog error as the task sees it: a binlog the server cannot send from where the task
/// resumes ([`missing_binlog`]) stops the task saying how to start over; any other error is
/// classified as usual.
fn stream_error(e: MysqlError, checkpoint: &str, by_gtid: Option<&str>) -> SourceError {
    match missing_binlog(&e, by_gtid) {
        Some(missing) => SourceError::failed(missing.message(&e.to_string(), checkpoint)),
        None => e.into(),
    }
}

/// The binlog capture of a task, with what its checkpoints record.
pub struct MysqlCapture {
    capture: BinlogCapture,
    checkpoint_at: String,
    /// The GTID set the stream started from, when it resumed on another server.
    by_gtid: Option<String>,
    /// The `@@server_id` of the server the stream reads, recorded in every checkpoint.
    server_id: u64,
    /// While a join holds the checkpoint at its position, what goes with that position.
    held: Option<Held>,
    /// The checkpoint's loads beside earlier streams (`loaded_at`).
    loaded: TableStates,
}

impl Capture for MysqlCapture {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, SourceError> {
        let Self {
            capture,
            checkpoint_at,
            by_gtid,
            ..
        } = self;
        capture
            .next()
            .await
            .map_err(|e| stream_error(e, checkpoint_at, by_gtid.as_deref()))
    }
    inlet_core::forward_capture_buffers!(capture);
    fn fill_checkpoint(&self, checkpoint: &mut Checkpoint) {
        let mut resume = match &self.held {
            Some(held) => {
                for (name, state) in &held.replaced {
                    if let Some(at) = state.replaced_at {
                        let recorded = checkpoint.table(name);
                        recorded.replaced_at = recorded.replaced_at.max(Some(at));
                    }
                }
                held.resume.clone()
            }
            None => {
                // A swap stays in the checkpoint until the next start loads the table again,
                // unless a load that began after it (read again from an older checkpoint)
                // holds the new table already.
                for (id, at) in self.capture.replaced_tables() {
                    if replaced_after_load(&self.loaded, id, *at) {
                        record_replaced(&mut checkpoint.tables, id, *at);
                    }
                }
                self.capture.resume()
            }
        };
        resume.server_id = Some(self.server_id);
        checkpoint.source = Some(SourceResume::Mysql(resume));
    }
    fn show(&self, position: Position) -> String {
        let file = self.capture.resume().binlog_file.unwrap_or_default();
        let at = BinlogPosition::from_position(position, &file);
        format!("{}:{}", at.file, at.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_changed_under_the_snapshot_is_retried() {
        let query = |reason: &str| MysqlError::Query {
            server: "db:3306".into(),
            what: "reading app._t_gho".into(),
            reason: reason.into(),
        };
        let changed =
            query("ERROR 1412 (HY000): Table definition has changed, please retry transaction");
        assert!(SourceError::from(changed).is_transient());
        let denied = query("ERROR 1142 (42000): SELECT command denied to user");
        let denied = SourceError::from(denied);
        assert!(!denied.is_transient() && !denied.is_config());
    }
}
