//! Errors of the Iceberg sink. Each message names the warehouse, the table, the column or the
//! object, and says what to do. Messages never carry credentials: URLs are shown without user
//! info, and object_store errors name paths and HTTP statuses, not keys.

/// What went wrong in the Iceberg sink.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// The `[target]` settings are invalid; `key` is the offending setting.
    #[error("iceberg target: `{key}`: {message}")]
    Config { key: String, message: String },

    /// The object store could not be set up, or a local warehouse folder created.
    #[error("iceberg warehouse {warehouse}: cannot open it: {message}; {hint}")]
    OpenStore {
        warehouse: String,
        message: String,
        hint: String,
    },

    /// Reading, writing, listing or deleting an object failed.
    #[error("{subject}: cannot {action} {location}: {source}; {hint}")]
    Store {
        subject: String,
        action: &'static str,
        location: String,
        #[source]
        source: Box<object_store::Error>,
        hint: String,
    },

    /// Writing or reading a Parquet file failed; a partial file was discarded.
    #[error("table {table}: {action} {location} failed: {source}; {hint}")]
    Parquet {
        table: String,
        action: &'static str,
        location: String,
        #[source]
        source: Box<parquet::errors::ParquetError>,
        hint: String,
    },

    /// The table's columns cannot be written as Iceberg, or a batch does not fit the table.
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },

    /// The table's metadata, a manifest or a manifest list is invalid, or building the next one
    /// failed.
    #[error("table {table}: {message}: {source}")]
    Metadata {
        table: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Another writer committed a version of the table's metadata first. Nothing of this commit
    /// is visible; reopen the table (restart the task) and it resumes from the committed
    /// position.
    #[error(
        "table {table}: another writer committed metadata version {version} first; this commit \
         was not applied. Make sure only one inlet task writes this table, then restart the \
         task: it resumes from the table's committed position"
    )]
    CommitConflict { table: String, version: u64 },

    /// The call sequence was wrong (e.g. `finish` with writers still open), or an earlier error
    /// left the object unusable.
    #[error("table {table}: {message}")]
    State { table: String, message: String },

    /// The catalog (Glue, REST) refused or failed a request.
    #[error("catalog {catalog}: {message}")]
    Catalog { catalog: String, message: String },
}

impl IcebergError {
    pub(crate) fn metadata(
        table: impl Into<String>,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        IcebergError::Metadata {
            table: table.into(),
            message: message.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn schema(table: impl Into<String>, message: impl Into<String>) -> Self {
        IcebergError::Schema {
            table: table.into(),
            message: message.into(),
        }
    }

    pub(crate) fn state(table: impl Into<String>, message: impl Into<String>) -> Self {
        IcebergError::State {
            table: table.into(),
            message: message.into(),
        }
    }
}
