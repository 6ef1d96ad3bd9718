//! The publication and the logical replication slot a task streams from: the publication is
//! created (or extended) to cover the selected tables; the slot's health is read so a lost
//! slot stops the task with a clear error instead of being recreated behind the user's back.
//!
//! Nothing here may make the source's own writes fail: a table PostgreSQL could not replicate
//! updates of (no replica identity) is never added to a publication that publishes updates,
//! since from then on every UPDATE and DELETE of the application on it would be refused.

use inlet_core::TableId;
use tokio_postgres::Client;

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::error::PgError;
use crate::replication::Lsn;
use crate::types::quote_ident;

/// A row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    pub confirmed_flush: Option<Lsn>,
    /// The walsender currently streaming from it, if any.
    pub active_pid: Option<i32>,
    /// A failover slot (PostgreSQL 17+: `failover`), which standbys with
    /// `sync_replication_slots = on` keep a copy of; `None` before 17.
    pub failover: Option<bool>,
    /// The copy a standby keeps of a primary's failover slot (PostgreSQL 17+: `synced`). On a
    /// standby still in recovery it cannot be streamed from; after promotion it can.
    pub synced: Option<bool>,
    /// Why the server invalidated the slot (PostgreSQL 17+: `invalidation_reason`):
    /// `wal_removed`, `rows_removed`, `wal_level_insufficient`, and from 18 `idle_timeout`.
    pub invalidation_reason: Option<String>,
    /// PostgreSQL 16 only (17 names the reason instead): the slot, on a standby, was
    /// invalidated by a recovery conflict (`conflicting`).
    pub conflicting: Option<bool>,
}

impl SlotState {
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
            || self.invalidation_reason.is_some()
            || self.conflicting == Some(true)
    }

    /// Why the slot is lost, for the person who has to fix it: the server's invalidation
    /// reason in words, with the setting that caused it.
    pub fn lost_reason(&self) -> String {
        // PostgreSQL 16 says only that a standby's slot conflicted: rows_removed, or the
        // primary's wal_level lowered.
        let reason = match (self.invalidation_reason.as_deref(), self.conflicting) {
            (None, Some(true)) => Some("rows_removed"),
            (reason, _) => reason,
        };
        match reason {
            Some("idle_timeout") => "invalidated by the server because it stayed inactive longer \
                 than idle_replication_slot_timeout (invalidation_reason = idle_timeout): the \
                 task was stopped too long, the server removed WAL the task had not read, so \
                 changes are missing. Raise idle_replication_slot_timeout (0 disables it) above \
                 the longest time a task may be stopped"
                .to_string(),
            Some("rows_removed") => "invalidated by the server (invalidation_reason = \
                 rows_removed, or conflicting = true on PostgreSQL 16): on a standby, the \
                 primary removed catalog rows the slot still needed (or its wal_level is no \
                 longer logical); set hot_standby_feedback = on and use a physical slot \
                 (primary_slot_name) on the standby"
                .to_string(),
            Some("wal_level_insufficient") => "invalidated by the server (invalidation_reason \
                 = wal_level_insufficient): the primary's wal_level is no longer logical"
                .to_string(),
            Some(other) if other != "wal_removed" => format!(
                "invalidated by the server (invalidation_reason = {other}), so changes are missing"
            ),
            _ => "lost (wal_status = lost): the server removed WAL the task had not read, so \
                 changes are missing"
                .to_string(),
        }
    }
}

