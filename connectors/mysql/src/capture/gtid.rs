//! GTID tracking: the GTID each transaction carries, folded into the server's GTID set at its
//! commit, so a checkpoint records the set a restart resumes from (MariaDB's domain state or
//! MySQL's executed set; MySQL cannot compute it from a file position).

use mysql_common::binlog::events::{BinlogEventHeader, GtidEvent};

use super::transactions::OpenTxn;
use super::BinlogCapture;
use crate::binlog::{parse_maria_gtid, parse_maria_gtid_list, Flavor};
use crate::error::MysqlError;
use crate::position::{MariaGtidState, MysqlGtidSet};

/// The GTID of the open transaction, added to the set once it commits.
#[derive(Debug, Clone)]
pub(super) enum TxnGtid {
    Maria { domain: u32, server: u32, seq: u64 },
    Mysql { source: String, gno: u64 },
}

/// The server's GTID set as of the last commit read, in its flavor's form.
pub(super) enum GtidTracker {
    Maria(MariaGtidState),
    Mysql(MysqlGtidSet),
}

impl GtidTracker {
    pub(super) fn empty(flavor: Flavor) -> Self {
        match flavor {
            Flavor::MariaDb => GtidTracker::Maria(MariaGtidState::default()),
            Flavor::Mysql => GtidTracker::Mysql(MysqlGtidSet::default()),
        }
    }

    /// The set a start from `text` (a checkpoint's or the snapshot's) resumes with.
    pub(super) fn from_text(flavor: Flavor, text: &str) -> Self {
        match flavor {
            Flavor::MariaDb => GtidTracker::Maria(MariaGtidState::parse(text).unwrap_or_default()),
            Flavor::Mysql => GtidTracker::Mysql(MysqlGtidSet::parse(text).unwrap_or_default()),
        }
    }
}

impl BinlogCapture {
    /// A MariaDB GTID event: it begins a transaction (a standalone one for DDL).
    pub(super) fn maria_gtid(
        &mut self,
        data: &[u8],
        start_offset: u64,
        header: &BinlogEventHeader,
    ) -> Result<(), MysqlError> {
        let gtid = parse_maria_gtid(data, header.server_id())
            .ok_or_else(|| self.error("malformed MariaDB GTID event"))?;
        self.begin(OpenTxn {
            start: self.position(start_offset),
            txid: gtid.seq as i64,
            begin_time_micros: i64::from(header.timestamp()) * 1_000_000,
            standalone: gtid.standalone,
            begun: !gtid.standalone,
            gtid: Some(TxnGtid::Maria {
                domain: gtid.domain,
                server: gtid.server,
                seq: gtid.seq,
            }),
            commit_time_micros: None,
            xa: gtid.prepared_xa,
        })
    }

    /// MariaDB's GTID_LIST event (at the start of each file): the state so far, which a
    /// checkpoint between transactions records.
    pub(super) fn maria_gtid_list(&mut self, data: &[u8]) {
        if let (Some(list), GtidTracker::Maria(state)) =
            (parse_maria_gtid_list(data), &mut self.gtid)
        {
            for (d, s, n) in list {
                state.apply(d, s, n);
            }
            if self.txn.is_none() {
                self.committed_gtid = state.to_string();
            }
        }
    }

    /// A MySQL GTID event: it begins a transaction, and may carry its commit time.
    pub(super) fn mysql_gtid(
        &mut self,
        g: &GtidEvent,
        start_offset: u64,
        header: &BinlogEventHeader,
    ) -> Result<(), MysqlError> {
        // MySQL 8.4 tagged GTIDs count per `uuid:tag`, as the GTID set spells them.
        let uuid = crate::binlog::uuid_text(&g.sid());
        let source = match g.tag() {
            Some(tag) => format!("{uuid}:{}", tag.as_str()),
            None => uuid,
        };
        let ts = g.immediate_commit_timestamp();
        self.begin(OpenTxn {
            start: self.position(start_offset),
            txid: g.gno() as i64,
            begin_time_micros: i64::from(header.timestamp()) * 1_000_000,
            standalone: false,
            begun: false,
            gtid: Some(TxnGtid::Mysql {
                source,
                gno: g.gno(),
            }),
            commit_time_micros: (ts > 0).then_some(ts as i64),
            xa: false,
        })
    }

    /// At a commit: the transaction's GTID joins the set a checkpoint records.
    pub(super) fn commit_gtid(&mut self, g: TxnGtid) {
        match (&mut self.gtid, g) {
            (
                GtidTracker::Maria(state),
                TxnGtid::Maria {
                    domain,
                    server,
                    seq,
                },
            ) => {
                state.apply(domain, server, seq);
                self.committed_gtid = state.to_string();
            }
            (GtidTracker::Mysql(set), TxnGtid::Mysql { source, gno }) => {
                set.add(&source, gno);
                self.committed_gtid = set.to_string();
            }
            _ => {}
        }
    }
}
