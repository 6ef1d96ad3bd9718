//! Shared by the test files: change batches as rows of display strings, with their types.

#![allow(dead_code)]

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;

/// Every row of `batch` as display strings ("∅" for NULL), one per column.
pub fn rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("∅");
    // Without chrono-tz, arrow cannot display a "UTC" zone name: show UTC timestamps as
    // their wall time (they are UTC).
    let columns: Vec<arrow_array::ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                arrow_cast::cast(c, &DataType::Timestamp(*unit, None)).unwrap()
            }
            _ => c.clone(),
        })
        .collect();
    let formatters: Vec<ArrayFormatter<'_>> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect()
}

/// Rows without the four change columns' position/time/txid, keeping the op.
pub fn ops_and_values(batch: &RecordBatch) -> Vec<Vec<String>> {
    rows(batch)
        .into_iter()
        .map(|r| {
            let mut v = vec![r[0].clone()];
            v.extend(r[4..].iter().cloned());
            v
        })
        .collect()
}