pub async fn slot_state(
    client: &Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<Option<SlotState>, PgError> {
    let row = client
        .query_opt(
            // The columns of newer versions through to_jsonb, so one query reads every version.
            "SELECT plugin::text, database::text, wal_status, confirmed_flush_lsn::text, active_pid, \
                    (to_jsonb(s) ->> 'failover')::bool, (to_jsonb(s) ->> 'synced')::bool, \
                    to_jsonb(s) ->> 'invalidation_reason', (to_jsonb(s) ->> 'conflicting')::bool \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| connector.query_error("reading pg_replication_slots", &e))?;
    Ok(row.map(|r| SlotState {
        plugin: r.get(0),
        database: r.get(1),
        wal_status: r.get(2),
        confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| Lsn::parse(&s)),
        active_pid: r.get(4),
        failover: r.get(5),
        synced: r.get(6),
        invalidation_reason: r.get(7),
        conflicting: r.get(8),
    }))
}

/// Drops a slot of this task, e.g. one whose initial load never finished.
pub async fn drop_slot(
    client: &Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<(), PgError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map(|_| ())
        .map_err(|e| connector.query_error(&format!("dropping replication slot {slot:?}"), &e))
}

/// The server's current WAL write position: no position a slot or a checkpoint of this server
/// holds can be past it. On a standby (in recovery, where pg_current_wal_lsn() fails) the
/// furthest WAL it has received or replayed.
pub async fn current_wal_position(
    client: &Client,
    connector: &PgConnector,
) -> Result<Lsn, PgError> {
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() \
                    THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
                    ELSE pg_current_wal_lsn() END::text",
            &[],
        )
        .await
        .map_err(|e| connector.query_error("reading pg_current_wal_lsn()", &e))?;
    let text: String = row.get(0);
    Lsn::parse(&text).ok_or_else(|| PgError::Query {
        server: connector.server().to_string(),
        what: "reading pg_current_wal_lsn()".into(),
        reason: format!("the server answered {text:?}, not a WAL position"),
        code: None,
        transient: false,
    })
}

/// How many walsenders run now, and may run (`max_wal_senders`): a stream needs one, a table
/// joining a running task a second one for a moment.
pub async fn walsender_capacity(
    client: &Client,
    connector: &PgConnector,
) -> Result<(i64, i64), PgError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int8, \
                    current_setting('max_wal_senders')::int8",
            &[],
        )
        .await
        .map_err(|e| connector.query_error("counting walsenders", &e))?;
    Ok((row.get(0), row.get(1)))
}

/// How many replication slots the server has, and may have (`max_replication_slots`).
pub async fn slot_capacity(
    client: &Client,
    connector: &PgConnector,
) -> Result<(i64, i64), PgError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots)::int8, \
                    current_setting('max_replication_slots')::int8",
            &[],
        )
        .await
        .map_err(|e| connector.query_error("counting replication slots", &e))?;
    Ok((row.get(0), row.get(1)))
}

/// A selected table whose UPDATEs and DELETEs PostgreSQL refuses once it is in a publication
/// that publishes them: its replica identity is NOTHING, or DEFAULT without a primary key, or
/// an index that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoReplicaIdentity {
    pub table: TableId,
    /// `schema.table` quoted where SQL needs it (by the server's `quote_ident`).
    pub sql_name: String,
    /// A unique index on NOT NULL columns that could serve as the identity, if there is one,
    /// quoted where SQL needs it.
    pub usable_index: Option<String>,
}

impl NoReplicaIdentity {
    /// The statement that makes the table's updates publishable.
    pub fn fix(&self) -> String {
        let table = &self.sql_name;
        match &self.usable_index {
            Some(index) => format!(
                "ALTER TABLE {table} REPLICA IDENTITY USING INDEX {index}; (or REPLICA IDENTITY FULL)"
            ),
            None => format!("ALTER TABLE {table} REPLICA IDENTITY FULL;"),
        }
    }
}

