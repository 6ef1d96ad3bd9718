//! The target: where files go (a local folder or an S3 prefix) and how they are encoded.
//!
//! Both kinds of store are reached through one `Arc<dyn ObjectStore>` plus a key prefix, so the
//! writing code never branches on the kind. A local store is rooted at the target folder (empty
//! prefix); an S3 store is rooted at the bucket (prefix from the URL).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use inlet_core::TableSchema;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use url::Url;

use arrow_array::ArrayRef;
use arrow_schema::{ArrowError, DataType, Field, TimeUnit};

use crate::config::{ParquetTargetConfig, TimestampColumnType, TimestampUnit};
use crate::error::{store_hint, SinkError, StoreKind};
use crate::load::{FullLoadTable, KIND_KEY, TABLE_KEY};

/// Upper bound on the encoded size of one in-progress row group. A row group is held in memory
/// until it is complete, so `row_group_rows` alone would not bound memory for wide rows (large
/// text or JSON values); the row group is cut at whichever limit comes first.
pub const ROW_GROUP_MAX_BYTES: usize = 128 * 1024 * 1024;

/// A Parquet target: an object store, a prefix in it, and the encoding settings.
#[derive(Clone)]
pub struct ParquetTarget {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) kind: StoreKind,
    /// The prefix every key starts with (root for a local folder).
    pub(crate) prefix: Path,
    /// How to show a key to a person: `s3://bucket` or `file:///abs/folder`, to which
    /// `/<key>` is appended.
    pub(crate) base: Arc<str>,
    pub(crate) compression: Compression,
    pub(crate) row_group_rows: usize,
    pub(crate) file_size_bytes: u64,
    pub(crate) include_op: bool,
    /// The operation column's name (`op_column`, `Op` by default).
    pub(crate) op_column: Arc<str>,
    pub(crate) timestamp_column: Option<String>,
    /// Which operations change files keep (DMS `CdcInsertsOnly` / `CdcInsertsAndUpdates`).
    pub(crate) cdc_keep: crate::changes::KeptOps,
    /// Portable or exact forms of uuid and time columns.
    pub(crate) types: inlet_core::TypeForms,
    /// How `timestamp_column` is typed (DMS: a string).
    pub(crate) timestamp_column_type: TimestampColumnType,
    /// Timestamp columns in milliseconds (DMS `ParquetTimestampInMillisecond`).
    pub(crate) millis: bool,
    /// Change files carry `_inlet_commit_ts`, `_inlet_lsn` and `_inlet_txid`.
    pub(crate) inlet_columns: bool,
    /// The version of each checkpoint as this target last read or wrote it, so that the next
    /// write replaces only that version (S3; see [`crate::lease`]).
    pub(crate) checkpoint_versions: crate::lease::CheckpointVersions,
    /// Set when the task was taken from an owner whose lease expired: change tables then
    /// delete the files that owner lands late ([`crate::late_files`]).
    pub(crate) former_owner_may_write: bool,
    /// The lease epoch this daemon owns the task under (0 without a lease): a takeover's
    /// record of late files is kept per epoch across restarts of the task.
    pub(crate) owner_epoch: u64,
    /// Asked between the steps of a load's switch ([`inlet_core::sink::Sink::set_write_gate`]).
    pub(crate) gate: Option<inlet_core::sink::WriteGate>,
}

// Hand-written so that the store's own Debug (which may include client configuration) is never
// printed.
impl fmt::Debug for ParquetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetTarget")
            .field("url", &self.describe())
            .field("compression", &self.compression)
            .field("row_group_rows", &self.row_group_rows)
            .field("file_size_bytes", &self.file_size_bytes)
            .field("include_op", &self.include_op)
            .field("timestamp_column", &self.timestamp_column)
            .field("types", &self.types)
            .field("timestamp_column_type", &self.timestamp_column_type)
            .field("millis", &self.millis)
            .field("inlet_columns", &self.inlet_columns)
            .finish()
    }
}

impl ParquetTarget {
    /// Parses the URL and builds the object store. The only I/O is creating (and resolving) the
    /// folder of a local target; S3 is first contacted by [`Self::check`] or the first write.
    pub fn new(config: &ParquetTargetConfig) -> Result<Self, SinkError> {
        Self::with_s3_builder(config, AmazonS3Builder::from_env)
    }

