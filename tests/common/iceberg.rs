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
