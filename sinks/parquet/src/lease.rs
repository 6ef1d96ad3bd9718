//! A task's lease objects in the Parquet target's store (`<prefix>/_inlet/<task>/lease/`),
//! beside its checkpoint: [`inlet_core::lease::LeaseStore`] over object_store, with
//! create-if-absent as `PutMode::Create` (a hard link on a folder, `If-None-Match: *` on S3).

use futures::TryStreamExt;
use inlet_core::lease::{lease_epoch_of, lease_object_name, LeaseStore};
use inlet_core::sink::TargetError;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{store_hint, SinkError};
use crate::target::ParquetTarget;

/// One task's lease objects.
pub(crate) struct ParquetLease {
    target: ParquetTarget,
    task: String,
    dir: Path,
}

impl ParquetLease {
    pub(crate) fn new(target: &ParquetTarget, task: &str) -> Self {
        Self {
            target: target.clone(),
            task: task.to_string(),
            dir: target
                .prefix
                .clone()
                .join("_inlet")
                .join(task)
                .join("lease"),
        }
    }

    fn path(&self, epoch: u64) -> Path {
        self.dir.clone().join(lease_object_name(epoch))
    }

    fn error(&self, action: &'static str, path: &Path, e: object_store::Error) -> TargetError {
        SinkError::Store {
            subject: format!("the lease of task {}", self.task),
            action,
            location: self.target.location(path),
            hint: store_hint(self.target.kind, Some(&e)),
            source: Box::new(e),
        }
        .into()
    }
}

#[async_trait::async_trait]
impl LeaseStore for ParquetLease {
    fn location(&self) -> String {
        self.target.location(&self.dir)
    }

    async fn epochs(&self) -> Result<Vec<u64>, TargetError> {
        let listed: Vec<_> = self
            .target
            .store
            .list(Some(&self.dir))
            .try_collect()
            .await
            .map_err(|e| self.error("list", &self.dir, e))?;
        let mut epochs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(lease_epoch_of))
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, TargetError> {
        let path = self.path(epoch);
        match self.target.store.get(&path).await {
            Ok(got) => match got.bytes().await {
                Ok(bytes) => Ok(Some(bytes.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.error("read", &path, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("read", &path, e)),
        }
    }

    async fn create(&self, epoch: u64, record: Vec<u8>) -> Result<bool, TargetError> {
        let path = self.path(epoch);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .target
            .store
            .put_opts(&path, PutPayload::from(record), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error("create", &path, e)),
        }
    }

    async fn rewrite(&self, epoch: u64, record: Vec<u8>) -> Result<(), TargetError> {
        let path = self.path(epoch);
        self.target
            .store
            .put(&path, PutPayload::from(record))
            .await
            .map(|_| ())
            .map_err(|e| self.error("write", &path, e))
    }

    async fn remove(&self, epoch: u64) -> Result<(), TargetError> {
        let path = self.path(epoch);
        match self.target.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", &path, e)),
        }
    }
}
