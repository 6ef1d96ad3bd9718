//! Tests of the sink against a temporary local folder, read back with parquet's own reader.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, TimeUnit};
use inlet_core::{Column, TableId, TableSchema, SOURCE_TYPE_KEY};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::*;

fn config(url: &str) -> ParquetTargetConfig {
    ParquetTargetConfig {
        url: url.to_string(),
        file_size_mb: 128,
        compression: None,
        compression_level: None,
        row_group_rows: 122_880,
        include_op_for_full_load: false,
        op_column: "Op".into(),
        timestamp_column: None,
        timestamp_column_type: TimestampColumnType::String,
        timestamp_unit: TimestampUnit::Us,
        inlet_columns: None,
        dms_compatible: false,
        cdc_inserts_only: false,
        cdc_inserts_and_updates: false,
        types: inlet_core::TypeForms::Exact,
    }
}

fn col(name: &str, source_type: &str, data_type: DataType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        source_type: source_type.into(),
        field: Field::new(name, data_type, nullable),
        distinct_values: None,
    }
}

/// A table with one column of each of several types.
fn typed_table() -> TableSchema {
    TableSchema {
        id: TableId::new("public", "orders"),
        columns: vec![
            col("id", "integer", DataType::Int32, false),
            col("big", "bigint", DataType::Int64, true),
            col("name", "character varying(20)", DataType::Utf8, true),
            col("amount", "numeric(12,2)", DataType::Decimal128(12, 2), true),
            col(
                "at",
                "timestamp with time zone",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            col("day", "date", DataType::Date32, true),
            col("ok", "boolean", DataType::Boolean, true),
            col("blob", "bytea", DataType::Binary, true),
            col("ratio", "double precision", DataType::Float64, true),
        ],
        primary_key: vec!["id".into()],
    }
}

fn typed_batch(table: &TableSchema, ids: std::ops::Range<i32>) -> RecordBatch {
    let n = ids.len();
    let ids: Vec<i32> = ids.collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter(
            ids.iter()
                .map(|i| (i % 3 != 0).then_some(i64::from(*i) * 1_000_000_007)),
        )),
        Arc::new(StringArray::from_iter(
            ids.iter()
                .map(|i| (i % 4 != 1).then(|| format!("name-{i}-é"))),
        )),
        Arc::new(
            Decimal128Array::from_iter(
                ids.iter()
                    .map(|i| (i % 5 != 2).then_some(i128::from(*i) * 101 - 5000)),
            )
            .with_precision_and_scale(12, 2)
            .expect("12,2 is a valid decimal type"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                ids.iter()
                    .map(|i| Some(1_700_000_000_000_000 + i64::from(*i))),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from_iter(ids.iter().map(|i| Some(19_000 + i)))),
        Arc::new(BooleanArray::from_iter(
            ids.iter().map(|i| (i % 7 != 3).then_some(i % 2 == 0)),
        )),
        Arc::new(BinaryArray::from_iter(
            ids.iter()
                .map(|i| (i % 6 != 5).then(|| i.to_le_bytes().to_vec())),
        )),
        Arc::new(Float64Array::from_iter(
            ids.iter().map(|i| Some(f64::from(*i) / 8.0)),
        )),
    ];
    assert_eq!(columns[0].len(), n);
    RecordBatch::try_new(table.arrow_schema(), columns).expect("test batch matches the schema")
}

fn table_dir(root: &FsPath, table: &TableSchema) -> PathBuf {
    root.join(&table.id.schema).join(&table.id.name)
}

/// The names of the files in a table folder, sorted.
fn files(dir: &FsPath) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            // The staging folder of a load that did not finish is not the table's contents
            // (readers skip it); tests that care look at it by name.
            .filter(|name| name != crate::load::STAGING_DIR)
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Reads a whole file into one batch, with its key-value metadata.
fn read(path: &FsPath) -> (RecordBatch, HashMap<String, String>) {
    let file = std::fs::File::open(path).expect("open parquet file");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet footer");
    let kv: HashMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("read batches");
    let batch = arrow_select_concat(&schema, &batches);
    (batch, kv)
}

/// Concatenates batches column by column (arrow-select is not a dependency of this crate).
fn arrow_select_concat(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    if batches.len() == 1 {
        return batches[0].clone();
    }
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            concat(&parts)
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("concatenated batch")
}

fn concat(parts: &[&dyn Array]) -> ArrayRef {
    // Only the types the tests read back in several batches.
    match parts[0].data_type() {
        DataType::Int32 => Arc::new(Int32Array::from_iter(
            parts
                .iter()
                .flat_map(|a| a.as_primitive::<Int32Type>().iter()),
        )),
        DataType::Utf8 => Arc::new(StringArray::from_iter(
            parts.iter().flat_map(|a| a.as_string::<i32>().iter()),
        )),
        other => panic!("test helper cannot concatenate {other}"),
    }
}

fn load_file(root: &FsPath, table: &TableSchema, n: u64) -> PathBuf {
    table_dir(root, table).join(format!("LOAD{n:08X}.parquet"))
}

#[tokio::test]
async fn round_trip_keeps_values_and_source_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target =
        ParquetTarget::new(&config(dir.path().to_str().expect("utf-8 path"))).expect("target");
    target.check().await.expect("check");
    let table = typed_table();
    let load = target.full_load(&table);
    let mut w = load.writer();
    let b1 = typed_batch(&table, 0..100);
    let b2 = typed_batch(&table, 100..250);
    w.write(&b1).await.expect("write 1");
    w.write(&RecordBatch::new_empty(table.arrow_schema()))
        .await
        .expect("an empty batch is fine");
    w.write(&b2).await.expect("write 2");
    assert_eq!(w.rows_written(), 250);
    w.close().await.expect("close");
    let summary = load.finish().await.expect("finish");
    assert_eq!(summary.files, 1);
    assert_eq!(summary.rows, 250);

    assert_eq!(
        files(&table_dir(dir.path(), &table)),
        ["LOAD00000001.parquet"]
    );
    let path = load_file(dir.path(), &table, 1);
    assert_eq!(summary.bytes, std::fs::metadata(&path).expect("stat").len());
    let file = std::fs::File::open(&path).expect("open");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer");
    let schema = builder.schema().clone();
    for (field, column) in schema.fields().iter().zip(&table.columns) {
        assert_eq!(field.name(), &column.name);
        assert_eq!(field.data_type(), column.data_type());
        assert_eq!(
            field.metadata().get(SOURCE_TYPE_KEY),
            Some(&column.source_type),
            "source type of {}",
            column.name
        );
    }
    let batches: Vec<RecordBatch> = builder
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("read");
    let read_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(read_rows, 250);

    // Compare every value, column by column, against what was written.
    let mut offset = 0;
    let written = [b1, b2];
    let expected_rows: Vec<(usize, &RecordBatch)> = written
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |r| (r, b)))
        .collect();
    for batch in &batches {
        for r in 0..batch.num_rows() {
            let (er, eb) = expected_rows[offset + r];
            let ids = batch.column(0).as_primitive::<Int32Type>();
            let eids = eb.column(0).as_primitive::<Int32Type>();
            assert_eq!(ids.value(r), eids.value(er));
            let same = |c: usize| {
                let (a, b) = (batch.column(c), eb.column(c));
                assert_eq!(a.is_null(r), b.is_null(er), "nullness col {c} row {r}");
                if a.is_null(r) {
                    return;
                }
                match a.data_type() {
                    DataType::Int64 => assert_eq!(
                        a.as_primitive::<Int64Type>().value(r),
                        b.as_primitive::<Int64Type>().value(er)
                    ),
                    DataType::Utf8 => {
                        assert_eq!(
                            a.as_string::<i32>().value(r),
                            b.as_string::<i32>().value(er)
                        )
                    }
                    DataType::Decimal128(_, _) => assert_eq!(
                        a.as_primitive::<Decimal128Type>().value(r),
                        b.as_primitive::<Decimal128Type>().value(er)
                    ),
                    DataType::Timestamp(_, _) => assert_eq!(
                        a.as_primitive::<TimestampMicrosecondType>().value(r),
                        b.as_primitive::<TimestampMicrosecondType>().value(er)
                    ),
                    DataType::Date32 => assert_eq!(
                        a.as_primitive::<Date32Type>().value(r),
                        b.as_primitive::<Date32Type>().value(er)
                    ),
                    DataType::Boolean => {
                        assert_eq!(a.as_boolean().value(r), b.as_boolean().value(er))
                    }
                    DataType::Binary => {
                        assert_eq!(
                            a.as_binary::<i32>().value(r),
                            b.as_binary::<i32>().value(er)
                        )
                    }
                    DataType::Float64 => assert_eq!(
                        a.as_primitive::<Float64Type>().value(r),
                        b.as_primitive::<Float64Type>().value(er)
                    ),
                    other => panic!("unexpected type {other}"),
                }
            };
            for c in 1..batch.num_columns() {
                same(c);
            }
        }
        offset += batch.num_rows();
    }
    // Spot-check a few literal values so the comparison above cannot pass vacuously.
    let (all, kv) = read(&path);
    let names = all.column(2).as_string::<i32>();
    assert_eq!(names.value(0), "name-0-é");
    assert!(names.is_null(1));
    let amounts = all.column(3).as_primitive::<Decimal128Type>();
    assert_eq!(amounts.value(3), 3 * 101 - 5000);
    assert!(amounts.is_null(2));
    assert_eq!(kv.get(TABLE_KEY).map(String::as_str), Some("public.orders"));
    assert_eq!(kv.get(KIND_KEY).map(String::as_str), Some("full-load"));
}

