//! Dates and timestamps outside years 1–9999 under the portable forms (`target.types =
//! "portable"`, issue 14).
//!
//! PostgreSQL's dates reach year 5874897 and its timestamps 294276, both back to 4713 BC; Arrow's
//! Date32 and Timestamp(µs) hold them, and so do Parquet and Iceberg, but several engines users
//! query inlet's output with do not: chDB refuses the file ("out of range"), pandas raises
//! "year 5874897 is out of range" (Python's `datetime` ends in 9999), Tableau Hyper "Date value
//! out of bounds" (measured by tests/reader_matrix.rs). Years 1–9999 are what every one of them
//! reads (SQL's and Python's range), so under the portable forms a value outside them is one the
//! output cannot represent for every reader: it follows the column's value policy, as ±infinity
//! does. `null` writes NULL; `fail` stops the task naming the table, column, value and row;
//! `text` never meets such a value here, because the connector already wrote the column as text.
//! Under `target.types = "exact"` the values are written as they are.
//!
//! The check runs where a batch is handed to a sink, so both sinks and both sources get it.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, ListArray, PrimitiveArray, RecordBatch};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{ArrowError, DataType, TimeUnit};

use crate::{column_key, TableSchema, Unrepresentable, ValuePolicy};

/// Days from 1970-01-01 to 0001-01-01 and to 9999-12-31.
const FIRST_DAY: i32 = -719_162;
const LAST_DAY: i32 = 2_932_896;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 0001-01-01 00:00:00 and 9999-12-31 23:59:59.999999 in microseconds since the epoch (UTC).
const FIRST_MICRO: i64 = FIRST_DAY as i64 * MICROS_PER_DAY;
const LAST_MICRO: i64 = (LAST_DAY as i64 + 1) * MICROS_PER_DAY - 1;

/// A value outside years 1–9999 in a column whose policy is not `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarValue {
    pub column: String,
    /// The value as PostgreSQL writes it: `5874897-12-31`, `0044-03-15 BC`,
    /// `10000-01-01 00:00:00`.
    pub value: String,
    /// The row's key (`id = 2`), when the table has one and the batch holds it.
    pub key: Option<String>,
}

impl FarValue {
    /// The message for the task's error: table, column, value, row, and the settings to change.
    pub fn message(&self, table: &TableSchema) -> String {
        let row = self
            .key
            .as_ref()
            .map(|k| format!(" (the row with {k})"))
            .unwrap_or_default();
        format!(
            "{} column {}: '{}'{row} is outside years 1–9999, which chDB, pandas and Tableau \
             Hyper cannot read; set [values.columns] \"{}\" = \"null\" (or \"text\") in the task \
             file to write such values as NULL (or the column as text), or target.types = \
             \"exact\" to write them as they are",
            table.id,
            self.column,
            self.value,
            column_key(&table.id, &self.column)
        )
    }
}

/// Why a batch could not be made portable.
#[derive(Debug)]
pub enum YearsError {
    Far(FarValue),
    Arrow(ArrowError),
}

impl From<ArrowError> for YearsError {
    fn from(e: ArrowError) -> Self {
        Self::Arrow(e)
    }
}

/// `batch` (rows of `table`; a change batch's extra columns are left alone) with every date
/// and timestamp of the table's columns inside years 1–9999: a value outside becomes NULL where
/// the column's policy is `null`, and is an error otherwise. The batch itself when nothing is
/// outside.
pub fn within_years(
    table: &TableSchema,
    policy: &ValuePolicy,
    batch: &RecordBatch,
) -> Result<RecordBatch, YearsError> {
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if !has_dates(field.data_type()) || table.column(field.name()).is_none() {
            continue;
        }
        let array = batch.column(i);
        let Some(first) = first_far(array) else {
            continue;
        };
        match policy.for_column(&table.id, field.name()) {
            Unrepresentable::Null => {
                let cols = columns.get_or_insert_with(|| batch.columns().to_vec());
                cols[i] = null_far(array)?;
            }
            Unrepresentable::Fail | Unrepresentable::Text => {
                return Err(YearsError::Far(FarValue {
                    column: field.name().clone(),
                    value: first.1,
                    key: row_key(table, batch, first.0),
                }))
            }
        }
    }
    match columns {
        None => Ok(batch.clone()),
        Some(cols) => Ok(RecordBatch::try_new(batch.schema(), cols)?),
    }
}

