//! Catalog discovery: which tables the task selects, their columns planned for COPY, primary
//! keys, estimated sizes and privileges, read from pg_catalog in one pass without locking any
//! table.

use std::collections::HashMap;

use inlet_core::{Column, TableId, TableSchema, TableSelection, ValuePolicy};
use tokio_postgres::Client;

use crate::config::PgConnector;
use crate::error::PgError;
use crate::types::{plan_column, ColumnPlan, PgType, TypeCatalog};

/// A selected source table, ready to be snapshotted.
#[derive(Debug, Clone)]
pub struct SourceTable {
    pub schema: TableSchema,
    pub oid: u32,
    /// Size of the heap in blocks: at discovery `pg_class.relpages`, the estimate VACUUM and
    /// ANALYZE keep (0 for a table never vacuumed or analyzed), which reading takes no lock on
    /// the table. The full load replaces it with the exact size where it can
    /// (`PgLoadSource::new`); chunks are ranges of these, the last one open-ended, so a stale
    /// count only changes how many chunks a table is read in, never which rows.
    pub pages: u64,
    /// `pg_class.reltuples`; None when the table was never vacuumed or analyzed.
    pub estimated_rows: Option<u64>,
    pub can_select: bool,
    pub(crate) columns: Vec<ColumnPlan>,
    /// pg_type as read at discovery, to plan columns a schema change adds later.
    pub(crate) types: std::sync::Arc<TypeCatalog>,
    /// The target writes time as text, so `24:00:00` is carried (`ValuePolicy::times_as_text`).
    pub(crate) times_as_text: bool,
}

/// One pg_attribute row: name, type oid, typmod, NOT NULL, format_type().
type Attribute = (String, u32, i32, bool, String);

