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
/// (`publish_generated_columns = stored`, or the column named in its column list), and inlet
/// then carries them in the full load and the change stream alike (discovery reads exactly the
/// columns the publication sends). This line says which stored generated columns of the
/// selected tables are carried, and warns about those the task's existing publication leaves
/// out, with the statement that would publish them. `None` before 18 (nothing can publish a
/// generated column there: they are left out of load and stream alike) and when the selected
/// tables have no stored generated column.
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
    // Each stored generated column of the selected tables, and whether the publication sends
    // it (pg_publication_tables.attnames lists the columns it sends of each table).
    let rows = client
        .query(
            "SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname), \
                    EXISTS (SELECT 1 FROM pg_publication_tables pt \
                            WHERE pt.pubname = $1 AND pt.schemaname = n.nspname \
                              AND pt.tablename = c.relname AND a.attname = ANY (pt.attnames)), \
                    EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1), \
                    quote_ident($1) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attrelid = ANY ($2) AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = 's' \
             ORDER BY 1",
            &[&publication, &oids],
        )
        .await
        .map_err(|e| connector.query_error("reading the publication's columns", &e))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let exists: bool = first.get(2);
    let quoted: String = first.get(3);
    let all: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if !exists {
        return Ok(Some(Prerequisite::ok(
            "generated columns",
            format!(
                "the stored generated column(s) {} are carried: inlet creates publication \
                 {publication:?} with publish_generated_columns = stored",
                all.join(", ")
            ),
        )));
    }
    let left_out: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    if left_out.is_empty() {
        return Ok(Some(Prerequisite::ok(
            "generated columns",
            format!(
                "publication {publication:?} publishes the stored generated column(s) {}: \
                 carried in the full load and the change stream",
                all.join(", ")
            ),
        )));
    }
    Ok(Some(Prerequisite::warning(
        "generated columns",
        format!(
            "publication {publication:?} does not publish the stored generated column(s) {}, so \
             inlet leaves them out of the full load and the change stream alike",
            left_out.join(", ")
        ),
        format!(
            "to carry them, before the task's first start run ALTER PUBLICATION {quoted} SET \
             (publish_generated_columns = stored) (or name them in its column lists)"
        ),
    )))
}
