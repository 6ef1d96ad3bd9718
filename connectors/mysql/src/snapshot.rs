//! The consistent full load. Every worker connection holds a `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` taken at one binlog position, so all tables are read as of the same
//! instant and the binlog stream starts exactly there (no gap, no overlap).
//!
//! MariaDB reports the binlog position of each snapshot itself (`binlog_snapshot_file` /
//! `binlog_snapshot_position`): the workers open their snapshots without any lock and, when
//! their positions agree, they saw the same committed transactions. If a commit slipped in
//! between (positions differ) they try again, and after a few tries fall back to what MySQL
//! always does: a brief `FLUSH TABLES WITH READ LOCK` while every worker opens its snapshot and
//! the position is read with `SHOW MASTER STATUS`, then `UNLOCK TABLES`.
//!
//! Tables are read in ranges of their first primary-key column ([`SnapshotReader::plan_chunks`])
//! with the binary protocol, each value appended straight to its column's builder. An integer
//! key is cut arithmetically from its bounds; any other key by walking its order on the server
//! (`ORDER BY key LIMIT 1 OFFSET n`), which reads the index but sends one value per chunk. A
//! range is `key >= start AND key < end` with the server's own comparison on both sides of
//! every bound, so each row falls in exactly one range whatever the type or collation.

use std::sync::Arc;

use arrow_array::RecordBatch;
use inlet_core::held_keys::KeyInterval;
use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable, SourceError};
use inlet_core::{TableId, TableSchema};
use mysql_async::prelude::Queryable;
use mysql_async::{BinaryProtocol, Conn, QueryResult};

use crate::binlog::Flavor;
use crate::catalog::MysqlTable;
use crate::config::MysqlConnector;
use crate::error::MysqlError;
use crate::position::{BinlogPosition, StartFrom};
use crate::types::{quote_ident, MysqlType};
use crate::values::{ColumnBuilder, Origin, ValueError};

/// Where the snapshot sits in the binlog: stream changes from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPoint {
    pub binlog: BinlogPosition,
    /// `gtid_binlog_pos` (MariaDB) or `gtid_executed` (MySQL) at the snapshot, when GTIDs are on.
    pub gtid: Option<String>,
    pub flavor: Flavor,
}

impl SnapshotPoint {
    /// Where a binlog stream continuing this snapshot starts.
    pub fn start(&self) -> StartFrom {
        StartFrom::Position(self.binlog.clone())
    }
}

/// Worker connections inside one consistent snapshot.
pub struct ConsistentSnapshot {
    pub point: SnapshotPoint,
    pub readers: Vec<SnapshotReader>,
}

const START_SNAPSHOT: &str = "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ";
const BEGIN_SNAPSHOT: &str = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

impl ConsistentSnapshot {
    /// Opens `workers` connections (at least one) sharing one snapshot.
    /// Bounded by `source.read_timeout_s` as a whole: its statements are short, but
    /// `FLUSH TABLES WITH READ LOCK` waits for every running statement to end.
    pub async fn open(connector: &MysqlConnector, workers: usize) -> Result<Self, MysqlError> {
        connector
            .within(
                "opening the consistent snapshot",
                Self::open_unbounded(connector, workers),
            )
            .await
    }

    /// Refuses while XA transactions are prepared and not yet committed or rolled back,
    /// checked before the snapshot and again once it is open: such a transaction's rows are not
    /// in the snapshot, and its prepare is before the snapshot's binlog position, where the
    /// stream starts, so its XA COMMIT after the load would bring no rows. (The server cannot
    /// say which tables a prepared transaction changed, so any one refuses.)
    async fn open_unbounded(
        connector: &MysqlConnector,
        workers: usize,
    ) -> Result<Self, MysqlError> {
        let mut conn = connector.connect().await?;
        refuse_prepared_xa(&mut conn, connector).await?;
        let snapshot = Self::open_snapshot(connector, workers).await?;
        refuse_prepared_xa(&mut conn, connector).await?;
        Ok(snapshot)
    }