    /// [`Self::new`] with the S3 settings taken from `s3` instead of the environment, so tests
    /// need not change the process environment.
    pub(crate) fn with_s3_builder(
        config: &ParquetTargetConfig,
        s3: impl FnOnce() -> AmazonS3Builder,
    ) -> Result<Self, SinkError> {
        let shown = redacted(&config.url);
        let config_error = |message: String| SinkError::Config {
            url: shown.clone(),
            message,
        };
        config.validate().map_err(config_error)?;
        let compression = config.codec().map_err(config_error)?;

        let (store, kind, prefix, base) = open_store(&config.url, &shown, s3)?;
        Ok(Self {
            store,
            kind,
            prefix,
            base: base.into(),
            compression,
            row_group_rows: config.row_group_rows,
            // validate() bounds file_size_mb to 2^24, so this cannot overflow.
            file_size_bytes: config.file_size_mb << 20,
            include_op: config.include_op_for_full_load,
            op_column: config.op_column.as_str().into(),
            timestamp_column: config.timestamp_column.clone(),
            cdc_keep: if config.cdc_inserts_only {
                crate::changes::KeptOps::Inserts
            } else if config.cdc_inserts_and_updates {
                crate::changes::KeptOps::InsertsAndUpdates
            } else {
                crate::changes::KeptOps::All
            },
            types: config.types,
            timestamp_column_type: config.timestamp_column_type,
            millis: config.timestamp_unit == TimestampUnit::Ms,
            former_owner_may_write: false,
            owner_epoch: 0,
            gate: None,
            inlet_columns: config.inlet_columns(),
            checkpoint_versions: Default::default(),
        })
    }

    /// The table as its files hold it: uuid and time columns as text unless `types = "exact"`,
    /// timestamps in milliseconds with `timestamp_unit = "ms"`.
    pub(crate) fn written_table(&self, table: &TableSchema) -> TableSchema {
        let mut table = match self.types {
            inlet_core::TypeForms::Portable => inlet_core::portable_table(table),
            inlet_core::TypeForms::Exact => table.clone(),
        };
        if self.millis {
            for c in &mut table.columns {
                c.field = crate::timestamps::millis_field(&c.field);
            }
        }
        table
    }

    /// A column of a source batch as the files hold it (see [`Self::written_table`]).
    pub(crate) fn written_array(&self, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        let array = match self.types {
            inlet_core::TypeForms::Portable => inlet_core::portable_array(array)?,
            inlet_core::TypeForms::Exact => Arc::clone(array),
        };
        if self.millis {
            crate::timestamps::millis_array(&array)
        } else {
            Ok(array)
        }
    }

    /// The field of the DMS timestamp column `name` (DMS `TimestampColumnName`).
    pub(crate) fn timestamp_field(&self, name: &str) -> Field {
        let data_type = match self.timestamp_column_type {
            TimestampColumnType::String => DataType::Utf8,
            TimestampColumnType::Timestamp => DataType::Timestamp(
                if self.millis {
                    TimeUnit::Millisecond
                } else {
                    TimeUnit::Microsecond
                },
                Some("UTC".into()),
            ),
        };
        Field::new(name, data_type, false)
    }

    /// The DMS timestamp column's values for `micros` (a microsecond timestamp array, UTC).
    pub(crate) fn timestamp_values(&self, micros: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        match self.timestamp_column_type {
            TimestampColumnType::String => crate::timestamps::dms_text_array(micros),
            TimestampColumnType::Timestamp if self.millis => {
                crate::timestamps::millis_array(micros)
            }
            TimestampColumnType::Timestamp => Ok(Arc::clone(micros)),
        }
    }

    /// Where this target writes, e.g. `s3://bucket/prefix` or `file:///abs/warehouse`; never
    /// credentials.
    pub fn describe(&self) -> String {
        if self.prefix.is_root() {
            self.base.to_string()
        } else {
            format!("{}/{}", self.base, self.prefix)
        }
    }

