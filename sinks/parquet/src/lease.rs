//! A task's lease objects in the Parquet target's store (`<prefix>/_inlet/<task>/lease/`),
//! beside its checkpoint: [`inlet_core::lease::LeaseStore`] over object_store, with
//! create-if-absent as `PutMode::Create` (a hard link on a folder, `If-None-Match: *` on S3).
//!
//! On S3 the task checkpoint is also written conditionally ([`CheckpointVersions`]): each write
//! replaces only the version this target last read or wrote (`If-Match`), so a former owner's
//! checkpoint write that slipped past its lease's fence cannot silently replace the new owner's,
//! nor the new owner's go over it unseen. A local folder has no conditional replace
//! (object_store's LocalFileSystem refuses `PutMode::Update`): there the lease's fence alone
//! guards the checkpoint.

use futures::TryStreamExt;
use inlet_core::lease::{lease_epoch_of, lease_object_name, LeaseStore};
use inlet_core::sink::TargetError;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use object_store::{ObjectMeta, PutResult, UpdateVersion};

use crate::error::{store_hint, SinkError, StoreKind};
use crate::target::ParquetTarget;

/// The version of each checkpoint as a target last read or wrote it. Cheap to clone; clones
/// share it.
#[derive(Clone, Default)]
pub(crate) struct CheckpointVersions(Arc<Mutex<HashMap<Path, UpdateVersion>>>);

impl CheckpointVersions {
    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<Path, UpdateVersion>> {
        // A map of plain values, changed in single inserts: a panic elsewhere leaves it whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, path: &Path, e_tag: Option<String>, version: Option<String>) {
        if e_tag.is_some() || version.is_some() {
            self.versions()
                .insert(path.clone(), UpdateVersion { e_tag, version });
        }
    }

    /// The checkpoint at `path` was read as `meta`.
    pub(crate) fn read(&self, path: &Path, meta: &ObjectMeta) {
        self.remember(path, meta.e_tag.clone(), meta.version.clone());
    }

    /// The checkpoint at `path` was written.
    pub(crate) fn written(&self, path: &Path, result: PutResult) {
        self.remember(path, result.e_tag, result.version);
    }

    /// How to write the checkpoint at `path`: on S3, replacing only the version last read or
    /// written here when there is one; otherwise whole.
    pub(crate) fn put_options(&self, kind: StoreKind, path: &Path) -> PutOptions {
        let known = self.versions().get(path).cloned();
        let mode = match (kind, known) {
            (StoreKind::S3, Some(version)) => PutMode::Update(version),
            _ => PutMode::Overwrite,
        };
        PutOptions {
            mode,
            ..Default::default()
        }
    }
}

impl ParquetTarget {
    /// Writes the checkpoint at `path`: on S3 only over the version this target last read or
    /// wrote (a store that does not take conditional writes, `aws_conditional_put = disabled`,
    /// gets a plain write).
    pub(crate) async fn put_checkpoint(
        &self,
        path: &Path,
        payload: PutPayload,
    ) -> Result<(), object_store::Error> {
        let opts = self.checkpoint_versions.put_options(self.kind, path);
        let conditional = matches!(opts.mode, PutMode::Update(_));
        let written = match self.store.put_opts(path, payload.clone(), opts).await {
            Err(object_store::Error::NotImplemented { .. }) if conditional => {
                self.store.put(path, payload).await
            }
            other => other,
        };
        written
            .map(|w| self.checkpoint_versions.written(path, w))
            .map_err(checkpoint_moved)
    }
}

/// A conditional checkpoint write the store refused: another daemon wrote the checkpoint since
/// this one last read or wrote it. Told as a transient store error (object_store's `Generic`),
/// so the task restarts from the checkpoint: a former owner is then stopped by its lease, and
/// the owner reads the checkpoint again.
fn checkpoint_moved(e: object_store::Error) -> object_store::Error {
    match e {
        object_store::Error::Precondition { path, source } => object_store::Error::Generic {
            store: "checkpoint",
            source: format!(
                "{path} was written by another daemon since this one last read or wrote it \
                 ({source}); the task restarts from the checkpoint"
            )
            .into(),
        },
        other => other,
    }
}

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

#[cfg(test)]
mod tests {
    use inlet_core::{Checkpoint, Position};

    use crate::{ParquetTarget, ParquetTargetConfig};

    fn on_moto(endpoint: &str) -> ParquetTarget {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let config: ParquetTargetConfig =
            toml::from_str(r#"url = "s3://inlet-test/raw""#).expect("config");
        ParquetTarget::with_s3_builder(&config, || {
            AmazonS3Builder::new()
                .with_config(AmazonS3ConfigKey::Endpoint, endpoint)
                .with_access_key_id("testing")
                .with_secret_access_key("testing")
                .with_region("us-east-1")
        })
        .expect("s3 target")
    }

    fn at(position: u64) -> Checkpoint {
        Checkpoint {
            position: Position(position),
            ..Default::default()
        }
    }

    /// On S3 each checkpoint write replaces only the version its target last read or wrote:
    /// a former owner's write after the new owner's is refused (transient: the task restarts
    /// and its lease stops it), and the new owner's checkpoint stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_written_since_this_target_last_saw_it_is_not_replaced() {
        let mut moto = inlet_testkit::Moto::start();
        moto.create_bucket("inlet-test");
        let former = on_moto(&moto.endpoint);
        let owner = on_moto(&moto.endpoint);
        former
            .write_checkpoint("t", &at(1))
            .await
            .expect("first write");
        former
            .write_checkpoint("t", &at(2))
            .await
            .expect("its own version");
        assert_eq!(owner.read_checkpoint("t").await.unwrap(), Some(at(2)));
        owner
            .write_checkpoint("t", &at(3))
            .await
            .expect("over what it read");

        let e = former.write_checkpoint("t", &at(4)).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            e.to_string().contains("raw/_inlet/t/checkpoint")
                && format!("{e:?}")
                    .contains("was written by another daemon since this one last read or wrote it"),
            "{e:?}"
        );
        let fresh = on_moto(&moto.endpoint);
        assert_eq!(fresh.read_checkpoint("t").await.unwrap(), Some(at(3)));
        owner
            .write_checkpoint("t", &at(5))
            .await
            .expect("the owner goes on");
        assert_eq!(fresh.read_checkpoint("t").await.unwrap(), Some(at(5)));
    }
}
