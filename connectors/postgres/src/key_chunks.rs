//! Key-range chunks of a table for a full load that resumes: ranges of the first key column's
//! integer values. A row stays in its range whatever snapshot reads it, so chunks a killed run
//! completed can be kept beside chunks a later snapshot reads, which page ranges cannot promise
//! once anything updates the table. Only a table stored in about key order is read so (see
//! [`MIN_KEY_ORDER`]). The bounds are keys sampled at evenly spaced heap pages, so
//! each range holds about `full_load.chunk_mb` however the keys are spread.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::catalog::SourceTable;
use crate::config::PgConnector;
use crate::error::PgError;
use crate::types::quote_ident;

/// Pages sampled per chunk: more samples even out the chunks of a table whose rows are not in
/// key order (one sample per chunk would make some chunks several times the size).
const SAMPLES_PER_CHUNK: u64 = 8;

/// How long planning may wait for the lock its page reads take (ACCESS SHARE) before the table
/// is read as one chunk instead, as its sizing does.
const PLAN_LOCK_TIMEOUT: &str = "500ms";

/// Values `[start, end)` of a table's first key column; an end that is None is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpan {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl KeySpan {
    /// Every row.
    pub fn whole() -> Self {
        Self {
            start: None,
            end: None,
        }
    }

    /// `keys START END`, `-` for an open end.
    pub fn text(&self) -> String {
        let bound = |b: Option<i64>| b.map_or("-".to_string(), |v| v.to_string());
        format!("keys {} {}", bound(self.start), bound(self.end))
    }

    /// The span [`KeySpan::text`] wrote.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix("keys ")?.split(' ');
        let bound = |t: &str| -> Option<Option<i64>> {
            match t {
                "-" => Some(None),
                v => v.parse().ok().map(Some),
            }
        };
        let start = bound(parts.next()?)?;
        let end = bound(parts.next()?)?;
        parts.next().is_none().then_some(Self { start, end })
    }

    /// The condition on `table`'s first key column that selects this span's rows; None for
    /// every row.
    pub(crate) fn filter(&self, table: &SourceTable) -> Option<String> {
        let column = quote_ident(table.schema.primary_key.first()?);
        match (self.start, self.end) {
            (None, None) => None,
            (Some(s), None) => Some(format!("{column} >= {s}")),
            (None, Some(e)) => Some(format!("{column} < {e}")),
            (Some(s), Some(e)) => Some(format!("{column} >= {s} AND {column} < {e}")),
        }
    }
}

/// The column `table` is cut into key ranges by: its first key column, when it holds integers
/// (`smallint`, `integer`, `bigint`; a key column is NOT NULL). None: the table is read in page
/// ranges.
pub(crate) fn key_column(table: &SourceTable) -> Option<&str> {
    let name = table.schema.primary_key.first()?;
    let column = table.schema.columns.iter().find(|c| &c.name == name)?;
    matches!(
        column.source_type.as_str(),
        "smallint" | "integer" | "bigint"
    )
    .then_some(name.as_str())
}

/// How closely the heap's order must follow the key's (`pg_stats.correlation`, -1 to 1) for
/// key ranges: each range is then read from a run of pages. Measured on TPC-H lineitem (6M rows,
/// 2 workers, into Parquet): in key order (1.0) key ranges load in about the time page ranges
/// do (+0-10 %); in random order (0.0) they take 1.8 times as long (index lookups all over the
/// heap).
const MIN_KEY_ORDER: f64 = 0.9;

/// Whether `table`'s rows are stored in about the order of its first key column, by the
/// planner's statistics (`ANALYZE`, which autovacuum runs); false for a table never analyzed.
pub(crate) async fn in_key_order(
    client: &Client,
    connector: &PgConnector,
    table: &SourceTable,
) -> Result<bool, PgError> {
    let Some(column) = key_column(table) else {
        return Ok(false);
    };
    let what = format!("reading the key order statistics of {}", table.schema.id);
    let row = client
        .query_opt(
            "SELECT correlation::float8 FROM pg_stats \
             WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND NOT inherited",
            &[&table.schema.id.schema, &table.schema.id.name, &column],
        )
        .await
        .map_err(|e| connector.query_error(&what, &e))?;
    let correlation: Option<f64> = row.and_then(|r| r.get(0));
    Ok(correlation.is_some_and(|c| c.abs() >= MIN_KEY_ORDER))
}

