//! Replaying what a CDC task wrote: the full-load files, then the change files in name order,
//! applied to a map keyed by id, with every impossible step (a duplicate insert, an update of
//! a missing row, a version skipped or repeated) failing the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::load_files;

/// A row as comparable text, keyed by id.
pub type Rows = BTreeMap<i64, Vec<Option<String>>>;

pub fn cell(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    use arrow_schema::DataType::*;
    Some(match a.data_type() {
        Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        Utf8 => a.as_string::<i32>().value(i).to_string(),
        Decimal128(_, s) => {
            let v = a
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .value(i);
            <arrow_array::types::Decimal128Type as arrow_array::types::DecimalType>::format_decimal(
                v, 38, *s,
            )
        }
        Boolean => a.as_boolean().value(i).to_string(),
        other => panic!("test tables use no {other}"),
    })
}

pub fn read_file(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// The full load, then every change file in name order. A column a file lacks (added or
/// dropped by a schema change) reads as NULL.
///
/// The full load, then every change file in name order (commit time, then position), replayed.
/// Panics on an insert of a row that exists, an update or delete of one that does not, or an
/// update whose `version` is not the previous one plus one: each would mean a change applied
/// twice or lost.
pub fn replay(table_dir: &Path, columns: &[&str]) -> Rows {
    let mut rows = Rows::new();
    for f in load_files(table_dir)
        .into_iter()
        .filter(|p| file_name(p).starts_with("LOAD"))
    {
        for b in read_file(&f) {
            for r in 0..b.num_rows() {
                let vals: Vec<Option<String>> = columns
                    .iter()
                    .map(|c| b.column_by_name(c).and_then(|a| cell(a.as_ref(), r)))
                    .collect();
                let id: i64 = vals[0].as_ref().unwrap().parse().unwrap();
                assert!(
                    rows.insert(id, vals).is_none(),
                    "id {id} twice in the full load"
                );
            }
        }
    }
    let mut changes: Vec<PathBuf> = load_files(table_dir)
        .into_iter()
        .filter(|p| !file_name(p).starts_with("LOAD"))
        .collect();
    changes.sort();
    for f in changes {
        for b in read_file(&f) {
            let ops = b
                .column_by_name("Op")
                .expect("Op column")
                .as_string::<i32>()
                .clone();
            for r in 0..b.num_rows() {
                let vals: Vec<Option<String>> = columns
                    .iter()
                    .map(|c| b.column_by_name(c).and_then(|a| cell(a.as_ref(), r)))
                    .collect();
                let file = file_name(&f);
                if ops.value(r) == "T" {
                    assert!(
                        vals.iter().all(Option::is_none),
                        "a truncate row carries no values ({file})"
                    );
                    rows.clear();
                    continue;
                }
                let id: i64 = vals[0].as_ref().unwrap().parse().unwrap();
                match ops.value(r) {
                    "I" => assert!(
                        rows.insert(id, vals).is_none(),
                        "insert of existing id {id} ({file})"
                    ),
                    "U" => {
                        let before = rows
                            .get(&id)
                            .unwrap_or_else(|| panic!("update of missing id {id} ({file})"));
                        let v = |row: &Vec<Option<String>>| -> i64 {
                            row[1].as_ref().unwrap().parse().unwrap()
                        };
                        assert_eq!(
                            v(&vals),
                            v(before) + 1,
                            "id {id}: update applied twice or lost ({file})"
                        );
                        rows.insert(id, vals);
                    }
                    "D" => assert!(
                        rows.remove(&id).is_some(),
                        "delete of missing id {id} ({file})"
                    ),
                    op => panic!("unknown op {op}"),
                }
            }
        }
    }
    rows
}

pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

pub async fn source_rows(client: &tokio_postgres::Client, table: &str, columns: &[&str]) -> Rows {
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let sql = format!("SELECT {} FROM {table}", select.join(", "));
    client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let vals: Vec<Option<String>> = (0..columns.len()).map(|i| r.get(i)).collect();
            (vals[0].as_ref().unwrap().parse().unwrap(), vals)
        })
        .collect()
}
