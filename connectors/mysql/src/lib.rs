//! MySQL and MariaDB source for inlet.
//!
//! - Discovery ([`discover`]) reads information_schema and plans every column once: its Arrow
//!   type (DESIGN.md's mapping: unsigned widens one size, `bigint unsigned` is decimal(20,0),
//!   `tinyint(1)` boolean, SET a list of labels, …) and how its values are decoded.
//! - The full load ([`ConsistentSnapshot`]) opens one `START TRANSACTION WITH CONSISTENT
//!   SNAPSHOT` per worker at a single binlog position (MariaDB's `binlog_snapshot_*`, or a brief
//!   global read lock), and reads tables in primary-key ranges with the binary protocol, each
//!   value appended straight to a typed Arrow builder.
//! - Change capture ([`BinlogCapture`]) registers as a replica (mysql_async's binlog stream),
//!   starts at the snapshot's position (or a checkpoint's file/offset or GTID set), and turns
//!   row events into change batches in [`inlet_core::change_schema`] layout, whole
//!   transactions at a time, with the same method set as the PostgreSQL connector's
//!   `ChangeCapture`. Positions are `(server epoch << 56) | (binlog file number << 32) | offset`.
//! - Resuming ([`plan_resume`]): at the checkpoint's file and offset on the server that wrote
//!   it, by its GTID set on another (a failover); [`missing_binlog`] tells what a refusal means.
//! - `inlet check` ([`prerequisites`]) verifies the server settings and privileges and says how
//!   to fix each.

mod binlog;
mod capture;
mod catalog;
mod charset;
mod check;
mod config;
mod ddl;
mod error;
mod json;
mod position;
mod resume;
mod rows;
mod snapshot;
mod task;
mod types;
mod validate;
mod values;

pub use binlog::{read_binlog_file, Flavor};
pub use capture::{events_of_file, BinlogCapture, CaptureOptions};
pub use catalog::{discover, MysqlTable};
pub use check::prerequisites;
pub use config::{MysqlConnector, MysqlSourceConfig, TlsMode};
pub use error::MysqlError;
/// mysql_common's binlog event type, as [`read_binlog_file`] returns it.
pub use mysql_common::binlog::events::Event as BinlogEvent;
pub use position::{
    binlog_position, file_sequence, position_epoch, BinlogPosition, MariaGtidState, MysqlGtidSet,
    StartFrom,
};
pub use resume::{missing_binlog, plan_resume, MissingBinlog, ResumePlan, ResumeRefusal};
pub use snapshot::{
    chunk_ranges, BatchLimits, ChunkStream, ConsistentSnapshot, KeyBound, KeyRange,
    MysqlChunkReader, MysqlLoadSource, SnapshotPoint, SnapshotReader,
};
pub use task::{MysqlCapture, MysqlTask};
pub use validate::{MysqlRanges, MysqlValidation};