/// A narrow table for tests of file management.
fn small_table(name: &str) -> TableSchema {
    TableSchema {
        id: TableId::new("app", name),
        columns: vec![
            col("id", "int", DataType::Int32, false),
            col("v", "varchar(64)", DataType::Utf8, true),
        ],
        primary_key: vec!["id".into()],
    }
}

fn small_batch(table: &TableSchema, ids: std::ops::Range<i32>) -> RecordBatch {
    let ids: Vec<i32> = ids.collect();
    let values = StringArray::from_iter_values(ids.iter().map(|i| format!("value {i:>10} xyz")));
    RecordBatch::try_new(
        table.arrow_schema(),
        vec![Arc::new(Int32Array::from(ids)), Arc::new(values)],
    )
    .expect("small batch")
}

/// Writes `batches` batches of `rows` rows with `workers` writers in parallel; every batch
/// overflows the tiny file size, so each becomes its own file.
async fn load_small(
    target: &ParquetTarget,
    table: &TableSchema,
    workers: i32,
    batches: i32,
    rows: i32,
) -> LoadSummary {
    let load = target.full_load(table);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut writer = load.writer();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..batches {
                let start = (w * batches + b) * rows;
                writer
                    .write(&small_batch(&table, start..start + rows))
                    .await
                    .expect("write");
            }
            let n = writer.rows_written();
            writer.close().await.expect("close");
            n
        }));
    }
    let mut rows_written = 0;
    for t in tasks {
        rows_written += t.await.expect("worker task");
    }
    let summary = load.finish().await.expect("finish");
    assert_eq!(summary.rows, rows_written);
    summary
}

/// Writes ids 100..106 into `load` as two files (a tiny file size: one per batch) and closes
/// the writer.
async fn stage_two_files(load: &FullLoadTable, table: &TableSchema) {
    let mut w = load.writer();
    w.write(&small_batch(table, 100..103)).await.expect("write");
    w.write(&small_batch(table, 103..106)).await.expect("write");
    w.close().await.expect("close");
}

/// Reads every LOAD file of a table and returns all ids, sorted.
fn all_ids(root: &FsPath, table: &TableSchema) -> Vec<i32> {
    let dir = table_dir(root, table);
    let mut ids = Vec::new();
    for name in files(&dir) {
        if name.starts_with("LOAD") && name.len() == "LOAD00000001.parquet".len() {
            let (batch, _) = read(&dir.join(name));
            ids.extend(batch.column(0).as_primitive::<Int32Type>().values().iter());
        }
    }
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_at_the_size_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path().to_str().expect("utf-8"));
    cfg.row_group_rows = 100;
    let target = ParquetTarget::new(&cfg)
        .expect("target")
        .with_file_size_bytes(1);
    let table = small_table("rolled");
    let summary = load_small(&target, &table, 2, 4, 300).await;

    // Every batch overflows a 1-byte limit, so each ends its file.
    assert_eq!(summary.files, 8);
    assert_eq!(summary.rows, 2 * 4 * 300);
    let expected: Vec<String> = (1..=8).map(|n| format!("LOAD{n:08X}.parquet")).collect();
    assert_eq!(files(&table_dir(dir.path(), &table)), expected);
    assert_eq!(all_ids(dir.path(), &table), (0..2400).collect::<Vec<_>>());
    // Row groups respect row_group_rows.
    let file = std::fs::File::open(load_file(dir.path(), &table, 1)).expect("open");
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer");
    assert_eq!(builder.metadata().num_row_groups(), 3);

    // A limit of about three batches packs several batches into each file.
    let one_batch = std::fs::metadata(load_file(dir.path(), &table, 1))
        .expect("stat")
        .len();
    let target = ParquetTarget::new(&cfg)
        .expect("target")
        .with_file_size_bytes(one_batch * 5 / 2);
    let table = small_table("packed");
    let summary = load_small(&target, &table, 1, 10, 300).await;
    assert!(
        summary.files > 1 && summary.files < 10,
        "{} files",
        summary.files
    );
    assert_eq!(all_ids(dir.path(), &table), (0..3000).collect::<Vec<_>>());
}

#[tokio::test]
async fn rerun_replaces_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
        .expect("target")
        .with_file_size_bytes(1);
    let table = small_table("rerun");
    let tdir = table_dir(dir.path(), &table);

    let first = load_small(&target, &table, 1, 5, 10).await;
    assert_eq!(first.files, 5);
    // Files that are not full-load files of this table are left alone.
    std::fs::write(tdir.join("notes.txt"), "keep").expect("write notes");
    std::fs::write(tdir.join("LOAD01.parquet"), "keep").expect("write odd name");
    std::fs::create_dir_all(dir.path().join("app").join("rerun_other")).expect("sibling");
    std::fs::write(
        dir.path()
            .join("app")
            .join("rerun_other")
            .join("LOAD00000009.parquet"),
        "other table",
    )
    .expect("sibling file");

    let second = load_small(&target, &table, 1, 2, 10).await;
    assert_eq!(second.files, 2);
    assert_eq!(
        files(&tdir),
        [
            "LOAD00000001.parquet",
            "LOAD00000002.parquet",
            "LOAD01.parquet",
            "notes.txt"
        ]
    );
    assert_eq!(all_ids(dir.path(), &table), (0..20).collect::<Vec<_>>());
    assert!(dir
        .path()
        .join("app/rerun_other/LOAD00000009.parquet")
        .exists());

    // A run that writes nothing (the table is now empty) leaves no LOAD files.
    let load = target.full_load(&table);
    let w = load.writer();
    w.close().await.expect("close");
    let empty = load.finish().await.expect("finish");
    assert_eq!(empty, LoadSummary::default());
    assert_eq!(files(&tdir), ["LOAD01.parquet", "notes.txt"]);
}

