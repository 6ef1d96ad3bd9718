//! Waiting for a running PostgreSQL task: "everything committed so far is in the target", read
//! from the server's slot and the task's checkpoint file, never from inlet's log.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// An LSN in PostgreSQL's text form (`16/B374D848`) as a number.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    (u64::from_str_radix(hi, 16).expect("an LSN") << 32)
        | u64::from_str_radix(lo, 16).expect("an LSN")
}

/// The position a checkpoint file holds, if it exists.
pub fn checkpoint_position(path: &Path) -> Option<u64> {
    super::read_checkpoint(path).map(|cp| cp.position.0)
}

/// Waits (90 s at most) until the slot has confirmed, and the checkpoint holds, the server's
/// WAL insert position now: every change committed so far is written to the target.
///
/// The insert position, not `pg_current_wal_lsn()`: with `synchronous_commit = off` a commit
/// can still sit in WAL buffers, before the write position. The slot must also be `active`:
/// when an earlier run (SIGKILLed) had already confirmed everything, the position alone is
/// reached before the new process has set up its signal handling, and a SIGTERM then kills it
/// without a flush (seen on PostgreSQL 17 as exit -1). A process that exits meanwhile fails the
/// test with its stderr.
pub async fn wait_caught_up(
    client: &tokio_postgres::Client,
    child: &mut Child,
    checkpoint: &Path,
    slot: &str,
) {
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("inlet exited early with {status}:\n{err}");
        }
        let confirmed = client
            .query_opt(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn AND active \
                 FROM pg_replication_slots WHERE slot_name = $2",
                &[&target, &slot],
            )
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
        if confirmed && checkpoint_position(checkpoint).is_some_and(|p| p >= lsn(&target)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with {target} in 90 s (slot {slot})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
