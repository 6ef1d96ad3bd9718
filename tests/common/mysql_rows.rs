//! A MariaDB table and its target, row by row: the source's rows as the `mariadb` client prints
//! them, the Parquet files replayed to the rows they end at, and the comparison of the two, for
//! the tests whose workloads keep no version counter (the audit of `mysql_audit` does).

use std::path::Path;

use arrow_array::cast::AsArray;
use inlet_testkit::MariaDbServer;

use super::load_files;
use super::replay::{cell, file_name, read_file, Rows};

/// The columns of `schema.table`, in order.
pub fn columns(db: &MariaDbServer, schema: &str, table: &str) -> Vec<String> {
    db.admin(&format!(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}' AND \
         TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// The rows of `table` (schema-qualified) keyed by the first column, an integer; `NULL` reads
/// as None, every other value as the client prints it.
pub fn source_rows<C: AsRef<str>>(db: &MariaDbServer, table: &str, columns: &[C]) -> Rows {
    let select: Vec<&str> = columns.iter().map(AsRef::as_ref).collect();
    db.admin(&format!("SELECT {} FROM {table}", select.join(", ")))
        .lines()
        .map(|line| {
            let vals: Vec<Option<String>> = line
                .split('\t')
                .map(|v| (v != "NULL").then(|| v.to_string()))
                .collect();
            (vals[0].as_ref().unwrap().parse().unwrap(), vals)
        })
        .collect()
}

/// The rows a table folder ends at: the LOAD files, then each change file in name order
/// (`T` empties the table). A column a file lacks (added after it) reads NULL. Unlike
/// `replay::replay` it takes any values, as these workloads keep no version counter.
pub fn replay_to_end<C: AsRef<str>>(table_dir: &Path, columns: &[C]) -> Rows {
    let mut rows = Rows::new();
    let mut files = load_files(table_dir);
    files.sort_by_key(|p| (!file_name(p).starts_with("LOAD"), file_name(p)));
    for f in files {
        for b in read_file(&f) {
            let ops = b.column_by_name("Op").map(|o| o.as_string::<i32>().clone());
            for r in 0..b.num_rows() {
                let op = ops.as_ref().map_or("I", |o| o.value(r));
                if op == "T" {
                    rows.clear();
                    continue;
                }
                let vals: Vec<Option<String>> = columns
                    .iter()
                    .map(|c| {
                        b.column_by_name(c.as_ref())
                            .and_then(|a| cell(a.as_ref(), r))
                    })
                    .collect();
                let id: i64 = vals[0].as_ref().unwrap().parse().unwrap();
                if op == "D" {
                    rows.remove(&id);
                } else {
                    rows.insert(id, vals);
                }
            }
        }
    }
    rows
}

/// `got`, the rows of `what` as `reader` read them, equals `want`, the source's.
pub fn assert_rows_equal(what: &str, reader: &str, want: &Rows, got: &Rows) {
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, got.get(k)))
        .take(3)
        .collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        differ.is_empty() && extra.is_empty(),
        "{what} read by {reader}: {} rows in the target, {} in the source; {} not in the source \
         (first: {:?}); first source rows missing or different (id, source, target): {differ:?}",
        got.len(),
        want.len(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    );
}

/// Rows keyed by their first column, an integer, as `read_iceberg` returns them.
pub fn keyed(rows: Vec<Vec<Option<String>>>) -> Rows {
    rows.into_iter()
        .map(|r| (r[0].as_ref().unwrap().parse().unwrap(), r))
        .collect()
}

/// How many times the log says tables started loading beside the stream.
pub fn loads_beside(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("loading them beside the stream")
        .count()
}
