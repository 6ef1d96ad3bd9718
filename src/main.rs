//! inlet: replicate PostgreSQL and MySQL/MariaDB tables, by a full load and then their change
//! stream, into Parquet files (AWS DMS's layout) or Apache Iceberg tables, on a folder or S3.
//!
//! The daemon wires a source connector (`connectors/`: `inlet-postgres`, `inlet-mysql`) to a
//! sink (`sinks/`: `inlet-sink-parquet`, `inlet-sink-iceberg`); all of them speak `inlet-core`.
//! This crate holds the CLI, task files (`config`), the one task engine for every source
//! (`engine`, over `inlet_core::source`), the stream loop (`stream`), the load pool
//! (`load_pool`), `runner` for the daemon's many tasks (retries, leases), `inlet check`,
//! `inlet validate`, and the health endpoint.
//!
//! ```text
//! task file ─> engine ─build─> Source (a connector) ─ snapshot ─> load_pool ─> LoadTable
//!                 │                    └─ Capture ─> stream ─> ChangeTable ─┐
//!                 └─build─> Target (a sink) <── checkpoint, then acknowledge ┘
//! ```

mod check;
mod config;
mod engine;
mod http;
mod join;
mod lease;
mod load_pool;
mod progress;
mod resync;
mod runner;
mod sink;
mod state;
mod stream;
mod systemd;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use inlet_core::snapshot::SourceError;

/// Exit codes: 0 ok, 1 the job failed, 2 bad usage or config (clap also exits 2 on bad usage),
/// 3 `full-load` was interrupted by SIGTERM/SIGINT before every table was loaded.
const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_INTERRUPTED: u8 = 3;