#[tokio::test]
async fn op_and_timestamp_columns_come_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path().to_str().expect("utf-8"));
    cfg.include_op_for_full_load = true;
    cfg.timestamp_column = Some("ts".into());
    cfg.compression = Some(ParquetCompression::Snappy);
    let target = ParquetTarget::new(&cfg).expect("target");
    let table = small_table("dms");
    let load = target.full_load(&table);
    let mut w = load.writer();
    let before = chrono::Utc::now().timestamp_micros();
    w.write(&small_batch(&table, 0..5)).await.expect("write");
    let after = chrono::Utc::now().timestamp_micros();
    w.close().await.expect("close");
    load.finish().await.expect("finish");

    let (batch, _) = read(&load_file(dir.path(), &table, 1));
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["Op", "ts", "id", "v"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    // DMS's TimestampColumnName is a string column, "yyyy-MM-dd HH:mm:ss.SSSSSS".
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(
        schema
            .field(2)
            .metadata()
            .get(SOURCE_TYPE_KEY)
            .map(String::as_str),
        Some("int")
    );
    let ops = batch.column(0).as_string::<i32>();
    assert_eq!(ops.iter().collect::<Vec<_>>(), vec![Some("I"); 5]);
    let ts = batch.column(1).as_string::<i32>();
    for t in ts.iter() {
        let t = t.expect("a timestamp");
        assert_eq!(t.len(), 26, "{t}");
        let at = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.6f")
            .expect(t)
            .and_utc()
            .timestamp_micros();
        assert!((before..=after).contains(&at), "{t}");
    }
    assert_eq!(
        batch
            .column(2)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        vec![0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn column_collisions_and_bad_batches_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path().to_str().expect("utf-8"));
    cfg.include_op_for_full_load = true;
    let target = ParquetTarget::new(&cfg).expect("target");
    let mut table = small_table("clash");
    table.columns[1] = col("op", "text", DataType::Utf8, true);
    let load = target.full_load(&table);
    let mut w = load.writer();
    let batch = small_batch(&table, 0..3);
    let err = w.write(&batch).await.expect_err("Op collides with op");
    assert!(matches!(err, SinkError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("app.clash"), "{err}");
    assert!(
        err.to_string().contains("include_op_for_full_load")
            && err.to_string().contains("set `op_column` to another name"),
        "{err}"
    );
    drop(w);

    // A batch of another shape is refused and nothing is written.
    let table = small_table("shape");
    let load = target.full_load(&table);
    let mut w = load.writer();
    let wrong =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1_i64])) as ArrayRef)])
            .expect("batch");
    let err = w.write(&wrong).await.expect_err("wrong shape");
    assert!(matches!(err, SinkError::Schema { .. }), "{err}");
    let err = w.close().await.expect_err("the writer failed");
    assert!(matches!(err, SinkError::Incomplete { .. }), "{err}");
    let err = load.finish().await.expect_err("a batch was refused");
    assert!(err.to_string().contains("a batch has 1 columns"), "{err}");
    assert!(files(&table_dir(dir.path(), &table)).is_empty());
}

#[tokio::test]
async fn finish_refuses_incomplete_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8"))).expect("target");
    let table = small_table("incomplete");
    let tdir = table_dir(dir.path(), &table);

    // An earlier run's files.
    load_small(&target, &table, 1, 1, 10).await;

    // A writer still open.
    let load = target.full_load(&table);
    let mut w = load.writer();
    w.write(&small_batch(&table, 0..3)).await.expect("write");
    let err = load.finish().await.expect_err("writer still open");
    assert!(matches!(err, SinkError::Incomplete { .. }), "{err}");

    // Dropped without close: its file never appears, and finish deletes nothing.
    drop(w);
    let err = load.finish().await.expect_err("writer dropped");
    assert!(err.to_string().contains("dropped without close"), "{err}");
    tokio::task::yield_now().await;
    assert_eq!(files(&tdir), ["LOAD00000001.parquet"]);
    // The earlier run's file is intact.
    assert_eq!(all_ids(dir.path(), &table), (0..10).collect::<Vec<_>>());
}

/// 13.13: abandoning a load leaves no partial table: the files it staged go, the earlier
/// complete set stays as it was (readers never saw the new files), and so does any other file.
#[tokio::test]
async fn abandon_keeps_the_earlier_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
        .expect("target")
        .with_file_size_bytes(1);
    let table = small_table("abandoned");
    let tdir = table_dir(dir.path(), &table);
    let staging = tdir.join(crate::load::STAGING_DIR);
    let soon = || std::time::Instant::now() + std::time::Duration::from_secs(5);
    let earlier = [
        "LOAD00000001.parquet",
        "LOAD00000002.parquet",
        "LOAD00000003.parquet",
        "LOAD00000004.parquet",
        "notes.txt",
    ];

    // An earlier run's complete set of 4 files, and a file that is not a LOAD file.
    load_small(&target, &table, 1, 4, 10).await;
    std::fs::write(tdir.join("notes.txt"), "keep").expect("write notes");

    // A run whose writer never completed a file (128 MB files): the earlier set stays.
    let roomy = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8"))).expect("target");
    let load = roomy.full_load(&table);
    let mut w = load.writer();
    w.write(&small_batch(&table, 100..103))
        .await
        .expect("write");
    drop(w);
    assert_eq!(load.abandon(soon()).await, Abandoned::Untouched);
    assert_eq!(all_ids(dir.path(), &table), (0..40).collect::<Vec<_>>());

    // A run that completed files 1 and 2 and then stopped: they were staged, never in the
    // table's folder, so the earlier set is whole; abandon deletes them.
    let load = target.full_load(&table);
    let mut w = load.writer();
    w.write(&small_batch(&table, 100..103))
        .await
        .expect("write");
    w.write(&small_batch(&table, 103..106))
        .await
        .expect("write");
    assert_eq!(files(&staging).len(), 2, "{:?}", files(&staging));
    assert_eq!(all_ids(dir.path(), &table), (0..40).collect::<Vec<_>>());
    drop(w);
    assert_eq!(load.abandon(soon()).await, Abandoned::Untouched);
    assert_eq!(files(&tdir), earlier);
    assert!(!staging.exists(), "the empty staging folder is removed");
    assert_eq!(all_ids(dir.path(), &table), (0..40).collect::<Vec<_>>());
    // finish after abandon refuses: the load is not complete.
    assert!(matches!(
        load.finish().await,
        Err(SinkError::Incomplete { .. })
    ));
}

