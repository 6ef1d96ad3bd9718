//! A MySQL/MariaDB source as `inlet validate` reads it ([`MysqlValidation`], the
//! [`inlet_core::validation`] traits): per round a consistent snapshot and its binlog position;
//! on MariaDB, the hash and row count of each key range of a table, computed by the server over a canonical text of each
//! row ([`canonical_row_sql`]), and the rows of one key range decoded as the full load decodes
//! them ([`RangeSnapshot::read`]), for the ranges whose hashes differ. Both in one consistent
//! snapshot whose binlog position the server reports (MariaDB's `binlog_snapshot_*`; MySQL has
//! no such position without a global read lock, so it is compared row by row).

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use inlet_core::snapshot::SourceError;
use inlet_core::source::TaskSettings;
use inlet_core::validation::{
    discovered, span_filter, KeySpan, RangeHashes, Round, TableHashing, ValidationSource,
};
use inlet_core::Checkpoint;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::binlog::Flavor;
use crate::catalog::{discover, MysqlTable};
use crate::config::{MysqlConnector, MysqlSourceConfig};
use crate::error::MysqlError;
use crate::position::{position_epoch, BinlogPosition};
use crate::snapshot::{BatchLimits, ConsistentSnapshot, MysqlLoadSource};
use crate::types::{quote_ident, MysqlType};
use crate::values::{ColumnBuilder, Origin, ValueError};

/// A MySQL/MariaDB source as `inlet validate` reads it: its selected tables, discovered once,
/// and per round a consistent snapshot, with a second one for range hashes on MariaDB.
pub struct MysqlValidation {
    connector: MysqlConnector,
    tables: Vec<MysqlTable>,
    limits: BatchLimits,
    chunk_mb: u64,
    /// The epoch of the task's positions (its failovers so far), from its checkpoint.
    epoch: u8,
}

impl MysqlValidation {
    /// Connects and discovers the selected tables; `checkpoint`: the task's, whose positions
    /// a round's are compared with.
    pub async fn open(
        source: &MysqlSourceConfig,
        settings: &TaskSettings,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Self, SourceError> {
        let connector = MysqlConnector::new(source)?;
        let mut conn = connector.connect().await?;
        let tables = discover(&mut conn, &connector, &settings.selection, &settings.policy).await?;
        drop(conn);
        Ok(Self {
            connector,
            tables,
            limits: BatchLimits {
                rows: settings.batch_rows,
                bytes: settings.batch_bytes,
            },
            chunk_mb: settings.chunk_mb,
            epoch: checkpoint.map_or(0, |c| position_epoch(c.position)),
        })
    }
}

impl ValidationSource for MysqlValidation {
    type Table = MysqlTable;
    type Load = MysqlLoadSource;
    type Ranges = MysqlRanges;

    fn tables(&self) -> &[MysqlTable] {
        &self.tables
    }

