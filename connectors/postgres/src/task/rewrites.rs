//! Table rewrites that change a captured PostgreSQL table's stored values without writing a
//! change: `ALTER TABLE … ALTER COLUMN … TYPE` that rounds or converts (`numeric(10,2)` to
//! `numeric(10,1)`, `text` to `int USING …`), `ADD COLUMN … DEFAULT random()` (a default
//! computed per row, so written by a rewrite, not kept in the catalog as
//! [`super::added_defaults`] handles), `ADD COLUMN … serial` or `… GENERATED … AS IDENTITY`.
//! The server writes the new table into a new file and logical decoding skips it, so the stream
//! never carries the new values and the target would keep the old ones of every row not changed
//! since. Such a table is loaded again beside the stream (a reload request, as `inlet resync` makes).
//!
//! A rewrite shows in the catalog as a new `pg_class.relfilenode`. So do rewrites that change
//! no value (`VACUUM FULL`, `CLUSTER`, `ALTER TABLE … SET TABLESPACE`) and `TRUNCATE` (which
//! the stream carries), and those must not reload a table. What tells them apart is the
//! columns: an `ALTER TABLE` that rewrites updates the `pg_attribute` rows of the columns it
//! changes (a new type or typmod, a new row for an added column, and a new `xmin` even for
//! `ALTER COLUMN c TYPE <same type> USING …`), while `VACUUM FULL` and `CLUSTER` touch a column
//! only to clear `atthasmissing` (they write its catalog-only default into every row). So a
//! table counts as rewritten with new values when its relfilenode changed AND a column was
//! added, changed type, or had its catalog row rewritten other than by that clearing.
//! Changes without a rewrite (`ADD COLUMN` without a default, a `varchar` widening, `DROP
//! COLUMN`) keep the relfilenode and reload nothing. A rewrite and such a change between two
//! looks (the poller's 10 s, or a stop) read as a rewrite that changed values: the table is
//! loaded again, which costs a load but leaves the target exact.
//!
//! Each captured table's relfilenode and columns are recorded in the checkpoint
//! ([`inlet_core::TableState::storage`]), so a rewrite done while the task was stopped, or killed before the
//! poller noticed, is found at the next start. The captured tables are the ordinary tables
//! (`relkind = 'r'`), partitions included, each with its own file: `ALTER TABLE parent ALTER
//! COLUMN … TYPE` rewrites every partition, and each captured partition is loaded again.

use inlet_core::{ColumnRecord, StorageRecord, TableId, TableStates};

/// One column as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    num: i32,
    /// The transaction that last wrote the column's `pg_attribute` row.
    xmin: i64,
    type_id: i64,
    typmod: i32,
    /// Older rows read a default kept in the catalog only (`atthasmissing`).
    missing: bool,
    /// The name and the type as SQL writes it, for messages (not recorded).
    name: String,
    type_name: String,
}

/// Where a table's rows are stored and the columns they were written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Storage {
    filenode: i64,
    columns: Vec<Column>,
}

impl Storage {
    /// What the checkpoint records of it (the names are for messages only).
    fn record(&self) -> StorageRecord {
        StorageRecord {
            filenode: self.filenode,
            columns: self
                .columns
                .iter()
                .map(|c| ColumnRecord {
                    num: c.num,
                    xmin: c.xmin,
                    type_id: c.type_id,
                    typmod: c.typmod,
                    missing: c.missing,
                })
                .collect(),
        }
    }

    fn from_record(record: &StorageRecord) -> Self {
        Self {
            filenode: record.filenode,
            columns: record
                .columns
                .iter()
                .map(|c| Column {
                    num: c.num,
                    xmin: c.xmin,
                    type_id: c.type_id,
                    typmod: c.typmod,
                    missing: c.missing,
                    name: String::new(),
                    type_name: String::new(),
                })
                .collect(),
        }
    }

