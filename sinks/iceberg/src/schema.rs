//! Table columns as Iceberg sees them: a source [`TableSchema`] becomes an Iceberg schema with
//! field ids (kept across schema changes, new ids for new columns), and batches are conformed to
//! the Arrow schema of the Parquet files, whose fields carry `PARQUET:field_id`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{ListType, NestedField, NestedFieldRef, PrimitiveType, Schema, Type};
use inlet_core::{TableSchema, SOURCE_TYPE_KEY};

use crate::IcebergError;

/// Field-metadata key by which Parquet readers map file columns to Iceberg field ids.
pub(crate) const FIELD_ID_KEY: &str = "PARQUET:field_id";

/// Columns added to tables written as an append-only change log (no key): what happened and
/// at which source position. Full-load rows leave them null.
pub const LOG_OP_COLUMN: &str = "_inlet_op";
pub const LOG_POSITION_COLUMN: &str = "_inlet_lsn";
pub const LOG_COMMIT_TS_COLUMN: &str = "_inlet_commit_ts";

/// Maps an Arrow type to Iceberg's, numbering nested fields from `next_id`.
fn iceberg_type(dt: &DataType, next_id: &mut i32) -> Result<Type, String> {
    let p = |t: PrimitiveType| Ok(Type::Primitive(t));
    match dt {
        DataType::Boolean => p(PrimitiveType::Boolean),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => p(PrimitiveType::Int),
        DataType::UInt8 | DataType::UInt16 => p(PrimitiveType::Int),
        DataType::Int64 | DataType::UInt32 => p(PrimitiveType::Long),
        DataType::Float16 | DataType::Float32 => p(PrimitiveType::Float),
        DataType::Float64 => p(PrimitiveType::Double),
        DataType::Decimal128(precision, scale) if *scale >= 0 => p(PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: *scale as u32,
        }),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => p(PrimitiveType::String),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => p(PrimitiveType::Binary),
        DataType::FixedSizeBinary(16) => p(PrimitiveType::Uuid),
        DataType::FixedSizeBinary(n) if *n > 0 => p(PrimitiveType::Fixed(*n as u64)),
        DataType::Date32 => p(PrimitiveType::Date),
        DataType::Time64(TimeUnit::Microsecond) => p(PrimitiveType::Time),
        DataType::Timestamp(TimeUnit::Microsecond, None) => p(PrimitiveType::Timestamp),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => p(PrimitiveType::Timestamptz),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => p(PrimitiveType::TimestampNs),
        DataType::Timestamp(TimeUnit::Nanosecond, Some(_)) => p(PrimitiveType::TimestamptzNs),
        DataType::List(item) | DataType::LargeList(item) => {
            let id = *next_id;
            *next_id += 1;
            let element = iceberg_type(item.data_type(), next_id)?;
            Ok(Type::List(ListType::new(Arc::new(
                NestedField::list_element(id, element, !item.is_nullable()),
            ))))
        }
        other => Err(format!("Arrow type {other} has no Iceberg equivalent")),
    }
}

/// Whether Iceberg allows changing a column from `old` to `new` in place (same field id).
fn widening_allowed(old: &Type, new: &Type) -> bool {
    use PrimitiveType as P;
    match (old, new) {
        (Type::Primitive(o), Type::Primitive(n)) => {
            o == n
                || matches!((o, n), (P::Int, P::Long) | (P::Float, P::Double))
                || matches!(
                    (o, n),
                    (P::Decimal { precision: op, scale: os }, P::Decimal { precision: np, scale: ns })
                        if os == ns && np >= op
                )
        }
        (Type::List(o), Type::List(n)) => {
            widening_allowed(&o.element_field.field_type, &n.element_field.field_type)
        }
        _ => false,
    }
}

/// Keeps the nested ids of `old` for an in-place change to `new`.
fn with_old_nested_ids(old: &Type, new: Type) -> Type {
    match (old, new) {
        (Type::List(o), Type::List(n)) => {
            let element = with_old_nested_ids(
                &o.element_field.field_type,
                (*n.element_field.field_type).clone(),
            );
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                o.element_field.id,
                element,
                o.element_field.required,
            ))))
        }
        (_, n) => n,
    }
}

