//! Tables that join a running task, loaded beside its stream. The load runs in the background
//! while the other tables go on streaming, and the checkpoint stays where the load began
//! ([`crate::stream::Outputs::hold`]). Once the load is done, the stream starts again from there:
//! the new tables receive every change since their snapshot, and the others skip what they hold.

use std::future::Future;

use inlet_core::{CaptureEvent, Position, TableId};

use crate::stream::table_fact;
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
    /// What the checkpoint records once the load is done.
    facts: Vec<(String, String)>,
}

impl JoinLoad {
    /// Runs `load`, which loads `tables` in a snapshot holding every transaction up to `at`.
    pub fn spawn(
        tables: Vec<TableId>,
        at: Position,
        load: impl Future<Output = Result<(), JobError>> + Send + 'static,
    ) -> Self {
        let mut facts: Vec<(String, String)> = tables.iter().map(table_fact).collect();
        facts.extend(tables.iter().map(|id| loaded_at_fact(id, at)));
        Self {
            tables,
            load: AbortOnDrop(tokio::spawn(load)),
            facts,
        }
    }

    /// Facts the checkpoint records too once the load is done (e.g. which relations were
    /// loaded, [`identity_fact`]).
    pub fn with_facts(mut self, facts: impl IntoIterator<Item = (String, String)>) -> Self {
        self.facts.extend(facts);
        self
    }

    pub fn includes(&self, id: &TableId) -> bool {
        self.tables.contains(id)
    }