    async fn open_snapshot(connector: &MysqlConnector, workers: usize) -> Result<Self, MysqlError> {
        let workers = workers.max(1);
        let mut first = connector.connect().await?;
        let flavor = Flavor::detect(&mut first, connector).await?;
        let mut conns = vec![first];
        for _ in 1..workers {
            conns.push(connector.connect().await?);
        }
        if flavor == Flavor::MariaDb {
            for _attempt in 0..5 {
                if let Some(point) = mariadb_snapshots(&mut conns, connector).await? {
                    return Ok(Self::with(conns, point, connector));
                }
                for c in conns.iter_mut() {
                    c.query_drop("ROLLBACK")
                        .await
                        .map_err(|e| connector.query_error("ROLLBACK", &e))?;
                }
            }
        }
        let point = locked_snapshots(&mut conns, connector, flavor).await?;
        Ok(Self::with(conns, point, connector))
    }

    fn with(conns: Vec<Conn>, point: SnapshotPoint, connector: &MysqlConnector) -> Self {
        Self {
            point,
            readers: conns
                .into_iter()
                .map(|conn| SnapshotReader {
                    conn,
                    connector: connector.clone(),
                })
                .collect(),
        }
    }
}

/// Fails naming the XA transactions that are prepared and not yet ended (`XA RECOVER`). A
/// user the server does not let list them gets a warning instead, as before.
async fn refuse_prepared_xa(conn: &mut Conn, connector: &MysqlConnector) -> Result<(), MysqlError> {
    let rows: Vec<mysql_async::Row> = match conn.query("XA RECOVER").await {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(e)) => {
            tracing::warn!(
                error = %format!("ERROR {}: {}", e.code, e.message),
                "cannot list prepared XA transactions (XA RECOVER); an XA transaction prepared \
                 before the snapshot and committed after it would be missing from the target"
            );
            return Ok(());
        }
        Err(e) => return Err(connector.query_error("XA RECOVER", &e)),
    };
    let xids: Vec<String> = rows.iter().map(recovered_xid).collect();
    if xids.is_empty() {
        return Ok(());
    }
    Err(MysqlError::PreparedXa {
        server: connector.server().to_string(),
        xids: xids.join(", "),
    })
}

/// The binlog file and offset of the consistent snapshot `conn` is in (MariaDB's
/// `binlog_snapshot_file`/`_position`).
pub(crate) async fn binlog_snapshot_status(
    conn: &mut Conn,
    connector: &MysqlConnector,
) -> Result<(String, u64), MysqlError> {
    let what = "SHOW STATUS LIKE 'binlog_snapshot_%'";
    let rows: Vec<(String, String)> = conn
        .query(what)
        .await
        .map_err(|e| connector.query_error(what, &e))?;
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
        (Some(file), Some(pos)) => match pos.parse() {
            Ok(offset) => Ok((file, offset)),
            // A wrong offset would start the stream at the wrong place: refused, not guessed.
            Err(_) => Err(MysqlError::Query {
                server: connector.server().to_string(),
                what: what.into(),
                reason: format!("Binlog_snapshot_position is {pos:?}, not an offset"),
            }),
        },
        _ => Err(MysqlError::Query {
            server: connector.server().to_string(),
            what: what.into(),
            reason: "the server reports no binlog snapshot position: is log_bin on?".into(),
        }),
    }
}

/// An `XA RECOVER` row (formatID, gtrid_length, bqual_length, data) as `XA COMMIT` spells the
/// xid: `'gtrid'`, `'gtrid','bqual'`, or with the format id when it is not 1.
fn recovered_xid(row: &mysql_async::Row) -> String {
    let format: i64 = row.get(0).unwrap_or(1);
    let gtrid_len: usize = row.get(1).unwrap_or(0);
    let bqual_len: usize = row.get(2).unwrap_or(0);
    let data: Vec<u8> = row.get(3).unwrap_or_default();
    let part = |from: usize, len: usize| {
        let bytes = data.get(from..from + len).unwrap_or_default();
        format!("'{}'", String::from_utf8_lossy(bytes).replace('\'', "''"))
    };
    let gtrid = part(0, gtrid_len);
    match (bqual_len, format) {
        (0, 1) => gtrid,
        (_, 1) => format!("{gtrid},{}", part(gtrid_len, bqual_len)),
        _ => format!("{gtrid},{},{format}", part(gtrid_len, bqual_len)),
    }
}

