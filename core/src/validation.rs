//! What `inlet validate` asks of a source beyond the full load: a consistent snapshot per round
//! with the position it holds every change up to, and, in that snapshot, each table's row count
//! and hash per key range computed by the server, and the rows of given key ranges decoded as the
//! full load decodes them. Each connector crate implements [`ValidationSource`] and [`RangeHashes`].
//! Of a target it asks a table read back as readers see it ([`TableReadBack`], from
//! [`crate::sink::Sink::read_back`]), which each sink crate implements.

use std::future::Future;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, SchemaRef};

use crate::sink::TargetError;
use crate::snapshot::{LoadSource, SourceError};
use crate::source::SourceTable;
use crate::Position;

/// `[start, end)` of a table's integer key column; an open end is None.
pub type KeySpan = (Option<i64>, Option<i64>);

/// A source as `inlet validate` reads it: its selected tables, discovered once, and a new
/// consistent snapshot of them per round of comparison.
pub trait ValidationSource: Send {
    type Table: SourceTable;
    /// The round's snapshot as the full load reads it (chunk by chunk, row by row).
    type Load: LoadSource;
    type Ranges: RangeHashes;

    /// The selected tables (indexes into this list name a table in every round).
    fn tables(&self) -> &[Self::Table];

    /// Opens a new consistent snapshot of every table (the previous round's is closed first).
    fn open_round(
        &mut self,
    ) -> impl Future<Output = Result<Round<Self::Load, Self::Ranges>, SourceError>> + Send;
}

/// One round's consistent snapshot.
pub struct Round<L, R> {
    /// Every change the snapshot holds (its rows, and its range hashes) is at or before it.
    pub position: Position,
    /// The snapshot's tables as the full load reads them.
    pub load: L,
    /// Range hashes and range reads in the snapshot, or why the source has none (every table
    /// is then compared row by row).
    pub ranges: Result<R, String>,
}

/// How the server hashes one table's key ranges ([`RangeHashes::plan`]).
#[derive(Debug, Clone)]
pub struct TableHashing {
    /// The server's expression of a row's canonical text (see the README's "Validate a
    /// task"), given back to [`RangeHashes::hashes`].
    pub row_sql: String,
    /// The integer key column ranges are cut in, with its smallest and largest value in the
    /// snapshot (None: the table is empty). None: the table has no such column.
    pub key: Option<(String, Option<(i64, i64)>)>,
    /// The full load's chunks of the table (ranges are no coarser).
    pub chunks: u64,
}

/// Range hashes and range reads inside a round's snapshot. Table indexes are those of
/// [`ValidationSource::tables`].
pub trait RangeHashes: Send + Sync {
    /// How table `table` is hashed, or why it is compared row by row (Ok(Err(why))).
    /// `written`: its columns' Arrow types as the target holds them, in the source's order.
    fn plan(
        &self,
        table: usize,
        written: &[DataType],
    ) -> impl Future<Output = Result<Result<TableHashing, String>, SourceError>> + Send;

    /// The (row count, sum of 60-bit row hashes) of each of `spans` of `key` (the whole table
    /// when `key` is None), computed by the server.
    fn hashes(
        &self,
        table: usize,
        hashing: &TableHashing,
        key: Option<&str>,
        spans: &[KeySpan],
    ) -> impl Future<Output = Result<Vec<(u64, u128)>, SourceError>> + Send;

    /// Reads the rows of `table` in `span` of `key` (the whole table when `key` is None) as
    /// the full load decodes them, giving each record batch to `visit`. Stops at `visit`'s
    /// first error, returned as Ok(Err(_)).
    fn read<F>(
        &self,
        table: usize,
        key: Option<&str>,
        span: KeySpan,
        visit: F,
    ) -> impl Future<Output = Result<Result<(), String>, SourceError>> + Send
    where
        F: FnMut(RecordBatch) -> Result<(), String> + Send;
}

/// Table `t` of the tables a source discovered for validation.
pub fn discovered<T>(tables: &[T], t: usize) -> Result<&T, SourceError> {
    tables
        .get(t)
        .ok_or_else(|| SourceError::failed(format!("no discovered table {t} (a bug)")))
}

/// The SQL condition ` WHERE k >= start AND k < end` of `span` of `key` (quoted by `quote`,
/// the server's identifier quoting), or nothing for the whole table (`key` None, or a span
/// open at both ends).
pub fn span_filter(key: Option<&str>, span: KeySpan, quote: impl Fn(&str) -> String) -> String {
    let Some(key) = key else {
        return String::new();
    };
    let k = quote(key);
    let mut conds = Vec::new();
    if let Some(s) = span.0 {
        conds.push(format!("{k} >= {s}"));
    }
    if let Some(e) = span.1 {
        conds.push(format!("{k} < {e}"));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// One table of a target read back as its readers see it, for a comparison with the source.
#[async_trait::async_trait]
pub trait TableReadBack: Send + Sync {
    /// The columns as the target holds them (named and typed as its files hold them).
    fn columns(&self) -> SchemaRef;
    /// The key the rows are matched by (names of `columns`); empty: every column, a multiset.
    fn key(&self) -> Vec<String>;
    /// `batch` (a source batch of the table, as the full load reads it) in the form the
    /// target holds it.
    fn written_source_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, TargetError>;
    /// Gives `visit` the table's rows in the order a reader applies them, one batch in memory
    /// at a time. Stops at the first error of `visit`, returned as Ok(Err(_)); Ok(Err(why))
    /// also when the table cannot be read as a state.
    async fn read(
        &mut self,
        visit: &mut (dyn for<'b> FnMut(ReadBackStep<'b>) -> Result<(), String> + Send),
    ) -> Result<Result<(), String>, TargetError>;
}

/// What [`TableReadBack::read`] gives its visitor.
pub enum ReadBackStep<'a> {
    /// The read begins, or begins again (a file was replaced while it was read: forget every
    /// row given so far). `inserts_only`: no batch carries operations. `rows`: how many rows
    /// the read gives, when the target knows.
    Begin {
        inserts_only: bool,
        rows: Option<u64>,
    },
    /// Rows: inserts, or each row's operation (`I`, `U`, `D`, `T`) in `ops` (null: insert).
    Rows {
        batch: &'a RecordBatch,
        ops: Option<&'a StringArray>,
    },
}
