//! Binlog coordinates and how they map onto inlet's one totally ordered [`Position`]:
//! `(epoch << 56) | (file sequence number << 32) | offset`. The offset of a committed
//! transaction is where its last event ends (where the next event starts), so resuming "from a
//! position" is a plain COM_BINLOG_DUMP at that file and offset. GTID sets (MySQL's `uuid:1-5`,
//! MariaDB's `domain-server-seq` list) travel beside it in the checkpoint
//! ([`inlet_core::MysqlResume`], from [`crate::BinlogCapture::resume`]).
//!
//! Binlog coordinates belong to one server. The epoch counts the servers a task has followed:
//! resuming by GTID on another server (a failover) bumps it, so every position there orders
//! after every position on the servers before, and the per-table replay guard and the change
//! files' order hold across the switch.

use std::collections::BTreeMap;
use std::fmt;

use inlet_core::Position;

use crate::error::MysqlError;

const EPOCH_SHIFT: u32 = 56;
/// Binlog file numbers up to 16,777,215 (a server writing a file a minute takes 31 years).
const SEQUENCE_MASK: u64 = 0xff_ffff;

/// The position of `offset` in binlog file number `sequence` of the task's `epoch`th server.
pub fn binlog_position(epoch: u8, sequence: u64, offset: u64) -> Position {
    Position(
        (u64::from(epoch) << EPOCH_SHIFT)
            | ((sequence & SEQUENCE_MASK) << 32)
            | (offset & 0xffff_ffff),
    )
}

/// How many servers before this position's the task followed (0 until a failover).
pub fn position_epoch(position: Position) -> u8 {
    // The shift leaves 8 bits.
    (position.0 >> EPOCH_SHIFT) as u8
}

/// A place in the binary log: a file and a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPosition {
    pub file: String,
    pub offset: u64,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, offset: u64) -> Self {
        Self {
            file: file.into(),
            offset,
        }
    }

    /// This place as a [`Position`] on the task's `epoch`th server. Fails for a file name
    /// without a numeric extension (the server always writes `basename.NNNNNN`) or an offset
    /// beyond 4 GiB (max_binlog_size is at most 1 GiB).
    pub fn to_position(&self, epoch: u8) -> Result<Position, MysqlError> {
        let seq = file_sequence(&self.file).ok_or_else(|| MysqlError::Binlog {
            server: String::new(),
            message: format!("binlog file name {:?} has no numeric extension", self.file),
        })?;
        if self.offset > u64::from(u32::MAX) {
            return Err(MysqlError::Binlog {
                server: String::new(),
                message: format!("binlog offset {} is beyond 4 GiB", self.offset),
            });
        }
        if u64::from(seq) > SEQUENCE_MASK {
            return Err(MysqlError::Binlog {
                server: String::new(),
                message: format!(
                    "binlog file number {seq} is above 16,777,215; RESET MASTER on a server \
                     whose binlog numbering ran this far, then run a new full load"
                ),
            });
        }
        Ok(binlog_position(epoch, u64::from(seq), self.offset))
    }

    /// The coordinates of `position` in the binlog whose files are named like `template`
    /// (`mariadb-bin.000007`): same base name, same number of digits.
    pub fn from_position(position: Position, template: &str) -> Self {
        let seq = (position.0 >> 32) & SEQUENCE_MASK;
        let offset = position.0 & 0xffff_ffff;
        let (base, digits) = match template.rsplit_once('.') {
            Some((base, ext)) if ext.bytes().all(|b| b.is_ascii_digit()) => (base, ext.len()),
            _ => (template, 6),
        };
        Self {
            file: format!("{base}.{seq:0digits$}"),
            offset,
        }
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// The numeric extension of a binlog file name: `mysql-bin.000042` → 42.
pub fn file_sequence(file: &str) -> Option<u32> {
    let (_, ext) = file.rsplit_once('.')?;
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ext.parse().ok()
}

/// MariaDB's GTID position: per replication domain, the last GTID (`domain-server-seq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariaGtidState {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidState {
    pub fn parse(text: &str) -> Option<Self> {
        let mut domains = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let domain = it.next()?.parse().ok()?;
            let server = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            if it.next().is_some() {
                return None;
            }
            domains.insert(domain, (server, seq));
        }
        Some(Self { domains })
    }

    pub fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

impl fmt::Display for MariaGtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (d, (s, n))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{s}-{n}")?;
        }
        Ok(())
    }
}