/// Reads the catalog and returns the selected tables, ordered by name. Each column is planned
/// under its own value policy from `values`; a `[values.columns]` key that names no selected
/// column is an error.
pub async fn discover(
    client: &Client,
    connector: &PgConnector,
    selection: &TableSelection,
    values: &ValuePolicy,
) -> Result<Vec<SourceTable>, PgError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: tokio_postgres::Error| connector.query_error(&what, &e)
    };
    let types: std::sync::Arc<TypeCatalog> = client
        .query(
            "SELECT t.oid, t.typname::text, n.nspname::text, t.typtype, t.typbasetype, t.typtypmod, \
                    t.typelem, t.typcategory \
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace",
            &[],
        )
        .await
        .map_err(err("reading pg_type"))?
        .into_iter()
        .map(|r| {
            let kind: i8 = r.get(3);
            let category: i8 = r.get(7);
            (
                r.get::<_, u32>(0),
                PgType {
                    name: r.get(1),
                    namespace: r.get(2),
                    kind: kind as u8,
                    base: r.get(4),
                    base_typmod: r.get(5),
                    element: r.get(6),
                    category: category as u8,
                },
            )
        })
        .collect::<TypeCatalog>()
        .into();

    // Only catalog columns and syscache lookups: no lock on any table. pg_relation_size would
    // take ACCESS SHARE on every table of the database, selected or not, and hold it to the end
    // of the transaction (the full load's snapshot transaction lasts the whole load): discovery
    // would wait behind any table's ACCESS EXCLUSIVE lock (an application's ALTER TABLE, a
    // LOCK TABLE), and an application's ALTER TABLE would queue behind inlet, and every query
    // of that table behind the ALTER.
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.reltuples::float8, \
                    c.relpages::int8, has_table_privilege(c.oid, 'SELECT') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
               AND n.nspname NOT LIKE 'pg\\_%' \
             ORDER BY 2, 3",
            &[],
        )
        .await
        .map_err(err("listing tables"))?;
    let mut tables = Vec::new();
    for r in rows {
        let id = TableId::new(r.get::<_, String>(1), r.get::<_, String>(2));
        if !selection.includes(&id) {
            continue;
        }
        let reltuples: f64 = r.get(3);
        // NULL: the table was dropped after the snapshot this catalog is read in (a table
        // joining a running task, dropped before its load); there is nothing left to read.
        // has_table_privilege looks the table up in the current catalog, not the snapshot's,
        // and answers NULL for a table that is gone.
        let (Some(pages), Some(can_select)) =
            (r.get::<_, Option<i64>>(4), r.get::<_, Option<bool>>(5))
        else {
            tracing::info!(table = %id, "the table was dropped after the load's snapshot: skipped");
            continue;
        };
        tables.push((
            r.get::<_, u32>(0),
            id,
            reltuples,
            pages.max(0) as u64,
            can_select,
        ));
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.0).collect();

    // A generated column is read only where the change stream sends it too, so the load and
    // the stream have the same columns. Before PostgreSQL 18 pgoutput publishes none. From 18 on
    // it publishes a stored one when the publication says so (`publish_generated_columns =
    // stored`, or the column named in its column list); a virtual one (18) never. So on 18 a
    // stored generated column is read when the task's publication publishes it, when the table
    // is not in the publication yet and inlet's ADD TABLE will publish it (`pubgencols`), or when
    // the publication does not exist yet (inlet creates it with `publish_generated_columns =
    // stored`). attgenerated is read through to_jsonb because PostgreSQL 10 and 11 lack it.
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(err("reading server_version_num"))?
        .get(0);
    let publication = connector.publication();
    let column_rows = if version >= 180000 {
        client
            .query(
                "SELECT attrelid, attname::text, atttypid, atttypmod, attnotnull, format_type(atttypid, atttypmod) \
                 FROM pg_attribute a WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped \
                   AND (a.attgenerated = '' OR a.attgenerated = 's' AND CASE \
                     WHEN NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = $2) THEN true \
                     WHEN EXISTS (SELECT 1 FROM pg_publication_tables pt \
                                  JOIN pg_namespace n ON n.nspname = pt.schemaname \
                                  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                                  WHERE pt.pubname = $2 AND c.oid = a.attrelid) \
                       THEN EXISTS (SELECT 1 FROM pg_publication_tables pt \
                                    JOIN pg_namespace n ON n.nspname = pt.schemaname \
                                    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                                    WHERE pt.pubname = $2 AND c.oid = a.attrelid \
                                      AND a.attname = ANY (pt.attnames)) \
                     ELSE (SELECT p.pubgencols = 's' FROM pg_publication p WHERE p.pubname = $2) \
                   END) \
                 ORDER BY attrelid, attnum",
                &[&oids, &publication],
            )
            .await
    } else {
        client
            .query(
                "SELECT attrelid, attname::text, atttypid, atttypmod, attnotnull, format_type(atttypid, atttypmod) \
                 FROM pg_attribute a WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped \
                   AND coalesce(to_jsonb(a) ->> 'attgenerated', '') = '' \
                 ORDER BY attrelid, attnum",
                &[&oids],
            )
            .await
    };
    let mut columns: HashMap<u32, Vec<Attribute>> = HashMap::new();
    for r in column_rows.map_err(err("reading columns"))? {
        columns.entry(r.get(0)).or_default().push((
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
        ));
    }

    let mut keys: HashMap<u32, Vec<String>> = HashMap::new();
    for r in client
        .query(
            // The key is the replica identity index under REPLICA IDENTITY USING INDEX: a
            // delete or an update of the key carries only that index's columns, so they are
            // what names a row in the change stream (the primary key may be absent from it).
            "SELECT i.indrelid, a.attname::text \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = ANY($1) \
               AND CASE WHEN c.relreplident = 'i' AND EXISTS \
                          (SELECT 1 FROM pg_index r WHERE r.indrelid = i.indrelid AND r.indisreplident) \
                        THEN i.indisreplident ELSE i.indisprimary END \
             ORDER BY i.indrelid, k.ord",
            &[&oids],
        )
        .await
        .map_err(err("reading primary keys and replica identity indexes"))?
    {
        keys.entry(r.get(0)).or_default().push(r.get(1));
    }

    // The planner's statistics, as encoding hints for the sink; absent before the first ANALYZE.
    let mut distinct: HashMap<(u32, String), f64> = HashMap::new();
    for r in client
        .query(
            "SELECT c.oid, s.attname::text, s.n_distinct::float8 \
             FROM pg_stats s \
             JOIN pg_namespace n ON n.nspname = s.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename \
             WHERE c.oid = ANY($1) AND NOT s.inherited",
            &[&oids],
        )
        .await
        .map_err(err("reading column statistics"))?
    {
        distinct.insert((r.get(0), r.get(1)), r.get(2));
    }

    let all_columns = || {
        tables.iter().map(|(oid, id, ..)| {
            let names = columns
                .get(oid)
                .map_or_else(Vec::new, |cols| cols.iter().map(|c| c.0.as_str()).collect());
            (id, names)
        })
    };
    selection
        .check_column_exclusions(all_columns())
        .map_err(PgError::Selection)?;
    values
        .check_columns(selection, all_columns())
        .map_err(PgError::Selection)?;

    let mut out = Vec::with_capacity(tables.len());
    for (oid, id, reltuples, pages, can_select) in tables {
        let mut plans = Vec::new();
        let mut cols = Vec::new();
        for (name, type_oid, typmod, not_null, source_type) in
            columns.remove(&oid).unwrap_or_default()
        {
            if selection.excludes_column(&id, &name) {
                continue;
            }
            let policy = values.for_column(&id, &name);
            let plan = plan_column(&types, &name, type_oid, typmod, not_null, policy);
            // n_distinct is a count when positive and minus a fraction of the rows when negative.
            let distinct_values = distinct.get(&(oid, name.clone())).and_then(|&n| {
                if n >= 0.0 {
                    Some(n as u64)
                } else if reltuples >= 0.0 {
                    Some((-n * reltuples) as u64)
                } else {
                    None
                }
            });
            cols.push(Column {
                name: name.clone(),
                source_type,
                field: plan.field.clone(),
                distinct_values,
            });
            plans.push(plan);
        }
        inlet_core::check_reserved_columns(&id, cols.iter().map(|c| c.name.as_str()))?;
        if cols.is_empty() {
            return Err(PgError::Config {
                key: "tables",
                message: format!("every column of {id} is excluded; exclude the table instead"),
            });
        }
        // A key column the task excludes cannot serve as the key.
        let primary_key: Vec<String> = keys.remove(&oid).unwrap_or_default();
        let primary_key = if primary_key
            .iter()
            .all(|k| cols.iter().any(|c| &c.name == k))
        {
            primary_key
        } else {
            Vec::new()
        };
        out.push(SourceTable {
            schema: TableSchema {
                id,
                columns: cols,
                primary_key,
            },
            oid,
            pages,
            estimated_rows: (reltuples >= 0.0).then_some(reltuples as u64),
            can_select,
            columns: plans,
            types: types.clone(),
            times_as_text: values.times_as_text(),
        });
    }
    Ok(out)
}

/// Columns whose rows from before the column existed read a default PostgreSQL never wrote
/// into them (`ADD COLUMN … DEFAULT x` on a table with rows, PostgreSQL 11+: `atthasmissing`).
/// No change event carries those values, so a task that streamed through the `ALTER` holds
/// NULL for them.
pub async fn columns_with_unwritten_defaults(
    client: &Client,
) -> Result<Vec<(TableId, String)>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.atthasmissing AND NOT a.attisdropped AND a.attnum > 0 AND c.relkind = 'r'",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get(2),
            )
        })
        .collect())
}
