//! `inlet resync -c TASK TABLE…`: loads chosen tables of a running CDC task again, in a fresh
//! consistent snapshot beside the stream, the way a joining or swapped table is loaded
//! ([`crate::join`]); the other tables keep streaming.
//!
//! It exists for the changes a task cannot complete: an update whose unchanged TOASTed value
//! PostgreSQL did not send (a table without `REPLICA IDENTITY FULL`), a MariaDB/MySQL row image
//! that lacks columns (`binlog_row_image` not FULL, even for one session). Fixing the table or
//! the server only helps the changes to come: those already in the stream stay incomplete, so
//! every restart stopped on them again. A reload supersedes them: its snapshot holds their
//! effect, and the stream's replay guard skips every transaction of the table before the
//! load's position ([`crate::join::loaded_at`]), so they are dropped instead of stopping the
//! task.
//!
//! A resync is recorded in the checkpoint (the table's [`inlet_core::TableState::resync_at`]):
//! written by `inlet resync` into a stopped
//! task's checkpoint, or by the running task itself when asked through its HTTP endpoint
//! (`POST /tasks/{task}/tables/{table}/resync`, see [`ask`]). The task's next start loads the
//! table beside the stream and keeps the request until a load that began after it is
//! recorded, so a crash during the load leaves the old copy in place and the reload starts
//! again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use inlet_core::{Checkpoint, Position, TableId, TableSelection, TableStates};

use crate::config::{self, Mode, TaskConfig};
use crate::sink::Target;
use crate::JobError;

/// Stands for the task file in messages written where it is not known (the task engine); the
/// CLI puts the path of the file it was given in its place.
pub const TASK_FILE: &str = "<task file>";

/// What a source error about a change that cannot be completed adds: fixing the cause does
/// not complete the changes already in the stream, a reload of the table does.
pub fn hint(table: &impl std::fmt::Display) -> String {
    format!(
        ". The changes of {table} already in the stream stay incomplete after that, so then \
         reload the table beside the stream (the other tables keep streaming; its incomplete \
         changes are dropped, superseded by the reload): inlet resync -c {TASK_FILE} {table}"
    )
}

/// Records in `tables` (of a checkpoint at `position`) that `id` must be loaded again
/// ([`inlet_core::request_reload`]).
pub use inlet_core::request_reload as request;

/// Tables of `now` whose reload is pending. The requests of reloads that are done (a load at
/// or after the request is recorded) and of tables the task no longer has leave `tables`.
pub fn pending(tables: &mut TableStates, now: &[TableId]) -> Vec<TableId> {
    let mut out: Vec<TableId> = Vec::new();
    for (name, state) in tables.iter_mut() {
        let Some(at) = state.resync_at else {
            continue;
        };
        let Some(id) = now.iter().find(|id| id.to_string() == *name) else {
            tracing::warn!(table = %name, "a table to resync is no longer in the source or the selection; its resync is dropped");
            state.resync_at = None;
            continue;
        };
        if state.loaded_at.is_some_and(|loaded| loaded >= at) {
            tracing::info!(table = %id, "the table's resync is done: it was loaded again beside the stream");
            state.resync_at = None;
            continue;
        }
        out.push(id.clone());
    }
    out
}

/// Drops every pending reload request of `tables` (a task that loads no table).
pub fn drop_requests(tables: &mut TableStates) {
    for state in tables.values_mut() {
        state.resync_at = None;
    }
}

/// Resyncs asked of running tasks through the HTTP endpoint, by task name: the task's stream
/// takes them at its next transaction boundary ([`take_asked`]) and starts again, recording
/// them in its checkpoint before anything else.
fn asked() -> &'static Mutex<HashMap<String, Vec<String>>> {
    static ASKED: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
    ASKED.get_or_init(Default::default)
}

/// Asks the running task `task` to reload `table` (a name as `/status` lists it).
pub fn ask(task: &str, table: &str) {
    let mut map = asked().lock().unwrap_or_else(|p| p.into_inner());
    let tables = map.entry(task.to_string()).or_default();
    if !tables.iter().any(|t| t == table) {
        tables.push(table.to_string());
    }
}

