//! `inlet run` with change data capture: set up the publication and slot, do the full load
//! inside the slot's exported snapshot (or resume from the task checkpoint), then follow the
//! change stream, flushing change files, the checkpoint and the source acknowledgement in that
//! order, so the slot never moves past what the target durably holds. A table that joins is
//! loaded beside the stream, which then starts again from where the load began.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_core::{
    CaptureEvent, CheckStatus, Position, Prerequisite, TableChanges, TableId, TableSelection,
};
use inlet_postgres::{
    current_wal_position, discover, drop_slot, ensure_publication, prerequisites,
    publication_exists, publication_plan, slot_capacity, slot_state, ChangeCapture, Lsn,
    PgConnector, PostgresSourceConfig, PublicationPlan, ReplicationConnection, SlotState,
    SourceTable,
};
use inlet_sink_parquet::Checkpoint;
use tokio::sync::watch;

use crate::config::{Mode, SlotLost, SourceConfig, TaskConfig};
use crate::join::{self, AbortOnDrop, JoinLoad};
use crate::sink::Target;
use crate::state::{Phase, TaskState};
use crate::stream::{self, table_fact, ChangeSource, Outputs, StreamEnd};
use crate::{full_load, JobError};

/// Checkpoint fact naming the slot the checkpoint's position belongs to.
const SLOT_FACT: &str = "slot";
/// How often the slot's retained WAL is read for the metrics.
const SLOT_POLL: Duration = Duration::from_secs(10);

/// Runs until `shutdown` turns true (then flushes, acknowledges and returns Ok) or an error.
pub async fn run(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
) -> Result<(), JobError> {
    let resnapshot = config.cdc.on_slot_lost == SlotLost::Resnapshot;
    let mut first = true;
    let mut lost: Option<String> = None;
    loop {
        match run_once(config, state, shutdown.clone(), first, lost.take()).await {
            Ok(StreamEnd::Shutdown) => return Ok(()),
            // A captured table was renamed: everything before it is durable; discover the
            // tables again (a joining one is loaded) and go on from the checkpoint.
            Ok(StreamEnd::TablesChanged) => state.set_phase(Phase::Starting),
            // The publication was dropped under the stream: the slot cannot go on (see
            // `slot_error`), and resuming it would fail the same way forever.
            Err(JobError::Transient { kind, message })
                if kind == PUBLICATION_LOST && resnapshot =>
            {
                state.set_phase(Phase::Starting);
                lost = Some(message);
            }
            Err(e) => return Err(e),
        }
        first = false;
    }
}

/// Error kind of a stream that failed because its publication was dropped.
const PUBLICATION_LOST: &str = "publication_lost";

/// Where the slot record of a task lives: a checkpoint-shaped record under `_inlet/<task>.slot/`
/// beside the task's own `_inlet/<task>/` (task names cannot contain a dot, so no task has it).
fn record_key(task: &str) -> String {
    format!("{task}.slot")
}

/// Facts of the slot record.
const RECORD_TASK: &str = "task";
const RECORD_ID: &str = "id";
const RECORD_DATABASE: &str = "database";

/// The record inlet writes into the target when it creates a task's slot, before the load
/// starts: "slot X was created by task T in database D at position L, id U". PostgreSQL keeps no
/// owner or comment for a slot, so this is how a later start proves that a slot found without
/// a checkpoint is this task's own (one whose first load was interrupted) and not another
/// tool's or another task's, which inlet must never drop or stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRecord {
    slot: String,
    task: String,
    database: String,
    id: String,
    created_at: Lsn,
}

impl SlotRecord {
    fn new(slot: &str, task: &str, database: &str, created_at: Lsn) -> Self {
        // Unique enough to tell two creations apart: the clock and the process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            slot: slot.to_string(),
            task: task.to_string(),
            database: database.to_string(),
            id: format!("{nanos:x}-{:x}", std::process::id()),
            created_at,
        }
    }

    fn to_checkpoint(&self) -> Checkpoint {
        Checkpoint {
            position: Position(self.created_at.0),
            facts: vec![
                (SLOT_FACT.to_string(), self.slot.clone()),
                (RECORD_TASK.to_string(), self.task.clone()),
                (RECORD_DATABASE.to_string(), self.database.clone()),
                (RECORD_ID.to_string(), self.id.clone()),
            ],
        }
    }

    fn from_checkpoint(cp: &Checkpoint) -> Option<Self> {
        let fact = |k: &str| {
            cp.facts
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        Some(Self {
            slot: fact(SLOT_FACT)?,
            task: fact(RECORD_TASK)?,
            database: fact(RECORD_DATABASE)?,
            id: fact(RECORD_ID)?,
            created_at: Lsn(cp.position.0),
        })
    }
}

/// What the start of a CDC task does with the slot, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotPlan {
    /// No slot and no checkpoint: create the slot (and load).
    Create,
    /// This task's slot, whose first load never finished: drop it and create it again.
    Recreate,
    /// This task's slot and checkpoint: stream from the checkpoint.
    Resume,
    /// Changes since the checkpoint cannot be read any more (slot lost or gone, publication
    /// dropped). `drop_slot`: the slot, this task's, still exists.
    Lost { reason: String, drop_slot: bool },
}

/// What is known at the start, read before anything is written.
struct StartFacts<'a> {
    slot: &'a str,
    task: &'a str,
    database: &'a str,
    publication: &'a str,
    checkpoint: Option<&'a Checkpoint>,
    checkpoint_at: &'a str,
    record: Option<&'a SlotRecord>,
    record_at: &'a str,
    slot_now: Option<&'a SlotState>,
    server_at: Lsn,
    publication_exists: bool,
}