/// How a table is laid out in Iceberg: its columns and which of them is the upsert key.
#[derive(Debug, Clone)]
pub(crate) struct TableLayout {
    pub(crate) source: TableSchema,
    /// Upsert key columns (primary key or configured); empty → append-only change log.
    pub(crate) key: Vec<String>,
}

impl TableLayout {
    pub(crate) fn is_log(&self) -> bool {
        self.key.is_empty()
    }

    /// The Iceberg schema for this layout. Columns present in `previous` keep their field ids
    /// (and stay optional if they were); changed types must be a widening Iceberg allows
    /// unless `replace` (a full load overwriting the table), where a column whose type changed
    /// incompatibly becomes a new column with a new id.
    pub(crate) fn iceberg_schema(
        &self,
        previous: Option<(&Schema, i32)>,
        replace: bool,
    ) -> Result<Schema, IcebergError> {
        let table = self.source.id.to_string();
        // A new table's ids are renumbered by TableMetadataBuilder::new (top-level columns
        // first); an existing table's new columns continue after its last column id.
        let mut next_id = previous.map(|(_, last)| last + 1).unwrap_or(1);
        let mut fields: Vec<NestedFieldRef> = Vec::new();
        let mut columns: Vec<(String, DataType, bool, Option<String>)> = self
            .source
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.data_type().clone(),
                    c.field.is_nullable(),
                    Some(c.source_type.clone()),
                )
            })
            .collect();
        if self.is_log() {
            for (name, dt) in [
                (LOG_OP_COLUMN, DataType::Utf8),
                (LOG_POSITION_COLUMN, DataType::Int64),
                (
                    LOG_COMMIT_TS_COLUMN,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ),
            ] {
                if self.source.column(name).is_some() {
                    return Err(IcebergError::schema(
                        &table,
                        format!(
                            "column {name} collides with the change-log column inlet adds to \
                             tables without a key; set key_columns for this table"
                        ),
                    ));
                }
                columns.push((name.to_string(), dt, true, None));
            }
        }
        for (name, dt, nullable, source_type) in columns {
            let mut ty = iceberg_type(&dt, &mut next_id).map_err(|m| {
                IcebergError::schema(
                    &table,
                    format!("column {name}: {m}; exclude the column or cast it in the source"),
                )
            })?;
            let old = previous.and_then(|(s, _)| s.field_by_name(&name));
            let (id, required) = match old {
                Some(old) if widening_allowed(&old.field_type, &ty) => {
                    ty = with_old_nested_ids(&old.field_type, ty);
                    (old.id, old.required && !nullable)
                }
                Some(old)
                    if !replace
                        && ty == Type::Primitive(PrimitiveType::String)
                        && matches!(
                            old.field_type.as_ref(),
                            Type::Primitive(PrimitiveType::Uuid | PrimitiveType::Time)
                        ) =>
                {
                    // A table written before text became the default form of uuid and time.
                    return Err(IcebergError::schema(
                        &table,
                        format!(
                            "column {name} is {} in the table, but this task writes it as text \
                             (target.types = \"portable\", the default); set target.types = \
                             \"exact\" to keep writing {}, or reload the table to change it",
                            old.field_type, old.field_type
                        ),
                    ));
                }
                Some(old) if !replace => {
                    return Err(IcebergError::schema(
                        &table,
                        format!(
                            "column {name} changed from {} to {}, which Iceberg cannot change \
                             in place (allowed: int→long, float→double, wider decimal \
                             precision); reload the table, or set the task's schema_changes \
                             policy to ignore",
                            old.field_type, ty
                        ),
                    ));
                }
                _ => {
                    let id = next_id;
                    next_id += 1;
                    // A column added to an existing table must be optional: older files
                    // lack it.
                    (id, !nullable && previous.is_none())
                }
            };
            let mut field = NestedField::new(id, &name, ty, required);
            if let Some(st) = source_type {
                field = field.with_doc(st);
            }
            fields.push(Arc::new(field));
        }
        let mut identifier = Vec::new();
        for k in &self.key {
            let f = fields.iter().find(|f| &f.name == k).ok_or_else(|| {
                IcebergError::schema(
                    &table,
                    format!("key column {k} is not among the table's columns"),
                )
            })?;
            identifier.push((f.id, f.required && f.field_type.is_primitive()));
        }
        // Identifier fields must be required primitives; a configured key over nullable
        // columns is still used for upserts, just not declared.
        let identifier_ids: Vec<i32> = if identifier.iter().all(|(_, ok)| *ok) {
            identifier.iter().map(|(id, _)| *id).collect()
        } else {
            Vec::new()
        };
        let schema_id = previous.map(|(s, _)| s.schema_id() + 1).unwrap_or(0);
        Schema::builder()
            .with_schema_id(schema_id)
            .with_fields(fields)
            .with_identifier_field_ids(identifier_ids)
            .build()
            .map_err(|e| IcebergError::metadata(&table, "cannot build the Iceberg schema", e))
    }
}

