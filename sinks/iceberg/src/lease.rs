//! A task's lease objects in the warehouse (`<warehouse>/_inlet/<task>/lease/`), beside its
//! checkpoint: [`inlet_core::lease::LeaseStore`] over the warehouse's store, created with
//! create-if-absent writes as the folder catalog's metadata versions are.
//!
//! Iceberg commits are fenced for real: each commit of an owned task records the owner's
//! epoch in the table property `inlet.owner.<task>`, and a commit is refused when the table's
//! metadata holds a higher one. The catalog swaps metadata versions atomically, so a commit
//! that races the new owner's first commit conflicts, reloads, sees its epoch and stops.

use bytes::Bytes;
use inlet_core::lease::{lease_epoch_of, lease_object_name, LeaseStore};
use inlet_core::sink::TargetError;
use object_store::path::Path;

use crate::snapshot::TableCatalog;
use crate::store::Warehouse;
use crate::IcebergError;

/// Table property holding the lease epoch of the daemon that last committed for `task`.
pub(crate) fn owner_property(task: &str) -> String {
    format!("inlet.owner.{task}")
}

/// `builder` with the owner's epoch recorded for `task`, or an error when `metadata` (the
/// version the commit builds on) already holds a higher one: another daemon took the task and
/// committed, so this one must not. Unchanged when the task runs under no lease.
pub(crate) fn owned_by(
    builder: iceberg::spec::TableMetadataBuilder,
    metadata: &iceberg::spec::TableMetadata,
    task: &str,
    table: &TableCatalog,
) -> Result<iceberg::spec::TableMetadataBuilder, IcebergError> {
    let epoch = table.owner_epoch.load(std::sync::atomic::Ordering::Relaxed);
    if epoch == 0 {
        return Ok(builder);
    }
    let key = owner_property(task);
    let recorded = metadata
        .properties()
        .get(&key)
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(newer) = recorded.filter(|&r| r > epoch) {
        return Err(IcebergError::state(
            table.ident.to_string(),
            format!(
                "task {task} was taken by another daemon: the table records lease epoch {newer} \
                 ({key}), newer than this daemon's {epoch}; this daemon does not commit"
            ),
        ));
    }
    builder
        .set_properties(std::collections::HashMap::from([(key, epoch.to_string())]))
        .map_err(|e| {
            IcebergError::metadata(
                table.ident.to_string(),
                "cannot record the owner's lease epoch as a table property",
                e,
            )
        })
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field};
    use inlet_core::sink::Sink;
    use inlet_core::{change_schema, Column, Position, TableChanges, TableId, TableSchema};

    use crate::IcebergTarget;

    fn target(dir: &std::path::Path, epoch: u64) -> IcebergTarget {
        let text = format!("warehouse = \"file://{}\"\n", dir.display());
        let config: crate::IcebergTargetConfig = toml::from_str(&text).unwrap();
        let mut target = IcebergTarget::new(&config, "t").unwrap();
        target.set_owner_epoch(epoch);
        target
    }

    fn table() -> TableSchema {
        let col = |name: &str| Column {
            name: name.into(),
            source_type: "bigint".into(),
            field: Field::new(name, DataType::Int64, true),
            distinct_values: None,
        };
        TableSchema {
            id: TableId::new("public", "items"),
            columns: vec![col("id"), col("qty")],
            primary_key: vec!["id".into()],
        }
    }

    fn insert(table: &TableSchema, id: i64, position: u64) -> TableChanges {
        let batch = RecordBatch::try_new(
            change_schema(table),
            vec![
                Arc::new(StringArray::from(vec!["I"])),
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![position as i64])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![id])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .unwrap();
        TableChanges {
            table: 0,
            schema: table.clone(),
            batch,
            first: Position(position),
            last: Position(position),
            commit_time_micros: 0,
            part: None,
        }
    }

    /// The owner of epoch 1 commits; the owner of epoch 2 takes over and commits; the first,
    /// continued, cannot commit any more: neither on its stale table (the catalog's swap
    /// conflicts) nor on the table reopened (it records epoch 2).
    #[tokio::test]
    async fn a_commit_under_an_older_epoch_than_the_tables_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        let first = target(dir.path(), 1);
        let mut stale = first.change_table(&t).await.unwrap();
        stale.write(insert(&t, 1, 0x10)).await.unwrap();
        stale.commit(Position(0x10)).await.unwrap();

        let second = target(dir.path(), 2);
        let mut taken = second.change_table(&t).await.unwrap();
        taken.write(insert(&t, 2, 0x20)).await.unwrap();
        taken.commit(Position(0x20)).await.unwrap();

        stale.write(insert(&t, 3, 0x30)).await.unwrap();
        assert!(stale.commit(Position(0x30)).await.is_err());
        let mut reopened = first.change_table(&t).await.unwrap();
        assert_eq!(
            reopened.committed_position(&t).await.unwrap(),
            Some(Position(0x20))
        );
        reopened.write(insert(&t, 3, 0x30)).await.unwrap();
        let e = reopened.commit(Position(0x30)).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert!(
            e.to_string().contains(
                "task t was taken by another daemon: the table records lease epoch 2 \
                 (inlet.owner.t), newer than this daemon's 1"
            ),
            "{e}"
        );
        // The new owner goes on.
        taken.write(insert(&t, 4, 0x40)).await.unwrap();
        taken.commit(Position(0x40)).await.unwrap();
        let mut last = second.change_table(&t).await.unwrap();
        assert_eq!(
            last.committed_position(&t).await.unwrap(),
            Some(Position(0x40))
        );
        last.write(insert(&t, 5, 0x50)).await.unwrap();
        last.commit(Position(0x50)).await.unwrap();
    }
}