/// Issue 16: a load that replaces an earlier one (a table loaded again beside the stream)
/// leaves the earlier files and change files readable until its own are complete, then switches
/// to them and deletes the change files; a switch interrupted by a crash (its record in the
/// staging folder, some files moved) is completed by the table's next load before it writes.
#[tokio::test]
async fn a_reload_switches_only_when_complete_and_an_interrupted_switch_is_completed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
        .expect("target")
        .with_file_size_bytes(1);
    let table = small_table("reloaded");
    let tdir = table_dir(dir.path(), &table);
    let staging = tdir.join(crate::load::STAGING_DIR);
    let change = crate::changes::ChangeFile {
        first: inlet_core::Position(0x10),
        last: inlet_core::Position(0x20),
        commit_time_micros: 1_763_700_000_123_456,
        part: None,
    }
    .name();

    // The earlier load (3 files) and a change file captured after it.
    load_small(&target, &table, 1, 3, 10).await;
    std::fs::write(tdir.join(&change), "a change file").expect("write change file");

    // A reload writes 2 files: staged; readers still see the earlier load and its changes.
    let load = target.full_load(&table);
    stage_two_files(&load, &table).await;
    assert_eq!(all_ids(dir.path(), &table), (0..30).collect::<Vec<_>>());
    assert!(tdir.join(&change).exists());
    assert_eq!(
        files(&staging),
        ["LOAD00000001.parquet", "LOAD00000002.parquet"]
    );

    // Its switch, interrupted by a crash after it moved file 1: the record says 2 files.
    std::fs::write(staging.join(crate::load::SWITCH_MARKER), "2").expect("write record");
    std::fs::rename(
        staging.join("LOAD00000001.parquet"),
        tdir.join("LOAD00000001.parquet"),
    )
    .expect("move file 1");
    drop(load);

    // The next load completes that switch before it writes its first file.
    let next = target.full_load(&table);
    let mut w = next.writer();
    w.write(&small_batch(&table, 200..204))
        .await
        .expect("write");
    assert_eq!(
        files(&tdir),
        ["LOAD00000001.parquet", "LOAD00000002.parquet"],
        "the interrupted switch was completed: no earlier LOAD file past 2, no change file"
    );
    assert_eq!(all_ids(dir.path(), &table), (100..106).collect::<Vec<_>>());
    assert_eq!(files(&staging), ["LOAD00000001.parquet"]);

    // And it switches to its own once complete.
    w.close().await.expect("close");
    let summary = next.finish().await.expect("finish");
    assert_eq!(summary.files, 1);
    assert_eq!(files(&tdir), ["LOAD00000001.parquet"]);
    assert!(!staging.exists(), "the empty staging folder is removed");
    assert_eq!(all_ids(dir.path(), &table), (200..204).collect::<Vec<_>>());
}

