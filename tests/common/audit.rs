//! An oracle of "every committed change exactly once" that is not inlet: triggers on the
//! captured tables log each row change, with its transaction id, into an audit table in a
//! schema the task does not capture. A change that rolled back takes its audit row with it; a
//! commit whose acknowledgement was lost in a server crash is there if and only if it
//! committed. The change files are then compared with the log key by key, not only by the
//! final state, which would hide a lost update that a later one overwrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

use super::replay::{cell, file_name, read_file};

/// Creates the audit schema and a trigger on each of `tables`: (table in `public`, the column
/// that names a row in the change stream: its primary key, or its replica identity index).
pub async fn install(client: &tokio_postgres::Client, tables: &[(&str, &str)]) {
    let mut sql = String::from(
        "CREATE SCHEMA IF NOT EXISTS inlet_audit;
         CREATE TABLE IF NOT EXISTS inlet_audit.log (
             seq bigserial PRIMARY KEY,
             txid bigint NOT NULL DEFAULT txid_current(),
             tbl text NOT NULL, op text NOT NULL, old_id text, new_id text);
         CREATE OR REPLACE FUNCTION inlet_audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'INSERT' THEN
             INSERT INTO inlet_audit.log (tbl, op, new_id)
               VALUES (TG_TABLE_NAME, 'I', to_jsonb(NEW) ->> TG_ARGV[0]);
           ELSIF TG_OP = 'UPDATE' THEN
             INSERT INTO inlet_audit.log (tbl, op, old_id, new_id)
               VALUES (TG_TABLE_NAME, 'U', to_jsonb(OLD) ->> TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[0]);
           ELSE
             INSERT INTO inlet_audit.log (tbl, op, old_id)
               VALUES (TG_TABLE_NAME, 'D', to_jsonb(OLD) ->> TG_ARGV[0]);
           END IF;
           RETURN NULL;
         END $$;",
    );
    for (t, key) in tables {
        sql.push_str(&format!(
            "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON public.{t} \
             FOR EACH ROW EXECUTE FUNCTION inlet_audit.record('{key}');"
        ));
    }
    client
        .batch_execute(&sql)
        .await
        .expect("install the audit triggers");
}

/// Per key, the changes in the order they happened: (op, transaction id).
pub type History = BTreeMap<String, Vec<(String, i64)>>;

/// What the change files of `table` must hold, from the audit log: an update that keeps the
/// key is one `U`; one that changes it is a `D` of the old key and an `I` of the new one.
pub async fn expected(client: &tokio_postgres::Client, table: &str) -> History {
    let mut h = History::new();
    for r in client
        .query(
            "SELECT op, txid, old_id, new_id FROM inlet_audit.log WHERE tbl = $1 ORDER BY seq",
            &[&table],
        )
        .await
        .expect("read the audit log")
    {
        let op: String = r.get(0);
        let txid: i64 = r.get(1);
        let (old, new): (Option<String>, Option<String>) = (r.get(2), r.get(3));
        let mut push = |id: String, op: &str| h.entry(id).or_default().push((op.to_string(), txid));
        match (op.as_str(), old, new) {
            ("I", _, Some(id)) => push(id, "I"),
            ("D", Some(id), _) => push(id, "D"),
            ("U", Some(o), Some(n)) if o == n => push(o, "U"),
            ("U", Some(o), Some(n)) => {
                push(o, "D");
                push(n, "I");
            }
            other => panic!("unexpected audit row {other:?}"),
        }
    }
    h
}

/// The change files of a table folder, in the order a reader applies them (name order:
/// commit time, then position).
pub fn change_files(table_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(table_dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .filter(|p| !file_name(p).starts_with("LOAD"))
        .collect();
    files.sort();
    files
}

/// What the change files of `table_dir` hold, per value of `key`: (Op, `_inlet_txid`).
pub fn written(table_dir: &Path, key: &str) -> History {
    let mut h = History::new();
    for f in change_files(table_dir) {
        for b in read_file(&f) {
            let ops = b
                .column_by_name("Op")
                .expect("Op column")
                .as_string::<i32>()
                .clone();
            let txids = b
                .column_by_name("_inlet_txid")
                .expect("_inlet_txid column")
                .as_primitive::<Int64Type>()
                .clone();
            let ids = b.column_by_name(key).expect("key column");
            for r in 0..b.num_rows() {
                let id: String = cell(ids.as_ref(), r).unwrap_or_else(|| {
                    let row: Vec<String> = b
                        .schema()
                        .fields()
                        .iter()
                        .zip(b.columns())
                        .filter(|(f, _)| !f.name().starts_with("_inlet_commit"))
                        .map(|(f, c)| format!("{}={:?}", f.name(), cell(c.as_ref(), r)))
                        .collect();
                    panic!("{}: a row without {key}: {}", f.display(), row.join(" "))
                });
                h.entry(id)
                    .or_default()
                    .push((ops.value(r).to_string(), txids.value(r)));
            }
        }
    }
    h
}

/// Asserts the change files of `table` hold exactly the audited changes: every key's changes,
/// each once, in order, each with its transaction. Returns how many changes were compared.
pub async fn assert_exactly_once(
    client: &tokio_postgres::Client,
    out: &Path,
    table: &str,
    key: &str,
) -> usize {
    let want = expected(client, table).await;
    let got = written(&out.join("public").join(table), key);
    let mut problems = Vec::new();
    for (id, w) in &want {
        match got.get(id) {
            None => problems.push(format!("id {id}: missing {w:?}")),
            Some(g) if g != w => problems.push(format!("id {id}: wrote {g:?}, source did {w:?}")),
            Some(_) => {}
        }
    }
    for (id, g) in &got {
        if !want.contains_key(id) {
            problems.push(format!("id {id}: wrote {g:?}, which the source never did"));
        }
    }
    assert!(
        problems.is_empty(),
        "{table}: {} of {} keys differ from the audit log, e.g.:\n{}",
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
