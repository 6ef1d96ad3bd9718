//! Tables that join a running task, loaded beside its stream. The load runs in the background
//! while the other tables go on streaming, and the checkpoint stays where the load began
//! ([`crate::stream::Outputs::hold`]). Once the load is done, the stream starts again from there:
//! the new tables receive every change since their snapshot, and the others skip what they hold.

use std::future::Future;

pub use inlet_core::{loaded_at, replaced_after_load};
use inlet_core::{merge_tables, CaptureEvent, Position, TableId, TableStates};

use crate::JobError;

/// A background task, aborted when this is dropped (the stream ended before it did).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tables loading beside the stream.
pub struct JoinLoad {
    tables: Vec<TableId>,
    load: AbortOnDrop<Result<(), JobError>>,
    /// What the checkpoint records of the tables once the load is done.
    joined: TableStates,
}

impl JoinLoad {
    /// Runs `load`, which loads `tables` in a snapshot holding every transaction up to `at`.
    pub fn spawn(
        tables: Vec<TableId>,
        at: Position,
        load: impl Future<Output = Result<(), JobError>> + Send + 'static,
    ) -> Self {
        let mut joined = TableStates::new();
        for id in &tables {
            let state = joined.entry(id.to_string()).or_default();
            state.captured = true;
            state.loaded_at = Some(at);
        }
        Self {
            tables,
            load: AbortOnDrop(tokio::spawn(load)),
            joined,
        }
    }

    /// Which relation of the source each loaded table is (`(table, identity)`), recorded too
    /// once the load is done (see [`replaced_tables`]).
    pub fn with_identities(
        mut self,
        identities: impl IntoIterator<Item = (TableId, String)>,
    ) -> Self {
        for (id, identity) in identities {
            let state = self.joined.entry(id.to_string()).or_default();
            if !state.identities.contains(&identity) {
                state.identities.push(identity);
            }
        }
        self
    }

    pub fn includes(&self, id: &TableId) -> bool {
        self.tables.contains(id)
    }

