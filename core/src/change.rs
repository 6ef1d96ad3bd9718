//! Change batches: committed source changes of one table as an Arrow batch. Four leading columns
//! say what happened and where in the source it came from; the table's own columns follow.
//!
//! Every source produces this layout and every sink reads it: the Parquet sink renames the
//! leading columns to DMS's (`Op`, its timestamp column), an upserting sink reads `_inlet_op`
//! to decide between append and delete.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use arrow_array::RecordBatch;

use crate::TableSchema;

/// `"I"`, `"U"`, `"D"` or `"T"` ([`Op`]).
pub const OP_COLUMN: &str = "_inlet_op";
/// When the source transaction committed: Timestamp(µs, UTC).
pub const COMMIT_TS_COLUMN: &str = "_inlet_commit_ts";
/// The source position of the transaction's commit (PostgreSQL: the commit LSN), Int64.
pub const POSITION_COLUMN: &str = "_inlet_lsn";
/// The source transaction id, Int64.
pub const TXID_COLUMN: &str = "_inlet_txid";

/// How many leading columns a change batch has before the table's own.
pub const CHANGE_META_COLUMNS: usize = 4;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// Every row of the table was removed (TRUNCATE); the row's table columns are all NULL.
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
            Op::Truncate => "T",
        }
    }
}

/// The schema of a change batch of `table`: the four change columns, then the table's columns.
/// Data columns are nullable, since a delete may carry only the key.
pub fn change_schema(table: &TableSchema) -> SchemaRef {
    let source = table.arrow_schema();
    let mut fields = vec![
        Field::new(OP_COLUMN, DataType::Utf8, false),
        Field::new(
            COMMIT_TS_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(POSITION_COLUMN, DataType::Int64, false),
        Field::new(TXID_COLUMN, DataType::Int64, false),
    ];
    fields.extend(
        source
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new_with_metadata(fields, source.metadata().clone()))
}

/// A totally ordered source position. PostgreSQL maps its LSN onto it one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl std::fmt::Display for Position {
    /// 16 hex digits, so positions sort as text the way they sort as numbers (file names).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl Position {
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Position)
    }
}

/// What a connector's change capture saw when asked for the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureEvent {
    /// A transaction committed. Once the buffered changes up to it are durable, `end` may be
    /// acknowledged.
    Committed {
        end: Position,
        /// When the transaction committed at the source, µs since the Unix epoch.
        commit_time_micros: i64,
    },
    /// No transaction is open and the server has sent everything up to `wal_end`: once the
    /// buffers are durable, `wal_end` may be acknowledged (an idle task still advances).
    Idle { wal_end: Position },
    /// The open transaction has buffered two parts' worth of rows for a table: write its
    /// committed rows (`take`) and then a part (`take_part`),
    /// so memory stays bounded whatever the transaction's size.
    Large { table: usize },
    /// The set of tables the task should capture changed at the source (a captured table was
    /// renamed or dropped, or a table the selection matches was created or renamed into it).
    /// Comes after the `Committed` of the statement: once everything up to it is durable, the
    /// task re-discovers its tables (and loads those that joined) before it streams on.
    TablesChanged,
}

/// Changes of one table ready to be written.
#[derive(Debug)]
pub struct TableChanges {
    pub table: usize,
    pub schema: TableSchema,
    pub batch: RecordBatch,
    /// Commit positions of the first and last transaction in the batch.
    pub first: Position,
    pub last: Position,
    /// Commit time of the last transaction, µs since the Unix epoch.
    pub commit_time_micros: i64,
    /// For a part of a transaction still open: its number (1, 2, …). Parts are cut at fixed
    /// row counts, so a transaction re-sent after a crash yields the same parts again.
    pub part: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, TableId};

    #[test]
    fn layout_and_positions() {
        let t = TableSchema {
            id: TableId::new("s", "t"),
            columns: vec![Column {
                name: "id".into(),
                source_type: "integer".into(),
                field: Field::new("id", DataType::Int32, false),
                distinct_values: None,
            }],
            primary_key: vec!["id".into()],
        };
        let s = change_schema(&t);
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                OP_COLUMN,
                COMMIT_TS_COLUMN,
                POSITION_COLUMN,
                TXID_COLUMN,
                "id"
            ]
        );
        assert!(s.field(4).is_nullable());
        let p = Position(0x16_B374_D848);
        assert_eq!(p.to_string(), "00000016B374D848");
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        assert_eq!(Position::parse("16/B374D848"), None);
    }
}
