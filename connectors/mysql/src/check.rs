//! The source's part of `inlet check`: binary log settings, retention, privileges and the
//! replica server id, each with the exact change that fixes it.

use inlet_core::{AtStart, Prerequisite};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::binlog::Flavor;
use crate::catalog::MysqlTable;
use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::types::quote_ident;

/// Checks what a task needs: a full load only, or change data capture too (`capture`), which
/// registers as replica `server_id`.
pub async fn prerequisites(
    conn: &mut Conn,
    connector: &MysqlConnector,
    tables: &[MysqlTable],
    capture: bool,
    server_id: u32,
) -> Result<Vec<Prerequisite>, MysqlError> {
    // Its queries are short: bounded as a whole by `source.read_timeout_s`.
    connector
        .within(
            "checking the server's settings and privileges",
            prerequisites_unbounded(conn, connector, tables, capture, server_id),
        )
        .await
}

async fn prerequisites_unbounded(
    conn: &mut Conn,
    connector: &MysqlConnector,
    tables: &[MysqlTable],
    capture: bool,
    server_id: u32,
) -> Result<Vec<Prerequisite>, MysqlError> {
    let flavor = Flavor::detect(conn, connector).await?;
    let var = |name: &'static str| format!("SELECT @@GLOBAL.{name}");
    let mut get = async |name: &'static str| -> Option<String> {
        conn.query_first::<Option<String>, _>(var(name))
            .await
            .ok()
            .flatten()
            .flatten()
    };
    let version = get("version").await.unwrap_or_default();
    let log_bin = get("log_bin").await.unwrap_or_default();
    let format = get("binlog_format").await.unwrap_or_default();
    let image = get("binlog_row_image").await.unwrap_or_default();
    let metadata = get("binlog_row_metadata").await;
    let own_id = get("server_id").await.unwrap_or_default();
    let expire_seconds = get("binlog_expire_logs_seconds").await;
    let expire_days = get("expire_logs_days").await;
    let value_options = get("binlog_row_value_options").await;
    // MariaDB always has GTIDs; MySQL only with gtid_mode=ON (absent before 5.6).
    let gtid_mode = match flavor {
        Flavor::MariaDb => None,
        Flavor::Mysql => Some(get("gtid_mode").await.unwrap_or_default()),
    };

    let mut out = vec![Prerequisite::ok(
        "connection",
        format!("connected to {} ({version})", connector.server()),
    )];
    out.push(if tables.is_empty() {
        // A running task whose tables are all gone for now (DROP and CREATE of its only
        // table) follows the binlog until one is created or renamed into [tables].
        Prerequisite::missing(
            "table selection",
            "no table matches [tables] include/exclude",
            "check the patterns in [tables]; they match database.table, e.g. \"shop.*\"",
        )
        .at_start(AtStart::RefuseFirstStart)
    } else {
        Prerequisite::ok(
            "table selection",
            format!("{} tables selected", tables.len()),
        )
    });
    let mut denied = Vec::new();
    for t in tables {
        let sql = format!(
            "SELECT 1 FROM {}.{} LIMIT 0",
            quote_ident(&t.schema.id.schema),
            quote_ident(&t.schema.id.name)
        );
        match conn.query_drop(sql).await {
            Ok(()) => {}
            // Dropped or renamed away since discovery (an online schema change tool drops the
            // table it swapped out a moment later): nothing to read, not a missing privilege.
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => {}
            Err(e) => denied.push((t.schema.id.to_string(), crate::error::describe(&e))),
        }
    }
    out.push(if denied.is_empty() {
        Prerequisite::ok("SELECT privilege", "granted on every selected table")
    } else {
        Prerequisite::missing(
            "SELECT privilege",
            format!(
                "missing on {}",
                denied
                    .iter()
                    .map(|(t, why)| format!("{t} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            denied
                .iter()
                .map(|(t, _)| format!("GRANT SELECT ON {t} TO <inlet user>;"))
                .collect::<Vec<_>>()
                .join(" "),
        )
    });
    let needed = |name: &str, detail: String, fix: String| {
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
    let on = |v: &str| v == "1" || v.eq_ignore_ascii_case("ON");
    out.push(if on(&log_bin) {
        Prerequisite::ok("log_bin", "the binary log is on")
    } else {
        needed(
            "log_bin",
            "the binary log is off".into(),
            "add `log_bin = mysql-bin` and `server_id = 1` under [mysqld] in my.cnf, then restart"
                .into(),
        )
    });
    let setting = |name: &str, value: &str, want: &str| {
        if value.eq_ignore_ascii_case(want) {
            Prerequisite::ok(name, format!("{name} = {want}"))
        } else {
            needed(
                name,
                format!("{name} is {value:?}, not {want}"),
                format!(
                    "SET GLOBAL {name} = '{want}'; and `{name} = {want}` under [mysqld] in my.cnf \
                     so it survives a restart"
                ),
            )
        }
    };
    out.push(setting("binlog_format", &format, "ROW"));
    out.push(setting("binlog_row_image", &image, "FULL"));
    out.push(match &metadata {
        Some(m) => setting("binlog_row_metadata", m, "FULL"),
        None => needed(
            "binlog_row_metadata",
            format!("the server ({version}) has no binlog_row_metadata; column names are not in the binlog"),
            "upgrade to MySQL 8.0.1+ or MariaDB 10.5+".into(),
        ),
    });
    if let Some(v) = value_options.filter(|v| !v.is_empty()) {
        out.push(needed(
            "binlog_row_value_options",
            format!("binlog_row_value_options is {v:?}: updates may carry partial JSON"),
            "SET GLOBAL binlog_row_value_options = '';".into(),
        ));
    }
    // GTIDs are what a task resumes from on another server after a failover.
    out.push(match gtid_mode.as_deref() {
        Some(mode) if !mode.eq_ignore_ascii_case("ON") => Prerequisite::warning(
            "GTIDs",
            format!(
                "gtid_mode is {}: the task follows this server only and cannot resume on a \
                 replica promoted after a failover",
                if mode.is_empty() { "absent" } else { mode }
            ),
            "SET GLOBAL enforce_gtid_consistency = ON; then step gtid_mode through \
             OFF_PERMISSIVE and ON_PERMISSIVE to ON (MySQL's online GTID procedure)",
        ),
        _ => Prerequisite::ok(
            "GTIDs",
            "on: after a failover the task resumes on the promoted replica by GTID",
        ),
    });
    // Retention: the binlog must outlive any downtime of the task.
    let seconds: Option<u64> = match (
        expire_seconds.and_then(|s| s.parse().ok()),
        expire_days.and_then(|d| d.parse::<f64>().ok()),
    ) {
        (Some(s), _) if s > 0 => Some(s),
        (_, Some(d)) if d > 0.0 => Some((d * 86_400.0) as u64),
        _ => None,
    };
    out.push(match seconds {
        None => Prerequisite::ok(
            "binlog retention",
            "binary logs are never purged automatically",
        ),
        Some(s) if s >= 3 * 86_400 => Prerequisite::ok(
            "binlog retention",
            format!("binary logs are kept {:.1} days", s as f64 / 86_400.0),
        ),
        Some(s) => Prerequisite::warning(
            "binlog retention",
            format!(
                "binary logs are purged after {:.1} days: a task stopped longer must reload",
                s as f64 / 86_400.0
            ),
            if flavor == Flavor::MariaDb {
                "SET GLOBAL binlog_expire_logs_seconds = 604800; (7 days; and in my.cnf)"
                    .to_string()
            } else {
                "SET PERSIST binlog_expire_logs_seconds = 604800; (7 days)".to_string()
            },
        ),
    });
    // REPLICATION SLAVE / CLIENT: read from SHOW GRANTS.
    let grants: Vec<String> = conn
        .query("SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| connector.query_error("SHOW GRANTS", &e))?;
    let all = grants.iter().any(|g| {
        g.to_ascii_uppercase()
            .contains("GRANT ALL PRIVILEGES ON *.*")
    });
    let has = |p: &str| {
        all || grants.iter().any(|g| {
            let g = g.to_ascii_uppercase();
            g.contains(" ON *.*")
                && (g.contains(p)
                    || (p == "REPLICATION SLAVE" && g.contains("REPLICATION REPLICA"))
                    || (p == "REPLICATION CLIENT" && g.contains("BINLOG MONITOR")))
        })
    };
    for p in ["REPLICATION SLAVE", "REPLICATION CLIENT"] {
        out.push(if has(p) {
            Prerequisite::ok(p, "granted")
        } else {
            needed(
                p,
                format!("the user lacks {p}"),
                format!("GRANT {p} ON *.* TO <inlet user>;"),
            )
        });
    }
    if !has("RELOAD") && flavor == Flavor::Mysql {
        out.push(Prerequisite::warning(
            "RELOAD privilege",
            "the full load takes a brief FLUSH TABLES WITH READ LOCK to find its binlog position",
            "GRANT RELOAD ON *.* TO <inlet user>;",
        ));
    }
    // server_id: ours must differ from the server's and from every connected replica's.
    let mut clash = own_id == server_id.to_string();
    if let Ok(hosts) = conn.query::<mysql_async::Row, _>("SHOW SLAVE HOSTS").await {
        clash |= hosts
            .iter()
            .any(|r| r.get::<Option<u32>, _>(0).flatten() == Some(server_id));
    }
    out.push(if clash {
        Prerequisite::missing(
            "server_id",
            format!("server id {server_id} is already used by the server or another replica"),
            "set source.server_id in the task file to an id no server or replica uses",
        )
        // A replica with our id is usually this task's own earlier run (killed, its dump
        // thread not yet reaped): the server disconnects the old one when we register. A
        // genuinely shared id shows in the log, and `inlet check` reports it.
        .at_start(AtStart::Warn)
    } else {
        Prerequisite::ok(
            "server_id",
            format!("this task registers as replica {server_id}"),
        )
    });
    Ok(out)
}