    async fn open_round(&mut self) -> Result<Round<MysqlLoadSource, MysqlRanges>, SourceError> {
        let snapshot = ConsistentSnapshot::open(&self.connector, 1).await?;
        let mut position = snapshot.point.binlog.to_position(self.epoch)?;
        // Range hashes are read in a snapshot of their own, taken after the round's: the task
        // is waited for up to the later of the two.
        let ranges = match RangeSnapshot::open(&self.connector).await? {
            Some(hashing) => {
                position = position.max(hashing.position.to_position(self.epoch)?);
                Ok(MysqlRanges {
                    snapshot: tokio::sync::Mutex::new(hashing),
                    tables: self.tables.clone(),
                    limits: self.limits,
                    chunk_mb: self.chunk_mb,
                })
            }
            None => Err(
                "MySQL reports no binlog position of a consistent snapshot without a global \
                 read lock: range hashes are computed on PostgreSQL and MariaDB"
                    .into(),
            ),
        };
        let load = MysqlLoadSource::new(snapshot, self.tables.clone(), self.chunk_mb, self.limits);
        Ok(Round {
            position,
            load,
            ranges,
        })
    }
}

/// Range hashes and range reads in a round's MariaDB snapshot.
pub struct MysqlRanges {
    /// Statements run one at a time on its one connection.
    snapshot: tokio::sync::Mutex<RangeSnapshot>,
    tables: Vec<MysqlTable>,
    limits: BatchLimits,
    chunk_mb: u64,
}

impl RangeHashes for MysqlRanges {
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
        // The full load's chunks: about chunk_mb of the table's data each.
        let chunks = if self.chunk_mb == 0 {
            1
        } else {
            table.data_bytes.div_ceil(self.chunk_mb << 20).max(1)
        };
        let key = match integer_key_column(table) {
            Some(key) => {
                let bounds = self.snapshot.lock().await.key_bounds(table, &key).await?;
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
        let mut snapshot = self.snapshot.lock().await;
        let mut out = Vec::with_capacity(spans.len());
        for span in spans {
            out.push(
                snapshot
                    .range_hash(table, &hashing.row_sql, key, *span)
                    .await?,
            );
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
        let mut snapshot = self.snapshot.lock().await;
        Ok(snapshot.read(table, key, span, self.limits, visit).await?)
    }
}

/// The SQL expression of a row's canonical text (see the README's "Validate a task"): each
/// column `V<length>:<text>` (its length in characters, so that no text can pass for the next
/// column's) or `N` for NULL, joined by the byte 0x1f, in utf8mb4, where `<text>` is
/// the canonical form of the value as the target holds it (`written`: each column's Arrow type
/// in the target's files). Err names a column the server cannot render in that form.
fn canonical_row_sql(table: &MysqlTable, written: &[DataType]) -> Result<String, String> {
    if written.len() != table.columns.len() {
        return Err("the target's columns are not the source's".into());
    }
    let text = |e: String| format!("CAST({e} AS CHAR CHARACTER SET utf8mb4)");
    let mut parts = Vec::with_capacity(table.columns.len());
    for (c, w) in table.columns.iter().zip(written) {
        let q = quote_ident(&c.name);
        let expr = match (&c.decoder, w) {
            (MysqlType::Bool, DataType::Boolean) => {
                format!("IF({q} IS NULL, NULL, IF({q} <> 0, _utf8mb4't', _utf8mb4'f'))")
            }
            (
                MysqlType::Int { .. } | MysqlType::Year,
                DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Decimal128(_, 0),
            ) => text(q),
            (MysqlType::Decimal { scale, .. }, DataType::Decimal128(_, s)) if scale == s => text(q),
            (
                MysqlType::String { .. } | MysqlType::Json | MysqlType::Enum { .. },
                DataType::Utf8,
            ) => format!("CONVERT({q} USING utf8mb4)"),
            (MysqlType::Text { .. }, DataType::Utf8) => text(q),
            (MysqlType::Binary | MysqlType::FixedBinary { .. }, DataType::Binary) => {
                text(format!("LOWER(HEX({q}))"))
            }
            (MysqlType::Date, DataType::Date32) => text(format!("DATEDIFF({q}, '1970-01-01')")),
            // PostgreSQL's time text: no fraction when it is zero, else its digits without
            // trailing zeros (the portable forms' text, and the canonical form of Time64).
            (MysqlType::Time, DataType::Time64(TimeUnit::Microsecond) | DataType::Utf8) => {
                text(format!(
                    "IF(MICROSECOND({q}) = 0, TIME_FORMAT({q}, '%H:%i:%s'), \
                     TRIM(TRAILING '0' FROM TIME_FORMAT({q}, '%H:%i:%s.%f')))"
                ))
            }
            // Microseconds since the epoch (the session is in UTC), floored to the target's
            // unit as the sink does.
            (MysqlType::DateTime | MysqlType::Timestamp, DataType::Timestamp(unit, _)) => {
                let micros = format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {q})");
                text(match unit {
                    TimeUnit::Microsecond => micros,
                    TimeUnit::Millisecond => format!("FLOOR({micros} / 1000) * 1000"),
                    TimeUnit::Second => format!("FLOOR({micros} / 1000000) * 1000000"),
                    TimeUnit::Nanosecond => {
                        return Err(format!("column {} (nanoseconds)", c.name));
                    }
                })
            }
            (d, w) => {
                return Err(format!(
                    "column {} ({d:?} written as {w}) has no canonical text both sides render \
                     alike",
                    c.name
                ))
            }
        };
        parts.push(format!(
            "COALESCE(CONCAT(_utf8mb4'V', {}, _utf8mb4':', {expr}), _utf8mb4'N')",
            text(format!("CHAR_LENGTH({expr})"))
        ));
    }
    Ok(format!(
        "CONCAT_WS(CHAR(31 USING utf8mb4), {})",
        parts.join(", ")
    ))
}

/// The first key column's name when it is an integer column: key ranges are ranges of its
/// values, which the target side can place rows in too.
fn integer_key_column(table: &MysqlTable) -> Option<String> {
    let c = table.chunk_column()?;
    matches!(c.decoder, MysqlType::Int { .. }).then(|| c.name.clone())
}

/// A connection in a consistent snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT`) with
/// its binlog position: every change it sees is at or before `position`.
struct RangeSnapshot {
    conn: Conn,
    connector: MysqlConnector,
    position: BinlogPosition,
}

impl RangeSnapshot {
    /// Opens the snapshot on MariaDB; None on MySQL, which reports no snapshot position.
    async fn open(connector: &MysqlConnector) -> Result<Option<Self>, MysqlError> {
        let mut conn = connector.connect().await?;
        if Flavor::detect(&mut conn, connector).await? != Flavor::MariaDb {
            return Ok(None);
        }
        for sql in [
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(|e| connector.query_error(sql, &e))?;
        }
        let (file, offset) = crate::snapshot::binlog_snapshot_status(&mut conn, connector).await?;
        Ok(Some(Self {
            conn,
            connector: connector.clone(),
            position: BinlogPosition::new(file, offset),
        }))
    }

