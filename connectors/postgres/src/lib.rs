//! PostgreSQL source for inlet.
//!
//! A full load exports one snapshot ([`ExportedSnapshot`]) that every worker connection imports
//! ([`SnapshotReader`]), so all tables are read as of the same instant. Each table is cut into
//! ctid-range chunks ([`plan_chunks`]; a resumable load: ranges of an integer first key column,
//! `key_chunks`) read in parallel with `COPY … TO STDOUT (FORMAT binary)`;
//! the binary tuples are decoded straight into typed Arrow builders (`copy`), following the
//! type plan made at discovery (`types`, [`discover`]).

mod capture;
mod catalog;
mod check;
mod config;
mod copy;
mod error;
mod key_chunks;
mod open_writes;
mod pgoutput;
mod replication;
mod slot;
mod slot_plan;
mod snapshot;
mod spool;
mod task;
mod text;
mod types;
mod validate;

pub use capture::ChangeCapture;
pub use catalog::{columns_with_unwritten_defaults, discover, SourceTable};
pub use check::{prerequisites, published_generated_columns};
pub use config::{PgConnector, PostgresSourceConfig, TlsMode};
pub use error::PgError;
pub use pgoutput::{
    decode_message, fuzz_text_value, MessageKind, PgoutputDecoder, PgoutputError, PgoutputMessage,
    RelationColumn, RelationMessage, TupleColumns, TupleData, TupleValue,
};
pub use replication::{
    CreatedSlot, Lsn, QueryRow, ReplicationConnection, ReplicationMessage, ReplicationStream,
    StreamHangUp, SystemInfo,
};
pub use slot::{
    current_wal_position, drop_slot, ensure_publication, publication_exists, publication_plan,
    slot_capacity, slot_state, tables_without_replica_identity, walsender_capacity,
    NoReplicaIdentity, PublicationPlan, SlotState,
};
pub use slot_plan::{
    parse_fork, plan_slot, publication_lost_reason, SlotPlan, SlotRecord, StartFacts,
};
pub use snapshot::{
    plan_chunks, BatchLimits, ChunkStream, ExportedSnapshot, PgChunkReader, PgLoadSource,
    SnapshotChunk, SnapshotReader,
};
pub use task::{PgCapture, PgSnapshot, PgTask};
pub use validate::{PgRanges, PgValidation};
