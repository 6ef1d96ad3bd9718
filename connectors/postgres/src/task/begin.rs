//! How a task's change capture begins on PostgreSQL: a new slot (recorded in the target as
//! this task's, before and after it is created, so a later start can prove it), whose exported
//! snapshot the first load reads; and waiting for an earlier stream's walsender to release the
//! slot before it is used again.

use std::time::{Duration, Instant};

use inlet_core::snapshot::SourceError;
use inlet_core::source::CheckpointStore;
use inlet_core::{Position, TableId, TableStates};

use super::seen::SeenBySnapshot;
use super::start::record_key;
use crate::config::PgConnector;
use crate::replication::{Lsn, ReplicationConnection};
use crate::slot::{drop_slot, slot_state};
use crate::slot_plan::SlotRecord;

/// A slot this start created, and what the first checkpoint records.
pub(super) struct Created {
    pub(super) repl: ReplicationConnection,
    pub(super) consistent_point: Lsn,
    /// The snapshot the slot exported (when asked to), valid while `repl` stays idle.
    pub(super) snapshot: Option<String>,
    pub(super) recorded: TableStates,
}

/// Creates the slot (exporting its snapshot with `export`) and records in the target that this
/// task created it. If anything fails after the slot was created, the slot is dropped again
/// (when the source still answers), so a first start that fails does not leave a slot behind
/// that pins WAL on the server.
pub(super) async fn create_slot(
    task: &str,
    connector: &PgConnector,
    control: &tokio_postgres::Client,
    store: &dyn CheckpointStore,
    slot: &str,
    export: bool,
    tables: &[TableId],
) -> Result<Created, SourceError> {
    let target = |e| SourceError::from_target(e);
    let mut repl = ReplicationConnection::connect(connector).await?;
    // The cluster the slot is created in, for the slot record: a later start on another one
    // is refused, a promoted standby of this one accepted.
    let system = repl.identify_system().await?.systemid;
    let database: String = control
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| SourceError::failed(format!("reading current_database(): {e}")))?
        .get(0);
    // Before the slot exists, a record that this task is creating it, at the server's WAL
    // position now: a process killed between the creation and the record of it below leaves a
    // slot the next start can still prove to be this task's (`SlotRecord::creating`), instead
    // of one refused until dropped by hand.
    let wal_now: i64 = control
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                     ELSE pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::int8",
            &[],
        )
        .await
        .map_err(|e| SourceError::failed(format!("reading the server's WAL position: {e}")))?
        .get(0);
    let previous = store.read(&record_key(task)).await.map_err(target)?;
    let intent = SlotRecord::new(slot, task, &database, Lsn(wal_now.max(0) as u64))
        .in_system(system.clone())
        .before_creating();
    store
        .write(&record_key(task), &intent.to_checkpoint())
        .await
        .map_err(target)?;
    let created = if export {
        repl.create_slot_exporting_snapshot(slot).await
    } else {
        repl.create_slot(slot).await
    };
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            // No slot was created: the record goes back to what it was, so an intent that came
            // to nothing never vouches for a slot of this name that something else creates.
            let back = previous
                .unwrap_or_else(|| SlotRecord::new("", task, &database, Lsn(0)).to_checkpoint());
            if let Err(w) = store.write(&record_key(task), &back).await {
                tracing::warn!(error = %w, "restoring the slot record failed");
            }
            return Err(e.into());
        }
    };
    let recorded = async {
        // Before the load: a start that finds the slot but no checkpoint knows by this record
        // that the slot is this task's.
        let record = SlotRecord::new(slot, task, &database, created.consistent_point)
            .in_system(system.clone());
        store
            .write(&record_key(task), &record.to_checkpoint())
            .await
            .map_err(target)?;
        tracing::info!(%slot, consistent_point = %created.consistent_point, id = %record.id, "slot created");
        Ok::<_, SourceError>(
            first_records(control, created.snapshot_name.as_deref(), tables).await,
        )
    }
    .await;
    match recorded {
        Ok(recorded) => Ok(Created {
            repl,
            consistent_point: created.consistent_point,
            snapshot: created.snapshot_name,
            recorded,
        }),
        Err(e) => {
            drop(repl);
            drop_created_slot(control, connector, slot).await;
            Err(e)
        }
    }
}

