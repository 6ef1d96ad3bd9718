//! The rules that decide what a CDC task's start does with its replication slot, before it
//! writes anything: a slot is streamed from or dropped only when it is provably the task's own
//! (the task checkpoint names it and it confirmed nothing past it, or the slot record the task
//! wrote into its target when it created the slot), and a lost slot, a dropped publication, a
//! restored database or a failed-over standby each get a refusal that says what to do. Pure
//! decisions on what the start read ([`StartFacts`]): the task engine reads and acts.

use inlet_core::{Checkpoint, Position, PostgresResume, SlotCreator, SourceResume};

use crate::replication::Lsn;
use crate::slot::SlotState;

/// The record inlet writes into the target when it creates a task's slot, before the load
/// starts: "slot X was created by task T in database D at position L, id U". PostgreSQL keeps no
/// owner or comment for a slot, so this is how a later start proves that a slot found without
/// a checkpoint is this task's own (one whose first load was interrupted) and not another
/// tool's or another task's, which inlet must never drop or stream from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    pub slot: String,
    pub task: String,
    pub database: String,
    pub id: String,
    pub created_at: Lsn,
    /// The system identifier of the database cluster the slot was created in (IDENTIFY_SYSTEM):
    /// a physical standby shares it, so the slot a promoted standby synchronized counts as the
    /// task's, and a slot of the same name in another cluster does not. `None` in records of
    /// earlier versions.
    pub system: Option<String>,
    /// Written before `CREATE_REPLICATION_SLOT`, with `created_at` the server's WAL position
    /// then: a process killed between the slot's creation and the record of it would otherwise
    /// leave a slot no start could prove to be the task's, refused until dropped by hand.
    pub creating: bool,
}

impl SlotRecord {
    pub fn new(slot: &str, task: &str, database: &str, created_at: Lsn) -> Self {
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
            system: None,
            creating: false,
        }
    }

    /// The record written just before the slot is created: "task T is creating slot X, the
    /// server's WAL is at L" (see [`SlotRecord::creating`]).
    pub fn before_creating(mut self) -> Self {
        self.creating = true;
        self
    }

    /// The record of a slot created in the cluster whose system identifier is `system`.
    pub fn in_system(mut self, system: String) -> Self {
        self.system = Some(system);
        self
    }

    /// The record in the checkpoint's shape: at the slot's creation, naming its creator.
    pub fn to_checkpoint(&self) -> Checkpoint {
        Checkpoint {
            source: Some(SourceResume::Postgres(PostgresResume {
                slot: self.slot.clone(),
                created_by: Some(SlotCreator {
                    task: self.task.clone(),
                    database: self.database.clone(),
                    id: self.id.clone(),
                    system: self.system.clone(),
                    creating: self.creating,
                }),
            })),
            ..Checkpoint::at(Position(self.created_at.0))
        }
    }

    /// The record a checkpoint-shaped record holds; None if it names no creator.
    pub fn from_checkpoint(cp: &Checkpoint) -> Option<Self> {
        let resume = cp.source.as_ref()?.postgres()?;
        let creator = resume.created_by.as_ref()?;
        Some(Self {
            slot: resume.slot.clone(),
            task: creator.task.clone(),
            database: creator.database.clone(),
            id: creator.id.clone(),
            created_at: Lsn(cp.position.0),
            system: creator.system.clone(),
            creating: creator.creating,
        })
    }
}

/// What the start of a CDC task does with the slot, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotPlan {
    /// No slot and no checkpoint: create the slot (and load).
    Create,
    /// This task's slot, whose first load never finished: drop it and create it again.
    Recreate,
    /// This task's slot, whose first load never finished, still where it was created (at
    /// `consistent_point`): kept, so the load resumes in a new snapshot beside the chunks it
    /// completed and the stream starts at the slot ([`inlet_core::held_keys`]).
    ContinueLoad { consistent_point: Lsn },
    /// This task's slot and checkpoint: stream from the checkpoint.
    Resume,
    /// Changes since the checkpoint cannot be read any more (slot lost or gone, publication
    /// dropped). `drop_slot`: the slot, this task's, still exists.
    Lost { reason: String, drop_slot: bool },
}