/// Decides what to do with the slot, or why not to go on (the refusal says what to do). A slot
/// is dropped or streamed from only when it is provably this task's: the task checkpoint names
/// it and it has confirmed nothing past the checkpoint, or (no checkpoint) the slot record in
/// the target names it and it still sits where it was created.
fn plan_slot(f: &StartFacts) -> Result<SlotPlan, String> {
    let slot = f.slot;
    let drop_sql = format!(
        "SELECT pg_drop_replication_slot('{}');",
        slot.replace('\'', "''")
    );
    if let Some(cp) = f.checkpoint {
        if cp.position.0 > f.server_at.0 {
            return Err(format!(
                "the task checkpoint ({}) is at position {}, ahead of the server's WAL, which is at \
                 {}: the database was restored from a backup or rebuilt, and resuming would skip \
                 every change until the server reached that position. Nothing was written. To load \
                 every table again from this database, delete the checkpoint ({}){} and run the task \
                 again",
                f.checkpoint_at,
                Lsn(cp.position.0),
                f.server_at,
                f.checkpoint_at,
                if f.slot_now.is_some() {
                    format!(" and the replication slot ({drop_sql})")
                } else {
                    String::new()
                }
            ));
        }
        let named = cp
            .facts
            .iter()
            .find(|(k, _)| k == SLOT_FACT)
            .map(|(_, v)| v.as_str());
        if let Some(named) = named.filter(|n| *n != slot) {
            return Err(format!(
                "the task checkpoint ({}) holds a position of replication slot {named:?}, but \
                 source.slot now names {slot:?}: a position of one slot means nothing in another. \
                 Set source.slot = {named:?} again, or delete the checkpoint to load every table \
                 again through {slot:?}",
                f.checkpoint_at
            ));
        }
    }
    let Some(existing) = f.slot_now else {
        return Ok(match f.checkpoint {
            Some(cp) => SlotPlan::Lost {
                reason: format!(
                    "replication slot {slot:?} no longer exists, but the task checkpoint says changes \
                     up to {} were captured through it: changes since then are lost",
                    Lsn(cp.position.0)
                ),
                drop_slot: false,
            },
            None => SlotPlan::Create,
        });
    };
    let not_ours = |why: String| {
        format!(
            "replication slot {slot:?} exists but {why}. It may belong to another tool or to another \
             inlet task whose name gives the same slot name (\"a-b\" and \"a_b\" both give \
             inlet_a_b), and inlet never drops or streams from a slot it cannot prove is this \
             task's: set source.slot to another name for this task, or, if the slot is truly \
             abandoned, drop it yourself: {drop_sql}"
        )
    };
    if existing.plugin.as_deref() != Some("pgoutput") {
        return Err(not_ours(format!(
            "uses output plugin {:?}, not pgoutput, so inlet did not create it",
            existing
                .plugin
                .as_deref()
                .unwrap_or("none: a physical slot")
        )));
    }
    if existing.database.as_deref() != Some(f.database) {
        return Err(not_ours(format!(
            "belongs to database {:?}, not {:?}, so this task did not create it",
            existing.database.as_deref().unwrap_or(""),
            f.database
        )));
    }
    let confirmed = existing.confirmed_flush;
    if let Some(cp) = f.checkpoint {
        if let Some(c) = confirmed.filter(|c| c.0 > cp.position.0) {
            return Err(not_ours(format!(
                "has confirmed changes up to {c}, past the task checkpoint ({}) at {}: something \
                 else streamed from it, and the changes in between are not in this task's target \
                 (inlet confirms nothing it has not checkpointed)",
                f.checkpoint_at,
                Lsn(cp.position.0)
            )));
        }
        if existing.is_lost() {
            return Ok(SlotPlan::Lost {
                reason: format!(
                    "replication slot {slot:?} is lost (wal_status = lost): the server removed WAL \
                     the task had not read, so changes are missing"
                ),
                drop_slot: true,
            });
        }
        if !f.publication_exists {
            return Ok(SlotPlan::Lost {
                reason: format!(
                    "publication {:?} does not exist (it was dropped, or source.publication now \
                     names a new one): {}",
                    f.publication,
                    publication_unusable(slot)
                ),
                drop_slot: true,
            });
        }
        return Ok(SlotPlan::Resume);
    }
    match f.record {
        Some(r) if r.slot == slot && r.task == f.task && r.database == f.database => {
            if confirmed == Some(r.created_at) {
                Ok(SlotPlan::Recreate)
            } else {
                Err(format!(
                    "replication slot {slot:?} was created by this task at {} (slot record {}, id \
                     {}), but it has confirmed changes up to {} while the task has no checkpoint \
                     ({}): if the checkpoint was deleted to load the tables again, drop the slot \
                     as well ({drop_sql}) and run the task again; inlet does not drop a slot that \
                     has streamed changes the target may not hold",
                    r.created_at,
                    f.record_at,
                    r.id,
                    confirmed.map_or("an unknown position".to_string(), |c| c.to_string()),
                    f.checkpoint_at
                ))
            }
        }
        _ => Err(not_ours(format!(
            "this task did not create it: the target holds no checkpoint of the task ({}) and no \
             record that the task created the slot ({})",
            f.checkpoint_at, f.record_at
        ))),
    }
}

/// Why a task whose publication is gone cannot go on through its slot.
fn publication_lost_reason(publication: &str, slot: &str) -> String {
    format!(
        "publication {publication:?} was dropped: {}",
        publication_unusable(slot)
    )
}

