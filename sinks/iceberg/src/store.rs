//! The warehouse: one `Arc<dyn ObjectStore>` (a local folder or an S3 bucket) plus a key prefix,
//! and the adapters that let parquet write to and read from it. Iceberg metadata records
//! absolute URIs (`file:///...`, `s3://bucket/...`); this module maps them to store keys.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::IcebergError;

/// Which kind of store the warehouse is; selects the advice given with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Local,
    S3,
}

/// Where tables live and how to reach them.
#[derive(Clone)]
pub(crate) struct Warehouse {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) kind: StoreKind,
    /// Key prefix of the warehouse root (empty for a local folder, which is the store's root).
    pub(crate) prefix: Path,
    /// URI of the store's root: `file:///abs/folder` or `s3://bucket`.
    pub(crate) base: Arc<str>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Warehouse {
    /// Opens `url` (`s3://bucket/prefix`, `file:///abs/path` or an absolute path); S3 settings
    /// come from `s3` (the environment, in production).
    pub(crate) fn open(
        url: &str,
        s3: impl FnOnce() -> AmazonS3Builder,
    ) -> Result<Self, IcebergError> {
        let shown = redacted(url);
        let bad = |message: String| IcebergError::Config {
            key: "warehouse".into(),
            message,
        };
        if url.trim().is_empty() {
            return Err(bad(
                "is empty; use s3://bucket/prefix, file:///abs/path or an absolute folder path"
                    .into(),
            ));
        }
        if !url.contains("://") {
            return open_local(std::path::PathBuf::from(url), &shown);
        }
        let parsed = Url::parse(url).map_err(|e| {
            bad(format!(
                "{shown} is not a valid URL ({e}); use s3://bucket/prefix or file:///abs/path"
            ))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials in the URL are not supported; set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead"
                    .into(),
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "the URL must not have a query (?...) or fragment (#...)".into(),
            ));
        }
        match parsed.scheme() {
            "file" => {
                let path = parsed.to_file_path().map_err(|()| {
                    bad("a file:// URL needs an absolute local path, e.g. \
                         file:///var/lib/warehouse"
                        .into())
                })?;
                open_local(path, &shown)
            }
            "s3" | "s3a" => open_s3(&parsed, &shown, s3()),
            other => Err(bad(format!(
                "unsupported scheme {other}://; use s3://bucket/prefix or file:///abs/path"
            ))),
        }
    }

    /// The warehouse URI, never with credentials.
    pub(crate) fn describe(&self) -> String {
        if self.prefix.is_root() {
            self.base.to_string()
        } else {
            format!("{}/{}", self.base, self.prefix)
        }
    }

    /// The absolute URI Iceberg metadata records for a key.
    pub(crate) fn uri(&self, path: &Path) -> String {
        format!("{}/{}", self.base, path)
    }

    /// The key of an absolute URI recorded in metadata. Fails for a URI outside this store
    /// (a table whose files were written elsewhere).
    pub(crate) fn path_of(&self, uri: &str) -> Result<Path, String> {
        let rest = uri
            .strip_prefix(&*self.base)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                format!(
                    "{uri} is outside the warehouse's store {}; the table was written by \
                     another tool or from another location",
                    self.base
                )
            })?;
        Path::parse(rest).map_err(|e| format!("{uri}: not a valid object key: {e}"))
    }

    pub(crate) fn hint(&self, err: Option<&object_store::Error>) -> String {
        store_hint(self.kind, err)
    }

    fn store_error(
        &self,
        subject: &str,
        action: &'static str,
        path: &Path,
        e: object_store::Error,
    ) -> IcebergError {
        IcebergError::Store {
            subject: subject.to_string(),
            action,
            location: self.uri(path),
            hint: self.hint(Some(&e)),
            source: Box::new(e),
        }
    }

    /// Reads a whole object; `None` if it does not exist.
    pub(crate) async fn get(
        &self,
        subject: &str,
        path: &Path,
    ) -> Result<Option<Bytes>, IcebergError> {
        match self.store.get(path).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => Ok(Some(b)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.store_error(subject, "read", path, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(subject, "read", path, e)),
        }
    }

    /// Whether an object exists.
    pub(crate) async fn exists(&self, subject: &str, path: &Path) -> Result<bool, IcebergError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error(subject, "look up", path, e)),
        }
    }

    /// Writes an object whole (replacing any existing one).
    pub(crate) async fn put(
        &self,
        subject: &str,
        path: &Path,
        bytes: Bytes,
    ) -> Result<(), IcebergError> {
        self.store
            .put_opts(path, PutPayload::from(bytes), PutOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| self.store_error(subject, "write", path, e))
    }

    /// Writes an object only if none exists at `path`: `Ok(false)` if one already did. This is
    /// the folder catalog's commit: of two writers of the same version only one wins.
    pub(crate) async fn put_if_absent(
        &self,
        subject: &str,
        path: &Path,
        bytes: Bytes,
    ) -> Result<bool, IcebergError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error(subject, "create", path, e)),
        }
    }

    /// Deletes objects; missing ones are fine.
    pub(crate) async fn delete(&self, subject: &str, paths: Vec<Path>) -> Result<(), IcebergError> {
        use futures::StreamExt;
        let first = paths.first().cloned().unwrap_or_default();
        let mut deleted = self
            .store
            .delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(subject, "delete", &first, e)),
            }
        }
        Ok(())
    }

    /// Lists every object under a prefix, recursively.
    pub(crate) async fn list(
        &self,
        subject: &str,
        prefix: &Path,
    ) -> Result<Vec<object_store::ObjectMeta>, IcebergError> {
        use futures::TryStreamExt;
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(subject, "list", prefix, e))
    }
}

