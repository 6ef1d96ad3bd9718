//! Reading an Iceberg table inlet wrote with readers nobody here wrote: pyiceberg, DuckDB's
//! iceberg extension and polars' native reader (sinks/iceberg/tests/readers/read_table.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::python;

/// The newest `vN.metadata.json` of a table.
pub fn current_metadata(table_dir: &Path) -> PathBuf {
    std::fs::read_dir(table_dir.join("metadata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let n: u64 = name
                .strip_prefix('v')?
                .strip_suffix(".metadata.json")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .max()
        .map(|(_, p)| p)
        .expect("a metadata file")
}

pub type Rows = Vec<Vec<Option<String>>>;

/// Both readers' rows (sorted), or a panic naming the reader that failed.
pub fn read_iceberg(table_dir: &Path) -> (Rows, Rows) {
    let mut rows = read_with(table_dir, &["pyiceberg", "duckdb"]).into_iter();
    match (rows.next(), rows.next()) {
        (Some(pyiceberg), Some(duckdb)) => (pyiceberg, duckdb),
        _ => unreachable!("read_with returns one set of rows per reader asked for"),
    }
}

/// The rows (sorted) each reader (`pyiceberg`, `duckdb`, `polars`: its native reader) reads,
/// in the order asked, or a panic naming the reader that failed.
pub fn read_with(table_dir: &Path, readers: &[&str]) -> Vec<Rows> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sinks/iceberg/tests/readers/read_table.py"
    );
    let metadata = current_metadata(table_dir);
    let polars = if readers.contains(&"polars") {
        "1"
    } else {
        "0"
    };
    let out = Command::new(python())
        .arg(script)
        .arg(&metadata)
        .env("INLET_POLARS", polars)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |reader: &str| -> Rows {
        let r = &doc[reader];
        assert!(r.get("error").is_none(), "{reader}: {}", r["error"]);
        let mut rows: Rows = r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .collect();
        rows.sort();
        rows
    };
    readers.iter().map(|r| rows(r)).collect()
}

/// The rows pyiceberg, DuckDB and polars' native reader read from the table in `table_dir`
/// equal `want` (sorted), exactly.
pub fn assert_iceberg_equals(table_dir: &Path, table: &str, want: &Rows) {
    let readers = ["pyiceberg", "duckdb", "polars"];
    for (reader, rows) in readers.iter().zip(read_with(table_dir, &readers)) {
        assert_eq!(rows.len(), want.len(), "{table}: {reader} row count");
        assert!(
            &rows == want,
            "{table}: {reader} rows differ from the source"
        );
    }
}

/// Commits to the folder-catalog table in `table_dir` as another engine: pyiceberg plans the
/// change and publishes it as the next `vN.metadata.json`
/// (sinks/iceberg/tests/readers/foreign_commit.py). `op`: `rewrite` (overwrite with the same
/// rows, as a compaction), `delete FILTER` (pyiceberg row filter) or `expire` (every snapshot
/// but the current one). Returns the script's report (`version`, `touched`, `committed`).
pub fn foreign_commit(table_dir: &Path, op: &[&str]) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sinks/iceberg/tests/readers/foreign_commit.py"
    );
    let out = Command::new(python())
        .arg(script)
        .arg(table_dir)
        .args(op)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyiceberg {op:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pyiceberg {op:?} printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every snapshot of the table's current metadata, oldest first: (operation, `inlet.task`,
/// `inlet.position`).
pub fn snapshot_log(table_dir: &Path) -> Vec<(String, Option<String>, Option<String>)> {
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(current_metadata(table_dir)).unwrap()).unwrap();
    let mut snapshots: Vec<&serde_json::Value> =
        metadata["snapshots"].as_array().unwrap().iter().collect();
    snapshots.sort_by_key(|s| s["sequence-number"].as_i64());
    snapshots
        .iter()
        .map(|s| {
            let summary = &s["summary"];
            let text = |k: &str| summary[k].as_str().map(str::to_string);
            (
                text("operation").unwrap_or_default(),
                text("inlet.task"),
                text("inlet.position"),
            )
        })
        .collect()
}

/// Another engine committing to a folder-catalog table in a loop, concurrently with inlet
/// (foreign_commit.py `loop`): the delete first (once, when given), then rewrites of every data
/// file and expiries of older snapshots, until [`ForeignLoop::finish`].
pub struct ForeignLoop {
    child: std::process::Child,
    stop: PathBuf,
}

/// What the loop did: its commits (`op`, `version`, `touched`), the commits it lost to another
/// writer (planned again each time) and its errors.
pub struct ForeignReport {
    pub commits: Vec<serde_json::Value>,
    pub conflicts: u64,
    pub errors: Vec<String>,
}

impl ForeignLoop {
    /// Starts the loop on the table in `table_dir`; `delete` is a pyiceberg row filter; the loop
    /// stops when the file `stop` (outside the warehouse) exists.
    pub fn start(table_dir: &Path, stop: &Path, delete: Option<&str>) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sinks/iceberg/tests/readers/foreign_commit.py"
        );
        let stop = stop.to_path_buf();
        let _ = std::fs::remove_file(&stop);
        let child = Command::new(python())
            .arg(script)
            .arg(table_dir)
            .arg("loop")
            .arg(&stop)
            .args(delete)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, stop }
    }

    /// How many commits the loop has made so far.
    pub fn commits(&self) -> usize {
        let mut log = self.stop.clone().into_os_string();
        log.push(".commits");
        std::fs::read_to_string(log)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Whether the loop still runs (a loop that stopped early failed; `finish` says why).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the loop to stop after its current commit and returns its report.
    pub fn finish(self) -> ForeignReport {
        std::fs::write(&self.stop, b"").unwrap();
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the foreign commit loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the foreign commit loop printed no report ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        ForeignReport {
            commits: doc["commits"].as_array().cloned().unwrap_or_default(),
            conflicts: doc["conflicts"].as_u64().unwrap_or_default(),
            errors: doc["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect(),
        }
    }
}

/// The metadata versions (`vN.metadata.json`) of the table in `table_dir`, ascending.
pub fn metadata_versions(table_dir: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(table_dir.join("metadata"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix('v')?
                .strip_suffix(".metadata.json")?
                .parse()
                .ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}
