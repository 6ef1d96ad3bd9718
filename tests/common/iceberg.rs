//! Reading an Iceberg table inlet wrote with two readers nobody here wrote: pyiceberg and
//! DuckDB's iceberg extension (sinks/iceberg/tests/readers/read_table.py).

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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sinks/iceberg/tests/readers/read_table.py"
    );
    let metadata = current_metadata(table_dir);
    let out = Command::new(python())
        .arg(script)
        .arg(&metadata)
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
    (rows("pyiceberg"), rows("duckdb"))
}

/// Both readers' rows of the table in `table_dir` equal `want` (sorted), exactly.
pub fn assert_iceberg_equals(table_dir: &Path, table: &str, want: &Rows) {
    let (pyiceberg, duckdb) = read_iceberg(table_dir);
    assert_eq!(pyiceberg.len(), want.len(), "{table}: pyiceberg row count");
    assert!(
        &pyiceberg == want,
        "{table}: pyiceberg rows differ from the source"
    );
    assert!(
        &duckdb == want,
        "{table}: DuckDB rows differ from the source"
    );
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
