//! The source's part of `inlet check`: server version, settings and privileges a task needs.

use inlet_core::Prerequisite;
use tokio_postgres::Client;

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::error::PgError;

/// Checks what a full load from `tables` needs, and reports what change capture will need.
pub async fn prerequisites(
    client: &Client,
    connector: &PgConnector,
    tables: &[SourceTable],
) -> Result<Vec<Prerequisite>, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
                    current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|e| connector.query_error("reading server settings", &e))?;
    let version_num: i32 = row.get(0);
    let version: String = row.get(1);
    let wal_level: String = row.get(2);
    let replication: bool = row.get::<_, Option<bool>>(3).unwrap_or(false);

    let mut out = Vec::new();
    out.push(Prerequisite::ok(
        "connection",
        format!("connected to {}", connector.server()),
    ));
    out.push(if version_num >= 140000 {
        Prerequisite::ok("server version", format!("PostgreSQL {version}"))
    } else if version_num >= 100000 {
        Prerequisite::warning(
            "server version",
            format!(
                "PostgreSQL {version} has no TID range scans: each chunk scans the whole table"
            ),
            "set full_load.chunk_mb = 0 (one chunk per table) or upgrade to PostgreSQL 14+",
        )
    } else {
        Prerequisite::missing(
            "server version",
            format!("PostgreSQL {version} is older than 10"),
            "upgrade the server to PostgreSQL 10 or later",
        )
    });
    out.push(if tables.is_empty() {
        Prerequisite::missing(
            "table selection",
            "no table matches [tables] include/exclude",
            "check the patterns in [tables]; they match schema.table, e.g. \"public.*\"",
        )
    } else {
        Prerequisite::ok(
            "table selection",
            format!("{} tables selected", tables.len()),
        )
    });
    let denied: Vec<String> = tables
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| t.schema.id.to_string())
        .collect();
    out.push(if denied.is_empty() {
        Prerequisite::ok("SELECT privilege", "granted on every selected table")
    } else {
        Prerequisite::missing(
            "SELECT privilege",
            format!("missing on {}", denied.join(", ")),
            format!("GRANT SELECT ON {} TO <inlet user>", denied.join(", ")),
        )
    });
    // Change capture needs these; a full load does not, so they are warnings here.
    out.push(if wal_level == "logical" {
        Prerequisite::ok("wal_level", "logical (ready for change data capture)")
    } else {
        Prerequisite::warning(
            "wal_level",
            format!("{wal_level}: a full load works, change data capture will not"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    });
    out.push(if replication {
        Prerequisite::ok(
            "REPLICATION attribute",
            "the user may open replication connections",
        )
    } else {
        Prerequisite::warning(
            "REPLICATION attribute",
            "the user lacks REPLICATION: a full load works, change data capture will not",
            "ALTER ROLE <inlet user> WITH REPLICATION",
        )
    });
    Ok(out)
}