#[test]
fn config_from_toml() {
    let cfg: ParquetTargetConfig = toml::from_str(r#"url = "./warehouse""#).expect("minimal");
    assert_eq!(cfg.url, "./warehouse");
    assert_eq!(cfg.file_size_mb, 128);
    assert_eq!(cfg.compression, None);
    assert_eq!(cfg.compression(), ParquetCompression::Zstd);
    assert_eq!(cfg.compression_level, None);
    assert!(cfg.inlet_columns());
    assert_eq!(cfg.timestamp_unit, TimestampUnit::Us);
    assert_eq!(cfg.timestamp_column_type, TimestampColumnType::String);
    assert_eq!(cfg.row_group_rows, 122_880);
    assert!(!cfg.include_op_for_full_load);
    assert_eq!(cfg.timestamp_column, None);

    let cfg: ParquetTargetConfig = toml::from_str(
        r#"
        url = "s3://bucket/prefix"
        file_size_mb = 256
        compression = "lz4"
        compression_level = 3
        row_group_rows = 1000
        include_op_for_full_load = true
        timestamp_column = "ts"
        "#,
    )
    .expect("full");
    assert_eq!(cfg.compression, Some(ParquetCompression::Lz4));
    assert_eq!(cfg.timestamp_column.as_deref(), Some("ts"));
    for name in ["none", "snappy", "zstd", "gzip"] {
        let cfg: ParquetTargetConfig =
            toml::from_str(&format!("url = \"x\"\ncompression = \"{name}\"")).expect(name);
        assert!(cfg.codec().is_ok());
    }

    let err = toml::from_str::<ParquetTargetConfig>("url = \"x\"\nfile_size = 5")
        .expect_err("unknown key");
    assert!(err.to_string().contains("file_size"), "{err}");
    toml::from_str::<ParquetTargetConfig>("url = \"x\"\ncompression = \"brotli\"")
        .expect_err("unknown codec");
    toml::from_str::<ParquetTargetConfig>("url = \"x\"\ntimestamp_unit = \"ns\"")
        .expect_err("unknown unit");
    toml::from_str::<ParquetTargetConfig>("file_size_mb = 5").expect_err("url is required");
}

#[test]
fn invalid_settings_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("utf-8");
    type Change = fn(&mut ParquetTargetConfig);
    let bad: [(&str, Change); 10] = [
        ("file_size_mb", |c| c.file_size_mb = 0),
        ("file_size_mb = 4097 is too large; at most 4096", |c| {
            c.file_size_mb = 4097
        }),
        ("row_group_rows", |c| c.row_group_rows = 0),
        ("compression_level", |c| c.compression_level = Some(99)),
        ("compression_level = 10 is not a valid gzip level", |c| {
            c.compression = Some(ParquetCompression::Gzip);
            c.compression_level = Some(10);
        }),
        ("compression = \"zstd\" is not one of DMS's", |c| {
            c.dms_compatible = true;
            c.compression = Some(ParquetCompression::Zstd);
        }),
        ("inlet_columns = true", |c| {
            c.dms_compatible = true;
            c.inlet_columns = Some(true);
        }),
        ("timestamp_column_type = \"timestamp\"", |c| {
            c.dms_compatible = true;
            c.timestamp_column_type = TimestampColumnType::Timestamp;
        }),
        ("timestamp_column", |c| {
            c.timestamp_column = Some(String::new())
        }),
        ("collides", |c| {
            c.include_op_for_full_load = true;
            c.timestamp_column = Some("OP".into());
        }),
    ];
    for (needle, change) in bad {
        let mut cfg = config(path);
        change(&mut cfg);
        let err = ParquetTarget::new(&cfg).expect_err(needle);
        assert!(matches!(err, SinkError::Config { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    for url in [
        "",
        "ftp://host/x",
        "s3:///prefix",
        "s3://b/x?y=1",
        "file://relative",
    ] {
        let err = ParquetTarget::new(&config(url)).expect_err(url);
        assert!(matches!(err, SinkError::Config { .. }), "{url}: {err}");
    }
    let err = ParquetTarget::new(&config("s3://AKIAEXAMPLE:hunter2@bucket/p")).expect_err("creds");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("AKIAEXAMPLE"),
        "{shown}"
    );
}

#[test]
fn urls_are_described_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let canonical = std::fs::canonicalize(dir.path()).expect("canonical");

    // A plain path is created, resolved and shown as a file:// URL.
    let nested = dir.path().join("a").join("warehouse");
    let target = ParquetTarget::new(&config(nested.to_str().expect("utf-8"))).expect("path");
    assert!(nested.is_dir());
    let expected = format!("file://{}/a/warehouse", canonical.display());
    assert_eq!(target.describe(), expected);

    let url = format!("file://{}/b", canonical.display());
    let target = ParquetTarget::new(&config(&url)).expect("file url");
    assert_eq!(target.describe(), url);
    assert!(format!("{target:?}").contains(&url));

    // S3: no I/O at construction, so this works offline.
    let target = ParquetTarget::new(&config("s3://my-bucket/raw/dms/")).expect("s3");
    assert_eq!(target.describe(), "s3://my-bucket/raw/dms");
    let target = ParquetTarget::new(&config("s3://my-bucket")).expect("s3 root");
    assert_eq!(target.describe(), "s3://my-bucket");
    let table = small_table("t");
    assert_eq!(
        target.location(&target.table_dir(&table).join("LOAD00000001.parquet")),
        "s3://my-bucket/app/t/LOAD00000001.parquet"
    );
}

/// The daemon runs loads in spawned tasks, so every future must be `Send`.
#[allow(dead_code)]
fn futures_are_send(target: ParquetTarget, table: FullLoadTable, mut w: LoadFileWriter) {
    fn send<T: Send>(_: T) {}
    let batch = RecordBatch::new_empty(small_table("x").arrow_schema());
    send(target.check());
    send(table.finish());
    send(w.write(&batch));
    send(w.close());
    send(table.clone());
}

/// A batch of `ids` with 40-character pseudo-random strings that neither dictionary encoding
/// nor compression can shrink much, so files grow past a multipart part quickly.
fn noisy_batch(table: &TableSchema, ids: std::ops::Range<i32>) -> RecordBatch {
    let ids: Vec<i32> = ids.collect();
    let values = StringArray::from_iter_values(ids.iter().map(|i| {
        let mut x = (*i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut s = String::with_capacity(40);
        for _ in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(&format!("{:08x}", x as u32));
        }
        s
    }));
    RecordBatch::try_new(
        table.arrow_schema(),
        vec![Arc::new(Int32Array::from(ids)), Arc::new(values)],
    )
    .expect("noisy batch")
}

/// Rows in the large-file tests: about 13 MB uncompressed, more than one 8 MiB part.
const BIG_ROWS: i32 = 300_000;

/// Loads `BIG_ROWS` rows into one file (the default 128 MiB limit) and returns the summary.
async fn load_big(target: &ParquetTarget, table: &TableSchema) -> LoadSummary {
    let load = target.full_load(table);
    let mut w = load.writer();
    for start in (0..BIG_ROWS).step_by(8192) {
        let end = (start + 8192).min(BIG_ROWS);
        w.write(&noisy_batch(table, start..end))
            .await
            .expect("write");
    }
    w.close().await.expect("close");
    load.finish().await.expect("finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_through_multipart_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path().to_str().expect("utf-8"));
    cfg.compression = Some(ParquetCompression::None);
    let target = ParquetTarget::new(&cfg).expect("target");
    let table = small_table("big");
    let summary = load_big(&target, &table).await;
    assert_eq!(summary.files, 1);
    assert_eq!(summary.rows, BIG_ROWS as u64);
    assert!(summary.bytes > 9 * 1024 * 1024, "{} bytes", summary.bytes);
    // The staging file was renamed into place: nothing else is left in the folder.
    assert_eq!(
        files(&table_dir(dir.path(), &table)),
        ["LOAD00000001.parquet"]
    );
    assert_eq!(
        all_ids(dir.path(), &table),
        (0..BIG_ROWS).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_failed_upload_leaves_no_file_and_fails_the_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8"))).expect("target");
    // `app` is a file, so the table folder `app/blocked` cannot be created.
    std::fs::write(dir.path().join("app"), "in the way").expect("blocker");
    let table = small_table("blocked");
    let load = target.full_load(&table);
    let mut w = load.writer();
    // The first write looks into the table's folder (an interrupted switch to complete), which
    // fails here; on a store where it does not, the upload fails at close.
    let err = match w.write(&small_batch(&table, 0..10)).await {
        Err(err) => err,
        Ok(()) => w.close().await.expect_err("the upload cannot succeed"),
    };
    assert!(
        matches!(err, SinkError::Write { .. } | SinkError::Cleanup { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("app/blocked/_inlet_load/"), "{msg}");
    assert!(
        msg.contains("writable") || msg.contains("may write"),
        "{msg}"
    );
    let err = load.finish().await.expect_err("load failed");
    assert!(matches!(err, SinkError::Incomplete { .. }), "{err}");
}

fn moto_builder(endpoint: &str) -> object_store::aws::AmazonS3Builder {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // An http:// endpoint without allow_http: the target must allow it by itself.
    AmazonS3Builder::new()
        .with_config(AmazonS3ConfigKey::Endpoint, endpoint)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_region("us-east-1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_load_check_and_rerun() {
    use futures::TryStreamExt;
    use object_store::path::Path;
    use object_store::ObjectStoreExt;

    let mut moto = inlet_testkit::Moto::start();
    moto.create_bucket("inlet-test");
    let mut cfg = config("s3://inlet-test/raw/dms");
    cfg.compression = Some(ParquetCompression::None);
    let endpoint = moto.endpoint.clone();
    let target =
        ParquetTarget::with_s3_builder(&cfg, || moto_builder(&endpoint)).expect("s3 target");
    assert_eq!(target.describe(), "s3://inlet-test/raw/dms");
    target.check().await.expect("check");

    // A first run of three small files, then a run of one large (multipart) file.
    let table = small_table("s3");
    let small = load_small(&target.clone().with_file_size_bytes(1), &table, 1, 3, 10).await;
    assert_eq!(small.files, 3);
    let big = load_big(&target, &table).await;
    assert_eq!(big.files, 1);

    let dir = Path::from("raw/dms/app/s3");
    let mut keys: Vec<String> = target
        .store
        .list(Some(&dir))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    assert_eq!(keys, ["raw/dms/app/s3/LOAD00000001.parquet"]);
    let bytes = target
        .store
        .get(&Path::from(keys[0].as_str()))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(bytes.len() as u64, big.bytes);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("footer")
        .build()
        .expect("reader");
    let mut ids: Vec<i32> = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        ids.extend(batch.column(0).as_primitive::<Int32Type>().values().iter());
    }
    assert_eq!(ids, (0..BIG_ROWS).collect::<Vec<_>>());

    // A bucket that does not exist: check says what failed and what to do.
    let missing = ParquetTarget::with_s3_builder(&config("s3://no-such-bucket/x"), || {
        moto_builder(&endpoint)
    })
    .expect("target");
    let err = missing.check().await.expect_err("no bucket");
    let msg = err.to_string();
    assert!(matches!(err, SinkError::Check { .. }), "{msg}");
    assert!(msg.contains("s3://no-such-bucket/x"), "{msg}");
    assert!(
        !msg.contains("testing"),
        "the secret must not appear: {msg}"
    );
}

/// Source statistics saying a column is mostly distinct per row group turn its dictionary off;
/// columns without statistics, or with few distinct values, keep it.
#[tokio::test]
async fn dictionary_follows_distinct_value_hints() {
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(dir.path().to_str().expect("utf-8 path"));
    cfg.row_group_rows = 1000;
    let target = ParquetTarget::new(&cfg).expect("target");
    let mut table = typed_table();
    table.columns[0].distinct_values = Some(10_000_000); // id: unique
    table.columns[2].distinct_values = Some(400); // name: below row_group_rows / 2
    let load = target.full_load(&table);
    let mut w = load.writer();
    w.write(&typed_batch(&table, 0..3000)).await.expect("write");
    w.close().await.expect("close");
    load.finish().await.expect("finish");

    let path = table_dir(dir.path(), &table).join("LOAD00000001.parquet");
    let reader =
        SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("footer");
    let rg = reader.metadata().row_group(0);
    let has_dictionary = |i: usize| {
        rg.column(i)
            .encodings()
            .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
    };
    assert!(!has_dictionary(0), "id is mostly distinct: no dictionary");
    assert!(
        has_dictionary(1),
        "big has no statistics: default dictionary"
    );
    assert!(
        has_dictionary(2),
        "name has few distinct values: dictionary"
    );
}

fn change_batch(table: &TableSchema, rows: &[(&str, i64, i32)]) -> RecordBatch {
    use arrow_array::TimestampMicrosecondArray as Ts;
    let schema = inlet_core::change_schema(table);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Ts::from_iter_values(rows.iter().map(|r| r.1 * 1000)).with_timezone("UTC")),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 7))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    columns.truncate(schema.fields().len());
    RecordBatch::try_new(schema, columns).expect("change batch")
}

/// Change files: DMS columns, names carrying positions, and the kept-operations filters.
#[tokio::test]
async fn change_files_and_checkpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let table = TableSchema {
        id: TableId::new("public", "t"),
        columns: vec![col("id", "integer", DataType::Int32, false)],
        primary_key: vec!["id".into()],
    };
    let batch = change_batch(&table, &[("I", 100, 1), ("U", 100, 1), ("D", 120, 2)]);
    let file = |first, last| ChangeFile {
        first: inlet_core::Position(first),
        last: inlet_core::Position(last),
        commit_time_micros: 1_763_700_000_000_000 + last as i64,
        part: None,
    };
    for (name, mut cfg, expected) in [
        ("all", config(""), vec!["I", "U", "D"]),
        ("inserts", config(""), vec!["I"]),
        ("upserts", config(""), vec!["I", "U"]),
    ] {
        cfg.url = dir.path().join(name).to_str().expect("utf-8").to_string();
        cfg.cdc_inserts_only = name == "inserts";
        cfg.cdc_inserts_and_updates = name == "upserts";
        cfg.timestamp_column = Some("commit_ts".into());
        let target = ParquetTarget::new(&cfg).expect("target");
        let log = target.change_log(&table);
        assert_eq!(log.committed_position().await.expect("list"), None);
        assert_eq!(
            log.write(std::slice::from_ref(&batch), file(100, 120))
                .await
                .expect("write")
                .rows,
            expected.len() as u64
        );
        // A batch left empty by the filter writes no file.
        let deletes = change_batch(&table, &[("D", 130, 3)]);
        let written = log.write(&[deletes], file(130, 130)).await.expect("write");
        assert_eq!(written.rows, u64::from(name == "all"));
        assert_eq!(written.bytes > 0, name == "all");
        let highest = if name == "all" { 130 } else { 120 };
        assert_eq!(
            log.committed_position().await.expect("list"),
            Some(inlet_core::Position(highest))
        );

        let tdir = table_dir(&dir.path().join(name), &table);
        let first = std::fs::read_dir(&tdir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("a file");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(first).expect("open"))
                .expect("footer")
                .build()
                .expect("reader");
        let got: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        let names: Vec<String> = got[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["Op", "commit_ts", "_inlet_lsn", "_inlet_txid", "id"]
        );
        let ops: Vec<&str> = got[0]
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|o| o.expect("op"))
            .collect();
        assert_eq!(ops, expected);
    }

    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8"))).expect("target");
    assert_eq!(target.read_checkpoint("t1").await.expect("read"), None);
    let mut c = Checkpoint::at(inlet_core::Position(99));
    c.table("public.t").captured = true;
    c.source = Some(inlet_core::SourceResume::Postgres(
        inlet_core::PostgresResume {
            slot: "s".into(),
            created_by: None,
        },
    ));
    target.write_checkpoint("t1", &c).await.expect("write");
    assert_eq!(target.read_checkpoint("t1").await.expect("read"), Some(c));
}

/// A first load (the table's folder holds no earlier load or change file) writes straight into
/// the table's folder, as DMS does: no staging, no move (on S3 a copy of every file). Abandoned,
/// it deletes what it wrote and leaves the folder as it found it.
#[tokio::test]
async fn a_first_load_writes_in_place_and_an_abandoned_one_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
        .expect("target")
        .with_file_size_bytes(1);
    let table = small_table("first");
    let tdir = table_dir(dir.path(), &table);
    let staging = tdir.join(crate::load::STAGING_DIR);
    let soon = || std::time::Instant::now() + std::time::Duration::from_secs(5);

    let load = target.full_load(&table);
    let mut w = load.writer();
    for start in [0, 3] {
        w.write(&small_batch(&table, start..start + 3))
            .await
            .expect("write");
    }
    assert_eq!(
        files(&tdir),
        ["LOAD00000001.parquet", "LOAD00000002.parquet"],
        "written in place"
    );
    assert!(!staging.exists(), "nothing staged");
    drop(w);
    assert_eq!(load.abandon(soon()).await, Abandoned::Untouched);
    assert!(files(&tdir).is_empty(), "{:?}", files(&tdir));

    // Completed: in place, and finish moves nothing.
    load_small(&target, &table, 1, 3, 10).await;
    assert_eq!(all_ids(dir.path(), &table), (0..30).collect::<Vec<_>>());
    assert!(!staging.exists(), "nothing staged");
}

