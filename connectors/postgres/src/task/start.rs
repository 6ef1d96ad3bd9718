//! What a CDC task checks before it writes anything, and what `inlet check` reports of it:
//! whose the replication slot is (proved by the slot record inlet writes into the target when it
//! creates one), whether it is lost, the checkpoint's position against the server's, and what
//! adding the tables to the publication would do.

use inlet_core::snapshot::SourceError;
use inlet_core::source::CheckpointStore;
use inlet_core::{Checkpoint, Prerequisite};

use crate::catalog::SourceTable;
use crate::config::{PgConnector, PostgresSourceConfig};
use crate::replication::{Lsn, ReplicationConnection};
use crate::slot::{
    current_wal_position, publication_exists, publication_plan, slot_capacity, slot_state,
    walsender_capacity, PublicationPlan, SlotState,
};
use crate::slot_plan::{parse_fork, plan_slot, SlotPlan, SlotRecord, StartFacts};

/// Where the slot record of a task lives: a checkpoint-shaped record under `_inlet/<task>.slot/`
/// beside the task's own `_inlet/<task>/` (task names cannot contain a dot, so no task has it).
pub(super) fn record_key(task: &str) -> String {
    format!("{task}.slot")
}

/// The server's system identifier: from pg_control_system() when the user may call it (a
/// superuser, or granted), else from IDENTIFY_SYSTEM on a replication connection, which a
/// change data capture user may open. `None` when neither answers: the cluster check is then
/// skipped, the other checks stay.
pub(super) async fn system_identifier(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
) -> Option<String> {
    if let Ok(row) = control
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
    {
        return row.get(0);
    }
    let mut repl = ReplicationConnection::connect(connector).await.ok()?;
    let system = repl.identify_system().await.ok().map(|s| s.systemid);
    repl.close().await;
    system
}

/// Where the server's current timeline forked from its parent: the switch point on the last
/// line of its timeline history file (`parent<TAB>switchpoint<TAB>reason`), read with
/// TIMELINE_HISTORY on a replication connection. After a promotion that is the end of the WAL
/// the standby had. `None` on timeline 1 (never promoted) or when the server does not answer.
pub(super) async fn timeline_fork(connector: &PgConnector) -> Option<Lsn> {
    let mut repl = ReplicationConnection::connect(connector).await.ok()?;
    let fork = async {
        let timeline = repl.identify_system().await.ok()?.timeline;
        if timeline <= 1 {
            return None;
        }
        let rows = repl
            .simple_query(&format!("TIMELINE_HISTORY {timeline}"))
            .await
            .ok()?;
        let content = rows.first()?.get("content")?.to_string();
        parse_fork(&content)
    }
    .await;
    repl.close().await;
    fork
}

/// Everything the start of a CDC task reads before it writes anything, and what it will do.
/// `inlet check` reports the same ([`StartCheck::report`]), so it says ready only when `run`
/// will start.
pub(super) struct StartCheck {
    pub(super) checkpoint: Option<Checkpoint>,
    pub(super) plan: Result<SlotPlan, String>,
    pub(super) publication: PublicationPlan,
    /// Replication slots that exist, and `max_replication_slots`.
    pub(super) slots: (i64, i64),
    /// Walsenders running, and `max_wal_senders`; whether one of them serves the task's slot
    /// (an earlier run's, which goes away).
    pub(super) walsenders: (i64, i64, bool),
    pub(super) resnapshot: bool,
    pub(super) failover: FailoverFacts,
}

/// What `source.failover_slot` needs and what the server offers for it.
#[derive(Debug, Clone, Default)]
pub(super) struct FailoverFacts {
    /// `source.failover_slot = true`.
    pub(super) wanted: bool,
    /// `server_version_num`.
    pub(super) server_version: i32,
    /// The task's slot exists and is (`Some(true)`) or is not a failover slot.
    pub(super) slot_failover: Option<bool>,
    /// The server is a standby.
    pub(super) in_recovery: bool,
    /// Physical slots named in `synchronized_standby_slots`, each with whether a standby is
    /// streaming from it now (`None`: no such slot).
    pub(super) standby_slots: Vec<(String, Option<bool>)>,
    /// On a standby: `hot_standby_feedback` is on, and `primary_slot_name` (empty: none).
    pub(super) standby_settings: Option<(bool, String)>,
}