/// The size of `file` per `SHOW BINARY LOGS`: None when the list cannot be read, Some(None)
/// when `file` is not in it.
async fn binlog_file_size(conn: &mut Conn, file: &str) -> Option<Option<u64>> {
    let rows: Vec<mysql_async::Row> = match conn.query("SHOW BINARY LOGS").await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %crate::error::describe(&e), "SHOW BINARY LOGS failed");
            return None;
        }
    };
    Some(rows.into_iter().find_map(|r| {
        let name: String = r.get(0)?;
        let size: u64 = r.get(1)?;
        (name == file).then_some(size)
    }))
}

async fn mariadb_snapshots(
    conns: &mut [Conn],
    connector: &MysqlConnector,
) -> Result<Option<SnapshotPoint>, MysqlError> {
    let mut point: Option<BinlogPosition> = None;
    for c in conns.iter_mut() {
        c.query_drop(START_SNAPSHOT)
            .await
            .map_err(|e| connector.query_error("setting REPEATABLE READ", &e))?;
        c.query_drop(BEGIN_SNAPSHOT)
            .await
            .map_err(|e| connector.query_error("START TRANSACTION WITH CONSISTENT SNAPSHOT", &e))?;
        let (file, pos) = binlog_snapshot_status(c, connector).await?;
        let here = BinlogPosition::new(file, pos);
        match &point {
            None => point = Some(here),
            Some(p) if *p != here => return Ok(None),
            Some(_) => {}
        }
    }
    let Some(binlog) = point else {
        return Ok(None);
    };
    if binlog.file.is_empty() {
        return Err(MysqlError::Query {
            server: connector.server().to_string(),
            what: "reading binlog_snapshot_file".into(),
            reason: "empty: the binary log is off; set log_bin in my.cnf and restart".into(),
        });
    }
    // After a rotation that a DDL statement caused, with no commit since, MariaDB 10.11 was
    // seen to report the new file's name with the old file's end offset: a position past the
    // end of the new file (the stream then fails as an impossible position, or reads from
    // the middle of an event once the file has grown). Such a point is not used; the locked
    // snapshot, which reads the position under FLUSH TABLES WITH READ LOCK, is.
    match binlog_file_size(&mut conns[0], &binlog.file).await {
        // Not readable (no privilege for it): the point is used as before.
        None => {}
        Some(Some(size)) if binlog.offset <= size => {}
        Some(Some(size)) => {
            tracing::warn!(file = %binlog.file, offset = binlog.offset, size, "the server's binlog snapshot position is past the end of its file; taking the snapshot under a brief read lock instead");
            return Ok(None);
        }
        Some(None) => {
            tracing::warn!(file = %binlog.file, "the server's binlog snapshot file is not in SHOW BINARY LOGS; taking the snapshot under a brief read lock instead");
            return Ok(None);
        }
    }
    let gtid: Option<String> = conns[0]
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (binlog.file.clone(), binlog.offset),
        )
        .await
        .map_err(|e| connector.query_error("SELECT BINLOG_GTID_POS()", &e))?
        .flatten();
    Ok(Some(SnapshotPoint {
        binlog,
        gtid: gtid.filter(|g| !g.is_empty()),
        flavor: Flavor::MariaDb,
    }))
}

async fn locked_snapshots(
    conns: &mut [Conn],
    connector: &MysqlConnector,
    flavor: Flavor,
) -> Result<SnapshotPoint, MysqlError> {
    let Some((first, rest)) = conns.split_first_mut() else {
        return Err(connector.binlog_error("no snapshot connection"));
    };
    first
        .query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(|e| {
            connector.query_error(
                "FLUSH TABLES WITH READ LOCK (needs the RELOAD privilege)",
                &e,
            )
        })?;
    let result = async {
        for c in std::iter::once(&mut *first).chain(rest.iter_mut()) {
            c.query_drop(START_SNAPSHOT)
                .await
                .map_err(|e| connector.query_error("setting REPEATABLE READ", &e))?;
            c.query_drop(BEGIN_SNAPSHOT).await.map_err(|e| {
                connector.query_error("START TRANSACTION WITH CONSISTENT SNAPSHOT", &e)
            })?;
        }
        let status: Option<mysql_async::Row> = first
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(|e| connector.query_error("SHOW MASTER STATUS", &e))?;
        let Some(row) = status else {
            return Err(MysqlError::Query {
                server: connector.server().to_string(),
                what: "SHOW MASTER STATUS".into(),
                reason: "no binary log: set log_bin in my.cnf and restart the server".into(),
            });
        };
        let (Some(file), Some(pos)) = (row.get::<String, _>(0), row.get::<u64, _>(1)) else {
            return Err(MysqlError::Query {
                server: connector.server().to_string(),
                what: "SHOW MASTER STATUS".into(),
                reason: "the server answered no binlog file and offset".into(),
            });
        };
        let gtid: Option<String> = match flavor {
            Flavor::MariaDb => first
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(|e| connector.query_error("reading gtid_binlog_pos", &e))?,
            Flavor::Mysql => first
                .query_first("SELECT @@GLOBAL.gtid_executed")
                .await
                .ok()
                .flatten(),
        };
        Ok(SnapshotPoint {
            binlog: BinlogPosition::new(file, pos),
            gtid: gtid.filter(|g| !g.trim().is_empty()),
            flavor,
        })
    }
    .await;
    first
        .query_drop("UNLOCK TABLES")
        .await
        .map_err(|e| connector.query_error("UNLOCK TABLES", &e))?;
    result
}

