//! `inlet validate`: compares every selected table in the target with the source and reports,
//! per table, the rows compared and the rows missing from the target, extra in it and different,
//! naming the keys of those rows (up to a limit).
//!
//! How (first version, see the README's "Validate a task"):
//! - The source is read through the full load's own chunk readers ([`LoadSource`],
//!   [`ChunkReader`]) in a consistent snapshot, so its rows arrive as the Arrow batches a load
//!   would write, and the sink's own conversion puts them in the form the target holds (uuid
//!   and time as text, milliseconds, Athena names): a value policy is no difference. Each chunk
//!   is its own short transaction, as in the full load.
//! - The target is read as a reader sees it (Parquet: LOAD files, then change files replayed in
//!   name order; Iceberg: the current snapshot's live rows, position deletes applied) into a map
//!   from a 128-bit hash of the row's key to a 64-bit hash of the row and a count. That map is
//!   the memory validation needs (one table at a time); a table larger than `--memory-mb`, by
//!   the source's estimate of its rows, is compared in passes over parts of its key hashes,
//!   each pass reading source and target again.
//! - The source moves while it is read: the snapshot's position is recorded (PostgreSQL
//!   `pg_current_wal_insert_lsn()`, MySQL/MariaDB the binlog position), and the target is read only
//!   once the task's checkpoint has passed it. A key that differs is compared again in a new
//!   snapshot once the target passed that one too (up to [`ROUNDS`] times in all); only a
//!   difference still there in the last round is reported. A task that does not catch up within
//!   `--max-lag-seconds` is reported as such, never as equal.
//! - A table without a key is compared as a multiset of whole rows.
//! - `inlet run` validates a task on a schedule ([`schedule`], `[validate] interval_minutes`),
//!   into the `inlet_validation_*` metrics.
//!
//! Not yet: hashes of key ranges computed by the source server, so that only differing ranges
//! are read (each pass reads the table whole; a recheck reads it again keeping only the
//! differing keys).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use inlet_core::snapshot::{ChunkBatches, ChunkReader, LoadSource, SnapshotTable};
use inlet_core::{within_years, Position, TableSchema, TableSelection, TypeForms, ValuePolicy};
use inlet_sink_iceberg::{IcebergTarget, LiveTable};
use inlet_sink_parquet::ParquetTarget;
use serde::Serialize;

use crate::config::{Mode, SourceConfig, TargetConfig, TaskConfig};
use crate::load_pool::source_error;
use crate::sink::Target;
use crate::state::Metrics;
use crate::JobError;

/// Rounds of comparison in all: the first over every row, the others over the keys that
/// differed in the round before, each in a new snapshot.
pub const ROUNDS: usize = 4;

/// What `inlet validate` was asked.
pub struct ValidateArgs<'a> {
    pub config: &'a Path,
    /// `schema.table` patterns (`*` any run of characters); empty: every selected table.
    pub tables: &'a [String],
    pub json: bool,
    /// How long to wait for the task's checkpoint to pass a snapshot's position.
    pub max_lag: Duration,
    /// How many keys to name per kind of difference and table.
    pub max_keys: usize,
    /// The memory the target's rows of one table may take; a table larger than that (by the
    /// source's estimate of its rows) is compared in passes over parts of its keys.
    pub memory_mb: u64,
    /// Compare every table in this many passes, whatever its size.
    pub passes: Option<u32>,
    /// Show a progress line on stderr when it is a terminal.
    pub progress: bool,
}

/// The memory the comparison takes per target row (its map entry, with the map's growth).
const BYTES_PER_ROW: u64 = 100;

/// Which keys of a table a pass or round compares (by their 128-bit hash).
#[derive(Clone)]
enum Keys {
    All,
    /// The keys whose hash, modulo `of`, is `index`: one pass of a table compared in `of`.
    Part {
        index: u64,
        of: u64,
    },
    /// The keys that differed in the round before; their text is kept for the report.
    Only(Arc<HashSet<u128>>),
}

impl Keys {
    fn part(index: u64, of: u64) -> Self {
        if of <= 1 {
            Self::All
        } else {
            Self::Part { index, of }
        }
    }

    fn keeps(&self, key: u128) -> bool {
        match self {
            Self::All => true,
            Self::Part { index, of } => (key as u64) % of == *index,
            Self::Only(keys) => keys.contains(&key),
        }
    }

    /// Whether target rows keep their key's text (to name extra rows).
    fn names_keys(&self) -> bool {
        matches!(self, Self::Only(_))
    }
}

/// In how many passes a table of `rows` (an estimate) is compared within `memory_mb`.
fn passes_for(rows: Option<u64>, memory_mb: u64) -> u64 {
    let budget = memory_mb.max(1) << 20;
    rows.map_or(1, |r| {
        (r.saturating_mul(BYTES_PER_ROW)).div_ceil(budget).max(1)
    })
}

/// One table's result.
#[derive(Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    /// The key columns compared by (as the target names them); empty: a table without a key,
    /// compared as a multiset of whole rows.
    pub key: Vec<String>,
    pub rows_compared: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub missing_keys: Vec<String>,
    pub extra_keys: Vec<String>,
    pub different_keys: Vec<String>,
    /// Rounds run: 1 when the first found nothing.
    pub rounds: usize,
    /// Why the table was not compared, or what to know about its result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Not compared (see `note`).
    pub skipped: bool,
}

impl TableReport {
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0
    }

    /// The summary line of the table.
    pub fn line(&self) -> String {
        if self.skipped {
            return format!(
                "{}: not compared: {}",
                self.table,
                self.note.as_deref().unwrap_or("")
            );
        }
        let mut s = format!("{}: {} rows compared", self.table, self.rows_compared);
        if !self.differs() {
            s.push_str(", equal");
        } else {
            s.push_str(&format!(
                ", {} missing, {} extra, {} different",
                self.missing, self.extra, self.different
            ));
            let mut named = Vec::new();
            for (what, keys, n) in [
                ("missing", &self.missing_keys, self.missing),
                ("extra", &self.extra_keys, self.extra),
                ("different", &self.different_keys, self.different),
            ] {
                if !keys.is_empty() {
                    let more = if (keys.len() as u64) < n { ", …" } else { "" };
                    named.push(format!("{what}: {}{more}", keys.join("; ")));
                }
            }
            if !named.is_empty() {
                s.push_str(&format!(" [{}]", named.join(" | ")));
            }
        }
        if self.key.is_empty() {
            s.push_str(" (no key: compared as a multiset of whole rows)");
        }
        if let Some(note) = &self.note {
            s.push_str(&format!(" ({note})"));
        }
        s
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    task: &'a str,
    equal: bool,
    tables: &'a [TableReport],
}