/// The selected tables that have no usable replica identity (see [`NoReplicaIdentity`]).
pub async fn tables_without_replica_identity(
    client: &Client,
    connector: &PgConnector,
    tables: &[SourceTable],
) -> Result<Vec<NoReplicaIdentity>, PgError> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, format('%I.%I', n.nspname, c.relname), \
                    (SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                     WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid \
                       AND i.indpred IS NULL AND i.indexprs IS NULL \
                       AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey::int2[]) k(attnum) \
                                       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                                       WHERE NOT a.attnotnull) \
                     ORDER BY ic.relname LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = ANY($1) AND ( \
                   c.relreplident = 'n' \
                OR (c.relreplident = 'd' AND NOT EXISTS \
                      (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) \
                OR (c.relreplident = 'i' AND NOT EXISTS \
                      (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) \
             ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(|e| connector.query_error("reading replica identities", &e))?;
    Ok(rows
        .iter()
        .map(|r| NoReplicaIdentity {
            table: TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            sql_name: r.get(2),
            usable_index: r.get(3),
        })
        .collect())
}

/// Whether the publication exists.
pub async fn publication_exists(
    client: &Client,
    connector: &PgConnector,
    publication: &str,
) -> Result<bool, PgError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| connector.query_error("reading pg_publication", &e))?
        .is_some())
}

/// What [`ensure_publication`] would do, and whether the user may do it: read before anything
/// is written, so `inlet check` and the start of `inlet run` refuse the same things.
#[derive(Debug, Clone, Default)]
pub struct PublicationPlan {
    pub exists: bool,
    /// The publication publishes UPDATE or DELETE (PostgreSQL's default; always so when inlet
    /// creates it).
    pub publishes_updates: bool,
    /// Selected tables the publication lacks (every one when it does not exist).
    pub to_add: Vec<TableId>,
    /// Selected tables whose updates could not be published ([`NoReplicaIdentity`]), when the
    /// publication would publish them: adding them would break the application's writes.
    pub no_identity: Vec<NoReplicaIdentity>,
    /// Why the user may not create or extend the publication, with the fix.
    pub denied: Option<(String, String)>,
    /// The server is a read-only standby: every fix is for the primary.
    pub standby: bool,
}

impl PublicationPlan {
    /// The refusal, if adding the tables would make the application's writes fail.
    pub fn identity_refusal(&self, publication: &str) -> Option<String> {
        if self.no_identity.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .no_identity
            .iter()
            .map(|t| t.table.to_string())
            .collect();
        let fixes: Vec<String> = self
            .no_identity
            .iter()
            .map(NoReplicaIdentity::fix)
            .collect();
        Some(format!(
            "{} {} no primary key or other replica identity: in publication {publication:?}, which \
             publishes updates and deletes, every UPDATE and DELETE of {} by your application would \
             fail (\"cannot update table … because it does not have a replica identity\"), so inlet \
             does not add {}. Make {} capturable{}: {} or exclude {} in [tables]",
            names.join(", "),
            if names.len() == 1 { "has" } else { "have" },
            if names.len() == 1 { "it" } else { "them" },
            if names.len() == 1 { "it" } else { "them" },
            if names.len() == 1 { "it" } else { "them" },
            if self.standby {
                " on the primary (this server is a read-only standby)"
            } else {
                ""
            },
            fixes.join(" "),
            if names.len() == 1 { "it" } else { "them" },
        ))
    }
}

