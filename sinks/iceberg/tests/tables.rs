//! End-to-end tests of the Iceberg sink on a folder warehouse: every table written is read back
//! by pyiceberg and DuckDB and compared, row by row and type by type, with a model.

mod common;

use std::collections::BTreeMap;

use common::*;
use inlet_core::Position;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_commits_one_snapshot_and_a_rerun_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("orders", true);
    let target = target(dir.path());
    target.check().await.unwrap();

    let load = target.full_load(&t).await.unwrap();
    let rows: Vec<Row> = (0..3000).map(|i| Row::make(i, 0)).collect();
    // Two parallel writers, each with several batches.
    let mut handles = Vec::new();
    for part in rows.chunks(1500) {
        let load = load.clone();
        let batch_rows = part.to_vec();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut w = load.writer();
            for chunk in batch_rows.chunks(400) {
                w.write(&load_batch(&t, chunk)).await.unwrap();
            }
            w.close().await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let summary = load.finish(Some(Position(0x2A))).await.unwrap();
    assert_eq!(summary.rows, 3000);
    assert_eq!(summary.files, 2);

    let meta = metadata_file(dir.path(), "public", "orders");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        rows.iter().map(Row::canonical).collect(),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let py = &got["pyiceberg"];
    assert_eq!(py["format_version"], 2);
    assert_eq!(py["identifier_field_ids"], serde_json::json!([1]));
    let fields = py["fields"].as_array().unwrap();
    let ids: Vec<i64> = fields.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(fields[3]["doc"], "numeric(12,2)");
    assert_eq!(fields[4]["type"], "timestamptz");
    assert_eq!(fields[0]["required"], true);
    assert_eq!(py["summary"]["inlet.position"], "000000000000002A");
    assert_eq!(py["summary"]["inlet.task"], "test-task");
    assert_eq!(py["summary"]["operation"], "append");
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(0x2A))
    );

    // A re-run replaces the contents.
    let load = target.full_load(&t).await.unwrap();
    let rows2: Vec<Row> = (500..1200).map(|i| Row::make(i, 9)).collect();
    let mut w = load.writer();
    w.write(&load_batch(&t, &rows2)).await.unwrap();
    w.close().await.unwrap();
    load.finish(Some(Position(0x30))).await.unwrap();
    let meta = metadata_file(dir.path(), "public", "orders");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        rows2.iter().map(Row::canonical).collect(),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(got["pyiceberg"]["summary"]["operation"], "overwrite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_with_a_dropped_writer_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("dropped", true);
    let target = target(dir.path());
    let load = target.full_load(&t).await.unwrap();
    let mut w = load.writer();
    w.write(&load_batch(&t, &[Row::make(1, 0)])).await.unwrap();
    drop(w);
    let err = load.finish(None).await.unwrap_err().to_string();
    assert!(err.contains("restart the load"), "{err}");
    assert_eq!(target.committed_position(&t.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workload_with_restarts_and_crashes_equals_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("accounts", true);
    // Tiny CDC files so commits roll several files.
    let target = target_with(dir.path(), "cdc_file_size_mb = 1");
    let mut rng = Rng(0x05EE_D1CE);

    // Full load of 500 rows at position 100.
    let mut model: BTreeMap<i64, Row> = (0..500).map(|i| (i, Row::make(i, 0))).collect();
    let load = target.full_load(&t).await.unwrap();
    let mut w = load.writer();
    let rows: Vec<Row> = model.values().cloned().collect();
    w.write(&load_batch(&t, &rows)).await.unwrap();
    w.close().await.unwrap();
    load.finish(Some(Position(100))).await.unwrap();

    let mut next_id = 10_000i64;
    let mut lsn = 100u64;
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(100)));
    assert_eq!(sink.indexed_rows(), 500);
    // Every change sent so far, so a restart can re-send from the committed position.
    let mut log: Vec<Change> = Vec::new();
    let mut committed_model = model.clone();
    let mut last_committed = 100u64;

    for round in 0..24 {
        let changes = random_changes(&mut rng, &model, &mut next_id, &mut lsn, 300);
        apply_model(&mut model, &changes);
        log.extend(changes.iter().cloned());
        // Two apply calls per round, so replacements cross batch boundaries.
        let (a, b) = changes.split_at(changes.len() / 2);
        sink.apply(&t, &change_batch(&t, a)).await.unwrap();
        sink.apply(&t, &change_batch(&t, b)).await.unwrap();
        if round == 11 {
            // TRUNCATE, then refill a few rows, in the same commit.
            lsn += 1;
            let mut refill = vec![Change {
                op: "T",
                lsn,
                row: Row::make(0, 0),
            }];
            for id in 0..20 {
                lsn += 1;
                refill.push(Change {
                    op: "I",
                    lsn,
                    row: Row::make(id, lsn),
                });
            }
            apply_model(&mut model, &refill);
            log.extend(refill.iter().cloned());
            sink.apply(&t, &change_batch(&t, &refill)).await.unwrap();
        }
        match round % 4 {
            // kill -9 before the commit: the work is lost; reopen and re-send everything
            // after the committed position (plus some already-committed changes, which must
            // be skipped).
            3 => {
                drop(sink);
                sink = target.upsert_table(&t).await.unwrap();
                let resume = sink.committed_position().unwrap();
                assert_eq!(resume, Position(last_committed));
                let from = log
                    .iter()
                    .position(|c| c.lsn > resume.0)
                    .unwrap_or(log.len());
                let resend = &log[from.saturating_sub(50)..];
                for chunk in resend.chunks(250) {
                    sink.apply(&t, &change_batch(&t, chunk)).await.unwrap();
                }
                sink.commit(Position(lsn)).await.unwrap();
                committed_model = model.clone();
                last_committed = lsn;
            }
            // Clean restart after a commit.
            1 => {
                sink.commit(Position(lsn)).await.unwrap();
                committed_model = model.clone();
                last_committed = lsn;
                drop(sink);
                sink = target.upsert_table(&t).await.unwrap();
                assert_eq!(sink.committed_position(), Some(Position(lsn)));
                assert_eq!(sink.indexed_rows(), model.len());
            }
            _ => {
                sink.commit(Position(lsn)).await.unwrap();
                committed_model = model.clone();
                last_committed = lsn;
            }
        }
        if round == 5 {
            let meta = metadata_file(dir.path(), "public", "accounts");
            assert_rows(
                &meta,
                &COLUMNS,
                expected(&model),
                &PYICEBERG_TYPES,
                &DUCKDB_TYPES,
            );
        }
    }
    assert_eq!(committed_model, model);
    let per_row = sink.index_bytes_per_row();
    assert!(
        per_row > 0.0 && per_row <= 40.0,
        "index: {per_row} bytes/row"
    );

    let meta = metadata_file(dir.path(), "public", "accounts");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let summary = &got["pyiceberg"]["summary"];
    assert_eq!(summary["inlet.position"], format!("{:016X}", lsn));
    assert_eq!(summary["operation"], "overwrite");

    // A final reopen rebuilds the same index from the table.
    drop(sink);
    let sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.indexed_rows(), model.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_updates_and_deletes_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    // Same columns, keyed by the text column `name` (hashed index path), plus `id`.
    let mut t = table("by_name", false);
    t.columns[1].field = t.columns[1].field.clone().with_nullable(false);
    t.primary_key = vec!["name".into(), "id".into()];
    let target = target(dir.path());
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert!(!sink.is_change_log());
    let named = |id: i64, v: u64| {
        let mut r = Row::make(id, v);
        r.name = Some(format!("k{id}"));
        r
    };
    let mut model = BTreeMap::new();
    let mut changes = Vec::new();
    for id in 0..50 {
        changes.push(Change {
            op: "I",
            lsn: 10,
            row: named(id, 1),
        });
    }
    // In-batch update and delete.
    changes.push(Change {
        op: "U",
        lsn: 11,
        row: named(3, 2),
    });
    changes.push(Change {
        op: "D",
        lsn: 11,
        row: named(4, 1),
    });
    changes.push(Change {
        op: "U",
        lsn: 11,
        row: named(3, 3),
    });
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    sink.commit(Position(11)).await.unwrap();
    // Across commits: position deletes.
    let changes = vec![
        Change {
            op: "U",
            lsn: 12,
            row: named(5, 4),
        },
        Change {
            op: "D",
            lsn: 12,
            row: named(6, 1),
        },
        Change {
            op: "I",
            lsn: 12,
            row: named(6, 5),
        },
        Change {
            op: "D",
            lsn: 12,
            row: named(7, 1),
        },
    ];
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    sink.commit(Position(12)).await.unwrap();
    // Reopen and change rows found through the rebuilt index.
    drop(sink);
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.indexed_rows(), model.len());
    let changes = vec![
        Change {
            op: "U",
            lsn: 13,
            row: named(5, 6),
        },
        Change {
            op: "D",
            lsn: 13,
            row: named(8, 1),
        },
    ];
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    sink.commit(Position(13)).await.unwrap();

    let meta = metadata_file(dir.path(), "public", "by_name");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(
        got["pyiceberg"]["identifier_field_ids"],
        serde_json::json!([1, 2])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_commit_records_the_position_and_a_replay_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("idle", true);
    let target = target(dir.path());
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), None);
    let changes = vec![Change {
        op: "I",
        lsn: 5,
        row: Row::make(1, 1),
    }];
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    assert!(sink.commit(Position(5)).await.unwrap().committed);
    // Nothing new and the same position: no snapshot.
    assert!(!sink.commit(Position(5)).await.unwrap().committed);
    // Nothing new but a newer position: a snapshot without files.
    let s = sink.commit(Position(9)).await.unwrap();
    assert!(s.committed && s.data_files == 0);
    assert_eq!(
        target.committed_position(&t.id).await.unwrap(),
        Some(Position(9))
    );
    // Replaying the committed insert (and an update at an old position) changes nothing.
    let replay = vec![
        Change {
            op: "I",
            lsn: 5,
            row: Row::make(1, 1),
        },
        Change {
            op: "U",
            lsn: 9,
            row: Row::make(1, 77),
        },
    ];
    sink.apply(&t, &change_batch(&t, &replay)).await.unwrap();
    assert_eq!(sink.pending_rows(), 0);
    let meta = metadata_file(dir.path(), "public", "idle");
    assert_rows(
        &meta,
        &COLUMNS,
        vec![Row::make(1, 1).canonical()],
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_racing_a_metadata_only_change_commits_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("race", true);
    let target = target(dir.path());
    let mut sink = target.upsert_table(&t).await.unwrap();
    sink.apply(
        &t,
        &change_batch(
            &t,
            &[Change {
                op: "I",
                lsn: 1,
                row: Row::make(1, 1),
            }],
        ),
    )
    .await
    .unwrap();
    sink.commit(Position(1)).await.unwrap();
    // Another writer takes the next version first, changing no snapshot (as an expiry of
    // nothing, or a property change, would).
    let meta_dir = dir.path().join("public/race/metadata");
    let current = std::fs::read_to_string(meta_dir.join("version-hint.text")).unwrap();
    let next: u64 = current.trim().parse::<u64>().unwrap() + 1;
    std::fs::copy(
        meta_dir.join(format!("v{}.metadata.json", current.trim())),
        meta_dir.join(format!("v{next}.metadata.json")),
    )
    .unwrap();
    sink.apply(
        &t,
        &change_batch(
            &t,
            &[Change {
                op: "I",
                lsn: 2,
                row: Row::make(2, 2),
            }],
        ),
    )
    .await
    .unwrap();
    // inlet reloads, sees that no snapshot changed, and commits on top of that version.
    assert!(sink.commit(Position(2)).await.unwrap().committed);
    let hint = std::fs::read_to_string(meta_dir.join("version-hint.text")).unwrap();
    assert_eq!(hint.trim().parse::<u64>().unwrap(), next + 1);
    let sink = target.upsert_table(&t).await.unwrap();
    assert_eq!(sink.committed_position(), Some(Position(2)));
    assert_eq!(sink.indexed_rows(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_key_is_an_append_only_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("events", false);
    let target = target(dir.path());
    let load = target.full_load(&t).await.unwrap();
    let mut w = load.writer();
    w.write(&load_batch(&t, &[Row::make(1, 0)])).await.unwrap();
    w.close().await.unwrap();
    load.finish(Some(Position(3))).await.unwrap();
    let mut sink = target.upsert_table(&t).await.unwrap();
    assert!(sink.is_change_log());
    let changes = vec![
        Change {
            op: "I",
            lsn: 3,
            row: Row::make(9, 9),
        }, // at the committed position: skipped
        Change {
            op: "I",
            lsn: 4,
            row: Row::make(2, 1),
        },
        Change {
            op: "U",
            lsn: 5,
            row: Row::make(2, 2),
        },
        Change {
            op: "D",
            lsn: 6,
            row: Row::make(1, 0),
        },
    ];
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    sink.commit(Position(6)).await.unwrap();
    let meta = metadata_file(dir.path(), "public", "events");
    let with_log = |r: &Row, op: Option<&str>, lsn: Option<u64>| {
        let mut v = r.canonical();
        v.push(op.map(String::from));
        v.push(lsn.map(|l| l.to_string()));
        v.push(lsn.map(|l| (1_700_000_000_000_000 + l).to_string()));
        v
    };
    let mut columns = COLUMNS.to_vec();
    columns.extend(["_inlet_op", "_inlet_lsn", "_inlet_commit_ts"]);
    let mut py = PYICEBERG_TYPES.to_vec();
    py.extend(["string", "int64", "timestamp[us, tz=UTC]"]);
    let mut duck = DUCKDB_TYPES.to_vec();
    duck.extend(["VARCHAR", "BIGINT", "TIMESTAMP WITH TIME ZONE"]);
    assert_rows(
        &meta,
        &columns,
        vec![
            with_log(&Row::make(1, 0), None, None),
            with_log(&Row::make(2, 1), Some("I"), Some(4)),
            with_log(&Row::make(2, 2), Some("U"), Some(5)),
            with_log(&Row::make(1, 0), Some("D"), Some(6)),
        ],
        &py,
        &duck,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_become_iceberg_schema_updates() {
    use arrow_array::TimestampMicrosecondArray;
    use arrow_array::{
        ArrayRef, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow_schema::DataType;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let t = table("evolving", true);
    let target = target(dir.path());
    let mut sink = target.upsert_table(&t).await.unwrap();
    let first: Vec<Change> = (0..5)
        .map(|i| Change {
            op: "I",
            lsn: 10,
            row: Row::make(i, 1),
        })
        .collect();
    sink.apply(&t, &change_batch(&t, &first)).await.unwrap();
    sink.commit(Position(10)).await.unwrap();

    // New shape: qty int→bigint (int→long), price numeric(12,2)→numeric(18,2), flag and day
    // dropped, note added.
    let mut t2 = t.clone();
    t2.columns[2] = col("qty", "bigint", DataType::Int64, true);
    t2.columns[3] = col("price", "numeric(18,2)", DataType::Decimal128(18, 2), true);
    t2.columns.truncate(5);
    t2.columns.push(col("note", "text", DataType::Utf8, true));
    let schema = inlet_core::change_schema(&t2);
    let n = 2;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["I", "U"])),
        Arc::new(TimestampMicrosecondArray::from(vec![0i64; n]).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![11i64; n])),
        Arc::new(Int64Array::from(vec![1i64; n])),
        Arc::new(Int64Array::from(vec![100, 2])),
        Arc::new(StringArray::from(vec![Some("new"), None])),
        Arc::new(Int64Array::from(vec![5_000_000_000i64, -1])),
        Arc::new(
            Decimal128Array::from(vec![Some(123_456_789_012_345i128), None])
                .with_precision_and_scale(18, 2)
                .unwrap(),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(7i64), None]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![Some("hello"), Some("updated")])),
    ];
    let batch = RecordBatch::try_new(schema, cols).unwrap();
    sink.apply(&t2, &batch).await.unwrap();
    sink.commit(Position(11)).await.unwrap();
    let _ = Int32Array::from(vec![0]);

    let meta = metadata_file(dir.path(), "public", "evolving");
    let mut expected: Vec<Vec<Option<String>>> = (0..5)
        .filter(|i| *i != 2)
        .map(|i| {
            let mut v = Row::make(i, 1).canonical();
            v.truncate(5);
            v.push(None);
            v
        })
        .collect();
    let s = |x: &str| Some(x.to_string());
    expected.push(vec![
        s("100"),
        s("new"),
        s("5000000000"),
        s("1234567890123.45"),
        s("7"),
        s("hello"),
    ]);
    expected.push(vec![s("2"), None, s("-1"), None, None, s("updated")]);
    let got = assert_rows(
        &meta,
        &["id", "name", "qty", "price", "ts", "note"],
        expected,
        &[
            "int64",
            "string",
            "int64",
            "decimal128(18, 2)",
            "timestamp[us, tz=UTC]",
            "large_string",
        ],
        &[
            "BIGINT",
            "VARCHAR",
            "BIGINT",
            "DECIMAL(18,2)",
            "TIMESTAMP WITH TIME ZONE",
            "VARCHAR",
        ],
    );
    let fields = got["pyiceberg"]["fields"].as_array().unwrap();
    let ids: Vec<i64> = fields.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    // Kept ids for kept and widened columns; a new id for the new one.
    assert_eq!(ids, [1, 2, 3, 4, 5, 8]);
    assert_eq!(fields[2]["type"], "long");
    assert_eq!(fields[3]["type"], "decimal(18, 2)");
    assert_eq!(fields[2]["doc"], "bigint");

    // A reopen with the new shape rebuilds the index and keeps going.
    drop(sink);
    let sink = target.upsert_table(&t2).await.unwrap();
    assert_eq!(sink.indexed_rows(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_carrying_only_its_key_is_accepted_on_a_table_with_not_null_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = table("strict", true);
    t.columns[6].field = t.columns[6].field.clone().with_nullable(false);
    let target = target(dir.path());
    let mut sink = target.upsert_table(&t).await.unwrap();
    let rows: Vec<Row> = (0..20)
        .map(|i| Row::make(i, 1))
        .filter(|r| r.day.is_some())
        .collect();
    let inserts: Vec<Change> = rows
        .iter()
        .map(|r| Change {
            op: "I",
            lsn: 2,
            row: r.clone(),
        })
        .collect();
    sink.apply(&t, &change_batch(&t, &inserts)).await.unwrap();
    sink.commit(Position(2)).await.unwrap();
    let victim = rows[3].id;
    let key_only = Row {
        id: victim,
        name: None,
        qty: None,
        price: None,
        ts: None,
        flag: None,
        day: None,
    };
    let delete = vec![Change {
        op: "D",
        lsn: 3,
        row: key_only,
    }];
    sink.apply(&t, &change_batch(&t, &delete)).await.unwrap();
    sink.commit(Position(3)).await.unwrap();
    let meta = metadata_file(dir.path(), "public", "strict");
    let got = assert_rows(
        &meta,
        &COLUMNS,
        rows.iter()
            .filter(|r| r.id != victim)
            .map(Row::canonical)
            .collect(),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    assert_eq!(got["pyiceberg"]["fields"][6]["required"], true);
}

/// Position deletes are file-scoped (one delete file per data file, `referenced_data_file`
/// set, as Iceberg Java writes them since 1.7): polars' native reader, which applies only
/// such deletes, reads the table equal to the model, as pyiceberg and DuckDB do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polars_native_scan_reads_deletes_across_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("polars", true);
    let target = target(dir.path());
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();
    let mut sink = target.upsert_table(&t).await.unwrap();
    // Two data files of 100 rows.
    for (k, lsn) in [(0i64, 10u64), (1, 20)] {
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
    // One commit updating and deleting rows of both files.
    let changes = vec![
        Change {
            op: "U",
            lsn: 30,
            row: Row::make(5, 30),
        },
        Change {
            op: "D",
            lsn: 30,
            row: Row::make(7, 0),
        },
        Change {
            op: "U",
            lsn: 30,
            row: Row::make(150, 30),
        },
        Change {
            op: "D",
            lsn: 30,
            row: Row::make(160, 0),
        },
    ];
    apply_model(&mut model, &changes);
    sink.apply(&t, &change_batch(&t, &changes)).await.unwrap();
    let summary = sink.commit(Position(30)).await.unwrap();
    assert_eq!(summary.rows_deleted, 4);
    let meta = metadata_file(dir.path(), "public", "polars");
    let env = [("INLET_POLARS", "1")];
    let got = assert_rows_env(
        &meta,
        &env,
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let polars = &got["polars"];
    assert!(polars.get("error").is_none(), "polars: {}", polars["error"]);
    let mut rows: Vec<Vec<Option<String>>> =
        serde_json::from_value(polars["rows"].clone()).unwrap();
    rows.sort();
    let mut want = expected(&model);
    want.sort();
    assert_eq!(rows.len(), want.len(), "polars row count");
    assert!(rows == want, "polars rows differ from the model");
    // One delete file per data file it names.
    let delete_files = got["pyiceberg"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["content"] == 1)
        .count();
    assert_eq!(delete_files, 2);
}

/// Field id -> (name, required) of Iceberg Java's v2 manifest entry (`V2Metadata`, the spec's
/// manifest table), key and value ids of the maps included.
const JAVA_MANIFEST_FIELDS: &[(i64, &str, bool)] = &[
    (0, "status", true),
    (1, "snapshot_id", false),
    (3, "sequence_number", false),
    (4, "file_sequence_number", false),
    (2, "data_file", true),
    (134, "content", true),
    (100, "file_path", true),
    (101, "file_format", true),
    (102, "partition", true),
    (103, "record_count", true),
    (104, "file_size_in_bytes", true),
    (108, "column_sizes", false),
    (117, "key", true),
    (118, "value", true),
    (109, "value_counts", false),
    (119, "key", true),
    (120, "value", true),
    (110, "null_value_counts", false),
    (121, "key", true),
    (122, "value", true),
    (137, "nan_value_counts", false),
    (138, "key", true),
    (139, "value", true),
    (125, "lower_bounds", false),
    (126, "key", true),
    (127, "value", true),
    (128, "upper_bounds", false),
    (129, "key", true),
    (130, "value", true),
    (131, "key_metadata", false),
    (132, "split_offsets", false),
    (135, "equality_ids", false),
    (140, "sort_order_id", false),
    // A v3 field the iceberg crate writes in v2 manifests too; optional, read as absent.
    (142, "first_row_id", false),
    (143, "referenced_data_file", false),
    (144, "content_offset", false),
    (145, "content_size_in_bytes", false),
];

/// Field id -> (name, required) of Iceberg Java's v2 manifest list entry (`manifest_file`).
const JAVA_MANIFEST_LIST_FIELDS: &[(i64, &str, bool)] = &[
    (500, "manifest_path", true),
    (501, "manifest_length", true),
    (502, "partition_spec_id", true),
    (517, "content", true),
    (515, "sequence_number", true),
    (516, "min_sequence_number", true),
    (503, "added_snapshot_id", true),
    (504, "added_files_count", true),
    (505, "existing_files_count", true),
    (506, "deleted_files_count", true),
    (512, "added_rows_count", true),
    (513, "existing_rows_count", true),
    (514, "deleted_rows_count", true),
    (507, "partitions", false),
    (509, "contains_null", true),
    (518, "contains_nan", false),
    (510, "lower_bound", false),
    (511, "upper_bound", false),
    (519, "key_metadata", false),
];

/// Every record field of an Avro schema: (field-id, name, optional, default as written).
fn avro_fields(
    schema: &serde_json::Value,
    out: &mut Vec<(i64, String, bool, Option<serde_json::Value>)>,
) {
    match schema {
        serde_json::Value::Object(map) => {
            if let Some(fields) = map.get("fields").and_then(|f| f.as_array()) {
                for f in fields {
                    let id = f["field-id"].as_i64().expect("every field has a field-id");
                    let optional = f["type"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|b| b == "null"));
                    out.push((
                        id,
                        f["name"].as_str().unwrap().to_string(),
                        optional,
                        f.get("default").cloned(),
                    ));
                    avro_fields(&f["type"], out);
                }
            }
            for (k, v) in map {
                if k != "fields" {
                    avro_fields(v, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                avro_fields(v, out);
            }
        }
        _ => {}
    }
}

/// Issue 14 item 3: the manifests' and manifest lists' Avro schemas are Iceberg Java's (field
/// ids, names, optionality; no default on a required field, `null` on an optional one), and
/// Tableau Hyper, which refuses the `"default": 0` the iceberg crate writes on
/// `data_file.content`, reads the table after updates and deletes with the model's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_have_iceberg_javas_avro_schema_and_hyper_reads_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let t = table("hyper", true);
    let target = target(dir.path());
    let (model, _) = load_and_upsert(&target, &t, 4, |_| {}).await;

    let meta_dir = dir.path().join("public/hyper/metadata");
    let (mut manifests, mut lists) = (0, 0);
    for entry in std::fs::read_dir(&meta_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".avro") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (header, _) = inlet_sink_iceberg::avro_header::read_header(&bytes).unwrap();
        let schema: serde_json::Value = serde_json::from_slice(
            &header
                .iter()
                .find(|(k, _)| k == "avro.schema")
                .expect("an avro.schema entry")
                .1,
        )
        .unwrap();
        let java = if name.starts_with("snap-") {
            lists += 1;
            JAVA_MANIFEST_LIST_FIELDS
        } else {
            manifests += 1;
            JAVA_MANIFEST_FIELDS
        };
        let mut fields = Vec::new();
        avro_fields(&schema, &mut fields);
        for (id, field, optional, default) in &fields {
            if *id >= 1000 {
                continue; // partition fields: the table's own
            }
            let (_, java_name, required) =
                java.iter().find(|(i, _, _)| i == id).unwrap_or_else(|| {
                    panic!("{name}: field {id} {field} is not in Iceberg Java's schema")
                });
            assert_eq!(field, java_name, "{name}: field {id}");
            assert_eq!(
                *optional, !required,
                "{name}: field {id} {field} optionality"
            );
            if *optional {
                assert_eq!(
                    default.as_ref(),
                    Some(&serde_json::Value::Null),
                    "{name}: optional field {id} {field}: Java writes \"default\": null"
                );
            } else {
                assert_eq!(
                    default.as_ref(),
                    None,
                    "{name}: required field {id} {field}: Java writes no default"
                );
            }
        }
        for (id, java_name, required) in java {
            if *required {
                assert!(
                    fields.iter().any(|(i, _, _, _)| i == id),
                    "{name}: required field {id} {java_name} is missing"
                );
            }
        }
    }
    assert!(
        manifests >= 2 && lists >= 2,
        "{manifests} manifests, {lists} lists"
    );

    let meta = metadata_file(dir.path(), "public", "hyper");
    let got = assert_rows_env(
        &meta,
        &[("INLET_HYPER", "1")],
        &COLUMNS,
        expected(&model),
        &PYICEBERG_TYPES,
        &DUCKDB_TYPES,
    );
    let hyper = &got["hyper"];
    assert!(hyper.get("error").is_none(), "hyper: {}", hyper["error"]);
    let mut rows: Vec<Vec<Option<String>>> = serde_json::from_value(hyper["rows"].clone()).unwrap();
    rows.sort();
    let mut want = expected(&model);
    want.sort();
    assert_eq!(rows.len(), want.len(), "hyper row count");
    for (g, w) in rows.iter().zip(&want) {
        assert_eq!(g, w, "hyper row");
    }
}

/// A table written with the exact forms (Iceberg uuid and time) and opened by a task with the
/// default portable forms is refused with a message naming `target.types`, instead of the
/// generic "Iceberg cannot change" one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_exact_forms_opened_with_portable_ones_names_the_types_setting() {
    use arrow_schema::{DataType, TimeUnit};
    use inlet_core::{TableId, TableSchema};
    let dir = tempfile::tempdir().unwrap();
    let t = TableSchema {
        id: TableId::new("public", "forms"),
        columns: vec![
            col("id", "bigint", DataType::Int64, false),
            col("u", "uuid", DataType::FixedSizeBinary(16), true),
            col(
                "tm",
                "time without time zone",
                DataType::Time64(TimeUnit::Microsecond),
                true,
            ),
        ],
        primary_key: vec!["id".into()],
    };
    let exact = target_with(dir.path(), "types = \"exact\"");
    let load = exact.full_load(&t).await.unwrap();
    load.writer().close().await.unwrap();
    load.finish(Some(Position(1))).await.unwrap();
    let meta = metadata_file(dir.path(), "public", "forms");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let fields: Vec<String> = metadata["schemas"].as_array().unwrap().last().unwrap()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["long", "uuid", "time"]);

    let err = match target(dir.path()).upsert_table(&t).await {
        Ok(_) => panic!("a portable task opened an exact table"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("column u is uuid in the table") && err.contains("target.types = \"exact\""),
        "{err}"
    );
    // The exact task still opens it.
    exact.upsert_table(&t).await.unwrap();
}
