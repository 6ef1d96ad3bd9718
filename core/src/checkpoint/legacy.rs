//! The text form of the checkpoint that every version before the typed one wrote:
//! `position=<16 hex digits>`, then one `key=value` line per fact. Read only, so that a task
//! resumes from it; the next write stores the JSON form. The keys and value encodings are the
//! ones those versions wrote (a table as its `schema.table` name in JSON quotes):
//!
//! | key | value |
//! |---|---|
//! | `slot` | PostgreSQL: the replication slot |
//! | `task`, `database`, `id`, `system`, `creating` | PostgreSQL slot record only: who created the slot |
//! | `table` | `<table>`: the task has loaded it or captures it |
//! | `table_loaded_at`, `table_replaced_at`, `table_resync` | `<position, 16 hex digits> <table>` |
//! | `table_identity` | `<identity> <table>` |
//! | `table_storage` | `<relfilenode> <attnum:xmin:atttypid:atttypmod:atthasmissing(0/1),… or -> <table>` |
//! | `table_unwritten_defaults` | `<table> <columns, JSON array>` |
//! | `mysql.binlog_file`, `mysql.gtid_set`, `mysql.flavor` | the text |
//! | `mysql.server_id` | decimal |
//! | `mysql.xa_prepared_from` | a position in decimal |

use super::{
    Checkpoint, ColumnRecord, MysqlResume, PostgresResume, SlotCreator, SourceResume,
    StorageRecord, TableState,
};
use crate::Position;

/// A checkpoint from the text form.
pub(super) fn decode(text: &str) -> Result<Checkpoint, String> {
    let mut position = None;
    let mut checkpoint = Checkpoint::default();
    let mut postgres: Option<PostgresResume> = None;
    let mut creator: Option<SlotCreator> = None;
    let mut mysql: Option<MysqlResume> = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line:?} is not key=value"));
        };
        let bad = |what: &str| format!("fact {key}={value}: {what}");
        match key {
            "position" => {
                position = Some(Position::parse(value).ok_or_else(|| bad("not 16 hex digits"))?)
            }
            "slot" => postgres.get_or_insert_with(Default::default).slot = value.to_string(),
            "task" => creator.get_or_insert_with(Default::default).task = value.to_string(),
            "database" => creator.get_or_insert_with(Default::default).database = value.to_string(),
            "id" => creator.get_or_insert_with(Default::default).id = value.to_string(),
            "system" => {
                creator.get_or_insert_with(Default::default).system = Some(value.to_string())
            }
            "creating" => creator.get_or_insert_with(Default::default).creating = value == "true",
            "table" => {
                table(&mut checkpoint, value)
                    .ok_or_else(|| bad("not a table"))?
                    .captured = true
            }
            "table_loaded_at" | "table_replaced_at" | "table_resync" => {
                let (at, name) = value
                    .split_once(' ')
                    .ok_or_else(|| bad("not `<position> <table>`"))?;
                let at = u64::from_str_radix(at, 16)
                    .map(Position)
                    .map_err(|_| bad("not a hex position"))?;
                let state = table(&mut checkpoint, name).ok_or_else(|| bad("not a table"))?;
                let slot = match key {
                    "table_loaded_at" => &mut state.loaded_at,
                    "table_replaced_at" => &mut state.replaced_at,
                    _ => &mut state.resync_at,
                };
                // Several facts of one table: the latest says what the others do (a load, a
                // swap or a request before it counts for nothing more).
                *slot = (*slot).max(Some(at));
            }
            "table_identity" => {
                let (identity, name) = value
                    .split_once(' ')
                    .ok_or_else(|| bad("not `<identity> <table>`"))?;
                let state = table(&mut checkpoint, name).ok_or_else(|| bad("not a table"))?;
                if !state.identities.iter().any(|i| i == identity) {
                    state.identities.push(identity.to_string());
                }
            }
            "table_storage" => {
                let mut f = value.splitn(3, ' ');
                let (Some(filenode), Some(columns), Some(name)) = (f.next(), f.next(), f.next())
                else {
                    return Err(bad("not `<relfilenode> <columns> <table>`"));
                };
                let storage = storage(filenode, columns).ok_or_else(|| bad("not a storage"))?;
                table(&mut checkpoint, name)
                    .ok_or_else(|| bad("not a table"))?
                    .storage = Some(storage);
            }
            "table_unwritten_defaults" => {
                // The table's name comes first, and JSON quoting may hold spaces.
                let mut values = serde_json::Deserializer::from_str(value).into_iter::<String>();
                let Some(Ok(name)) = values.next() else {
                    return Err(bad("not `<table> <columns>`"));
                };
                let columns = serde_json::from_str(&value[values.byte_offset()..])
                    .map_err(|_| bad("the columns are not a JSON array of names"))?;
                checkpoint.table(&name).unwritten_defaults = Some(columns);
            }
            "mysql.binlog_file" => {
                mysql.get_or_insert_with(Default::default).binlog_file = Some(value.to_string())
            }
            "mysql.gtid_set" => {
                mysql.get_or_insert_with(Default::default).gtid_set = Some(value.to_string())
            }
            "mysql.flavor" => {
                mysql.get_or_insert_with(Default::default).flavor = Some(value.to_string())
            }
            "mysql.server_id" => {
                let id = value.parse().map_err(|_| bad("not a number"))?;
                mysql.get_or_insert_with(Default::default).server_id = Some(id);
            }
            "mysql.xa_prepared_from" => {
                let at = value.parse().map_err(|_| bad("not a number"))?;
                mysql.get_or_insert_with(Default::default).xa_prepared_from = Some(Position(at));
            }
            _ => return Err(format!("unknown fact {key:?}")),
        }
    }
    checkpoint.position = position.ok_or("it has no position= line")?;
    if let Some(creator) = creator {
        postgres.get_or_insert_with(Default::default).created_by = Some(creator);
    }
    checkpoint.source = match (postgres, mysql) {
        (Some(_), Some(_)) => {
            return Err("it holds facts of both a PostgreSQL slot and a MySQL binlog".into())
        }
        (Some(p), None) => Some(SourceResume::Postgres(p)),
        (None, Some(m)) => Some(SourceResume::Mysql(m)),
        (None, None) => None,
    };
    Ok(checkpoint)
}

/// The state of the table whose name `quoted` holds in JSON quotes.
fn table<'a>(checkpoint: &'a mut Checkpoint, quoted: &str) -> Option<&'a mut TableState> {
    let name: String = serde_json::from_str(quoted).ok()?;
    Some(checkpoint.table(&name))
}

/// `<relfilenode>` and `<columns>` of a `table_storage` fact.
fn storage(filenode: &str, columns: &str) -> Option<StorageRecord> {
    let filenode = filenode.parse().ok()?;
    let columns = if columns == "-" {
        Vec::new()
    } else {
        columns
            .split(',')
            .map(|c| {
                let mut f = c.split(':');
                let column = ColumnRecord {
                    num: f.next()?.parse().ok()?,
                    xmin: f.next()?.parse().ok()?,
                    type_id: f.next()?.parse().ok()?,
                    typmod: f.next()?.parse().ok()?,
                    missing: match f.next()? {
                        "1" => true,
                        "0" => false,
                        _ => return None,
                    },
                };
                f.next().is_none().then_some(column)
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some(StorageRecord { filenode, columns })
}
