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
/// can still sit in WAL buffers, before the write position. The slot must also be streamed by
/// `child` itself: its walsender's client port must be a TCP port `child` holds open. "Active"
/// alone is not enough: right after a SIGKILL the killed run's walsender can still hold the
/// slot (the server has not yet noticed the closed socket), and when that run had already
/// confirmed everything, "caught up" would hold before the new process has even connected, let
/// alone set up its signal handling; a SIGTERM then kills it without a flush (seen as exit -1
/// with an empty stderr). A process that exits meanwhile fails the test with its stderr.
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
        let slot_state = client
            .query_opt(
                "SELECT s.confirmed_flush_lsn >= $1::text::pg_lsn, a.client_port \
                 FROM pg_replication_slots s \
                 LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid \
                 WHERE s.slot_name = $2",
                &[&target, &slot],
            )
            .await
            .unwrap();
        let walsender_port = slot_state.as_ref().and_then(|r| r.get::<_, Option<i32>>(1));
        let confirmed = slot_state.is_some_and(|r| r.get::<_, Option<bool>>(0) == Some(true));
        let streamed_by_child = walsender_port
            .and_then(|p| u16::try_from(p).ok())
            .is_some_and(|port| local_tcp_ports(child.id()).contains(&port));
        let written = checkpoint_position(checkpoint);
        if confirmed && streamed_by_child && written.is_some_and(|p| p >= lsn(&target)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inlet did not catch up with {target} in 90 s (slot {slot}: confirmed {confirmed}, \
             walsender client port {walsender_port:?}, the child's TCP ports {:?}; checkpoint \
             at {written:?})",
            local_tcp_ports(child.id())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local ports of the TCP sockets process `pid` holds open (Linux: its `/proc/PID/fd`
/// socket inodes, looked up in `/proc/PID/net/tcp{,6}`). Empty when the process is gone.
pub fn local_tcp_ports(pid: u32) -> std::collections::HashSet<u16> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(proc_dir.join("fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = std::collections::HashSet::new();
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_dir.join(table)) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}