    /// Waits for the load to end; then what the checkpoint records of its tables. Cancel-safe:
    /// the stream loop drops a pending wait on its timers.
    pub async fn finished(&mut self) -> Result<TableStates, JobError> {
        match (&mut self.load.0).await {
            Ok(Ok(())) => {
                let names: Vec<String> = self.tables.iter().map(ToString::to_string).collect();
                tracing::info!(tables = ?names, "tables loaded beside the stream: they join it from their snapshot on");
                Ok(self.joined.clone())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(JobError::Failed(format!(
                "the load of a joining table stopped: {e}"
            ))),
        }
    }
}

/// The source's next event (`next`), unless `join`'s load ends first while no transaction is
/// open (`in_transaction`): then what the checkpoint records of its tables is merged into
/// `joined` and the stream is told its tables changed. Cancel-safe when `next` is.
pub async fn next_or_joined(
    join: &mut Option<JoinLoad>,
    joined: &mut TableStates,
    in_transaction: bool,
    next: impl Future<Output = Result<Option<CaptureEvent>, JobError>>,
) -> Result<Option<CaptureEvent>, JobError> {
    let Some(load) = join.as_mut().filter(|_| !in_transaction) else {
        return next.await;
    };
    tokio::select! {
        tables = load.finished() => {
            *join = None;
            merge_tables(joined, &tables?);
            Ok(Some(CaptureEvent::TablesChanged))
        }
        event = next => event,
    }
}

/// Drops the load positions a checkpoint at `position` has passed: they say nothing more.
pub fn forget_loads_before(tables: &mut TableStates, position: Position) {
    for state in tables.values_mut() {
        if state.loaded_at.is_some_and(|at| at <= position) {
            state.loaded_at = None;
        }
    }
}

/// Tables of `now` (name, the source's identity of it now) whose checkpoint recorded only other
/// identities ([`inlet_core::TableState::identities`]): the name now holds another relation,
/// whose rows the target never had, so they must be loaded again. The identities become
/// `now`'s, except a replaced table's, which keep the old ones until its load records the new
/// one (see [`JoinLoad::with_identities`]): a restart before then finds it replaced again. A
/// table with no recorded identity (a checkpoint of an earlier version, or the table's first
/// start) takes today's. Tables not in `now` keep none.
pub fn replaced_tables(tables: &mut TableStates, now: &[(TableId, String)]) -> Vec<TableId> {
    let mut replaced = Vec::new();
    let mut kept: Vec<(String, Vec<String>)> = Vec::with_capacity(now.len());
    for (id, identity) in now {
        let name = id.to_string();
        let was = tables
            .get(&name)
            .map(|t| t.identities.clone())
            .unwrap_or_default();
        if !was.is_empty() && !was.contains(identity) {
            replaced.push(id.clone());
            kept.push((name, was));
        } else {
            kept.push((name, vec![identity.clone()]));
        }
    }
    for state in tables.values_mut() {
        state.identities.clear();
    }
    for (name, identities) in kept {
        tables.entry(name).or_default().identities = identities;
    }
    replaced
}

/// Records that the targets of `now`'s tables hold these relations (name, identity), and no
/// others: nothing will load them again.
pub fn record_identities(tables: &mut TableStates, now: &[(TableId, String)]) {
    for state in tables.values_mut() {
        state.identities.clear();
    }
    for (id, identity) in now {
        tables.entry(id.to_string()).or_default().identities = vec![identity.clone()];
    }
}

/// Tables of `now` that `tables` record as replaced after their latest load.
pub fn replaced_since_load(tables: &TableStates, now: &[TableId]) -> Vec<TableId> {
    now.iter()
        .filter(|id| {
            tables
                .get(&id.to_string())
                .and_then(|t| t.replaced_at)
                .is_some_and(|at| replaced_after_load(tables, id, at))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlet_core::record_replaced;

    fn loaded(tables: &mut TableStates, id: &TableId, at: u64) {
        let state = tables.entry(id.to_string()).or_default();
        state.loaded_at = state.loaded_at.max(Some(Position(at)));
    }

    #[test]
    fn load_positions_round_trip_and_expire() {
        let a = TableId::new("public", "a b");
        let b = TableId::new("public", "b");
        let mut tables = TableStates::new();
        tables.entry("public.x".into()).or_default().captured = true;
        loaded(&mut tables, &a, 0x10);
        loaded(&mut tables, &a, 0x30);
        loaded(&mut tables, &b, 0x20);
        assert_eq!(loaded_at(&tables, &a), Some(Position(0x30)));
        assert_eq!(loaded_at(&tables, &b), Some(Position(0x20)));
        assert_eq!(loaded_at(&tables, &TableId::new("public", "x")), None);
        forget_loads_before(&mut tables, Position(0x20));
        assert_eq!(loaded_at(&tables, &b), None);
        assert_eq!(loaded_at(&tables, &a), Some(Position(0x30)));
        assert!(tables["public.x"].captured);
    }

    #[test]
    fn a_name_replaced_after_its_last_load_is_loaded_again() {
        let (a, b, c) = (
            TableId::new("app", "a"),
            TableId::new("app", "b"),
            TableId::new("app", "c"),
        );
        let mut tables = TableStates::new();
        for id in [&a, &b] {
            tables.entry(id.to_string()).or_default().captured = true;
        }
        for id in [&a, &b, &c] {
            record_replaced(&mut tables, id, Position(0x40));
        }
        let now = [a.clone(), b.clone()];
        assert_eq!(
            replaced_since_load(&tables, &now),
            vec![a.clone(), b.clone()]
        );
        // b's load began after the swap: it holds the new table; a's began before it.
        loaded(&mut tables, &a, 0x30);
        loaded(&mut tables, &b, 0x41);
        assert_eq!(replaced_since_load(&tables, &now), vec![a.clone()]);
        assert!(replaced_after_load(&tables, &b, Position(0x41)));
        assert!(!replaced_after_load(&tables, &b, Position(0x40)));
    }

    #[test]
    fn a_name_that_holds_another_relation_is_replaced_until_loaded() {
        let (a, b) = (TableId::new("public", "a"), TableId::new("public", "b"));
        let mut tables = TableStates::new();
        for id in [&a, &b] {
            tables.entry(id.to_string()).or_default().captured = true;
        }
        let count =
            |tables: &TableStates| tables.values().map(|t| t.identities.len()).sum::<usize>();
        // The first start records identities and replaces nothing.
        let now = [(a.clone(), "10".to_string()), (b.clone(), "20".to_string())];
        assert!(replaced_tables(&mut tables, &now).is_empty());
        assert!(replaced_tables(&mut tables, &now).is_empty());
        assert_eq!(count(&tables), 2);
        // b swapped: replaced, and again at every start until its load records the new one.
        let now = [(a.clone(), "10".to_string()), (b.clone(), "21".to_string())];
        assert_eq!(replaced_tables(&mut tables, &now), vec![b.clone()]);
        assert_eq!(replaced_tables(&mut tables, &now), vec![b.clone()]);
        assert!(tables["public.a"].captured && tables["public.b"].captured);
        // The load's identity comes after the others in the checkpoint; then only the new one
        // stays.
        let mut joined = TableStates::new();
        joined.entry(b.to_string()).or_default().identities = vec!["21".into()];
        merge_tables(&mut tables, &joined);
        assert_eq!(tables["public.b"].identities, ["20", "21"]);
        assert!(replaced_tables(&mut tables, &now).is_empty());
        assert_eq!(count(&tables), 2);
        assert_eq!(tables["public.b"].identities, ["21"]);
    }
}