/// Cuts `table` (its `pages` heap pages, as the load measured them) into key ranges of about `chunk_pages` pages each, inside
/// the snapshot `client` holds. The page reads run in a savepoint rolled back at once, so the
/// snapshot's transaction keeps no lock on the table; a table another session holds locked is
/// read as one range.
pub(crate) async fn plan(
    client: &Client,
    connector: &PgConnector,
    table: &SourceTable,
    chunk_pages: u64,
) -> Result<Vec<KeySpan>, PgError> {
    let Some(column) = key_column(table) else {
        return Ok(vec![KeySpan::whole()]);
    };
    let pages = table.pages;
    if chunk_pages == 0 || pages <= chunk_pages {
        return Ok(vec![KeySpan::whole()]);
    }
    let step = (chunk_pages / SAMPLES_PER_CHUNK).max(1);
    let per_chunk = (chunk_pages / step).max(1) as usize;
    const RELEASE: &str = "ROLLBACK TO SAVEPOINT inlet_key_plan; RELEASE SAVEPOINT inlet_key_plan";
    // A key of each sampled page: its first live row's, by a TID range scan of that page
    // (`min()` would be planned as a walk of the key's index filtered by ctid, over the whole
    // table for each page).
    let sql = format!(
        "SAVEPOINT inlet_key_plan; SET LOCAL lock_timeout = '{PLAN_LOCK_TIMEOUT}'; \
         SELECT s.b::text FROM generate_series({step}, {last}, {step}) AS p, \
           LATERAL (SELECT {col} AS b FROM {schema}.{name} \
             WHERE ctid >= format('(%s,0)', p)::tid AND ctid < format('(%s,0)', p + 1)::tid \
             LIMIT 1) AS s \
         ORDER BY s.b; {RELEASE}",
        col = quote_ident(column),
        schema = quote_ident(&table.schema.id.schema),
        name = quote_ident(&table.schema.id.name),
        last = pages - 1,
    );
    let what = format!("planning the key ranges of {}", table.schema.id);
    let messages = match client.simple_query(&sql).await {
        Ok(messages) => messages,
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            client
                .batch_execute(RELEASE)
                .await
                .map_err(|e| connector.query_error(&what, &e))?;
            tracing::info!(table = %table.schema.id, "another session holds a lock on the table: it is read as one key range");
            return Ok(vec![KeySpan::whole()]);
        }
        Err(e) => return Err(connector.query_error(&what, &e)),
    };
    let mut samples: Vec<i64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .collect();
    samples.dedup();
    let bounds: Vec<i64> = samples
        .iter()
        .skip(per_chunk.saturating_sub(1))
        .step_by(per_chunk)
        .copied()
        .collect();
    Ok(spans(&bounds))
}

/// The ranges between sorted, distinct `bounds`: below the first, between each two, from the
/// last on. Together they hold every value once.
fn spans(bounds: &[i64]) -> Vec<KeySpan> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut start = None;
    for &b in bounds {
        out.push(KeySpan {
            start,
            end: Some(b),
        });
        start = Some(b);
    }
    out.push(KeySpan { start, end: None });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_recorded_as_text_and_read_back() {
        for span in spans(&[-5, 0, 1 << 40]) {
            assert_eq!(KeySpan::parse(&span.text()), Some(span));
        }
        assert_eq!(
            KeySpan::parse("keys - 10"),
            Some(KeySpan {
                start: None,
                end: Some(10)
            })
        );
        for bad in [
            "keys 1",
            "keys 1 2 3",
            "keys x 2",
            "pages 1 2",
            "keys 1 -1x",
        ] {
            assert_eq!(KeySpan::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_hold_every_value_once() {
        assert_eq!(spans(&[]), vec![KeySpan::whole()]);
        let s = spans(&[10, 20]);
        assert_eq!(
            s,
            vec![
                KeySpan {
                    start: None,
                    end: Some(10)
                },
                KeySpan {
                    start: Some(10),
                    end: Some(20)
                },
                KeySpan {
                    start: Some(20),
                    end: None
                },
            ]
        );
        for v in [i64::MIN, 9, 10, 19, 20, i64::MAX] {
            let holding = s
                .iter()
                .filter(|k| k.start.is_none_or(|a| v >= a) && k.end.is_none_or(|b| v < b))
                .count();
            assert_eq!(holding, 1, "{v}");
        }
    }
}
