//! Partition transforms from the config (`day(ts)`, `bucket[16](id)`, `truncate[4](name)`,
//! a bare column for identity), parsed into Iceberg's transform names; the table's partition
//! spec built from them; and [`Partitioner`], which splits a batch into its partitions with
//! the iceberg crate's transforms (the same functions readers use to prune).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::RecordBatch;
use iceberg::arrow::{arrow_struct_to_literal, PartitionValueCalculator};
use iceberg::spec::{Literal, PartitionSpec, Schema, Struct, StructType, Transform};

use crate::IcebergError;

/// One partition field as configured: a transform applied to a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    pub column: String,
    /// Iceberg's transform name: `identity`, `year`, `month`, `day`, `hour`, `bucket[N]`,
    /// `truncate[W]`.
    pub transform: String,
}

impl PartitionField {
    /// Parses `name`, `transform(name)` or `transform[N](name)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some(open) = text.find('(') else {
            if text.is_empty() || text.contains([')', '[', ']']) {
                return Err("expected a column name or transform(column)".into());
            }
            return Ok(Self {
                column: text.to_string(),
                transform: "identity".into(),
            });
        };
        let Some(column) = text[open + 1..].strip_suffix(')') else {
            return Err("missing the closing ')'".into());
        };
        let transform = text[..open].trim();
        let column = column.trim();
        if column.is_empty() {
            return Err("the column name is empty".into());
        }
        let valid = match transform {
            "identity" | "year" | "month" | "day" | "hour" => true,
            t => {
                let arg = t
                    .strip_prefix("bucket[")
                    .or_else(|| t.strip_prefix("truncate["))
                    .and_then(|rest| rest.strip_suffix(']'));
                arg.and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0)
            }
        };
        if !valid {
            return Err(format!(
                "unknown transform {transform:?}; use identity, year, month, day, hour, \
                 bucket[N] or truncate[W]"
            ));
        }
        Ok(Self {
            column: column.to_string(),
            transform: transform.to_string(),
        })
    }
}

impl PartitionField {
    /// The partition field's name: the column for identity, else `<column>_<transform>` as
    /// Spark names them (`ts_day`, `id_bucket`, `name_trunc`).
    pub(crate) fn target_name(&self) -> String {
        let t = self.transform.as_str();
        if t == "identity" {
            self.column.clone()
        } else if t.starts_with("bucket") {
            format!("{}_bucket", self.column)
        } else if t.starts_with("truncate") {
            format!("{}_trunc", self.column)
        } else {
            format!("{}_{t}", self.column)
        }
    }
}

/// The partition spec of a new table from its configured fields (`key` names the setting in
/// errors). Empty fields give the unpartitioned spec.
pub(crate) fn build_spec(
    key: &str,
    fields: &[PartitionField],
    schema: &Schema,
) -> Result<PartitionSpec, IcebergError> {
    let bad = |message: String| IcebergError::Config {
        key: key.to_string(),
        message,
    };
    let mut builder = PartitionSpec::builder(schema.clone()).with_spec_id(0);
    for f in fields {
        let transform =
            Transform::from_str(&f.transform).map_err(|e| bad(format!("{}: {e}", f.transform)))?;
        let Some(column) = schema.field_by_name(&f.column) else {
            return Err(bad(format!(
                "{:?} is not a column of the table; name one of its columns",
                f.column
            )));
        };
        if transform.result_type(&column.field_type).is_err() {
            return Err(bad(format!(
                "{}({}) cannot be applied to a column of type {}; year/month/day/hour need a \
                 date or timestamp, truncate an int, long, decimal, string or binary",
                f.transform, f.column, column.field_type
            )));
        }
        builder = builder
            .add_partition_field(&f.column, f.target_name(), transform)
            .map_err(|e| bad(format!("{}({}): {e}", f.transform, f.column)))?;
    }
    builder
        .build()
        .map_err(|e| bad(format!("invalid partition spec: {e}")))
}

/// Splits batches (in the table's file schema, with field ids) by partition.
pub(crate) struct Partitioner {
    calculator: PartitionValueCalculator,
    partition_type: StructType,
    pub(crate) spec_id: i32,
}

