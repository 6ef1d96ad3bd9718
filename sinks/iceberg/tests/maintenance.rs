//! Maintenance: rewriting files with many deletes and compacting small ones (the table reads the
//! same before and after, through both readers), expiring snapshots, deleting unreferenced
//! files but never ones a live snapshot needs or ones younger than the grace period.

mod common;

use std::collections::BTreeMap;

use common::*;
use inlet_core::Position;
use inlet_sink_iceberg::MaintenanceConfig;

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_rewrites_expires_and_cleans_and_the_table_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(
        dir.path(),
        "cdc_file_size_mb = 1\npartition = { \"public.kept\" = [\"bucket[2](id)\"] }",
    );
    let t = table("kept", true);
    let mut model: BTreeMap<i64, Row> = (0..1000).map(|i| (i, Row::make(i, 0))).collect();
    let load = target.full_load(&t).await.unwrap();
    let mut w = load.writer();
    let rows: Vec<Row> = model.values().cloned().collect();
    w.write(&load_batch(&t, &rows)).await.unwrap();
    w.close().await.unwrap();
    load.finish(Some(Position(100))).await.unwrap();

    let mut rng = Rng(0xC0FFEE);
    let (mut next_id, mut lsn) = (50_000i64, 100u64);
    let mut sink = target.upsert_table(&t).await.unwrap();
    for _ in 0..10 {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 150);
        apply_model(&mut model, &changes);
        sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
    }
    let meta = metadata_file(dir.path(), "public", "kept");
    let before = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let files_before = before["pyiceberg"]["files"].as_array().unwrap().len();
    let snapshots_before = before["pyiceberg"]["snapshots"].as_i64().unwrap();

    // A file of a commit in flight: unreferenced, but young.
    let in_flight = dir.path().join("public/kept/data/in-flight.parquet");
    std::fs::write(&in_flight, b"not yet committed").unwrap();

    let config = MaintenanceConfig {
        rewrite_deleted_fraction: 0.05,
        small_file_mb: 64,
        expire_snapshots_hours: 1,
        keep_snapshots: 3,
        orphan_grace_minutes: 30,
        ..Default::default()
    };
    // Now: nothing is old enough to expire or delete, but files are rewritten.
    let report = sink.maintain(&config, chrono::Utc::now()).await.unwrap();
    assert!(report.rewritten_files > 2, "{report:?}");
    assert!(report.added_files >= 1, "{report:?}");
    assert!(report.purged_deleted_rows > 0, "{report:?}");
    assert!(report.removed_delete_files > 0, "{report:?}");
    assert_eq!(report.expired_snapshots, 0, "{report:?}");
    assert_eq!(report.deleted_objects, 0, "{report:?}");
    assert_eq!(sink.committed_position(), Some(Position(lsn)));
    assert_eq!(sink.indexed_rows(), model.len());

    let meta = metadata_file(dir.path(), "public", "kept");
    let after = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let py = &after["pyiceberg"];
    assert_eq!(py["summary"]["operation"], "replace");
    assert_eq!(py["summary"]["inlet.position"], format!("{lsn:016X}"));
    let files_after = py["files"].as_array().unwrap().len();
    assert!(
        files_after < files_before,
        "{files_after} files after, {files_before} before"
    );
    // Two buckets: at most one compacted file per bucket and no delete files left.
    assert!(files_after <= 2, "{}", py["files"]);

    // Later: old snapshots expire and their files, and the stale in-flight file, go.
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let report = sink.maintain(&config, later).await.unwrap();
    assert_eq!(report.rewritten_files, 0, "{report:?}");
    assert_eq!(
        report.expired_snapshots as i64,
        snapshots_before + 1 - 3,
        "{report:?}"
    );
    // The expired snapshots' manifest lists and the stale in-flight file; the rewritten data
    // files are still needed by the two kept snapshots before the rewrite.
    assert!(report.deleted_objects >= 10, "{report:?}");
    assert!(!in_flight.exists());
    // Keeping only the current snapshot frees the rewritten files too.
    let only_current = MaintenanceConfig {
        keep_snapshots: 1,
        ..config.clone()
    };
    let report = sink.maintain(&only_current, later).await.unwrap();
    assert_eq!(report.expired_snapshots, 2, "{report:?}");
    assert!(report.deleted_objects > 10, "{report:?}");
    let meta = metadata_file(dir.path(), "public", "kept");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(got["pyiceberg"]["snapshots"], 1);
    // Every remaining data file is one the table references.
    let live: std::collections::BTreeSet<String> = got["pyiceberg"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("file://")
                .to_string()
        })
        .collect();
    let on_disk: std::collections::BTreeSet<String> =
        files_under(&dir.path().join("public/kept/data"))
            .into_iter()
            .map(|p| std::fs::canonicalize(p).unwrap().display().to_string())
            .collect();
    let live: std::collections::BTreeSet<String> = live
        .into_iter()
        .map(|p| {
            std::fs::canonicalize(&p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .display()
                .to_string()
        })
        .collect();
    // Exactly the current snapshot's files remain.
    assert_eq!(live, on_disk);

    // The table keeps working: more upserts after maintenance, and a reopen.
    for _ in 0..3 {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 150);
        apply_model(&mut model, &changes);
        sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
    }
    drop(sink);
    let sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.indexed_rows(), model.len());
    let meta = metadata_file(dir.path(), "public", "kept");
    assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_refuses_to_run_with_pending_changes() {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path());
    let t = table("pending", true);
    let mut sink = target.upsert_table(&t).await.unwrap();
    let change = Change {
        op: "I",
        lsn: 5,
        row: Row::make(1, 5),
    };
    sink.apply(&t, &change_batch(&t, &[change])).await.unwrap();
    let err = sink
        .maintain(&MaintenanceConfig::default(), chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("commit"), "{err}");
    // Still usable: the commit goes through.
    sink.commit(Position(5)).await.unwrap();
    let report = sink
        .maintain(&MaintenanceConfig::default(), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(report.rewritten_files, 0);
}

