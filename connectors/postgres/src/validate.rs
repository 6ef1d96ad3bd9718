//! A PostgreSQL source as `inlet validate` reads it ([`PgValidation`], the
//! [`inlet_core::validation`] traits): per round an exported snapshot, the position its rows
//! were read at, to know when the task's target has passed it; the hash and row count of each
//! key range of a table, computed by the server over a canonical text of each row
//! ([`canonical_row_sql`]); and the rows of one key range, decoded as the full load decodes
//! them ([`RangeReader::read`]), for the ranges whose hashes differ.
//!
//! Every statement runs in a short transaction of its own that imports the round's exported
//! snapshot, as a full-load chunk does: a lock on the table is held for one range only.

use std::pin::Pin;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use futures::StreamExt;
use inlet_core::snapshot::SourceError;
use inlet_core::source::TaskSettings;
use inlet_core::validation::{
    discovered, span_filter, KeySpan, RangeHashes, Round, TableHashing, ValidationSource,
};
use inlet_core::Position;
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::{discover, SourceTable};
use crate::copy::CopyDecoder;
use crate::error::PgError;
use crate::replication::Lsn;
use crate::snapshot::{BatchLimits, ExportedSnapshot, PgLoadSource};
use crate::types::{quote_ident, Decoder};
use crate::{PgConnector, PostgresSourceConfig};

/// A PostgreSQL source as `inlet validate` reads it: its selected tables, discovered once, and
/// per round an exported snapshot that the full load's readers and the range statements import.
pub struct PgValidation {
    connector: PgConnector,
    tables: Vec<SourceTable>,
    limits: BatchLimits,
    chunk_mb: u64,
    /// Connections hashing ranges at once (`full_load.workers`).
    workers: usize,
}

impl PgValidation {
    /// Connects and discovers the selected tables.
    pub async fn open(
        source: &PostgresSourceConfig,
        settings: &TaskSettings,
    ) -> Result<Self, SourceError> {
        let connector =
            PgConnector::new(source)?.with_publication(source.publication_name(&settings.task));
        let client = connector.connect().await?;
        let tables = discover(&client, &connector, &settings.selection, &settings.policy).await?;
        Ok(Self {
            connector,
            tables,
            limits: BatchLimits {
                rows: settings.batch_rows,
                bytes: settings.batch_bytes,
            },
            chunk_mb: settings.chunk_mb,
            workers: settings.workers.max(1),
        })
    }
}

impl ValidationSource for PgValidation {
    type Table = SourceTable;
    type Load = PgLoadSource;
    type Ranges = PgRanges;

    fn tables(&self) -> &[SourceTable] {
        &self.tables
    }

    async fn open_round(&mut self) -> Result<Round<PgLoadSource, PgRanges>, SourceError> {
        let snapshot = ExportedSnapshot::export(&self.connector).await?;
        let id = snapshot.id().to_string();
        let position = snapshot_position(&snapshot, &self.connector).await?;
        let load = PgLoadSource::new(
            &self.connector,
            snapshot,
            self.tables.clone(),
            self.chunk_mb,
            self.limits,
        )
        .await?;
        let reader = RangeReader::open(&self.connector, &id).await?;
        // md5() hashes the text in the database's encoding, the target side its UTF-8.
        let ranges = if reader.utf8().await? {
            let mut hashers = Vec::new();
            for _ in 1..self.workers {
                hashers.push(RangeReader::open(&self.connector, &id).await?);
            }
            Ok(PgRanges {
                reader,
                hashers,
                tables: self.tables.clone(),
                limits: self.limits,
                chunk_mb: self.chunk_mb,
            })
        } else {
            Err("the database's encoding is not UTF8".into())
        };
        Ok(Round {
            position,
            load,
            ranges,
        })
    }
}

/// Range hashes and range reads in a round's exported snapshot.
pub struct PgRanges {
    reader: RangeReader,
    /// More connections in the snapshot, to hash ranges beside `reader`.
    hashers: Vec<RangeReader>,
    tables: Vec<SourceTable>,
    limits: BatchLimits,
    chunk_mb: u64,
}

