//! A Parquet table loaded again beside the stream (here by `inlet resync`; a swapped table, a
//! partition DDL or a column added with a default take the same path) stays readable as the
//! earlier, complete table while the new load runs and after a crash in it: the new load's files
//! are staged and replace the earlier files and change files only once complete (issue 16
//! item 2).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{spawn_logged as spawn, Inlet};
use common::replay::{replay, source_rows};
use common::{load_files, pg_stream, task_file, PgServer};

const SLOT: &str = "inlet_reload";
const COLUMNS: [&str; 3] = ["id", "version", "note"];

fn task(url: &str, out: &Path) -> String {
    format!(
        r#"
[task]
name = "reload"
mode = "full-load-and-cdc"
[source]
kind = "postgres"
url = "{url}"
tls = "disable"
[target]
kind = "parquet"
url = "{}"
file_size_mb = 1
[tables]
include = ["public.t"]
[full_load]
chunk_mb = 1
[cdc]
flush_interval_ms = 200
[retry]
min_delay_ms = 200
max_delay_ms = 1000
"#,
        out.display()
    )
}

/// SIGTERM, then the exit code (30 s at most).
fn stop(mut child: Inlet, log: &Path) -> i32 {
    common::sigterm(&child.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not stop within 30 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn change_files(table_dir: &Path) -> Vec<String> {
    names(&load_files(table_dir))
        .into_iter()
        .filter(|n| !n.starts_with("LOAD"))
        .collect()
}

fn staged_files(table_dir: &Path) -> usize {
    std::fs::read_dir(table_dir.join("_inlet_load"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// The resync's load, paused by a lock between two chunks and then killed (SIGKILL): the folder
/// replays to the table as it was before, with its change files, throughout; the restarted load
/// replaces it, and then no file of the earlier copy is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_table_stays_whole_until_its_new_load_is_complete() {
    let pg = PgServer::start();
    let client = pg.client("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, version int NOT NULL, note text);
             INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, 300000) g;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let tdir = out.join("public/t");
    let log = dir.path().join("inlet.log");
    let checkpoint = out.join("_inlet/reload/checkpoint");
    let cfg = task_file(dir.path(), "reload", &task(&pg.url("postgres"), &out));
    let cfg_arg = cfg.to_str().unwrap();

    // The first load, then changes: the table's copy is LOAD files plus change files.
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute(
            "UPDATE t SET version = version + 1, note = 'changed' WHERE id % 1000 = 0;
             DELETE FROM t WHERE id % 1000 = 1;
             INSERT INTO t SELECT g, 0, 'new' FROM generate_series(400001, 400100) g;",
        )
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let before = source_rows(&client, "t", &COLUMNS).await;
    assert_eq!(before.len(), 300000 - 300 + 100);
    assert!(replay(&tdir, &COLUMNS) == before, "the first copy");
    let old_changes = change_files(&tdir);
    assert!(!old_changes.is_empty(), "the changes are in change files");

    let (code, stdout, stderr) = common::inlet(&["resync", "-c", cfg_arg, "public.t"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    // Once the reload wrote a file (or, as inlet did before, dropped the change files), a lock
    // pauses it at its next chunk: the reload is under way while the folder is read.
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_files(&tdir) == 0 && change_files(&tdir) == old_changes {
        assert!(
            Instant::now() < deadline,
            "the reload wrote nothing:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let blocker = pg.client("postgres").await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("tables loaded beside the stream"),
        "the reload ended before the lock"
    );
    assert!(
        replay(&tdir, &COLUMNS) == before,
        "during the reload the folder reads as the table before it"
    );
    assert_eq!(change_files(&tdir), old_changes);

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        replay(&tdir, &COLUMNS) == before,
        "after a crash in the reload the folder reads as the table before it"
    );
    blocker.batch_execute("COMMIT").await.unwrap();

    // The restarted task loads the table again, replacing the earlier copy.
    client
        .batch_execute("UPDATE t SET version = version + 1 WHERE id % 1000 = 2;")
        .await
        .unwrap();
    std::fs::write(&log, "").unwrap();
    let mut child = spawn(&cfg, &log);
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    client
        .batch_execute(
            "UPDATE t SET version = version + 1 WHERE id <= 3; DELETE FROM t WHERE id = 5;",
        )
        .await
        .unwrap();
    pg_stream::wait_caught_up(&client, &mut child.0, &checkpoint, SLOT).await;
    assert_eq!(stop(child, &log), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the table's resync is done"), "{text}");

    let now = source_rows(&client, "t", &COLUMNS).await;
    assert!(
        replay(&tdir, &COLUMNS) == now,
        "the folder equals the source"
    );
    let left = change_files(&tdir);
    assert!(
        left.iter().all(|n| !old_changes.contains(n)),
        "no change file from before the reload is left: {left:?}"
    );
    let loads: Vec<String> = names(&load_files(&tdir))
        .into_iter()
        .filter(|n| n.starts_with("LOAD"))
        .collect();
    let dense: Vec<String> = (1..=loads.len())
        .map(|n| format!("LOAD{n:08X}.parquet"))
        .collect();
    assert_eq!(loads, dense, "only the new load's files");
    assert!(!tdir.join("_inlet_load").exists(), "nothing staged is left");
}