/// MySQL's executed GTID set: per source uuid (and tag, MySQL 8.4), intervals of transaction
/// numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// `uuid` or `uuid:tag` → sorted, disjoint, inclusive intervals.
    sources: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Parses `@@gtid_executed` text: `uuid:1-5:7,uuid2:1-3` (newlines allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let mut set = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields.next()?.to_ascii_lowercase();
            let mut key = uuid.clone();
            for f in fields {
                if f.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b): (u64, u64) = match f.split_once('-') {
                        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                        None => {
                            let n = f.parse().ok()?;
                            (n, n)
                        }
                    };
                    set.add_interval(&key, a, b);
                } else {
                    key = format!("{uuid}:{f}");
                }
            }
        }
        Some(set)
    }

    pub fn add(&mut self, source: &str, gno: u64) {
        self.add_interval(source, gno, gno);
    }

    fn add_interval(&mut self, source: &str, a: u64, b: u64) {
        let v = self.sources.entry(source.to_string()).or_default();
        v.push((a, b));
        v.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for &(a, b) in v.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *v = merged;
    }

    /// Whether every source's transactions are numbered from 1, as in a server's whole
    /// `gtid_executed`; a set collected from the middle of a binlog is not.
    pub fn numbered_from_one(&self) -> bool {
        self.sources
            .values()
            .all(|intervals| intervals.first().is_some_and(|&(a, _)| a == 1))
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (src, intervals)) in self.sources.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(src)?;
            for (a, b) in intervals {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

/// Where a binlog stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// At these coordinates (a transaction boundary).
    Position(BinlogPosition),
    /// MariaDB: after these GTIDs (`@slave_connect_state`).
    MariaGtid(String),
    /// MySQL: after this executed GTID set (COM_BINLOG_DUMP_GTID).
    MysqlGtid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_across_files() {
        let a = BinlogPosition::new("mariadb-bin.000009", 4_000_000)
            .to_position(0)
            .unwrap();
        let b = BinlogPosition::new("mariadb-bin.000010", 4)
            .to_position(0)
            .unwrap();
        assert!(a < b);
        assert_eq!(b, Position((10 << 32) | 4));
        assert_eq!(
            BinlogPosition::from_position(b, "mariadb-bin.000001"),
            BinlogPosition::new("mariadb-bin.000010", 4)
        );
        assert!(BinlogPosition::new("weird", 4).to_position(0).is_err());
        assert!(BinlogPosition::new("big.16777216", 4)
            .to_position(0)
            .is_err());
    }

    #[test]
    fn a_later_epoch_orders_after_every_position_before_it() {
        let last_on_old = BinlogPosition::new("mariadb-bin.16777215", 0xffff_ffff)
            .to_position(3)
            .unwrap();
        let first_on_new = BinlogPosition::new("mariadb-bin.000001", 4)
            .to_position(4)
            .unwrap();
        assert!(last_on_old < first_on_new);
        assert_eq!(position_epoch(last_on_old), 3);
        assert_eq!(position_epoch(first_on_new), 4);
        assert_eq!(first_on_new, binlog_position(4, 1, 4));
        // The coordinates come back without the epoch.
        assert_eq!(
            BinlogPosition::from_position(first_on_new, "mariadb-bin.000042"),
            BinlogPosition::new("mariadb-bin.000001", 4)
        );
    }

    #[test]
    fn whole_mysql_gtid_sets_start_at_one() {
        let whole = MysqlGtidSet::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77:80").unwrap();
        assert!(whole.numbered_from_one());
        let tail = MysqlGtidSet::parse(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,4e11fa47-71ca-11e1-9e33-c80aa9429562:9-12",
        )
        .unwrap();
        assert!(!tail.numbered_from_one());
    }

    #[test]
    fn gtid_sets() {
        let mut m = MariaGtidState::parse("0-1-100,2-5-7").unwrap();
        m.apply(0, 1, 101);
        assert_eq!(m.to_string(), "0-1-101,2-5-7");
        assert!(MariaGtidState::parse("0-1").is_none());
        let mut s = MysqlGtidSet::parse(
            "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:tag:1-2",
        )
        .unwrap();
        s.add("3e11fa47-71ca-11e1-9e33-c80aa9429562", 6);
        assert_eq!(
            s.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7,4e11fa47-71ca-11e1-9e33-c80aa9429562:tag:1-2"
        );
    }
}