impl Partitioner {
    /// `None` for an unpartitioned spec.
    pub(crate) fn new(
        table: &str,
        spec: &PartitionSpec,
        schema: &Schema,
    ) -> Result<Option<Arc<Self>>, IcebergError> {
        if spec.is_unpartitioned() {
            return Ok(None);
        }
        let err = |e: iceberg::Error| {
            IcebergError::metadata(
                table,
                "the partition spec does not fit the table's columns (was a partition source \
                 column dropped? reload the table)",
                e,
            )
        };
        let calculator = PartitionValueCalculator::try_new(spec, schema).map_err(err)?;
        let partition_type = spec.partition_type(schema).map_err(err)?;
        Ok(Some(Arc::new(Self {
            calculator,
            partition_type,
            spec_id: spec.spec_id(),
        })))
    }

    /// The partitions of a batch's rows: each partition's value and its row indices, in
    /// order of first appearance (rows keep their order within a partition).
    pub(crate) fn split(
        &self,
        table: &str,
        batch: &RecordBatch,
    ) -> Result<Vec<(Struct, Vec<u32>)>, IcebergError> {
        let err =
            |e: iceberg::Error| IcebergError::metadata(table, "cannot compute partition values", e);
        let values = self
            .calculator
            .calculate(&utc_offset_timestamps(batch).map_err(|e| {
                IcebergError::state(table, format!("cannot relabel a timestamp column: {e}"))
            })?)
            .map_err(err)?;
        let literals = arrow_struct_to_literal(&values, &self.partition_type).map_err(err)?;
        let mut groups: Vec<(Struct, Vec<u32>)> = Vec::new();
        let mut slots: HashMap<Struct, usize> = HashMap::new();
        for (row, literal) in literals.into_iter().enumerate() {
            let value = match literal {
                Some(Literal::Struct(s)) => s,
                _ => {
                    return Err(IcebergError::state(
                        table,
                        "a partition value is not a struct",
                    ))
                }
            };
            let slot = match slots.get(&value) {
                Some(slot) => *slot,
                None => {
                    slots.insert(value.clone(), groups.len());
                    groups.push((value, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[slot].1.push(row as u32);
        }
        Ok(groups)
    }
}

/// `batch` with every zoned timestamp column labelled `+00:00` instead of a zone name such as
/// `UTC`. The values are instants either way and Iceberg's `timestamptz` transforms are defined
/// in UTC; but arrow's `date_part` (behind `year` and `month`) must parse the zone, and without
/// the chrono-tz feature (a time-zone database the rest of inlet has no use for) it only
/// understands offsets. A relabel shares the buffers; nothing is copied.
fn utc_offset_timestamps(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    use arrow_schema::DataType;
    let zoned =
        |t: &DataType| matches!(t, DataType::Timestamp(_, Some(tz)) if tz.as_ref() != "+00:00");
    if !batch.schema().fields().iter().any(|f| zoned(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(_)) if zoned(field.data_type()) => {
                let relabelled = DataType::Timestamp(*unit, Some("+00:00".into()));
                let data = column
                    .to_data()
                    .into_builder()
                    .data_type(relabelled.clone())
                    .build()?;
                columns.push(arrow_array::make_array(data));
                fields.push(field.as_ref().clone().with_data_type(relabelled));
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    let schema = arrow_schema::Schema::new_with_metadata(fields, batch.schema().metadata().clone());
    RecordBatch::try_new_with_options(
        Arc::new(schema),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transforms() {
        assert_eq!(
            PartitionField::parse("bucket[16](id)").unwrap(),
            PartitionField {
                column: "id".into(),
                transform: "bucket[16]".into()
            }
        );
        assert_eq!(PartitionField::parse("ts").unwrap().transform, "identity");
        assert_eq!(PartitionField::parse("day( ts )").unwrap().column, "ts");
        assert!(PartitionField::parse("week(ts)").is_err());
        assert!(PartitionField::parse("bucket[0](id)").is_err());
        assert!(PartitionField::parse("day(ts").is_err());
    }
}