/// A range of a table's first primary-key column, `[start, end)`; None is unbounded.
/// One end of a key range.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyBound {
    /// An integer key value, written into the statement.
    Int(i128),
    /// A key value as the server sent it, bound as a statement parameter.
    Value(mysql_async::Value),
}

/// `start <= key < end`; an open end is None.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    pub start: Option<KeyBound>,
    pub end: Option<KeyBound>,
}

impl KeyRange {
    /// The whole table.
    pub fn whole() -> Self {
        Self {
            start: None,
            end: None,
        }
    }

    /// `keys START END`, each end `-` (open), `iN` (an integer key), or a server value: `vN`,
    /// `uN` (signed, unsigned integer), `bHEX` (bytes); None for a value of another kind.
    pub fn text(&self) -> Option<String> {
        let bound = |b: &Option<KeyBound>| -> Option<String> {
            Some(match b {
                None => "-".into(),
                Some(KeyBound::Int(n)) => format!("i{n}"),
                Some(KeyBound::Value(mysql_async::Value::Int(n))) => format!("v{n}"),
                Some(KeyBound::Value(mysql_async::Value::UInt(n))) => format!("u{n}"),
                Some(KeyBound::Value(mysql_async::Value::Bytes(b))) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    format!("b{hex}")
                }
                Some(KeyBound::Value(_)) => return None,
            })
        };
        Some(format!(
            "keys {} {}",
            bound(&self.start)?,
            bound(&self.end)?
        ))
    }

    /// The range [`KeyRange::text`] wrote.
    pub fn parse(text: &str) -> Option<Self> {
        let bound = |t: &str| -> Option<Option<KeyBound>> {
            if t == "-" {
                return Some(None);
            }
            let (kind, rest) = t.split_at_checked(1)?;
            Some(Some(match kind {
                "i" => KeyBound::Int(rest.parse().ok()?),
                "v" => KeyBound::Value(mysql_async::Value::Int(rest.parse().ok()?)),
                "u" => KeyBound::Value(mysql_async::Value::UInt(rest.parse().ok()?)),
                "b" => {
                    if rest.len() % 2 != 0 {
                        return None;
                    }
                    let bytes = (0..rest.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(rest.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()?;
                    KeyBound::Value(mysql_async::Value::Bytes(bytes))
                }
                _ => return None,
            }))
        };
        let mut parts = text.strip_prefix("keys ")?.split(' ');
        let start = bound(parts.next()?)?;
        let end = bound(parts.next()?)?;
        parts.next().is_none().then_some(KeyRange { start, end })
    }
}

/// Cuts `[min, max]` into ranges of about `chunk_rows` rows, assuming `rows` rows spread evenly;
/// the first and last ranges are open so nothing outside `[min, max]` is missed.
pub fn chunk_ranges(min: i128, max: i128, rows: u64, chunk_rows: u64) -> Vec<KeyRange> {
    let chunks = rows.div_ceil(chunk_rows.max(1)).max(1) as i128;
    let span = max.saturating_sub(min).saturating_add(1).max(1);
    let step = (span / chunks).max(1);
    let mut out = Vec::new();
    let mut start: Option<i128> = None;
    let mut next = min.saturating_add(step);
    while next <= max {
        out.push(KeyRange {
            start: start.map(KeyBound::Int),
            end: Some(KeyBound::Int(next)),
        });
        start = Some(next);
        next = next.saturating_add(step);
    }
    out.push(KeyRange {
        start: start.map(KeyBound::Int),
        end: None,
    });
    out
}

/// Bounds one walk of a key's order may find (a table of 10^5 chunks is read in that many
/// plus one; the last range is open, so nothing is missed if the walk stops early).
const MAX_WALKED_CHUNKS: usize = 100_000;

/// Limits on one record batch: whichever is reached first closes it.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
}

