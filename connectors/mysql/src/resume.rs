//! Where a MySQL/MariaDB task resumes its binlog, and what a server's refusal to send it from
//! there means. Pure decisions on the checkpoint's resume facts ([`MysqlResume`]) and what the
//! server says: the task engine calls them and acts on the answer.
//!
//! Binlog positions (file and offset) belong to one server. On the server that wrote the
//! checkpoint the task resumes at its position, or earlier where an XA transaction prepared
//! before it is still open (its rows are in its prepare). On another server (a failover: the
//! `server_id` differs) the positions mean nothing, so it resumes by the checkpoint's GTID set,
//! which both servers share if one replicated the other, and its positions count in a new
//! epoch. [`missing_binlog`] tells the ways the server can fail to send from there (error
//! 1236): purged, damaged, or, by GTID, transactions this server lacks.

use inlet_core::{MysqlResume, Position};

use crate::binlog::Flavor;
use crate::error::MysqlError;
use crate::position::{position_epoch, BinlogPosition, MysqlGtidSet, StartFrom};

/// Where to read the binlog from, as decided by [`plan_resume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumePlan {
    /// The server that wrote the checkpoint: read from these coordinates.
    Position {
        from: BinlogPosition,
        /// The epoch the task's positions count in (the checkpoint's).
        epoch: u8,
        /// The GTID set after the checkpoint's last commit, which the capture carries on.
        gtid_set: Option<String>,
    },
    /// Another server (a failover): read after the checkpoint's GTID set.
    Failover {
        /// The `server_id` the checkpoint was written on.
        was: u64,
        gtid_set: String,
        start: StartFrom,
        /// The checkpoint's epoch plus one: this server's positions sort after the old one's.
        epoch: u8,
    },
}

impl ResumePlan {
    /// Where the capture starts.
    pub fn start(&self) -> StartFrom {
        match self {
            Self::Position { from, .. } => StartFrom::Position(from.clone()),
            Self::Failover { start, .. } => start.clone(),
        }
    }

    pub fn epoch(&self) -> u8 {
        match self {
            Self::Position { epoch, .. } | Self::Failover { epoch, .. } => *epoch,
        }
    }
}

/// Why a checkpoint cannot be resumed on the server the task reaches now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeRefusal {
    /// The checkpoint names no binlog file: another source's.
    NoBinlogFile,
    /// Another server, and the checkpoint cannot place the task on it: `why` says what is
    /// missing or does not match.
    OtherServer { was: u64, now: u64, why: String },
}

impl ResumeRefusal {
    /// The message for the person who has to act, naming the checkpoint's location.
    pub fn message(&self, checkpoint: &str) -> String {
        match self {
            Self::NoBinlogFile => format!(
                "the task checkpoint ({checkpoint}) has no binlog file name: it was not written \
                 by a MySQL task. Delete it to start the task over"
            ),
            Self::OtherServer { was, now, why } => format!(
                "the task checkpoint ({checkpoint}) holds a binlog position of the server with \
                 server_id {was}, but source.url now reaches server_id {now}, and {why}. Point \
                 source.url back at that server, or delete the checkpoint to run a new full load \
                 from this one (if this is the same server with a new server_id, remove \
                 \"server_id\" from the checkpoint's \"source\" instead)"
            ),
        }
    }
}