    async fn first_row<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        sql: String,
        what: &str,
    ) -> Result<Option<T>, MysqlError> {
        let connector = self.connector.clone();
        let conn = &mut self.conn;
        connector
            .within(what, async {
                conn.query_first(sql)
                    .await
                    .map_err(|e| connector.query_error(what, &e))
            })
            .await
    }

    /// The smallest and largest value of `key`; None for an empty table, or values past i64.
    async fn key_bounds(
        &mut self,
        table: &MysqlTable,
        key: &str,
    ) -> Result<Option<(i64, i64)>, MysqlError> {
        let k = quote_ident(key);
        let sql = format!(
            "SELECT CAST(MIN({k}) AS CHAR), CAST(MAX({k}) AS CHAR) FROM {}",
            from(table)
        );
        let what = format!("key bounds of {}", table.schema.id);
        let row: Option<(Option<String>, Option<String>)> = self.first_row(sql, &what).await?;
        Ok(match row {
            Some((Some(min), Some(max))) => min.parse().ok().zip(max.parse().ok()),
            _ => None,
        })
    }

    /// The row count and hash of the rows of `table` in `span` of `key` (the whole table when
    /// `key` is None): the sum of the first 60 bits of MD5(`row_sql`) over the rows.
    async fn range_hash(
        &mut self,
        table: &MysqlTable,
        row_sql: &str,
        key: Option<&str>,
        span: KeySpan,
    ) -> Result<(u64, u128), MysqlError> {
        let sql = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({row_sql}), 1, 15), 16, 10) \
             AS UNSIGNED)), 0) AS CHAR) FROM {}{}",
            from(table),
            where_clause(key, span)
        );
        let what = format!("hashing a key range of {}", table.schema.id);
        let row: Option<(u64, String)> = self.first_row(sql, &what).await?;
        let (count, sum) = row.unwrap_or((0, "0".into()));
        let sum = sum.parse::<u128>().map_err(|_| MysqlError::Query {
            server: self.connector.server().to_string(),
            what,
            reason: format!("the server answered {sum:?}, not a sum"),
        })?;
        Ok((count, sum))
    }

    /// Reads the rows of `table` in `span` of `key` as the full load decodes them, giving each
    /// record batch to `visit`. Stops at `visit`'s first error, returned as `Ok(Err(_))`.
    async fn read(
        &mut self,
        table: &MysqlTable,
        key: Option<&str>,
        span: KeySpan,
        limits: BatchLimits,
        mut visit: impl FnMut(RecordBatch) -> Result<(), String>,
    ) -> Result<Result<(), String>, MysqlError> {
        let select: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {}{}",
            select.join(", "),
            from(table),
            where_clause(key, span)
        );
        let what = format!("reading a key range of {}", table.schema.id);
        let capacity = limits.rows.min(8192);
        let mut builders: Vec<ColumnBuilder> = table
            .columns
            .iter()
            .map(|c| {
                ColumnBuilder::new(&c.decoder, capacity).with_times_as_text(table.times_as_text)
            })
            .collect();
        let mut rows = 0usize;
        let mut outcome = Ok(());
        let connector = self.connector.clone();
        let mut result = self
            .conn
            // The binary protocol, as the full load reads (its decoders expect it).
            .exec_iter(sql, mysql_async::Params::Empty)
            .await
            .map_err(|e| connector.query_error(&what, &e))?;
        let finish = |builders: &mut Vec<ColumnBuilder>, rows: usize| {
            let arrays = builders.iter_mut().map(ColumnBuilder::finish).collect();
            let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
            RecordBatch::try_new_with_options(table.schema.arrow_schema(), arrays, &options)
                .map_err(|e| MysqlError::Table {
                    table: table.schema.id.clone(),
                    message: format!("building a record batch: {e}"),
                })
        };
        while let Some(row) = connector
            .within(&what, async {
                result
                    .next()
                    .await
                    .map_err(|e| connector.query_error(&what, &e))
            })
            .await?
        {
            for (i, (value, builder)) in
                row.unwrap_raw().iter().zip(builders.iter_mut()).enumerate()
            {
                let value = value.as_ref().unwrap_or(&mysql_async::Value::NULL);
                let policy = table.columns.get(i).map(|c| c.policy).unwrap_or_default();
                builder
                    .append(value, Origin::Snapshot, policy)
                    .map_err(|e| {
                        let (ValueError::Malformed(m) | ValueError::Unrepresentable(m)) = e;
                        MysqlError::Value {
                            table: table.schema.id.clone(),
                            column: table.columns[i].name.clone(),
                            message: m,
                        }
                    })?;
            }
            rows += 1;
            if rows >= limits.rows {
                let batch = finish(&mut builders, rows)?;
                rows = 0;
                if outcome.is_ok() {
                    outcome = visit(batch);
                }
            }
        }
        if rows > 0 && outcome.is_ok() {
            outcome = visit(finish(&mut builders, rows)?);
        }
        Ok(outcome)
    }
}

fn from(table: &MysqlTable) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema.id.schema),
        quote_ident(&table.schema.id.name)
    )
}

fn where_clause(key: Option<&str>, span: KeySpan) -> String {
    span_filter(key, span, quote_ident)
}