/// A store whose writes land a while after they were asked for, and land even when the one who
/// asked is cancelled: as the local store completes a write by a rename on a blocking thread,
/// only slower (a loaded machine).
#[derive(Debug)]
struct LateStore {
    inner: Arc<dyn object_store::ObjectStore>,
    delay: std::time::Duration,
}

impl std::fmt::Display for LateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "late {}", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for LateStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let (inner, at, delay) = (Arc::clone(&self.inner), location.clone(), self.delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            inner.put_opts(&at, payload, opts).await
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A load given up while one of its writes was under way (its worker cancelled by an error
/// elsewhere or a signal) leaves nothing staged once `abandon` returns, however
/// late that write lands: a file completed, and a resumable load's progress record. (A local
/// store lands both by a rename on a blocking thread that cancelling does not stop; the
/// clean-clone make test once found `_inlet_load` left behind after a failed load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_landing_after_its_writer_was_cancelled_is_deleted_with_the_load() {
    let late = std::time::Duration::from_millis(700);
    let soon = || std::time::Instant::now() + std::time::Duration::from_secs(5);
    for resumable in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
            .expect("target")
            .with_file_size_bytes(1);
        let table = small_table("late");
        let tdir = table_dir(dir.path(), &table);
        let staging = tdir.join(crate::load::STAGING_DIR);
        // An earlier complete set, so that the next load stages its files.
        load_small(&plain, &table, 1, 2, 10).await;
        let mut target = plain.clone();
        target.store = Arc::new(LateStore {
            inner: Arc::clone(&plain.store),
            delay: late,
        });
        let load = target.full_load(&table);
        if resumable {
            let progress = inlet_core::sink::LoadProgress {
                guard: "g".into(),
                chunks: vec!["c0".into(), "c1".into()],
                done: Vec::new(),
                started: Vec::new(),
            };
            load.resume(&progress).await.expect("resume");
        }
        // The worker is cancelled while its file's completion (and, resumable, the record of
        // its chunk) is under way.
        let mut w = load.writer();
        let batch = small_batch(&table, 100..103);
        let recorder = load.clone();
        let worker = tokio::spawn(async move {
            w.write(&batch).await.expect("write");
            if resumable {
                let files = w.end_chunk().await.expect("end chunk");
                let progress = inlet_core::sink::LoadProgress {
                    guard: "g".into(),
                    chunks: vec!["c0".into(), "c1".into()],
                    done: vec![inlet_core::sink::DoneChunk {
                        chunk: 0,
                        rows: 3,
                        files,
                        at: None,
                    }],
                    started: vec![1],
                };
                recorder.record_progress(&progress).await.expect("record");
            }
            w.close().await.expect("close");
        });
        // Resumable: after the file landed, while the record is under way.
        tokio::time::sleep(if resumable { late * 4 / 3 } else { late / 3 }).await;
        worker.abort();
        assert!(worker.await.expect_err("cancelled").is_cancelled());
        assert_eq!(
            load.abandon(soon()).await,
            Abandoned::Untouched,
            "resumable: {resumable}"
        );
        // Whatever was under way has landed by now; none of it may be left.
        tokio::time::sleep(late * 2).await;
        assert!(
            !staging.exists(),
            "resumable: {resumable}: {:?}",
            files(&staging)
        );
        assert_eq!(all_ids(dir.path(), &table), (0..20).collect::<Vec<_>>());
    }
}

