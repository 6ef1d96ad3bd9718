//! What the task watches beside its change stream, on its control connection: tables that
//! should join (new, swapped, capturable again), columns added with a DEFAULT and rewrites that
//! no change carries (their tables are loaded again), a dropped publication, the slot's retained
//! WAL for the metrics, and heartbeats into the WAL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_core::source::SourceFeedback;
use inlet_core::{TableId, TableSelection};

use super::rewrites;
use crate::catalog::{columns_with_unwritten_defaults, discover, SourceTable};
use crate::config::PgConnector;
use crate::replication::StreamHangUp;
use crate::slot::publication_plan;

/// How often the slot's retained WAL is read for the metrics.
const SLOT_POLL: Duration = Duration::from_secs(10);

/// What the poller needs to notice a table that should join the running task.
pub(super) struct NewTableWatch {
    /// Where a table to load again is asked for.
    pub(super) feedback: Arc<dyn SourceFeedback>,
    /// A column added with a DEFAULT, or a rewrite with new values, while the task streams asks
    /// for a reload of its table (`cdc.reload_on_unstreamed_change`).
    pub(super) reload_unstreamed: bool,
    pub(super) connector: PgConnector,
    pub(super) publication: String,
    pub(super) selection: TableSelection,
    pub(super) policy: inlet_core::ValuePolicy,
    pub(super) known: std::collections::HashSet<TableId>,
    /// The relation (oid) each known table was when the stream started: the same name on
    /// another relation later is a swapped-in table, which must be loaded again.
    pub(super) identities: std::collections::HashMap<TableId, String>,
    /// Tables whose name came to hold another relation while this stream ran.
    pub(super) swapped: std::collections::HashSet<TableId>,
    pub(super) found: Arc<AtomicBool>,
    /// New tables already reported as not readable or not capturable (once each).
    pub(super) unreadable: std::collections::HashSet<TableId>,
    /// The last discovery error reported, so a lasting one is logged once, not every poll.
    pub(super) discovery_failed: Option<String>,
    /// Columns whose older rows read a default the server never wrote (see
    /// [`columns_with_unwritten_defaults`]), as of the first poll: one that appears later was
    /// added while the task streamed.
    pub(super) unwritten_defaults: Option<std::collections::HashSet<(TableId, String)>>,
    /// Each known table's storage (see [`rewrites`]) as of the last poll: a rewrite with new
    /// values after it happened while the task streamed.
    pub(super) storage: Option<std::collections::HashMap<TableId, rewrites::Storage>>,
}

impl NewTableWatch {
    async fn check(&mut self, client: &tokio_postgres::Client) {
        // Tables first: a swapped-in table's columns are not columns added to the old one.
        self.check_tables(client).await;
        self.check_unwritten_defaults(client).await;
        self.check_rewrites(client).await;
    }

