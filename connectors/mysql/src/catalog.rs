//! Catalog discovery: which tables the task selects, their columns planned for decoding,
//! primary keys, unsigned flags, enum/set labels and charsets, read from information_schema.

use std::collections::HashMap;

use inlet_core::{Column, TableId, TableSchema, TableSelection, Unrepresentable, ValuePolicy};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::types::{plan_column, unsupported, ColumnPlan};

/// A selected source table (a table of a MySQL database; the database is the schema).
#[derive(Debug, Clone)]
pub struct MysqlTable {
    pub schema: TableSchema,
    /// `information_schema.TABLES.TABLE_ROWS`: InnoDB's estimate.
    pub estimated_rows: Option<u64>,
    /// `DATA_LENGTH`, bytes.
    pub data_bytes: u64,
    pub(crate) columns: Vec<ColumnPlan>,
    /// The target writes time as text, so a TIME outside a day is carried
    /// (`ValuePolicy::times_as_text`).
    pub(crate) times_as_text: bool,
}

impl MysqlTable {
    /// A table described by its columns as `information_schema.COLUMNS` would: `(name,
    /// COLUMN_TYPE, CHARACTER_SET_NAME, nullable)`. For tests and tools that know a table
    /// without asking a server.
    pub fn from_columns(
        id: TableId,
        columns: &[(&str, &str, Option<&str>, bool)],
        primary_key: &[&str],
        policy: Unrepresentable,
    ) -> Self {
        let plans: Vec<ColumnPlan> = columns
            .iter()
            .map(|(name, ty, cs, nullable)| plan_column(name, ty, *cs, *nullable, policy))
            .collect();
        Self {
            schema: TableSchema {
                id,
                columns: plans.iter().map(column_of).collect(),
                primary_key: primary_key.iter().map(|k| k.to_string()).collect(),
            },
            estimated_rows: None,
            data_bytes: 0,
            columns: plans,
            times_as_text: false,
        }
    }

    /// The primary-key column the full load cuts ranges on: the first key column. None (no
    /// key, or the key column is excluded): the table is read in one piece.
    pub(crate) fn chunk_column(&self) -> Option<&ColumnPlan> {
        let first = self.schema.primary_key.first()?;
        self.columns.iter().find(|c| &c.name == first)
    }
}

pub(crate) fn column_of(plan: &ColumnPlan) -> Column {
    Column {
        name: plan.name.clone(),
        source_type: plan.source_type.clone(),
        field: plan.field.clone(),
        distinct_values: None,
    }
}

/// Databases that hold the server's own tables, never replicated.
const SYSTEM_SCHEMAS: &str = "'mysql','information_schema','performance_schema','sys'";

/// Reads information_schema and returns the selected base tables, ordered by name. Each column
/// is planned under its own value policy from `values`; a `[values.columns]` key that names no
/// selected column is an error.
pub async fn discover(
    conn: &mut Conn,
    connector: &MysqlConnector,
    selection: &TableSelection,
    values: &ValuePolicy,
) -> Result<Vec<MysqlTable>, MysqlError> {
    // Three catalog queries: bounded as a whole by `source.read_timeout_s`.
    connector
        .within(
            "reading the catalog",
            discover_unbounded(conn, connector, selection, values),
        )
        .await
}

