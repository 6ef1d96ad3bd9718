//! The MariaDB counterpart of `audit.rs`: an oracle of "every committed change exactly once"
//! that is not inlet. Triggers on the captured tables log each row change into
//! `inlet_audit.log`, a database the task does not capture, inside the same transaction: a
//! rollback takes its audit rows with it, and a commit in flight during a crash is there if
//! and only if it committed (binlog and InnoDB agree after recovery).
//!
//! MariaDB gives a trigger no id of its transaction (`@@gtid_seq_no` is only set by a client,
//! and `information_schema.innodb_trx` is a cache refreshed every 0.1 s), so the workload names
//! each transaction itself: it sets the session variable `@inlet_tx` before every transaction
//! (or autocommitted statement), and the triggers log it. The change files carry the GTID's
//! sequence number as `_inlet_txid`; the check is that the two identities map one to one.

use std::collections::BTreeMap;
use std::path::Path;

use inlet_testkit::MariaDbServer;

use super::audit::{written, History};

/// Creates `inlet_audit.log` and, on each of `tables` in database `schema`, triggers logging
/// every insert, update and delete: (table, the column that names a row in the change stream,
/// its primary key).
pub fn install(db: &MariaDbServer, schema: &str, tables: &[(&str, &str)]) {
    let mut sql = String::from(
        "CREATE DATABASE IF NOT EXISTS inlet_audit;
         CREATE TABLE IF NOT EXISTS inlet_audit.log (
             seq bigint AUTO_INCREMENT PRIMARY KEY,
             tx bigint NOT NULL,
             tbl varchar(64) NOT NULL, op char(1) NOT NULL,
             old_id varchar(100), new_id varchar(100));",
    );
    for (t, key) in tables {
        sql.push_str(&format!(
            "CREATE TRIGGER {schema}.{t}_audit_i AFTER INSERT ON {schema}.{t} FOR EACH ROW
               INSERT INTO inlet_audit.log (tx, tbl, op, new_id)
               VALUES (COALESCE(@inlet_tx, -1), '{t}', 'I', NEW.{key});
             CREATE TRIGGER {schema}.{t}_audit_u AFTER UPDATE ON {schema}.{t} FOR EACH ROW
               INSERT INTO inlet_audit.log (tx, tbl, op, old_id, new_id)
               VALUES (COALESCE(@inlet_tx, -1), '{t}', 'U', OLD.{key}, NEW.{key});
             CREATE TRIGGER {schema}.{t}_audit_d AFTER DELETE ON {schema}.{t} FOR EACH ROW
               INSERT INTO inlet_audit.log (tx, tbl, op, old_id)
               VALUES (COALESCE(@inlet_tx, -1), '{t}', 'D', OLD.{key});"
        ));
    }
    db.admin(&sql);
}

/// Forgets what was logged so far (the full load covers it).
pub fn clear(db: &MariaDbServer) {
    db.admin("DELETE FROM inlet_audit.log");
}

/// What the change files of `table` must hold, from the audit log, per key in order: (op, the
/// workload's transaction number). An update that changes the key is a `D` of the old key and
/// an `I` of the new one.
pub fn expected(db: &MariaDbServer, table: &str) -> History {
    let mut h = History::new();
    for line in db
        .admin(&format!(
            "SELECT op, tx, COALESCE(old_id, 'NULL'), COALESCE(new_id, 'NULL') \
             FROM inlet_audit.log WHERE tbl = '{table}' ORDER BY seq"
        ))
        .lines()
    {
        let v: Vec<&str> = line.split('\t').collect();
        let tx: i64 = v[1].parse().expect("tx is a number");
        let mut push = |id: &str, op: &str| {
            h.entry(id.to_string())
                .or_default()
                .push((op.to_string(), tx))
        };
        match (v[0], v[2], v[3]) {
            ("I", _, id) => push(id, "I"),
            ("D", id, _) => push(id, "D"),
            ("U", o, n) if o == n => push(o, "U"),
            ("U", o, n) => {
                push(o, "D");
                push(n, "I");
            }
            other => panic!("unexpected audit row {other:?}"),
        }
    }
    h
}

/// Asserts the change files of `schema.table` (under `out`) hold exactly the audited changes:
/// every key's changes, each once, in order; and that the workload's transactions and the
/// files' `_inlet_txid` map one to one (a transaction split or two merged would break it).
/// Returns how many changes were compared.
pub fn assert_exactly_once(
    db: &MariaDbServer,
    out: &Path,
    schema: &str,
    table: &str,
    key: &str,
) -> usize {
    let want = expected(db, table);
    let got = written(&out.join(schema).join(table), key);
    let mut problems = Vec::new();
    let strip = |h: &[(String, i64)]| h.iter().map(|(op, _)| op.clone()).collect::<Vec<_>>();
    let mut to_txid: BTreeMap<i64, i64> = BTreeMap::new();
    let mut to_tx: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, w) in &want {
        match got.get(id) {
            None => problems.push(format!("id {id}: missing {w:?} (op, workload tx)")),
            Some(g) if strip(g) != strip(w) => problems.push(format!(
                "id {id}: wrote {g:?} (op, _inlet_txid), source did {w:?} (op, workload tx)"
            )),
            Some(g) => {
                for ((op, tx), (_, txid)) in w.iter().zip(g) {
                    if *to_txid.entry(*tx).or_insert(*txid) != *txid {
                        problems.push(format!(
                            "id {id} {op}: workload transaction {tx} written as _inlet_txid \
                             {txid} here and {} elsewhere",
                            to_txid[tx]
                        ));
                    }
                    if *to_tx.entry(*txid).or_insert(*tx) != *tx {
                        problems.push(format!(
                            "id {id} {op}: _inlet_txid {txid} holds workload transactions {} \
                             and {tx}",
                            to_tx[txid]
                        ));
                    }
                }
            }
        }
    }
    for (id, g) in &got {
        if !want.contains_key(id) {
            problems.push(format!("id {id}: wrote {g:?}, which the source never did"));
        }
    }
    assert!(
        problems.is_empty(),
        "{schema}.{table}: {} problems against the audit log ({} keys), e.g.:\n{}",
        problems.len(),
        want.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    want.values().map(Vec::len).sum()
}