impl RangeHashes for PgRanges {
    async fn plan(
        &self,
        t: usize,
        written: &[DataType],
    ) -> Result<Result<TableHashing, String>, SourceError> {
        let table = discovered(&self.tables, t)?;
        let row_sql = match canonical_row_sql(table, written) {
            Ok(sql) => sql,
            Err(why) => return Ok(Err(why)),
        };
        // The full load's chunks: chunk_mb of heap pages each.
        let chunk_pages = (self.chunk_mb << 20) / 8192;
        let chunks = if chunk_pages == 0 {
            1
        } else {
            table.pages.div_ceil(chunk_pages).max(1)
        };
        let key = match integer_key_column(table) {
            Some(key) => {
                let bounds = self.reader.key_bounds(table, &key).await?;
                Some((key, bounds))
            }
            None => None,
        };
        Ok(Ok(TableHashing {
            row_sql,
            key,
            chunks,
        }))
    }

    async fn hashes(
        &self,
        t: usize,
        hashing: &TableHashing,
        key: Option<&str>,
        spans: &[KeySpan],
    ) -> Result<Vec<(u64, u128)>, SourceError> {
        let table = discovered(&self.tables, t)?;
        // The spans dealt out to the connections (`full_load.workers`), as the full load deals
        // out its chunks: each connection's spans one after the other.
        let connections: Vec<&RangeReader> = std::iter::once(&self.reader)
            .chain(self.hashers.iter())
            .collect();
        let n = connections.len();
        let work = connections.iter().enumerate().map(|(c, conn)| async move {
            let mut got = Vec::new();
            for (at, span) in spans.iter().enumerate().skip(c).step_by(n) {
                got.push((
                    at,
                    conn.range_hash(table, &hashing.row_sql, key, *span).await?,
                ));
            }
            Ok::<_, PgError>(got)
        });
        let mut out = vec![(0, 0); spans.len()];
        for got in futures::future::try_join_all(work).await? {
            for (at, sum) in got {
                out[at] = sum;
            }
        }
        Ok(out)
    }

    async fn read<F>(
        &self,
        t: usize,
        key: Option<&str>,
        span: KeySpan,
        visit: F,
    ) -> Result<Result<(), String>, SourceError>
    where
        F: FnMut(RecordBatch) -> Result<(), String> + Send,
    {
        let table = discovered(&self.tables, t)?;
        Ok(self
            .reader
            .read(table, key, span, self.limits, visit)
            .await?)
    }
}