/// Drops the slot the first start created, after it failed before its first checkpoint: the
/// next start recreates it. Failures are logged.
pub(super) async fn drop_created_slot(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    slot: &str,
) {
    let dropped = async {
        wait_slot_released(control, connector, slot).await?;
        drop_slot(control, connector, slot)
            .await
            .map_err(SourceError::from)
    };
    match dropped.await {
        Ok(()) => {
            tracing::warn!(%slot, "the first start failed: the slot it created is dropped again")
        }
        Err(d) => {
            tracing::warn!(%slot, error = %d, "the first start failed and the slot it created could not be dropped; the next start recreates it")
        }
    }
}

/// What the first checkpoint records of `tables`: each captured from its start, and its
/// identity and storage as `snapshot` (the first load's) sees them, when there is one.
pub(super) async fn first_records(
    control: &tokio_postgres::Client,
    snapshot: Option<&str>,
    tables: &[TableId],
) -> TableStates {
    let mut recorded = TableStates::new();
    for id in tables {
        recorded.entry(id.to_string()).or_default().captured = true;
    }
    if let Some(snapshot) = snapshot {
        if let Some(seen) = SeenBySnapshot::read(control, snapshot, tables).await {
            seen.record_all(tables, &mut recorded);
        }
    }
    recorded
}

/// The position a load in the snapshot of a slot created at `consistent_point` holds every
/// transaction up to.
pub(super) fn loaded_up_to(consistent_point: Lsn) -> Position {
    Position(consistent_point.0.saturating_sub(1))
}

/// The walsender each slot of this process last streamed through, by (server, slot).
fn our_walsenders() -> &'static std::sync::Mutex<std::collections::HashMap<(String, String), i32>> {
    static WALSENDERS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(String, String), i32>>,
    > = std::sync::OnceLock::new();
    WALSENDERS.get_or_init(Default::default)
}

pub(super) fn remember_walsender(connector: &PgConnector, slot: &str, pid: i32) {
    if let Ok(mut map) = our_walsenders().lock() {
        map.insert((connector.server().to_string(), slot.to_string()), pid);
    }
}

/// Waits (up to 30 s) for the walsender of an earlier stream, ours, to release the slot: a stream
/// ended a moment ago, or a process killed before its connection was noticed gone. A walsender
/// this very process streamed through, on a connection it gave up as silent (a network cut the
/// server has not noticed: it would hold the slot until its wal_sender_timeout), is ended.
pub(super) async fn wait_slot_released(
    control: &tokio_postgres::Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<(), SourceError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = our_walsenders().lock().ok().and_then(|map| {
        map.get(&(connector.server().to_string(), slot.to_string()))
            .copied()
    });
    let mut ended = false;
    loop {
        let state = slot_state(control, connector, slot)
            .await
            .map_err(SourceError::from)?;
        let Some(pid) = state.and_then(|s| s.active_pid) else {
            return Ok(());
        };
        if Some(pid) == ours && !ended {
            ended = true;
            match control
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await
            {
                Ok(_) => {
                    tracing::info!(%slot, pid, "the slot is held by this process's earlier walsender, on a connection given up as lost: ended it")
                }
                Err(e) => {
                    tracing::warn!(%slot, pid, error = %e, "the slot is held by this process's earlier walsender, on a connection given up as lost, and ending it failed; waiting for the server's wal_sender_timeout")
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(SourceError::transient(format!(
                "replication slot {slot:?} is still in use by server process {pid}; another \
                 inlet with this task's slot may be running"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
