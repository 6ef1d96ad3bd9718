//! What to do with a source value that has no exact Arrow equivalent (a NUMERIC NaN or infinity,
//! a date or timestamp outside Arrow's range or at ±infinity, a MySQL zero date), per column:
//! the task's default and the columns set apart in `[values.columns]`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::{ExclusionError, TableId, TableSelection};

/// What one column does with values that cannot be represented exactly. A value is never
/// silently turned into a different valid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unrepresentable {
    /// Stop the task with an error naming the table, column and value (the default).
    #[default]
    Fail,
    /// Write NULL instead, and count it in the task's warnings.
    Null,
    /// Write a column of a type that can hold such values (numeric, date, time, timestamp,
    /// PostgreSQL arrays) as the source's exact text, so every value survives (a MySQL
    /// tinyint(1) as the plain integer).
    Text,
}

/// The value policy of a task: a default for every column (`values.on_unrepresentable`) and
/// settings for single columns (`[values.columns]`, keyed `schema.table.column`). Only the
/// named columns differ; every other column keeps its exact type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValuePolicy {
    pub default: Unrepresentable,
    /// Shared, so that a capture can hand the policy around without copying the map.
    columns: Arc<BTreeMap<String, Unrepresentable>>,
    /// The target writes time columns as text (`target.types = "portable"`), so every time the
    /// source has is representable: see [`Self::times_as_text`].
    times_as_text: bool,
}

impl From<Unrepresentable> for ValuePolicy {
    fn from(default: Unrepresentable) -> Self {
        Self {
            default,
            columns: Arc::default(),
            times_as_text: false,
        }
    }
}

impl ValuePolicy {
    /// `columns` maps `schema.table.column` (MySQL: `database.table.column`) to its policy.
    pub fn new(default: Unrepresentable, columns: BTreeMap<String, Unrepresentable>) -> Self {
        Self {
            default,
            columns: Arc::new(columns),
            times_as_text: false,
        }
    }

    /// The policy for a target that writes time columns as text (the portable forms) when
    /// `yes`. The time types of Arrow, Parquet and Iceberg end below 24:00:00, but PostgreSQL's
    /// has `24:00:00` and MySQL's runs from `-838:59:59` to `838:59:59`; written as text, such
    /// a value is kept exactly instead of following the column's policy.
    pub fn with_times_as_text(mut self, yes: bool) -> Self {
        self.times_as_text = yes;
        self
    }

    /// Whether time values outside a day are carried: the connectors then decode them as
    /// microseconds (24:00:00 as 86,400,000,000, MySQL's negative times below 0) into the
    /// column's Time64 array, which the sink turns into text before anything is written
    /// (`crate::portable_batch`), so no such Time64 value leaves the process.
    pub fn times_as_text(&self) -> bool {
        self.times_as_text
    }

    /// The policy of one column: its own setting, else the task's default.
    pub fn for_column(&self, table: &TableId, column: &str) -> Unrepresentable {
        if self.columns.is_empty() {
            return self.default;
        }
        self.columns
            .get(&column_key(table, column))
            .copied()
            .unwrap_or(self.default)
    }

    /// Checks every `[values.columns]` key against the selected tables and all their columns
    /// (before `exclude_columns`). A key that names no selected column would leave the column
    /// it meant under the default policy (a typo, another table, an excluded column), so it
    /// is an error naming the key and what exists, never a warning.
    pub fn check_columns<'a>(
        &self,
        selection: &TableSelection,
        tables: impl IntoIterator<Item = (&'a TableId, Vec<&'a str>)>,
    ) -> Result<(), ExclusionError> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let tables: Vec<(&TableId, Vec<&str>)> = tables.into_iter().collect();
        let mut problems = Vec::new();
        for key in self.columns.keys() {
            // Names may hold dots, so the key is matched against each table's prefix.
            let matches: Vec<(&TableId, &[&str], &str)> = tables
                .iter()
                .filter_map(|(id, cols)| {
                    let column = key
                        .strip_prefix(id.to_string().as_str())?
                        .strip_prefix('.')?;
                    Some((*id, cols.as_slice(), column))
                })
                .collect();
            if matches
                .iter()
                .any(|(id, cols, c)| cols.contains(c) && !selection.excludes_column(id, c))
            {
                continue;
            }
            let problem = match matches.as_slice() {
                [] => {
                    let near = tables
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .find(|t| {
                            key.get(..t.len())
                                .is_some_and(|k| k.eq_ignore_ascii_case(t))
                                && key[t.len()..].starts_with('.')
                        })
                        .map(|t| format!("did you mean table \"{t}\"? "))
                        .unwrap_or_default();
                    let mut names: Vec<String> =
                        tables.iter().map(|(id, _)| id.to_string()).collect();
                    let more = names.len().saturating_sub(20);
                    names.truncate(20);
                    let listed = if names.is_empty() {
                        "no table is selected".to_string()
                    } else if more > 0 {
                        format!("selected tables: {}, and {more} more", names.join(", "))
                    } else {
                        format!("selected tables: {}", names.join(", "))
                    };
                    format!(
                        "\"{key}\" names no column of a selected table ({near}keys are \
                         \"schema.table.column\"; {listed})"
                    )
                }
                [(id, cols, column), ..] if cols.contains(column) => format!(
                    "\"{key}\": column \"{column}\" of {id} is excluded by \
                     tables.exclude_columns, so it is not written"
                ),
                [(id, cols, column), ..] => {
                    let near = cols
                        .iter()
                        .find(|c| c.eq_ignore_ascii_case(column))
                        .map(|c| format!("did you mean \"{c}\"? "))
                        .unwrap_or_default();
                    format!(
                        "\"{key}\": {id} has no column \"{column}\" ({near}its columns: {})",
                        cols.join(", ")
                    )
                }
            };
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ExclusionError {
                setting: "values.columns",
                problems,
                fix: "fix the key (\"schema.table.column\", exact and case-sensitive) so it \
                      names a selected column, or remove it",
            })
        }
    }
}