/// Where a task whose checkpoint is at `position` with `resume` resumes on the server it
/// reaches now (`server_id`, `flavor`).
pub fn plan_resume(
    resume: &MysqlResume,
    position: Position,
    server_id: u64,
    flavor: Flavor,
) -> Result<ResumePlan, ResumeRefusal> {
    let Some(file) = resume.binlog_file.as_deref() else {
        return Err(ResumeRefusal::NoBinlogFile);
    };
    let gtid = resume.gtid_set.clone().filter(|g| !g.trim().is_empty());
    let epoch = position_epoch(position);
    let Some(was) = resume.server_id.filter(|was| *was != server_id) else {
        // An XA transaction prepared before the checkpoint and not yet committed: its rows are
        // in its prepare, so the binlog is read again from there (the tables skip the
        // transactions they hold).
        let from = resume
            .xa_prepared_from
            .filter(|p| *p < position && position_epoch(*p) == epoch)
            .unwrap_or(position);
        return Ok(ResumePlan::Position {
            from: BinlogPosition::from_position(from, file),
            epoch,
            gtid_set: gtid,
        });
    };
    let refuse = |why: String| ResumeRefusal::OtherServer {
        was,
        now: server_id,
        why,
    };
    let Some(set) = gtid else {
        return Err(refuse(
            "the checkpoint has no GTID set to resume from on another server (turn GTIDs on: \
             gtid_mode=ON on MySQL)"
                .into(),
        ));
    };
    let was_flavor = resume.flavor.clone().unwrap_or_default();
    if !was_flavor.is_empty() && was_flavor != flavor.as_str() {
        return Err(refuse(format!(
            "that server was {was_flavor} while this one is {}: their GTIDs do not match",
            flavor.as_str()
        )));
    }
    if epoch == u8::MAX {
        return Err(refuse(
            "the task has switched servers 255 times already, the most its positions count".into(),
        ));
    }
    // Checkpoints of earlier versions that resumed by file/position on MySQL hold only the
    // GTIDs seen since; starting from such a set would re-read everything before.
    if flavor == Flavor::Mysql && !MysqlGtidSet::parse(&set).is_some_and(|s| s.numbered_from_one())
    {
        return Err(refuse(format!(
            "the checkpoint's GTID set ({set}) is not a whole executed set (each source \
             numbered from 1), so it cannot place the task on another server"
        )));
    }
    let start = match flavor {
        Flavor::MariaDb => StartFrom::MariaGtid(set.clone()),
        Flavor::Mysql => StartFrom::MysqlGtid(set.clone()),
    };
    Ok(ResumePlan::Failover {
        was,
        gtid_set: set,
        start,
        epoch: epoch + 1,
    })
}

/// Why the server cannot send the binlog from where the task resumes (error 1236), the MySQL
/// form of a lost replication slot: changes are missing, and only a new full load mends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingBinlog {
    /// The server has the file but not (whole) where the task must read: it lost committed
    /// binlog.
    Damaged,
    /// Resuming by GTID on another server, which lacks transactions the task already wrote or
    /// purged binlogs the task needs.
    NotOnThisServer { gtid_set: String },
    /// The binlog was purged or expired.
    Purged,
}

impl MissingBinlog {
    /// The message for the person who has to act: the server's `error` text, then what it
    /// means and what to do, naming the checkpoint's location.
    pub fn message(&self, error: &str, checkpoint: &str) -> String {
        match self {
            Self::Damaged => format!(
                "{error}. The source lost committed binlog: the task already read and applied \
                 the binlog up to its checkpoint, but the server's file is now shorter or \
                 damaged there (a crash of its host with sync_binlog other than 1, a restored \
                 backup, a full disk), so changes are missing: a resync is needed. Delete the \
                 task checkpoint ({checkpoint}) and run the task again for a new full load"
            ),
            Self::NotOnThisServer { gtid_set } => format!(
                "{error}. This server cannot continue from the task's GTID set {gtid_set}: it \
                 lacks transactions the task already wrote (they were lost in the failover, or \
                 it is not a replica of the server the task followed), or it purged binlogs the \
                 task needs. Point source.url back at the server the checkpoint names, or delete \
                 the task checkpoint ({checkpoint}) to run a new full load from this server"
            ),
            Self::Purged => format!(
                "{error}. The binlog the task must resume from is gone (purged, or expired by \
                 binlog_expire_logs_seconds), so changes are missing: delete the task checkpoint \
                 ({checkpoint}) and run the task again for a new full load, and keep binlogs \
                 longer than the task may be stopped"
            ),
        }
    }
}

