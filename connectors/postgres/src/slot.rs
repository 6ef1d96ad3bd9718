//! The publication and the logical replication slot a task streams from: the publication is
//! created (or extended) to cover the selected tables; the slot's health is read so a lost
//! slot stops the task with a clear error instead of being recreated behind the user's back.

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
}

impl SlotState {
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

pub async fn slot_state(
    client: &Client,
    connector: &PgConnector,
    slot: &str,
) -> Result<Option<SlotState>, PgError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, wal_status, confirmed_flush_lsn::text, active_pid \
             FROM pg_replication_slots WHERE slot_name = $1",
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

/// Creates the publication for `tables`, or adds the selected tables it lacks.
pub async fn ensure_publication(
    client: &Client,
    connector: &PgConnector,
    publication: &str,
    tables: &[SourceTable],
) -> Result<(), PgError> {
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
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
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