/// The `[values.columns]` key of a column, as error messages tell users to write it.
pub fn column_key(table: &TableId, column: &str) -> String {
    format!("{}.{}.{column}", table.schema, table.name)
}

/// Per-task policy for a source table whose columns change while changes are captured (a
/// column added, dropped, or its type changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaChanges {
    /// Follow the source: later changes are written with the new columns; what was buffered
    /// in the old shape is written in that shape first.
    #[default]
    Evolve,
    /// Stop the task with an error naming the table and the change.
    Fail,
    /// Keep the columns the task started with: added columns are not written, dropped ones are
    /// written as NULL.
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TableSelectionConfig;

    fn policy(keys: &[(&str, Unrepresentable)]) -> ValuePolicy {
        ValuePolicy::new(
            Unrepresentable::Fail,
            keys.iter().map(|(k, p)| (k.to_string(), *p)).collect(),
        )
    }

    #[test]
    fn only_the_named_column_differs_from_the_default() {
        let p = policy(&[("public.pol.n", Unrepresentable::Text)]);
        let pol = TableId::new("public", "pol");
        assert_eq!(p.for_column(&pol, "n"), Unrepresentable::Text);
        assert_eq!(p.for_column(&pol, "m"), Unrepresentable::Fail);
        assert_eq!(
            p.for_column(&TableId::new("other", "pol"), "n"),
            Unrepresentable::Fail
        );
    }

    #[test]
    fn keys_that_name_no_selected_column_are_errors() {
        let config = TableSelectionConfig {
            exclude_columns: [("public.pol".to_string(), vec!["secret".to_string()])].into(),
            ..TableSelectionConfig::default()
        };
        let selection = TableSelection::new(&config).expect("valid patterns");
        let pol = TableId::new("public", "pol");
        let dotted = TableId::new("my.db", "t");
        let tables = || {
            vec![
                (&pol, vec!["id", "n", "Amount", "secret"]),
                (&dotted, vec!["id"]),
            ]
        };
        policy(&[
            ("public.pol.n", Unrepresentable::Text),
            ("my.db.t.id", Unrepresentable::Null),
        ])
        .check_columns(&selection, tables())
        .expect("both keys name selected columns");

        let e = policy(&[
            ("public.pol.nn", Unrepresentable::Text),
            ("public.pol.amount", Unrepresentable::Text),
            ("public.pol.secret", Unrepresentable::Null),
            ("Public.pol.n", Unrepresentable::Null),
        ])
        .check_columns(&selection, tables())
        .expect_err("no key names a selected column");
        assert_eq!(e.setting, "values.columns");
        assert_eq!(
            e.problems,
            [
                "\"Public.pol.n\" names no column of a selected table (did you mean table \
                 \"public.pol\"? keys are \"schema.table.column\"; selected tables: \
                 public.pol, my.db.t)",
                "\"public.pol.amount\": public.pol has no column \"amount\" (did you mean \
                 \"Amount\"? its columns: id, n, Amount, secret)",
                "\"public.pol.nn\": public.pol has no column \"nn\" (its columns: id, n, \
                 Amount, secret)",
                "\"public.pol.secret\": column \"secret\" of public.pol is excluded by \
                 tables.exclude_columns, so it is not written",
            ]
        );
        assert!(
            e.to_string()
                .starts_with("values.columns: \"Public.pol.n\""),
            "{e}"
        );
    }
}