/// Whether a resync of one of `task`'s tables was asked and not yet taken.
pub fn is_asked(task: &str) -> bool {
    let map = asked().lock().unwrap_or_else(|p| p.into_inner());
    map.get(task).is_some_and(|t| !t.is_empty())
}

/// Takes the resyncs asked of `task`, as reload requests recorded in `tables` (of a checkpoint
/// at `position`), for the tables of `now`.
pub fn take_asked(task: &str, tables: &mut TableStates, now: &[TableId], position: Position) {
    let names = {
        let mut map = asked().lock().unwrap_or_else(|p| p.into_inner());
        map.remove(task).unwrap_or_default()
    };
    for name in names {
        match now.iter().find(|id| id.to_string() == name) {
            Some(id) => {
                tracing::info!(table = %id, "resync asked through the HTTP endpoint: the table is loaded again beside the stream");
                request(tables, id, position);
            }
            None => {
                tracing::warn!(table = %name, "resync asked through the HTTP endpoint for a table the task no longer has; ignored")
            }
        }
    }
}

/// The tables a checkpoint records as captured, as `schema.table`.
fn checkpoint_tables(cp: &Checkpoint) -> Vec<String> {
    cp.tables
        .iter()
        .filter(|(_, t)| t.captured)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Which of the task's `tables` the user's `name` means: `schema.table` exactly, or a bare
/// table name that only one schema has.
pub fn resolve<'a>(name: &str, tables: &'a [String]) -> Option<&'a String> {
    if let Some(t) = tables.iter().find(|t| *t == name) {
        return Some(t);
    }
    let mut bare = tables
        .iter()
        .filter(|t| t.split_once('.').is_some_and(|(_, n)| n == name));
    match (bare.next(), bare.next()) {
        (Some(t), None) => Some(t),
        _ => None,
    }
}

/// Checks a resync of `names` against the task: its mode, and each name against the task's
/// selection and the tables its checkpoint holds. The resolved `schema.table` names.
fn validate(
    file: &Path,
    config: &TaskConfig,
    cp: Option<&Checkpoint>,
    checkpoint_at: &str,
    names: &[String],
) -> Result<Vec<String>, JobError> {
    let file = file.display();
    match config.task.mode {
        Mode::FullLoadAndCdc => {}
        Mode::Cdc => {
            return Err(JobError::Config(format!(
                "{file}: task.mode = \"cdc\" loads no table, so it cannot reload one; set \
                 task.mode = \"full-load-and-cdc\" to resync tables (its next run loads only \
                 the tables it has not loaded, then the ones resynced)"
            )))
        }
        Mode::FullLoad => {
            return Err(JobError::Config(format!(
                "{file}: task.mode = \"full-load\" has no stream to resync a table beside; run \
                 `inlet full-load -c {file}` to load the tables again"
            )))
        }
    }
    let Some(cp) = cp else {
        return Err(JobError::Config(format!(
            "{file}: task {:?} has no checkpoint ({checkpoint_at}): it has not run yet, and its \
             first `inlet run` loads every table; nothing to resync",
            config.task.name
        )));
    };
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let tables = checkpoint_tables(cp);
    let listed = if tables.is_empty() {
        "(none recorded)".to_string()
    } else {
        tables.join(", ")
    };
    let mut resolved = Vec::new();
    for name in names {
        if let Some(t) = resolve(name, &tables) {
            if !resolved.contains(t) {
                resolved.push(t.clone());
            }
            continue;
        }
        let selected = name
            .split_once('.')
            .is_some_and(|(s, t)| selection.includes(&TableId::new(s, t)));
        return Err(JobError::Config(if selected {
            format!(
                "{file}: table {name:?} matches [tables] but task {:?} has not loaded it (it \
                 is not in the source, or has not joined yet): its next run loads it if it \
                 exists; nothing to resync. The task's tables: {listed}",
                config.task.name
            )
        } else {
            format!(
                "{file}: table {name:?} is not a table of task {:?}: [tables] include/exclude \
                 do not select it (write it as schema.table). The task's tables: {listed}",
                config.task.name
            )
        }));
    }
    Ok(resolved)
}