/// Whether `e`, from starting the capture (by GTID set `by_gtid` after a failover), says the
/// server cannot send the binlog from there; None for any other error (a
/// [`MysqlError::LostBinlog`] already says it in its own words).
pub fn missing_binlog(e: &MysqlError, by_gtid: Option<&str>) -> Option<MissingBinlog> {
    if matches!(e, MysqlError::LostBinlog { .. }) {
        return None;
    }
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if !(text.contains("1236") || lower.contains("purged")) {
        return None;
    }
    if lower.contains("impossible position") || lower.contains("truncated in the middle of event") {
        return Some(MissingBinlog::Damaged);
    }
    Some(match by_gtid {
        Some(set) => MissingBinlog::NotOnThisServer {
            gtid_set: set.to_string(),
        },
        None => MissingBinlog::Purged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume(server_id: u64, gtid: Option<&str>, flavor: &str) -> MysqlResume {
        MysqlResume {
            binlog_file: Some("mysql-bin.000003".into()),
            gtid_set: gtid.map(str::to_string),
            flavor: Some(flavor.into()),
            server_id: Some(server_id),
            xa_prepared_from: None,
        }
    }

    #[test]
    fn the_same_server_resumes_at_the_position_and_another_by_gtid() {
        let at = Position((3 << 32) | 4000);
        let same = plan_resume(&resume(1, Some("0-1-7"), "mariadb"), at, 1, Flavor::MariaDb);
        assert_eq!(
            same,
            Ok(ResumePlan::Position {
                from: BinlogPosition::new("mysql-bin.000003", 4000),
                epoch: 0,
                gtid_set: Some("0-1-7".into()),
            })
        );
        // An XA transaction prepared before the checkpoint: read again from its prepare.
        let mut xa = resume(1, None, "mariadb");
        xa.xa_prepared_from = Some(Position((3 << 32) | 1000));
        let plan = plan_resume(&xa, at, 1, Flavor::MariaDb).unwrap();
        assert_eq!(
            plan.start(),
            StartFrom::Position(BinlogPosition::new("mysql-bin.000003", 1000))
        );
        let failover = plan_resume(&resume(1, Some("0-1-7"), "mariadb"), at, 2, Flavor::MariaDb);
        assert_eq!(
            failover,
            Ok(ResumePlan::Failover {
                was: 1,
                gtid_set: "0-1-7".into(),
                start: StartFrom::MariaGtid("0-1-7".into()),
                epoch: 1,
            })
        );
    }

    #[test]
    fn a_failover_the_checkpoint_cannot_place_is_refused() {
        let at = Position(4000);
        let refused = |r: MysqlResume, flavor| match plan_resume(&r, at, 2, flavor) {
            Err(e) => e.message("out/_inlet/t/checkpoint"),
            Ok(plan) => panic!("{plan:?}"),
        };
        assert!(refused(resume(1, None, "mariadb"), Flavor::MariaDb)
            .contains("server_id 1, but source.url now reaches server_id 2, and the checkpoint has no GTID set"));
        assert!(refused(resume(1, Some("0-1-7"), "mariadb"), Flavor::Mysql)
            .contains("that server was mariadb while this one is mysql"));
        // A MySQL set that does not start at 1 holds only the GTIDs seen since a resume.
        let partial = "3e11fa47-71ca-11e1-9e33-c80aa9429562:5-9";
        assert!(refused(resume(1, Some(partial), "mysql"), Flavor::Mysql)
            .contains("not a whole executed set"));
        let mut none = resume(1, None, "mysql");
        none.binlog_file = None;
        assert_eq!(
            plan_resume(&none, at, 1, Flavor::Mysql),
            Err(ResumeRefusal::NoBinlogFile)
        );
    }

    #[test]
    fn a_refused_binlog_is_told_purged_damaged_or_not_on_this_server() {
        let binlog = |message: &str| MysqlError::Binlog {
            server: "db:3306".into(),
            message: message.into(),
        };
        let purged = binlog(
            "ERROR 1236 (HY000): Could not find first log file name in binary log index file",
        );
        assert_eq!(missing_binlog(&purged, None), Some(MissingBinlog::Purged));
        assert_eq!(
            missing_binlog(&purged, Some("0-1-7")),
            Some(MissingBinlog::NotOnThisServer {
                gtid_set: "0-1-7".into()
            })
        );
        let damaged = binlog("ERROR 1236 (HY000): Client requested master to start replication from impossible position");
        assert_eq!(missing_binlog(&damaged, None), Some(MissingBinlog::Damaged));
        assert_eq!(missing_binlog(&binlog("connection reset"), None), None);
        let lost = MysqlError::LostBinlog {
            server: "db:3306".into(),
            message: "ERROR 1236 purged".into(),
        };
        assert_eq!(missing_binlog(&lost, None), None);
    }
}