/// A worker connection inside the consistent snapshot.
pub struct SnapshotReader {
    conn: Conn,
    connector: MysqlConnector,
}

impl SnapshotReader {
    /// The key ranges to read `table` in, of about `chunk_rows` rows each, planned from its
    /// first key column as the snapshot sees it. A table without a key is one range.
    pub async fn plan_chunks(
        &mut self,
        table: &MysqlTable,
        chunk_rows: u64,
    ) -> Result<Vec<KeyRange>, MysqlError> {
        let Some(key) = table.chunk_column() else {
            return Ok(vec![KeyRange::whole()]);
        };
        // information_schema's estimate: exact counts would read the whole table first.
        let estimate = table.estimated_rows.filter(|&r| r > 0);
        let col = quote_ident(&key.name);
        let from = qualified(&table.schema.id);
        let what = || format!("key bounds of {}", table.schema.id);
        if matches!(key.decoder, MysqlType::Int { .. }) {
            let sql =
                format!("SELECT CAST(MIN({col}) AS CHAR), CAST(MAX({col}) AS CHAR) FROM {from}");
            let row: Option<(Option<String>, Option<String>)> =
                bounded(&self.connector, &what(), self.conn.query_first(sql)).await?;
            let Some((Some(min), Some(max))) = row else {
                return Ok(vec![KeyRange::whole()]);
            };
            let (Ok(min), Ok(max)) = (min.parse::<i128>(), max.parse::<i128>()) else {
                return Ok(vec![KeyRange::whole()]);
            };
            // Without an estimate, take the keys as dense.
            let rows = estimate.unwrap_or_else(|| {
                u64::try_from(max.saturating_sub(min).saturating_add(1)).unwrap_or(u64::MAX)
            });
            return Ok(chunk_ranges(min, max, rows, chunk_rows));
        }
        if estimate.is_some_and(|r| r <= chunk_rows) || chunk_rows == u64::MAX {
            return Ok(vec![KeyRange::whole()]);
        }
        // Each bound is the key `chunk_rows` rows past the previous one (strictly greater, so
        // a run of equal first-column values cannot stall the walk).
        let mut bounds: Vec<mysql_async::Value> = Vec::new();
        while bounds.len() < MAX_WALKED_CHUNKS {
            let (sql, params) = match bounds.last() {
                None => (
                    format!("SELECT {col} FROM {from} ORDER BY {col} LIMIT 1 OFFSET {chunk_rows}"),
                    mysql_async::Params::Empty,
                ),
                Some(last) => (
                    format!(
                        "SELECT {col} FROM {from} WHERE {col} > ? ORDER BY {col} LIMIT 1 OFFSET {}",
                        chunk_rows.saturating_sub(1)
                    ),
                    mysql_async::Params::Positional(vec![last.clone()]),
                ),
            };
            let next: Option<mysql_async::Row> =
                bounded(&self.connector, &what(), self.conn.exec_first(sql, params)).await?;
            match next.and_then(|mut row| row.take::<mysql_async::Value, _>(0)) {
                Some(mysql_async::Value::NULL) | None => break,
                Some(v) => bounds.push(v),
            }
        }
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut start = None;
        for b in bounds {
            ranges.push(KeyRange {
                start: start.take(),
                end: Some(KeyBound::Value(b.clone())),
            });
            start = Some(KeyBound::Value(b));
        }
        ranges.push(KeyRange { start, end: None });
        Ok(ranges)
    }

