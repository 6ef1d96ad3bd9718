//! inlet's Iceberg sink: Apache Iceberg v2 tables, written by a full load and then kept
//! current by CDC upserts, each commit exactly once.
//!
//! # Design
//!
//! - **Layout.** One table per source table at `<warehouse>/<namespace>/<table>`, namespace =
//!   the source schema unless configured; both names as Athena accepts them
//!   ([`athena_name`]: lowercase, `[a-z0-9_]`) unless `names = "source"`. A table that exists
//!   under its source name (created before) keeps it. The schema has field ids, identifier fields = the
//!   primary key, and each column's source type as its doc. Data files are Parquet (zstd)
//!   carrying `PARQUET:field_id`, written through object_store (local folder or S3).
//! - **Catalog.** The folder catalog writes `metadata/vN.metadata.json` create-if-absent
//!   (`PutMode::Create`) and then `version-hint.text`: of two writers of version N only one
//!   wins, and a crash between the two writes is healed by probing for newer versions. A hint
//!   that cannot be read (another writer rewriting it in place) is passed over for a listing.
//! - **Glue catalog** (`catalog.kind = "glue"`, module `glue`): a Glue database per namespace and
//!   a Glue table with `table_type=ICEBERG`, `metadata_location`, `previous_metadata_location`
//!   (as Iceberg's GlueCatalog). A commit writes `metadata/NNNNN-<uuid>.metadata.json`, checks
//!   that Glue still names the expected previous file, and updates the table conditionally on
//!   the `VersionId` read with it. Requests are signed with object_store's SigV4 signer and
//!   credential chain, sent by object_store's HTTP client: no AWS SDK.
//! - **REST catalog** (`catalog.kind = "rest"`, module `rest`): the Iceberg REST spec over
//!   object_store's HTTP client, with a bearer token, OAuth2 client credentials or SigV4
//!   (secrets only from environment variables the config names). inlet still writes data
//!   files, manifests and manifest lists; a commit sends the metadata builder's changes plus
//!   requirements (table uuid, `main`'s snapshot id, schema/spec ids the changes assume), and
//!   the server writes the metadata file and swaps it: HTTP 409 is a commit conflict. The
//!   server's answer is the base of the next commit. Files go under the table's location.
//! - **Partitioning** from `partition` (identity, year/month/day/hour, `bucket[N]`,
//!   `truncate[W]`): the spec is set when the table is created; rows are split by the iceberg
//!   crate's transforms into one file per partition; a position-delete file carries the
//!   partition of its data file.
//! - **Maintenance** ([`UpsertTable::maintain`]): rewrite files with many deletes
//!   or small ones as one `replace` snapshot with the same `inlet.position`, expire
//!   snapshots, delete unreferenced files older than a grace period.
//! - **Errors** say whether a retry may succeed: [`IcebergError::is_transient`].
//! - **The daemon's view** (module `sink`): [`IcebergTarget`] implements
//!   [`inlet_core::sink::Sink`]. Its change table holds back a commit while part of a source
//!   transaction is open, and runs [`UpsertTable::maintain`] every `maintenance.interval_minutes`
//!   right after a commit; the task checkpoint is stored in the warehouse.
//! - **Snapshots.** The iceberg crate (0.10) (de)serializes metadata, manifests and manifest
//!   lists; it can only fast-append, so [`snapshot`] assembles row-delta and overwrite snapshots
//!   itself: new manifests for added data and position-delete files, the current snapshot's
//!   other manifests carried over (or dropped, for an overwrite / TRUNCATE), one new sequence
//!   number. Every snapshot's summary carries `inlet.position` and `inlet.task`.
//! - **Exactly once.** Files are written under fresh names before the metadata commit, so a
//!   crash before it leaves only unreferenced files, and the table still says the old position.
//!   On restart the table is reopened ([`IcebergTarget::upsert_table`]), its position read
//!   back ([`UpsertTable::committed_position`]) and the caller re-sends changes after it;
//!   `apply` also skips rows at or below it.
//! - **Other engines** may commit to the table (Spark `rewrite_data_files`, Trino `OPTIMIZE`,
//!   deletes, snapshot expiry). The position is `inlet.position` of the newest snapshot of
//!   this task (`inlet.task`), found by walking back from the current snapshot through the
//!   parents, so foreign snapshots after it do not change it; the table property
//!   `inlet.position.<task>`, committed with each snapshot, still says it after the task's
//!   snapshots were expired. Commits are optimistic: a commit refused because the table
//!   changed (a metadata version taken, the Glue location or version moved, REST 409) reloads
//!   the table; if only other engines committed since, the key index is rebuilt from the
//!   current snapshot's live data and delete files, the changes applied since the last commit
//!   are applied again, and the commit is retried, so position deletes always name live files
//!   and rows. A snapshot of the same task meanwhile means a second instance writes the table:
//!   that commit is refused ([`IcebergError::CommitConflict`]).
//! - **Upserts.** [`index::PkIndex`] maps key → (data file, row) or a row of the open batch.
//!   An update/delete of a committed row becomes a position delete; of an open-batch row, it
//!   is dropped in memory. Position deletes are file-scoped: one delete file per data file,
//!   with `referenced_data_file` set (Iceberg Java's default since 1.7; polars' native reader
//!   reads no other kind). Equality deletes are never written (pyiceberg refuses them). The
//!   index is rebuilt at open from the table: key columns only, by projection, minus existing
//!   position deletes. A single integer key is indexed by value (exact); other keys by a
//!   64-bit hash, with an insert that meets a present hash checked against the stored row's
//!   real key (read back from its file if needed) and true collisions kept exactly in a side
//!   table. Updates and deletes trust a single entry for their hash: they name a row that the
//!   source, and so the table, holds. At most 17 bytes per hash-table bucket: < 40 bytes/row.
//! - **No key.** A table without a primary key and without configured `key_columns` is an
//!   append-only change log: its rows plus `_inlet_op`, `_inlet_lsn`, `_inlet_commit_ts`
//!   (null for full-load rows).
//! - **Schema changes** become Iceberg schema updates committed with the next snapshot: new
//!   columns get new ids (optional), dropped columns leave the current schema, int→long,
//!   float→double and wider decimals keep their ids. Other type changes are errors (a full
//!   load replaces the column with a new id instead).
//!
//! # API
//!
//! ```ignore
//! let target = IcebergTarget::new(&config, "task-name")?;
//! target.check().await?;
//! // full load
//! let load = target.full_load(&table_schema).await?;
//! let mut w = load.writer();            // one per worker; LoadTable is Clone
//! w.write(&batch).await?;               // batch schema = table_schema.arrow_schema()
//! w.close().await?;
//! let summary = load.finish(Some(position)).await?;   // ONE snapshot, replaces contents
//! // CDC
//! let mut t = target.upsert_table(&table_schema).await?;
//! let resume_after = t.committed_position();
//! t.apply(&table_schema, &change_batch).await?;       // inlet_core::change_schema layout
//! t.commit(position).await?;                          // ONE snapshot
//! t.maintain(&config.maintenance, chrono::Utc::now()).await?; // on a schedule, when idle
//! ```

pub mod avro_header;
mod aws;
mod catalog;
mod config;
mod error;
mod files;
mod glue;
pub mod index;
mod lease;
mod load;
mod maintain;
mod partition;
mod rest;
mod schema;
mod sink;
pub mod snapshot;
mod store;
mod table_state;
mod target;
mod upsert;

pub use catalog::{athena_name, TableIdent};
pub use config::{CatalogConfig, IcebergTargetConfig, MaintenanceConfig, TableNames};
pub use error::IcebergError;
pub use load::{LoadSummary, LoadTable, LoadWriter};
pub use maintain::MaintenanceReport;
pub use partition::PartitionField;
pub use schema::{LOG_COMMIT_TS_COLUMN, LOG_OP_COLUMN, LOG_POSITION_COLUMN};
pub use snapshot::{POSITION_KEY, TASK_KEY};
pub use table_state::LiveRows;
pub use target::IcebergTarget;
pub use upsert::{CommitSummary, UpsertTable};