/// Changes of `ids` (inserts) committed at `first`..=`last` in `table` (small_table's columns).
fn insert_changes(
    table: &TableSchema,
    first: u64,
    last: u64,
    part: Option<u32>,
    ids: &[i32],
) -> inlet_core::TableChanges {
    let n = ids.len();
    let batch = RecordBatch::try_new(
        inlet_core::change_schema(table),
        vec![
            Arc::new(StringArray::from(vec!["I"; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![1_000_000; n]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![last as i64; n])),
            Arc::new(Int64Array::from(vec![7; n])),
            Arc::new(Int32Array::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![Some("v"); n])),
        ],
    )
    .expect("change batch");
    inlet_core::TableChanges {
        table: 0,
        schema: table.clone(),
        batch,
        first: inlet_core::Position(first),
        last: inlet_core::Position(last),
        commit_time_micros: 1_000_000 + last as i64,
        part,
    }
}

/// After a takeover of an expired lease, a change file (or a part of one) that the former owner
/// lands once the new owner opened the table duplicates changes the new owner writes itself:
/// the new owner deletes it at its next commit. A file that landed before the opening counts in
/// the table's committed position (the new owner skips its changes) and stays, as do the new
/// owner's own files. Without a former owner nothing is deleted. (The fleet test saw such a
/// late file overlap the new owner's on S3, its changes replayed twice.)
#[tokio::test]
async fn a_former_owners_late_change_file_is_deleted_by_the_new_owner() {
    use inlet_core::sink::Sink as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path().to_str().expect("utf-8"));
    let former = ParquetTarget::new(&cfg).expect("target");
    for (name, taken_over) in [("handed", true), ("kept", false)] {
        let table = small_table(name);
        let tdir = table_dir(dir.path(), &table);
        let mut old = former.change_table(&table).await.expect("table");
        old.write(insert_changes(&table, 0x10, 0x20, None, &[1]))
            .await
            .expect("write");
        let before = files(&tdir);

        let mut new_owner = ParquetTarget::new(&cfg).expect("target");
        if taken_over {
            new_owner.expect_late_writes_of_a_former_owner();
        }
        let mut new = new_owner.change_table(&table).await.expect("table");
        assert_eq!(
            new.committed_position(&table).await.expect("position"),
            Some(inlet_core::Position(0x20))
        );
        // The former owner, continued after its pause, lands a part and a whole file.
        old.write(insert_changes(&table, 0x30, 0x30, Some(1), &[2]))
            .await
            .expect("late part");
        old.write(insert_changes(&table, 0x30, 0x40, None, &[2, 3]))
            .await
            .expect("late file");
        let late: Vec<String> = files(&tdir)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        assert_eq!(late.len(), 2, "{late:?}");
        // The new owner writes the same changes, cut otherwise, and commits.
        new.write(insert_changes(&table, 0x30, 0x50, None, &[2, 3, 4]))
            .await
            .expect("write");
        new.commit(inlet_core::Position(0x50))
            .await
            .expect("commit");
        let now = files(&tdir);
        for f in &before {
            assert!(
                now.contains(f),
                "{name}: {f} landed before the opening: {now:?}"
            );
        }
        for f in &late {
            assert_eq!(
                now.contains(f),
                !taken_over,
                "{name}: a late file of the former owner: {now:?}"
            );
        }
        assert_eq!(
            now.len(),
            before.len() + 1 + usize::from(!taken_over) * 2,
            "{now:?}"
        );
    }
}

/// The same after a restart of the task in the new owner (a transient error) between the late
/// file's landing and the sweep of the next commit: opening the table again under the same
/// takeover deletes the late file (this daemon wrote its changes before the restart) instead of
/// counting it in the table's position, which would skip past it and keep both copies. Under a
/// new takeover (another epoch) the record starts anew.
#[tokio::test]
async fn a_late_file_landing_before_a_restart_of_the_new_owner_is_deleted_at_the_reopening() {
    use inlet_core::sink::Sink as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path().to_str().expect("utf-8"));
    let former = ParquetTarget::new(&cfg).expect("target");
    let table = small_table("restarted");
    let tdir = table_dir(dir.path(), &table);
    let mut old = former.change_table(&table).await.expect("table");
    old.write(insert_changes(&table, 0x10, 0x20, None, &[1]))
        .await
        .expect("write");
    let new_owner = |epoch: u64| {
        let mut t = ParquetTarget::new(&cfg).expect("target");
        t.set_owner_epoch(epoch);
        t.expect_late_writes_of_a_former_owner();
        t
    };
    let run1 = new_owner(7);
    let mut new = run1.change_table(&table).await.expect("table");
    assert_eq!(
        new.committed_position(&table).await.expect("position"),
        Some(inlet_core::Position(0x20))
    );
    // The new owner writes the next transaction; the paused former owner then lands its own
    // file of the same changes, and of one more transaction.
    new.write(insert_changes(&table, 0x30, 0x30, None, &[2]))
        .await
        .expect("write");
    let written = files(&tdir);
    old.write(insert_changes(&table, 0x30, 0x40, None, &[2, 3]))
        .await
        .expect("late file");
    let late: Vec<String> = files(&tdir)
        .into_iter()
        .filter(|f| !written.contains(f))
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    // The task restarts before its next commit: a new target and table under the same epoch.
    drop(new);
    let run2 = new_owner(7);
    let mut again = run2.change_table(&table).await.expect("table");
    assert_eq!(
        again.committed_position(&table).await.expect("position"),
        Some(inlet_core::Position(0x30)),
        "the late file counted in the position: its changes at 0x40 would be skipped and its \
         copy of 0x30 kept"
    );
    assert_eq!(
        files(&tdir),
        written,
        "the late file is deleted at the reopening"
    );
    // The stream goes on from 0x30 and writes 0x40 itself.
    again
        .write(insert_changes(&table, 0x40, 0x40, None, &[3]))
        .await
        .expect("write");
    again
        .commit(inlet_core::Position(0x40))
        .await
        .expect("commit");
    assert_eq!(files(&tdir).len(), written.len() + 1);

    // Another takeover (epoch 9: another daemon held 8) records the folder as it finds it: a
    // file landed before its opening is the one copy of its changes and stays.
    old.write(insert_changes(&table, 0x50, 0x50, None, &[4]))
        .await
        .expect("former owner's file");
    let before = files(&tdir);
    let run3 = new_owner(9);
    let third = run3.change_table(&table).await.expect("table");
    assert_eq!(
        third.committed_position(&table).await.expect("position"),
        Some(inlet_core::Position(0x50))
    );
    assert_eq!(files(&tdir), before);
}

