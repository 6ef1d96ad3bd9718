//! Which tables and columns a task replicates: include/exclude wildcard patterns on
//! `schema.table`, and per-table column exclusions. Every source applies the same rules.

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::TableId;

/// The `[tables]` section of a task file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSelectionConfig {
    /// Patterns on `schema.table`; `*` matches any run of characters, `?` one character.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `"schema.table" = ["column", …]`: columns never read nor written.
    #[serde(default)]
    pub exclude_columns: BTreeMap<String, Vec<String>>,
}

fn default_include() -> Vec<String> {
    vec!["*.*".to_string()]
}

impl Default for TableSelectionConfig {
    fn default() -> Self {
        Self {
            include: default_include(),
            exclude: Vec::new(),
            exclude_columns: BTreeMap::new(),
        }
    }
}

/// A compiled [`TableSelectionConfig`].
#[derive(Debug, Clone)]
pub struct TableSelection {
    include: GlobSet,
    exclude: GlobSet,
    exclude_columns: BTreeMap<String, Vec<String>>,
}

/// A pattern that does not compile, with the config key it came from.
#[derive(Debug, thiserror::Error)]
#[error("tables.{key}: pattern {pattern:?} is not valid: {reason}")]
pub struct PatternError {
    pub key: &'static str,
    pub pattern: String,
    pub reason: String,
}

impl TableSelection {
    pub fn new(config: &TableSelectionConfig) -> Result<Self, PatternError> {
        Ok(Self {
            include: compile("include", &config.include)?,
            exclude: compile("exclude", &config.exclude)?,
            exclude_columns: config.exclude_columns.clone(),
        })
    }

    pub fn includes(&self, table: &TableId) -> bool {
        let name = table.to_string();
        self.include.is_match(&name) && !self.exclude.is_match(&name)
    }

    pub fn excludes_column(&self, table: &TableId, column: &str) -> bool {
        self.exclude_columns
            .get(&table.to_string())
            .is_some_and(|cols| cols.iter().any(|c| c == column))
    }

    /// Checks every `exclude_columns` entry against the selected tables and all of their
    /// columns (before exclusion). An entry that names no selected table, or a column its table
    /// does not have, is a typo that would export the very column it meant to hide, so it is an
    /// error, never a warning.
    pub fn check_column_exclusions<'a>(
        &self,
        tables: impl IntoIterator<Item = (&'a TableId, Vec<&'a str>)>,
    ) -> Result<(), ExclusionError> {
        let tables: BTreeMap<String, Vec<&str>> = tables
            .into_iter()
            .map(|(id, cols)| (id.to_string(), cols))
            .collect();
        let mut problems = Vec::new();
        for (table, excluded) in &self.exclude_columns {
            let Some(columns) = tables.get(table) else {
                let near = tables
                    .keys()
                    .find(|t| t.eq_ignore_ascii_case(table))
                    .map(|t| format!(" (did you mean \"{t}\"?)"))
                    .unwrap_or_default();
                problems.push(format!("\"{table}\" is not a selected table{near}"));
                continue;
            };
            for column in excluded {
                if columns.iter().any(|c| c == column) {
                    continue;
                }
                let near = columns
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(column))
                    .map(|c| format!("did you mean \"{c}\"? "))
                    .unwrap_or_default();
                problems.push(format!(
                    "{table} has no column \"{column}\" ({near}its columns: {})",
                    columns.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ExclusionError {
                setting: "tables.exclude_columns",
                problems,
                fix: "fix the name (exact, case-sensitive) so the column is excluded, or remove \
                      the entry",
            })
        }
    }
}

/// Entries of a per-column setting that match no selected column: `tables.exclude_columns`
/// (the column it meant to hide would be exported) or `values.columns` (the column would keep
/// the task-wide value policy). Either way the task does not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting}: {}; {fix}. Nothing was read or written",
    problems.join("; ")
)]
pub struct ExclusionError {
    /// The task-file key the entries are under.
    pub setting: &'static str,
    pub problems: Vec<String>,
    /// What to do about one entry.
    pub fix: &'static str,
}