    /// When `table` was created (`information_schema.TABLES.CREATE_TIME`, which DROP and
    /// CREATE and a RENAME of another table into the name renew, and TRUNCATE does not); None
    /// when the server does not say.
    pub async fn created_at(&mut self, table: &MysqlTable) -> Result<Option<String>, MysqlError> {
        let what = format!("the creation time of {}", table.schema.id);
        let row: Option<Option<String>> = bounded(
            &self.connector,
            &what,
            self.conn.exec_first(
                "SELECT CAST(CREATE_TIME AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&table.schema.id.schema, &table.schema.id.name),
            ),
        )
        .await?;
        Ok(row.flatten())
    }

    /// Starts reading one range of `table`.
    pub async fn read<'c>(
        &'c mut self,
        table: &'c MysqlTable,
        range: KeyRange,
        limits: BatchLimits,
    ) -> Result<ChunkStream<'c>, MysqlError> {
        let select: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let mut sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            qualified(&table.schema.id)
        );
        let mut params = Vec::new();
        if let Some(key) = table.chunk_column() {
            let col = quote_ident(&key.name);
            let mut conds = Vec::new();
            for (bound, op) in [(range.start, ">="), (range.end, "<")] {
                match bound {
                    Some(KeyBound::Int(v)) => conds.push(format!("{col} {op} {v}")),
                    Some(KeyBound::Value(v)) => {
                        conds.push(format!("{col} {op} ?"));
                        params.push(v);
                    }
                    None => {}
                }
            }
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
        }
        let connector = self.connector.clone();
        let params = match params.is_empty() {
            true => mysql_async::Params::Empty,
            false => mysql_async::Params::Positional(params),
        };
        let result = bounded(
            &connector,
            &format!("reading {}", table.schema.id),
            self.conn.exec_iter(sql, params),
        )
        .await?;
        let capacity = limits.rows.min(8192);
        Ok(ChunkStream {
            table,
            result,
            builders: table
                .columns
                .iter()
                .map(|c| {
                    ColumnBuilder::new(&c.decoder, capacity).with_times_as_text(table.times_as_text)
                })
                .collect(),
            limits,
            rows: 0,
            bytes: 0,
            ended: false,
            connector,
        })
    }
}

/// One round trip to the server, unless it stays silent past `source.read_timeout_s`.
async fn bounded<T>(
    connector: &MysqlConnector,
    what: &str,
    work: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, MysqlError> {
    connector
        .within(what, async {
            work.await.map_err(|e| connector.query_error(what, &e))
        })
        .await
}

fn qualified(id: &TableId) -> String {
    format!("{}.{}", quote_ident(&id.schema), quote_ident(&id.name))
}

/// The record batches of one range, decoded as the server sends the rows.
pub struct ChunkStream<'c> {
    table: &'c MysqlTable,
    result: QueryResult<'c, 'static, BinaryProtocol>,
    builders: Vec<ColumnBuilder>,
    limits: BatchLimits,
    rows: usize,
    bytes: usize,
    ended: bool,
    connector: MysqlConnector,
}

impl ChunkStream<'_> {
    /// The next batch, or None when the range is done.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, MysqlError> {
        while !self.ended && self.rows < self.limits.rows && self.bytes < self.limits.bytes {
            // Bounded per row: a long read goes on as long as rows keep coming.
            let row = bounded(
                &self.connector,
                &format!("reading {}", self.table.schema.id),
                self.result.next(),
            )
            .await?;
            let Some(row) = row else {
                self.ended = true;
                break;
            };
            let values = row.unwrap_raw();
            for (i, (value, builder)) in values.iter().zip(self.builders.iter_mut()).enumerate() {
                let value = value.as_ref().unwrap_or(&mysql_async::Value::NULL);
                self.bytes += match value {
                    mysql_async::Value::Bytes(b) => b.len() + 4,
                    _ => 8,
                };
                let policy = self
                    .table
                    .columns
                    .get(i)
                    .map(|c| c.policy)
                    .unwrap_or_default();
                builder
                    .append(value, Origin::Snapshot, policy)
                    .map_err(|e| snapshot_value_error(self.table, i, e))?;
            }
            self.rows += 1;
        }
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new_with_options(self.table.schema.arrow_schema(), arrays, &options)
            .map(Some)
            .map_err(|e| MysqlError::Table {
                table: self.table.schema.id.clone(),
                message: format!("building a record batch: {e}"),
            })
    }
}