    /// Writes a small probe object under the prefix, lists the prefix and deletes the probe,
    /// proving that the credentials, the endpoint and the permissions allow what a load does.
    pub async fn check(&self) -> Result<(), SinkError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let probe = self
            .prefix
            .clone()
            .join(format!("inlet-check-{}-{nanos}.tmp", std::process::id()));
        let check_error = |action: &'static str, source: object_store::Error| SinkError::Check {
            target: self.describe(),
            action,
            location: self.location(&probe),
            hint: store_hint(self.kind, Some(&source)),
            source: Box::new(source),
        };

        let payload = PutPayload::from_static(b"inlet check: safe to delete\n");
        self.store
            .put_opts(&probe, payload, PutOptions::default())
            .await
            .map_err(|e| check_error("write", e))?;
        // `finish` lists table folders to delete stale files; a missing s3:ListBucket should
        // show up here, not after a long load.
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| check_error("list the folder of", e))?;
        let mut deleted = self
            .store
            .delete_stream(futures::stream::iter([Ok(probe.clone())]).boxed());
        while let Some(result) = deleted.next().await {
            result.map_err(|e| check_error("delete", e))?;
        }
        Ok(())
    }

    /// Starts the full load of one table. Cheap and without I/O: files are opened by the
    /// writers, lazily.
    /// The change log of one table: CDC files beside its full-load files.
    pub fn change_log(&self, table: &TableSchema) -> crate::ChangeLogTable {
        crate::ChangeLogTable::new(self, table)
    }

    pub fn full_load(&self, table: &TableSchema) -> FullLoadTable {
        FullLoadTable::new(self, table)
    }

    /// The key of a table's folder: `<prefix>/<schema>/<table>`. Each name is one path segment;
    /// object_store percent-encodes characters that cannot appear in a key segment.
    /// Encoding settings of every file of `table`; `kind` goes into the file metadata
    /// (`full-load`, `cdc`).
    pub(crate) fn writer_properties(&self, table: &TableSchema, kind: &str) -> WriterProperties {
        let mut props = WriterProperties::builder();
        // A dictionary pays only when a row group repeats values; for a column whose source
        // statistics say most values in a row group would be distinct, interning every value
        // costs CPU (a tenth of a full load's) and, under zstd, buys no smaller file.
        for column in &table.columns {
            let many = column
                .distinct_values
                .is_some_and(|d| d > self.row_group_rows as u64 / 2);
            if many && !column.data_type().is_nested() {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(column.name.as_str()), false);
            }
        }
        props
            .set_compression(self.compression)
            // The Parquet spec's names for a list's groups (`<col>.list.element`), as Spark
            // and Iceberg Java write them, rather than Arrow's own `item`. Of arrow-rs's coercions
            // only this one applies to inlet's columns: the others are of Date64 and maps, which
            // inlet never writes.
            .set_coerce_types(true)
            // ParquetTarget::new rejects row_group_rows = 0, the one value that panics here.
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_max_row_group_bytes(Some(ROW_GROUP_MAX_BYTES))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(TABLE_KEY.to_string(), table.id.to_string()),
                KeyValue::new(KIND_KEY.to_string(), kind.to_string()),
                // Spark 3 reads dates before 1582-10-15 and timestamps before 1900 only from
                // files that say which calendar they use: without this key it stops
                // (INCONSISTENT_BEHAVIOR_CROSS_VERSION.READ_ANCIENT_DATETIME) unless the reader
                // sets datetimeRebaseModeInRead. A Spark version of 3.1.0 or later (and no
                // legacy key) says "proleptic Gregorian, no rebase", which is what inlet writes.
                KeyValue::new("org.apache.spark.version".to_string(), "3.1.0".to_string()),
            ]))
            .build()
    }

    pub(crate) fn table_dir(&self, table: &TableSchema) -> Path {
        self.prefix
            .clone()
            .join(table.id.schema.as_str())
            .join(table.id.name.as_str())
    }

    /// Removes the folder of a local target at `path` if it is empty: object stores have no
    /// folders, but a local one leaves them behind when their files go. Best effort: an empty
    /// folder is harmless, and one that is not empty stays.
    pub(crate) fn remove_empty_local_folder(&self, path: &Path) {
        if self.kind != StoreKind::Local {
            return;
        }
        if let Ok(Ok(folder)) = Url::parse(&self.location(path)).map(|u| u.to_file_path()) {
            let _ = std::fs::remove_dir(folder);
        }
    }

    /// How to show a key to a person.
    pub(crate) fn location(&self, path: &Path) -> String {
        format!("{}/{}", self.base, path)
    }

    /// Tests use files of a few KiB to exercise rolling without writing megabytes.
    #[cfg(test)]
    pub(crate) fn with_file_size_bytes(mut self, bytes: u64) -> Self {
        self.file_size_bytes = bytes;
        self
    }
}

type Opened = (Arc<dyn ObjectStore>, StoreKind, Path, String);