    /// Why going from `was` to `self` changed stored values that no change carried, or None:
    /// the same file, or a new one with the same columns (`VACUUM FULL`, `CLUSTER`,
    /// `TRUNCATE`).
    pub(super) fn rewrite_cause(&self, was: &Storage) -> Option<String> {
        if self.filenode == was.filenode {
            return None;
        }
        let mut causes = Vec::new();
        for c in &self.columns {
            let Some(old) = was.columns.iter().find(|o| o.num == c.num) else {
                causes.push(format!(
                    "column {} was added and the table rewritten (a DEFAULT computed per row, \
                     serial or identity: each older row got a value no change carries)",
                    c.name
                ));
                continue;
            };
            let filled = old.missing && !c.missing;
            if (old.type_id, old.typmod) != (c.type_id, c.typmod) {
                causes.push(format!(
                    "column {} changed type to {} and the table was rewritten (ALTER COLUMN … \
                     TYPE: the older rows' values were converted without a change in the stream)",
                    c.name, c.type_name
                ));
            } else if old.xmin != c.xmin && !filled {
                // (`filled`: a rewrite wrote a catalog-only default into the rows and cleared
                // atthasmissing, which rewrites the column's catalog row: no value changed.)
                causes.push(format!(
                    "column {} was altered and the table rewritten (ALTER COLUMN … TYPE … \
                     USING: the older rows' values were converted without a change in the \
                     stream)",
                    c.name
                ));
            }
        }
        (!causes.is_empty()).then(|| causes.join("; "))
    }
}

/// The storage of each of `tables` that is an ordinary table now, in one catalog query.
pub(super) async fn read(
    client: &tokio_postgres::Client,
    tables: &[TableId],
) -> Result<Vec<(TableId, Storage)>, tokio_postgres::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relfilenode::int8, a.attnum::int4, \
                    a.attname::text, a.xmin::text::int8, a.atttypid::int8, a.atttypmod, \
                    a.atthasmissing, format_type(a.atttypid, a.atttypmod) \
             FROM unnest($1::text[], $2::text[]) AS s(nsp, rel) \
             JOIN pg_namespace n ON n.nspname = s.nsp \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.rel \
                             AND c.relkind = 'r' \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY 1, 2, 4",
            &[&schemas, &names],
        )
        .await?;
    let mut out: Vec<(TableId, Storage)> = Vec::new();
    for r in rows {
        let id = TableId::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let column = Column {
            num: r.get(3),
            name: r.get(4),
            xmin: r.get(5),
            type_id: r.get(6),
            typmod: r.get(7),
            missing: r.get(8),
            type_name: r.get(9),
        };
        match out.last_mut() {
            Some((last, storage)) if *last == id => storage.columns.push(column),
            _ => out.push((
                id,
                Storage {
                    filenode: r.get(2),
                    columns: vec![column],
                },
            )),
        }
    }
    Ok(out)
}

