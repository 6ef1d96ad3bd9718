//! Whether a new snapshot of the initial load would wait for long write transactions.
//!
//! A slot created for a new snapshot (`full_load.snapshot_minutes`) waits for every transaction
//! that holds an xid when it is created: an application's transaction left open for an hour
//! (idle in transaction, a batch job, a forgotten prepared transaction) would stall the load
//! that long, where going on in the current snapshot loses nothing (such a transaction holds
//! the server's oldest snapshot back anyway). The transactions in progress are the locks each
//! holds on its own xid (`pg_locks`, also a prepared transaction's), read on a connection of
//! their own; those in progress at two looks apart have been open at least that long. No
//! privilege is needed, unlike `pg_stat_activity`, which hides other roles' transactions (and
//! a snapshot's list of xids in progress leaves out the newest ones).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::PgConnector;
use crate::error::PgError;

/// The xids in progress at the last look.
#[derive(Default)]
pub struct OpenWrites {
    seen: Option<BTreeSet<u64>>,
}

/// At the first look, how long apart its two samples are: a transaction in both has been open
/// at least that long, long enough that the new slot might wait a while for it. Short, since a
/// busy server nearly always has a write transaction open at the moment of the first sample.
const FIRST_LOOK: Duration = Duration::from_millis(200);

impl OpenWrites {
    /// The write transactions that were already in progress at the previous look (or, at the
    /// first, a second earlier), described for the log; None when there are none.
    pub async fn long_ones(&mut self, connector: &PgConnector) -> Result<Option<String>, PgError> {
        let client = connector.connect().await?;
        let (earlier, since) = match self.seen.take() {
            Some(earlier) => (earlier, inlet_core::snapshot::RENEWAL_RECHECK),
            None => {
                let first = in_progress(&client, connector).await?;
                if first.is_empty() {
                    return Ok(None);
                }
                tokio::time::sleep(FIRST_LOOK).await;
                (first, FIRST_LOOK)
            }
        };
        let now = in_progress(&client, connector).await?;
        let long: Vec<String> = now.intersection(&earlier).map(u64::to_string).collect();
        self.seen = Some(now);
        Ok((!long.is_empty()).then(|| {
            format!(
                "write transactions have been open for more than {:.1} s (xids {}: \
                 pg_stat_activity.backend_xid, pg_prepared_xacts.transaction)",
                since.as_secs_f64(),
                long.join(", ")
            )
        }))
    }
}

/// The xids of the transactions in progress on the server now.
async fn in_progress(
    client: &tokio_postgres::Client,
    connector: &PgConnector,
) -> Result<BTreeSet<u64>, PgError> {
    const SQL: &str = "SELECT transactionid::text FROM pg_locks \
                       WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted";
    let what = "reading the transactions in progress";
    let rows = match tokio::time::timeout(
        inlet_core::snapshot::RENEWAL_RECHECK,
        client.query(SQL, &[]),
    )
    .await
    {
        Ok(rows) => rows.map_err(|e| connector.query_error(what, &e))?,
        Err(_) => return Err(connector.no_answer(what)),
    };
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, String>(0).parse().ok())
        .collect())
}