/// Builds the store for a URL: `s3://bucket/prefix`, `file:///abs/path`, or a plain path.
fn open_store(
    url: &str,
    shown: &str,
    s3: impl FnOnce() -> AmazonS3Builder,
) -> Result<Opened, SinkError> {
    let config_error = |message: String| SinkError::Config {
        url: shown.to_string(),
        message,
    };
    if url.trim().is_empty() {
        return Err(config_error(
            "url is empty; use s3://bucket/prefix, file:///abs/path or a folder path".into(),
        ));
    }
    if !url.contains("://") {
        return open_local(std::path::PathBuf::from(url), shown);
    }
    let parsed = Url::parse(url).map_err(|e| {
        config_error(format!(
            "not a valid URL ({e}); use s3://bucket/prefix, file:///abs/path or a folder path"
        ))
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config_error(
            "credentials in the URL are not supported; set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY in the environment instead"
                .into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(config_error(
            "the URL must not have a query (?...) or fragment (#...)".into(),
        ));
    }
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| {
                config_error(
                    "a file:// URL needs an absolute local path, e.g. file:///var/lib/warehouse"
                        .into(),
                )
            })?;
            open_local(path, shown)
        }
        "s3" | "s3a" => open_s3(&parsed, shown, s3()),
        other => Err(config_error(format!(
            "unsupported scheme {other}://; use s3://bucket/prefix, file:///abs/path or a \
             folder path"
        ))),
    }
}

fn open_local(path: std::path::PathBuf, shown: &str) -> Result<Opened, SinkError> {
    let absolute = std::path::absolute(&path).map_err(|source| SinkError::CreateFolder {
        url: shown.to_string(),
        path: path.clone(),
        source,
    })?;
    std::fs::create_dir_all(&absolute).map_err(|source| SinkError::CreateFolder {
        url: shown.to_string(),
        path: absolute.clone(),
        source,
    })?;
    // Canonicalize ourselves too, so describe() shows the folder the store really writes to
    // (symlinks resolved), exactly as LocalFileSystem resolves it.
    let canonical = std::fs::canonicalize(&absolute).map_err(|source| SinkError::CreateFolder {
        url: shown.to_string(),
        path: absolute.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(&canonical).map_err(|source| SinkError::OpenStore {
            url: shown.to_string(),
            hint: store_hint(StoreKind::Local, Some(&source)),
            source: Box::new(source),
        })?;
    let base = match Url::from_directory_path(&canonical) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(()) => format!("file://{}", canonical.display()),
    };
    Ok((Arc::new(store), StoreKind::Local, Path::default(), base))
}

fn open_s3(url: &Url, shown: &str, builder: AmazonS3Builder) -> Result<Opened, SinkError> {
    let config_error = |message: String| SinkError::Config {
        url: shown.to_string(),
        message,
    };
    let bucket = match url.host_str() {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => {
            return Err(config_error(
                "an s3:// URL needs a bucket: s3://bucket/prefix".into(),
            ))
        }
    };
    let prefix = Path::from_url_path(url.path()).map_err(|e| {
        config_error(format!(
            "the prefix {:?} is not a valid object key prefix ({e}); remove empty or `.`/`..` \
             segments",
            url.path()
        ))
    })?;

    // The store's own retries ride out a blip; a longer outage surfaces within ~30 s as an
    // error, which the daemon retries with its own backoff and reports in its metrics, instead
    // of a flush hanging silently for minutes.
    let retry = object_store::RetryConfig {
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let mut builder = builder.with_bucket_name(&bucket).with_retry(retry);
    // An S3-compatible endpoint on plain HTTP (MinIO, moto, a local gateway) must be allowed
    // explicitly; object_store refuses http:// otherwise.
    let http_endpoint = [AmazonS3ConfigKey::S3Endpoint, AmazonS3ConfigKey::Endpoint]
        .iter()
        .filter_map(|k| builder.get_config_value(k))
        .any(|e| e.trim().to_ascii_lowercase().starts_with("http://"));
    if http_endpoint {
        builder = builder.with_allow_http(true);
    }
    let store = builder.build().map_err(|source| SinkError::OpenStore {
        url: shown.to_string(),
        hint: "check AWS_REGION, AWS_ENDPOINT_URL and the other AWS_* environment variables".into(),
        source: Box::new(source),
    })?;
    Ok((
        Arc::new(store),
        StoreKind::S3,
        prefix,
        format!("s3://{bucket}"),
    ))
}

/// The URL as it may be shown: user info (which could hold a secret) replaced by `***`.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Setting user info fails only for URLs that cannot have one (no host), and such
            // URLs cannot carry user info in the first place; fall back to hiding everything.
            if u.set_username("***").is_err() || u.set_password(None).is_err() {
                return "<url with credentials>".into();
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}