#[derive(Parser)]
#[command(name = "inlet", version, about = "Replicate PostgreSQL and MySQL/MariaDB tables into Parquet or Iceberg, on a folder or S3", long_about = None)]
struct Cli {
    /// Log format: human text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the task as its mode says: `full-load` copies the tables once; `cdc` and
    /// `full-load-and-cdc` keep following changes until SIGTERM or Ctrl-C, then flush, commit,
    /// acknowledge and exit 0.
    Run {
        /// The task file (TOML), or a folder: every `*.toml` in it is a task.
        #[arg(short, long, value_name = "TASK.toml|DIR")]
        config: PathBuf,
        /// Address of the HTTP endpoints; overrides `[service] listen` (default 127.0.0.1:9440).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Copy every selected table once, as of one consistent snapshot, into the target.
    FullLoad {
        /// The task file (TOML).
        #[arg(short, long, value_name = "TASK.toml")]
        config: PathBuf,
    },
    /// Validate the task file, connect to source and target, list the selected tables and
    /// report each prerequisite with its fix.
    Check {
        /// The task file (TOML).
        #[arg(short, long, value_name = "TASK.toml")]
        config: PathBuf,
    },
    /// Load tables of a CDC task again, in a fresh consistent snapshot beside the stream, while
    /// the other tables keep streaming; the target of each is replaced once its load is
    /// complete. For a table whose changes cannot be completed (an unchanged TOASTed value
    /// without REPLICA IDENTITY FULL, a row image that is not FULL): they are dropped,
    /// superseded by the reload. A running daemon (found at the file's `[service] listen`) does
    /// it at once; for a stopped task it is recorded in the checkpoint for its next run.
    Resync {
        /// The task file (TOML).
        #[arg(short, long, value_name = "TASK.toml")]
        config: PathBuf,
        /// The tables, as `schema.table` (or a table name only one schema of the task has).
        #[arg(required = true, value_name = "TABLE")]
        tables: Vec<String>,
        /// The running daemon's address; overrides `[service] listen` of the task file.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// Compare every selected table in the target with the source: per table the rows
    /// compared, missing from the target, extra in it and different, naming their keys. Runs
    /// beside a running task: a difference counts only if it is still there once the task has
    /// passed the source position the rows were read at. Exit 0: equal; 1: a difference, or the
    /// task did not catch up; 2: bad usage or config.
    Validate {
        /// The task file (TOML).
        #[arg(short, long, value_name = "TASK.toml")]
        config: PathBuf,
        /// Only these tables, as `schema.table` patterns (`*` matches any run of characters).
        #[arg(long, num_args = 1.., value_name = "PATTERN")]
        tables: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// How long to wait for the task to pass a source position before giving up.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        max_lag_seconds: u64,
        /// How many keys to name per table and kind of difference.
        #[arg(long, default_value_t = 20, value_name = "N")]
        max_keys: usize,
        /// Memory for one table's target rows (about 100 bytes a row): a larger table, by the
        /// source's estimate, is compared in passes over parts of its keys, each reading source
        /// and target again.
        #[arg(long, default_value_t = 1024, value_name = "MB")]
        memory_mb: u64,
        /// Compare each table in this many passes, whatever its size.
        #[arg(long, value_name = "N")]
        passes: Option<u32>,
    },
    /// Show what a running `inlet run` is doing: each task's phase, lag and position, and each
    /// table's progress, read from its /status endpoint.
    Status {
        /// The daemon's `[service] listen` address.
        #[arg(long, default_value = "127.0.0.1:9440", value_name = "HOST:PORT")]
        address: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
pub enum JobError {
    /// Bad config: exit 2.
    Config(String),
    /// The job ran and failed: exit 1.
    Failed(String),
    /// The job failed in a way that may pass (the source or the store was unreachable): `inlet
    /// run` restarts the task after a backoff; one-shot commands exit 1. `kind` is `source` or
    /// `target`, for the metrics.
    Transient { kind: &'static str, message: String },
}

impl JobError {
    pub fn config(e: impl std::fmt::Display) -> Self {
        Self::Config(e.to_string())
    }
    pub fn failed(e: impl std::fmt::Display) -> Self {
        Self::Failed(e.to_string())
    }
    /// A source error, classified by the connector that raised it (each connector's error
    /// converts into [`SourceError`]).
    pub fn source(e: impl Into<SourceError>) -> Self {
        Self::from_source(e.into())
    }
    /// A source error as its connector classified it: transient, a setting of the task file,
    /// or a failure a retry would repeat.
    pub fn from_source(e: SourceError) -> Self {
        // A change that cannot be completed, now or at any restart: say how to get past it.
        if let Some(table) = e.incomplete_change_table() {
            return Self::Failed(format!("{e}{}", resync::hint(&table)));
        }
        if e.starts_over() {
            return Self::Transient {
                kind: engine::STARTS_OVER,
                message: e.to_string(),
            };
        }
        let kind = if e.is_target() { "target" } else { "source" };
        if e.is_transient() {
            Self::Transient {
                kind,
                message: e.to_string(),
            }
        } else if e.is_config() && !e.is_target() {
            Self::Config(e.to_string())
        } else {
            Self::Failed(e.to_string())
        }
    }
    /// A target error, transient or not as the sink classifies it.
    pub fn target(e: inlet_core::sink::TargetError) -> Self {
        if e.is_transient() {
            Self::Transient {
                kind: "target",
                message: e.to_string(),
            }
        } else {
            Self::Failed(e.to_string())
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Self::Config(m) | Self::Failed(m) | Self::Transient { message: m, .. } => m,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // First, before the task files are read: a signal that comes while the daemon starts ends
    // it by the normal path (the commands that stop on a signal).
    if matches!(cli.command, Command::Run { .. } | Command::FullLoad { .. }) {
        catch_signals(&runtime);
    }
    init_logging(cli.log_format);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config, listen } => Ok(runner::run(&config, listen)
                .await
                .map_err(|e| naming_file(e, &config))),
            Command::FullLoad { config } => match full_load(&config).await {
                Err(FullLoadEnd::Interrupted) => Err(ExitCode::from(EXIT_INTERRUPTED)),
                Err(FullLoadEnd::Failed(e)) => Ok(Err(e)),
                Ok(()) => Ok(Ok(())),
            },
            Command::Check { config } => Ok(check::run(&config).await),
            Command::Status { address, json } => Ok(status(&address, json).await),
            Command::Validate {
                config,
                tables,
                json,
                max_lag_seconds,
                max_keys,
                memory_mb,
                passes,
            } => {
                let args = validate::ValidateArgs {
                    config: &config,
                    tables: &tables,
                    json,
                    max_lag: std::time::Duration::from_secs(max_lag_seconds),
                    max_keys,
                    memory_mb,
                    passes,
                    progress: !json,
                };
                match validate::run(&args).await {
                    Ok(true) => Ok(Ok(())),
                    // The report says what differs; no error line.
                    Ok(false) => Err(ExitCode::from(EXIT_FAILED)),
                    Err(e) => Ok(Err(e)),
                }
            }
            Command::Resync {
                config,
                tables,
                address,
            } => Ok(resync_tables(&config, &tables, address).await),
        }
    });
    let result = match result {
        Ok(result) => result,
        Err(code) => {
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            return code;
        }
    };
    // Blocking work still running (a DNS lookup, a file write) must not hold the exit: a
    // signal ends the process within seconds whatever the source or the store is doing.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(JobError::Config(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(JobError::Failed(m) | JobError::Transient { message: m, .. }) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A message written where the task file is not known names it ([`resync::TASK_FILE`]): with
/// one task file, that file.
fn naming_file(e: JobError, config: &std::path::Path) -> JobError {
    if config.is_dir() || !e.message().contains(resync::TASK_FILE) {
        return e;
    }
    let path = config.display().to_string();
    match e {
        JobError::Config(m) => JobError::Config(m.replace(resync::TASK_FILE, &path)),
        JobError::Failed(m) => JobError::Failed(m.replace(resync::TASK_FILE, &path)),
        JobError::Transient { kind, message } => JobError::Transient {
            kind,
            message: message.replace(resync::TASK_FILE, &path),
        },
    }
}

async fn resync_tables(
    config: &std::path::Path,
    tables: &[String],
    address: Option<String>,
) -> Result<(), JobError> {
    let file = config.display();
    match resync::run(config, tables, address).await? {
        resync::Resynced::Recorded(tables) => {
            for t in &tables {
                println!("{t}: resync recorded in the task checkpoint");
            }
            println!(
                "The next `inlet run -c {file}` loads {} again in a fresh consistent snapshot \
                 beside the stream, while the other tables stream on. The target of each is \
                 replaced once its load is complete (until then it keeps what it had), and its \
                 changes from before the load, including any that could not be completed and \
                 stopped the task, are dropped: the load supersedes them. A daemon that is \
                 running this task elsewhere would overwrite the checkpoint: stop it first.",
                tables.join(", ")
            );
        }
        resync::Resynced::Asked { address, tables } => {
            for t in &tables {
                println!("{t}: resync asked of the running daemon at {address}");
            }
            println!(
                "The task loads {} again in a fresh consistent snapshot beside the stream, \
                 from its next transaction boundary, while the other tables stream on; the \
                 target of each is replaced once its load is complete. `inlet status --address \
                 {address}` shows the table streaming again once it is loaded.",
                tables.join(", ")
            );
        }
    }
    Ok(())
}

async fn status(address: &str, json: bool) -> Result<(), JobError> {
    let body = http::get_from_daemon(address, "/status")
        .await
        .map_err(JobError::Failed)?;
    if json {
        println!("{body}");
    } else {
        print!(
            "{}",
            http::render_status_table(&body).map_err(JobError::Failed)?
        );
    }
    Ok(())
}

/// SIGTERM or SIGINT, as caught since [`catch_signals`] ran.
static SIGNALLED: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
    std::sync::OnceLock::new();

/// Catches SIGTERM (systemd, containers) and SIGINT (Ctrl-C) from now on: a signal that comes
/// before anything waits for it (the daemon still reading its task files or binding its
/// endpoint) is kept for [`wait_for_signal`], instead of the default action killing the process
/// by the signal.
fn catch_signals(runtime: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{signal, SignalKind};
    let _entered = runtime.enter();
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // `wait_for_signal` registers its own, later.
        return;
    };
    let (caught, signalled) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = caught.send(true);
        // The sender stays, so every later wait sees the signal.
        std::future::pending::<()>().await
    });
    let _ = SIGNALLED.set(signalled);
}

/// SIGTERM (systemd, containers) or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    if let Some(signalled) = SIGNALLED.get() {
        let mut signalled = signalled.clone();
        if signalled.wait_for(|s| *s).await.is_ok() {
            return;
        }
    }
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Why `inlet full-load` did not finish.
enum FullLoadEnd {
    Failed(JobError),
    /// SIGTERM or SIGINT: the tables not yet loaded were reported; exit 3.
    Interrupted,
}