/// Reads what creating or extending `publication` for `tables` takes (see [`PublicationPlan`]).
pub async fn publication_plan(
    client: &Client,
    connector: &PgConnector,
    publication: &str,
    tables: &[SourceTable],
) -> Result<PublicationPlan, PgError> {
    let err = |what: &str, e: tokio_postgres::Error| connector.query_error(what, &e);
    let row = client
        .query_opt(
            "SELECT pubupdate OR pubdelete, pg_has_role(pubowner, 'USAGE'), puballtables \
             FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| err("reading pg_publication", e))?;
    let role = client
        .query_one(
            "SELECT rolsuper, pg_is_in_recovery() FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| err("reading pg_roles", e))?;
    let superuser: bool = role.get(0);
    // A standby (PostgreSQL 16+ decodes there) is read-only: the publication comes from the
    // primary, through replication.
    let standby: bool = role.get(1);
    let (exists, publishes_updates, owns_publication, all_tables) = match &row {
        Some(r) => (
            true,
            r.get::<_, bool>(0),
            r.get::<_, bool>(1),
            r.get::<_, bool>(2),
        ),
        None => (false, true, true, false),
    };
    let published: Vec<(String, String)> = if exists {
        client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map_err(|e| err("reading pg_publication_tables", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        Vec::new()
    };
    let adding: Vec<&SourceTable> = tables
        .iter()
        .filter(|t| {
            !all_tables
                && !published
                    .iter()
                    .any(|(s, n)| *s == t.schema.id.schema && *n == t.schema.id.name)
        })
        .collect();
    let to_add: Vec<TableId> = adding.iter().map(|t| t.schema.id.clone()).collect();
    // Only a table inlet would add is its doing; one already published is the user's choice.
    let no_identity = if publishes_updates && !adding.is_empty() {
        let adding: Vec<SourceTable> = adding.iter().map(|t| (*t).clone()).collect();
        tables_without_replica_identity(client, connector, &adding).await?
    } else {
        Vec::new()
    };
    let mut denied = None;
    if (!superuser || standby) && !to_add.is_empty() {
        let oids: Vec<u32> = adding.iter().map(|t| t.oid).collect();
        let not_owned: Vec<String> = client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = ANY($1) AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1",
                &[&oids],
            )
            .await
            .map_err(|e| err("reading table owners", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let may_create: bool = client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE')",
                &[],
            )
            .await
            .map_err(|e| err("reading database privileges", e))?
            .get(0);
        // Quoted by the server, only where SQL needs it, so the statement reads as one would
        // type it.
        let names = client
            .query_one(
                "SELECT quote_ident($1), \
                        (SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ' \
                                           ORDER BY n.nspname, c.relname) \
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.oid = ANY($2))",
                &[&publication, &oids],
            )
            .await
            .map_err(|e| err("quoting names", e))?;
        let pub_sql: String = names.get(0);
        let list: String = names.get::<_, Option<String>>(1).unwrap_or_default();
        let statement = if exists {
            format!("ALTER PUBLICATION {pub_sql} ADD TABLE {list};")
        } else {
            let options = publication_options(client, &oids)
                .await
                .map_err(|e| err("reading generated columns", e))?;
            format!("CREATE PUBLICATION {pub_sql} FOR TABLE {list}{options};")
        };
        if standby {
            denied =
                Some((
                    format!(
                    "the server is a standby (read-only, pg_is_in_recovery()), so inlet cannot {} \
                     publication {publication:?} here",
                    if exists {
                        format!(
                            "add {} to",
                            to_add.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                        )
                    } else {
                        "create".to_string()
                    }
                ),
                    format!(
                    "on the primary run: {statement} (the standby receives it through replication)"
                ),
                ));
        } else if !exists && !may_create {
            denied = Some((
                format!(
                    "publication {publication:?} does not exist and the user may not create it \
                     (no CREATE privilege on the database)"
                ),
                format!(
                    "as the tables' owner or a superuser run: {statement} or GRANT CREATE ON DATABASE \
                     <database> TO <inlet user>"
                ),
            ));
        } else if exists && !owns_publication {
            denied = Some((
                format!(
                    "publication {publication:?} lacks {} and the user does not own the publication",
                    to_add.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
                format!("as its owner run: {statement}"),
            ));
        } else if !not_owned.is_empty() {
            denied = Some((
                format!(
                    "only a table's owner may add it to a publication; the user does not own {}",
                    not_owned.join(", ")
                ),
                format!("as the tables' owner or a superuser run: {statement}"),
            ));
        }
    }
    Ok(PublicationPlan {
        exists,
        publishes_updates,
        to_add,
        no_identity,
        denied,
        standby,
    })
}

/// The options of the publication inlet creates for the tables `oids`: on PostgreSQL 18, when
/// one of them has a stored generated column, it publishes stored generated columns, which
/// discovery then reads in the full load too (see `catalog::discover`), so the target has their
/// values. Otherwise (before 18 nothing can publish them) there are no options, and the
/// statement inlet prints for a user to run stays the plain one.
async fn publication_options(
    client: &Client,
    oids: &[u32],
) -> Result<&'static str, tokio_postgres::Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if version < 180000 {
        return Ok("");
    }
    let generated: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = ANY ($1) AND attnum > 0 \
               AND NOT attisdropped AND attgenerated = 's')",
            &[&oids],
        )
        .await?
        .get(0);
    Ok(if generated {
        " WITH (publish_generated_columns = stored)"
    } else {
        ""
    })
}

/// Creates the publication for `tables`, or adds the selected tables it lacks. Refuses, before
/// changing anything, when a table it would add has no replica identity (see
/// [`NoReplicaIdentity`]).
pub async fn ensure_publication(
    client: &Client,
    connector: &PgConnector,
    publication: &str,
    tables: &[SourceTable],
) -> Result<(), PgError> {
    let plan = publication_plan(client, connector, publication, tables).await?;
    if let Some(message) = plan.identity_refusal(publication) {
        return Err(PgError::Refused { message });
    }
    let err = |what: &str, e: tokio_postgres::Error| {
        let mut e = connector.query_error(what, &e);
        if let PgError::Query { reason, .. } = &mut e {
            if reason.contains("must be owner") || reason.contains("permission denied") {
                reason.push_str(&format!(
                    "; create it as the tables' owner or a superuser: CREATE PUBLICATION {} FOR TABLE …",
                    quote_ident(publication)
                ));
            }
        }
        e
    };
    let names = |ts: &[&SourceTable]| {
        ts.iter()
            .map(|t| {
                format!(
                    "{}.{}",
                    quote_ident(&t.schema.id.schema),
                    quote_ident(&t.schema.id.name)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| err("reading pg_publication", e))?
        .is_some();
    if !exists {
        let all: Vec<&SourceTable> = tables.iter().collect();
        let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
        let options = publication_options(client, &oids)
            .await
            .map_err(|e| err("reading generated columns", e))?;
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}{options}",
            quote_ident(publication),
            names(&all)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| err("creating the publication", e))?;
        tracing::info!(publication, tables = tables.len(), "publication created");
        return Ok(());
    }
    let published: Vec<(String, String)> = client
        .query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", &[&publication])
        .await
        .map_err(|e| err("reading pg_publication_tables", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<&SourceTable> = tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|(s, n)| *s == t.schema.id.schema && *n == t.schema.id.name)
        })
        .collect();
    if !missing.is_empty() {
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(publication),
            names(&missing)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| err("adding tables to the publication", e))?;
        tracing::info!(
            publication,
            added = missing.len(),
            "tables added to the publication"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidated(reason: Option<&str>, conflicting: Option<bool>) -> SlotState {
        SlotState {
            plugin: Some("pgoutput".into()),
            database: Some("app".into()),
            wal_status: Some("lost".into()),
            confirmed_flush: None,
            active_pid: None,
            failover: None,
            synced: None,
            invalidation_reason: reason.map(str::to_string),
            conflicting,
        }
    }

    #[test]
    fn a_lost_slot_says_why_the_server_invalidated_it() {
        let idle = invalidated(Some("idle_timeout"), Some(true));
        assert!(idle.is_lost());
        assert!(
            idle.lost_reason()
                .contains("inactive longer than idle_replication_slot_timeout"),
            "{}",
            idle.lost_reason()
        );
        // PostgreSQL 16 names no reason, only the conflict.
        let conflict = invalidated(None, Some(true));
        assert!(conflict.lost_reason().contains("hot_standby_feedback = on"));
        let removed = invalidated(Some("wal_removed"), None);
        assert!(removed
            .lost_reason()
            .starts_with("lost (wal_status = lost)"));
        let before_17 = invalidated(None, None);
        assert_eq!(before_17.lost_reason(), removed.lost_reason());
        let usable = SlotState {
            wal_status: Some("reserved".into()),
            conflicting: Some(false),
            ..invalidated(None, None)
        };
        assert!(!usable.is_lost());
    }
}
