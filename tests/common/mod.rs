//! Helpers of the `inlet` end-to-end tests: run the binary, write task files, read what it
//! wrote. The servers (PostgreSQL, moto) come from the shared `inlet-testkit` crate.
#![allow(dead_code)] // each test binary uses its own subset

pub mod audit;
pub mod daemon;
pub mod iceberg;
pub mod mysql_audit;
pub mod mysql_rows;
pub mod mysql_stream;
pub mod pg_stream;
pub mod pg_workload;
pub mod replay;
pub mod soak;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::RecordBatch;
#[allow(unused_imports)] // not every test binary uses all of them
pub use inlet_testkit::{python, Moto, PgServer};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Runs `inlet ARGS…` and returns (exit code, stdout, stderr).
pub fn inlet(args: &[&str]) -> (i32, String, String) {
    inlet_with_env(args, &[])
}

/// Runs `inlet ARGS…` with extra environment variables.
pub fn inlet_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run inlet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a task file into `dir` and returns its path.
pub fn task_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, body).expect("write task file");
    path
}

/// Sorted LOAD files of one table folder.
pub fn load_files(table_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(table_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", table_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
}

/// Every batch of every LOAD file of a table folder.
pub fn read_table(table_dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in load_files(table_dir) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&f).expect("open parquet"))
                .expect("parquet footer")
                .build()
                .expect("reader");
        for b in reader {
            out.push(b.expect("batch"));
        }
    }
    out
}

/// Starts `inlet run -c CFG` with stderr piped. Tests run side by side, so each daemon's HTTP
/// endpoint gets a port of its own.
pub fn spawn_run(cfg: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args([
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start inlet run")
}

/// Sends SIGTERM, as systemd or a container runtime would.
pub fn sigterm(child: &std::process::Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for the process; its exit code and stderr.
pub fn stderr_of(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().expect("wait for inlet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGTERM, then the exit code and stderr.
pub fn stop_run(child: std::process::Child) -> (i32, String) {
    sigterm(&child);
    stderr_of(child)
}
