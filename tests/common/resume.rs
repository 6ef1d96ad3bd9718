//! A full load that resumes (`task.mode = "full-load"`): SIGKILL `inlet full-load` several
//! times while it loads a large table `big (id, k, label)`, restart it, and check what each
//! restart kept and read again, and that the target ends equal to the source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::python;

/// One source's case: the task file (a full load of `big` with `workers` workers and small
/// chunks), where its sink keeps the progress record, the table's folder, and the source's
/// count and checksum (see [`duckdb_checksum`]).
pub struct ResumeCase<'a> {
    pub dir: &'a Path,
    pub cfg: &'a Path,
    pub record: PathBuf,
    pub table_dir: PathBuf,
    pub iceberg: bool,
    /// Load the table completely first, so that the killed loads replace a complete one (Parquet:
    /// staged in `_inlet_load/`, moved into the table's folder at the end).
    pub loaded_before: bool,
    pub rows: i64,
    pub workers: usize,
    pub want: (i64, String),
}

/// How many SIGKILLs a case goes through before the run that completes.
const KILLS: usize = 3;

/// Kills the load [`KILLS`] times, each once its run recorded 8 more chunks (the second time
/// with SIGTERM, which must suspend it like a crash and exit 3; the others with SIGKILL), then
/// lets it complete, and asserts:
/// - a first load into Parquet leaves no `.parquet` file in the table's folder at any kill;
/// - each restart kept exactly the chunks recorded at the kill before it (its log says so), and
///   had at most one chunk per worker in flight;
/// - the completing run read only the chunks not recorded, read again at most one chunk per
///   worker (its log's `reread_rows`), and deleted the record;
/// - Parquet: the files of chunks recorded before each kill are the same files afterwards (not
///   written again);
/// - DuckDB reads exactly the source's rows (count, checksum, no id twice).
///
/// Then times an uninterrupted load of the same table into another folder, and prints both.
pub fn kill_and_resume(case: &ResumeCase) {
    let spawn = |cfg: &Path, log: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args(["full-load", "-c", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let done_chunks = |text: &str| text.lines().filter(|l| l.starts_with("done ")).count();
    let mut uninterrupted = None;
    if case.loaded_before {
        let started = Instant::now();
        let status = spawn(case.cfg, &case.dir.join("before.log"))
            .wait()
            .unwrap();
        assert!(status.success());
        uninterrupted = Some(started.elapsed().as_secs_f64());
    }
    let mut chunks_planned = 0;
    let mut kept_at_kill: Vec<usize> = Vec::new();
    // Parquet: the files the kills left recorded, with their modification times.
    let mut recorded_files: Vec<(PathBuf, SystemTime)> = Vec::new();
    let first_start = Instant::now();
    for kill in 0..KILLS {
        let log = case.dir.join(format!("run{kill}.log"));
        let mut child = spawn(case.cfg, &log);
        let before = kept_at_kill.last().copied().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "run {kill} ended before it was killed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                Instant::now() < deadline,
                "run {kill} recorded nothing in 60 s"
            );
            let text = std::fs::read_to_string(&case.record).unwrap_or_default();
            if done_chunks(&text) >= before + 8 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if kill == 1 {
            // A deploy or an eviction: SIGTERM suspends the load like a crash, keeping the
            // recorded chunks, and exits 3 within seconds.
            let sent = Instant::now();
            assert!(std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success());
            let code = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status.code();
                }
                if sent.elapsed() > Duration::from_secs(15) {
                    child.kill().unwrap();
                    panic!("run {kill} did not end within 15 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let text = std::fs::read_to_string(&log).unwrap();
            assert_eq!(code, Some(3), "run {kill} after SIGTERM:\n{text}");
            assert!(
                text.contains("the next run of the load resumes after them"),
                "run {kill} did not say its chunks are kept:\n{text}"
            );
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        if !case.iceberg && !case.loaded_before {
            // A first load is staged: readers see no table until it is complete.
            let visible: Vec<String> = std::fs::read_dir(&case.table_dir)
                .map(|entries| {
                    entries
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".parquet"))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                visible,
                Vec::<String>::new(),
                "run {kill} left files readers see"
            );
        }
        // The record once the process is gone (a chunk may have completed meanwhile).
        let recorded = std::fs::read_to_string(&case.record).unwrap();
        chunks_planned = recorded.lines().filter(|l| l.starts_with("chunk ")).count();
        let done = done_chunks(&recorded);
        assert!(
            done < chunks_planned,
            "run {kill} loaded every chunk before its kill"
        );
        kept_at_kill.push(done);
        if !case.iceberg {
            for line in recorded.lines().filter(|l| l.starts_with("done ")) {
                for file in line.split('\t').skip(1) {
                    let (name, _) = file.rsplit_once(' ').unwrap();
                    let path = case.table_dir.join(name);
                    let modified = std::fs::metadata(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                        .modified()
                        .unwrap();
                    recorded_files.push((path, modified));
                }
            }
        }
        if kill > 0 {
            let text = std::fs::read_to_string(&log).unwrap();
            let fields = log_fields(&text, "resuming the table's interrupted full load")
                .unwrap_or_else(|| panic!("run {kill} did not resume:\n{text}"));
            let kept: usize = fields["kept_chunks"].parse().unwrap();
            assert_eq!(kept, kept_at_kill[kill - 1], "run {kill}: {fields:?}");
            let in_flight: usize = fields["in_flight_chunks"].parse().unwrap();
            assert!(in_flight <= case.workers, "run {kill}: {fields:?}");
        }
    }

    let log = case.dir.join("final.log");
    let resumed = Instant::now();
    let status = spawn(case.cfg, &log).wait().unwrap();
    let resumed_secs = resumed.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "the resumed load failed:\n{text}");
    let start = log_fields(&text, "resuming the table's interrupted full load")
        .unwrap_or_else(|| panic!("the last run did not resume:\n{text}"));
    assert_eq!(
        start["kept_chunks"].parse::<usize>().unwrap(),
        kept_at_kill[KILLS - 1]
    );
    let end = log_fields(&text, "resumed full load complete")
        .unwrap_or_else(|| panic!("no summary of the resumed load:\n{text}"));
    let reread_chunks: usize = end["reread_chunks"].parse().unwrap();
    let reread_rows: u64 = end["reread_rows"].parse().unwrap();
    let chunks_read: usize = end["chunks_read"].parse().unwrap();
    assert!(reread_chunks <= case.workers, "{end:?}");
    // About one chunk per worker: a chunk holds about rows / chunks rows.
    let chunk_rows = case.rows as u64 / chunks_planned as u64;
    assert!(
        reread_rows <= case.workers as u64 * chunk_rows * 3 / 2,
        "{reread_rows} rows read again, chunks of ~{chunk_rows}: {end:?}"
    );
    assert_eq!(
        chunks_read + kept_at_kill[KILLS - 1],
        chunks_planned,
        "the last run read chunks already recorded: {end:?}"
    );
    assert!(
        !case.record.exists(),
        "the progress record outlived the completed load"
    );
    for (path, modified) in &recorded_files {
        // Staged files were moved into the table's folder (a rename keeps the time).
        let path = &case.table_dir.join(path.file_name().unwrap());
        let now = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{} is gone: {e}", path.display()))
            .modified()
            .unwrap();
        assert_eq!(&now, modified, "{} was written again", path.display());
    }
    let got = if case.iceberg {
        duckdb_checksum(
            "iceberg",
            &super::iceberg::current_metadata(&case.table_dir),
        )
    } else {
        duckdb_checksum("parquet", &case.table_dir)
    };
    assert_eq!(got, case.want);

    let resumed_total = first_start.elapsed().as_secs_f64();
    // The same load uninterrupted (into another folder unless it ran first), for the times.
    let uninterrupted = uninterrupted.unwrap_or_else(|| {
        let whole_cfg = case.dir.join("whole.toml");
        let body = std::fs::read_to_string(case.cfg).unwrap();
        let other = case.dir.join("whole-out");
        let root = case.table_dir.parent().unwrap().parent().unwrap();
        let body = body.replace(root.to_str().unwrap(), other.to_str().unwrap());
        std::fs::write(&whole_cfg, body).unwrap();
        let whole = Instant::now();
        let status = spawn(&whole_cfg, &case.dir.join("whole.log"))
            .wait()
            .unwrap();
        assert!(status.success());
        whole.elapsed().as_secs_f64()
    });
    eprintln!(
        "resume: {} rows in {chunks_planned} chunks; {KILLS} kills (the second a SIGTERM), chunks recorded at each: \
         {kept_at_kill:?}; the completing run read {chunks_read} chunks, {reread_chunks} of them \
         in flight at the last kill ({reread_rows} rows read again, chunks of ~{chunk_rows} rows) \
         in {resumed_secs:.2} s; {resumed_total:.2} s from the first killed start; an \
         uninterrupted load: {uninterrupted:.2} s",
        case.rows,
    );
}

/// Count and order-independent checksum of `big (id, k, label)` as DuckDB reads it from what
/// inlet wrote (`parquet`: the Parquet files in a folder; `iceberg`: the table of a metadata
/// file, through DuckDB's iceberg extension): the sum of the first 60 bits of
/// md5(concat_ws('|', id, k, label)) over the rows. Fails if an id is there twice.
pub fn duckdb_checksum(kind: &str, place: &Path) -> (i64, String) {
    let script = r#"
import os, sys, duckdb, duckdb_extensions
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
kind, where = sys.argv[1], sys.argv[2]
if kind == "iceberg":
    duckdb_extensions.import_extension("avro", con=con)
    duckdb_extensions.import_extension("iceberg", con=con)
    rel = f"iceberg_scan('{where}')"
else:
    rel = f"read_parquet('{where}/*.parquet')"
r = con.execute(f"""SELECT count(*), count(DISTINCT id),
    sum(('0x' || substr(md5(concat_ws('|', "id", "k", "label")), 1, 15))::BIGINT)::HUGEINT
    FROM {rel}""").fetchone()
print(r[0], r[1], r[2])
sys.stdout.flush()
os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, kind, place.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let mut number = || -> i64 {
        let word = parts.next().unwrap_or_default();
        word.parse()
            .unwrap_or_else(|_| panic!("duckdb printed {text:?}"))
    };
    let rows = number();
    let distinct = number();
    assert_eq!(rows, distinct, "some id was written twice");
    let checksum = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    (rows, checksum)
}

/// The `key=value` fields of the first log line containing `message` (inlet's text log).
pub fn log_fields(log: &str, message: &str) -> Option<HashMap<String, String>> {
    let line = log.lines().find(|l| l.contains(message))?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect(),
    )
}

/// Starts `inlet full-load -c cfg` and SIGKILLs it once its record (`record`) lists 8 done
/// chunks.
pub fn kill_after_eight_chunks(cfg: &Path, record: &Path) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args(["full-load", "-c", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "the load ended first");
        assert!(Instant::now() < deadline, "nothing recorded");
        let text = std::fs::read_to_string(record).unwrap_or_default();
        if text.lines().filter(|l| l.starts_with("done ")).count() >= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// How many chunks the load record `record` lists done (0 while there is no record).
pub fn done_chunks(record: &Path) -> usize {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("done "))
        .count()
}

/// Waits until the load record `record` lists `n` done chunks; fails with the run's log (`log`)
/// after `within`.
pub fn wait_for_done_chunks(record: &Path, n: usize, log: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while done_chunks(record) < n {
        assert!(
            Instant::now() < deadline,
            "{n} chunks were not recorded in {within:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
