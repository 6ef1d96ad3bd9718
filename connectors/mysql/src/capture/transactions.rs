//! Transaction boundaries: where a transaction begins (a GTID event, `BEGIN`, a statement of
//! its own, `XA START`) and where it commits, which stamps its rows with the commit position;
//! XA transactions' prepared rows wait here for their `XA COMMIT`.

use arrow_array::RecordBatch;
use inlet_core::{CaptureEvent, Op, Position};
use mysql_common::binlog::events::{BinlogEventHeader, QueryEvent};

use super::gtid::TxnGtid;
use super::BinlogCapture;
use crate::binlog::xa_key;
use crate::error::MysqlError;

#[derive(Debug, Clone)]
pub(super) struct OpenTxn {
    /// Where the transaction's first event starts.
    pub(super) start: Position,
    pub(super) txid: i64,
    pub(super) begin_time_micros: i64,
    /// A group of one statement (DDL): it commits with that statement's event.
    pub(super) standalone: bool,
    /// A `BEGIN` query event opened it (or the GTID event of a multi-statement group).
    pub(super) begun: bool,
    pub(super) gtid: Option<TxnGtid>,
    /// MySQL 8's immediate commit timestamp from the GTID event, µs.
    pub(super) commit_time_micros: Option<i64>,
    /// An XA transaction: its rows wait for its XA COMMIT, in a group of their own.
    pub(super) xa: bool,
}

/// The rows of an XA transaction that is prepared but not yet committed or rolled back.
#[derive(Debug)]
pub(super) struct PreparedXa {
    /// Where its prepare group starts: a restart must read the binlog from here again.
    pub(super) start: Position,
    /// Per table: its rows (data columns) and their ops.
    tables: Vec<(usize, RecordBatch, Vec<Op>)>,
}

impl BinlogCapture {
    /// A transaction no GTID names (a binlog without GTIDs, or a group a query event opens): it
    /// starts at `start_offset`, which also stands for its id.
    pub(super) fn txn_without_gtid(&self, start_offset: u64, begin_time_micros: i64) -> OpenTxn {
        OpenTxn {
            start: self.position(start_offset),
            txid: start_offset as i64,
            begin_time_micros,
            standalone: false,
            begun: false,
            gtid: None,
            commit_time_micros: None,
            xa: false,
        }
    }

    /// Opens `txn`. Only a transaction nothing has begun yet may still be open (a GTID event's,
    /// replaced by the next); any other means events were misread, and rows would mix.
    pub(super) fn begin(&mut self, txn: OpenTxn) -> Result<(), MysqlError> {
        if let Some(open) = &self.txn {
            if open.begun || open.standalone {
                return Err(self.error(format!(
                    "a transaction began at {} while the one at {} was still open",
                    txn.start, open.start
                )));
            }
        }
        self.txn = Some(txn);
        Ok(())
    }

    /// A query event: `BEGIN`, `COMMIT`, an XA statement, or another statement (DDL, which is a
    /// transaction of its own, or a statement inside a group such as SAVEPOINT).
    pub(super) fn query(
        &mut self,
        q: &QueryEvent<'_>,
        start_offset: u64,
        end_offset: u64,
        header: &BinlogEventHeader,
    ) -> Result<Option<CaptureEvent>, MysqlError> {
        let sql = q.query();
        let trimmed = sql.trim();
        let time = i64::from(header.timestamp()) * 1_000_000;
        if trimmed.eq_ignore_ascii_case("BEGIN") {
            match &mut self.txn {
                Some(t) => t.begun = true,
                None => {
                    self.txn = Some(OpenTxn {
                        begun: true,
                        ..self.txn_without_gtid(start_offset, time)
                    })
                }
            }
            return Ok(None);
        }
        if trimmed.eq_ignore_ascii_case("COMMIT") {
            return self.commit(end_offset, time).map(Some);
        }
        if let Some(event) = self.xa_statement(trimmed, start_offset, end_offset, time)? {
            return Ok(event);
        }
        // Any other statement: DDL (its own transaction), or a statement inside a
        // multi-statement group (SAVEPOINT, …).
        let own_transaction = match &self.txn {
            None => true,
            Some(t) => t.standalone || !t.begun,
        };
        if self.txn.is_none() {
            self.txn = Some(OpenTxn {
                standalone: true,
                ..self.txn_without_gtid(start_offset, time)
            });
        }
        let schema = q.schema().into_owned();
        self.ddl(&schema, trimmed)?;
        if own_transaction {
            return self.commit(end_offset, time).map(Some);
        }
        Ok(None)
    }