fn snapshot_value_error(table: &MysqlTable, col: usize, e: ValueError) -> MysqlError {
    let column = &table.schema.columns[col];
    let message = match e {
        ValueError::Malformed(m) => format!("cannot decode a {} value: {m}", column.source_type),
        ValueError::Unrepresentable(what) => format!(
            "{what} has no exact {} equivalent; set [values.columns] \"{}\" = \"null\" or \
             \"text\" in the task file \
             (values.on_unrepresentable sets every column) to load it",
            column.data_type(),
            inlet_core::column_key(&table.schema.id, &column.name)
        ),
    };
    MysqlError::Value {
        table: table.schema.id.clone(),
        column: column.name.clone(),
        message,
    }
}

impl From<MysqlError> for SourceError {
    fn from(e: MysqlError) -> Self {
        let transient = e.is_transient();
        let config = matches!(e, MysqlError::Config { .. } | MysqlError::Selection(_));
        let missing = e.is_missing_table();
        let incomplete = e.incomplete_change_table().map(ToString::to_string);
        SourceError::new(transient, e)
            .with_config(config)
            .with_missing_table(missing)
            .with_incomplete_change(incomplete)
    }
}

impl SnapshotTable for MysqlTable {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }
    fn estimated_rows(&self) -> Option<u64> {
        self.estimated_rows
    }
}

/// The full load's view of a consistent snapshot: its tables, cut into primary-key ranges, and
/// its worker connections.
pub struct MysqlLoadSource {
    tables: Arc<Vec<MysqlTable>>,
    readers: Vec<SnapshotReader>,
    chunk_mb: u64,
    limits: BatchLimits,
}

impl MysqlLoadSource {
    /// `chunk_mb`: table megabytes per range, from each table's average row size (0: each
    /// table in one range).
    pub fn new(
        snapshot: ConsistentSnapshot,
        tables: Vec<MysqlTable>,
        chunk_mb: u64,
        limits: BatchLimits,
    ) -> Self {
        Self {
            tables: Arc::new(tables),
            readers: snapshot.readers,
            chunk_mb,
            limits,
        }
    }
}

impl LoadSource for MysqlLoadSource {
    type Table = MysqlTable;
    type Chunk = KeyRange;
    type Reader = MysqlChunkReader;

    fn tables(&self) -> Arc<Vec<MysqlTable>> {
        self.tables.clone()
    }

    /// Planned on the snapshot's first connection, so the ranges are those of the snapshot.
    async fn chunks(&mut self, table: usize) -> Result<Vec<KeyRange>, SourceError> {
        let Some(first) = self.readers.first_mut() else {
            return Err(SourceError::failed(
                "the consistent snapshot opened no connection",
            ));
        };
        let Some(t) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        // Ranges of about chunk_mb of table data, from the table's average row size.
        let avg_row = match (t.estimated_rows, t.data_bytes) {
            (Some(rows), bytes) if rows > 0 && bytes > 0 => (bytes / rows).max(1),
            _ => 100,
        };
        let chunk_rows = if self.chunk_mb == 0 {
            u64::MAX
        } else {
            ((self.chunk_mb << 20) / avg_row).max(10_000)
        };
        Ok(first.plan_chunks(t, chunk_rows).await?)
    }

    fn chunk_text(&self, chunk: &KeyRange) -> Option<String> {
        chunk.text()
    }

    fn parse_chunk(&self, text: &str) -> Option<KeyRange> {
        KeyRange::parse(text)
    }

    /// An integer range of the first key column; a range of another kind of key (text, a
    /// decimal) or bounds past `i64` are not told apart by the stream, so such a table's
    /// interrupted initial load starts over.
    fn chunk_keys(&self, table: usize, chunk: &KeyRange) -> Option<KeyInterval> {
        let schema = &self.tables.get(table)?.schema;
        let column = schema.primary_key.first()?.clone();
        // The stream compares its changes' values of the column: integers only.
        if !schema.column(&column)?.data_type().is_integer() {
            return None;
        }
        let bound = |b: &Option<KeyBound>| -> Option<Option<i64>> {
            match b {
                None => Some(None),
                Some(KeyBound::Int(n)) => i64::try_from(*n).ok().map(Some),
                Some(KeyBound::Value(mysql_async::Value::Int(n))) => Some(Some(*n)),
                Some(KeyBound::Value(mysql_async::Value::UInt(n))) => {
                    i64::try_from(*n).ok().map(Some)
                }
                Some(KeyBound::Value(_)) => None,
            }
        };
        Some(KeyInterval {
            column,
            start: bound(&chunk.start)?,
            end: bound(&chunk.end)?,
        })
    }