impl FailoverFacts {
    async fn read(
        control: &tokio_postgres::Client,
        wanted: bool,
        slot_now: Option<&SlotState>,
    ) -> Result<Self, SourceError> {
        let row = control
            .query_one(
                "SELECT current_setting('server_version_num')::int, pg_is_in_recovery(), \
                        coalesce(current_setting('synchronized_standby_slots', true), '')",
                &[],
            )
            .await
            .map_err(|e| SourceError::failed(format!("reading the server's version: {e}")))?;
        let setting: String = row.get(2);
        let mut standby_slots = Vec::new();
        // A list of slot names, as PostgreSQL parses it: comma-separated, optionally quoted.
        for name in setting
            .split(',')
            .map(|n| n.trim().trim_matches('"'))
            .filter(|n| !n.is_empty())
        {
            let active: Option<bool> = control
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1 \
                     AND slot_type = 'physical'",
                    &[&name],
                )
                .await
                .map_err(|e| SourceError::failed(format!("reading pg_replication_slots: {e}")))?
                .map(|r| r.get(0));
            standby_slots.push((name.to_string(), active));
        }
        let in_recovery: bool = row.get(1);
        let standby_settings = if in_recovery {
            let r = control
                .query_one(
                    "SELECT current_setting('hot_standby_feedback') = 'on', \
                            coalesce(current_setting('primary_slot_name', true), '')",
                    &[],
                )
                .await
                .map_err(|e| SourceError::failed(format!("reading the standby's settings: {e}")))?;
            Some((r.get(0), r.get(1)))
        } else {
            None
        };
        Ok(Self {
            wanted,
            server_version: row.get(0),
            slot_failover: slot_now.and_then(|s| s.failover),
            in_recovery,
            standby_slots,
            standby_settings,
        })
    }

    /// The `inlet check` line of a task whose source.url is a standby.
    fn standby_report(&self) -> Option<Prerequisite> {
        const NAME: &str = "standby";
        let (feedback, primary_slot) = self.standby_settings.as_ref()?;
        if self.server_version < 160_000 {
            return Some(Prerequisite::missing(
                NAME,
                format!(
                    "source.url reaches a standby (in recovery), and PostgreSQL {} cannot decode \
                     changes on a standby (16 and later can)",
                    self.server_version
                ),
                "point source.url at the primary, or upgrade to PostgreSQL 16+",
            ));
        }
        if self.wanted {
            return Some(Prerequisite::missing(
                NAME,
                "source.failover_slot = true, but source.url reaches a standby: PostgreSQL \
                 creates no failover slot on a standby (a standby synchronizes the primary's)",
                "remove source.failover_slot, or point source.url at the primary",
            ));
        }
        if !*feedback || primary_slot.is_empty() {
            return Some(Prerequisite::warning(
                NAME,
                format!(
                    "source.url reaches a standby with {}: the primary may remove catalog rows \
                     the task's slot still needs, and the standby then invalidates the slot \
                     (invalidation_reason = rows_removed), which means a new full load",
                    if *feedback {
                        "no primary_slot_name"
                    } else {
                        "hot_standby_feedback = off"
                    }
                ),
                "on the standby set hot_standby_feedback = on and primary_slot_name = '<a \
                 physical slot on the primary>', then reload it",
            ));
        }
        Some(Prerequisite::ok(
            NAME,
            format!(
                "source.url reaches a standby (hot_standby_feedback = on, physical slot \
                 {primary_slot:?} on the primary); the publication comes from the primary, and \
                 a new slot waits for the primary's next running-transactions record (SELECT \
                 pg_log_standby_snapshot() on the primary hurries an idle one)"
            ),
        ))
    }

    /// The `inlet check` lines about failover slots: only when `source.failover_slot` is set,
    /// or the task's slot is one.
    fn report(&self, slot: &str) -> Option<Prerequisite> {
        const NAME: &str = "failover slot";
        if self.wanted && self.server_version < 170_000 {
            return Some(Prerequisite::missing(
                NAME,
                format!(
                    "source.failover_slot = true needs PostgreSQL 17 or later (failover slots); \
                     the server is version {}",
                    self.server_version
                ),
                "remove source.failover_slot, or upgrade the server to PostgreSQL 17+",
            ));
        }
        if !self.wanted && self.slot_failover != Some(true) {
            return None;
        }
        if self.in_recovery {
            return None;
        }
        if self.wanted && self.slot_failover == Some(false) {
            return Some(Prerequisite::warning(
                NAME,
                format!(
                    "source.failover_slot = true, but {slot:?} was created before it was set and is \
                     not a failover slot: no standby keeps a copy of it, and a failover means a \
                     new full load"
                ),
                format!(
                    "on a replication connection (psql \"dbname=<database> replication=database\") \
                     run: ALTER_REPLICATION_SLOT {slot} (FAILOVER true)"
                ),
            ));
        }
        let what = if self.slot_failover == Some(true) {
            format!("{slot:?} is a failover slot")
        } else {
            format!("{slot:?} will be created as a failover slot")
        };
        let synchronizing: Vec<&str> = self
            .standby_slots
            .iter()
            .filter(|(_, active)| *active == Some(true))
            .map(|(n, _)| n.as_str())
            .collect();
        Some(if self.standby_slots.is_empty() {
            Prerequisite::warning(
                NAME,
                format!(
                    "{what}, but synchronized_standby_slots names no standby: inlet may receive \
                     changes a standby has not received yet, which a failover to that standby \
                     then loses from the source but not from the target"
                ),
                "on the primary: ALTER SYSTEM SET synchronized_standby_slots = '<the standby's \
                 physical slot>'; SELECT pg_reload_conf(); on the standby: \
                 sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name, and \
                 dbname in primary_conninfo",
            )
        } else if synchronizing.is_empty() {
            Prerequisite::warning(
                NAME,
                format!(
                    "{what}; synchronized_standby_slots names {}, but no standby streams from \
                     {}: PostgreSQL holds the changes back from inlet until one does",
                    self.standby_slots
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if self.standby_slots.len() == 1 {
                        "it"
                    } else {
                        "them"
                    }
                ),
                "start the standby, or remove its slot from synchronized_standby_slots",
            )
        } else {
            Prerequisite::ok(
                NAME,
                format!(
                    "{what}; standbys streaming from {} receive every change before inlet does",
                    synchronizing.join(", ")
                ),
            )
        })
    }
}

