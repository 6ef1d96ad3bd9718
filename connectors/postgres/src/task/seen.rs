//! What a load's snapshot sees of the tables' storage and catalog-only defaults, recorded as
//! the loaded tables' state so that a change committed while the load runs is found after it.

use inlet_core::{TableId, TableStates};

use super::{added_defaults, rewrites};
use crate::catalog::columns_with_unwritten_defaults;

/// The tables' storage ([`rewrites`]) and catalog-only defaults ([`added_defaults`]) as a
/// load's snapshot sees them. Recorded as the tables' state, a rewrite or a column added with a
/// DEFAULT that commits while the load runs is found by the look after the load and the table
/// loaded again: the load read the rows before it (and a table rewritten before its turn as
/// empty, table rewrites not being MVCC-safe), and the stream carries no change for them.
/// Without it the look after the load would take the new state as the loaded one; and a state
/// read before the snapshot would take a change committed in between, which the load holds, for
/// one it missed, and load the table twice.
pub(super) struct SeenBySnapshot {
    storage: Vec<(TableId, rewrites::Storage)>,
    /// `None`: reading them failed (logged); the tables are then recorded as they are at the
    /// start after the load.
    defaults: Option<Vec<(TableId, String)>>,
}

impl SeenBySnapshot {
    /// Reads `tables` in `snapshot` (exported, and still valid: its exporting connection idle)
    /// on `control`. A failure to read is only logged: None.
    pub(super) async fn read(
        control: &tokio_postgres::Client,
        snapshot: &str,
        tables: &[TableId],
    ) -> Option<Self> {
        let read = async {
            control
                .batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                    snapshot.replace('\'', "''")
                ))
                .await?;
            let storage = rewrites::read(control, tables).await?;
            let defaults = columns_with_unwritten_defaults(control)
                .await
                .map_err(|e| e.to_string());
            control.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>((storage, defaults))
        };
        match read.await {
            Ok((storage, defaults)) => {
                let defaults = match defaults {
                    Ok(defaults) => Some(defaults),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the columns with catalog-only defaults in the load's snapshot failed; they are recorded at the start after the load");
                        None
                    }
                };
                Some(Self { storage, defaults })
            }
            Err(e) => {
                let _ = control.batch_execute("ROLLBACK").await;
                tracing::warn!(error = %e, "reading the tables' storage in the load's snapshot failed; it is recorded at the start after the load");
                None
            }
        }
    }

    /// Records what was read as the state of every one of `tables` (the first load: the
    /// checkpoint records nothing else).
    pub(super) fn record_all(&self, tables: &[TableId], recorded: &mut TableStates) {
        rewrites::rewritten_since(recorded, &self.storage, tables, &[]);
        if let Some(defaults) = &self.defaults {
            added_defaults::added_since(recorded, defaults, tables, &[]);
        }
    }

    /// Records what was read as the state of `tables` (loading beside the stream), in the
    /// checkpoint's record and in the poller's baselines (`storage`, `defaults`); the other
    /// tables keep theirs.
    pub(super) fn record(
        self,
        tables: &[TableId],
        recorded: &mut TableStates,
        storage: &mut Option<std::collections::HashMap<TableId, rewrites::Storage>>,
        defaults: &mut Option<std::collections::HashSet<(TableId, String)>>,
    ) {
        let mut seen = TableStates::new();
        rewrites::rewritten_since(&mut seen, &self.storage, tables, tables);
        if let Some(now) = &self.defaults {
            added_defaults::added_since(&mut seen, now, tables, tables);
        }
        for (name, state) in seen {
            let entry = recorded.entry(name).or_default();
            if state.storage.is_some() {
                entry.storage = state.storage;
            }
            if self.defaults.is_some() {
                entry.unwritten_defaults = state.unwritten_defaults;
            }
        }
        if let Some(baseline) = storage {
            for (id, now) in self.storage {
                if tables.contains(&id) {
                    baseline.insert(id, now);
                }
            }
        }
        if let (Some(baseline), Some(now)) = (defaults, self.defaults) {
            baseline.retain(|(id, _)| !tables.contains(id));
            baseline.extend(now.into_iter().filter(|(id, _)| tables.contains(id)));
        }
    }
}