/// A daemon that took a task over from a paused owner, then lost the lease by its own timing
/// (starved of CPU) and took it back, holds the next epoch with no former owner (its own record
/// counts as gone). A file the paused owner lands in between still duplicates changes this
/// daemon wrote: the opening under the next epoch deletes it instead of counting it in the
/// table's position (the fleet test's overlap on S3 in CI, under load). After another daemon's
/// epoch the record starts anew.
#[tokio::test]
async fn a_late_file_landing_while_the_new_owner_takes_its_own_lease_back_is_deleted() {
    use inlet_core::sink::Sink as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path().to_str().expect("utf-8"));
    let former = ParquetTarget::new(&cfg).expect("target");
    let table = small_table("retaken");
    let tdir = table_dir(dir.path(), &table);
    let mut old = former.change_table(&table).await.expect("table");
    old.write(insert_changes(&table, 0x10, 0x20, None, &[1]))
        .await
        .expect("write");
    let owner = |epoch: u64, after_expiry: bool| {
        let mut t = ParquetTarget::new(&cfg).expect("target");
        t.set_owner_epoch(epoch);
        if after_expiry {
            t.expect_late_writes_of_a_former_owner();
        }
        t
    };
    let run1 = owner(4, true);
    let mut new = run1.change_table(&table).await.expect("table");
    assert_eq!(
        new.committed_position(&table).await.expect("position"),
        Some(inlet_core::Position(0x20))
    );
    new.write(insert_changes(&table, 0x30, 0x30, None, &[2]))
        .await
        .expect("write");
    let written = files(&tdir);
    // This daemon fences itself; the paused former owner lands its file of 0x30 and 0x40.
    drop(new);
    old.write(insert_changes(&table, 0x30, 0x40, None, &[2, 3]))
        .await
        .expect("late file");
    assert_eq!(files(&tdir).len(), written.len() + 1);
    // It takes its own lease back: epoch 5, no former owner.
    let run2 = owner(5, false);
    let mut again = run2.change_table(&table).await.expect("table");
    assert_eq!(
        again.committed_position(&table).await.expect("position"),
        Some(inlet_core::Position(0x30)),
        "the late file counted in the position: its copy of 0x30 would stay beside this \
         daemon's"
    );
    assert_eq!(
        files(&tdir),
        written,
        "the late file is deleted at the opening"
    );
    again
        .write(insert_changes(&table, 0x40, 0x40, None, &[3]))
        .await
        .expect("write");
    again
        .commit(inlet_core::Position(0x40))
        .await
        .expect("commit");
    let written = files(&tdir);
    assert_eq!(written.len(), 3, "{written:?}");

    // Another daemon held epoch 6 and wrote 0x50; this one takes epoch 7 from it once it
    // expired (or was released): its file is the one copy of 0x50 and stays.
    old.write(insert_changes(&table, 0x50, 0x50, None, &[4]))
        .await
        .expect("another owner's file");
    let before = files(&tdir);
    for after_expiry in [false, true] {
        let run3 = owner(7, after_expiry);
        let third = run3.change_table(&table).await.expect("table");
        assert_eq!(
            third.committed_position(&table).await.expect("position"),
            Some(inlet_core::Position(0x50))
        );
        assert_eq!(files(&tdir), before);
    }
}

/// The sweep's deletes ask the write gate: a daemon paused between its commit's fence check and
/// the delete, continued after another daemon took the task, would delete the new owner's change
/// files (to this daemon's record they are late files of a former owner).
#[tokio::test]
async fn the_sweep_deletes_nothing_once_the_write_gate_closes() {
    use inlet_core::sink::Sink as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path().to_str().expect("utf-8"));
    let other = ParquetTarget::new(&cfg).expect("target");
    let table = small_table("gated_sweep");
    let tdir = table_dir(dir.path(), &table);
    let open = Arc::new(AtomicBool::new(true));
    let mut owner = ParquetTarget::new(&cfg).expect("target");
    owner.set_owner_epoch(3);
    owner.expect_late_writes_of_a_former_owner();
    let gate = open.clone();
    owner.set_write_gate(Arc::new(move || {
        if gate.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("task t was taken by daemon c".to_string())
        }
    }));
    let mut mine = owner.change_table(&table).await.expect("table");
    assert_eq!(
        mine.committed_position(&table).await.expect("position"),
        None
    );
    mine.write(insert_changes(&table, 0x10, 0x10, None, &[1]))
        .await
        .expect("write");
    // Another daemon's file appears (the new owner's, to this paused one): the gate is shut.
    let mut theirs = other.change_table(&table).await.expect("table");
    theirs
        .write(insert_changes(&table, 0x20, 0x20, None, &[2]))
        .await
        .expect("their write");
    let both = files(&tdir);
    assert_eq!(both.len(), 2, "{both:?}");
    open.store(false, Ordering::SeqCst);
    assert!(mine.commit(inlet_core::Position(0x10)).await.is_err());
    assert_eq!(files(&tdir), both, "a file deleted through a closed gate");
}

/// A load whose daemon lost the task in the middle of its switch (paused, continued after
/// another daemon took the task) moves and deletes nothing more: in particular not the change
/// files the new owner wrote meanwhile, which the switch deletes as the earlier load's. The
/// switch record stays for the new owner's next load to complete.
#[tokio::test]
async fn a_switch_stops_when_the_write_gate_closes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for allowed in [0usize, 3] {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = ParquetTarget::new(&config(dir.path().to_str().expect("utf-8")))
            .expect("target")
            .with_file_size_bytes(1);
        let table = small_table("gated");
        let tdir = table_dir(dir.path(), &table);
        // The earlier complete set: 4 files.
        load_small(&plain, &table, 1, 4, 10).await;
        // A new load of 2 files, staged.
        let steps = AtomicUsize::new(allowed);
        let mut gated = plain.clone();
        gated.gate = Some(Arc::new(move || {
            steps
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .map(|_| ())
                .map_err(|_| "task t was taken by daemon b".to_string())
        }));
        let load = gated.full_load(&table);
        stage_two_files(&load, &table).await;
        // Meanwhile the new owner streams into the table.
        let newer = ChangeFile {
            first: inlet_core::Position(0x50),
            last: inlet_core::Position(0x50),
            commit_time_micros: 1_000_000,
            part: None,
        };
        let changes = insert_changes(&table, 0x50, 0x50, None, &[9]).batch;
        plain
            .change_log(&table)
            .write(&[changes], newer)
            .await
            .expect("change file");
        let Err(e) = load.finish().await else {
            panic!("allowed {allowed}: the switch went on after the gate closed");
        };
        assert!(e.to_string().contains("was taken by daemon b"), "{e}");
        let now = files(&tdir);
        assert!(now.contains(&newer.name()), "allowed {allowed}: {now:?}");
        for n in ["LOAD00000003.parquet", "LOAD00000004.parquet"] {
            assert!(now.contains(&n.to_string()), "allowed {allowed}: {now:?}");
        }
        assert!(
            files(&tdir.join(crate::load::STAGING_DIR)).contains(&"SWITCH".to_string()),
            "allowed {allowed}: the switch record stays"
        );
    }
}