/// Whether two schemas have the same fields (ids, names, types, docs) and identifier fields.
pub(crate) fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.as_struct() == b.as_struct()
        && a.identifier_field_ids().collect::<Vec<_>>()
            == b.identifier_field_ids().collect::<Vec<_>>()
}

/// The Arrow type a Parquet file stores for an Iceberg type.
fn file_type(ty: &Type) -> DataType {
    use PrimitiveType as P;
    match ty {
        Type::Primitive(p) => match p {
            P::Boolean => DataType::Boolean,
            P::Int => DataType::Int32,
            P::Long => DataType::Int64,
            P::Float => DataType::Float32,
            P::Double => DataType::Float64,
            // Precision is at most 38 for Decimal128 sources (iceberg_type only maps those).
            P::Decimal { precision, scale } => {
                DataType::Decimal128((*precision).min(38) as u8, (*scale).min(38) as i8)
            }
            P::Date => DataType::Date32,
            P::Time => DataType::Time64(TimeUnit::Microsecond),
            P::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            P::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            P::TimestampNs => DataType::Timestamp(TimeUnit::Nanosecond, None),
            P::TimestamptzNs => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            P::String => DataType::Utf8,
            P::Uuid => DataType::FixedSizeBinary(16),
            P::Fixed(n) => DataType::FixedSizeBinary((*n).min(i32::MAX as u64) as i32),
            P::Binary => DataType::Binary,
        },
        Type::List(l) => DataType::List(Arc::new(file_field(&l.element_field, "element"))),
        // inlet never creates structs or maps (iceberg_type does not map them).
        Type::Struct(_) | Type::Map(_) => DataType::Null,
    }
}

fn file_field(f: &NestedField, name: &str) -> Field {
    Field::new(name, file_type(&f.field_type), !f.required).with_metadata(HashMap::from([(
        FIELD_ID_KEY.to_string(),
        f.id.to_string(),
    )]))
}

/// The Arrow schema of the Parquet data files of an Iceberg schema: field ids in metadata.
pub(crate) fn file_schema(schema: &Schema) -> SchemaRef {
    Arc::new(ArrowSchema::new(
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| file_field(f, &f.name))
            .collect::<Vec<_>>(),
    ))
}

/// `schema` with every top-level field nullable (change batches before op filtering).
pub(crate) fn relaxed(schema: &SchemaRef) -> SchemaRef {
    Arc::new(ArrowSchema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Casts `batch` (columns found by name) to `target`: types converted (int16→int32, list item
/// names), columns the batch lacks filled with nulls, columns `target` lacks dropped.
pub(crate) fn conform(
    table: &str,
    batch: &RecordBatch,
    target: &SchemaRef,
) -> Result<RecordBatch, IcebergError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.schema().column_with_name(field.name()) {
            Some((i, _)) => {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    column.clone()
                } else {
                    arrow_cast::cast(column, field.data_type()).map_err(|e| {
                        IcebergError::schema(
                            table,
                            format!(
                                "column {}: cannot convert {} to {}: {e}",
                                field.name(),
                                column.data_type(),
                                field.data_type()
                            ),
                        )
                    })?
                }
            }
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(IcebergError::schema(
                table,
                format!(
                    "column {} is required (NOT NULL) in the Iceberg table but the batch has \
                     {} nulls in it",
                    field.name(),
                    column.null_count()
                ),
            ));
        }
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| IcebergError::schema(table, format!("batch does not fit the table: {e}")))
}

/// The source type recorded for a column (for messages).
#[allow(dead_code)]
pub(crate) fn source_type(field: &Field) -> Option<&str> {
    field.metadata().get(SOURCE_TYPE_KEY).map(String::as_str)
}