    /// Waits for the load to end; then the checkpoint facts that record its tables. Cancel-safe:
    /// the stream loop drops a pending wait on its timers.
    pub async fn finished(&mut self) -> Result<Vec<(String, String)>, JobError> {
        match (&mut self.load.0).await {
            Ok(Ok(())) => {
                let names: Vec<String> = self.tables.iter().map(ToString::to_string).collect();
                tracing::info!(tables = ?names, "tables loaded beside the stream: they join it from their snapshot on");
                Ok(self.facts.clone())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(JobError::Failed(format!(
                "the load of a joining table stopped: {e}"
            ))),
        }
    }
}

/// The source's next event (`next`), unless `join`'s load ends first while no transaction is
/// open (`in_transaction`): then the load's checkpoint facts go to `joined` and the stream is
/// told its tables changed. Cancel-safe when `next` is.
pub async fn next_or_joined(
    join: &mut Option<JoinLoad>,
    joined: &mut Vec<(String, String)>,
    in_transaction: bool,
    next: impl Future<Output = Result<Option<CaptureEvent>, JobError>>,
) -> Result<Option<CaptureEvent>, JobError> {
    let Some(load) = join.as_mut().filter(|_| !in_transaction) else {
        return next.await;
    };
    tokio::select! {
        facts = load.finished() => {
            *join = None;
            *joined = facts?;
            Ok(Some(CaptureEvent::TablesChanged))
        }
        event = next => event,
    }
}

/// Checkpoint fact: `<position, hex> <table, JSON string>`, the position up to which a table
/// loaded beside the stream holds every transaction. Kept while the checkpoint is below it.
pub const LOADED_AT_FACT: &str = "table_loaded_at";

fn loaded_at_fact(id: &TableId, at: Position) -> (String, String) {
    (
        LOADED_AT_FACT.to_string(),
        format!("{:016X} {}", at.0, table_fact(id).1),
    )
}

/// Parses a `<position, hex> <table, JSON string>` fact value (the form of [`LOADED_AT_FACT`],
/// [`REPLACED_FACT`] and [`crate::resync::RESYNC_FACT`]).
pub fn parse_loaded_at(value: &str) -> Option<(Position, &str)> {
    let (at, name) = value.split_once(' ')?;
    Some((Position(u64::from_str_radix(at, 16).ok()?), name))
}

/// The position a checkpoint records for `id`'s load, if it joined beside an earlier stream.
pub fn loaded_at(facts: &[(String, String)], id: &TableId) -> Option<Position> {
    let name = table_fact(id).1;
    facts
        .iter()
        .filter(|(k, _)| k == LOADED_AT_FACT)
        .filter_map(|(_, v)| parse_loaded_at(v))
        .filter(|(_, n)| *n == name)
        .map(|(at, _)| at)
        .max()
}

/// Drops the load positions a checkpoint at `position` has passed: they say nothing more.
pub fn forget_loads_before(facts: &mut Vec<(String, String)>, position: Position) {
    facts.retain(|(k, v)| {
        k != LOADED_AT_FACT || parse_loaded_at(v).is_some_and(|(at, _)| at > position)
    });
}

/// Checkpoint fact: `<identity> <table, JSON string>`, which relation of the source a table's
/// target holds (PostgreSQL: its oid). A name can come to mean another relation: a table swap
/// by an online schema change tool, or DROP and CREATE.
pub const IDENTITY_FACT: &str = "table_identity";

/// Tables of `now` (name, the source's identity of it now) whose checkpoint recorded only other
/// identities: the name now holds another relation, whose rows the target never had, so they
/// must be loaded again. The identity facts become `now`'s, except a replaced table's, which
/// keep the old ones until its load records the new one (see [`JoinLoad::with_facts`]): a
/// restart before then finds it replaced again. A table with no recorded identity (a checkpoint
/// of an earlier version, or the table's first start) takes today's.
pub fn replaced_tables(
    facts: &mut Vec<(String, String)>,
    now: &[(TableId, String)],
) -> Vec<TableId> {
    let mut recorded: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (_, v) in facts.iter().filter(|(k, _)| k == IDENTITY_FACT) {
        if let Some((identity, name)) = v.split_once(' ') {
            recorded
                .entry(name.to_string())
                .or_default()
                .push(identity.to_string());
        }
    }
    let mut replaced = Vec::new();
    let mut kept = Vec::new();
    for (id, identity) in now {
        let name = table_fact(id).1;
        match recorded.get(&name) {
            Some(was) if !was.contains(identity) => {
                replaced.push(id.clone());
                kept.extend(was.iter().map(|w| identity_fact_of(w, &name)));
            }
            _ => kept.push(identity_fact_of(identity, &name)),
        }
    }
    facts.retain(|(k, _)| k != IDENTITY_FACT);
    facts.extend(kept);
    replaced
}

/// The checkpoint fact recording that `id`'s target holds the relation `identity`.
pub fn identity_fact(id: &TableId, identity: &str) -> (String, String) {
    identity_fact_of(identity, &table_fact(id).1)
}

fn identity_fact_of(identity: &str, name: &str) -> (String, String) {
    (IDENTITY_FACT.to_string(), format!("{identity} {name}"))
}

/// Checkpoint fact: `<position, hex> <table, JSON string>`, a name the source's log showed
/// coming to hold another table (MySQL: a `RENAME TABLE` onto it, `CREATE TABLE` after a DROP)
/// at that position. Until a load of the table that began after it ([`LOADED_AT_FACT`]), the
/// target holds another table's rows under the name.
pub const REPLACED_FACT: &str = "table_replaced_at";

/// The checkpoint fact recording that `id` came to hold another table at `at`.
pub fn replaced_fact(id: &TableId, at: Position) -> (String, String) {
    (
        REPLACED_FACT.to_string(),
        format!("{:016X} {}", at.0, table_fact(id).1),
    )
}

/// Whether `at`, where `id` came to hold another table, is after `id`'s latest load beside the
/// stream (`facts`' [`LOADED_AT_FACT`]): a load holds the transactions that start before its
/// position, as the stream's replay guard counts them.
pub fn replaced_after_load(facts: &[(String, String)], id: &TableId, at: Position) -> bool {
    loaded_at(facts, id).is_none_or(|loaded| at >= loaded)
}

/// Tables of `now` that `facts` record as replaced ([`REPLACED_FACT`]) after their latest load.
pub fn replaced_since_load(facts: &[(String, String)], now: &[TableId]) -> Vec<TableId> {
    now.iter()
        .filter(|id| {
            let name = table_fact(id).1;
            facts
                .iter()
                .filter(|(k, _)| k == REPLACED_FACT)
                .filter_map(|(_, v)| parse_loaded_at(v))
                .any(|(at, n)| n == name && replaced_after_load(facts, id, at))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_positions_round_trip_and_expire() {
        let a = TableId::new("public", "a b");
        let b = TableId::new("public", "b");
        let mut facts = vec![
            ("table".to_string(), "\"public.x\"".to_string()),
            loaded_at_fact(&a, Position(0x10)),
            loaded_at_fact(&a, Position(0x30)),
            loaded_at_fact(&b, Position(0x20)),
        ];
        assert_eq!(loaded_at(&facts, &a), Some(Position(0x30)));
        assert_eq!(loaded_at(&facts, &b), Some(Position(0x20)));
        assert_eq!(loaded_at(&facts, &TableId::new("public", "x")), None);
        forget_loads_before(&mut facts, Position(0x20));
        assert_eq!(loaded_at(&facts, &b), None);
        assert_eq!(loaded_at(&facts, &a), Some(Position(0x30)));
        assert_eq!(facts.len(), 2, "{facts:?}");
    }

    #[test]
    fn a_name_replaced_after_its_last_load_is_loaded_again() {
        let (a, b, c) = (
            TableId::new("app", "a"),
            TableId::new("app", "b"),
            TableId::new("app", "c"),
        );
        let mut facts = vec![
            table_fact(&a),
            table_fact(&b),
            replaced_fact(&a, Position(0x40)),
            replaced_fact(&b, Position(0x40)),
            replaced_fact(&c, Position(0x40)),
        ];
        let now = [a.clone(), b.clone()];
        assert_eq!(
            replaced_since_load(&facts, &now),
            vec![a.clone(), b.clone()]
        );
        // b's load began after the swap: it holds the new table; a's began before it.
        facts.push(loaded_at_fact(&a, Position(0x30)));
        facts.push(loaded_at_fact(&b, Position(0x41)));
        assert_eq!(replaced_since_load(&facts, &now), vec![a.clone()]);
        assert!(replaced_after_load(&facts, &b, Position(0x41)));
        assert!(!replaced_after_load(&facts, &b, Position(0x40)));
    }

    #[test]
    fn a_name_that_holds_another_relation_is_replaced_until_loaded() {
        let (a, b) = (TableId::new("public", "a"), TableId::new("public", "b"));
        let mut facts = vec![table_fact(&a), table_fact(&b)];
        let count =
            |facts: &[(String, String)]| facts.iter().filter(|(k, _)| k == IDENTITY_FACT).count();
        // The first start records identities and replaces nothing.
        let now = [(a.clone(), "10".to_string()), (b.clone(), "20".to_string())];
        assert!(replaced_tables(&mut facts, &now).is_empty());
        assert!(replaced_tables(&mut facts, &now).is_empty());
        assert_eq!(count(&facts), 2);
        // b swapped: replaced, and again at every start until its load records the new one.
        let now = [(a.clone(), "10".to_string()), (b.clone(), "21".to_string())];
        assert_eq!(replaced_tables(&mut facts, &now), vec![b.clone()]);
        assert_eq!(replaced_tables(&mut facts, &now), vec![b.clone()]);
        assert!(facts.contains(&table_fact(&a)) && facts.contains(&table_fact(&b)));
        // The load's facts come after the others in the checkpoint; then only the new one stays.
        facts.push(identity_fact(&b, "21"));
        assert!(replaced_tables(&mut facts, &now).is_empty());
        assert_eq!(count(&facts), 2);
        assert!(
            facts.contains(&identity_fact(&b, "21")) && !facts.contains(&identity_fact(&b, "20"))
        );
    }
}
