//! `inlet validate`: compares every selected table in the target with the source and reports,
//! per table, the rows compared and the rows missing from the target, extra in it and different,
//! naming the keys of those rows (up to a limit).
//!
//! How (see the README's "Validate a task"):
//! - Range hashes first ([`ranges`]): per range of the table's first integer key column, the
//!   source server computes the row count and a sum of 60-bit hashes of each row's canonical
//!   text, and inlet the same over the target's rows. Only the ranges that differ are read
//!   row by row; a table whose columns have no canonical text both sides render alike is
//!   compared row by row whole (`compared_row_by_row` says why).
//! - Row by row, the source is read as the full load reads it (its chunk readers
//!   ([`inlet_core::snapshot::LoadSource`]), or a key range with the same decoders), so its rows
//!   arrive as the Arrow batches a load would write, and the sink's own conversion puts them in
//!   the form the target holds (uuid and time as text, milliseconds, Athena names): a value
//!   policy is no difference. Each chunk or range is its own short transaction on PostgreSQL.
//! - The target is read as a reader sees it (Parquet: LOAD files, then change files replayed in
//!   name order; Iceberg: the current snapshot's live rows, position deletes applied): into its
//!   ranges' sums when it holds inserts only, else into a map from a 128-bit hash of the row's
//!   key to a 64-bit hash of the row and a count. That map is the memory validation needs (one
//!   table at a time); a table larger than `--memory-mb`, by the source's estimate of its rows,
//!   is compared in passes over parts of its keys (of its ranges, with range hashes).
//! - The source moves while it is read: the snapshot's position is recorded (PostgreSQL
//!   `pg_current_wal_insert_lsn()`, MySQL/MariaDB the binlog position), and the target is read only
//!   once the task's checkpoint has passed it. A key that differs is compared again in a new
//!   snapshot once the target passed that one too (up to [`ROUNDS`] times in all; only the ranges
//!   that held such keys are read again); only a difference still there in the last round is
//!   reported. A task that does not catch up within `--max-lag-seconds` is reported as such,
//!   never as equal.
//! - A table without a key is compared as a multiset of whole rows.
//! - `inlet run` validates a task on a schedule ([`schedule`], `[validate] interval_minutes`),
//!   into the `inlet_validation_*` metrics.
//!
//! Any source is driven through [`inlet_core::validation`] (built in [`crate::engine::validate`]);
//! the target is read back through the sink's [`inlet_core::validation::TableReadBack`]
//! ([`crate::sink::Target::read_back`]).
//!
//! Modules, by job: [`source`] (the per-table comparison loop over a round's snapshot),
//! [`ranges`] (key ranges, the canonical text and its hashes, the source's range hashes and
//! reads), [`target`] (reading the target back: Parquet replay, Iceberg snapshot),
//! [`compare`] (how rows are keyed, hashed and compared; the tally of differences), [`report`]
//! (the per-table result, its summary line and `--json`).

mod compare;
mod ranges;
mod report;
mod source;
mod target;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_core::source::SourceTable;
use inlet_core::validation::ValidationSource;
use inlet_core::{Position, ValuePolicy};

use crate::config::{Mode, TaskConfig};
use crate::load_pool::source_error;
use crate::sink::Target;
use crate::state::Metrics;
use crate::JobError;

pub use report::TableReport;

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
    /// The key ranges (of a table compared by range hashes) marked true: those whose hashes
    /// differed.
    Ranges(Arc<Vec<bool>>),
}

impl Keys {
    fn part(index: u64, of: u64) -> Self {
        if of <= 1 {
            Self::All
        } else {
            Self::Part { index, of }
        }
    }

    /// Whether a row of key hash `key` (and, for a table compared by range hashes, of key
    /// range `range`) is compared: a pass of such a table takes whole ranges.
    fn keeps(&self, key: u128, range: Option<u32>) -> bool {
        match self {
            Self::All => true,
            Self::Part { index, of } => match range {
                Some(r) => u64::from(r) % of == *index,
                None => (key as u64) % of == *index,
            },
            Self::Only(keys) => keys.contains(&key),
            Self::Ranges(set) => range.is_some_and(|r| set.get(r as usize) == Some(&true)),
        }
    }

