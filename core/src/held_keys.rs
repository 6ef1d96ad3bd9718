//! Key ranges a resumed initial load read in a later snapshot than the stream's start, and the
//! filter that keeps the stream from applying their older changes twice.
//!
//! An initial load of a `full-load-and-cdc` task that is interrupted goes on in a new snapshot:
//! the chunks the killed run completed stay, read as of the stream's start, and the rest is read
//! now. A row's key decides its chunk in every snapshot (chunks are key ranges), so each key is
//! held as of exactly one snapshot. The stream starts where the oldest chunks were read and
//! drops, for a key of a later chunk, every change that chunk already holds (at or below the
//! position its snapshot holds every transaction up to). That is the watermark reconciliation of
//! Netflix's DBLog, with one watermark per run instead of one per chunk.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrowPrimitiveType, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::change::{OP_COLUMN, POSITION_COLUMN};
use crate::{Op, Position, TableChanges};

/// A range of a table's first key column, an integer: `start <= key < end`, an open end
/// unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInterval {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}

impl KeyInterval {
    fn holds(&self, key: i128) -> bool {
        self.start.is_none_or(|s| key >= i128::from(s))
            && self.end.is_none_or(|e| key < i128::from(e))
    }
}

/// A key range loaded in a snapshot that holds every transaction up to `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysLoadedAt {
    pub keys: KeyInterval,
    #[serde(with = "crate::checkpoint::hex")]
    pub at: Position,
}

/// Why the stream cannot apply a batch: a TRUNCATE its table's later chunks already hold would
/// remove their rows.
#[derive(Debug)]
pub struct HeldTruncate {
    pub at: Position,
}

/// `changes` without the rows one of `held` already holds: a row whose key is in a range of
/// `held` and whose position is at or below that range's `at`. None when no row is left.
/// A TRUNCATE at or below a range's `at` is an error: applied, it would remove the rows that
/// range loaded after it; dropped, the older chunks would keep rows it removed.
pub fn drop_held_rows(
    changes: TableChanges,
    held: &[KeysLoadedAt],
) -> Result<Option<TableChanges>, HeldTruncate> {
    let Some(newest) = held.iter().map(|h| h.at).max() else {
        return Ok(Some(changes));
    };
    if changes.first > newest {
        return Ok(Some(changes));
    }
    let batch = &changes.batch;
    let positions = column::<Int64Array>(batch, POSITION_COLUMN);
    let ops = column::<StringArray>(batch, OP_COLUMN);
    let (Some(positions), Some(ops)) = (positions, ops) else {
        return Ok(Some(changes));
    };
    let mut keep = Vec::with_capacity(batch.num_rows());
    // One key column per table (the first key column), so one cast per distinct column.
    let mut keys: Vec<(String, Option<Vec<Option<i128>>>)> = Vec::new();
    for row in 0..batch.num_rows() {
        let at = Position(positions.value(row) as u64);
        let mut kept = true;
        // A part of a transaction still open carries, at some sources, where the transaction
        // starts rather than its commit (MySQL): a snapshot at that very position does not hold
        // it. At the others (PostgreSQL) a commit never sits at a snapshot's `at`.
        let held_by = |h: &&KeysLoadedAt| match changes.part {
            Some(_) => at < h.at,
            None => at <= h.at,
        };
        for h in held.iter().filter(held_by) {
            if ops.value(row) == Op::Truncate.as_str() {
                return Err(HeldTruncate { at });
            }
            let index = match keys.iter().position(|(c, _)| *c == h.keys.column) {
                Some(i) => i,
                None => {
                    keys.push((h.keys.column.clone(), key_values(batch, &h.keys.column)));
                    keys.len() - 1
                }
            };
            let key = keys[index]
                .1
                .as_ref()
                .and_then(|k| k.get(row).copied().flatten());
            let Some(key) = key else {
                continue;
            };
            if h.keys.holds(key) {
                kept = false;
                break;
            }
        }
        keep.push(kept);
    }
    if keep.iter().all(|k| *k) {
        return Ok(Some(changes));
    }
    if !keep.iter().any(|k| *k) {
        return Ok(None);
    }
    let mask = BooleanArray::from(keep);
    // Same schema, fewer rows: the filter cannot fail on a batch and a mask of its length.
    let Ok(batch) = arrow_select::filter::filter_record_batch(batch, &mask) else {
        return Ok(Some(changes));
    };
    // Rows stay in stream order, so the first and last rows carry the bounds.
    let positions = column::<Int64Array>(&batch, POSITION_COLUMN);
    let bound = |row: usize| positions.as_ref().map(|p| Position(p.value(row) as u64));
    let first = bound(0).unwrap_or(changes.first);
    let last = bound(batch.num_rows() - 1).unwrap_or(changes.last);
    Ok(Some(TableChanges {
        batch,
        first,
        last,
        ..changes
    }))
}

fn column<T: Array + Clone + 'static>(batch: &RecordBatch, name: &str) -> Option<T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
}

