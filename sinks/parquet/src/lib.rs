//! DMS-compatible Parquet full-load files, written through object_store to a local folder or S3.
//!
//! Each worker streams Arrow batches through parquet's `AsyncArrowWriter` into an object_store
//! `BufWriter` (multipart upload), so a file is either complete or absent and is never held whole
//! in memory. Files are laid out as DMS does (`<prefix>/<schema>/<table>/LOAD00000001.parquet`),
//! and a re-run replaces a table's files instead of adding to them.
//!
//! [`ParquetTarget`] implements [`inlet_core::sink::Sink`] (module `sink`): a change batch is a
//! change file at once, and the task checkpoint is stored under the target's prefix.

mod changes;
mod config;
mod error;
mod late_files;
mod lease;
mod load;
mod object_file;
mod sink;
mod table_state;
mod target;
mod timestamps;

pub use changes::{ChangeFile, ChangeFileWritten, ChangeLogTable};
pub use config::{ParquetCompression, ParquetTargetConfig, TimestampColumnType, TimestampUnit};
pub use error::SinkError;
/// The checkpoint type is inlet-core's; still named here for the daemon's older imports.
pub use inlet_core::Checkpoint;
pub use load::{
    Abandoned, FullLoadTable, LoadFileWriter, LoadSummary, KIND_KEY, OP_COLUMN, TABLE_KEY,
};
pub use table_state::TableFiles;
pub use target::{ParquetTarget, ROW_GROUP_MAX_BYTES};

#[cfg(test)]
mod tests;
