//! The words every part of inlet shares.
//!
//! A connector (PostgreSQL, MySQL) implements the [`source`] traits: it discovers the tables as
//! [`TableSchema`]s, gives consistent snapshots cut into chunks for the load pool
//! ([`snapshot`]), and a change capture of whole transactions that resumes from the task
//! [`Checkpoint`] by its own rules. A sink (Parquet, Iceberg) implements the [`sink`] traits.
//! The task engine in the `inlet` binary drives both and knows neither: they speak only the
//! types defined here. Each column carries its Arrow type *and* the source's own type name, so a
//! sink can record where a value came from (field metadata [`SOURCE_TYPE_KEY`]).
//!
//! ```text
//! Source ─ discover, begin ─> snapshot::LoadSource ─ ChunkReader ─> sink::LoadTable
//!        └─ capture ─> source::Capture ─ TableChanges ─> sink::ChangeTable
//!                         └─ fill_checkpoint ─> Checkpoint ─> source::CheckpointStore
//! ```

mod causes;
mod change;
mod check;
mod checkpoint;
pub mod held_keys;
pub mod lease;
mod policy;
mod portable;
mod selection;
pub mod sink;
pub mod snapshot;
pub mod source;
mod table;
pub mod validation;
mod years;

pub use causes::{join_causes, with_causes};
pub use change::{
    change_schema, CaptureEvent, Op, Position, TableChanges, CHANGE_META_COLUMNS, COMMIT_TS_COLUMN,
    OP_COLUMN, POSITION_COLUMN, TXID_COLUMN,
};
pub use check::{AtStart, CheckStatus, Prerequisite};
pub use checkpoint::{
    forget_keys_loaded_before, loaded_at, merge_tables, record_replaced, replaced_after_load,
    request_reload, Checkpoint, ColumnRecord, MysqlResume, PostgresResume, SlotCreator,
    SourceResume, StorageRecord, TableState, TableStates, CHECKPOINT_VERSION,
};
pub use policy::{column_key, SchemaChanges, Unrepresentable, ValuePolicy};
pub use portable::{
    portable_array, portable_batch, portable_field, portable_schema, portable_table, portable_type,
    time_text, TypeForms,
};
pub use selection::{
    check_reserved_columns, ExclusionError, PatternError, ReservedColumnError, TableSelection,
    TableSelectionConfig,
};
pub use table::{Column, TableId, TableSchema, JSON_EXTENSION, SOURCE_TYPE_KEY};
pub use years::{within_years, FarValue, YearsError};
