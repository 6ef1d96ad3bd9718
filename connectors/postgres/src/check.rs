//! The source's part of `inlet check`: server version, settings and privileges a task needs.

use inlet_core::Prerequisite;
use tokio_postgres::Client;

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::error::PgError;

/// Checks what a full load from `tables` needs, and reports what change capture will need.
/// Checks what a task needs: a full load only, or change data capture too (`capture`).
pub async fn prerequisites(
    client: &Client,
    connector: &PgConnector,
    tables: &[SourceTable],
    capture: bool,
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
                "PostgreSQL {version} is not tested, and has no TID range scans: inlet reads each \
                 table in one chunk (full_load.chunk_mb applies from 14 on)"
            ),
            "upgrade to PostgreSQL 14 or later",
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
    // Change capture needs these; a full load does not, so for it they are warnings.
    let needed = |name: &str, detail: String, fix: &str| {
        if capture {
            Prerequisite::missing(name, detail, fix)
        } else {
            Prerequisite::warning(
                name,
                format!("{detail} (needed for change data capture only)"),
                fix,
            )
        }
    };
    out.push(if wal_level == "logical" {
        Prerequisite::ok("wal_level", "logical (ready for change data capture)")
    } else {
        needed(
            "wal_level",
            format!("{wal_level}, not logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    });
    out.push(if replication {
        Prerequisite::ok(
            "REPLICATION attribute",
            "the user may open replication connections",
        )
    } else {
        needed(
            "REPLICATION attribute",
            "the user lacks REPLICATION".into(),
            "ALTER ROLE <inlet user> WITH REPLICATION",
        )
    });
    if capture {
        out.push(replica_identity(client, connector, tables).await?);
    }
    Ok(out)
}

/// Tables with columns PostgreSQL may TOAST (values stored out of line) whose replica identity
/// is not FULL: an update that leaves such a value unchanged does not carry it in the change
/// stream, and the task stops rather than write a wrong value.
async fn replica_identity(
    client: &Client,
    connector: &PgConnector,
    tables: &[SourceTable],
) -> Result<Prerequisite, PgError> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = ANY($1) AND c.relreplident <> 'f' \
               AND EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                             AND t.typstorage <> 'p') \
             ORDER BY 1",
            &[&oids],
        )
        .await
        .map_err(|e| connector.query_error("reading replica identities", &e))?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(if names.is_empty() {
        Prerequisite::ok(
            "REPLICA IDENTITY",
            "every table with TOAST-able columns has REPLICA IDENTITY FULL",
        )
    } else {
        let statements: Vec<String> = names
            .iter()
            .map(|n| format!("ALTER TABLE {n} REPLICA IDENTITY FULL;"))
            .collect();
        Prerequisite::warning(
            "REPLICA IDENTITY",
            format!(
                "{} has columns PostgreSQL may TOAST and no REPLICA IDENTITY FULL: an update that \
                 leaves such a value unchanged would stop the task",
                names.join(", ")
            ),
            statements.join(" "),
        )
    })
}

/// PostgreSQL 18 publishes stored generated columns when the publication says so
/// (`publish_generated_columns = stored`, or the column named in its column list). inlet loads
/// the columns logical replication publishes by default, without them: a task whose publication
/// publishes one would load the table without it and stream it as an added column, so that is
/// refused, naming the publication, the columns and the statement that fixes it. `None` before
/// 18 (nothing publishes generated columns there) and when the publication does not exist yet
/// (inlet creates it without them).
pub async fn published_generated_columns(
    client: &Client,
    connector: &PgConnector,
    publication: &str,
    tables: &[SourceTable],
) -> Result<Option<Prerequisite>, PgError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| connector.query_error("reading server_version_num", &e))?
        .get(0);
    if version < 180000 {
        return Ok(None);
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    // pg_publication_tables.attnames lists the columns the publication sends of each table.
    let rows = client
        .query(
            "SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname), quote_ident($1) \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = ANY (pt.attnames) \
             WHERE pt.pubname = $1 AND c.oid = ANY ($2) AND a.attgenerated <> '' \
             ORDER BY 1",
            &[&publication, &oids],
        )
        .await
        .map_err(|e| connector.query_error("reading the publication's columns", &e))?;
    let Some(first) = rows.first() else {
        return Ok(Some(Prerequisite::ok(
            "generated columns",
            format!("publication {publication:?} publishes no generated column"),
        )));
    };
    let quoted: String = first.get(1);
    let columns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(Some(Prerequisite::missing(
        "generated columns",
        format!(
            "publication {publication:?} publishes the generated column(s) {}, which inlet \
             leaves out of the full load (the load and the change files would differ)",
            columns.join(", ")
        ),
        format!(
            "ALTER PUBLICATION {quoted} SET (publish_generated_columns = none), and leave \
             generated columns out of its column lists (or exclude the table)"
        ),
    )))
}
