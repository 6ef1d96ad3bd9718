//! What to do with a source value that has no exact Arrow equivalent: a NUMERIC NaN or infinity,
//! a date or timestamp outside Arrow's range or at ±infinity, a MySQL zero date.

use serde::Deserialize;

/// Per-task policy for values that cannot be represented exactly. A value is never silently
/// turned into a different valid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unrepresentable {
    /// Stop the task with an error naming the table, column and value (the default).
    #[default]
    Fail,
    /// Write NULL instead, and count it in the task's warnings.
    Null,
    /// Write the columns of types that can hold such values (numeric, date, timestamp) as the
    /// source's exact text, so every value survives.
    Text,
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