/// The captured tables (`tables`) whose storage `now` (as [`read`] reads it) was rewritten
/// with new values since `recorded` recorded it, each with the cause. A table without a record
/// (one that just joined, or a checkpoint of an earlier version) is recorded, not reported: its
/// load read the values. So is a table in `loading` (loaded again anyway, e.g. swapped: its
/// name holds another relation). `recorded` then records `now` for `tables`, and nothing for
/// other tables.
pub(super) fn rewritten_since(
    recorded: &mut TableStates,
    now: &[(TableId, Storage)],
    tables: &[TableId],
    loading: &[TableId],
) -> Vec<(TableId, String)> {
    let mut rewritten = Vec::new();
    let mut records = Vec::with_capacity(tables.len());
    for id in tables {
        let name = id.to_string();
        let was = recorded.get(&name).and_then(|t| t.storage.as_ref());
        let Some((_, storage)) = now.iter().find(|(t, _)| t == id) else {
            // Not an ordinary table at this moment (dropped, or swapped mid-query): its
            // record stays for the next look.
            if let Some(was) = was {
                records.push((name, was.clone()));
            }
            continue;
        };
        if let Some(was) = was.filter(|_| !loading.contains(id)) {
            if let Some(cause) = storage.rewrite_cause(&Storage::from_record(was)) {
                rewritten.push((id.clone(), cause));
            }
        }
        records.push((name, storage.record()));
    }
    for state in recorded.values_mut() {
        state.storage = None;
    }
    for (name, record) in records {
        recorded.entry(name).or_default().storage = Some(record);
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(num: i32, xmin: i64, typmod: i32, missing: bool) -> Column {
        Column {
            num,
            xmin,
            type_id: 1700,
            typmod,
            missing,
            name: format!("c{num}"),
            type_name: "numeric".into(),
        }
    }

    fn storage(filenode: i64, columns: Vec<Column>) -> Storage {
        Storage { filenode, columns }
    }

    #[test]
    fn only_a_rewrite_that_changed_columns_counts() {
        let was = storage(
            10,
            vec![column(1, 5, -1, false), column(2, 5, 655366, false)],
        );
        // VACUUM FULL, CLUSTER, TRUNCATE: a new file, the same columns.
        let vacuumed = storage(11, was.columns.clone());
        assert_eq!(vacuumed.rewrite_cause(&was), None);
        // ADD COLUMN without a default, a varchar widening: the same file.
        let mut added = was.clone();
        added.columns.push(column(3, 6, -1, false));
        assert_eq!(added.rewrite_cause(&was), None);
        // ALTER COLUMN … TYPE numeric(10,1): a new file and a new typmod.
        let retyped = storage(
            12,
            vec![column(1, 5, -1, false), column(2, 7, 655365, false)],
        );
        assert!(retyped
            .rewrite_cause(&was)
            .is_some_and(|c| c.contains("column c2 changed type to numeric")));
        // ADD COLUMN … DEFAULT random(): a new file and a new column.
        added.filenode = 13;
        assert!(added
            .rewrite_cause(&was)
            .is_some_and(|c| c.contains("column c3 was added")));
        // ALTER COLUMN c1 TYPE <the same> USING …: only the catalog row is new.
        let using = storage(
            14,
            vec![column(1, 8, -1, false), column(2, 5, 655366, false)],
        );
        assert!(using
            .rewrite_cause(&was)
            .is_some_and(|c| c.contains("column c1 was altered")));
        // VACUUM FULL writing a catalog-only default into the rows: its row is new, no value.
        let missing = storage(10, vec![column(1, 5, -1, true)]);
        let filled = storage(15, vec![column(1, 9, -1, false)]);
        assert_eq!(filled.rewrite_cause(&missing), None);
        // DROP COLUMN then VACUUM FULL: nothing left has new values.
        let dropped = storage(16, vec![column(1, 5, -1, false)]);
        assert_eq!(dropped.rewrite_cause(&was), None);
    }

    #[test]
    fn a_table_is_reported_against_its_record_and_recorded_again() {
        let t = TableId::new("public", "t");
        let u = TableId::new("public", "u v");
        let tables = [t.clone(), u.clone()];
        let mut recorded = TableStates::new();
        recorded.entry("public.other".into()).or_default().captured = true;
        let first = vec![
            (t.clone(), storage(10, vec![column(1, 5, -1, false)])),
            (u.clone(), storage(20, vec![])),
        ];
        // Nothing recorded: both recorded, none reported.
        assert!(rewritten_since(&mut recorded, &first, &tables, &[]).is_empty());
        assert_eq!(recorded.values().filter(|t| t.storage.is_some()).count(), 2);
        assert!(rewritten_since(&mut recorded, &first, &tables, &[]).is_empty());
        // t's column retyped by a rewrite; u (a name with a space) vacuumed.
        let now = vec![
            (t.clone(), storage(11, vec![column(1, 6, 655365, false)])),
            (u.clone(), storage(21, vec![])),
        ];
        let found = rewritten_since(&mut recorded, &now, &tables, &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, t);
        // Recorded: the same state again is nothing.
        assert!(rewritten_since(&mut recorded, &now, &tables, &[]).is_empty());
        // A table loaded again anyway is recorded, not reported.
        let again = vec![(t.clone(), storage(12, vec![column(1, 7, 655364, false)]))];
        assert!(
            rewritten_since(&mut recorded, &again, &tables, std::slice::from_ref(&t)).is_empty()
        );
        assert!(rewritten_since(&mut recorded, &again, &tables, &[]).is_empty());
        assert!(recorded["public.other"].captured && recorded["public.other"].storage.is_none());
    }
}