    /// How many of a table's `rows` this keeps, about: to size its map once.
    fn expected_rows(&self, rows: u64) -> u64 {
        match self {
            Self::All => rows,
            Self::Part { of, .. } => rows / of,
            Self::Only(keys) => keys.len() as u64,
            Self::Ranges(set) => {
                let kept = set.iter().filter(|d| **d).count() as u64;
                rows.saturating_mul(kept) / (set.len() as u64).max(1)
            }
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

/// Runs the validation and prints its report; Ok(true) when every table is equal.
pub async fn run(args: &ValidateArgs<'_>) -> Result<bool, JobError> {
    let config = crate::config::load(args.config).map_err(JobError::config)?;
    let reports = validate(&config, args).await?;
    let equal = reports.iter().all(|r| !r.differs() && !r.skipped);
    report::print(&config.task.name, &reports, equal, args.json)?;
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

/// Validates every selected table matching `args.tables`, with the source the task file names
/// ([`crate::engine::validate`] builds it).
pub async fn validate(
    config: &TaskConfig,
    args: &ValidateArgs<'_>,
) -> Result<Vec<TableReport>, JobError> {
    crate::engine::validate(config, args).await
}

/// Validates every selected table of `source` matching `args.tables`.
pub(crate) async fn validate_source<V: ValidationSource>(
    source: V,
    config: &TaskConfig,
    args: &ValidateArgs<'_>,
) -> Result<Vec<TableReport>, JobError> {
    let task = config.task.name.as_str();
    let policy = config.values.policy();
    let checkpoints = Target::new(&config.target, task)?;
    let ids: Vec<String> = source
        .tables()
        .iter()
        .map(|t| t.schema().id.to_string())
        .collect();
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
    let years = checkpoints.portable_forms();
    let ctx = Context {
        target: &checkpoints,
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
            None => passes_for(
                source.tables().get(t).and_then(|t| t.estimated_rows()),
                args.memory_mb,
            ),
        })
        .collect();
    let mut reports: Vec<TableReport> = (0..chosen.len()).map(|_| TableReport::default()).collect();
    let mut differing: Vec<HashSet<u128>> = vec![HashSet::new(); chosen.len()];
    let mut differing_source_rows: Vec<u64> = vec![0; chosen.len()];
    let mut differing_spans: Vec<Option<Spans>> = vec![None; chosen.len()];
    let mut rounds = Rounds {
        source,
        checkpoints: &checkpoints,
        task,
        follows,
        args,
        ctx: &ctx,
        chosen: &chosen,
    };
    for pass in 0..passes.iter().copied().max().unwrap_or(1) {
        let todo: Vec<usize> = (0..chosen.len())
            .filter(|&i| pass < passes[i] && !reports[i].skipped)
            .collect();
        if todo.is_empty() {
            continue;
        }
        let keys: Vec<Keys> = todo.iter().map(|&i| Keys::part(pass, passes[i])).collect();
        let spans = vec![None; todo.len()];
        let results = rounds.run(&todo, &keys, &spans).await?;
        for (result, &i) in results.into_iter().zip(&todo) {
            merge(&mut reports[i], result.report, args.max_keys);
            reports[i].rows_compared += result.source_rows;
            differing[i].extend(result.differing);
            differing_source_rows[i] += result.differing_source_rows;
            if let Some(s) = result.spans {
                let into = differing_spans[i].get_or_insert_with(|| Spans {
                    key: s.key.clone(),
                    spans: Vec::new(),
                });
                into.spans.extend(s.spans);
            }
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
    let last_round = if follows { ROUNDS } else { 2 };
    for round_number in 2..=last_round {
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
        let spans: Vec<Option<Spans>> = todo.iter().map(|&i| differing_spans[i].take()).collect();
        let results = rounds.run(&todo, &keys, &spans).await?;
        for (result, &i) in results.into_iter().zip(&todo) {
            let was = std::mem::take(&mut reports[i]);
            let note = result.report.note.clone().or(was.note);
            reports[i] = TableReport {
                rows_compared: was.rows_compared.saturating_sub(differing_source_rows[i])
                    + result.source_rows,
                rounds: round_number,
                note,
                // The first round's range hashes; rows read in every round.
                ranges_compared: was.ranges_compared,
                ranges_differing: was.ranges_differing,
                compared_row_by_row: was.compared_row_by_row,
                rows_read_from_source: was.rows_read_from_source
                    + result.report.rows_read_from_source,
                ..result.report
            };
            differing[i] = result.differing;
            differing_source_rows[i] = result.differing_source_rows;
            differing_spans[i] = result.spans;
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

/// What every round of one validation shares.
struct Rounds<'a, V> {
    source: V,
    checkpoints: &'a Target,
    task: &'a str,
    follows: bool,
    args: &'a ValidateArgs<'a>,
    ctx: &'a Context<'a>,
    /// The tables compared (indexes into the source's tables).
    chosen: &'a [usize],
}

impl<V: ValidationSource> Rounds<'_, V> {
    /// One snapshot: its position recorded, the task waited for (when it follows changes),
    /// and tables `todo` (indexes into `chosen`) compared, each over its `keys`.
    async fn run(
        &mut self,
        todo: &[usize],
        keys: &[Keys],
        spans: &[Option<Spans>],
    ) -> Result<Vec<RoundResult>, JobError> {
        let round = self.source.open_round().await.map_err(source_error)?;
        if self.follows {
            wait_for_target(
                self.checkpoints,
                self.task,
                round.position,
                self.args.max_lag,
            )
            .await?;
        }
        let which: Vec<usize> = todo.iter().map(|&i| self.chosen[i]).collect();
        source::compare_in(round, self.ctx, &which, keys, spans).await
    }
}

/// Adds one pass's result of a table to its report.
fn merge(into: &mut TableReport, pass: TableReport, max_keys: usize) {
    into.table = pass.table;
    into.key = pass.key;
    into.missing += pass.missing;
    into.extra += pass.extra;
    into.different += pass.different;
    into.ranges_compared += pass.ranges_compared;
    into.ranges_differing += pass.ranges_differing;
    into.rows_read_from_source += pass.rows_read_from_source;
    if pass.compared_row_by_row.is_some() {
        into.compared_row_by_row = pass.compared_row_by_row;
    }
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
    /// The key ranges that held the differing keys (a table compared by range hashes): a
    /// recheck reads only those from the source.
    spans: Option<Spans>,
}

/// `[start, end)` of a table's first key column; an open end is None.
type Span = (Option<i64>, Option<i64>);

/// Key ranges of a table to read again.
#[derive(Clone, Debug, Default)]
struct Spans {
    /// The first key column; None: the whole table.
    key: Option<String>,
    spans: Vec<Span>,
}

struct Context<'a> {
    /// The task's target: its checkpoint, and its tables read back.
    target: &'a Target,
    /// The value policy dates outside years 1–9999 follow (the portable forms), as the load
    /// applies it before the sink.
    policy: Option<&'a ValuePolicy>,
    max_keys: usize,
    progress: bool,
    /// `--memory-mb`: the most rows a table's map is sized for up front.
    memory_mb: u64,
}