    async fn check_tables(&mut self, client: &tokio_postgres::Client) {
        match discover(client, &self.connector, &self.selection, &self.policy).await {
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
                for t in &tables {
                    let id = &t.schema.id;
                    let oid = t.oid.to_string();
                    if self.identities.get(id).is_some_and(|was| *was != oid) {
                        tracing::info!(table = %id, "a captured table's name now holds another table (a table swap, or DROP and CREATE): re-discovering the tables once the changes before now are written");
                        self.identities.insert(id.clone(), oid);
                        self.swapped.insert(id.clone());
                        self.found.store(true, Ordering::Relaxed);
                    }
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

impl NewTableWatch {
    /// Warns once per column when `ALTER TABLE … ADD COLUMN … DEFAULT x` ran on a captured
    /// table while the task streamed: the target holds NULL for the rows from before it, where
    /// the source reads x (PostgreSQL filled them without writing a change).
    async fn check_unwritten_defaults(&mut self, client: &tokio_postgres::Client) {
        let Ok(columns) = columns_with_unwritten_defaults(client).await else {
            return;
        };
        let now: std::collections::HashSet<(TableId, String)> = columns
            .into_iter()
            .filter(|(t, _)| self.known.contains(t) && !self.swapped.contains(t))
            .collect();
        let Some(seen) = &mut self.unwritten_defaults else {
            self.unwritten_defaults = Some(now);
            return;
        };
        for (table, column) in now {
            if !seen.insert((table.clone(), column.clone())) {
                continue;
            }
            if self.reload_unstreamed {
                tracing::warn!(table = %table, %column, "a column was added with a DEFAULT while the task streamed: PostgreSQL filled the existing rows without writing a change, so the table is loaded again beside the stream");
                self.feedback.reload(&table);
            } else {
                tracing::warn!(table = %table, %column, "a column was added with a DEFAULT while the task streamed: the rows that existed before read the default in the source but NULL in the target, since PostgreSQL filled them without writing a change; run inlet resync for the table to carry them");
            }
        }
    }
}

impl NewTableWatch {
    /// Warns once per rewrite of a captured table that changed values without writing a change
    /// (ALTER COLUMN … TYPE, a DEFAULT computed per row) while the task streamed, and asks for
    /// a reload of the table: the target keeps the old values of every row not changed since.
    async fn check_rewrites(&mut self, client: &tokio_postgres::Client) {
        let tables: Vec<TableId> = self
            .known
            .iter()
            .filter(|t| !self.swapped.contains(*t))
            .cloned()
            .collect();
        let Ok(now) = rewrites::read(client, &tables).await else {
            return;
        };
        let Some(seen) = &mut self.storage else {
            self.storage = Some(now.into_iter().collect());
            return;
        };
        for (table, storage) in now {
            let cause = seen.get(&table).and_then(|was| storage.rewrite_cause(was));
            seen.insert(table.clone(), storage);
            let Some(cause) = cause else {
                continue;
            };
            if self.reload_unstreamed {
                tracing::warn!(table = %table, %cause, "the table was rewritten with new values that no change carries while the task streamed, so it is loaded again beside the stream");
                self.feedback.reload(&table);
            } else {
                tracing::warn!(table = %table, %cause, "the table was rewritten with new values that no change carries while the task streamed, and the task does not reload tables (cdc.reload_on_unstreamed_change = false, or task.mode = \"cdc\"): the target keeps the old values of the rows not changed since until you run inlet resync for the table");
            }
        }
    }
}

/// How often the poller looks whether the server ended its session.
const SESSION_CHECK: Duration = Duration::from_millis(100);

/// Reads the slot's retained WAL for the metrics every [`SLOT_POLL`], looks for tables that
/// should join, sets `publication_gone` once the publication no longer exists, and writes
/// heartbeats into the source's WAL when configured.
///
/// When the server ends the poller's session, hangs the change stream up (`hang_up`, once the
/// stream exists): a fast shutdown (pg_ctl's default) ends ordinary sessions first, then waits
/// until the task has confirmed every bit of WAL sent, which takes as long as the task is
/// behind or busy writing the target (over 60 s in a 10-minute soak into Iceberg). Hanging up,
/// the task is not waited for; it starts again from its checkpoint, losing nothing. A session
/// ended for another reason (pg_terminate_backend) restarts the task the same way, with a new
/// session.
pub(super) fn spawn_slot_poller(
    client: tokio_postgres::Client,
    slot: String,
    feedback: Arc<dyn SourceFeedback>,
    heartbeat_ms: u64,
    mut watch: NewTableWatch,
    publication_gone: Arc<AtomicBool>,
    hang_up: Arc<std::sync::OnceLock<StreamHangUp>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let heartbeat = (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms));
        let every = heartbeat.map_or(SLOT_POLL, |h| h.min(SLOT_POLL));
        let mut last_poll: Option<Instant> = None;
        let session_ended = || async {
            while !client.is_closed() {
                tokio::time::sleep(SESSION_CHECK).await;
            }
            tracing::info!("the server ended inlet's session (a shutdown, a restart, or pg_terminate_backend): ending the change stream, to start again from the checkpoint");
            loop {
                if let Some(stream) = hang_up.get() {
                    stream.hang_up();
                    return;
                }
                tokio::time::sleep(SESSION_CHECK).await;
            }
        };
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
                // Up to 17 a dropped publication fails the stream at the next change. From 18
                // on the server streams on, skipping the publication it cannot find with only
                // a WARNING: every change since the drop would be left out without a word (and
                // confirmed), so the task is stopped here as the error would stop it.
                match client
                    .query_opt(
                        "SELECT 1 FROM pg_publication WHERE pubname = $1",
                        &[&watch.publication],
                    )
                    .await
                {
                    Ok(None) => publication_gone.store(true, Ordering::Relaxed),
                    Ok(Some(_)) => {}
                    Err(e) => tracing::debug!(error = %e, "reading pg_publication failed"),
                }
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
                        feedback.retained(retained, status.as_deref() == Some("lost"));
                    }
                    Ok(None) => feedback.retained(None, true),
                    Err(e) => tracing::debug!(error = %e, "reading the slot's retained WAL failed"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = session_ended() => return,
            }
        }
    })
}
