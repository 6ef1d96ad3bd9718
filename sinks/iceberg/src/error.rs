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

    /// The catalog (Glue, REST) refused or failed a request. `transient` is true when a retry
    /// may succeed (unreachable, timeout, HTTP 5xx, throttling).
    #[error("catalog {catalog}: {message}")]
    Catalog {
        catalog: String,
        message: String,
        transient: bool,
    },
}

impl IcebergError {
    /// Whether retrying (after reopening the table) may succeed: the object store was
    /// unreachable, timed out or answered 5xx (an `object_store::Error::Generic` anywhere in the
    /// chain), another writer committed first (the task restarts, reopens the table and
    /// re-applies from its committed position), or the catalog was unreachable, answered 5xx or
    /// throttled. False for configuration, permission, schema, metadata and state errors, which
    /// a retry would only repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            IcebergError::CommitConflict { .. } => true,
            IcebergError::Catalog { transient, .. } => *transient,
            IcebergError::Store { source, .. } => store_transient(source),
            IcebergError::Parquet { .. } => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
                while let Some(c) = cause {
                    if let Some(store) = c.downcast_ref::<object_store::Error>() {
                        return store_transient(store);
                    }
                    cause = c.source();
                }
                false
            }
            IcebergError::Config { .. }
            | IcebergError::OpenStore { .. }
            | IcebergError::Schema { .. }
            | IcebergError::Metadata { .. }
            | IcebergError::State { .. } => false,
        }
    }

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

    pub(crate) fn catalog(
        catalog: impl Into<String>,
        message: impl Into<String>,
        transient: bool,
    ) -> Self {
        IcebergError::Catalog {
            catalog: catalog.into(),
            message: message.into(),
            transient,
        }
    }

    pub(crate) fn state(table: impl Into<String>, message: impl Into<String>) -> Self {
        IcebergError::State {
            table: table.into(),
            message: message.into(),
        }
    }
}

/// object_store maps 401/403/404/409/412 to their own variants; what is left as `Generic` is a
/// transport failure, a timeout or a 5xx (after object_store's own retries).
fn store_transient(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(source: object_store::Error) -> IcebergError {
        IcebergError::Store {
            subject: "table a.b".into(),
            action: "write",
            location: "s3://b/k".into(),
            source: Box::new(source),
            hint: String::new(),
        }
    }

    #[test]
    fn classifies_transient_errors() {
        let generic = || object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert!(store(generic()).is_transient());
        assert!(!store(object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into()
        })
        .is_transient());
        assert!(!store(object_store::Error::Unauthenticated {
            path: "k".into(),
            source: "401".into()
        })
        .is_transient());
        assert!(!store(object_store::Error::NotImplemented {
            operation: "put".into(),
            implementer: "S3".into(),
        })
        .is_transient());
        // A Parquet write that failed because the upload did.
        let parquet = IcebergError::Parquet {
            table: "a.b".into(),
            action: "writing",
            location: "s3://b/k".into(),
            source: Box::new(parquet::errors::ParquetError::External(Box::new(generic()))),
            hint: String::new(),
        };
        assert!(parquet.is_transient());
        let parquet = IcebergError::Parquet {
            table: "a.b".into(),
            action: "writing",
            location: "s3://b/k".into(),
            source: Box::new(parquet::errors::ParquetError::General("bad".into())),
            hint: String::new(),
        };
        assert!(!parquet.is_transient());
        assert!(IcebergError::CommitConflict {
            table: "a.b".into(),
            version: 3
        }
        .is_transient());
        assert!(IcebergError::catalog("glue", "HTTP 503", true).is_transient());
        assert!(!IcebergError::catalog("glue", "AccessDeniedException", false).is_transient());
        assert!(!IcebergError::Config {
            key: "warehouse".into(),
            message: "bad".into()
        }
        .is_transient());
        assert!(!IcebergError::schema("a.b", "bad type").is_transient());
        assert!(!IcebergError::state("a.b", "poisoned").is_transient());
    }
}