async fn discover_unbounded(
    conn: &mut Conn,
    connector: &MysqlConnector,
    selection: &TableSelection,
    values: &ValuePolicy,
) -> Result<Vec<MysqlTable>, MysqlError> {
    let tables: Vec<(String, String, Option<u64>, Option<u64>)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
        .await
        .map_err(|e| connector.query_error("listing tables", &e))?;
    let selected: Vec<(TableId, Option<u64>, Option<u64>)> = tables
        .into_iter()
        .map(|(s, t, rows, bytes)| (TableId::new(s, t), rows, bytes))
        .filter(|(id, ..)| selection.includes(id))
        .collect();
    if selected.is_empty() {
        return Ok(Vec::new());
    }

    // MariaDB's JSON is LONGTEXT with a json_valid() check: find those columns. (MySQL's
    // CHECK_CONSTRAINTS has no TABLE_NAME; its JSON columns say json themselves.)
    let json_checks: Vec<(String, String, String)> = conn
        .query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS",
        )
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = %crate::error::describe(&e), "no CHECK_CONSTRAINTS");
            Vec::new()
        });
    let json_columns: std::collections::HashSet<(TableId, String)> = json_checks
        .into_iter()
        .filter_map(|(schema, table, clause)| {
            let inner = clause.strip_prefix("json_valid(")?.strip_suffix(')')?;
            let name = inner.trim_matches('`').replace("``", "`");
            Some((TableId::new(schema, table), name))
        })
        .collect();

    let mut columns: HashMap<TableId, Vec<ColumnPlan>> = HashMap::new();
    // Every column of each table, excluded or not, to check `exclude_columns` against.
    let mut all_columns: HashMap<TableId, Vec<String>> = HashMap::new();
    let rows: Vec<(String, String, String, String, Option<String>, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, \
                    IS_NULLABLE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
        ))
        .await
        .map_err(|e| connector.query_error("reading columns", &e))?;
    // Tables that have columns at all: one listed above but absent here was dropped meanwhile.
    let mut present: std::collections::HashSet<TableId> = std::collections::HashSet::new();
    for (schema, table, name, column_type, charset, nullable) in rows {
        let id = TableId::new(schema, table);
        present.insert(id.clone());
        all_columns
            .entry(id.clone())
            .or_default()
            .push(name.clone());
        if selection.excludes_column(&id, &name) {
            continue;
        }
        if selection.includes(&id) {
            if let Some(message) = unsupported(&id.to_string(), &name, &column_type) {
                return Err(MysqlError::Table { table: id, message });
            }
        }
        let column_type = if json_columns.contains(&(id.clone(), name.clone())) {
            "json".to_string()
        } else {
            column_type
        };
        let plan = plan_column(
            &name,
            &column_type,
            charset.as_deref(),
            nullable == "YES",
            values.for_column(&id, &name),
        );
        columns.entry(id).or_default().push(plan);
    }

    let mut keys: HashMap<TableId, Vec<String>> = HashMap::new();
    let rows: Vec<(String, String, String)> = conn
        .query(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE INDEX_NAME = 'PRIMARY' AND TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, SEQ_IN_INDEX"
        ))
        .await
        .map_err(|e| connector.query_error("reading primary keys", &e))?;
    for (schema, table, column) in rows {
        keys.entry(TableId::new(schema, table))
            .or_default()
            .push(column);
    }

    let selected_columns = || {
        selected
            .iter()
            .filter(|(id, ..)| present.contains(id))
            .map(|(id, ..)| {
                let names = all_columns
                    .get(id)
                    .map_or_else(Vec::new, |c| c.iter().map(String::as_str).collect());
                (id, names)
            })
    };
    selection
        .check_column_exclusions(selected_columns())
        .map_err(MysqlError::Selection)?;
    values
        .check_columns(selection, selected_columns())
        .map_err(MysqlError::Selection)?;

    let mut out = Vec::with_capacity(selected.len());
    for (id, rows, bytes) in selected {
        if !present.contains(&id) {
            tracing::debug!(table = %id, "dropped while the tables were read; skipped");
            continue;
        }
        let plans = columns.remove(&id).unwrap_or_default();
        if plans.is_empty() {
            return Err(MysqlError::Config {
                key: "tables",
                message: format!("every column of {id} is excluded; exclude the table instead"),
            });
        }
        let cols: Vec<Column> = plans.iter().map(column_of).collect();
        inlet_core::check_reserved_columns(&id, cols.iter().map(|c| c.name.as_str()))?;
        // A key column the task excludes cannot serve as the key.
        let primary_key = keys.remove(&id).unwrap_or_default();
        let primary_key = if primary_key
            .iter()
            .all(|k| cols.iter().any(|c| &c.name == k))
        {
            primary_key
        } else {
            Vec::new()
        };
        out.push(MysqlTable {
            schema: TableSchema {
                id,
                columns: cols,
                primary_key,
            },
            estimated_rows: rows,
            data_bytes: bytes.unwrap_or(0),
            columns: plans,
            times_as_text: values.times_as_text(),
        });
    }
    Ok(out)
}
