//! Source columns named like the columns inlet adds: DMS's `Op` in Parquet change files, and
//! inlet's own `_inlet_*` change columns. Either would give a file with two columns of one
//! name, and a reader would get inlet's value instead of the table's (or the reverse), so the
//! task refuses such a table with the key that fixes it, and `op_column` renames `Op`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use common::replay::{cell, file_name, read_file};
use common::{inlet, load_files, sigterm, spawn_run, stderr_of, task_file, PgServer};

fn task(url: &str, out: &Path, mode: &str, target_extra: &str) -> String {
    format!(
        r#"
[task]
name = "names"
mode = "{mode}"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
{target_extra}
[tables]
include = ["public.ops"]
[cdc]
flush_interval_ms = 200
"#,
        out.display()
    )
}

fn change_files(table_dir: &Path) -> Vec<PathBuf> {
    load_files(table_dir)
        .into_iter()
        .filter(|p| !file_name(p).starts_with("LOAD"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_named_op_needs_op_column_and_then_keeps_its_values() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE public.ops (id bigint PRIMARY KEY, \"Op\" text, n int);
             INSERT INTO public.ops VALUES (1, 'table-value', 1);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Without op_column: refused before any change file is written, naming the key.
    let out = dir.path().join("refused");
    let cfg = task_file(
        dir.path(),
        "refused",
        &task(&pg.url("postgres"), &out, "full-load-and-cdc", ""),
    );
    // A free port: the default 127.0.0.1:9440 may be taken by another test running inlet.
    let (code, _, stderr) = inlet(&[
        "run",
        "-c",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("public.ops") && stderr.contains("\"Op\"") && stderr.contains("op_column"),
        "{stderr}"
    );
    let table_dir = out.join("public/ops");
    assert!(!table_dir.exists() || change_files(&table_dir).is_empty());
    client
        .batch_execute("SELECT pg_drop_replication_slot('inlet_names')")
        .await
        .unwrap();

    // With op_column = "dms_op": the operation is in dms_op, the table's value in Op.
    let out = dir.path().join("renamed");
    let cfg = task_file(
        dir.path(),
        "renamed",
        &task(
            &pg.url("postgres"),
            &out,
            "full-load-and-cdc",
            "op_column = \"dms_op\"\ninclude_op_for_full_load = true",
        ),
    );
    let child = spawn_run(&cfg);
    let table_dir = out.join("public/ops");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !table_dir.exists() || load_files(&table_dir).is_empty() {
        assert!(Instant::now() < deadline, "no LOAD file in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .batch_execute(
            "INSERT INTO public.ops VALUES (2, 'D', 2);
             UPDATE public.ops SET \"Op\" = 'I', n = 3 WHERE id = 1;
             DELETE FROM public.ops WHERE id = 2;",
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    while rows.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "changes not written in 60 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows.clear();
        let mut files = change_files(&table_dir);
        files.retain(|f| f.extension().is_some_and(|e| e == "parquet"));
        files.sort();
        for f in files {
            for b in read_file(&f) {
                let schema = b.schema();
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                assert_eq!(names[0], "dms_op", "{names:?}");
                assert_eq!(
                    names
                        .iter()
                        .filter(|n| n.eq_ignore_ascii_case("op"))
                        .count(),
                    1,
                    "{names:?}"
                );
                let op = b
                    .column_by_name("dms_op")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                for r in 0..b.num_rows() {
                    rows.push((
                        op.value(r).to_string(),
                        cell(b.column_by_name("id").unwrap().as_ref(), r),
                        cell(b.column_by_name("Op").unwrap().as_ref(), r),
                    ));
                }
            }
        }
    }
    sigterm(&child);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            ("I".into(), s("2"), s("D")),
            ("U".into(), s("1"), s("I")),
            ("D".into(), s("2"), None),
        ]
    );
    let load_file = load_files(&table_dir)
        .into_iter()
        .find(|p| file_name(p).starts_with("LOAD"))
        .expect("a LOAD file");
    let load = read_file(&load_file);
    assert_eq!(load[0].schema().field(0).name(), "dms_op");
    assert_eq!(
        cell(load[0].column_by_name("Op").unwrap().as_ref(), 0),
        s("table-value")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_named_like_an_inlet_change_column_is_refused() {
    let pg = PgServer::start();
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE public.ops (id bigint PRIMARY KEY, \"_Inlet_LSN\" bigint);
             INSERT INTO public.ops VALUES (1, 42);",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = task_file(
        dir.path(),
        "reserved",
        &task(&pg.url("postgres"), &out, "full-load", ""),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("public.ops")
            && stderr.contains("\"_Inlet_LSN\"")
            && stderr.contains("[tables.exclude_columns] \"public.ops\" = [\"_Inlet_LSN\"]"),
        "{stderr}"
    );
    assert!(!out.join("public").exists(), "something was written");

    // Leaving it out, as the message says, loads the table.
    let cfg = task_file(
        dir.path(),
        "excluded",
        &task(&pg.url("postgres"), &out, "full-load", "").replace(
            "[cdc]",
            "[tables.exclude_columns]\n\"public.ops\" = [\"_Inlet_LSN\"]\n[cdc]",
        ),
    );
    let (code, _, stderr) = inlet(&["full-load", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let batches = read_file(&load_files(&out.join("public/ops"))[0]);
    assert_eq!(batches[0].num_columns(), 1);
}