impl StartCheck {
    /// `checkpoint`: the task checkpoint, as read from `store`; `resnapshot`:
    /// `cdc.on_slot_lost = "resnapshot"`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read(
        task: &str,
        source: &PostgresSourceConfig,
        control: &tokio_postgres::Client,
        connector: &PgConnector,
        store: &dyn CheckpointStore,
        checkpoint: Option<Checkpoint>,
        tables: &[SourceTable],
        lost: Option<String>,
        resnapshot: bool,
    ) -> Result<Self, SourceError> {
        let slot = source.slot_name(task);
        let publication = source.publication_name(task);
        let record = store
            .read(&record_key(task))
            .await
            .map_err(SourceError::from_target)?
            .as_ref()
            .and_then(SlotRecord::from_checkpoint);
        let slot_now = slot_state(control, connector, &slot)
            .await
            .map_err(SourceError::from)?;
        let server_at = current_wal_position(control, connector)
            .await
            .map_err(SourceError::from)?;
        let exists = publication_exists(control, connector, &publication)
            .await
            .map_err(SourceError::from)?;
        let database: String = control
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| SourceError::failed(format!("reading current_database(): {e}")))?
            .get(0);
        let failover =
            FailoverFacts::read(control, source.failover_slot, slot_now.as_ref()).await?;
        // Only a record that names a cluster needs the server's.
        let system = match record.as_ref().and_then(|r| r.system.as_ref()) {
            Some(_) => system_identifier(control, connector).await,
            None => None,
        };
        // Only a promoted standby's copy of a failover slot, behind the checkpoint, needs the
        // fork: whether the standby had the WAL up to the checkpoint.
        let fork = match (&checkpoint, &slot_now) {
            (Some(cp), Some(s))
                if s.synced == Some(true)
                    && !failover.in_recovery
                    && s.confirmed_flush.is_some_and(|c| c.0 < cp.position.0) =>
            {
                timeline_fork(connector).await
            }
            _ => None,
        };
        let checkpoint_at = store.location(task);
        let record_at = store.location(&record_key(task));
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
            in_recovery: failover.in_recovery,
            system: system.as_deref(),
            fork,
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
            .map_err(SourceError::from)?;
        let slots = slot_capacity(control, connector)
            .await
            .map_err(SourceError::from)?;
        let (running, max) = walsender_capacity(control, connector)
            .await
            .map_err(SourceError::from)?;
        let ours = slot_now.as_ref().is_some_and(|s| s.active_pid.is_some());
        Ok(Self {
            checkpoint,
            plan,
            publication,
            slots,
            walsenders: (running, max, ours),
            resnapshot,
            failover,
        })
    }

    /// The findings as `inlet check` lines; a MISSING one stops `inlet run` before it writes.
    pub(super) fn report(
        &self,
        slot: &str,
        publication: &str,
        checkpoint_at: &str,
    ) -> Vec<Prerequisite> {
        let mut out = Vec::new();
        out.push(match &self.plan {
            Err(refusal) => Prerequisite::missing("replication slot", refusal.clone(), "see above"),
            Ok(SlotPlan::Create) => {
                Prerequisite::ok("replication slot", format!("{slot:?} will be created"))
            }
            Ok(SlotPlan::ContinueLoad { consistent_point }) => Prerequisite::ok(
                "replication slot",
                format!(
                    "{slot:?} was created by this task at {consistent_point}, and its first load                      did not finish: the load resumes beside the chunks it completed, and the                      stream starts at the slot"
                ),
            ),
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
        out.extend(self.failover.standby_report());
        out.extend(self.failover.report(slot));
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
        out.extend(walsender_report(self.walsenders));
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

/// Whether the stream will find a free walsender (`max_wal_senders`), and a joining table a
/// second one. One serving the task's own slot belongs to an earlier run, which is going away:
/// then only a warning, so that a restart right after a crash is not refused.
fn walsender_report((running, max, ours): (i64, i64, bool)) -> Option<Prerequisite> {
    const NAME: &str = "free walsender";
    const FIX: &str = "raise max_wal_senders (and restart PostgreSQL), or stop a replication \
                       client nothing needs (SELECT pid, application_name FROM pg_stat_replication)";
    let free = max - running + i64::from(ours);
    if free <= 0 {
        let detail = format!(
            "max_wal_senders = {max} and {running} walsenders run: the change stream cannot connect"
        );
        Some(if ours {
            Prerequisite::warning(NAME, detail, FIX)
        } else {
            Prerequisite::missing(NAME, detail, FIX)
        })
    } else if free == 1 {
        Some(Prerequisite::warning(
            NAME,
            format!(
                "max_wal_senders = {max} and {running} walsenders run: the stream takes the last \
                 one, and a table that joins the running task (it needs a second one while it \
                 loads) waits for a free one"
            ),
            FIX,
        ))
    } else {
        None
    }
}
