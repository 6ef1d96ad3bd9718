//! Errors of the Parquet sink. Each message names the target URL, the table or the object, and
//! says what to do about it. Messages never carry credentials: URLs are shown without user
//! info, and object_store errors name paths and HTTP statuses, not keys.
//!
//! The underlying error is both shown in the message and available as `source()`, so the daemon
//! can print the message alone and still downcast when it needs to.

use std::path::PathBuf;

/// What went wrong in the Parquet sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The `[target]` settings are invalid.
    #[error("parquet target {url}: {message}")]
    Config { url: String, message: String },

    /// The local target folder could not be created.
    #[error(
        "parquet target {url}: cannot create the folder {}: {source}; create it yourself or \
         point `url` at a folder the user running inlet may write",
        path.display()
    )]
    CreateFolder {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object store client could not be built from the URL and the environment.
    #[error("parquet target {url}: cannot set up the object store: {source}; {hint}")]
    OpenStore {
        url: String,
        #[source]
        source: Box<object_store::Error>,
        hint: String,
    },

    /// `check` could not write or delete its probe object.
    #[error("parquet target {target}: the check could not {action} the probe object {location}: {source}; {hint}")]
    Check {
        target: String,
        action: &'static str,
        location: String,
        #[source]
        source: Box<object_store::Error>,
        hint: String,
    },

    /// A batch does not fit the table's schema, or the extra DMS columns collide with a
    /// table column.
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },

    /// Writing a Parquet file failed; the partial file was discarded (never made visible).
    #[error(
        "table {table}: writing {location} failed and the file was discarded: {source}; {hint}"
    )]
    Write {
        table: String,
        location: String,
        #[source]
        source: Box<parquet::errors::ParquetError>,
        hint: String,
    },

    /// Listing the table folder or deleting stale files failed in `finish`.
    #[error("table {table}: cannot {action} {location}: {source}; {hint}")]
    Cleanup {
        table: String,
        action: &'static str,
        location: String,
        #[source]
        source: Box<object_store::Error>,
        hint: String,
    },

    /// The load of a table cannot be completed: a writer failed earlier or was dropped with an
    /// open file, or `finish` was called while writers were still open.
    #[error("table {table}: {message}")]
    Incomplete { table: String, message: String },

    /// Reading or writing change-log files or the task checkpoint.
    #[error("{subject}: cannot {action} {location}: {source}; {hint}")]
    Store {
        subject: String,
        action: &'static str,
        location: String,
        #[source]
        source: Box<object_store::Error>,
        hint: String,
    },
}

impl SinkError {
    /// Whether the same write may succeed if tried again later: the store was unreachable,
    /// answered 5xx or timed out, or the local disk was full. Missing credentials or
    /// permissions, a missing bucket and a bad schema are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Check { source, .. }
            | SinkError::Cleanup { source, .. }
            | SinkError::Store { source, .. } => store_error_is_transient(source),
            SinkError::Write { source, .. } => {
                // The writer wraps the store's error; a pure encoding error has no store
                // error beneath and would fail again.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(e) = cause {
                    if let Some(store) = e.downcast_ref::<object_store::Error>() {
                        return store_error_is_transient(store);
                    }
                    if e.downcast_ref::<std::io::Error>().is_some() {
                        return true;
                    }
                    cause = e.source();
                }
                false
            }
            SinkError::Config { .. }
            | SinkError::CreateFolder { .. }
            | SinkError::OpenStore { .. }
            | SinkError::Schema { .. }
            | SinkError::Incomplete { .. } => false,
        }
    }
}

fn store_error_is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    // `Generic` carries HTTP 5xx, timeouts, refused connections and local I/O errors such as
    // a full disk, after the store's own retries gave up.
    matches!(e, E::Generic { .. })
}

/// Which kind of store a target writes to; selects the advice given with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Local,
    S3,
}

/// What to do about an object_store error (or an unclassified I/O error, `None`) on a store of
/// this kind.
pub(crate) fn store_hint(kind: StoreKind, err: Option<&object_store::Error>) -> String {
    use object_store::Error as E;
    match (kind, err) {
        (StoreKind::Local, _) => "check that the folder exists, that the user running inlet may \
                                  write to it, and that the disk is not full"
            .into(),
        (StoreKind::S3, Some(E::Unauthenticated { .. })) => {
            "no valid credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus \
             AWS_SESSION_TOKEN for temporary credentials), or run with an instance/task role or \
             AWS_WEB_IDENTITY_TOKEN_FILE"
                .into()
        }
        (StoreKind::S3, Some(E::PermissionDenied { .. })) => {
            "the credentials may not do this: grant s3:PutObject, s3:GetObject, s3:DeleteObject, \
             s3:ListBucket and s3:AbortMultipartUpload on the bucket and prefix"
                .into()
        }
        (StoreKind::S3, Some(E::NotFound { .. })) => "the bucket does not exist or is in another \
                                                region: check the bucket name in `url` and \
                                                AWS_REGION"
            .into(),
        (StoreKind::S3, _) => {
            "check that the endpoint is reachable (AWS_ENDPOINT_URL for S3-compatible stores; \
             http:// endpoints are allowed), that AWS_REGION is the bucket's region, and that \
             the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or an instance role) \
             may write under the prefix"
                .into()
        }
    }
}
