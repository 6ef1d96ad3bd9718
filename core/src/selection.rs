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

    /// `exclude_columns` entries naming a table that was not selected: almost always a typo the
    /// user wants to hear about.
    pub fn unmatched_column_exclusions<'a>(&'a self, selected: &[TableId]) -> Vec<&'a str> {
        self.exclude_columns
            .keys()
            .filter(|k| !selected.iter().any(|t| t.to_string() == **k))
            .map(String::as_str)
            .collect()
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
        assert_eq!(
            s.unmatched_column_exclusions(&[TableId::new("public", "x")]),
            vec!["public.users"]
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
