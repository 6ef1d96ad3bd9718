//! A physical standby of a test [`PgServer`], built the way pg_basebackup would (the cached
//! PostgreSQL 14/16/17/18 packages ship no pg_basebackup): a non-exclusive base backup between
//! `pg_backup_start` and `pg_backup_stop` copying the data folder, the `backup_label` the stop
//! returns, `standby.signal`, and `primary_conninfo`/`primary_slot_name` pointing at the primary
//! through a physical slot, so the primary keeps every WAL segment the standby has not received.
//! The standby is a [`PgServer`] itself (its own folder, port and socket), and
//! [`PgServer::promote`] makes it a primary, as a failover or switchover does.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{base_options, free_port, is_root, pg_command, PgServer};

/// Entries of the data folder a base backup leaves out, as pg_basebackup does: the running
/// server's pid file and options, its WAL (the standby streams what it needs from the backup's
/// start through the physical slot), its replication slots (the primary's, not the standby's)
/// and temporary statistics.
const EMPTIED: &[&str] = &["pg_wal", "pg_replslot", "pg_stat_tmp"];
const LEFT_OUT: &[&str] = &["postmaster.pid", "postmaster.opts"];

impl PgServer {
    /// The server's data folder.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Builds and starts a hot standby of this server, streaming through the physical slot
    /// `physical_slot` (created here if it does not exist), with `hot_standby_feedback = on`
    /// and the extra `-c name=value` options `options` (e.g. `-c sync_replication_slots=on` on
    /// 17+). Returns once the standby accepts connections.
    pub async fn start_standby(&self, physical_slot: &str, options: &str) -> PgServer {
        let primary = self.client("postgres").await;
        let version: i32 = primary
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .expect("server version")
            .get(0);
        primary
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&physical_slot],
            )
            .await
            .expect("create the standby's physical slot");
        // A non-exclusive backup lasts as long as this session: start and stop on `primary`.
        let start = if version >= 150_000 {
            "SELECT pg_backup_start('inlet-standby', true)::text"
        } else {
            "SELECT pg_start_backup('inlet-standby', true, false)::text"
        };
        primary.execute(start, &[]).await.expect("start the backup");

        let dir = tempfile::Builder::new()
            .prefix("inlet-pg-standby-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        // cp -a keeps the owner (postgres) and the 0700 modes PostgreSQL insists on.
        let out = Command::new("cp")
            .arg("-a")
            .arg(self.data_dir())
            .arg(&data)
            .output()
            .expect("run cp");
        // Files the primary removes while cp runs (a finished temporary file, a recycled WAL
        // segment) make cp complain; the backup holds everything else, and WAL replay repairs
        // what changed meanwhile, as it does for pg_basebackup.
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr
                    .lines()
                    .all(|l| l.contains("No such file or directory")),
                "copying the data folder failed: {stderr}"
            );
        }
        for name in EMPTIED {
            empty_dir(&data.join(name));
        }
        for name in LEFT_OUT {
            let _ = std::fs::remove_file(data.join(name));
        }

        let stop = if version >= 150_000 {
            "SELECT labelfile, spcmapfile FROM pg_backup_stop(true)"
        } else {
            "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, true)"
        };
        let row = primary.query_one(stop, &[]).await.expect("stop the backup");
        let label: String = row.get(0);
        let spcmap: Option<String> = row.get(1);
        write_owned(&data.join("backup_label"), &label);
        if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
            write_owned(&data.join("tablespace_map"), &map);
        }
        write_owned(&data.join("standby.signal"), "");
        // Appended to the copy of the primary's postgresql.auto.conf, which ALTER SYSTEM on
        // the standby would rewrite with these kept. The connection string goes through the
        // primary's Unix socket, which its pg_hba.conf always trusts; dbname makes slot
        // synchronization (17+) possible.
        let auto = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).unwrap_or_default();
        conf.push_str(&format!(
            "primary_conninfo = 'host={} port={} user=postgres dbname=postgres \
             application_name={physical_slot}'\n\
             primary_slot_name = '{physical_slot}'\n\
             hot_standby_feedback = on\n",
            self.socket_dir().display(),
            self.port
        ));
        write_owned(&auto, &conf);
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            assert!(
                st.map(|s| s.success()).unwrap_or(false),
                "chown of the standby folder to postgres"
            );
        }

        let port = free_port();
        let standby = PgServer {
            opts: base_options(port, dir.path(), options),
            dir,
            port,
            bin: self.bin.clone(),
        };
        standby.start_again();
        standby
    }

    /// Promotes this standby to a primary (`pg_ctl promote`), returning once it accepts
    /// writes.
    pub fn promote(&self) {
        let data = self.data_dir();
        let out = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): a switchover's planned stop of the
    /// primary, which sends the standbys every WAL record it wrote before it exits.
    pub fn stop_fast(&self) {
        let data = self.data_dir();
        let out = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop -m fast failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Crashes the server (`pg_ctl stop -m immediate`): every process exits at once, without a
    /// shutdown checkpoint and without sending the standbys the WAL they have not received yet,
    /// as when the primary's machine fails. The next start (if any) runs crash recovery.
    pub fn stop_immediate(&self) {
        let data = self.data_dir();
        let out = pg_command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until this standby has replayed every WAL record `primary` has written so far.
    pub async fn wait_replayed(&self, primary: &PgServer) {
        let primary = primary.client("postgres").await;
        let target: String = primary
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .expect("primary's WAL position")
            .get(0);
        // A record after the target: the insert position may lie past the next page's header,
        // which replay reaches only with the next record, and on an idle primary that is the
        // running-transactions record the background writer logs every 15 s.
        primary
            .batch_execute("SELECT txid_current()")
            .await
            .expect("a commit record on the primary");
        let standby = self.client("postgres").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done: Option<bool> = standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await
                .expect("standby's replay position")
                .get(0);
            if done == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby did not replay up to {target} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Removes what a folder holds, keeping the folder (its owner and mode) and its subfolders,
/// emptied (pg_wal/archive_status must exist).
fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            empty_dir(&p);
            if dir.ends_with("pg_replslot") {
                let _ = std::fs::remove_dir(&p);
            }
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Writes a file of the data folder (its owner is fixed by the caller's chown).
fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