fn has_dates(dt: &DataType) -> bool {
    match dt {
        DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _) => true,
        DataType::List(item) => has_dates(item.data_type()),
        _ => false,
    }
}

/// The row and text of the first value outside years 1–9999.
fn first_far(array: &ArrayRef) -> Option<(usize, String)> {
    match array.data_type() {
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && !(FIRST_DAY..=LAST_DAY).contains(&a.value(i)))
                .map(|i| (i, date_text(a.value(i))))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && !(FIRST_MICRO..=LAST_MICRO).contains(&a.value(i)))
                .map(|i| (i, timestamp_text(a.value(i))))
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let (_, text) = first_far(list.values())?;
            // The row holding the first far element.
            let row = (0..list.len())
                .find(|&r| list.is_valid(r) && first_far(&list.value(r)).is_some())?;
            Some((row, text))
        }
        _ => None,
    }
}

/// `array` with every value outside years 1–9999 set to NULL (list elements one by one).
fn null_far(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    fn keep(valid: Option<&NullBuffer>, len: usize, inside: impl Fn(usize) -> bool) -> NullBuffer {
        let bits =
            BooleanBuffer::collect_bool(len, |i| valid.is_none_or(|n| n.is_valid(i)) && inside(i));
        NullBuffer::new(bits)
    }
    match array.data_type() {
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            let nulls = keep(a.nulls(), a.len(), |i| {
                (FIRST_DAY..=LAST_DAY).contains(&a.value(i))
            });
            Ok(Arc::new(PrimitiveArray::<Date32Type>::try_new(
                a.values().clone(),
                Some(nulls),
            )?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            let nulls = keep(a.nulls(), a.len(), |i| {
                (FIRST_MICRO..=LAST_MICRO).contains(&a.value(i))
            });
            Ok(Arc::new(
                PrimitiveArray::<TimestampMicrosecondType>::try_new(
                    a.values().clone(),
                    Some(nulls),
                )?
                .with_timezone_opt(tz.clone()),
            ))
        }
        DataType::List(item) => {
            let list = array.as_list::<i32>();
            Ok(Arc::new(ListArray::try_new(
                item.clone(),
                list.offsets().clone(),
                null_far(list.values())?,
                list.nulls().cloned(),
            )?))
        }
        _ => Ok(array.clone()),
    }
}

/// `key = value` of the row's primary-key columns, when the batch holds them as integers or
/// text (what a message can show without a formatter for every type).
fn row_key(table: &TableSchema, batch: &RecordBatch, row: usize) -> Option<String> {
    if table.primary_key.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for k in &table.primary_key {
        let a = batch.column_by_name(k)?;
        if a.is_null(row) {
            return None;
        }
        let v = match a.data_type() {
            DataType::Int16 => a
                .as_primitive::<arrow_array::types::Int16Type>()
                .value(row)
                .to_string(),
            DataType::Int32 => a
                .as_primitive::<arrow_array::types::Int32Type>()
                .value(row)
                .to_string(),
            DataType::Int64 => a
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(row)
                .to_string(),
            DataType::Utf8 => format!("'{}'", a.as_string::<i32>().value(row)),
            _ => return None,
        };
        parts.push(format!("{k} = {v}"));
    }
    Some(parts.join(", "))
}

/// Proleptic Gregorian (year, month, day) of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), years astronomical (0 = 1 BC).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both in range by construction: day 1..=31, month 1..=12.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// PostgreSQL's text of a date: `5874897-12-31`, `0044-03-15 BC`.
fn date_text(days: i32) -> String {
    let (y, m, d) = civil(i64::from(days));
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// PostgreSQL's text of a timestamp in UTC, fraction included when there is one.
fn timestamp_text(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil(days);
    let secs = in_day / 1_000_000;
    let frac = in_day % 1_000_000;
    let mut time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        time.push_str(format!(".{frac:06}").trim_end_matches('0'));
    }
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} {time} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02} {time}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, TableId};
    use arrow_array::builder::{Date32Builder, ListBuilder};
    use arrow_array::{Date32Array, Int32Array, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema};
    use std::collections::BTreeMap;

    fn table(columns: &[(&str, DataType)]) -> TableSchema {
        TableSchema {
            id: TableId::new("public", "far"),
            columns: columns
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    source_type: String::new(),
                    field: Field::new(*n, t.clone(), true),
                    distinct_values: None,
                })
                .collect(),
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn the_bounds_are_years_1_and_9999() {
        assert_eq!(date_text(FIRST_DAY), "0001-01-01");
        assert_eq!(date_text(LAST_DAY), "9999-12-31");
        assert_eq!(date_text(FIRST_DAY - 1), "0001-12-31 BC");
        assert_eq!(date_text(LAST_DAY + 1), "10000-01-01");
        assert_eq!(date_text(2_145_042_905), "5874897-12-31");
        assert_eq!(timestamp_text(FIRST_MICRO), "0001-01-01 00:00:00");
        assert_eq!(timestamp_text(LAST_MICRO), "9999-12-31 23:59:59.999999");
        assert_eq!(
            timestamp_text(FIRST_MICRO - 500_000),
            "0001-12-31 23:59:59.5 BC"
        );
    }

    #[test]
    fn far_values_follow_the_columns_policy() {
        let t = table(&[
            ("id", DataType::Int32),
            ("d", DataType::Date32),
            (
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
        ]);
        let schema = Arc::new(Schema::new(
            t.columns
                .iter()
                .map(|c| c.field.clone())
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(Date32Array::from(vec![
                    Some(LAST_DAY),
                    Some(2_932_897),
                    None,
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(FIRST_MICRO),
                        Some(0),
                        Some(FIRST_MICRO - 1),
                    ])
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();

        let fail = ValuePolicy::from(Unrepresentable::Fail);
        let Err(YearsError::Far(far)) = within_years(&t, &fail, &batch) else {
            panic!("a far date under fail is an error")
        };
        assert_eq!(
            far,
            FarValue {
                column: "d".into(),
                value: "10000-01-01".into(),
                key: Some("id = 2".into())
            }
        );
        assert!(far.message(&t).starts_with(
            "public.far column d: '10000-01-01' (the row with id = 2) is outside years 1–9999"
        ));

        let columns = BTreeMap::from([
            ("public.far.d".to_string(), Unrepresentable::Null),
            ("public.far.ts".to_string(), Unrepresentable::Null),
        ]);
        let null = ValuePolicy::new(Unrepresentable::Fail, columns);
        let got = within_years(&t, &null, &batch).unwrap();
        let d: Vec<Option<i32>> = got.column(1).as_primitive::<Date32Type>().iter().collect();
        assert_eq!(d, vec![Some(LAST_DAY), None, None]);
        let ts = got.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            vec![Some(FIRST_MICRO), Some(0), None]
        );
        assert_eq!(got.schema(), batch.schema());

        // Inside the years: the batch as it is, whatever the policy.
        let inside = batch.slice(0, 1);
        assert_eq!(within_years(&t, &fail, &inside).unwrap(), inside);
    }

    #[test]
    fn list_elements_are_nulled_one_by_one() {
        let t = table(&[
            ("id", DataType::Int32),
            ("ds", DataType::new_list(DataType::Date32, true)),
        ]);
        let mut b = ListBuilder::new(Date32Builder::new());
        b.values().append_value(0);
        b.values().append_value(LAST_DAY + 1);
        b.append(true);
        b.append(false);
        let ds: ArrayRef = Arc::new(b.finish());
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("ds", ds.data_type().clone(), true),
        ]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![7, 8])), ds]).unwrap();
        let Err(YearsError::Far(far)) =
            within_years(&t, &ValuePolicy::from(Unrepresentable::Fail), &batch)
        else {
            panic!("a far element under fail is an error")
        };
        assert_eq!(
            (far.value.as_str(), far.key.as_deref()),
            ("10000-01-01", Some("id = 7"))
        );
        let got = within_years(&t, &ValuePolicy::from(Unrepresentable::Null), &batch).unwrap();
        let list = got.column(1).as_list::<i32>();
        assert!(list.is_null(1));
        let first = list.value(0);
        let first: Vec<Option<i32>> = first.as_primitive::<Date32Type>().iter().collect();
        assert_eq!(first, vec![Some(0), None]);
    }
}