/// The key column's integers, by row (None for a column of another type: then no row of the
/// batch is taken for held, and the stream applies it).
fn key_values(batch: &RecordBatch, name: &str) -> Option<Vec<Option<i128>>> {
    fn all<T: ArrowPrimitiveType>(c: &dyn Array) -> Vec<Option<i128>>
    where
        T::Native: Into<i128>,
    {
        c.as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect()
    }
    let c = batch.column_by_name(name)?.as_ref();
    Some(match c.data_type() {
        DataType::Int8 => all::<Int8Type>(c),
        DataType::Int16 => all::<Int16Type>(c),
        DataType::Int32 => all::<Int32Type>(c),
        DataType::Int64 => all::<Int64Type>(c),
        DataType::UInt8 => all::<UInt8Type>(c),
        DataType::UInt16 => all::<UInt16Type>(c),
        DataType::UInt32 => all::<UInt32Type>(c),
        DataType::UInt64 => all::<UInt64Type>(c),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{change_schema, Column, TableId, TableSchema};
    use arrow_array::{ArrayRef, Int32Array, TimestampMicrosecondArray};
    use arrow_schema::Field;
    use std::sync::Arc;

    fn changes(rows: &[(&str, i64, i32)]) -> TableChanges {
        let schema = TableSchema {
            id: TableId::new("s", "t"),
            columns: vec![Column {
                name: "id".into(),
                source_type: "integer".into(),
                field: Field::new("id", DataType::Int32, false),
                distinct_values: None,
            }],
            primary_key: vec!["id".into()],
        };
        let arrow = change_schema(&schema);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![0; rows.len()]).with_timezone("UTC")),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![1; rows.len()])),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ];
        let batch = RecordBatch::try_new(arrow, columns).unwrap();
        TableChanges {
            table: 0,
            first: Position(rows[0].1 as u64),
            last: Position(rows[rows.len() - 1].1 as u64),
            schema,
            batch,
            commit_time_micros: 0,
            part: None,
        }
    }

    fn loaded(start: Option<i64>, end: Option<i64>, at: u64) -> KeysLoadedAt {
        KeysLoadedAt {
            keys: KeyInterval {
                column: "id".into(),
                start,
                end,
            },
            at: Position(at),
        }
    }

    fn rows(c: &TableChanges) -> Vec<(i64, i32)> {
        let p = column::<Int64Array>(&c.batch, POSITION_COLUMN).unwrap();
        let k = c
            .batch
            .column(4)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        (0..c.batch.num_rows())
            .map(|i| (p.value(i), k.value(i)))
            .collect()
    }

    #[test]
    fn drops_only_changes_a_later_chunk_holds() {
        // Keys 100.. were loaded at 50; below 100 at the stream's start.
        let held = [loaded(Some(100), None, 50)];
        let c = changes(&[
            ("I", 10, 5),
            ("U", 10, 150),
            ("D", 50, 100),
            ("U", 51, 100),
            ("I", 60, 99),
        ]);
        let out = drop_held_rows(c, &held).unwrap().unwrap();
        assert_eq!(rows(&out), vec![(10, 5), (51, 100), (60, 99)]);
        assert_eq!((out.first, out.last), (Position(10), Position(60)));
        let all_held = changes(&[("U", 20, 100), ("D", 30, 200)]);
        assert!(drop_held_rows(all_held, &held).unwrap().is_none());
        let later = changes(&[("U", 51, 100)]);
        assert_eq!(
            rows(&drop_held_rows(later, &held).unwrap().unwrap()),
            vec![(51, 100)]
        );
        // Bounded on both sides.
        let mid = [loaded(Some(10), Some(20), 50)];
        let c = changes(&[("I", 1, 9), ("I", 1, 10), ("I", 1, 19), ("I", 1, 20)]);
        assert_eq!(
            rows(&drop_held_rows(c, &mid).unwrap().unwrap()),
            vec![(1, 9), (1, 20)]
        );
    }

    #[test]
    fn a_part_at_the_snapshot_position_is_not_held() {
        // MySQL: a part of an open transaction carries where it starts; one starting exactly
        // where the snapshot was taken came after it.
        let held = [loaded(Some(100), None, 50)];
        let mut c = changes(&[("I", 49, 100), ("I", 50, 101)]);
        c.part = Some(1);
        assert_eq!(
            rows(&drop_held_rows(c, &held).unwrap().unwrap()),
            vec![(50, 101)]
        );
    }

    #[test]
    fn a_truncate_a_later_chunk_holds_is_refused() {
        let held = [loaded(Some(100), None, 50)];
        let c = changes(&[("T", 40, 0)]);
        assert_eq!(drop_held_rows(c, &held).unwrap_err().at, Position(40));
        let after = changes(&[("T", 51, 0)]);
        assert!(drop_held_rows(after, &held).unwrap().is_some());
    }

    #[test]
    fn serializes_as_the_checkpoint_stores_it() {
        let h = loaded(Some(-5), None, 255);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(
            json,
            r#"{"keys":{"column":"id","start":-5},"at":"00000000000000FF"}"#
        );
        assert_eq!(serde_json::from_str::<KeysLoadedAt>(&json).unwrap(), h);
    }
}