    /// `XA START|BEGIN`, `XA END`, `XA COMMIT`, `XA ROLLBACK` statements (MySQL logs the start
    /// as a statement; MariaDB flags the GTID event). Returns the event to report when the
    /// statement ends a group; None when `sql` is not an XA statement.
    fn xa_statement(
        &mut self,
        sql: &str,
        start_offset: u64,
        end_offset: u64,
        time: i64,
    ) -> Result<Option<Option<CaptureEvent>>, MysqlError> {
        let mut words = sql.splitn(3, char::is_whitespace);
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("XA")) {
            return Ok(None);
        }
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let xid = xa_key(words.next().unwrap_or_default());
        match verb.as_str() {
            "START" | "BEGIN" => {
                match &mut self.txn {
                    Some(t) => {
                        t.begun = true;
                        t.xa = true;
                    }
                    None => {
                        self.txn = Some(OpenTxn {
                            begun: true,
                            xa: true,
                            ..self.txn_without_gtid(start_offset, time)
                        })
                    }
                }
                Ok(Some(None))
            }
            "END" => Ok(Some(None)),
            "COMMIT" | "ROLLBACK" => {
                if self.txn.as_ref().is_some_and(|t| t.xa) {
                    // One phase (`XA COMMIT … ONE PHASE`): the group holds the rows itself.
                    self.keep_xa_rows_unless_held()?;
                    return self.commit(end_offset, time).map(|e| Some(Some(e)));
                }
                if self.txn.is_none() {
                    self.txn = Some(OpenTxn {
                        standalone: true,
                        ..self.txn_without_gtid(start_offset, time)
                    });
                }
                match self.prepared_xa.remove(&xid) {
                    Some(prepared) if verb == "COMMIT" => {
                        let start = self.txn.as_ref().map_or(prepared.start, |t| t.start);
                        for (table, rows, ops) in prepared.tables {
                            let t = &mut self.tables[table];
                            // The target holds this commit already (a restart re-read it).
                            if t.committed.is_some_and(|c| start < c) {
                                continue;
                            }
                            t.push_open(rows, ops)?;
                        }
                    }
                    Some(_) => {}
                    None => tracing::warn!(
                        xid = %xid,
                        statement = %verb,
                        "XA {verb} of a transaction whose prepare this stream did not read (it \
                         was prepared before the task's snapshot or first start); its changes, \
                         if it made any to captured tables, are not in the target"
                    ),
                }
                self.commit(end_offset, time).map(|e| Some(Some(e)))
            }
            _ => Ok(None),
        }
    }

    /// At the commit of an XA transaction's own group: its rows stay unless the tables hold
    /// the transaction already.
    fn keep_xa_rows_unless_held(&mut self) -> Result<(), MysqlError> {
        let Some(start) = self.txn.as_ref().map(|t| t.start) else {
            return Ok(());
        };
        for t in &mut self.tables {
            if t.committed.is_some_and(|c| start < c) {
                t.cut_open()?;
            }
        }
        Ok(())
    }

    /// The XA_PREPARE event that ends an XA transaction's group. A one-phase commit commits
    /// its rows now; a prepare puts them aside until the XA COMMIT (or drops them at XA
    /// ROLLBACK), and the group itself commits empty.
    pub(super) fn xa_prepared(
        &mut self,
        one_phase: bool,
        xid: String,
        end_offset: u64,
        time: i64,
    ) -> Result<CaptureEvent, MysqlError> {
        if one_phase {
            self.keep_xa_rows_unless_held()?;
            return self.commit(end_offset, time);
        }
        let start = self
            .txn
            .as_ref()
            .map_or_else(|| self.position(end_offset), |t| t.start);
        let mut tables = Vec::new();
        for (i, t) in self.tables.iter_mut().enumerate() {
            if let Some((rows, ops)) = t.cut_open()? {
                tables.push((i, rows, ops));
            }
        }
        self.prepared_xa.insert(xid, PreparedXa { start, tables });
        self.commit(end_offset, time)
    }

    /// Ends the open transaction where its last event ends: its rows get their change columns
    /// (commit position, time, transaction id) and its GTID joins the set.
    pub(super) fn commit(
        &mut self,
        end_offset: u64,
        event_time: i64,
    ) -> Result<CaptureEvent, MysqlError> {
        let end = self.position(end_offset);
        // The binlog only moves forward: a commit behind the one before means its coordinates
        // were misread, and the tables' replay guards would silently drop what follows.
        if let Some(last) = self.last_end.filter(|&last| end < last) {
            return Err(self.error(format!(
                "a transaction ended at {}:{end_offset} ({end}), behind the previous one ({last}); \
                 inlet stops rather than skip changes. Report this with the server version",
                self.file
            )));
        }
        self.last_end = Some(end);
        self.payload_end = None;
        let txn = self.txn.take();
        let (txid, commit_time) = match &txn {
            Some(t) => (t.txid, t.commit_time_micros.unwrap_or(event_time)),
            None => (end_offset as i64, event_time),
        };
        for t in &mut self.tables {
            if t.rows_open > 0 || t.parts_taken > 0 {
                let n = t.rows_open;
                t.positions.extend(std::iter::repeat_n(end.0 as i64, n));
                t.commit_times.extend(std::iter::repeat_n(commit_time, n));
                t.txids.extend(std::iter::repeat_n(txid, n));
                t.first = t.first.or(Some(end));
                t.last = Some(end);
                t.last_commit_time = commit_time;
            }
            t.rows_open = 0;
            t.parts_taken = 0;
        }
        if let Some(g) = txn.and_then(|t| t.gtid) {
            self.commit_gtid(g);
        }
        self.committed_file = self.file.clone();
        Ok(CaptureEvent::Committed {
            end,
            commit_time_micros: commit_time,
        })
    }
}