/// What is known at the start, read before anything is written.
pub struct StartFacts<'a> {
    pub slot: &'a str,
    pub task: &'a str,
    pub database: &'a str,
    pub publication: &'a str,
    pub checkpoint: Option<&'a Checkpoint>,
    pub checkpoint_at: &'a str,
    pub record: Option<&'a SlotRecord>,
    pub record_at: &'a str,
    pub slot_now: Option<&'a SlotState>,
    pub server_at: Lsn,
    pub publication_exists: bool,
    /// The server is a standby (in recovery).
    pub in_recovery: bool,
    /// The server's system identifier, when it could be read.
    pub system: Option<&'a str>,
    /// Where the server's current timeline forked from its parent (the end of the WAL a
    /// promoted standby had), read only for a promoted standby's copy of a failover slot, when
    /// the server answers TIMELINE_HISTORY.
    pub fork: Option<Lsn>,
}

/// Decides what to do with the slot, or why not to go on (the refusal says what to do). A slot
/// is dropped or streamed from only when it is provably this task's: the task checkpoint names
/// it and it has confirmed nothing past the checkpoint, or (no checkpoint) the slot record in
/// the target names it and it still sits where it was created.
pub fn plan_slot(f: &StartFacts) -> Result<SlotPlan, String> {
    let slot = f.slot;
    let drop_sql = format!(
        "SELECT pg_drop_replication_slot('{}');",
        slot.replace('\'', "''")
    );
    if let Some(cp) = f.checkpoint {
        // A promoted standby's copy of the failover slot, and a checkpoint past the standby's
        // WAL: the old primary sent inlet changes before the standby had them (its
        // synchronized_standby_slots did not name this standby), and the crash took them from
        // the new primary while the target keeps them.
        let failed_over = f.slot_now.is_some_and(|s| s.synced == Some(true)) && !f.in_recovery;
        // The end of the standby's WAL: the fork into the current timeline when known, else the
        // server's position (still below the checkpoint if the new primary wrote little since).
        let standby_end = f.fork.unwrap_or(f.server_at);
        if failed_over && cp.position.0 > standby_end.0.min(f.server_at.0) {
            return Err(format!(
                "the task checkpoint ({}) is at position {}, past the WAL this server had when it \
                 was promoted ({}): it is a promoted standby whose copy of failover slot {slot:?} the task would continue \
                 from: the old primary sent inlet changes this standby never received, and the \
                 failover lost them, so the target holds changes the new primary does not. This \
                 happens when the old primary's synchronized_standby_slots did not name this \
                 standby's physical slot (inlet check warns about it). Nothing was written. To load \
                 every table again from this server, delete the checkpoint ({}) and the \
                 replication slot ({drop_sql}) and run the task again; then set \
                 synchronized_standby_slots on the new primary to its standbys' slots",
                f.checkpoint_at,
                Lsn(cp.position.0),
                Lsn(standby_end.0.min(f.server_at.0)),
                f.checkpoint_at,
            ));
        }
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
            .source
            .as_ref()
            .and_then(SourceResume::postgres)
            .map(|p| p.slot.as_str());
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
    // A record of the slot's creation in another cluster: the slot found here, if any, is
    // another's, and the checkpoint's positions are another server's WAL. A promoted physical
    // standby has the cluster's identifier, so a failover passes.
    if let (Some(record), Some(here)) = (f.record, f.system) {
        let created_in = record.system.as_deref().filter(|s| *s != here);
        if let Some(created_in) = created_in.filter(|_| record.slot == slot) {
            let slot_here = if f.slot_now.is_some() {
                format!(
                    "; the slot {slot:?} on this server is not the task's, so inlet neither streams \
                     from it nor drops it ({drop_sql} if it is truly abandoned)"
                )
            } else {
                String::new()
            };
            return Err(format!(
                "this task created replication slot {slot:?} in the database cluster with system \
                 identifier {created_in} (slot record {}), but source.url now reaches the cluster \
                 {here}: another server, not the primary or a promoted physical standby of it, so \
                 the task checkpoint's positions mean nothing here{slot_here}. Point source.url \
                 back at the task's server, or, to load every table again from this one, delete \
                 the task checkpoint ({}) and the slot record ({}) and run the task again",
                f.record_at, f.checkpoint_at, f.record_at
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
    if f.in_recovery && existing.synced == Some(true) {
        return Err(format!(
            "replication slot {slot:?} on this server is the copy a standby keeps of the \
             primary's failover slot (synced = true): PostgreSQL lets nothing stream from it \
             until the standby is promoted. Point source.url at the primary, or, after a \
             failover, promote this standby first; the task then continues from this copy"
        ));
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
                reason: format!("replication slot {slot:?} is {}", existing.lost_reason()),
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
            // Killed between the record of intent and the record of the creation: the slot
            // was created after the intent (it confirms no position before it), and nothing
            // streams from it now. The task writes no checkpoint before the record of the
            // creation, so nothing it streamed is lost by dropping it.
            let created_since = r.creating
                && confirmed.is_some_and(|c| c.0 >= r.created_at.0)
                && existing.active_pid.is_none();
            if !r.creating && confirmed == Some(r.created_at) {
                Ok(SlotPlan::ContinueLoad {
                    consistent_point: r.created_at,
                })
            } else if confirmed == Some(r.created_at) || created_since {
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

/// The switch point of the last entry of a timeline history file.
pub fn parse_fork(history: &str) -> Option<Lsn> {
    history
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|lsn| Lsn::parse(lsn.trim()))
}

/// Why a task whose publication is gone cannot go on through its slot.
pub fn publication_lost_reason(publication: &str, slot: &str) -> String {
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
            failover: None,
            synced: None,
            invalidation_reason: None,
            conflicting: None,
        }
    }

    fn checkpoint(position: u64, slot: &str) -> Checkpoint {
        Checkpoint {
            source: Some(SourceResume::Postgres(PostgresResume {
                slot: slot.into(),
                created_by: None,
            })),
            ..Checkpoint::at(Position(position))
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
            in_recovery: false,
            system: Some("7300000000000000001"),
            fork: None,
        })
    }

    #[test]
    fn only_a_slot_proven_to_be_the_tasks_is_used_or_dropped() {
        let ours = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000));
        // Nothing yet: create.
        assert_eq!(plan(None, None, None), Ok(SlotPlan::Create));
        // Interrupted first load: the record names the slot, which never moved; it is kept
        // for the load to go on.
        let fresh = slot("pgoutput", "app", 0x1000);
        assert_eq!(
            plan(None, Some(&ours), Some(&fresh)),
            Ok(SlotPlan::ContinueLoad {
                consistent_point: Lsn(0x1000)
            })
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
        // A promoted standby's copy of the failover slot behind the checkpoint: resume (the
        // server skips what the checkpoint holds) when the standby's WAL reaches it.
        let copy = SlotState {
            failover: Some(true),
            synced: Some(true),
            ..slot("pgoutput", "app", 0x2000)
        };
        assert_eq!(plan(Some(&cp), None, Some(&copy)), Ok(SlotPlan::Resume));
        // Past the standby's WAL: the failover lost changes the target holds.
        let e = plan(Some(&checkpoint(0x6000, "inlet_t")), None, Some(&copy)).unwrap_err();
        assert!(
            e.contains("a promoted standby whose copy of failover slot \"inlet_t\"")
                && e.contains("synchronized_standby_slots did not name this standby"),
            "{e}"
        );
        // The new primary wrote past the checkpoint since, but the standby's WAL ended (the
        // fork into its timeline) before it: refused all the same.
        let e = plan_slot(&StartFacts {
            slot: "inlet_t",
            task: "t",
            database: "app",
            publication: "inlet_t",
            checkpoint: Some(&cp),
            checkpoint_at: "out/_inlet/t/checkpoint",
            record: None,
            record_at: "out/_inlet/t.slot/checkpoint",
            slot_now: Some(&copy),
            server_at: Lsn(0x5000),
            publication_exists: true,
            in_recovery: false,
            system: None,
            fork: Some(Lsn(0x2800)),
        })
        .unwrap_err();
        assert!(
            e.contains("past the WAL this server had when it was promoted (0/2800)"),
            "{e}"
        );
        assert_eq!(
            parse_fork("1\t0/2F00000\tno recovery target specified\n\n2\t0/3026040\tno recovery target specified\n"),
            Some(Lsn(0x3026040))
        );
        assert_eq!(parse_fork(""), None);
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
    fn a_slot_created_after_the_record_of_intent_is_the_tasks() {
        // The process was killed after CREATE_REPLICATION_SLOT, before the record of the
        // creation: the record of intent (WAL at 0x1000 then) is all the target holds.
        let intent = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000)).before_creating();
        let back = SlotRecord::from_checkpoint(&intent.to_checkpoint()).unwrap();
        assert_eq!(back, intent);
        let created = slot("pgoutput", "app", 0x1400);
        assert_eq!(
            plan(None, Some(&intent), Some(&created)),
            Ok(SlotPlan::Recreate)
        );
        // A slot that confirms a position from before the intent existed before it.
        let older = slot("pgoutput", "app", 0x0800);
        assert!(plan(None, Some(&intent), Some(&older)).is_err());
        // One something streams from now is not taken.
        let mut active = slot("pgoutput", "app", 0x1400);
        active.active_pid = Some(42);
        assert!(plan(None, Some(&intent), Some(&active)).is_err());
        // The record of the creation itself still needs the slot where it was created.
        let done = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000));
        assert!(plan(None, Some(&done), Some(&created)).is_err());
        // A record restored after a failed creation names no slot: vouches for none.
        let none = SlotRecord::new("", "t", "app", Lsn(0));
        let e = plan(None, Some(&none), Some(&created)).unwrap_err();
        assert!(e.contains("this task did not create it"), "{e}");
    }

    #[test]
    fn a_slot_record_of_another_cluster_is_refused() {
        let cp = checkpoint(0x3000, "inlet_t");
        let moved = slot("pgoutput", "app", 0x2000);
        // The cluster the record names (a promoted physical standby has its identifier).
        let here = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000))
            .in_system("7300000000000000001".into());
        assert_eq!(
            plan(Some(&cp), Some(&here), Some(&moved)),
            Ok(SlotPlan::Resume)
        );
        let elsewhere = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000))
            .in_system("7399999999999999999".into());
        let e = plan(Some(&cp), Some(&elsewhere), Some(&moved)).unwrap_err();
        assert!(
            e.contains("system identifier 7399999999999999999")
                && e.contains("source.url now reaches the cluster 7300000000000000001")
                && e.contains("neither streams from it nor drops it"),
            "{e}"
        );
        // Without a checkpoint either: the slot is not dropped and recreated.
        let fresh = slot("pgoutput", "app", 0x1000);
        assert!(plan(None, Some(&elsewhere), Some(&fresh)).is_err());
        // A record of an earlier version names no cluster: the other checks decide.
        let unnamed = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1000));
        assert_eq!(
            plan(Some(&cp), Some(&unnamed), Some(&moved)),
            Ok(SlotPlan::Resume)
        );
        assert_eq!(
            SlotRecord::from_checkpoint(&elsewhere.to_checkpoint()),
            Some(elsewhere)
        );
    }

    #[test]
    fn the_slot_record_round_trips() {
        let r = SlotRecord::new("inlet_t", "t", "app", Lsn(0x1234));
        assert_eq!(SlotRecord::from_checkpoint(&r.to_checkpoint()), Some(r));
        assert_eq!(SlotRecord::from_checkpoint(&checkpoint(1, "inlet_t")), None);
    }
}