/// Cleanup by a handle whose view is older than the table (another writer committed since:
/// another engine, or the task's new owner while this daemon was paused) keeps the files of the
/// later commits, however old they are, as the table's latest metadata references them; a file
/// nobody references still goes. (Before, the view's own snapshots decided, and the later
/// commits' data files were deleted: the table could no longer be read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_by_a_stale_view_keeps_the_files_of_later_commits() {
    let dir = tempfile::tempdir().unwrap();
    let target = target(dir.path());
    let t = table("stale", true);
    let mut model: BTreeMap<i64, Row> = (0..100).map(|i| (i, Row::make(i, 0))).collect();
    let load = target.full_load(&t).await.unwrap();
    let mut w = load.writer();
    let rows: Vec<Row> = model.values().cloned().collect();
    w.write(&load_batch(&t, &rows)).await.unwrap();
    w.close().await.unwrap();
    load.finish(Some(Position(100))).await.unwrap();

    let mut stale = target.upsert_table(&t).await.unwrap();
    let mut fresh = target.upsert_table(&t).await.unwrap();
    // Inserts only, in two commits: data files, no deletes.
    for (lsn, ids) in [(200u64, 1000..1050), (300, 1050..1100)] {
        let changes: Vec<Change> = ids
            .map(|id| Change {
                op: "I",
                lsn,
                row: Row::make(id, 1),
            })
            .collect();
        apply_model(&mut model, &changes);
        fresh.apply(&t, &change_batch(&t, &changes)).await.unwrap();
        fresh.commit(Position(lsn)).await.unwrap();
    }
    let orphan = dir.path().join("public/stale/data/orphan.parquet");
    std::fs::write(&orphan, b"written by a commit that failed").unwrap();

    // Nothing to rewrite or expire: the stale handle commits nothing and goes to the cleanup.
    let config = MaintenanceConfig {
        rewrite_deleted_fraction: 1.5,
        small_file_mb: 0,
        expire_snapshots_hours: 100_000,
        keep_snapshots: 100,
        orphan_grace_minutes: 30,
        ..Default::default()
    };
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let report = stale.maintain(&config, later).await.unwrap();
    assert_eq!(report.rewritten_files, 0, "{report:?}");
    assert_eq!(report.deleted_objects, 1, "{report:?}");
    assert!(!orphan.exists());
    let meta = metadata_file(dir.path(), "public", "stale");
    assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}
