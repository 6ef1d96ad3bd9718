//! Another engine (pyiceberg, tests/readers/foreign_commit.py) commits to a table inlet writes:
//! a rewrite of every data file (what a compaction does), a delete of rows, an expiry of the
//! older snapshots. inlet keeps the position of its own last snapshot, commits on top of the
//! foreign snapshots (its position deletes aimed at the files that are live now), and skips a
//! replay of changes it had committed, so rows the other engine deleted stay deleted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use inlet_core::Position;

/// Runs the foreign engine on a table folder; its JSON report.
fn foreign_commit(table_dir: &Path, op: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/foreign_commit.py");
    let out = std::process::Command::new(inlet_testkit::python())
        .arg(script)
        .arg(table_dir)
        .args(op)
        .output()
        .expect("run the foreign engine");
    assert!(
        out.status.success(),
        "pyiceberg {op:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["committed"], true, "{report}");
    report
}

fn update(id: i64, lsn: u64) -> Change {
    Change {
        op: "U",
        lsn,
        row: Row::make(id, lsn),
    }
}

fn assert_table(dir: &Path, model: &BTreeMap<i64, Row>) {
    assert_rows(
        &metadata_file(dir, "public", "foreign"),
        &COLUMNS,
        expected(model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_rewrite_delete_and_expiry_between_inlet_commits() {
    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("public/foreign");
    let t = table("foreign", true);
    let target = target(dir.path());
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();

    // Rows 0..300 over three commits (three data files), then updates of 0..20 at 40.
    let mut sink = target.upsert_table(&t).await.unwrap();
    for (k, lsn) in [(0i64, 10u64), (1, 20), (2, 30)] {
        let changes: Vec<Change> = (k * 100..k * 100 + 100)
            .map(|id| Change {
                op: "I",
                lsn,
                row: Row::make(id, 0),
            })
            .collect();
        apply_model(&mut model, &changes);
        sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
        sink.commit(Position(lsn)).await.unwrap();
    }
    let cold: Vec<Change> = (0..20).map(|id| update(id, 40)).collect();
    apply_model(&mut model, &cold);
    sink.apply(&t, &change_batch(&t, &cold)).await.unwrap();
    sink.commit(Position(40)).await.unwrap();

    // (a) A compaction by the other engine: every row moves to a new file, at a new row
    // position. inlet's open table still knows the old files; its next commit must find that
    // the table changed, aim its deletes at the live files, and commit on top.
    foreign_commit(&table_dir, &["rewrite"]);
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(40)),
        "the position of inlet's last snapshot, behind the foreign one"
    );
    let changes = vec![
        update(150, 50),
        update(250, 50),
        Change {
            op: "D",
            lsn: 50,
            row: Row::make(60, 0),
        },
        Change {
            op: "I",
            lsn: 50,
            row: Row::make(1000, 50),
        },
    ];
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    let summary = sink.commit(Position(50)).await.unwrap();
    assert!(summary.committed);
    assert_eq!(summary.rows_deleted, 3, "two updates and a delete");
    assert_eq!(sink.committed_position(), Some(Position(50)));
    assert_table(dir.path(), &model);

    // (b) The other engine deletes rows 0..20; then a restart replays from a checkpoint below
    // the table's position (a crash between the table commit and the checkpoint): the updates
    // of those rows at 40 and everything up to 50 are skipped, nothing comes back.
    let report = foreign_commit(&table_dir, &["delete", "id < 20"]);
    assert_eq!(report["touched"], 20, "{report}");
    for id in 0..20 {
        model.remove(&id);
    }
    drop(sink);
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(50)));
    assert_eq!(sink.indexed_rows(), model.len());
    sink.apply(&t, &change_batch(&t, &cold)).await.unwrap();
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    assert_eq!(sink.pending_rows(), 0, "a replay of committed changes");
    let more = vec![update(20, 60), update(299, 60)];
    apply_model(&mut model, &more);
    sink.apply(&t, &change_batch(&t, &more)).await.unwrap();
    sink.commit(Position(60)).await.unwrap();
    assert_table(dir.path(), &model);

    // (c) The other engine expires every snapshot but its own current one, then compacts
    // again: inlet's snapshots are gone from the history, its position is not.
    foreign_commit(&table_dir, &["expire"]);
    foreign_commit(&table_dir, &["rewrite"]);
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(60))
    );
    let last = vec![
        update(21, 70),
        Change {
            op: "D",
            lsn: 70,
            row: Row::make(299, 60),
        },
    ];
    apply_model(&mut model, &last);
    sink.apply(&t, &change_batch(&t, &last)).await.unwrap();
    let summary = sink.commit(Position(70)).await.unwrap();
    assert_eq!(summary.rows_deleted, 2);
    drop(sink);
    let sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(70)));
    assert_eq!(sink.indexed_rows(), model.len());
    assert_table(dir.path(), &model);
}

/// Two instances of the same task writing one table is not a foreign commit: the second
/// commit is still refused (the daemon restarts from its checkpoint), never retried on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_the_same_task_still_loses() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("foreign", true);
    let target = target(dir.path());
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();
    let mut sink = target.upsert_table(&t).await.unwrap();
    let changes: Vec<Change> = (0..10)
        .map(|id| Change {
            op: "I",
            lsn: 10,
            row: Row::make(id, 0),
        })
        .collect();
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    sink.commit(Position(10)).await.unwrap();
    drop(sink);
    assert_second_writer_loses(&target, &t, &mut model, 10).await;
    assert_table(dir.path(), &model);
}
