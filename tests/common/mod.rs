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
pub mod resume;
pub mod soak;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::RecordBatch;
#[allow(unused_imports)] // not every test binary uses all of them
pub use inlet_testkit::{python, Moto, PgServer};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The task checkpoint (or slot record) stored at `path`, if there is one; either form.
pub fn read_checkpoint(path: &Path) -> Option<inlet_core::Checkpoint> {
    let bytes = std::fs::read(path).ok()?;
    match inlet_core::Checkpoint::decode(&bytes) {
        Ok(cp) => Some(cp),
        Err(e) => panic!(
            "unreadable checkpoint {}: {e}\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// Whether the checkpoint at `path` records table `name` (`schema.table`) as captured.
pub fn checkpoint_captures(path: &Path, name: &str) -> bool {
    read_checkpoint(path).is_some_and(|cp| cp.tables.get(name).is_some_and(|t| t.captured))
}

/// `checkpoint` in the text form every version before the typed checkpoint wrote (6164e41's
/// sinks/parquet/src/changes.rs `Checkpoint::encode`: `position=<16 hex digits>`, then one
/// `key=value` line per fact, with the keys and value encodings of the fact writers of those
/// versions: src/cdc.rs `SLOT_FACT`, src/stream.rs `table_fact` (the name in JSON quotes),
/// src/join.rs `loaded_at_fact`/`identity_fact`/`replaced_fact`, src/resync.rs `RESYNC_FACT`,
/// src/cdc/rewrites.rs `STORAGE_FACT`, src/cdc/added_defaults.rs `DEFAULTS_FACT`,
/// src/mysql_task.rs `SERVER_FACT`, connectors/mysql/src/position.rs `*_FACT`).
pub fn legacy_checkpoint_text(checkpoint: &inlet_core::Checkpoint) -> String {
    use inlet_core::SourceResume;
    let mut lines = vec![format!("position={:016X}", checkpoint.position.0)];
    if let Some(SourceResume::Postgres(p)) = &checkpoint.source {
        lines.push(format!("slot={}", p.slot));
        if let Some(c) = &p.created_by {
            lines.push(format!("task={}", c.task));
            lines.push(format!("database={}", c.database));
            lines.push(format!("id={}", c.id));
            if let Some(system) = &c.system {
                lines.push(format!("system={system}"));
            }
            if c.creating {
                lines.push("creating=true".into());
            }
        }
    }
    for (name, t) in &checkpoint.tables {
        let quoted = serde_json::to_string(name).unwrap();
        if t.captured {
            lines.push(format!("table={quoted}"));
        }
        if let Some(at) = t.loaded_at {
            lines.push(format!("table_loaded_at={:016X} {quoted}", at.0));
        }
        if let Some(at) = t.replaced_at {
            lines.push(format!("table_replaced_at={:016X} {quoted}", at.0));
        }
        if let Some(at) = t.resync_at {
            lines.push(format!("table_resync={:016X} {quoted}", at.0));
        }
        for identity in &t.identities {
            lines.push(format!("table_identity={identity} {quoted}"));
        }
        if let Some(s) = &t.storage {
            let columns: Vec<String> = s
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "{}:{}:{}:{}:{}",
                        c.num,
                        c.xmin,
                        c.type_id,
                        c.typmod,
                        u8::from(c.missing)
                    )
                })
                .collect();
            let columns = if columns.is_empty() {
                "-".to_string()
            } else {
                columns.join(",")
            };
            lines.push(format!("table_storage={} {columns} {quoted}", s.filenode));
        }
        if let Some(d) = &t.unwritten_defaults {
            lines.push(format!(
                "table_unwritten_defaults={quoted} {}",
                serde_json::to_string(d).unwrap()
            ));
        }
    }
    if let Some(SourceResume::Mysql(m)) = &checkpoint.source {
        if let Some(id) = m.server_id {
            lines.push(format!("mysql.server_id={id}"));
        }
        if let Some(f) = &m.flavor {
            lines.push(format!("mysql.flavor={f}"));
        }
        if let Some(f) = &m.binlog_file {
            lines.push(format!("mysql.binlog_file={f}"));
        }
        if let Some(g) = &m.gtid_set {
            lines.push(format!("mysql.gtid_set={g}"));
        }
        if let Some(x) = m.xa_prepared_from {
            lines.push(format!("mysql.xa_prepared_from={}", x.0));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

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
