//! Task ownership as a target store keeps it: the objects of a task's lease, one per epoch
//! (`_inlet/<task>/lease/<epoch, 20 digits>` beside the task checkpoint). A daemon takes a task
//! by creating the next epoch's object (create-if-absent, so one taker of an epoch wins) and
//! renews it by rewriting its own epoch's object. The rules (expiry, fencing) are the daemon's;
//! a sink only stores the objects, through its own store (a folder or S3).

use crate::sink::TargetError;

/// The lease objects of one task in a target store.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Where the lease objects are, for messages; never credentials.
    fn location(&self) -> String;
    /// The epochs that have an object, ascending.
    async fn epochs(&self) -> Result<Vec<u64>, TargetError>;
    /// The record of `epoch`, or None if it has no object.
    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, TargetError>;
    /// Creates the object of `epoch` unless one exists: false when another writer created it
    /// first (a conditional write: S3 `If-None-Match: *`, a hard link on a folder).
    async fn create(&self, epoch: u64, record: Vec<u8>) -> Result<bool, TargetError>;
    /// Replaces the record of `epoch` (the owner's renewal, or its release).
    async fn rewrite(&self, epoch: u64, record: Vec<u8>) -> Result<(), TargetError>;
    /// Deletes the object of an old epoch (missing is fine).
    async fn remove(&self, epoch: u64) -> Result<(), TargetError>;
}

/// The object name of `epoch`: zero-padded so that names sort as numbers.
pub fn lease_object_name(epoch: u64) -> String {
    format!("{epoch:020}")
}

/// The epoch an object name holds, or None for another name.
pub fn lease_epoch_of(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_sort_as_epochs_and_round_trip() {
        assert_eq!(lease_object_name(7), "00000000000000000007");
        assert!(lease_object_name(9) < lease_object_name(10));
        assert_eq!(lease_epoch_of(&lease_object_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(lease_epoch_of("checkpoint"), None);
        assert_eq!(lease_epoch_of("0000000000000000000x"), None);
    }
}