fn open_local(path: std::path::PathBuf, shown: &str) -> Result<Warehouse, IcebergError> {
    let open_error = |message: String| IcebergError::OpenStore {
        warehouse: shown.to_string(),
        message,
        hint: store_hint(StoreKind::Local, None),
    };
    if !path.is_absolute() {
        return Err(IcebergError::Config {
            key: "warehouse".into(),
            message: format!(
                "{shown} is a relative path; Iceberg metadata records absolute locations, so \
                 give an absolute path or file:///abs/path"
            ),
        });
    }
    std::fs::create_dir_all(&path)
        .map_err(|e| open_error(format!("cannot create {}: {e}", path.display())))?;
    // Canonicalize so the URIs written into metadata are the folder the store really uses
    // (symlinks resolved), exactly as LocalFileSystem resolves it.
    let canonical = std::fs::canonicalize(&path)
        .map_err(|e| open_error(format!("cannot resolve {}: {e}", path.display())))?;
    let store = LocalFileSystem::new_with_prefix(&canonical)
        .map_err(|e| open_error(e.to_string()))?
        // Parquet files are staged and renamed; empty folders left by deletes are tidied.
        .with_automatic_cleanup(true);
    let base = match Url::from_directory_path(&canonical) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(()) => format!("file://{}", canonical.display()),
    };
    Ok(Warehouse {
        store: Arc::new(store),
        kind: StoreKind::Local,
        prefix: Path::default(),
        base: base.into(),
    })
}

fn open_s3(url: &Url, shown: &str, builder: AmazonS3Builder) -> Result<Warehouse, IcebergError> {
    let bad = |message: String| IcebergError::Config {
        key: "warehouse".into(),
        message,
    };
    let bucket = match url.host_str() {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => return Err(bad("an s3:// URL needs a bucket: s3://bucket/prefix".into())),
    };
    let prefix = Path::from_url_path(url.path()).map_err(|e| {
        bad(format!(
            "the prefix {:?} is not a valid object key prefix ({e}); remove empty or `.`/`..` \
             segments",
            url.path()
        ))
    })?;
    let mut builder = builder.with_bucket_name(&bucket);
    // An S3-compatible endpoint on plain HTTP (MinIO, moto) must be allowed explicitly.
    let http_endpoint = [AmazonS3ConfigKey::S3Endpoint, AmazonS3ConfigKey::Endpoint]
        .iter()
        .filter_map(|k| builder.get_config_value(k))
        .any(|e| e.trim().to_ascii_lowercase().starts_with("http://"));
    if http_endpoint {
        builder = builder.with_allow_http(true);
    }
    let store = builder.build().map_err(|e| IcebergError::OpenStore {
        warehouse: shown.to_string(),
        message: e.to_string(),
        hint: "check AWS_REGION, AWS_ENDPOINT_URL and the other AWS_* environment variables".into(),
    })?;
    Ok(Warehouse {
        store: Arc::new(store),
        kind: StoreKind::S3,
        prefix,
        base: format!("s3://{bucket}").into(),
    })
}

