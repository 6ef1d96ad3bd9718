//! Columns added with a DEFAULT to a captured PostgreSQL table: `ALTER TABLE … ADD COLUMN c …
//! DEFAULT x` on a table with rows fills every existing row with x without writing a change
//! (PostgreSQL 11+ keeps x in the catalog, `pg_attribute.atthasmissing`), so the stream never
//! carries those values and the target would read NULL where the source reads x. Such a table is
//! loaded again beside the stream (a reload request, as `inlet resync` makes).
//!
//! The columns with such catalog-only values are recorded per table in the checkpoint
//! ([`inlet_core::TableState::unwritten_defaults`]), so one added while the task was stopped, or killed before it noticed,
//! is found at the next start, not only one the poller sees appear while the task streams.

use std::collections::BTreeSet;

use inlet_core::{TableId, TableStates};

/// The captured tables (`tables`) that have a column with catalog-only values (`now`, as
/// `columns_with_unwritten_defaults` reads them) that `recorded` did not record: added since. A
/// table without a record (one that just joined, or a checkpoint of an earlier version) is
/// recorded, not reported: its load read the values. So is a table in `loading` (loaded again
/// anyway, e.g. swapped: its name holds another relation, whose columns are its own, not
/// added). `recorded` then records `now` for `tables`, and nothing for other tables.
pub(super) fn added_since(
    recorded: &mut TableStates,
    now: &[(TableId, String)],
    tables: &[TableId],
    loading: &[TableId],
) -> Vec<TableId> {
    let mut added = Vec::new();
    let mut records = Vec::with_capacity(tables.len());
    for id in tables {
        let name = id.to_string();
        let columns: BTreeSet<String> = now
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, c)| c.clone())
            .collect();
        let was = recorded
            .get(&name)
            .and_then(|t| t.unwritten_defaults.as_ref());
        if let Some(was) = was.filter(|_| !loading.contains(id)) {
            if columns.iter().any(|c| !was.contains(c)) {
                added.push(id.clone());
            }
        }
        records.push((name, columns));
    }
    for state in recorded.values_mut() {
        state.unwritten_defaults = None;
    }
    for (name, columns) in records {
        recorded.entry(name).or_default().unwritten_defaults = Some(columns);
    }
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
        let mut recorded = TableStates::new();
        recorded.entry("public.other".into()).or_default().captured = true;
        // First start: nothing recorded; both tables are recorded, none reported.
        let now = vec![(t.clone(), "a".to_string())];
        assert!(added_since(&mut recorded, &now, &tables, &[]).is_empty());
        assert_eq!(
            recorded
                .values()
                .filter(|t| t.unwritten_defaults.is_some())
                .count(),
            2
        );
        // The same columns again: nothing.
        assert!(added_since(&mut recorded, &now, &tables, &[]).is_empty());
        // A column of u and another of t appear.
        let now = vec![
            (t.clone(), "a".to_string()),
            (t.clone(), "b".to_string()),
            (u.clone(), "c".to_string()),
        ];
        assert_eq!(
            added_since(&mut recorded, &now, &tables, &[]),
            [t.clone(), u.clone()]
        );
        assert!(added_since(&mut recorded, &now, &tables, &[]).is_empty());
        // A rewrite (VACUUM FULL) clears atthasmissing: nothing is added.
        assert!(added_since(&mut recorded, &[], &tables, &[]).is_empty());
        // A column of a table loaded again anyway (swapped) is recorded, not reported.
        let now = vec![(u.clone(), "d".to_string())];
        assert!(added_since(&mut recorded, &now, &tables, std::slice::from_ref(&u)).is_empty());
        assert!(added_since(&mut recorded, &now, &tables, &[]).is_empty());
        assert!(
            recorded["public.other"].captured
                && recorded["public.other"].unwritten_defaults.is_none()
        );
    }

    /// The text checkpoint of earlier versions kept this record as `<table, JSON> <columns>`
    /// and read it back by splitting at the first space, so a table whose name holds a space
    /// never matched its record and a column added to it was never found.
    #[test]
    fn a_table_whose_name_holds_a_space_is_matched_with_its_record() {
        let t = TableId::new("public", "order items");
        let tables = [t.clone()];
        let mut recorded = TableStates::new();
        let now = vec![(t.clone(), "a".to_string())];
        assert!(added_since(&mut recorded, &now, &tables, &[]).is_empty());
        let now = vec![(t.clone(), "a".to_string()), (t.clone(), "b".to_string())];
        assert_eq!(
            added_since(&mut recorded, &now, &tables, &[]),
            std::slice::from_ref(&t)
        );
    }
}
