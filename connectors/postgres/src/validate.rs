//! What `inlet validate` asks of a PostgreSQL source beyond the full load's reading: the
//! position a snapshot's rows were read at, to know when the task's target has passed it.

use inlet_core::Position;

use crate::error::PgError;
use crate::replication::Lsn;
use crate::snapshot::ExportedSnapshot;
use crate::PgConnector;

/// A WAL position at or after every commit `snapshot` sees: the WAL insert position, read in
/// the snapshot's own transaction after its snapshot was taken. The insert position, not
/// `pg_current_wal_lsn()` (the write position): with `synchronous_commit = off` a commit the
/// snapshot sees can still sit in WAL buffers, after the write position. On a standby, the
/// furthest WAL it has received or replayed.
pub async fn snapshot_position(
    snapshot: &ExportedSnapshot,
    connector: &PgConnector,
) -> Result<Position, PgError> {
    let what = "reading pg_current_wal_insert_lsn()";
    let row = snapshot
        .client()
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() \
                    THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
                    ELSE pg_current_wal_insert_lsn() END::text",
            &[],
        )
        .await
        .map_err(|e| connector.query_error(what, &e))?;
    let text: String = row.get(0);
    Lsn::parse(&text)
        .map(|lsn| Position(lsn.0))
        .ok_or_else(|| PgError::Query {
            server: connector.server().to_string(),
            what: what.into(),
            reason: format!("the server answered {text:?}, not a WAL position"),
            code: None,
            transient: false,
        })
}
