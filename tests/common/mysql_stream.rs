//! Waiting for a running MySQL/MariaDB task: "everything committed so far is in the target",
//! read from the server's binlog end and the task's checkpoint file, never from inlet's log.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use inlet_testkit::MariaDbServer;

use super::daemon::Inlet;

use super::pg_stream::checkpoint_position;

/// The server's binlog end (`SHOW MASTER STATUS`): the file's sequence number and the offset.
pub fn binlog_end(db: &MariaDbServer) -> (u64, u64) {
    let out = db.admin("SHOW MASTER STATUS");
    let mut cols = out.split('\t');
    let file = cols.next().expect("a binlog file");
    let offset: u64 = cols
        .next()
        .expect("an offset")
        .trim()
        .parse()
        .expect("an offset");
    let seq: u64 = file
        .rsplit('.')
        .next()
        .expect("a file")
        .parse()
        .expect("a file number");
    (seq, offset)
}

/// Waits (120 s at most) until the checkpoint covers the binlog's current end on the task's
/// `epoch`th server (positions count the servers followed; 0 for the first): everything
/// committed is durable in the target (idle heartbeats carry the checkpoint over events of
/// other tables). A process that exits meanwhile fails the test with its stderr.
pub fn wait_caught_up(db: &MariaDbServer, child: &mut Child, checkpoint: &Path, epoch: u64) {
    let (seq, offset) = binlog_end(db);
    let want = (epoch << 56) | (seq << 32) | offset;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let cp = std::fs::read_to_string(checkpoint).unwrap_or_default();
            panic!("inlet exited early with {status}:\n{err}\ncheckpoint:\n{cp}");
        }
        let at = checkpoint_position(checkpoint);
        if at.is_some_and(|p| p >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with binlog {seq}:{offset} (checkpoint at {at:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (`timeout` at most) until the checkpoint covers the binlog's current end on the task's
/// first server, for an `inlet run` whose log is a file: a process that exits meanwhile, or a
/// wait that times out, fails the test with that log (and the server's binlogs).
pub fn wait_caught_up_logged(
    db: &MariaDbServer,
    inlet: &mut Inlet,
    checkpoint: &Path,
    log: &Path,
    timeout: Duration,
) {
    let (seq, offset) = binlog_end(db);
    let want = (seq << 32) | offset;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = inlet.0.try_wait() {
            panic!(
                "inlet exited early with {status}:\n{}\nbinlogs now:\n{}",
                std::fs::read_to_string(log).unwrap_or_default(),
                db.admin("SHOW BINARY LOGS")
            );
        }
        let at = checkpoint_position(checkpoint);
        if at.is_some_and(|p| p >= want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with binlog {seq}:{offset} in {timeout:?} (checkpoint at \
             {at:x?}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
