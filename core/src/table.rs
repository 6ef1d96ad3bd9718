//! Table identity and schema: what a source table is called, its columns with both their source
//! and their Arrow types, and its primary key.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Field-metadata key holding the column's type as the source database spells it
/// (`numeric(12,2)`, `timestamp with time zone`, `bigint unsigned`).
pub const SOURCE_TYPE_KEY: &str = "inlet.source_type";

/// Arrow's canonical extension name for JSON text, set on JSON columns so readers know the
/// string holds a JSON document.
pub const JSON_EXTENSION: &str = "arrow.json";

/// A source table: `schema.table` (PostgreSQL schema, or MySQL database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column as inlet writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// The type as the source names it, e.g. `character varying(20)`.
    pub source_type: String,
    /// The Arrow field written for this column: type, nullability and extension metadata.
    pub field: Field,
    /// Estimated distinct values in the table, from the source's statistics when it has them.
    /// Sinks use it to choose encodings (a dictionary only pays for few distinct values).
    pub distinct_values: Option<u64>,
}

impl Column {
    pub fn data_type(&self) -> &DataType {
        self.field.data_type()
    }
}

/// The columns of a table (in source order, excluded columns already removed) and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub id: TableId,
    pub columns: Vec<Column>,
    /// Primary-key column names in key order; empty when the table has none.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    /// The Arrow schema of the batches a source produces for this table. Each field carries
    /// [`SOURCE_TYPE_KEY`] in its metadata.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let mut md: HashMap<String, String> = c.field.metadata().clone();
                md.insert(SOURCE_TYPE_KEY.to_string(), c.source_type.clone());
                c.field.clone().with_metadata(md)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_schema_carries_source_types() {
        let t = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![Column {
                name: "a".into(),
                source_type: "integer".into(),
                field: Field::new("a", DataType::Int32, false),
                distinct_values: None,
            }],
            primary_key: vec!["a".into()],
        };
        let s = t.arrow_schema();
        assert_eq!(
            s.field(0)
                .metadata()
                .get(SOURCE_TYPE_KEY)
                .map(String::as_str),
            Some("integer")
        );
        assert_eq!(t.id.to_string(), "public.t");
    }
}