/// A WAL position at or after every commit `snapshot` sees: the WAL insert position, read in
/// the snapshot's own transaction after its snapshot was taken. The insert position, not
/// `pg_current_wal_lsn()` (the write position): with `synchronous_commit = off` a commit the
/// snapshot sees can still sit in WAL buffers, after the write position. On a standby, the
/// furthest WAL it has received or replayed.
async fn snapshot_position(
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

/// `bpchar`'s type oid: its cast to text drops the padding its binary form (what the load
/// reads) keeps, so it is rendered by its output function instead.
const BPCHAR: u32 = 1042;

/// The SQL expression of a row's canonical text (see the README's "Validate a task"): each
/// column `V<length>:<text>` (its length in characters, so that no text can pass for the next
/// column's) or `N` for NULL, joined by the byte 0x1f, where `<text>` is the canonical
/// form of the value as the target holds it (`written`: each column's Arrow type in the
/// target's files). Err names a column whose values the server cannot render in that form
/// (floating point, arrays, types read as anything but these): such a table is compared row
/// by row.
fn canonical_row_sql(table: &SourceTable, written: &[DataType]) -> Result<String, String> {
    if written.len() != table.columns.len() {
        return Err("the target's columns are not the source's".into());
    }
    let mut parts = Vec::with_capacity(table.columns.len());
    for (c, w) in table.columns.iter().zip(written) {
        let q = quote_ident(&c.field.name().clone());
        let plain = c.select == q;
        let expr = match (&c.decoder, w) {
            (Decoder::Bool, DataType::Boolean) => {
                format!("CASE {q} WHEN true THEN 't' WHEN false THEN 'f' END")
            }
            (
                Decoder::Int2 | Decoder::Int4 | Decoder::Int8,
                DataType::Int16 | DataType::Int32 | DataType::Int64,
            ) => format!("{q}::text"),
            // NaN and ±Infinity are written as NULL under the `null` policy (and fail the load
            // under `fail`); a column under `text` is read as text, below.
            (Decoder::Numeric { scale, .. }, DataType::Decimal128(_, s)) if *scale == *s => {
                format!("nullif(nullif(nullif({q}::text, 'NaN'), 'Infinity'), '-Infinity')")
            }
            (Decoder::Text, DataType::Utf8) if plain && c.type_oid == BPCHAR => {
                format!("CASE WHEN {q} IS NULL THEN NULL ELSE format('%s', {q}) END")
            }
            (Decoder::Text, DataType::Utf8) if plain => format!("{q}::text"),
            // Already an expression of type text (a value read as its text).
            (Decoder::Text, DataType::Utf8) => format!("({})", c.select),
            (Decoder::Jsonb, DataType::Utf8) => format!("{q}::text"),
            (Decoder::Bytea, DataType::Binary | DataType::LargeBinary) => {
                format!("encode({q}, 'hex')")
            }
            (Decoder::Uuid, DataType::FixedSizeBinary(16) | DataType::Utf8) => format!("{q}::text"),
            (Decoder::Date, DataType::Date32) => {
                format!("CASE WHEN isfinite({q}) THEN ({q} - DATE '1970-01-01')::text END")
            }
            // PostgreSQL's time text is the target's (portable forms) and the canonical form.
            (Decoder::Time, DataType::Time64(TimeUnit::Microsecond) | DataType::Utf8) => {
                format!("{q}::text")
            }
            (Decoder::Timestamp | Decoder::TimestampTz, DataType::Timestamp(unit, _)) => {
                // Microseconds since the epoch, floored to the target's unit as the sink does.
                let per = match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => {
                        return Err(format!("column {}: nanoseconds", c.field.name()))
                    }
                };
                let scale = 1_000_000 / per;
                format!(
                    "CASE WHEN isfinite({q}) THEN \
                     (floor(extract(epoch FROM {q})::numeric * {per}) * {scale})::bigint::text END"
                )
            }
            (d, w) => {
                return Err(format!(
                "column {} ({d:?} written as {w}) has no canonical text both sides render alike",
                c.field.name()
            ))
            }
        };
        parts.push(format!(
            "coalesce('V' || char_length({expr}) || ':' || {expr}, 'N')"
        ));
    }
    Ok(parts.join(" || E'\\x1f' || "))
}

/// The first key column's name when it is an integer column (smallint, integer, bigint): key
/// ranges are ranges of its values, which the target side can place rows in too.
fn integer_key_column(table: &SourceTable) -> Option<String> {
    let first = table.schema.primary_key.first()?;
    let c = table.columns.iter().find(|c| c.field.name() == first)?;
    matches!(c.decoder, Decoder::Int2 | Decoder::Int4 | Decoder::Int8).then(|| first.clone())
}

/// A connection that runs each statement in a transaction of its own inside a snapshot.
struct RangeReader {
    client: Client,
    connector: PgConnector,
    snapshot: String,
}

impl RangeReader {
    /// Connects for reading in the exported snapshot `snapshot_id`.
    async fn open(connector: &PgConnector, snapshot_id: &str) -> Result<Self, PgError> {
        let client = connector.connect().await?;
        Ok(Self {
            client,
            connector: connector.clone(),
            snapshot: snapshot_id.to_string(),
        })
    }

