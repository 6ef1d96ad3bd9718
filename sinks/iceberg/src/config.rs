//! The `[target]` table of a task file when `kind = "iceberg"` (the daemon consumes `kind`).
//! Unknown keys are rejected, so a typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::IcebergError;

/// Settings of an Iceberg target.
///
/// ```toml
/// [target]
/// kind = "iceberg"                      # read by the daemon
/// warehouse = "s3://bucket/warehouse"   # or file:///abs/path, or /abs/path
/// namespace = "replica"                 # default: each table's source schema
/// file_size_mb = 128                    # full-load data files
/// cdc_file_size_mb = 16                 # change data files (compacted later)
/// key_columns = { "public.events" = ["event_id"] }
/// partition = { "public.orders" = ["day(created_at)", "bucket[16](customer_id)"] }
/// [target.catalog]
/// kind = "folder"                       # default; or "glue", "rest"
/// # kind = "rest"
/// # uri = "https://catalog.example.com/api/catalog"
/// # warehouse = "analytics"            # the catalog's warehouse, if it wants one
/// # token_env = "ICEBERG_TOKEN"        # or credential_env = "ICEBERG_CREDENTIAL" (id:secret)
/// # sigv4 = true                       # or AWS SigV4 (signing_name = "glue" / "s3tables")
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergTargetConfig {
    /// `file:///abs/path`, an absolute path, or `s3://bucket/prefix`. S3 settings come from the
    /// standard AWS environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...).
    pub warehouse: String,
    /// Namespace of every table; by default each table goes to the namespace named after its
    /// source schema (PostgreSQL schema, MySQL database).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Target size of full-load data files, MiB.
    #[serde(default = "default_file_size_mb")]
    pub file_size_mb: u64,
    /// Target size of data files written by CDC commits, MiB. Each commit writes at least one
    /// file per table it touches, so most are smaller; maintenance compacts them.
    #[serde(default = "default_cdc_file_size_mb")]
    pub cdc_file_size_mb: u64,
    /// zstd level of data files (1 = fastest .. 22 = smallest).
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// Upsert key of tables without a primary key: `"schema.table" = ["col", ...]`. The columns
    /// must identify a row: an insert of a key already present replaces that row.
    #[serde(default)]
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// Partition transforms per table: `"schema.table" = ["day(ts)", "bucket[16](id)",
    /// "truncate[4](name)", "col"]` (a bare column name is `identity`).
    #[serde(default)]
    pub partition: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    /// `portable` (default): uuid and time columns as Iceberg `string`, which every common
    /// reader takes (Athena and Hyper have no uuid, Spark and Athena no time); `exact`: Iceberg
    /// `uuid` and `time` (see `inlet_core::TypeForms`). Decided when a table is created.
    #[serde(default)]
    pub types: inlet_core::TypeForms,
    /// `athena` (default): namespace and table names as Athena, Glue and Iceberg's GlueCatalog
    /// accept them (see [`crate::athena_name`]); `source`: the source's names as they are. A
    /// table that exists under its source name (created before this setting) keeps it.
    #[serde(default)]
    pub names: TableNames,
}

/// How namespaces and tables are named (`target.names`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableNames {
    /// Lowercase letters, digits and `_` (Athena, Glue, Iceberg's GlueCatalog).
    #[default]
    Athena,
    /// The source's schema and table names as they are.
    Source,
}

fn default_file_size_mb() -> u64 {
    128
}
fn default_cdc_file_size_mb() -> u64 {
    16
}
fn default_compression_level() -> i32 {
    1
}

/// Which catalog tracks the tables' current metadata.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CatalogConfig {
    /// Metadata files plus `version-hint.text` in each table's folder, committed with
    /// create-if-absent writes (no service needed).
    #[default]
    Folder,
    /// The AWS Glue Data Catalog (so that Athena sees the tables).
    Glue {
        /// Glue catalog id (the AWS account id); default: the caller's account.
        #[serde(default)]
        catalog_id: Option<String>,
        /// Glue endpoint override (tests: moto); default from AWS_ENDPOINT_URL_GLUE or the
        /// region.
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// An Iceberg REST catalog (Polaris, Gravitino, Nessie, Unity, Lakekeeper, Glue's and S3
    /// Tables' REST endpoints, ...). Secrets are never written here: `token_env` and
    /// `credential_env` name environment variables that hold them.
    Rest {
        /// Base URI of the catalog; requests go to `{uri}/v1/...`.
        uri: String,
        /// The catalog's warehouse (name or location, as the catalog expects), sent to
        /// `GET /v1/config?warehouse=...`.
        #[serde(default)]
        warehouse: Option<String>,
        /// Name of the environment variable holding a bearer token (never the token itself).
        #[serde(default)]
        token_env: Option<String>,
        /// Name of the environment variable holding OAuth2 `client_id:client_secret`; inlet
        /// fetches (and refreshes) tokens with the client-credentials grant.
        #[serde(default)]
        credential_env: Option<String>,
        /// OAuth2 token endpoint; default `{uri}/v1/oauth/tokens`.
        #[serde(default)]
        oauth2_server_uri: Option<String>,
        /// OAuth2 scope requested with `credential_env`; default `catalog`.
        #[serde(default)]
        scope: Option<String>,
        /// Sign requests with AWS SigV4 (S3 Tables, Glue's REST endpoint), with the region
        /// and credentials of the S3 settings (the AWS_* environment).
        #[serde(default)]
        sigv4: bool,
        /// SigV4 service name: `glue` (default) for Glue's Iceberg endpoint, `s3tables` for
        /// S3 Tables.
        #[serde(default)]
        signing_name: Option<String>,
    },
}