/// The URL as it may be shown: user info (which could hold a secret) replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Both setters fail only for URLs that cannot have user info; then hide it all.
            if u.set_username("***").is_err() || u.set_password(None).is_err() {
                return "<url hidden: it holds credentials>".into();
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// What to do about an object_store error (or an unclassified one, `None`).
pub(crate) fn store_hint(kind: StoreKind, err: Option<&object_store::Error>) -> String {
    use object_store::Error as E;
    match (kind, err) {
        (StoreKind::Local, _) => "check that the folder exists, that the user running inlet may \
                                  write to it, and that the disk is not full"
            .into(),
        (StoreKind::S3, Some(E::Unauthenticated { .. })) => {
            "no valid credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus \
             AWS_SESSION_TOKEN for temporary credentials), or run with an instance/task role"
                .into()
        }
        (StoreKind::S3, Some(E::PermissionDenied { .. })) => {
            "the credentials may not do this: grant s3:PutObject, s3:GetObject, s3:DeleteObject, \
             s3:ListBucket and s3:AbortMultipartUpload on the bucket and prefix"
                .into()
        }
        (StoreKind::S3, Some(E::NotSupported { .. })) => {
            "the store does not support conditional writes (If-None-Match), which the folder \
             catalog needs to commit safely; use AWS S3, MinIO 2024+, or the glue catalog"
                .into()
        }
        (StoreKind::S3, _) => {
            "check that the endpoint is reachable (AWS_ENDPOINT_URL for S3-compatible stores), \
             that AWS_REGION is the bucket's region, and that the credentials may write under \
             the prefix"
                .into()
        }
    }
}

/// Size of each multipart part; S3 requires at least 5 MiB per part but the last.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently per file; bounds upload memory per writer.
const PART_CONCURRENCY: usize = 2;

/// An object under construction for parquet's async writer. Nothing is visible at its path
/// until `complete` succeeds (multipart completion, or the local store's rename), which makes
/// every file whole or absent. `BufWriter` panics when used after shutdown or abort, so this
/// tracks its own state and turns misuse into errors.
pub(crate) struct ObjectFile {
    writer: BufWriter,
    open: bool,
    /// Bytes handed to the store so far: the file's size once complete.
    pub(crate) written: u64,
}

impl ObjectFile {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path) -> Self {
        Self {
            writer: BufWriter::with_capacity(store, path, PART_SIZE)
                .with_max_concurrency(PART_CONCURRENCY),
            open: true,
            written: 0,
        }
    }

    /// Drops the upload so no object appears. Does nothing once completed or aborted.
    pub(crate) async fn abort(&mut self) {
        if self.open {
            self.open = false;
            if let Err(e) = self.writer.abort().await {
                tracing::warn!(error = %e, "aborting an upload failed");
            }
        }
    }
}

impl AsyncFileWriter for ObjectFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if !self.open {
                return Err(ParquetError::General(
                    "write to an object already completed or aborted".into(),
                ));
            }
            self.written += bs.len() as u64;
            self.writer
                .put(bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if !self.open {
                return Err(ParquetError::General(
                    "complete on an object already completed or aborted".into(),
                ));
            }
            // Marked first: after shutdown has started, BufWriter::abort would panic, and a
            // failed completion is cleaned up by object_store itself.
            self.open = false;
            self.writer
                .shutdown()
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

/// parquet's async reader over one object: ranged GETs, footer read with one suffix request.
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