    /// Chunks are ranges of the table's first key column: a row is in the same chunk in every
    /// snapshot (unless its key itself changes), so chunks read in different snapshots hold
    /// each row once, each as of its chunk's snapshot. A table without a key is one chunk. The
    /// guard names the table's creation time, so that another table under the name (DROP and
    /// CREATE, a swap by RENAME) starts over instead of keeping the old table's rows. (TRUNCATE
    /// keeps the creation time: a table truncated and filled again between the runs resumes,
    /// each chunk as of its own snapshot.)
    async fn resume_guard(
        &mut self,
        table: usize,
        _recorded: Option<&str>,
    ) -> Result<Option<String>, SourceError> {
        let Some(t) = self.tables.get(table) else {
            return Ok(None);
        };
        let Some(first) = self.readers.first_mut() else {
            return Err(SourceError::failed(
                "the consistent snapshot opened no connection",
            ));
        };
        let created = first.created_at(t).await?.unwrap_or_else(|| "-".into());
        Ok(Some(format!(
            "mysql key ranges of {} created {created}",
            t.schema.id
        )))
    }

    /// The snapshot's connections, up to `workers`; the others are closed.
    async fn readers(&mut self, workers: usize) -> Result<Vec<MysqlChunkReader>, SourceError> {
        let limits = self.limits;
        let take = workers.max(1).min(self.readers.len());
        Ok(self
            .readers
            .drain(..)
            .take(take)
            .map(|reader| MysqlChunkReader { reader, limits })
            .collect())
    }
}

/// A load worker's connection inside the consistent snapshot.
pub struct MysqlChunkReader {
    reader: SnapshotReader,
    limits: BatchLimits,
}

impl ChunkReader for MysqlChunkReader {
    type Table = MysqlTable;
    type Chunk = KeyRange;
    type Batches<'a> = ChunkStream<'a>;

    async fn read<'a>(
        &'a mut self,
        table: &'a MysqlTable,
        range: KeyRange,
    ) -> Result<ChunkStream<'a>, SourceError> {
        Ok(self.reader.read(table, range, self.limits).await?)
    }
}

impl ChunkBatches for ChunkStream<'_> {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        Ok(ChunkStream::next_batch(self).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_recorded_as_text_and_read_back() {
        let ranges = [
            KeyRange::whole(),
            KeyRange {
                start: Some(KeyBound::Int(-5)),
                end: Some(KeyBound::Int(i128::from(u64::MAX) + 1)),
            },
            KeyRange {
                start: Some(KeyBound::Value(mysql_async::Value::Bytes(
                    b"a b\n\xff".to_vec(),
                ))),
                end: Some(KeyBound::Value(mysql_async::Value::Int(-7))),
            },
            KeyRange {
                start: Some(KeyBound::Value(mysql_async::Value::UInt(u64::MAX))),
                end: None,
            },
            KeyRange {
                start: Some(KeyBound::Value(mysql_async::Value::Bytes(Vec::new()))),
                end: None,
            },
        ];
        for r in ranges {
            let text = r.text().unwrap();
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(KeyRange::parse(&text), Some(r), "{text}");
        }
        // A value of another kind is not recorded: the table starts over after a crash.
        let date = KeyRange {
            start: Some(KeyBound::Value(mysql_async::Value::Date(
                2024, 1, 1, 0, 0, 0, 0,
            ))),
            end: None,
        };
        assert_eq!(date.text(), None);
        for bad in [
            "keys -",
            "keys - - -",
            "keys x1 -",
            "keys b0 -",
            "pages 1 2",
        ] {
            assert_eq!(KeyRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_cover_everything() {
        assert_eq!(chunk_ranges(1, 10, 10, 100), vec![KeyRange::whole()]);
        let r = chunk_ranges(1, 100, 100, 25);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            KeyRange {
                start: None,
                end: Some(KeyBound::Int(26))
            }
        );
        assert_eq!(
            r[3],
            KeyRange {
                start: Some(KeyBound::Int(76)),
                end: None
            }
        );
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }
}
