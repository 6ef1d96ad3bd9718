//! Columns added with a DEFAULT to a captured PostgreSQL table: `ALTER TABLE … ADD COLUMN c …
//! DEFAULT x` on a table with rows fills every existing row with x without writing a change
//! (PostgreSQL 11+ keeps x in the catalog, `pg_attribute.atthasmissing`), so the stream never
//! carries those values and the target would read NULL where the source reads x. Such a table is
//! loaded again beside the stream ([`crate::resync`]).
//!
//! The columns with such catalog-only values are recorded per table in the checkpoint
//! ([`DEFAULTS_FACT`]), so one added while the task was stopped, or killed before it noticed,
//! is found at the next start, not only one the poller sees appear while the task streams.

use std::collections::BTreeSet;

use inlet_core::TableId;

use crate::stream::table_fact;

/// Checkpoint fact: `<table, JSON string> <columns, JSON array>`, the table's columns whose older
/// rows read a default the server never wrote, as of the table's last load or start.
pub(super) const DEFAULTS_FACT: &str = "table_unwritten_defaults";

/// The captured tables (`tables`) that have a column with catalog-only values (`now`, as
/// `columns_with_unwritten_defaults` reads them) that `facts` did not record: added since. A
/// table without a record (one that just joined, or a checkpoint of an earlier version) is
/// recorded, not reported: its load read the values. So is a table in `loading` (loaded again
/// anyway, e.g. swapped: its name holds another relation, whose columns are its own, not
/// added). `facts` then records `now`.
pub(super) fn added_since(
    facts: &mut Vec<(String, String)>,
    now: &[(TableId, String)],
    tables: &[TableId],
    loading: &[TableId],
) -> Vec<TableId> {
    let mut added = Vec::new();
    let mut records = Vec::with_capacity(tables.len());
    for id in tables {
        let name = table_fact(id).1;
        let columns: BTreeSet<&str> = now
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, c)| c.as_str())
            .collect();
        let recorded = facts.iter().find_map(|(k, v)| {
            let (table, columns) = v.split_once(' ')?;
            (k == DEFAULTS_FACT && table == name)
                .then(|| serde_json::from_str::<BTreeSet<String>>(columns).ok())
                .flatten()
        });
        if let Some(recorded) = recorded.filter(|_| !loading.contains(id)) {
            if columns.iter().any(|c| !recorded.contains(*c)) {
                added.push(id.clone());
            }
        }
        let list = serde_json::to_string(&columns).unwrap_or_else(|_| "[]".to_string());
        records.push((DEFAULTS_FACT.to_string(), format!("{name} {list}")));
    }
    facts.retain(|(k, _)| k != DEFAULTS_FACT);
    facts.extend(records);
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_recorded_nowhere_is_added_and_a_table_without_a_record_is_not() {
        let t = TableId::new("public", "t");
        let u = TableId::new("public", "u");
        let tables = [t.clone(), u.clone()];
        let mut facts = vec![("other".to_string(), "x".to_string())];
        // First start: nothing recorded; both tables are recorded, none reported.
        let now = vec![(t.clone(), "a".to_string())];
        assert!(added_since(&mut facts, &now, &tables, &[]).is_empty());
        assert_eq!(facts.len(), 3);
        // The same columns again: nothing.
        assert!(added_since(&mut facts, &now, &tables, &[]).is_empty());
        // A column of u and another of t appear.
        let now = vec![
            (t.clone(), "a".to_string()),
            (t.clone(), "b".to_string()),
            (u.clone(), "c".to_string()),
        ];
        assert_eq!(
            added_since(&mut facts, &now, &tables, &[]),
            [t.clone(), u.clone()]
        );
        assert!(added_since(&mut facts, &now, &tables, &[]).is_empty());
        // A rewrite (VACUUM FULL) clears atthasmissing: nothing is added.
        assert!(added_since(&mut facts, &[], &tables, &[]).is_empty());
        // A column of a table loaded again anyway (swapped) is recorded, not reported.
        let now = vec![(u.clone(), "d".to_string())];
        assert!(added_since(&mut facts, &now, &tables, std::slice::from_ref(&u)).is_empty());
        assert!(added_since(&mut facts, &now, &tables, &[]).is_empty());
        assert_eq!(facts[0], ("other".to_string(), "x".to_string()));
    }
}