fn publication_unusable(slot: &str) -> String {
    format!(
        "PostgreSQL decodes each change with the catalog as of that change, so slot {slot:?} \
         cannot stream anything written since the drop, even once the publication is created \
         again, and those changes are lost to the task"
    )
}

/// Everything the start of a CDC task reads before it writes anything, and what it will do.
/// `inlet check` reports the same ([`StartCheck::report`]), so it says ready only when `run`
/// will start.
struct StartCheck {
    checkpoint: Option<Checkpoint>,
    plan: Result<SlotPlan, String>,
    publication: PublicationPlan,
    /// Replication slots that exist, and `max_replication_slots`.
    slots: (i64, i64),
    resnapshot: bool,
}

impl StartCheck {
    async fn read(
        config: &TaskConfig,
        source: &PostgresSourceConfig,
        control: &tokio_postgres::Client,
        connector: &PgConnector,
        target: &Target,
        tables: &[SourceTable],
        lost: Option<String>,
    ) -> Result<Self, JobError> {
        let task = config.task.name.as_str();
        let slot = source.slot_name(task);
        let publication = source.publication_name(task);
        let checkpoint = target.read_checkpoint(task).await?;
        let record = target
            .read_checkpoint(&record_key(task))
            .await?
            .as_ref()
            .and_then(SlotRecord::from_checkpoint);
        let slot_now = slot_state(control, connector, &slot)
            .await
            .map_err(JobError::source)?;
        let server_at = current_wal_position(control, connector)
            .await
            .map_err(JobError::source)?;
        let exists = publication_exists(control, connector, &publication)
            .await
            .map_err(JobError::source)?;
        let database: String = control
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| JobError::failed(format!("reading current_database(): {e}")))?
            .get(0);
        let checkpoint_at = target.checkpoint_location(task);
        let record_at = target.checkpoint_location(&record_key(task));
        let facts = StartFacts {
            slot: &slot,
            task,
            database: &database,
            publication: &publication,
            checkpoint: checkpoint.as_ref(),
            checkpoint_at: &checkpoint_at,
            record: record.as_ref(),
            record_at: &record_at,
            slot_now: slot_now.as_ref(),
            server_at,
            publication_exists: exists,
        };
        let mut plan = plan_slot(&facts);
        // The stream failed on the dropped publication (which someone may have created again
        // since): the slot is as good as lost.
        if let (Some(reason), Ok(SlotPlan::Resume)) = (lost, &plan) {
            plan = Ok(SlotPlan::Lost {
                reason,
                drop_slot: true,
            });
        }
        let publication = publication_plan(control, connector, &publication, tables)
            .await
            .map_err(JobError::source)?;
        let slots = slot_capacity(control, connector)
            .await
            .map_err(JobError::source)?;
        Ok(Self {
            checkpoint,
            plan,
            publication,
            slots,
            resnapshot: config.cdc.on_slot_lost == SlotLost::Resnapshot,
        })
    }

    /// The findings as `inlet check` lines; a MISSING one stops `inlet run` before it writes.
    fn report(&self, slot: &str, publication: &str, checkpoint_at: &str) -> Vec<Prerequisite> {
        let mut out = Vec::new();
        out.push(match &self.plan {
            Err(refusal) => Prerequisite::missing("replication slot", refusal.clone(), "see above"),
            Ok(SlotPlan::Create) => {
                Prerequisite::ok("replication slot", format!("{slot:?} will be created"))
            }
            Ok(SlotPlan::Recreate) => Prerequisite::ok(
                "replication slot",
                format!(
                    "{slot:?} was created by this task, whose first load did not finish: it will be \
                     created again"
                ),
            ),
            Ok(SlotPlan::Resume) => Prerequisite::ok(
                "replication slot",
                format!(
                    "{slot:?} belongs to this task; it resumes from {}",
                    self.checkpoint
                        .as_ref()
                        .map_or(String::new(), |c| Lsn(c.position.0).to_string())
                ),
            ),
            Ok(SlotPlan::Lost { reason, .. }) if self.resnapshot => Prerequisite::warning(
                "replication slot",
                format!("{reason}; cdc.on_slot_lost = \"resnapshot\": a new slot and a new full load"),
                "nothing to do; set cdc.on_slot_lost = \"fail\" to decide yourself",
            ),
            Ok(SlotPlan::Lost { reason, .. }) => Prerequisite::missing(
                "replication slot",
                format!("{reason}. inlet never recreates a slot silently"),
                format!(
                    "drop the slot if it is still there (SELECT pg_drop_replication_slot('{slot}')) \
                     and the task checkpoint ({checkpoint_at}), then run the task again for a new \
                     full load; or set cdc.on_slot_lost = \"resnapshot\" to do this automatically"
                ),
            ),
        });
        let (count, max) = self.slots;
        let needs_slot = matches!(self.plan, Ok(SlotPlan::Create))
            || matches!(
                self.plan,
                Ok(SlotPlan::Lost {
                    drop_slot: false,
                    ..
                })
            );
        if needs_slot && count >= max {
            out.push(Prerequisite::missing(
                "free replication slot",
                format!(
                    "the server has {count} replication slots and max_replication_slots = {max}: \
                     creating {slot:?} would fail"
                ),
                "drop a slot nothing uses (SELECT slot_name, active FROM pg_replication_slots; \
                 SELECT pg_drop_replication_slot('<name>')), or raise max_replication_slots and \
                 restart PostgreSQL",
            ));
        }
        if let Some(refusal) = self.publication.identity_refusal(publication) {
            out.push(Prerequisite::missing(
                "replica identity",
                refusal,
                self.publication
                    .no_identity
                    .iter()
                    .map(|t| t.fix())
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        if let Some((detail, fix)) = &self.publication.denied {
            out.push(Prerequisite::missing(
                "publication",
                detail.clone(),
                fix.clone(),
            ));
        } else if !self.publication.exists {
            out.push(Prerequisite::ok(
                "publication",
                format!("{publication:?} will be created"),
            ));
        }
        out
    }
}

/// The `inlet check` lines of a CDC task's start: the slot (whose it is, lost, free slots), the
/// checkpoint's position against the server, the publication (privileges, replica identity).
pub async fn check(
    config: &TaskConfig,
    source: &PostgresSourceConfig,
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    tables: &[SourceTable],
) -> Result<Vec<Prerequisite>, JobError> {
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?;
    let start = StartCheck::read(config, source, control, connector, &target, tables, None).await?;
    Ok(start.report(
        &source.slot_name(task),
        &source.publication_name(task),
        &target.checkpoint_location(task),
    ))
}

/// One discovery of the tables, then streaming until shutdown or a renamed table.
/// `first`: the first start of this process (later ones follow a re-discovery of the tables).
/// `lost`: why the slot cannot go on, when the last stream found out.
async fn run_once(
    config: &TaskConfig,
    state: &TaskState,
    shutdown: watch::Receiver<bool>,
    first: bool,
    lost: Option<String>,
) -> Result<StreamEnd, JobError> {
    let SourceConfig::Postgres(source) = &config.source else {
        return Err(JobError::Failed(
            "the PostgreSQL runner was given another source (a bug)".into(),
        ));
    };
    let connector = PgConnector::new(source).map_err(JobError::config)?;
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?;
    let slot = source.slot_name(task);
    let publication = source.publication_name(task);
    let policy = config.values.on_unrepresentable;
    target.check().await?;

    let control = connector.connect().await.map_err(JobError::source)?;
    let tables = discover(&control, &connector, &selection, policy)
        .await
        .map_err(JobError::source)?;
    if tables.is_empty() {
        return Err(JobError::Failed(
            "no table matches [tables] include/exclude; run `inlet check` to see what the source has".into(),
        ));
    }
    for p in prerequisites(&control, &connector, &tables, true)
        .await
        .map_err(JobError::source)?
    {
        match p.status {
            CheckStatus::Missing => {
                return Err(JobError::Failed(format!(
                    "{}: {}; fix: {}",
                    p.name,
                    p.detail,
                    p.fix.unwrap_or_default()
                )))
            }
            CheckStatus::Warning => {
                tracing::warn!(check = %p.name, detail = %p.detail, fix = ?p.fix, "prerequisite")
            }
            CheckStatus::Ok => {}
        }
    }
    // A table without replica identity that appeared while the task ran is left out (it was
    // reported when it appeared); at the first start it stops the task below, before anything
    // is written.
    let tables = if first {
        tables
    } else {
        let plan = publication_plan(&control, &connector, &publication, &tables)
            .await
            .map_err(JobError::source)?;
        tables
            .into_iter()
            .filter(|t| !plan.no_identity.iter().any(|n| n.table == t.schema.id))
            .collect()
    };
    let start_check =
        StartCheck::read(config, source, &control, &connector, &target, &tables, lost).await?;
    let checkpoint_at = target.checkpoint_location(task);
    let refusals: Vec<String> = start_check
        .report(&slot, &publication, &checkpoint_at)
        .into_iter()
        .filter(|p| p.status == CheckStatus::Missing)
        .map(|p| match p.fix {
            Some(fix) if fix != "see above" => format!("{}: {}; fix: {fix}", p.name, p.detail),
            _ => format!("{}: {}", p.name, p.detail),
        })
        .collect();
    if !refusals.is_empty() {
        if matches!(start_check.plan, Ok(SlotPlan::Lost { .. })) {
            state.set_slot(None, true);
        }
        return Err(JobError::Failed(refusals.join("\n")));
    }
    let StartCheck {
        checkpoint, plan, ..
    } = start_check;
    let plan = plan.map_err(JobError::Failed)?;
    ensure_publication(&control, &connector, &publication, &tables)
        .await
        .map_err(JobError::source)?;

    let resnapshot = config.cdc.on_slot_lost == SlotLost::Resnapshot;
    let all_ids: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let load = config.task.mode == Mode::FullLoadAndCdc;
    let (repl, start, facts) = match (plan, checkpoint) {
        (
            SlotPlan::Lost {
                reason,
                drop_slot: existing,
            },
            _,
        ) => {
            state.set_slot(None, true);
            tracing::warn!(%slot, "{reason}; cdc.on_slot_lost = \"resnapshot\": new slot and a new full load of every table");
            if existing {
                wait_slot_released(&control, &connector, &slot).await?;
                drop_slot(&control, &connector, &slot)
                    .await
                    .map_err(JobError::source)?;
            }
            // Changes captured through the lost slot must not be replayed over the new load.
            for t in &tables {
                target.forget_changes(&t.schema).await?;
            }
            bootstrap(
                config, state, &connector, &control, &target, &slot, true, &all_ids,
            )
            .await?
        }
        (SlotPlan::Resume, Some(cp)) => {
            tracing::info!(%slot, position = %Lsn(cp.position.0), "resuming from the task checkpoint");
            wait_slot_released(&control, &connector, &slot).await?;
            let repl = ReplicationConnection::connect(&connector)
                .await
                .map_err(JobError::source)?;
            (repl, cp.position, cp.facts)
        }
        (SlotPlan::Recreate, _) => {
            // This task created the slot (its record says so, and the slot never moved), but no
            // checkpoint was ever written: the first load did not finish, and its exported
            // snapshot is gone with it.
            tracing::warn!(%slot, "this task's slot exists but its first load never finished; recreating the slot");
            wait_slot_released(&control, &connector, &slot).await?;
            drop_slot(&control, &connector, &slot)
                .await
                .map_err(JobError::source)?;
            bootstrap(
                config, state, &connector, &control, &target, &slot, load, &all_ids,
            )
            .await?
        }
        (SlotPlan::Create | SlotPlan::Resume, _) => {
            bootstrap(
                config, state, &connector, &control, &target, &slot, load, &all_ids,
            )
            .await?
        }
    };
    state.set_slot(None, false);

    let mut facts = facts;
    let join = join_new_tables(config, state, &connector, &target, &tables, &mut facts).await?;
    let watched: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    // A table loading beside the stream joins it at the stream's next start, once loaded.
    let tables: Vec<SourceTable> = tables
        .into_iter()
        .filter(|t| !join.as_ref().is_some_and(|j| j.includes(&t.schema.id)))
        .collect();
    let mut outputs = Vec::with_capacity(tables.len());
    let mut committed = Vec::with_capacity(tables.len());
    for t in &tables {
        let output = target.change_table(&t.schema).await?;
        // A table loaded beside an earlier stream holds every transaction up to its load.
        let loaded = join::loaded_at(&facts, &t.schema.id);
        committed.push(output.committed_position(&t.schema).await?.max(loaded));
        outputs.push(output);
    }
    join::forget_loads_before(&mut facts, start);

    let new_tables = Arc::new(AtomicBool::new(false));
    let watch = NewTableWatch {
        connector: connector.clone(),
        publication: publication.clone(),
        selection: selection.clone(),
        policy,
        known: watched.into_iter().collect(),
        found: new_tables.clone(),
        unreadable: Default::default(),
        discovery_failed: None,
    };
    let poller = spawn_slot_poller(
        control,
        slot.clone(),
        state.clone(),
        config.cdc.heartbeat_interval_ms,
        watch,
    );
    let _poller = AbortOnDrop(poller);

    let stream = repl
        .start_replication(&slot, &publication, Lsn(start.0))
        .await
        .map_err(|e| {
            slot_error(
                e,
                &slot,
                &publication,
                &target.checkpoint_location(task),
                resnapshot,
            )
        })?;
    tracing::info!(%slot, %publication, from = %Lsn(start.0), tables = tables.len(), "streaming changes");
    state.set_tables(
        tables
            .iter()
            .map(|t| (t.schema.id.to_string(), None))
            .collect(),
    );
    state.set_phase(Phase::Streaming);
    state.set_connected(true);
    state.durable(Lsn(start.0).to_string());
    let capture = ChangeCapture::new(
        stream,
        connector.server(),
        &tables,
        &committed,
        selection,
        policy,
        config.cdc.schema_changes,
        config.cdc.part_rows,
    );
    let capture = match &config.cdc.spool_dir {
        Some(dir) => capture.spool_in(dir.clone()),
        None => capture,
    };
    // While a table loads beside the stream the checkpoint stays at `start`: once loaded, the
    // stream starts again from there and the table receives every change since its snapshot
    // (the other tables skip what they hold).
    let hold = join.as_ref().map(|_| start);
    let source = PgSource {
        capture,
        new_tables,
        slot: slot.clone(),
        publication: publication.clone(),
        checkpoint: target.checkpoint_location(task),
        resnapshot,
        join,
        joined: Vec::new(),
    };
    let out = Outputs {
        tables: tables.iter().map(|t| t.schema.id.to_string()).collect(),
        outputs,
        target: &target,
        task,
        state,
        facts,
        hold,
    };
    stream::follow(source, out, start, &config.cdc, shutdown).await
}

/// The PostgreSQL change capture as the stream loop drives it.
struct PgSource {
    capture: ChangeCapture,
    /// Set by the poller when a table the selection matches appeared.
    new_tables: Arc<AtomicBool>,
    slot: String,
    publication: String,
    /// Where the task checkpoint is, for the lost-slot message.
    checkpoint: String,
    resnapshot: bool,
    /// Tables loading beside the stream, and the facts that record them once loaded.
    join: Option<JoinLoad>,
    /// Facts of tables whose load beside the stream finished.
    joined: Vec<(String, String)>,
}

impl ChangeSource for PgSource {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, JobError> {
        let in_transaction = self.capture.in_transaction();
        if !in_transaction && self.new_tables.swap(false, Ordering::Relaxed) {
            tracing::info!("a table the selection matches appeared: re-discovering the tables once the changes before now are written");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        let Self {
            capture,
            slot,
            publication,
            checkpoint,
            resnapshot,
            join,
            joined,
            ..
        } = self;
        let next = async {
            capture
                .next()
                .await
                .map_err(|e| slot_error(e, slot, publication, checkpoint, *resnapshot))
        };
        join::next_or_joined(join, joined, in_transaction, next).await
    }
    fn take(&mut self, table: usize) -> Result<Vec<TableChanges>, JobError> {
        self.capture.take(table).map_err(JobError::source)
    }
    fn take_part(&mut self, table: usize) -> Result<Option<TableChanges>, JobError> {
        self.capture.take_part(table).map_err(JobError::source)
    }
    async fn acknowledge(&mut self, position: Position) -> Result<(), JobError> {
        self.capture
            .acknowledge(position)
            .await
            .map_err(JobError::source)
    }
    async fn finish(self) -> Result<(), JobError> {
        self.capture.finish().await.map_err(JobError::source)
    }
    fn table_count(&self) -> usize {
        self.capture.table_count()
    }
    fn buffered_rows(&self) -> usize {
        self.capture.buffered_rows()
    }
    fn buffered_bytes(&self) -> usize {
        self.capture.buffered_bytes()
    }
    fn reset_buffered_bytes(&mut self) {
        self.capture.reset_buffered_bytes()
    }
    fn checkpoint_facts(&self) -> Vec<(String, String)> {
        self.joined.clone()
    }
    fn facts_changed(&self) -> bool {
        !self.joined.is_empty()
    }
    fn show(&self, position: Position) -> String {
        Lsn(position.0).to_string()
    }
}

/// Creates the slot and records in the target that this task created it; with `load`, loads
/// every table inside the snapshot the slot exports. Writes the first checkpoint at the slot's
/// consistent point, naming the loaded tables. If anything fails after the slot was created,
/// the slot is dropped again (when the source still answers), so a first start that fails does
/// not leave a slot behind that pins WAL on the server.
#[allow(clippy::too_many_arguments)]
async fn bootstrap(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    control: &tokio_postgres::Client,
    target: &Target,
    slot: &str,
    load: bool,
    tables: &[TableId],
) -> Result<(ReplicationConnection, Position, Vec<(String, String)>), JobError> {
    let mut repl = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::source)?;
    let created = if load {
        repl.create_slot_exporting_snapshot(slot).await
    } else {
        repl.create_slot(slot).await
    }
    .map_err(JobError::source)?;
    let task = config.task.name.as_str();
    let filled = async {
        let database: String = control
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| JobError::failed(format!("reading current_database(): {e}")))?
            .get(0);
        // Before the load: a start that finds the slot but no checkpoint knows by this record
        // that the slot is this task's.
        let record = SlotRecord::new(slot, task, &database, created.consistent_point);
        target
            .write_checkpoint(&record_key(task), &record.to_checkpoint())
            .await?;
        tracing::info!(%slot, consistent_point = %created.consistent_point, id = %record.id, "slot created");
        if let Some(snapshot) = &created.snapshot_name {
            // The walsender connection stays idle meanwhile: its next command would end the
            // snapshot. The load holds every transaction committed before the consistent point.
            let loaded_up_to = Position(created.consistent_point.0.saturating_sub(1));
            let results =
                full_load::run(config, Some(snapshot), state, None, Some(loaded_up_to)).await?;
            let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
            tracing::info!(tables = results.len(), rows, "full load done");
        }
        let position = Position(created.consistent_point.0);
        let mut facts = vec![(SLOT_FACT.to_string(), slot.to_string())];
        facts.extend(tables.iter().map(table_fact));
        let checkpoint = Checkpoint {
            position,
            facts: facts.clone(),
        };
        target.write_checkpoint(task, &checkpoint).await?;
        Ok::<_, JobError>((position, facts))
    }
    .await;
    match filled {
        Ok((position, facts)) => Ok((repl, position, facts)),
        Err(e) => {
            drop(repl);
            let dropped = async {
                wait_slot_released(control, connector, slot).await?;
                drop_slot(control, connector, slot)
                    .await
                    .map_err(JobError::source)
            };
            match dropped.await {
                Ok(()) => {
                    tracing::warn!(%slot, "the first start failed: the slot it created is dropped again")
                }
                Err(d) => {
                    tracing::warn!(%slot, error = %d.message(), "the first start failed and the slot it created could not be dropped; the next start recreates it")
                }
            }
            Err(e)
        }
    }
}

/// Tables selected now but absent from the checkpoint (the selection grew, or the tables were
/// created since) join the task. With `full-load-and-cdc` each is loaded inside the snapshot of
/// a temporary slot created now: the snapshot holds every transaction committed before that
/// slot's consistent point C, and the stream applies to these tables only transactions
/// committed at or after C, so there is no gap and no overlap. Checkpoints written by earlier
/// versions name no tables; then every table counts as known.
async fn join_new_tables(
    config: &TaskConfig,
    state: &TaskState,
    connector: &PgConnector,
    target: &Target,
    tables: &[SourceTable],
    facts: &mut Vec<(String, String)>,
) -> Result<Option<JoinLoad>, JobError> {
    let now: Vec<TableId> = tables.iter().map(|t| t.schema.id.clone()).collect();
    let new = stream::joining_tables(facts, &now);
    if new.is_empty() {
        return Ok(None);
    }
    let ids: Vec<TableId> = new.iter().map(|&i| tables[i].schema.id.clone()).collect();
    let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if config.task.mode != Mode::FullLoadAndCdc {
        tracing::info!(tables = ?names, "new tables join the task; mode cdc: their changes are captured from now on");
        facts.extend(ids.iter().map(table_fact));
        return Ok(None);
    }
    tracing::info!(tables = ?names, "new tables join the task: loading them beside the stream");
    let mut join = ReplicationConnection::connect(connector)
        .await
        .map_err(JobError::source)?;
    let slot = format!("inlet_join_{}", std::process::id());
    let created = join
        .create_temporary_slot_exporting_snapshot(&slot)
        .await
        .map_err(JobError::source)?;
    let snapshot = created.snapshot_name.unwrap_or_default();
    for &i in &new {
        // A join interrupted earlier may have left change files: the new load replaces them.
        target.forget_changes(&tables[i].schema).await?;
    }
    let before = Position(created.consistent_point.0.saturating_sub(1));
    let (config, state, only) = (config.clone(), state.beside(), ids.clone());
    Ok(Some(JoinLoad::spawn(ids, before, async move {
        full_load::run(&config, Some(&snapshot), &state, Some(&only), Some(before)).await?;
        // The temporary slot, which exported the snapshot, goes with its connection.
        drop(join);
        Ok(())
    })))
}

/// Waits (up to 30 s) for the walsender of an earlier stream, ours, to release the slot: a stream
/// ended a moment ago, or a process killed before its connection was noticed gone.
async fn wait_slot_released(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<(), JobError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = slot_state(control, connector, slot)
            .await
            .map_err(JobError::source)?;
        let Some(pid) = state.and_then(|s| s.active_pid) else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(JobError::Transient {
                kind: "source",
                message: format!(
                    "replication slot {slot:?} is still in use by server process {pid}; another \
                     inlet with this task's slot may be running"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the poller needs to notice a table that should join the running task.
struct NewTableWatch {
    connector: PgConnector,
    publication: String,
    selection: TableSelection,
    policy: inlet_core::Unrepresentable,
    known: std::collections::HashSet<TableId>,
    found: Arc<AtomicBool>,
    /// New tables already reported as not readable or not capturable (once each).
    unreadable: std::collections::HashSet<TableId>,
    /// The last discovery error reported, so a lasting one is logged once, not every poll.
    discovery_failed: Option<String>,
}

impl NewTableWatch {
    async fn check(&mut self, client: &tokio_postgres::Client) {
        match discover(client, &self.connector, &self.selection, self.policy).await {
            Ok(tables) => {
                self.discovery_failed = None;
                // A captured table that is gone: dropped, or renamed out of the selection (a
                // rename within it shows at the table's next change). Its target keeps it as
                // it was at its last change.
                let present: std::collections::HashSet<&TableId> =
                    tables.iter().map(|t| &t.schema.id).collect();
                let gone: Vec<TableId> = self
                    .known
                    .iter()
                    .filter(|id| !present.contains(id))
                    .cloned()
                    .collect();
                for id in gone {
                    tracing::warn!(table = %id, "a captured table is no longer in the source (dropped, or renamed out of [tables]); its target keeps the table as it was at its last change");
                    self.known.remove(&id);
                }
                let new: Vec<SourceTable> = tables
                    .into_iter()
                    .filter(|t| !self.known.contains(&t.schema.id))
                    .collect();
                // Adding a table without replica identity to the publication would make the
                // application's UPDATEs and DELETEs of it fail: it does not join.
                let no_identity = match publication_plan(
                    client,
                    &self.connector,
                    &self.publication,
                    &new,
                )
                .await
                {
                    Ok(plan) => plan.no_identity,
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the new tables' replica identity failed");
                        return;
                    }
                };
                for t in &new {
                    if let Some(n) = no_identity.iter().find(|n| n.table == t.schema.id) {
                        if self.unreadable.insert(t.schema.id.clone()) {
                            tracing::warn!(table = %t.schema.id, fix = %n.fix(), "a new table matches the selection but has no primary key or other replica identity: adding it to the publication would make every UPDATE and DELETE of it fail, so it is not captured; make it capturable, or exclude it (the next start of the task refuses it until then)");
                        }
                    } else if t.can_select {
                        tracing::debug!(table = %t.schema.id, "a new table matches the selection");
                        self.found.store(true, Ordering::Relaxed);
                    } else if self.unreadable.insert(t.schema.id.clone()) {
                        // Joining it now would stop the task on the missing privilege; the
                        // others stream on, and the next start says what to grant.
                        tracing::warn!(table = %t.schema.id, "a new table matches the selection but inlet may not SELECT it; GRANT SELECT for it to join");
                    }
                }
            }
            Err(e) => {
                // A lasting error (e.g. an exclude_columns entry whose table was dropped) would
                // otherwise keep new tables from joining without a word.
                let message = e.to_string();
                if self.discovery_failed.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "looking for new tables failed; tables created or selected from now on join once it succeeds");
                    self.discovery_failed = Some(message);
                }
            }
        }
    }
}

/// Reads the slot's retained WAL for the metrics every [`SLOT_POLL`], looks for tables that
/// should join, and writes heartbeats into the source's WAL when configured.
fn spawn_slot_poller(
    client: tokio_postgres::Client,
    slot: String,
    state: TaskState,
    heartbeat_ms: u64,
    mut watch: NewTableWatch,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let heartbeat = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
        let every = heartbeat.map_or(SLOT_POLL, |h| h.min(SLOT_POLL));
        let mut last_poll: Option<Instant> = None;
        loop {
            if heartbeat.is_some() {
                // Non-transactional, so it reaches the WAL (and moves the slot) at once.
                if let Err(e) = client
                    .execute(
                        "SELECT pg_logical_emit_message(false, 'inlet.heartbeat', '')",
                        &[],
                    )
                    .await
                {
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
            if last_poll.is_none_or(|t| t.elapsed() >= SLOT_POLL) {
                last_poll = Some(Instant::now());
                watch.check(&client).await;
                let row = client
                    .query_opt(
                        "SELECT (pg_current_wal_lsn() - restart_lsn)::int8, wal_status \
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&slot],
                    )
                    .await;
                match row {
                    Ok(Some(r)) => {
                        let retained: Option<i64> = r.get(0);
                        let status: Option<String> = r.get(1);
                        state.set_slot(retained, status.as_deref() == Some("lost"));
                    }
                    Ok(None) => state.set_slot(None, true),
                    Err(e) => tracing::debug!(error = %e, "reading the slot's retained WAL failed"),
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// A slot dropped while streaming gets the same clear message as at start-up (or, with
/// `on_slot_lost = "resnapshot"`, a restart that resnapshots); so does a dropped publication,
/// which the server reports with the same SQLSTATE (42704, undefined object) but which is told
/// apart by its message. Other errors are classified by the connector.
fn slot_error(
    e: inlet_postgres::PgError,
    slot: &str,
    publication: &str,
    checkpoint: &str,
    resnapshot: bool,
) -> JobError {
    if let inlet_postgres::PgError::Replication {
        code: Some(code),
        message,
        ..
    } = &e
    {
        if code == "42704" && message.contains("publication") {
            let reason = publication_lost_reason(publication, slot);
            return if resnapshot {
                // `run` takes this kind as "resnapshot now", whatever the start then finds.
                JobError::Transient {
                    kind: PUBLICATION_LOST,
                    message: reason,
                }
            } else {
                JobError::Failed(format!(
                    "{reason}. To load every table again: drop the slot \
                     (SELECT pg_drop_replication_slot('{slot}')) and delete the task checkpoint \
                     ({checkpoint}), then run the task again (inlet creates the publication anew); \
                     or set cdc.on_slot_lost = \"resnapshot\" to do this automatically"
                ))
            };
        }
        if code == "42704" {
            let message = format!(
                "replication slot {slot:?} was dropped while the task used it: changes since the last \
                 checkpoint may be lost. inlet never recreates a slot silently; delete the task \
                 checkpoint ({}) and run the task again for a new full load, or set \
                 cdc.on_slot_lost = \"resnapshot\"",
                checkpoint
            );
            return if resnapshot {
                JobError::Transient {
                    kind: "slot_lost",
                    message,
                }
            } else {
                JobError::Failed(message)
            };
        }
    }
    JobError::source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(plugin: &str, database: &str, confirmed: u64) -> SlotState {
        SlotState {
            plugin: Some(plugin.into()),
            database: Some(database.into()),
            wal_status: Some("reserved".into()),
            confirmed_flush: Some(Lsn(confirmed)),
            active_pid: None,
        }
    }

    fn checkpoint(position: u64, slot: &str) -> Checkpoint {
        Checkpoint {
            position: Position(position),
            facts: vec![(SLOT_FACT.into(), slot.into())],
        }
    }

    fn plan(
        checkpoint: Option<&Checkpoint>,
        record: Option<&SlotRecord>,
        slot_now: Option<&SlotState>,
    ) -> Result<SlotPlan, String> {
        plan_slot(&StartFacts {
            slot: "inlet_t",
            task: "t",
            database: "app",
            publication: "inlet_t",
            checkpoint,
            checkpoint_at: "out/_inlet/t/checkpoint",
            record,
            record_at: "out/_inlet/t.slot/checkpoint",
            slot_now,
            server_at: Lsn(0x5000),
            publication_exists: true,
        })
    }

    #[test]
    fn only_a_slot_proven_to_be_the_tasks_is_used_or_dropped() {
        let ours = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000));
        // Nothing yet: create.
        assert_eq!(plan(None, None, None), Ok(SlotPlan::Create));
        // Interrupted first load: the record names the slot, which never moved.
        let fresh = slot("pgoutput", "app", 0x1000);
        assert_eq!(
            plan(None, Some(&ours), Some(&fresh)),
            Ok(SlotPlan::Recreate)
        );
        // The same slot name without a record: another tool's or another task's.
        let e = plan(None, None, Some(&fresh)).unwrap_err();
        assert!(e.contains("this task did not create it"), "{e}");
        // A record of another task (a task whose name gives the same slot name).
        let theirs = SlotRecord::new("inlet_t", "T", "app", Lsn(0x1000));
        assert!(plan(None, Some(&theirs), Some(&fresh)).is_err());
        // Ours once, but it streamed since and the checkpoint is gone: not dropped.
        let moved = slot("pgoutput", "app", 0x2000);
        let e = plan(None, Some(&ours), Some(&moved)).unwrap_err();
        assert!(e.contains("drop the slot as well"), "{e}");
        // Another plugin or database: never ours.
        let other = slot("wal2json", "app", 0x1000);
        assert!(plan(None, Some(&ours), Some(&other))
            .unwrap_err()
            .contains("wal2json"));
        let elsewhere = slot("pgoutput", "billing", 0x1000);
        assert!(plan(None, Some(&ours), Some(&elsewhere))
            .unwrap_err()
            .contains("billing"));
        // Resume: the checkpoint names the slot, which confirmed nothing past it.
        let cp = checkpoint(0x3000, "inlet_t");
        assert_eq!(plan(Some(&cp), None, Some(&moved)), Ok(SlotPlan::Resume));
        // Something else streamed from it past the checkpoint.
        let ahead = slot("pgoutput", "app", 0x4000);
        let e = plan(Some(&cp), None, Some(&ahead)).unwrap_err();
        assert!(e.contains("something else streamed from it"), "{e}");
        // A checkpoint of another slot.
        let e = plan(Some(&checkpoint(0x3000, "debezium")), None, Some(&moved)).unwrap_err();
        assert!(e.contains("source.slot now names \"inlet_t\""), "{e}");
        // A checkpoint ahead of the server.
        let e = plan(Some(&checkpoint(0x6000, "inlet_t")), None, Some(&moved)).unwrap_err();
        assert!(
            e.contains("ahead of the server's WAL, which is at 0/5000"),
            "{e}"
        );
        // A checkpoint whose slot is gone: lost, nothing to drop.
        assert!(matches!(
            plan(Some(&cp), None, None),
            Ok(SlotPlan::Lost {
                drop_slot: false,
                ..
            })
        ));
    }

    #[test]
    fn the_slot_record_round_trips() {
        let r = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1234));
        assert_eq!(SlotRecord::from_checkpoint(&r.to_checkpoint()), Some(r));
        assert_eq!(SlotRecord::from_checkpoint(&checkpoint(1, "inlet_t")), None);
    }
}
