//! The forms a sink writes a column in: exact (the Arrow type the source's type maps to) or
//! portable (a form every common reader takes).
//!
//! Two exact forms are refused or misread by engines users query inlet's output with (issue 14,
//! measured by tests/reader_matrix.rs):
//!
//! - `uuid` (Arrow `FixedSizeBinary(16)`, Parquet `UUID`, Iceberg `uuid`): DuckDB and polars read
//!   16 bytes, Tableau Hyper refuses the Iceberg type, Athena has no uuid in Iceberg tables.
//!   Portable: its 36-character text (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`), what AWS DMS writes.
//! - `time` (Arrow `Time64(µs)`, Parquet `TIME(MICROS)`, Iceberg `time`): Spark refuses the Parquet
//!   type ("Illegal Parquet type: INT64 (TIME(MICROS,false))") and the Iceberg one ("Spark does
//!   not support time fields"), Athena has no time in Iceberg tables. Portable: PostgreSQL's text
//!   of the value (`13:45:07.5`, `HH:MM:SS` with the fraction's trailing zeros dropped), which
//!   sorts as the times do and keeps PostgreSQL's `24:00:00` exact. A number of microseconds was
//!   the other candidate; text was chosen because a reader shows it as a time without knowing
//!   the unit, and it is what the `text` value policy writes for a time column already.
//!
//! The choice is by Arrow type: only `uuid` maps to `FixedSizeBinary(16)` and only time types to
//! `Time64(µs)` in inlet's connectors. Lists of either convert element by element.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Time64MicrosecondType;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Column, TableSchema};

/// Which forms a target writes (`target.types`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeForms {
    /// uuid and time as text: every engine of the reader matrix reads them.
    #[default]
    Portable,
    /// The exact types: Parquet/Iceberg `uuid` and `time`.
    Exact,
}

const EXTENSION_KEY: &str = "ARROW:extension:name";

/// The portable type of `dt`, or `None` when it is written as it is.
pub fn portable_type(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::FixedSizeBinary(16) | DataType::Time64(TimeUnit::Microsecond) => {
            Some(DataType::Utf8)
        }
        DataType::List(item) => portable_type(item.data_type())
            .map(|t| DataType::List(Arc::new(portable_field(item).with_data_type(t)))),
        _ => None,
    }
}

/// `field` in its portable form (the `arrow.uuid` extension dropped with the type).
pub fn portable_field(field: &Field) -> Field {
    match portable_type(field.data_type()) {
        None => field.clone(),
        Some(t) => {
            let mut md = field.metadata().clone();
            if md.get(EXTENSION_KEY).is_some_and(|e| e == "arrow.uuid") {
                md.remove(EXTENSION_KEY);
            }
            field.clone().with_data_type(t).with_metadata(md)
        }
    }
}

/// The table with every column in its portable form (the source type names are kept).
pub fn portable_table(table: &TableSchema) -> TableSchema {
    TableSchema {
        id: table.id.clone(),
        columns: table
            .columns
            .iter()
            .map(|c| Column {
                field: portable_field(&c.field),
                ..c.clone()
            })
            .collect(),
        primary_key: table.primary_key.clone(),
    }
}

/// `schema` with every field in its portable form.
pub fn portable_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| portable_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with every column in its portable form; the batch itself when none changes.
pub fn portable_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    if batch
        .schema()
        .fields()
        .iter()
        .all(|f| portable_type(f.data_type()).is_none())
    {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(portable_array)
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(portable_schema(&batch.schema()), columns)
}

/// `array` in its portable form.
pub fn portable_array(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::FixedSizeBinary(16) => {
            let a = array.as_fixed_size_binary();
            let mut out = StringBuilder::with_capacity(a.len(), a.len() * 36);
            for i in 0..a.len() {
                if a.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(uuid_text(a.value(i)));
                }
            }
            Ok(Arc::new(out.finish()))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let a = array.as_primitive::<Time64MicrosecondType>();
            let mut out = StringBuilder::with_capacity(a.len(), a.len() * 15);
            for i in 0..a.len() {
                if a.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(time_text(a.value(i)));
                }
            }
            Ok(Arc::new(out.finish()))
        }
        DataType::List(item) if portable_type(item.data_type()).is_some() => {
            let list = array.as_list::<i32>();
            let values = portable_array(list.values())?;
            let field = Arc::new(portable_field(item));
            Ok(Arc::new(ListArray::try_new(
                field,
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        _ => Ok(array.clone()),
    }
}

/// The 36-character text of a UUID's 16 bytes.
fn uuid_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// PostgreSQL's text of a time of day in microseconds (`24:00:00` included; MySQL's negative
/// and over-24-hour TIME values keep their sign and hours).
pub fn time_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (secs, frac) = (m / 1_000_000, m % 1_000_000);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = format!("{sign}{h:02}:{mi:02}:{s:02}");
    if frac != 0 {
        let f = format!("{frac:06}");
        text.push('.');
        text.push_str(f.trim_end_matches('0'));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{FixedSizeBinaryBuilder, Int32Builder, ListBuilder};
    use arrow_array::{StringArray, Time64MicrosecondArray};

    #[test]
    fn uuids_become_their_text_and_times_postgresqls() {
        let mut u = FixedSizeBinaryBuilder::new(16);
        u.append_value([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ])
        .unwrap();
        u.append_null();
        let got = portable_array(&(Arc::new(u.finish()) as ArrayRef)).unwrap();
        let got = got.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(got.value(0), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(got.is_null(1));

        let t = Time64MicrosecondArray::from(vec![
            Some(0),
            Some(49_507_123_456),
            Some(49_507_500_000),
            Some(86_400_000_000),
            Some(-3_020_399_000_000),
            None,
        ]);
        let got = portable_array(&(Arc::new(t) as ArrayRef)).unwrap();
        let got = got.as_any().downcast_ref::<StringArray>().unwrap();
        let texts: Vec<Option<&str>> = got.iter().collect();
        assert_eq!(
            texts,
            vec![
                Some("00:00:00"),
                Some("13:45:07.123456"),
                Some("13:45:07.5"),
                Some("24:00:00"),
                Some("-838:59:59"),
                None
            ]
        );
    }

    #[test]
    fn lists_convert_element_by_element_and_others_stay() {
        let item = Field::new("item", DataType::FixedSizeBinary(16), true)
            .with_metadata([(EXTENSION_KEY.to_string(), "arrow.uuid".to_string())].into());
        let mut b = ListBuilder::new(FixedSizeBinaryBuilder::new(16)).with_field(Arc::new(item));
        b.values().append_value([0u8; 16]).unwrap();
        b.values().append_null();
        b.append(true);
        b.append(false);
        let list: ArrayRef = Arc::new(b.finish());
        let got = portable_array(&list).unwrap();
        let want_item = Field::new("item", DataType::Utf8, true);
        assert_eq!(got.data_type(), &DataType::List(Arc::new(want_item)));
        assert_eq!(
            portable_type(list.data_type()),
            Some(got.data_type().clone())
        );
        let got = got.as_list::<i32>();
        assert!(got.is_null(1));
        let first = got.value(0);
        let first = first.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(first.value(0), "00000000-0000-0000-0000-000000000000");
        assert!(first.is_null(1));

        let ints: ArrayRef = Arc::new(ListBuilder::new(Int32Builder::new()).finish());
        assert_eq!(portable_type(ints.data_type()), None);
        assert_eq!(portable_type(&DataType::FixedSizeBinary(8)), None);
    }
}