/// Built-in table maintenance, run by the daemon on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Run maintenance every this many minutes (0 = never).
    #[serde(default = "default_interval_minutes")]
    pub interval_minutes: u64,
    /// Rewrite a data file once this fraction of its rows is deleted.
    #[serde(default = "default_rewrite_deleted_fraction")]
    pub rewrite_deleted_fraction: f64,
    /// Data files smaller than this many MiB are compacted together.
    #[serde(default = "default_small_file_mb")]
    pub small_file_mb: u64,
    /// Snapshots older than this many hours are expired (the current one never is).
    #[serde(default = "default_expire_snapshots_hours")]
    pub expire_snapshots_hours: u64,
    /// Keep at least this many recent snapshots whatever their age.
    #[serde(default = "default_keep_snapshots")]
    pub keep_snapshots: usize,
    /// Unreferenced objects in a table's folder are deleted once older than this many
    /// minutes (younger ones may belong to a commit in flight, another engine's too).
    #[serde(default = "default_orphan_grace_minutes")]
    pub orphan_grace_minutes: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval_minutes: default_interval_minutes(),
            rewrite_deleted_fraction: default_rewrite_deleted_fraction(),
            small_file_mb: default_small_file_mb(),
            expire_snapshots_hours: default_expire_snapshots_hours(),
            keep_snapshots: default_keep_snapshots(),
            orphan_grace_minutes: default_orphan_grace_minutes(),
        }
    }
}

fn default_interval_minutes() -> u64 {
    60
}
fn default_rewrite_deleted_fraction() -> f64 {
    0.2
}
fn default_small_file_mb() -> u64 {
    8
}
fn default_expire_snapshots_hours() -> u64 {
    24 * 7
}
fn default_keep_snapshots() -> usize {
    10
}
fn default_orphan_grace_minutes() -> u64 {
    // As Iceberg's remove_orphan_files (older_than 3 days): another engine's job (a Spark
    // rewrite_data_files) writes its files long before it commits them.
    3 * 24 * 60
}

impl IcebergTargetConfig {
    /// Checks the settings that need no I/O; the error names the key.
    pub(crate) fn validate(&self) -> Result<(), IcebergError> {
        let bad = |key: &str, message: String| IcebergError::Config {
            key: key.to_string(),
            message,
        };
        for (key, mb) in [
            ("file_size_mb", self.file_size_mb),
            ("cdc_file_size_mb", self.cdc_file_size_mb),
        ] {
            if mb == 0 || mb > (1 << 20) {
                return Err(bad(
                    key,
                    format!("{mb} is out of range; use 1 to 1048576 (128 to 512 reads best)"),
                ));
            }
        }
        if !(1..=22).contains(&self.compression_level) {
            return Err(bad(
                "compression_level",
                format!(
                    "{} is not a zstd level; use 1 (fast) to 22 (smallest)",
                    self.compression_level
                ),
            ));
        }
        if let Some(ns) = &self.namespace {
            if ns.is_empty() || ns.contains('/') {
                return Err(bad(
                    "namespace",
                    format!("{ns:?} is not a valid namespace; use a non-empty name without '/'"),
                ));
            }
        }
        for (table, cols) in &self.key_columns {
            if !table.contains('.') || cols.is_empty() {
                return Err(bad(
                    &format!("key_columns.{table:?}"),
                    "expected \"schema.table\" = [\"column\", ...] with at least one column".into(),
                ));
            }
        }
        for (table, transforms) in &self.partition {
            for t in transforms {
                crate::partition::PartitionField::parse(t).map_err(|message| {
                    bad(&format!("partition.{table:?}"), format!("{t:?}: {message}"))
                })?;
            }
        }
        let m = &self.maintenance;
        if !(0.0..=1.0).contains(&m.rewrite_deleted_fraction) {
            return Err(bad(
                "maintenance.rewrite_deleted_fraction",
                "expected a fraction between 0.0 and 1.0".into(),
            ));
        }
        Ok(())
    }
}
