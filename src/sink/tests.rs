//! The fence around the target's writes, with a real Parquet target in a folder.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field};
use inlet_core::{Column, Position, TableChanges, TableId, TableSchema};

use super::*;
use crate::lease::{DaemonId, LeaseTiming, LeaseWatch};

fn table() -> TableSchema {
    TableSchema {
        id: TableId::new("app", "paused"),
        columns: vec![Column {
            name: "id".into(),
            source_type: "integer".into(),
            field: Field::new("id", DataType::Int32, false),
            distinct_values: None,
        }],
        primary_key: vec!["id".into()],
    }
}

fn changes(table: &TableSchema) -> TableChanges {
    let batch = RecordBatch::try_new(
        inlet_core::change_schema(table),
        vec![
            Arc::new(StringArray::from(vec!["I"])),
            Arc::new(TimestampMicrosecondArray::from(vec![1_000_000]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![0x20])),
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(Int32Array::from(vec![1])),
        ],
    )
    .expect("change batch");
    TableChanges {
        table: 0,
        schema: table.clone(),
        batch,
        first: Position(0x20),
        last: Position(0x20),
        commit_time_micros: 1_000_000,
        part: None,
    }
}

/// A table whose writes take as long as a daemon paused in the middle of one.
struct PausedWrites {
    files: Box<dyn sink::ChangeTable>,
    pause: Duration,
}

#[async_trait::async_trait]
impl sink::ChangeTable for PausedWrites {
    async fn committed_position(
        &self,
        table: &TableSchema,
    ) -> Result<Option<Position>, sink::TargetError> {
        self.files.committed_position(table).await
    }
    async fn write(&mut self, changes: TableChanges) -> Result<Written, sink::TargetError> {
        tokio::time::sleep(self.pause).await;
        self.files.write(changes).await
    }
    async fn withdraw_last_write(&mut self) -> Result<(), sink::TargetError> {
        self.files.withdraw_last_write().await
    }
    async fn commit(&mut self, position: Position) -> Result<Written, sink::TargetError> {
        self.files.commit(position).await
    }
}

fn change_files(dir: &std::path::Path) -> Vec<String> {
    let folder = dir.join("app").join("paused");
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A change file whose write was under way when the daemon lost the task's lease (a pause
/// past the lease, then SIGCONT: the write lands as the process continues, after another
/// daemon took the task and began writing the same changes) is taken back: the write fails
/// as a lost lease, and no file of it is left (the fleet test once found such a file
/// overlapping the new owner's, its changes replayed twice). The same write within the lease
/// lands and stays.
#[tokio::test]
async fn a_change_file_landing_after_the_lease_was_lost_is_taken_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config: TargetConfig = TargetConfig::Parquet(
        toml::from_str(&format!("url = {:?}", dir.path().to_str().expect("utf-8")))
            .expect("parquet target"),
    );
    let task = "a_change_file_landing_after_the_lease_was_lost";
    let lease_store: Arc<dyn inlet_core::lease::LeaseStore> = Arc::from(
        Target::new(&config, task)
            .expect("target")
            .lease_store(task)
            .expect("a folder keeps leases"),
    );
    let timing = LeaseTiming::new(3);
    let mut watch = LeaseWatch::new(task, lease_store, timing, DaemonId::this_process());
    let fence = watch.take(1).await.expect("take").expect("won");
    let _registered = crate::lease::register(task, fence);
    let target = Target::new(&config, task).expect("target");
    let schema = table();

    for (pause, lost) in [
        (Duration::ZERO, false),
        (timing.writes_within + Duration::from_millis(200), true),
    ] {
        let mut opened = target.change_table(&schema).await.expect("change table");
        let files = std::mem::replace(&mut opened.table, Box::new(NoWrites));
        opened.table = Box::new(PausedWrites { files, pause });
        let written = opened.write(changes(&schema)).await;
        if lost {
            let Err(e) = written else {
                panic!("a write that outlived the lease must fail");
            };
            assert!(
                e.message().contains("last renewed its lease"),
                "{}",
                e.message()
            );
            assert_eq!(change_files(dir.path()), Vec::<String>::new());
        } else {
            assert_eq!(written.expect("written within the lease").rows, 1);
            assert_eq!(change_files(dir.path()).len(), 1);
            std::fs::remove_dir_all(dir.path().join("app")).expect("clear");
        }
    }
}

/// A placeholder while the real table is moved into [`PausedWrites`].
struct NoWrites;

#[async_trait::async_trait]
impl sink::ChangeTable for NoWrites {
    async fn committed_position(
        &self,
        _: &TableSchema,
    ) -> Result<Option<Position>, sink::TargetError> {
        Ok(None)
    }
    async fn write(&mut self, _: TableChanges) -> Result<Written, sink::TargetError> {
        Ok(Written::default())
    }
    async fn commit(&mut self, _: Position) -> Result<Written, sink::TargetError> {
        Ok(Written::default())
    }
}
