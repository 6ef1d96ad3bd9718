//! One object being written: parquet's [`AsyncFileWriter`] over object_store's [`BufWriter`].
//!
//! parquet's own `object_store` integration is off (DESIGN decision 5: it would pull a second
//! object_store), so this small adapter is ours. `BufWriter` keeps the first part in memory and
//! switches to a multipart upload once it is full; the object only becomes visible when the
//! upload completes (S3 `CompleteMultipartUpload`, or the local store's rename of its staging
//! file). That is what makes every file whole or absent.
//!
//! `BufWriter` panics when used after shutdown or abort, so this wrapper tracks its own state
//! and turns such misuse into errors.
//!
//! Cancelling a completion does not stop it everywhere: the local store completes an object by
//! a rename on a blocking thread, which lands after the cancelled task is gone. A writer whose
//! files are deleted when it is given up (a full load's staged files) passes a [`TaskTracker`]:
//! the completion then runs as a task of its own that the one deleting can wait for.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use crate::error::{store_hint, StoreKind};

/// Size of each multipart part. S3 requires at least 5 MiB per part (except the last); 8 MiB
/// keeps a 128 MiB file at 16 parts while holding little memory per writer.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts uploaded concurrently per file. Each in-flight part holds `PART_SIZE` bytes, so this
/// bounds the upload memory of one writer to about `(1 + PART_CONCURRENCY) * PART_SIZE`.
const PART_CONCURRENCY: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Accepting bytes.
    Open,
    /// `complete` was called (successfully or not); the upload is finished or was cleaned up by
    /// object_store itself, and `BufWriter` must not be touched again.
    Completed,
    /// `abort` was called.
    Aborted,
}

/// An object under construction. Nothing is visible at `path` until [`AsyncFileWriter::complete`]
/// succeeds.
pub(crate) struct ObjectFile {
    /// `None` once a completion took it to run on `landing`.
    writer: Option<BufWriter>,
    state: State,
    /// Where a completion runs when it must end even if its caller is cancelled.
    landing: Option<TaskTracker>,
    kind: StoreKind,
    /// Advice for the last store error, kept because parquet wraps our error in its own type
    /// twice and the caller wants to say what to do.
    hint: Option<String>,
}

impl ObjectFile {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, kind: StoreKind) -> Self {
        Self {
            writer: Some(
                BufWriter::with_capacity(store, path, PART_SIZE)
                    .with_max_concurrency(PART_CONCURRENCY),
            ),
            state: State::Open,
            landing: None,
            kind,
            hint: None,
        }
    }

    /// Completes the object as a task of `landing`, which runs to its end when the caller of
    /// `complete` is cancelled: whoever deletes what was written waits for `landing` first.
    pub(crate) fn landing_on(mut self, landing: TaskTracker) -> Self {
        self.landing = Some(landing);
        self
    }

    /// Advice for the last store error, if one happened.
    pub(crate) fn take_hint(&mut self) -> Option<String> {
        self.hint.take()
    }

    /// Drops the upload so no object appears: aborts the multipart upload (removing uploaded
    /// parts, or the local staging file). Does nothing if the upload was already completed or
    /// aborted, or never left memory.
    pub(crate) async fn abort(&mut self) -> object_store::Result<()> {
        if self.state != State::Open {
            return Ok(());
        }
        self.state = State::Aborted;
        match self.writer.as_mut() {
            Some(writer) => writer.abort().await,
            None => Ok(()),
        }
    }

    fn store_error(&mut self, e: object_store::Error) -> ParquetError {
        self.hint = Some(store_hint(self.kind, Some(&e)));
        ParquetError::External(Box::new(e))
    }
}

impl AsyncFileWriter for ObjectFile {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if self.state != State::Open {
                return Err(ParquetError::General(
                    "write to an object that was already completed or aborted".into(),
                ));
            }
            let Some(writer) = self.writer.as_mut() else {
                return Err(ParquetError::General(
                    "write to an object whose completion was handed over".into(),
                ));
            };
            match writer.put(bs).await {
                Ok(()) => Ok(()),
                Err(e) => Err(self.store_error(e)),
            }
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if self.state != State::Open {
                return Err(ParquetError::General(
                    "complete on an object that was already completed or aborted".into(),
                ));
            }
            // Marked before shutting down: once shutdown has started, BufWriter::abort would
            // panic, and a failed completion is already cleaned up by object_store
            // (WriteMultipart::finish aborts the upload on error; a single PUT is atomic).
            self.state = State::Completed;
            let shutdown = match (self.landing.as_ref(), self.writer.take()) {
                (Some(landing), Some(mut writer)) => landing
                    .spawn(async move { writer.shutdown().await })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e))),
                (None, Some(mut writer)) => writer.shutdown().await,
                (_, None) => {
                    return Err(ParquetError::General(
                        "complete on an object whose completion was handed over".into(),
                    ))
                }
            };
            match shutdown {
                Ok(()) => Ok(()),
                Err(e) => {
                    // BufWriter reports store errors through std::io::Error; recover the
                    // original to give the right advice.
                    let e = match e.downcast::<object_store::Error>() {
                        Ok(store_error) => return Err(self.store_error(store_error)),
                        Err(io) => io,
                    };
                    self.hint = Some(store_hint(self.kind, None));
                    Err(ParquetError::External(Box::new(e)))
                }
            }
        }
        .boxed()
    }
}

/// Gives up a file being written: aborts its upload, so no partial object appears, and returns
/// the store's hint about why writing failed, if it had one.
pub(crate) async fn abandon(
    writer: parquet::arrow::AsyncArrowWriter<ObjectFile>,
    table: &str,
) -> Option<String> {
    let mut sink = writer.into_inner();
    let hint = sink.take_hint();
    // complete() may not have been reached (the footer failed to encode); abort is a no-op if
    // it was.
    if let Err(e) = sink.abort().await {
        tracing::warn!(table, error = %e, "aborting the upload failed");
    }
    hint
}