/// `inlet full-load`. A signal stops it at once (there is no checkpoint to keep): the load
/// settles every table (removes the incomplete ones' files, or keeps a resumable one's chunks
/// staged), the tables it had not finished are named with what their folders hold, and the exit
/// code is 3.
async fn full_load(path: &std::path::Path) -> Result<(), FullLoadEnd> {
    let config = config::load(path)
        .map_err(JobError::config)
        .map_err(FullLoadEnd::Failed)?;
    let state = state::TaskState::detached(&config.task.name);
    let started = std::time::Instant::now();
    match engine::full_load(&config, &state, wait_for_signal()).await {
        Ok(results) => {
            print_load_results(&results, started);
            Ok(())
        }
        Err(load_pool::LoadEnd::Failed(e)) => Err(FullLoadEnd::Failed(e)),
        // Only the initial load of a change capture renews its snapshot.
        Err(end @ load_pool::LoadEnd::Renewed) => Err(FullLoadEnd::Failed(end.into_error())),
        Err(load_pool::LoadEnd::Interrupted { tables }) => {
            eprintln!(
                "error: full load interrupted (exit {EXIT_INTERRUPTED}); tables: {tables}; run \
                 `inlet full-load` again to load those not loaded"
            );
            Err(FullLoadEnd::Interrupted)
        }
    }
}

fn print_load_results(results: &[load_pool::TableResult], started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let rows: u64 = results.iter().map(|r| r.summary.rows).sum();
    for r in results {
        println!(
            "{:<40} {:>12} rows {:>4} files {:>10.1} MB",
            r.table,
            r.summary.rows,
            r.summary.files,
            r.summary.bytes as f64 / 1e6
        );
    }
    println!(
        "full load of {} tables done: {rows} rows in {secs:.1} s ({:.0} rows/s)",
        results.len(),
        rows as f64 / secs
    );
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}