    async fn begin(&self) -> Result<(), PgError> {
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            self.snapshot.replace('\'', "''")
        );
        self.client.batch_execute(&sql).await.map_err(|e| {
            self.connector
                .query_error("importing the exported snapshot", &e)
        })
    }

    async fn commit(&self) -> Result<(), PgError> {
        self.client.batch_execute("COMMIT").await.map_err(|e| {
            self.connector
                .query_error("ending a range's transaction", &e)
        })
    }

    /// Whether the database's text is UTF-8, as the canonical text is hashed: md5() hashes
    /// the text in the database's encoding.
    async fn utf8(&self) -> Result<bool, PgError> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_encoding') = 'UTF8'", &[])
            .await
            .map_err(|e| self.connector.query_error("reading server_encoding", &e))?;
        Ok(row.get(0))
    }

    /// The smallest and largest value of `key` in the snapshot; None for an empty table.
    async fn key_bounds(
        &self,
        table: &SourceTable,
        key: &str,
    ) -> Result<Option<(i64, i64)>, PgError> {
        let k = quote_ident(key);
        let sql = format!("SELECT min({k})::int8, max({k})::int8 FROM {}", from(table));
        self.begin().await?;
        let row = self
            .client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| {
                self.connector
                    .query_error(&format!("key bounds of {}", table.schema.id), &e)
            })?;
        self.commit().await?;
        let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        Ok(min.zip(max))
    }

    /// The row count and hash of the rows of `table` in `span` of `key` (the whole table when
    /// `key` is None): the sum of the first 60 bits of md5(`row_sql`) over the rows, each span
    /// in a transaction of its own.
    async fn range_hash(
        &self,
        table: &SourceTable,
        row_sql: &str,
        key: Option<&str>,
        span: KeySpan,
    ) -> Result<(u64, u128), PgError> {
        let sql = format!(
            "SELECT count(*), coalesce(sum(('x' || substr(md5({row_sql}), 1, 15))::bit(60)::int8), 0)::text \
             FROM {}{}",
            from(table),
            where_clause(key, span)
        );
        self.begin().await?;
        let row = self
            .client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| {
                self.connector
                    .query_error(&format!("hashing a key range of {}", table.schema.id), &e)
            })?;
        self.commit().await?;
        let count: i64 = row.get(0);
        let sum: String = row.get(1);
        let sum = sum.parse::<u128>().map_err(|_| PgError::Query {
            server: self.connector.server().to_string(),
            what: format!("hashing a key range of {}", table.schema.id),
            reason: format!("the server answered {sum:?}, not a sum"),
            code: None,
            transient: false,
        })?;
        Ok((u64::try_from(count).unwrap_or(0), sum))
    }

    /// Reads the rows of `table` in `span` of `key` as the full load decodes them, giving each
    /// record batch to `visit`, in a transaction of its own. Stops at `visit`'s first error,
    /// returned as `Ok(Err(_))`.
    async fn read(
        &self,
        table: &SourceTable,
        key: Option<&str>,
        span: KeySpan,
        limits: BatchLimits,
        mut visit: impl FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<Result<(), String>, PgError> {
        let select: Vec<&str> = table.columns.iter().map(|c| c.select.as_str()).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            select.join(", "),
            from(table),
            where_clause(key, span)
        );
        let what = || format!("COPY of a key range of {}", table.schema.id);
        self.begin().await?;
        let stream = self
            .client
            .copy_out(sql.as_str())
            .await
            .map_err(|e| self.connector.query_error(&what(), &e))?;
        let mut stream: Pin<Box<CopyOutStream>> = Box::pin(stream);
        let decoders = table.columns.iter().map(|c| c.decoder.clone()).collect();
        let policies = table.columns.iter().map(|c| c.policy).collect();
        let mut decoder = CopyDecoder::new(
            table.schema.arrow_schema(),
            decoders,
            policies,
            limits.rows.min(8192),
        )
        .with_times_as_text(table.times_as_text);
        let protocol = |message: String| PgError::Protocol {
            table: table.schema.id.clone(),
            message,
        };
        let mut outcome = Ok(());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.connector.query_error(&what(), &e))?;
            decoder.feed(&chunk).map_err(|e| {
                let (crate::copy::ValueError::Malformed(m)
                | crate::copy::ValueError::Unrepresentable(m)) = e.error;
                protocol(m)
            })?;
            if decoder.rows() >= limits.rows && outcome.is_ok() {
                let batch = decoder
                    .take_batch()
                    .map_err(|e| protocol(format!("building a record batch: {e}")))?;
                outcome = visit(batch);
            }
        }
        if decoder.leftover() != 0 || !decoder.is_finished() {
            return Err(protocol("the COPY stream ended inside a row".into()));
        }
        if decoder.rows() > 0 && outcome.is_ok() {
            let batch = decoder
                .take_batch()
                .map_err(|e| protocol(format!("building a record batch: {e}")))?;
            outcome = visit(batch);
        }
        drop(stream);
        self.commit().await?;
        Ok(outcome)
    }
}

fn from(table: &SourceTable) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema.id.schema),
        quote_ident(&table.schema.id.name)
    )
}

fn where_clause(key: Option<&str>, span: KeySpan) -> String {
    span_filter(key, span, quote_ident)
}