/// How `inlet resync` reached the task.
pub enum Resynced {
    /// The task was stopped: the reload is recorded in its checkpoint for its next run.
    Recorded(Vec<String>),
    /// A running daemon took the request: the reload begins now.
    Asked {
        address: String,
        tables: Vec<String>,
    },
}

/// `inlet resync -c FILE TABLE…`. A daemon running the task (found at the file's
/// `[service] listen`, or `address`) is asked through its HTTP endpoint; otherwise the task's
/// checkpoint records the reload for its next run.
pub async fn run(
    file: &Path,
    names: &[String],
    address: Option<String>,
) -> Result<Resynced, JobError> {
    let config = config::load(file).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let target = Target::new(&config.target, task)?;
    let checkpoint_at = target.checkpoint_location(task);
    let cp = target.read_checkpoint(task).await?;
    let tables = validate(file, &config, cp.as_ref(), &checkpoint_at, names)?;

    let address = address.unwrap_or_else(|| {
        config.service.as_ref().map_or_else(
            || config::ServiceConfig::default().listen,
            |s| s.listen.clone(),
        )
    });
    if crate::http::task_running(&address, task).await {
        for t in &tables {
            crate::http::ask_resync(&address, task, t)
                .await
                .map_err(JobError::Failed)?;
        }
        return Ok(Resynced::Asked { address, tables });
    }

    // Validated above: the checkpoint exists.
    let Some(mut cp) = cp else {
        return Err(JobError::Failed(format!(
            "the checkpoint of task {task:?} ({checkpoint_at}) is gone"
        )));
    };
    for t in &tables {
        // Split anywhere: the request is recorded under `schema.table`, as the checkpoint
        // spells it.
        let id = match t.split_once('.') {
            Some((s, n)) => TableId::new(s, n),
            None => TableId::new("", t.as_str()),
        };
        request(&mut cp.tables, &id, cp.position);
    }
    target.write_checkpoint(task, &cp).await?;
    Ok(Resynced::Recorded(tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_is_pending_until_a_load_after_it() {
        let (a, b) = (TableId::new("public", "a"), TableId::new("public", "b"));
        let loaded = |tables: &mut TableStates, id: &TableId, at: u64| {
            tables.entry(id.to_string()).or_default().loaded_at = Some(Position(at));
        };
        let requests =
            |tables: &TableStates| tables.values().filter(|t| t.resync_at.is_some()).count();
        // a loaded beside the stream at 0x50, before the checkpoint passed it.
        let mut tables = TableStates::new();
        for id in [&a, &b] {
            tables.entry(id.to_string()).or_default().captured = true;
        }
        loaded(&mut tables, &a, 0x50);
        request(&mut tables, &a, Position(0x40));
        request(&mut tables, &b, Position(0x40));
        request(&mut tables, &b, Position(0x40));
        let now = [a.clone(), b.clone()];
        // The earlier load of a does not count: the request is past it.
        assert_eq!(
            pending(&mut tables.clone(), &now),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(requests(&tables), 2);
        assert_eq!(tables["public.a"].resync_at, Some(Position(0x51)));
        // b's reload began at 0x60: done, its request leaves; a's is still to come.
        loaded(&mut tables, &b, 0x60);
        assert_eq!(pending(&mut tables, &now), vec![a.clone()]);
        assert_eq!(requests(&tables), 1);
        // A table the task no longer has drops its request.
        assert!(pending(&mut tables, std::slice::from_ref(&b)).is_empty());
        assert_eq!(requests(&tables), 0);
    }

    #[test]
    fn names_resolve_to_the_tasks_tables() {
        let tables = vec![
            "public.docs".to_string(),
            "app.docs".to_string(),
            "app.x".to_string(),
        ];
        assert_eq!(resolve("public.docs", &tables), Some(&tables[0]));
        assert_eq!(resolve("x", &tables), Some(&tables[2]));
        assert_eq!(resolve("docs", &tables), None, "two schemas have docs");
        assert_eq!(resolve("public.nope", &tables), None);
    }
}
