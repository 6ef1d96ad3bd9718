//! A task's lease objects in the warehouse (`<warehouse>/_inlet/<task>/lease/`), beside its
//! checkpoint: [`inlet_core::lease::LeaseStore`] over the warehouse's store, created with
//! create-if-absent writes as the folder catalog's metadata versions are.

use bytes::Bytes;
use inlet_core::lease::{lease_epoch_of, lease_object_name, LeaseStore};
use inlet_core::sink::TargetError;
use object_store::path::Path;

use crate::store::Warehouse;

/// One task's lease objects.
pub(crate) struct IcebergLease {
    warehouse: Warehouse,
    subject: String,
    dir: Path,
}

impl IcebergLease {
    pub(crate) fn new(warehouse: &Warehouse, task: &str) -> Self {
        Self {
            warehouse: warehouse.clone(),
            subject: format!("the lease of task {task}"),
            dir: warehouse
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
}

#[async_trait::async_trait]
impl LeaseStore for IcebergLease {
    fn location(&self) -> String {
        self.warehouse.uri(&self.dir)
    }

    async fn epochs(&self) -> Result<Vec<u64>, TargetError> {
        let listed = self.warehouse.list(&self.subject, &self.dir).await?;
        let mut epochs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(lease_epoch_of))
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, TargetError> {
        let got = self.warehouse.get(&self.subject, &self.path(epoch)).await?;
        Ok(got.map(|b| b.to_vec()))
    }

    async fn create(&self, epoch: u64, record: Vec<u8>) -> Result<bool, TargetError> {
        Ok(self
            .warehouse
            .put_if_absent(&self.subject, &self.path(epoch), Bytes::from(record))
            .await?)
    }

    async fn rewrite(&self, epoch: u64, record: Vec<u8>) -> Result<(), TargetError> {
        Ok(self
            .warehouse
            .put(&self.subject, &self.path(epoch), Bytes::from(record))
            .await?)
    }

    async fn remove(&self, epoch: u64) -> Result<(), TargetError> {
        Ok(self
            .warehouse
            .delete(&self.subject, vec![self.path(epoch)])
            .await?)
    }
}