/// Runs the validation and prints its report; Ok(true) when every table is equal.
pub async fn run(args: &ValidateArgs<'_>) -> Result<bool, JobError> {
    let config = crate::config::load(args.config).map_err(JobError::config)?;
    let reports = validate(&config, args).await?;
    let equal = reports.iter().all(|r| !r.differs() && !r.skipped);
    if args.json {
        let json = serde_json::to_string_pretty(&JsonReport {
            task: &config.task.name,
            equal,
            tables: &reports,
        })
        .map_err(JobError::failed)?;
        println!("{json}");
    } else {
        for r in &reports {
            println!("{}", r.line());
        }
        let differ = reports.iter().filter(|r| r.differs()).count();
        let skipped = reports.iter().filter(|r| r.skipped).count();
        let tables = match reports.len() {
            1 => "1 table".to_string(),
            n => format!("{n} tables"),
        };
        if equal {
            println!("{tables} compared: the target equals the source");
        } else {
            println!(
                "{tables} compared: {differ} differ{}",
                if skipped > 0 {
                    format!(", {skipped} not compared")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(equal)
}

/// `inlet run`'s validation of one task on a schedule (`[validate] interval_minutes`): every
/// interval, counted from the end of the previous validation, until `stopped` turns true, in
/// the daemon that holds the task's lease at that time (every daemon, when the target keeps no
/// lease). Each result goes to the `inlet_validation_*` metrics and the log (a difference as a
/// warning).
pub async fn schedule(
    config: TaskConfig,
    metrics: Arc<Metrics>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let settings = &config.validate;
    let every = Duration::from_secs_f64(settings.interval_minutes * 60.0);
    let task = config.task.name.clone();
    let no_tables: [String; 0] = [];
    let args = ValidateArgs {
        config: Path::new(""),
        tables: &no_tables,
        json: false,
        max_lag: Duration::from_secs(settings.max_lag_seconds),
        max_keys: 20,
        memory_mb: settings.memory_mb,
        passes: None,
        progress: false,
    };
    // A target that keeps a lease is validated only by the daemon holding the task's lease,
    // so that a fleet whose daemons all have the task file validates it once per interval,
    // not once per daemon (each validation loads the source).
    let leased = Target::new(&config.target, &task)
        .ok()
        .and_then(|t| t.lease_store(&task))
        .is_some();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.changed() => {}
        }
        if *stopped.borrow() {
            return;
        }
        if leased && !holds_lease(&task) {
            tracing::debug!(task = %task, "validation skipped: another daemon owns the task");
            continue;
        }
        let started = Instant::now();
        match validate(&config, &args).await {
            Ok(reports) => {
                let tables: Vec<(String, u64, u64, u64, u64)> = reports
                    .iter()
                    .map(|r| {
                        (
                            r.table.clone(),
                            r.rows_compared,
                            r.missing,
                            r.extra,
                            r.different,
                        )
                    })
                    .collect();
                let equal = reports.iter().all(|r| !r.differs() && !r.skipped);
                let result = if equal { "equal" } else { "different" };
                metrics.record_validation(&task, &tables, result, started.elapsed().as_secs_f64());
                for r in &reports {
                    if r.differs() || r.skipped {
                        tracing::warn!(task = %task, "validation: {}", r.line());
                    } else {
                        tracing::info!(task = %task, "validation: {}", r.line());
                    }
                }
            }
            Err(e) => {
                metrics.record_validation(&task, &[], "failed", started.elapsed().as_secs_f64());
                tracing::warn!(task = %task, "validation did not finish: {}", e.message());
            }
        }
    }
}

/// Whether this daemon holds `task`'s lease now (and may still write it).
fn holds_lease(task: &str) -> bool {
    crate::lease::fence_of(task).is_some_and(|fence| fence.lost().is_none())
}

/// Validates every selected table matching `args.tables`.
pub async fn validate(
    config: &TaskConfig,
    args: &ValidateArgs<'_>,
) -> Result<Vec<TableReport>, JobError> {
    let selection = TableSelection::new(&config.tables).map_err(JobError::config)?;
    let task = config.task.name.as_str();
    let policy = config.values.policy();
    let checkpoints = Target::new(&config.target, task)?;
    let reader = TargetReader::new(config)?;
    let mut source = SourceSide::open(config, &selection, &policy).await?;
    let ids: Vec<String> = source.table_ids();
    let chosen: Vec<usize> = (0..ids.len())
        .filter(|&i| args.tables.is_empty() || args.tables.iter().any(|p| glob(p, &ids[i])))
        .collect();
    if chosen.is_empty() {
        return Err(JobError::Config(if args.tables.is_empty() {
            "no table matches [tables] include/exclude; run `inlet check` to see what the \
             source has"
                .into()
        } else {
            format!(
                "no selected table matches {}; the task selects {}",
                args.tables.join(", "),
                ids.join(", ")
            )
        }));
    }
    let follows = config.task.mode != Mode::FullLoad;
    let years = match &config.target {
        TargetConfig::Parquet(c) => c.types,
        TargetConfig::Iceberg(c) => c.types,
    } == TypeForms::Portable;
    let ctx = Context {
        reader: &reader,
        policy: years.then_some(&policy),
        max_keys: args.max_keys,
        progress: args.progress && std::io::stderr().is_terminal(),
        memory_mb: args.memory_mb,
    };

    // Round 1 compares every row, a large table in passes over parts of its keys, each in a
    // snapshot of its own; the later rounds only the keys that differed in the round before.
    let passes: Vec<u64> = chosen
        .iter()
        .map(|&t| match args.passes {
            Some(p) => u64::from(p.max(1)),
            None => passes_for(source.estimated_rows(t), args.memory_mb),
        })
        .collect();
    let mut reports: Vec<TableReport> = (0..chosen.len()).map(|_| TableReport::default()).collect();
    let mut differing: Vec<HashSet<u128>> = vec![HashSet::new(); chosen.len()];
    let mut differing_source_rows: Vec<u64> = vec![0; chosen.len()];
    for pass in 0..passes.iter().copied().max().unwrap_or(1) {
        let todo: Vec<usize> = (0..chosen.len())
            .filter(|&i| pass < passes[i] && !reports[i].skipped)
            .collect();
        if todo.is_empty() {
            continue;
        }
        let keys: Vec<Keys> = todo.iter().map(|&i| Keys::part(pass, passes[i])).collect();
        let results = round(
            &mut source,
            &checkpoints,
            task,
            follows,
            args,
            &ctx,
            &chosen,
            &todo,
            &keys,
        )
        .await?;
        for (result, &i) in results.into_iter().zip(&todo) {
            merge(&mut reports[i], result.report, args.max_keys);
            reports[i].rows_compared += result.source_rows;
            differing[i].extend(result.differing);
            differing_source_rows[i] += result.differing_source_rows;
        }
    }
    for (i, r) in reports.iter_mut().enumerate() {
        r.rounds = 1;
        if passes[i] > 1 {
            r.note = Some(format!(
                "compared in {} passes over parts of its keys",
                passes[i]
            ));
        }
    }
    // Rechecks: each once the task has passed a new snapshot's position. A task that follows
    // no change stream is read once more, only to name its differing keys.
    let rounds = if follows { ROUNDS } else { 2 };
    for round_number in 2..=rounds {
        let todo: Vec<usize> = (0..chosen.len())
            .filter(|&i| reports[i].differs() && !reports[i].skipped)
            .collect();
        if todo.is_empty() {
            break;
        }
        let keys: Vec<Keys> = todo
            .iter()
            .map(|&i| Keys::Only(Arc::new(std::mem::take(&mut differing[i]))))
            .collect();
        let results = round(
            &mut source,
            &checkpoints,
            task,
            follows,
            args,
            &ctx,
            &chosen,
            &todo,
            &keys,
        )
        .await?;
        for (result, &i) in results.into_iter().zip(&todo) {
            let was = std::mem::take(&mut reports[i]);
            let note = result.report.note.clone().or(was.note);
            reports[i] = TableReport {
                rows_compared: was.rows_compared.saturating_sub(differing_source_rows[i])
                    + result.source_rows,
                rounds: round_number,
                note,
                ..result.report
            };
            differing[i] = result.differing;
            differing_source_rows[i] = result.differing_source_rows;
        }
    }
    for r in &mut reports {
        if r.differs() && follows {
            let note = format!(
                "still different after {} rounds, each once the task had passed the source \
                 position the rows were read at",
                r.rounds
            );
            r.note = Some(match r.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        } else if r.differs() {
            r.note =
                Some("the task is a full load: the source may have changed since it ran".into());
        }
    }
    Ok(reports)
}

/// One snapshot: its position recorded, the task waited for (when it follows changes), and
/// tables `todo` (indexes into `chosen`) compared, each over its `keys`.
#[allow(clippy::too_many_arguments)]
async fn round(
    source: &mut SourceSide,
    checkpoints: &Target,
    task: &str,
    follows: bool,
    args: &ValidateArgs<'_>,
    ctx: &Context<'_>,
    chosen: &[usize],
    todo: &[usize],
    keys: &[Keys],
) -> Result<Vec<RoundResult>, JobError> {
    let position = source.open_round().await?;
    if follows {
        wait_for_target(checkpoints, task, position, args.max_lag).await?;
    }
    let which: Vec<usize> = todo.iter().map(|&i| chosen[i]).collect();
    source.compare(ctx, &which, keys).await
}

/// Adds one pass's result of a table to its report.
fn merge(into: &mut TableReport, pass: TableReport, max_keys: usize) {
    into.table = pass.table;
    into.key = pass.key;
    into.missing += pass.missing;
    into.extra += pass.extra;
    into.different += pass.different;
    for (to, from) in [
        (&mut into.missing_keys, pass.missing_keys),
        (&mut into.extra_keys, pass.extra_keys),
        (&mut into.different_keys, pass.different_keys),
    ] {
        let room = max_keys.saturating_sub(to.len());
        to.extend(from.into_iter().take(room));
    }
    if pass.skipped {
        into.skipped = true;
        into.note = pass.note;
    }
}

/// Waits until the task's checkpoint is at or past `position`.
async fn wait_for_target(
    target: &Target,
    task: &str,
    position: Position,
    max_lag: Duration,
) -> Result<(), JobError> {
    let started = Instant::now();
    loop {
        let at = target.read_checkpoint(task).await?.map(|c| c.position);
        if at.is_some_and(|p| p >= position) {
            return Ok(());
        }
        if started.elapsed() >= max_lag {
            let at = at.map_or("none".to_string(), |p| p.to_string());
            return Err(JobError::Failed(format!(
                "task {task} has not caught up with the source: its checkpoint ({}) is at \
                 position {at}, the source was read at {position}, and the task did not pass it \
                 within {} s; nothing was found equal or different. Start the task (`inlet run`) \
                 or wait for it to catch up, or raise --max-lag-seconds",
                target.checkpoint_location(task),
                max_lag.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `*` matches any run of characters, `?` one; the rest matches itself, case-sensitively.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// What a round of one table gave.
#[derive(Default)]
struct RoundResult {
    report: TableReport,
    source_rows: u64,
    /// The keys that differ (hashes), for the next round.
    differing: HashSet<u128>,
    /// The source rows among `differing`: a recheck reads them again, so they are replaced
    /// in `rows_compared` by what the recheck read (a table that read empty to a round's
    /// snapshot, as one truncated and refilled after it does, is counted as the recheck finds it).
    differing_source_rows: u64,
}

struct Context<'a> {
    reader: &'a TargetReader,
    /// The value policy dates outside years 1–9999 follow (the portable forms), as the load
    /// applies it before the sink.
    policy: Option<&'a ValuePolicy>,
    max_keys: usize,
    progress: bool,
    /// `--memory-mb`: the most rows a table's map is sized for up front.
    memory_mb: u64,
}

/// The target, opened for reading tables back.
enum TargetReader {
    Parquet(ParquetTarget),
    Iceberg(IcebergTarget),
}

impl TargetReader {
    fn new(config: &TaskConfig) -> Result<Self, JobError> {
        Ok(match &config.target {
            TargetConfig::Parquet(c) => {
                Self::Parquet(ParquetTarget::new(c).map_err(JobError::config)?)
            }
            TargetConfig::Iceberg(c) => {
                Self::Iceberg(IcebergTarget::new(c, &config.task.name).map_err(JobError::config)?)
            }
        })
    }
}

/// The source, PostgreSQL or MySQL/MariaDB, with its tables discovered once.
// One value per run: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum SourceSide {
    Postgres {
        connector: inlet_postgres::PgConnector,
        tables: Vec<inlet_postgres::SourceTable>,
        limits: inlet_postgres::BatchLimits,
        chunk_mb: u64,
        round: Option<inlet_postgres::PgLoadSource>,
    },
    Mysql {
        connector: inlet_mysql::MysqlConnector,
        tables: Vec<inlet_mysql::MysqlTable>,
        limits: inlet_mysql::BatchLimits,
        chunk_mb: u64,
        /// The epoch of the task's positions (its failovers so far), from its checkpoint.
        epoch: u8,
        round: Option<inlet_mysql::MysqlLoadSource>,
    },
}

impl SourceSide {
    async fn open(
        config: &TaskConfig,
        selection: &TableSelection,
        policy: &ValuePolicy,
    ) -> Result<Self, JobError> {
        let fl = &config.full_load;
        match &config.source {
            SourceConfig::Postgres(source) => {
                let connector = inlet_postgres::PgConnector::new(source)
                    .map_err(JobError::config)?
                    .with_publication(source.publication_name(&config.task.name));
                let client = connector.connect().await.map_err(JobError::source)?;
                let tables = inlet_postgres::discover(&client, &connector, selection, policy)
                    .await
                    .map_err(JobError::source)?;
                Ok(Self::Postgres {
                    connector,
                    tables,
                    limits: inlet_postgres::BatchLimits {
                        rows: fl.batch_rows,
                        bytes: fl.batch_mb << 20,
                    },
                    chunk_mb: fl.chunk_mb,
                    round: None,
                })
            }
            SourceConfig::Mysql(source) => {
                let connector =
                    inlet_mysql::MysqlConnector::new(source).map_err(JobError::config)?;
                let mut conn = connector
                    .connect()
                    .await
                    .map_err(crate::mysql_task::mysql_error)?;
                let tables = inlet_mysql::discover(&mut conn, &connector, selection, policy)
                    .await
                    .map_err(crate::mysql_task::mysql_error)?;
                drop(conn);
                let target = Target::new(&config.target, &config.task.name)?;
                let epoch = target
                    .read_checkpoint(&config.task.name)
                    .await?
                    .map_or(0, |c| inlet_mysql::position_epoch(c.position));
                Ok(Self::Mysql {
                    connector,
                    tables,
                    limits: inlet_mysql::BatchLimits {
                        rows: fl.batch_rows,
                        bytes: fl.batch_mb << 20,
                    },
                    chunk_mb: fl.chunk_mb,
                    epoch,
                    round: None,
                })
            }
        }
    }

    /// The server's estimate of table `i`'s rows.
    fn estimated_rows(&self, i: usize) -> Option<u64> {
        match self {
            Self::Postgres { tables, .. } => tables.get(i).and_then(|t| t.estimated_rows),
            Self::Mysql { tables, .. } => tables.get(i).and_then(|t| t.estimated_rows),
        }
    }

    fn table_ids(&self) -> Vec<String> {
        match self {
            Self::Postgres { tables, .. } => {
                tables.iter().map(|t| t.schema.id.to_string()).collect()
            }
            Self::Mysql { tables, .. } => tables.iter().map(|t| t.schema.id.to_string()).collect(),
        }
    }

    /// Opens a new consistent snapshot of every table and returns its source position: every
    /// change the snapshot holds is at or before it.
    async fn open_round(&mut self) -> Result<Position, JobError> {
        match self {
            Self::Postgres {
                connector,
                tables,
                limits,
                chunk_mb,
                round,
            } => {
                *round = None;
                let snapshot = inlet_postgres::ExportedSnapshot::export(connector)
                    .await
                    .map_err(JobError::source)?;
                let position = inlet_postgres::snapshot_position(&snapshot, connector)
                    .await
                    .map_err(JobError::source)?;
                let source = inlet_postgres::PgLoadSource::new(
                    connector,
                    snapshot,
                    tables.clone(),
                    *chunk_mb,
                    *limits,
                )
                .await
                .map_err(JobError::source)?;
                *round = Some(source);
                Ok(position)
            }
            Self::Mysql {
                connector,
                tables,
                limits,
                chunk_mb,
                epoch,
                round,
            } => {
                *round = None;
                let snapshot = inlet_mysql::ConsistentSnapshot::open(connector, 1)
                    .await
                    .map_err(crate::mysql_task::mysql_error)?;
                let position = snapshot
                    .point
                    .binlog
                    .to_position(*epoch)
                    .map_err(crate::mysql_task::mysql_error)?;
                *round = Some(inlet_mysql::MysqlLoadSource::new(
                    snapshot,
                    tables.clone(),
                    *chunk_mb,
                    *limits,
                ));
                Ok(position)
            }
        }
    }

    /// Compares tables `which` (indexes into the discovered tables) in the open snapshot,
    /// each restricted to its suspects when it has some.
    async fn compare(
        &mut self,
        ctx: &Context<'_>,
        which: &[usize],
        keys: &[Keys],
    ) -> Result<Vec<RoundResult>, JobError> {
        match self {
            Self::Postgres { round, .. } => {
                let source = round
                    .take()
                    .ok_or_else(|| JobError::Failed("no snapshot is open (a bug)".into()))?;
                compare_in(source, ctx, which, keys).await
            }
            Self::Mysql { round, .. } => {
                let source = round
                    .take()
                    .ok_or_else(|| JobError::Failed("no snapshot is open (a bug)".into()))?;
                compare_in(source, ctx, which, keys).await
            }
        }
    }
}

/// Compares tables `which` of `source`'s snapshot with the target, one table at a time: the
/// target's rows into a map, then the source's chunks streamed against it.
async fn compare_in<S: LoadSource>(
    mut source: S,
    ctx: &Context<'_>,
    which: &[usize],
    keys: &[Keys],
) -> Result<Vec<RoundResult>, JobError> {
    let tables = source.tables();
    // Planned before the readers are taken: a source may plan on a reader's connection
    // (MySQL's key ranges, read in the snapshot).
    let mut planned = Vec::with_capacity(which.len());
    for &t in which {
        planned.push(source.chunks(t).await.map_err(source_error)?);
    }
    let mut readers = source.readers(1).await.map_err(source_error)?;
    let Some(mut reader) = readers.pop() else {
        return Err(JobError::Failed(
            "the source opened no reader in its snapshot".into(),
        ));
    };
    let mut results = Vec::with_capacity(which.len());
    for ((&t, only), chunks) in which.iter().zip(keys).zip(planned) {
        let Some(table) = tables.get(t) else {
            results.push(RoundResult::default());
            continue;
        };
        let schema = table.schema().clone();
        let mut plan = match TablePlan::new(ctx, &schema).await? {
            Ok(plan) => plan,
            Err(why) => {
                results.push(RoundResult {
                    report: TableReport {
                        table: schema.id.to_string(),
                        skipped: true,
                        note: Some(why),
                        ..TableReport::default()
                    },
                    ..RoundResult::default()
                });
                continue;
            }
        };
        let estimate = table.estimated_rows();
        let mut state = match plan.read_target(ctx, only, estimate).await? {
            Ok(state) => state,
            Err(why) => {
                results.push(RoundResult {
                    report: TableReport {
                        table: schema.id.to_string(),
                        key: plan.key_names.clone(),
                        skipped: true,
                        note: Some(why),
                        ..TableReport::default()
                    },
                    ..RoundResult::default()
                });
                continue;
            }
        };
        let mut tally = Tally::new(ctx.max_keys);
        let started = Instant::now();
        let mut shown = Instant::now();
        for chunk in chunks {
            let mut batches = reader.read(table, chunk).await.map_err(source_error)?;
            while let Some(batch) = batches.next_batch().await.map_err(source_error)? {
                plan.compare_source(ctx, &batch, &mut state, only, &mut tally)?;
                if ctx.progress && shown.elapsed() > Duration::from_millis(500) {
                    shown = Instant::now();
                    eprint!(
                        "\r{}: {} rows compared ({:.0} s)\x1b[K",
                        schema.id,
                        tally.source_rows,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            drop(batches);
            reader.finish_chunk().await.map_err(source_error)?;
        }
        if ctx.progress {
            eprint!("\r\x1b[K");
        }
        tally.extras(&state);
        results.push(RoundResult {
            report: TableReport {
                table: schema.id.to_string(),
                key: plan.key_names.clone(),
                rows_compared: tally.source_rows,
                missing: tally.missing,
                extra: tally.extra,
                different: tally.different,
                missing_keys: tally.missing_keys,
                extra_keys: tally.extra_keys,
                different_keys: tally.different_keys,
                ..TableReport::default()
            },
            source_rows: tally.source_rows,
            differing: tally.differing,
            differing_source_rows: tally.differing_source_rows,
        });
    }
    drop(reader);
    drop(source);
    Ok(results)
}

/// The target's rows of one table: key hash → (row hash, copies left to match), and, when the
/// round is restricted to suspects, the key as text.
struct TargetRows {
    rows: HashMap<u128, Entry>,
    keys: HashMap<u128, String>,
}

#[derive(Clone, Copy)]
struct Entry {
    row: u64,
    count: u32,
    /// Source rows read with this key, matched or not: a recheck of the key reads them again.
    source_rows: u32,
}

/// Counts and names of one table's differences in one round.
struct Tally {
    max_keys: usize,
    source_rows: u64,
    missing: u64,
    extra: u64,
    different: u64,
    missing_keys: Vec<String>,
    extra_keys: Vec<String>,
    different_keys: Vec<String>,
    differing: HashSet<u128>,
    differing_source_rows: u64,
}

impl Tally {
    fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            source_rows: 0,
            missing: 0,
            extra: 0,
            different: 0,
            missing_keys: Vec::new(),
            extra_keys: Vec::new(),
            different_keys: Vec::new(),
            differing: HashSet::new(),
            differing_source_rows: 0,
        }
    }

    /// Every target row no source row matched is extra.
    fn extras(&mut self, state: &TargetRows) {
        let mut extra: Vec<(u128, u32)> = state
            .rows
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(k, e)| (*k, e.count))
            .collect();
        extra.sort_unstable();
        for (k, count) in extra {
            self.extra += u64::from(count);
            self.differing.insert(k);
            if self.extra_keys.len() < self.max_keys {
                if let Some(text) = state.keys.get(&k) {
                    self.extra_keys.push(text.clone());
                }
            }
        }
        self.differing_source_rows = self
            .differing
            .iter()
            .filter_map(|k| state.rows.get(k))
            .map(|e| u64::from(e.source_rows))
            .sum();
    }
}

/// How one table is compared: its columns in the target's form, its key, and the encoders.
struct TablePlan {
    source: TableSchema,
    /// The columns compared, named and typed as the target's files hold them.
    columns: SchemaRef,
    /// Indexes into `columns` of the key; all columns for a table without a key.
    key: Vec<usize>,
    key_names: Vec<String>,
    rows: RowConverter,
    keys: RowConverter,
    live: Option<LiveTable>,
}

impl TablePlan {
    /// The plan, or the reason the table cannot be compared.
    async fn new(
        ctx: &Context<'_>,
        source: &TableSchema,
    ) -> Result<Result<Self, String>, JobError> {
        let (columns, key_names, live) = match ctx.reader {
            TargetReader::Parquet(p) => {
                if !p.keeps_every_operation() {
                    return Ok(Err(
                        "its change files keep inserts only or inserts and updates \
                         (cdc_inserts_only / cdc_inserts_and_updates): they are a log that does \
                         not replay to the table's rows"
                            .into(),
                    ));
                }
                let written = p.written_form(source);
                (written.arrow_schema(), written.primary_key.clone(), None)
            }
            TargetReader::Iceberg(i) => match i.live_table(source).await.map_err(target_error)? {
                None => {
                    let written = source.clone();
                    (written.arrow_schema(), written.primary_key.clone(), None)
                }
                Some(live) => {
                    if live.key.is_empty() {
                        return Ok(Err(
                            "a table without a key is written to Iceberg as an append-only \
                             change log, which validate does not replay yet"
                                .into(),
                        ));
                    }
                    (live.file_schema.clone(), live.key.clone(), Some(live))
                }
            },
        };
        Ok(Self::build(source, columns, key_names, live))
    }

    /// The plan of `source` compared over `columns` (the target's form) by `key_names` (empty:
    /// every column, a multiset), or why the table cannot be compared.
    fn build(
        source: &TableSchema,
        columns: SchemaRef,
        key_names: Vec<String>,
        live: Option<LiveTable>,
    ) -> Result<Self, String> {
        let key: Vec<usize> = if key_names.is_empty() {
            (0..columns.fields().len()).collect()
        } else {
            let mut key = Vec::new();
            for k in &key_names {
                match columns.index_of(k) {
                    Ok(i) => key.push(i),
                    Err(_) => {
                        return Err(format!(
                            "key column {k} is not a column of the target table"
                        ))
                    }
                }
            }
            key
        };
        let field = |i: usize| SortField::new(columns.field(i).data_type().clone());
        let rows = RowConverter::new((0..columns.fields().len()).map(field).collect());
        let keys = RowConverter::new(key.iter().map(|&i| field(i)).collect());
        let (rows, keys) = match (rows, keys) {
            (Ok(r), Ok(k)) => (r, k),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!("its column types cannot be compared: {e}"))
            }
        };
        Ok(Self {
            source: source.clone(),
            columns,
            key,
            key_names,
            rows,
            keys,
            live,
        })
    }

    /// `batch`'s columns in the plan's order and types: cast where a file holds another type
    /// (Iceberg widens a smallint), NULL where it lacks the column (added since it was written).
    fn conform(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, String> {
        self.columns
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                Some(a) if a.data_type() == f.data_type() => Ok(a.clone()),
                Some(a) => arrow_cast::cast(a, f.data_type())
                    .map_err(|e| format!("column {}: cannot compare its values: {e}", f.name())),
            })
            .collect()
    }

    /// Key hashes and row hashes of `columns`' rows.
    fn hashes(&self, columns: &[ArrayRef]) -> Result<(Vec<u128>, Vec<u64>), String> {
        let key_cols: Vec<ArrayRef> = self.key.iter().map(|&i| columns[i].clone()).collect();
        let keys = self
            .keys
            .convert_columns(&key_cols)
            .map_err(|e| format!("cannot encode keys: {e}"))?;
        let rows = self
            .rows
            .convert_columns(columns)
            .map_err(|e| format!("cannot encode rows: {e}"))?;
        let n = columns.first().map_or(0, |c| c.len());
        let mut kh = Vec::with_capacity(n);
        let mut rh = Vec::with_capacity(n);
        for i in 0..n {
            kh.push(hash128(keys.row(i).as_ref()));
            rh.push(hash64(rows.row(i).as_ref(), 0x5a));
        }
        Ok((kh, rh))
    }

    /// The key of row `i` as text: `id=5`, `(a=1, b=x)`.
    fn key_text(&self, columns: &[ArrayRef], i: usize) -> String {
        let options = FormatOptions::default().with_null("NULL");
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|&c| {
                let value = ArrayFormatter::try_new(columns[c].as_ref(), &options)
                    .map(|f| f.value(i).to_string())
                    .unwrap_or_else(|_| "?".into());
                // A long text key is named by its start.
                let value = match value.char_indices().nth(100) {
                    Some((at, _)) => format!("{}…", &value[..at]),
                    None => value,
                };
                format!("{}={}", self.columns.field(c).name(), value)
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            format!("({})", parts.join(", "))
        }
    }

    /// The table's rows as the target holds them (restricted to `only` when given), or why
    /// they cannot be read as a state.
    async fn read_target(
        &mut self,
        ctx: &Context<'_>,
        only: &Keys,
        estimate: Option<u64>,
    ) -> Result<Result<TargetRows, String>, JobError> {
        let mut state = TargetRows {
            rows: HashMap::new(),
            keys: HashMap::new(),
        };
        let name = self.source.id.to_string();
        match ctx.reader {
            TargetReader::Parquet(p) => {
                // Sized once from the source's estimate, as far as `--memory-mb` allows (a
                // stale estimate must not size it past that): growing the map would hold its
                // old and new tables at once.
                let budget = (ctx.memory_mb.max(1) << 20) / BYTES_PER_ROW;
                let expected = match only {
                    Keys::All => estimate.unwrap_or(0),
                    Keys::Part { of, .. } => estimate.unwrap_or(0) / of,
                    Keys::Only(keys) => keys.len() as u64,
                };
                state
                    .rows
                    .reserve(usize::try_from(expected.min(budget)).unwrap_or(0));
                // A file removed between the listing and its reading (a reload of the table
                // switched to its new files): the table is listed and read again.
                'attempt: for attempt in 1..=3 {
                    state.rows.clear();
                    state.keys.clear();
                    let files = p
                        .table_files(&self.source)
                        .await
                        .map_err(JobError::Failed)?;
                    let op_column = p.op_column_name().to_string();
                    for file in &files {
                        let Some(batches) = p
                            .read_table_file(&self.source, file)
                            .await
                            .map_err(JobError::Failed)?
                        else {
                            if attempt < 3 {
                                continue 'attempt;
                            }
                            return Ok(Err(format!(
                                "{} was removed while it was read, three times (the table is \
                                 being loaded again); validate it once the load is done",
                                file.name
                            )));
                        };
                        for batch in batches {
                            let batch = batch.map_err(JobError::Failed)?;
                            let ops = if file.load {
                                None
                            } else {
                                let Some(ops) = batch
                                    .column_by_name(&op_column)
                                    .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                                    .cloned()
                                else {
                                    return Ok(Err(format!(
                                        "change file {} has no text column {op_column}",
                                        file.name
                                    )));
                                };
                                Some(ops)
                            };
                            if let Err(why) = self.apply(&batch, ops.as_ref(), only, &mut state) {
                                return Ok(Err(format!("{}: {why}", file.name)));
                            }
                        }
                    }
                    break;
                }
            }
            TargetReader::Iceberg(i) => {
                let Some(live) = self.live.take() else {
                    return Ok(Ok(state));
                };
                // Sized once: growing the map would hold its old and new tables at once.
                let expected = match only {
                    Keys::All => live.live_rows(),
                    Keys::Part { of, .. } => live.live_rows() / of,
                    Keys::Only(keys) => keys.len() as u64,
                };
                state.rows.reserve(usize::try_from(expected).unwrap_or(0));
                for f in 0..live.data_files() {
                    let applied = i
                        .read_live_rows(&live, f, |batch| {
                            self.apply(&batch, None, only, &mut state)
                        })
                        .await
                        .map_err(target_error)?;
                    if let Err(why) = applied {
                        return Ok(Err(format!("{name}: {why}")));
                    }
                }
                self.live = Some(live);
            }
        }
        Ok(Ok(state))
    }

    /// Applies one batch of the target (inserts, or the operations `ops` says) to `state`.
    fn apply(
        &self,
        batch: &RecordBatch,
        ops: Option<&StringArray>,
        only: &Keys,
        state: &mut TargetRows,
    ) -> Result<(), String> {
        let columns = self.conform(batch)?;
        let (keys, rows) = self.hashes(&columns)?;
        let keyless = self.key_names.is_empty();
        for (i, (k, r)) in keys.into_iter().zip(rows).enumerate() {
            let op = ops.map_or("I", |o| if o.is_null(i) { "I" } else { o.value(i) });
            if op == "T" {
                state.rows.clear();
                state.keys.clear();
                continue;
            }
            if !only.keeps(k) {
                continue;
            }
            match op {
                "I" => {
                    let e = state.rows.entry(k).or_insert(Entry {
                        row: r,
                        count: 0,
                        source_rows: 0,
                    });
                    e.row = r;
                    e.count += 1;
                }
                "U" if keyless => {
                    return Err(
                        "an update of a table without a key cannot be replayed (its change \
                         files hold the new row only)"
                            .into(),
                    )
                }
                "U" => {
                    let e = state.rows.entry(k).or_insert(Entry {
                        row: r,
                        count: 1,
                        source_rows: 0,
                    });
                    e.row = r;
                }
                "D" if keyless => {
                    if let Some(e) = state.rows.get_mut(&k) {
                        e.count = e.count.saturating_sub(1);
                    }
                }
                "D" => {
                    state.rows.remove(&k);
                }
                other => return Err(format!("unknown operation {other:?}")),
            }
            if only.names_keys() && !state.keys.contains_key(&k) {
                state.keys.insert(k, self.key_text(&columns, i));
            }
        }
        Ok(())
    }

    /// Compares one source batch with the target's rows.
    fn compare_source(
        &self,
        ctx: &Context<'_>,
        batch: &RecordBatch,
        state: &mut TargetRows,
        only: &Keys,
        tally: &mut Tally,
    ) -> Result<(), JobError> {
        let fail = |m: String| JobError::Failed(format!("{}: {m}", self.source.id));
        let checked;
        let batch = match ctx.policy {
            Some(policy) => match within_years(&self.source, policy, batch) {
                Ok(b) => {
                    checked = b;
                    &checked
                }
                // The load fails on such a value (policy `fail`): compared as it is, it differs.
                Err(_) => batch,
            },
            None => batch,
        };
        let written = match ctx.reader {
            TargetReader::Parquet(p) => p
                .written_source_batch(&self.source, batch)
                .map_err(JobError::Failed)?,
            TargetReader::Iceberg(i) => match &self.live {
                Some(live) => i.written_source_batch(live, batch).map_err(target_error)?,
                None => batch.clone(),
            },
        };
        let columns = self.conform(&written).map_err(fail)?;
        let (keys, rows) = self.hashes(&columns).map_err(fail)?;
        for (i, (k, r)) in keys.into_iter().zip(rows).enumerate() {
            if !only.keeps(k) {
                continue;
            }
            tally.source_rows += 1;
            match state.rows.get_mut(&k) {
                Some(e) if e.count > 0 => {
                    e.count -= 1;
                    e.source_rows += 1;
                    if e.row != r {
                        tally.different += 1;
                        tally.differing.insert(k);
                        if tally.different_keys.len() < tally.max_keys {
                            tally.different_keys.push(self.key_text(&columns, i));
                        }
                    }
                }
                _ => {
                    tally.missing += 1;
                    state
                        .rows
                        .entry(k)
                        .or_insert(Entry {
                            row: r,
                            count: 0,
                            source_rows: 0,
                        })
                        .source_rows += 1;
                    tally.differing.insert(k);
                    if tally.missing_keys.len() < tally.max_keys {
                        tally.missing_keys.push(self.key_text(&columns, i));
                    }
                }
            }
        }
        Ok(())
    }
}

fn target_error(e: inlet_sink_iceberg::IcebergError) -> JobError {
    JobError::Failed(e.to_string())
}

/// A 64-bit hash of `bytes` (SipHash with fixed keys: the same in one process, which is all a
/// comparison needs), seeded by `seed`.
fn hash64(bytes: &[u8], seed: u8) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

/// A 128-bit hash of a key: two 64-bit hashes, so distinct keys of a table never meet in
/// practice.
fn hash128(bytes: &[u8]) -> u128 {
    (u128::from(hash64(bytes, 1)) << 64) | u128::from(hash64(bytes, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_table_names() {
        assert!(glob("public.*", "public.orders"));
        assert!(glob("public.orders", "public.orders"));
        assert!(!glob("public.order", "public.orders"));
        assert!(glob("*.ord?rs", "shop.orders"));
        assert!(!glob("shop.*", "public.orders"));
    }

    use arrow_array::{Int32Array, Int64Array};
    use arrow_schema::{DataType, Field};
    use inlet_core::{Column, TableId};

    fn table(keyed: bool) -> TableSchema {
        let column = |name: &str, t: DataType| Column {
            name: name.into(),
            source_type: "test".into(),
            field: Field::new(name, t, true),
            distinct_values: None,
        };
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![column("id", DataType::Int64), column("v", DataType::Int32)],
            primary_key: if keyed { vec!["id".into()] } else { Vec::new() },
        }
    }

    /// Rows of `(id, v)`.
    type Rows<'a> = &'a [(Option<i64>, Option<i32>)];

    fn batch(table: &TableSchema, rows: Rows<'_>) -> RecordBatch {
        let ids: Int64Array = rows.iter().map(|r| r.0).collect();
        let vs: Int32Array = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(table.arrow_schema(), vec![Arc::new(ids), Arc::new(vs)]).unwrap()
    }

    /// Applies the target's batches (each with its ops, None for a LOAD file), compares the
    /// source's rows, and returns (rows compared, missing, extra, different, their keys).
    fn compare(
        keyed: bool,
        target: &[(Rows<'_>, Option<&[&str]>)],
        source: Rows<'_>,
    ) -> (u64, u64, u64, u64, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let parquet = ParquetTarget::new(&inlet_sink_parquet::ParquetTargetConfig::with_url(
            dir.path().display().to_string(),
        ))
        .unwrap();
        let t = table(keyed);
        let plan = TablePlan::build(&t, t.arrow_schema(), t.primary_key.clone(), None).unwrap();
        let ctx = Context {
            reader: &TargetReader::Parquet(parquet),
            policy: None,
            max_keys: 10,
            progress: false,
            memory_mb: 64,
        };
        let mut state = TargetRows {
            rows: HashMap::new(),
            keys: HashMap::new(),
        };
        for (rows, ops) in target {
            let ops = ops.map(|o| StringArray::from(o.to_vec()));
            plan.apply(&batch(&t, rows), ops.as_ref(), &Keys::All, &mut state)
                .unwrap();
        }
        let mut tally = Tally::new(10);
        plan.compare_source(&ctx, &batch(&t, source), &mut state, &Keys::All, &mut tally)
            .unwrap();
        tally.extras(&state);
        let mut named = [tally.missing_keys, tally.different_keys].concat();
        named.sort();
        (
            tally.source_rows,
            tally.missing,
            tally.extra,
            tally.different,
            named,
        )
    }

    #[test]
    fn changes_replay_over_the_load_by_key() {
        let load: Rows = &[
            (Some(1), Some(10)),
            (Some(2), Some(20)),
            (Some(3), Some(30)),
        ];
        let changes: Rows = &[
            (Some(2), Some(21)),
            (Some(3), None),
            (Some(4), Some(40)),
            (Some(1), Some(10)),
        ];
        let ops: &[&str] = &["U", "D", "I", "I"];
        // id 2 updated, 3 deleted, 4 inserted, 1 inserted a second time (extra).
        let source = [
            (Some(1), Some(10)),
            (Some(2), Some(21)),
            (Some(4), Some(40)),
        ];
        assert_eq!(
            compare(true, &[(load, None), (changes, Some(ops))], &source),
            (3, 0, 1, 0, vec![])
        );
        // The source has id 5 the target lacks, and another v for id 4.
        let source = [
            (Some(1), Some(10)),
            (Some(2), Some(21)),
            (Some(4), Some(41)),
            (Some(5), Some(50)),
        ];
        let (_, missing, _, different, named) =
            compare(true, &[(load, None), (changes, Some(ops))], &source);
        assert_eq!((missing, different), (1, 1));
        assert_eq!(named, ["id=4", "id=5"]);
    }

    #[test]
    fn a_truncate_empties_the_table() {
        let load: Rows = &[(Some(1), Some(10)), (Some(2), Some(20))];
        let changes: Rows = &[(None, None), (Some(9), Some(90))];
        let ops: &[&str] = &["T", "I"];
        assert_eq!(
            compare(
                true,
                &[(load, None), (changes, Some(ops))],
                &[(Some(9), Some(90))]
            ),
            (1, 0, 0, 0, vec![])
        );
    }

    #[test]
    fn a_table_without_a_key_is_a_multiset() {
        let load: Rows = &[(Some(1), Some(1)), (Some(1), Some(1)), (Some(2), None)];
        let changes: Rows = &[(Some(1), Some(1))];
        let ops: &[&str] = &["D"];
        // One of the two equal rows deleted: the source's second copy is missing.
        let source = [(Some(1), Some(1)), (Some(1), Some(1)), (Some(2), None)];
        let (rows, missing, extra, different, named) =
            compare(false, &[(load, None), (changes, Some(ops))], &source);
        assert_eq!((rows, missing, extra, different), (3, 1, 0, 0));
        assert_eq!(named, ["(id=1, v=1)"]);
    }

    #[test]
    fn hashes_tell_keys_apart() {
        assert_ne!(hash128(b"a"), hash128(b"b"));
        assert_eq!(hash128(b"a"), hash128(b"a"));
    }
}
