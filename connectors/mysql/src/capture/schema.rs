//! Schema evolution: DDL statements (TRUNCATE, renames, drops, creations, statements whose rows
//! the binlog lacks) and TABLE_MAP events whose columns differ from the table's, applied under
//! the task's `schema_changes` policy; statement classification itself is [`crate::ddl`]'s.

use std::sync::Arc;

use inlet_core::{Column, SchemaChanges, TableId};
use mysql_common::binlog::events::TableMapEvent;

use super::BinlogCapture;
use crate::catalog::column_of;
use crate::ddl::{altered_table_at, dml_target, sql_words, table_id, tables_change};
use crate::error::MysqlError;
use crate::rows::{
    catalog_lost_characters, compatible, describe_table_map, BinlogColumn, TableMapping,
};
use crate::types::{plan_column, MysqlType};
use crate::values::ColumnBuilder;

impl BinlogCapture {
    /// A DDL statement: TRUNCATE becomes a `T` row; the shape changes of ALTER are taken from
    /// the next TABLE_MAP of the table, which describes it as it now is. A statement that
    /// changes which tables are captured (a captured table renamed or dropped, a selected table
    /// created or renamed into the selection), or changes a table's rows without row events (a
    /// partition dropped, truncated or exchanged: [`crate::ddl::partition_change`]; a column
    /// added with a value in every existing row, a type changed, a character set converted:
    /// [`crate::ddl::values_rewrite`]), sets `tables_changed`; the tables whose rows the row
    /// events no longer account for are `replaced`. Comments around the statement are skipped
    /// ([`crate::ddl::code_of`]).
    pub(super) fn ddl(&mut self, schema: &str, sql: &str) -> Result<(), MysqlError> {
        let words = sql_words(sql);
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let first = lower.first().map(String::as_str);
        match first {
            Some("truncate") => {
                let name_at = if lower.get(1).map(String::as_str) == Some("table") {
                    2
                } else {
                    1
                };
                if let Some(name) = words.get(name_at) {
                    let id = table_id(name, schema);
                    if let Some(&table) = self.by_name.get(&id) {
                        self.truncate_row(table)?;
                    }
                }
            }
            Some("drop") | Some("rename") | Some("alter") | Some("create") => {
                if first == Some("alter") {
                    if let Some(at) = altered_table_at(&lower) {
                        if let Some(name) = words.get(at) {
                            let id = table_id(name.trim_end_matches(','), schema);
                            if self.by_name.contains_key(&id) {
                                self.altered.push(id);
                            }
                        }
                    }
                }
                if first != Some("create") {
                    // The table maps of the old shape must not decode a later row.
                    self.maps.clear();
                }
                if let Some(change) = tables_change(&words, &lower, schema) {
                    let captured = change.gone.iter().find(|id| {
                        self.by_name.contains_key(id)
                            || (id.name == "*"
                                && self.by_name.keys().any(|k| k.schema == id.schema))
                    });
                    let joining = change.new.iter().find(|id| {
                        !self.by_name.contains_key(id) && self.options.selection.includes(id)
                    });
                    let at = self.txn.as_ref().map(|t| t.start);
                    let replaced: Vec<TableId> = change
                        .replaced
                        .iter()
                        // Not only captured names: one the checkpoint still has may be
                        // uncaptured now (dropped, and the stream started again before it was
                        // created again); its target holds the old table's rows.
                        .filter(|id| self.options.selection.includes(id))
                        .cloned()
                        .collect();
                    if let Some(at) = at.filter(|_| !replaced.is_empty()) {
                        // A name this stream does not capture is recorded (the checkpoint
                        // keeps it until a load after it) without stopping the stream: such a
                        // table is being loaded beside it, from a snapshot taken after the
                        // statement (the stream reads it again from the checkpoint held back
                        // before it), or it joins through its CREATE or RENAME (`joining`).
                        // Stopping would abandon that load and start it again, over and over
                        // for a table that takes longer to load than the stream takes to reach
                        // the statement again.
                        let restart = replaced.iter().any(|id| self.by_name.contains_key(id));
                        match change.rows_without_events {
                            // The statement itself changed the rows: no row event says which.
                            Some(operation) => {
                                for id in replaced.iter().filter(|id| self.by_name.contains_key(id))
                                {
                                    tracing::info!(table = %id, operation, "ALTER TABLE … {operation} changed the table's rows without row events (the binlog holds only the statement): it is loaded again once the changes before it are written");
                                }
                            }
                            None => {
                                if let Some(id) =
                                    replaced.iter().find(|id| self.by_name.contains_key(id))
                                {
                                    tracing::info!(table = %id, statement = %first.unwrap_or_default(), "a captured table's name now holds another table (a table swap, or DROP and CREATE): it is loaded again once the changes before it are written");
                                }
                            }
                        }
                        self.replaced
                            .extend(replaced.into_iter().map(|id| (id, at)));
                        if restart {
                            self.tables_changed = true;
                        }
                    }
                    if let Some(id) = captured {
                        tracing::info!(table = %id, statement = %first.unwrap_or_default(), "a captured table was renamed or dropped: re-discovering the tables once the changes before it are written");
                        self.tables_changed = true;
                    } else if let Some(id) = joining {
                        tracing::info!(table = %id, "a table the selection matches appeared: re-discovering the tables once the changes before it are written");
                        self.tables_changed = true;
                    }
                }
            }
            Some("insert" | "replace" | "update" | "delete" | "load") => {
                // With ROW format a change reaches the binlog as row events; a statement here
                // comes from a session (or an upstream primary) writing STATEMENT or MIXED, and
                // its rows are not in the binlog at all.
                if let Some(name) = dml_target(&words, &lower) {
                    let id = table_id(&name, schema);
                    if self.by_name.contains_key(&id) {
                        // The statement's text holds row values: it stays out of the
                        // message, which reaches logs and /status.
                        let kind = lower.first().map(String::as_str).unwrap_or_default();
                        return Err(self.error(format!(
                            "{id}: a change was logged as a statement, not as rows (a session \
                             or an upstream primary with binlog_format = STATEMENT or MIXED), \
                             so its rows cannot be read from the binlog: an {} statement. Make \
                             every writer use ROW (SET GLOBAL binlog_format = 'ROW', and no SET \
                             SESSION binlog_format), then run a new full load of the table",
                            kind.to_ascii_uppercase()
                        )));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the columns of the tables an ALTER changed from the catalog. A failure only
    /// costs the finer plan: the columns are then planned from the binlog alone.
    pub(super) async fn read_catalog_columns(&mut self) {
        use mysql_async::prelude::Queryable;
        let ids = std::mem::take(&mut self.altered);
        let Some(connector) = self.connector.clone() else {
            return;
        };
        let mut conn = match connector.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the altered tables' columns; planning them from the binlog");
                return;
            }
        };
        for id in ids {
            let what = "reading an altered table's columns";
            let rows: Result<Vec<(String, String, Option<String>)>, _> = connector
                .within(what, async {
                    conn.exec(
                        "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME FROM \
                         information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                        (id.schema.clone(), id.name.clone()),
                    )
                    .await
                    .map_err(|e| connector.query_error(what, &e))
                })
                .await;
            match rows {
                Ok(rows) => {
                    self.catalog_columns.insert(
                        id,
                        rows.into_iter()
                            .map(|(name, ty, cs)| (name, (ty, cs)))
                            .collect(),
                    );
                }
                Err(e) => {
                    tracing::warn!(table = %id, error = %e, "cannot read the table's columns; planning new ones from the binlog")
                }
            }
        }
        let _ = conn.disconnect().await;
    }

    /// A TABLE_MAP: its table id maps to a captured table's columns for the row events after it
    /// (None for a table the task does not capture).
    pub(super) fn table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<(), MysqlError> {
        let id = TableId::new(
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        let Some(&table) = self.by_name.get(&id) else {
            self.maps.insert(tme.table_id(), None);
            return Ok(());
        };
        let columns = describe_table_map(tme, self.flavor)
            .map_err(|m| self.error(format!("TABLE_MAP of {id}: {m}")))?;
        if let Some(Some(m)) = self.maps.get(&tme.table_id()) {
            if m.columns == columns && m.table == table {
                return Ok(());
            }
        }
        let mapping = self.map_columns(table, columns)?;
        self.maps.insert(tme.table_id(), Some(mapping));
        Ok(())
    }

    /// Matches a TABLE_MAP's columns to the table's, applying the schema-change policy when
    /// they differ.
    fn map_columns(
        &mut self,
        table: usize,
        columns: Vec<BinlogColumn>,
    ) -> Result<TableMapping, MysqlError> {
        let id = self.tables[table].schema.id.clone();
        let named = columns.iter().all(|c| c.name.is_some());
        if !named {
            // Without binlog_row_metadata=FULL, columns can only be matched by position.
            let t = &self.tables[table];
            let same = columns.len() == t.kinds.len()
                && columns
                    .iter()
                    .zip(t.kinds.iter().zip(&t.policies))
                    .all(|(c, (k, policy))| compatible(k, c, *policy));
            if !same || t.schema.columns.len() != columns.len() {
                return Err(MysqlError::Table {
                    table: id,
                    message: "the binlog does not name the columns (binlog_row_metadata is \
                              MINIMAL) and they no longer match the table; run SET GLOBAL \
                              binlog_row_metadata = FULL and start a new full load"
                        .into(),
                });
            }
            return Ok(TableMapping {
                table,
                targets: (0..columns.len()).map(Some).collect(),
                columns,
            });
        }
        let wanted: Vec<usize> = (0..columns.len())
            .filter(|&i| {
                let name = columns[i].name.as_deref().unwrap_or("");
                !self.options.selection.excludes_column(&id, name)
            })
            .collect();
        for &i in &wanted {
            let name = columns[i].name.as_deref().unwrap_or("");
            if let Some(message) =
                crate::types::unsupported(&id.to_string(), name, &columns[i].column_type())
            {
                return Err(MysqlError::Table { table: id, message });
            }
        }
        let change = {
            let t = &self.tables[table];
            let mut parts = Vec::new();
            for &i in &wanted {
                let c = &columns[i];
                let name = c.name.as_deref().unwrap_or("");
                match t.schema.columns.iter().position(|s| s.name == name) {
                    None => parts.push(format!("added {name}")),
                    Some(j) if !compatible(&t.kinds[j], c, t.policies[j]) => {
                        parts.push(format!("changed the type of {name} to {}", c.column_type()))
                    }
                    Some(_) => {}
                }
            }
            for col in &t.schema.columns {
                if !wanted
                    .iter()
                    .any(|&i| columns[i].name.as_deref() == Some(&col.name))
                {
                    parts.push(format!("dropped {}", col.name));
                }
            }
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        if let Some(change) = change {
            match self.options.schema_changes {
                SchemaChanges::Fail => {
                    return Err(MysqlError::Table {
                        table: id,
                        message: format!(
                            "the source table changed ({change}) and [cdc] schema_changes = \
                             \"fail\"; set it to \"evolve\" or \"ignore\", or run a new full load"
                        ),
                    })
                }
                SchemaChanges::Ignore => {
                    tracing::warn!(table = %id, %change, "schema change ignored (schema_changes = \"ignore\")");
                }
                SchemaChanges::Evolve => {
                    self.evolve(table, &columns, &wanted)?;
                    tracing::info!(table = %id, %change, "schema evolved");
                }
            }
        }
        // Labels the catalog showed with '?' for characters it cannot hold: the binlog's are
        // whole, and they decode the rows' indexes from here on.
        for c in &columns {
            let (Some(name), Some(labels)) = (c.name.as_deref(), c.labels.as_ref()) else {
                continue;
            };
            let t = &mut self.tables[table];
            let Some(j) = t.schema.columns.iter().position(|s| s.name == name) else {
                continue;
            };
            let whole: Arc<[String]> = labels.clone().into();
            let kind = match &t.kinds[j] {
                MysqlType::Enum { labels: ours }
                    if **ours != **labels && catalog_lost_characters(ours, labels) =>
                {
                    MysqlType::Enum { labels: whole }
                }
                MysqlType::Set { labels: ours }
                    if **ours != **labels && catalog_lost_characters(ours, labels) =>
                {
                    MysqlType::Set { labels: whole }
                }
                _ => continue,
            };
            t.data[j].set_labels(&kind);
            t.kinds[j] = kind;
        }
        let t = &self.tables[table];
        let targets = (0..columns.len())
            .map(|i| {
                if !wanted.contains(&i) {
                    return None;
                }
                let c = &columns[i];
                let j = t
                    .schema
                    .columns
                    .iter()
                    .position(|s| Some(s.name.as_str()) == c.name.as_deref())?;
                compatible(&t.kinds[j], c, t.policies[j]).then_some(j)
            })
            .collect();
        Ok(TableMapping {
            table,
            columns,
            targets,
        })
    }

    /// Switches `table` to the columns of a TABLE_MAP. Rows buffered in the old shape become a
    /// segment of their own; columns that kept their name and type keep their plan.
    fn evolve(
        &mut self,
        table: usize,
        columns: &[BinlogColumn],
        wanted: &[usize],
    ) -> Result<(), MysqlError> {
        let values = self.options.policy.clone();
        let txn = self.txn.clone();
        let catalog = self
            .catalog_columns
            .get(&self.tables[table].schema.id)
            .cloned()
            .unwrap_or_default();
        let t = &mut self.tables[table];
        if let Some(changes) = t.take_committed(table)? {
            t.segments.push(changes);
        }
        if t.rows_open > 0 {
            let Some(txn) = &txn else {
                return Err(t.error("rows of an open transaction outside any transaction"));
            };
            let n = t.rows_open;
            let part = t.take_open_part(table, n, txn)?;
            t.segments.push(part);
        }
        let mut new_columns = Vec::with_capacity(wanted.len());
        let mut kinds = Vec::with_capacity(wanted.len());
        let mut policies = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let c = &columns[i];
            let name = c.name.clone().unwrap_or_default();
            let kept = t
                .schema
                .columns
                .iter()
                .position(|s| s.name == name)
                .filter(|&j| compatible(&t.kinds[j], c, t.policies[j]));
            match kept {
                Some(j) => {
                    new_columns.push(t.schema.columns[j].clone());
                    kinds.push(t.kinds[j].clone());
                    policies.push(t.policies[j]);
                }
                None => {
                    // As discovery would plan it, when the catalog's type fits the binlog's.
                    let policy = values.for_column(&t.schema.id, &name);
                    let plan = catalog
                        .get(&name)
                        .map(|(ty, cs)| plan_column(&name, ty, cs.as_deref(), true, policy))
                        .filter(|p| compatible(&p.decoder, c, policy))
                        .unwrap_or_else(|| c.plan(&name, policy));
                    new_columns.push(column_of(&plan));
                    kinds.push(plan.decoder);
                    policies.push(policy);
                }
            }
        }
        t.schema
            .primary_key
            .retain(|k| new_columns.iter().any(|c: &Column| &c.name == k));
        t.schema.columns = new_columns;
        t.data = kinds
            .iter()
            .map(|k| ColumnBuilder::new(k, 1024).with_times_as_text(values.times_as_text()))
            .collect();
        t.kinds = kinds;
        t.policies = policies;
        t.carry = None;
        Ok(())
    }
}
