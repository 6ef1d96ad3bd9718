//! The words every part of inlet shares.
//!
//! A connector (PostgreSQL, MySQL) turns a source table into a [`TableSchema`] and a stream of
//! Arrow `RecordBatch`es; a sink (Parquet, Iceberg) writes those batches, implementing the
//! [`sink`] traits the daemon drives. Neither knows the other: both speak only the types defined
//! here. Each column carries its Arrow type *and* the source's own type name, so a sink can
//! record where a value came from (field metadata [`SOURCE_TYPE_KEY`]).

mod causes;
mod change;
mod check;
mod checkpoint;
pub mod lease;
mod policy;
mod portable;
mod selection;
pub mod sink;
pub mod snapshot;
mod table;
mod years;

pub use causes::{join_causes, with_causes};
pub use change::{
    change_schema, CaptureEvent, Op, Position, TableChanges, CHANGE_META_COLUMNS, COMMIT_TS_COLUMN,
    OP_COLUMN, POSITION_COLUMN, TXID_COLUMN,
};
pub use check::{CheckStatus, Prerequisite};
pub use checkpoint::{
    merge_tables, Checkpoint, ColumnRecord, MysqlResume, PostgresResume, SlotCreator, SourceResume,
    StorageRecord, TableState, TableStates, CHECKPOINT_VERSION,
};
pub use policy::{column_key, SchemaChanges, Unrepresentable, ValuePolicy};
pub use portable::{
    portable_array, portable_batch, portable_field, portable_schema, portable_table, portable_type,
    TypeForms,
};
pub use selection::{
    check_reserved_columns, ExclusionError, PatternError, ReservedColumnError, TableSelection,
    TableSelectionConfig,
};
pub use table::{Column, TableId, TableSchema, JSON_EXTENSION, SOURCE_TYPE_KEY};
pub use years::{within_years, FarValue, YearsError};
