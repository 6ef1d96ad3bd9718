//! The TIMESTAMP forms DMS offers: the unit of timestamp columns (`timestamp_unit`, DMS
//! `ParquetTimestampInMillisecond`) and the text form of the timestamp column DMS adds
//! (`timestamp_column`, DMS `TimestampColumnName`, "yyyy-MM-dd HH:mm:ss.SSSSSS").
//!
//! Sources decode every timestamp in microseconds; the conversion to milliseconds happens here,
//! just before a batch is written, so no other part of inlet knows about it.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, ListArray, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, TimeUnit};

/// `dt` with its microsecond timestamps (at any depth of lists) in milliseconds, or None when
/// it holds none.
pub(crate) fn millis_type(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            Some(DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
        }
        DataType::List(item) => millis_type(item.data_type())
            .map(|t| DataType::List(Arc::new(item.as_ref().clone().with_data_type(t)))),
        _ => None,
    }
}

/// `field` with its microsecond timestamps in milliseconds (metadata kept).
pub(crate) fn millis_field(field: &Field) -> Field {
    match millis_type(field.data_type()) {
        Some(t) => field.clone().with_data_type(t),
        None => field.clone(),
    }
}

/// `array` with its microsecond timestamps in milliseconds. A value with sub-millisecond
/// digits keeps the millisecond it falls in (floor, also before 1970: -1 µs is -1 ms, i.e.
/// 1969-12-31 23:59:59.999), so the written digits are the source's, cut after the third.
pub(crate) fn millis_array(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>();
            let millis: TimestampMillisecondArray = micros.unary(|v| v.div_euclid(1000));
            Ok(Arc::new(millis.with_timezone_opt(tz.clone())))
        }
        DataType::List(item) if millis_type(item.data_type()).is_some() => {
            let list = array.as_list::<i32>();
            let values = millis_array(list.values())?;
            Ok(Arc::new(ListArray::try_new(
                Arc::new(millis_field(item)),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        _ => Ok(Arc::clone(array)),
    }
}

/// DMS's text form of a timestamp: `yyyy-MM-dd HH:mm:ss.SSSSSS`, in UTC.
pub(crate) fn dms_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        // Only a time beyond year 262143 has no form; commit and load times are "now".
        .unwrap_or_default()
}

/// The timestamp column's values as DMS's text, one per value of `micros` (microseconds since
/// the epoch, UTC); nulls stay null.
pub(crate) fn dms_text_array(micros: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let DataType::Timestamp(TimeUnit::Microsecond, _) = micros.data_type() else {
        return Err(ArrowError::InvalidArgumentError(format!(
            "the commit time column is {}, not a microsecond timestamp",
            micros.data_type()
        )));
    };
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    Ok(Arc::new(
        micros
            .iter()
            .map(|v| v.map(dms_text))
            .collect::<StringArray>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::TimestampMicrosecondArray;

    #[test]
    fn millis_keep_the_millisecond_a_value_falls_in() {
        let a: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_999), Some(-1), None, Some(-1_000)])
                .with_timezone("UTC"),
        );
        let m = millis_array(&a).expect("convert");
        assert_eq!(
            m.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        let m = m.as_primitive::<arrow_array::types::TimestampMillisecondType>();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            [Some(1), Some(-1), None, Some(-1)]
        );
    }

    #[test]
    fn dms_text_has_six_fraction_digits() {
        assert_eq!(dms_text(0), "1970-01-01 00:00:00.000000");
        assert_eq!(
            dms_text(1_763_700_000_123_456),
            "2025-11-21 04:40:00.123456"
        );
    }
}