/// A source column named like one of the change columns inlet adds to every change batch
/// (`_inlet_op`, `_inlet_commit_ts`, `_inlet_lsn`, `_inlet_txid`, compared case-insensitively
/// since Athena and Glue fold names): a reader would get inlet's value instead of the table's.
#[derive(Debug, thiserror::Error)]
#[error(
    "table {table} has a column {column:?}, a name inlet reserves for its own change columns; \
     rename it in the source, or leave it out with [tables.exclude_columns] \"{table}\" = \
     [\"{column}\"]. Nothing was read or written"
)]
pub struct ReservedColumnError {
    pub table: TableId,
    pub column: String,
}

/// Refuses a table that has a column named like one of inlet's change columns.
pub fn check_reserved_columns<'a>(
    table: &TableId,
    columns: impl IntoIterator<Item = &'a str>,
) -> Result<(), ReservedColumnError> {
    let reserved = [
        crate::change::OP_COLUMN,
        crate::change::COMMIT_TS_COLUMN,
        crate::change::POSITION_COLUMN,
        crate::change::TXID_COLUMN,
    ];
    match columns
        .into_iter()
        .find(|c| reserved.iter().any(|r| r.eq_ignore_ascii_case(c)))
    {
        Some(column) => Err(ReservedColumnError {
            table: table.clone(),
            column: column.to_string(),
        }),
        None => Ok(()),
    }
}

fn compile(key: &'static str, patterns: &[String]) -> Result<GlobSet, PatternError> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        // Table names never contain '/', so '*' may match anything; literal_separator stays off.
        let glob = Glob::new(p).map_err(|e| PatternError {
            key,
            pattern: p.clone(),
            reason: e.kind().to_string(),
        })?;
        set.add(glob);
    }
    set.build().map_err(|e| PatternError {
        key,
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(include: &[&str], exclude: &[&str]) -> TableSelection {
        TableSelection::new(&TableSelectionConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            exclude_columns: BTreeMap::from([("public.users".to_string(), vec!["pw".to_string()])]),
        })
        .unwrap()
    }

    #[test]
    fn include_exclude_and_columns() {
        let s = sel(&["public.*", "sales.order?"], &["public.tmp_*"]);
        assert!(s.includes(&TableId::new("public", "users")));
        assert!(!s.includes(&TableId::new("public", "tmp_x")));
        assert!(s.includes(&TableId::new("sales", "orders")));
        assert!(!s.includes(&TableId::new("sales", "order")));
        assert!(!s.includes(&TableId::new("other", "users")));
        assert!(s.excludes_column(&TableId::new("public", "users"), "pw"));
        assert!(!s.excludes_column(&TableId::new("public", "users"), "name"));
    }

    #[test]
    fn an_exclusion_naming_nothing_is_an_error() {
        let users = TableId::new("public", "users");
        let s = TableSelection::new(&TableSelectionConfig {
            exclude_columns: BTreeMap::from([
                (
                    "public.users".to_string(),
                    vec!["pw".to_string(), "PassWord".to_string()],
                ),
                ("public.Orders".to_string(), vec!["x".to_string()]),
            ]),
            ..Default::default()
        })
        .unwrap();
        let orders = TableId::new("public", "orders");
        let err = s
            .check_column_exclusions([
                (&users, vec!["id", "pw", "password"]),
                (&orders, vec!["id", "x"]),
            ])
            .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "\"public.Orders\" is not a selected table (did you mean \"public.orders\"?)",
                "public.users has no column \"PassWord\" (did you mean \"password\"? its \
                 columns: id, pw, password)",
            ]
        );
        assert!(
            err.to_string().starts_with("tables.exclude_columns: "),
            "{err}"
        );
        let s = sel(&["*.*"], &[]);
        assert!(s
            .check_column_exclusions([(&users, vec!["id", "pw"])])
            .is_ok());
    }

    #[test]
    fn a_column_named_like_a_change_column_is_refused() {
        let t = TableId::new("public", "t");
        assert!(check_reserved_columns(&t, ["id", "op", "inlet_lsn"]).is_ok());
        let err = check_reserved_columns(&t, ["id", "_INLET_LSN"]).unwrap_err();
        assert_eq!(err.column, "_INLET_LSN");
        assert!(
            err.to_string()
                .contains("[tables.exclude_columns] \"public.t\" = [\"_INLET_LSN\"]"),
            "{err}"
        );
    }

    #[test]
    fn bad_pattern_names_the_key() {
        let err = TableSelection::new(&TableSelectionConfig {
            include: vec!["public.[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tables.include: pattern \"public.[\""),
            "{err}"
        );
    }
}
