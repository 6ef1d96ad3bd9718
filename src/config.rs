//! Task files: one TOML file per task, `${ENV}` interpolation, unknown keys rejected, and every
//! error naming the file, the key and what was expected.

use std::path::{Path, PathBuf};

use inlet_core::{TableSelectionConfig, Unrepresentable, ValuePolicy};
use inlet_mysql::MysqlSourceConfig;
use inlet_postgres::PostgresSourceConfig;
use inlet_sink_iceberg::IcebergTargetConfig;
use inlet_sink_parquet::ParquetTargetConfig;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct TaskConfig {
    pub task: TaskSection,
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub tables: TableSelectionConfig,
    pub full_load: FullLoadConfig,
    pub cdc: CdcConfig,
    pub values: ValuesConfig,
    /// None when the file has no `[service]` section.
    pub service: Option<ServiceConfig>,
    pub retry: RetryConfig,
    pub validate: ValidateConfig,
}

/// The sections other than `[source]` and `[target]`, whose shape depends on their `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSections {
    task: TaskSection,
    #[serde(default)]
    tables: TableSelectionConfig,
    #[serde(default)]
    full_load: FullLoadConfig,
    #[serde(default)]
    cdc: CdcConfig,
    #[serde(default)]
    values: ValuesConfig,
    service: Option<ServiceConfig>,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    validate: ValidateConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Names the task in logs and output metadata; letters, digits, `-` and `_`.
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
}

/// DMS's migration types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Copy every selected table once.
    #[default]
    FullLoad,
    /// Follow changes from the moment the task's replication slot is created.
    Cdc,
    /// A full load consistent with the slot, then every change after it.
    FullLoadAndCdc,
}

/// `[source]`, chosen by its `kind` key.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Postgres(PostgresSourceConfig),
    /// MySQL 5.7/8.x or MariaDB 10.6+.
    Mysql(MysqlSourceConfig),
}

/// `[target]`, chosen by its `kind` key.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    Parquet(ParquetTargetConfig),
    // Boxed: the REST catalog settings make it several times the size of the Parquet one.
    Iceberg(Box<IcebergTargetConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FullLoadConfig {
    /// Parallel COPY connections; 0 means one per CPU core.
    pub workers: usize,
    /// Heap megabytes per chunk; 0 reads each table as one chunk.
    pub chunk_mb: u64,
    /// Rows per Arrow batch handed to the target.
    pub batch_rows: usize,
    /// Source bytes per Arrow batch: with `batch_rows` and the target's row group size, this
    /// bounds memory whatever the table size.
    pub batch_mb: usize,
    /// The initial load of a `full-load-and-cdc` task that can resume reads at most this long
    /// in one snapshot, then goes on in a new one (keeping the chunks done), so the source's
    /// oldest snapshot (PostgreSQL's xmin horizon, InnoDB's purge) is never older; 0: one
    /// snapshot per run.
    pub snapshot_minutes: f64,
}

impl Default for FullLoadConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            chunk_mb: 64,
            batch_rows: 65_536,
            batch_mb: 16,
            snapshot_minutes: 15.0,
        }
    }
}

impl FullLoadConfig {
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        }
    }
}

/// `[cdc]`: when change files are written. A flush writes every table's buffered changes,
/// then the task checkpoint, then acknowledges the source up to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdcConfig {
    /// Flush at least this often (DMS's default is 60 s).
    pub flush_interval_ms: u64,
    /// Flush once this many changes are buffered.
    pub flush_rows: usize,
    /// A transaction larger than twice this many rows for one table is written in parts of
    /// this size as it arrives, so memory is bounded whatever the transaction's size.
    pub part_rows: usize,
    /// A source table's columns change: "evolve" (default), "fail" or "ignore".
    pub schema_changes: inlet_core::SchemaChanges,
    /// Flush once the buffered changes hold about this many megabytes of source data.
    pub flush_mb: usize,
    /// Every this many milliseconds, write a tiny logical-decoding message into the source
    /// database's WAL (`pg_logical_emit_message`), so the slot advances even when the server's
    /// only WAL traffic is in other databases. 0 turns it off.
    pub heartbeat_interval_ms: u64,
    /// The replication slot is missing or lost: "fail" (default) stops the task with the reason;
    /// "resnapshot" drops what is left of the slot, deletes the task checkpoint and does a new
    /// full load followed by streaming.
    pub on_slot_lost: SlotLost,
    /// Where a large transaction the server streams before its commit (PostgreSQL 14+) is
    /// staged until it commits or aborts; the system's temporary folder by default. Needs room
    /// for the largest transaction's changes.
    pub spool_dir: Option<std::path::PathBuf>,
    /// A change stream from which nothing arrives for this long, not even the keepalive inlet
    /// asks for, counts as a cut connection: the task reconnects from its checkpoint (a network
    /// cut without a reset would otherwise leave it waiting for ever). PostgreSQL.
    pub stream_silence_timeout_s: u64,
    /// PostgreSQL: a change of a captured table's stored values that the change stream does
    /// not carry loads the table again beside the stream: a column added with a DEFAULT (the
    /// server reads it from the catalog for the existing rows), or a table rewrite that changed
    /// values (`ALTER COLUMN … TYPE` that rewrites, `ADD COLUMN` with a DEFAULT computed per
    /// row, serial or identity). Off, inlet only warns and the target keeps the old values
    /// (NULL for an added column) until `inlet resync`. `reload_on_added_default`, its name
    /// before it covered rewrites, is still read.
    #[serde(alias = "reload_on_added_default")]
    pub reload_on_unstreamed_change: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotLost {
    #[default]
    Fail,
    Resnapshot,
}

impl Default for CdcConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 10_000,
            flush_rows: 200_000,
            part_rows: 100_000,
            schema_changes: inlet_core::SchemaChanges::Evolve,
            flush_mb: 64,
            heartbeat_interval_ms: 0,
            on_slot_lost: SlotLost::Fail,
            spool_dir: None,
            stream_silence_timeout_s: 60,
            reload_on_unstreamed_change: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValuesConfig {
    /// What to do with values Arrow cannot hold exactly: "fail" (default), "null" or "text".
    #[serde(default)]
    pub on_unrepresentable: Unrepresentable,
    /// `[values.columns]`: `"schema.table.column" = "fail" | "null" | "text"` for single
    /// columns; every other column follows `on_unrepresentable`.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, Unrepresentable>,
    /// Not a key: set from `target.types` when the file is read. Under the portable forms time
    /// columns are written as text, which holds the times Arrow's cannot (PostgreSQL's
    /// 24:00:00, MySQL's negative and over-24-hour TIME values).
    #[serde(skip)]
    times_as_text: bool,
}

impl ValuesConfig {
    /// The policy the connectors plan and decode every column with.
    pub fn policy(&self) -> ValuePolicy {
        ValuePolicy::new(self.on_unrepresentable, self.columns.clone())
            .with_times_as_text(self.times_as_text)
    }
}

/// `[service]`: the daemon's HTTP endpoint. With several task files, those that set it must
/// agree.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Address of `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub listen: String,
    /// `/readyz` answers 503 while a task lags more than this many seconds behind its source.
    pub ready_max_lag_s: f64,
    /// A connection that sends no complete request head within this many seconds (a new one,
    /// or a kept-alive one between requests) is closed.
    pub header_read_timeout_s: u64,
    /// Open connections at most; beyond it the oldest is closed to make room, so a flood of
    /// idle connections can neither lock out a health probe nor use up the file descriptors
    /// the tasks need.
    pub max_connections: usize,
    /// Each task is owned by one daemon through a lease in its target store: a dead owner's
    /// task runs in another daemon within this many seconds (the owner renews every sixth of
    /// it and stops writing a third of it after its last renewal; see `lease::LeaseTiming`).
    pub lease_seconds: u64,
    /// At most this many tasks run in this daemon; the others are left to other daemons that
    /// share the task files (none: no limit).
    pub max_tasks: Option<usize>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9440".into(),
            ready_max_lag_s: 300.0,
            header_read_timeout_s: 10,
            max_connections: 256,
            lease_seconds: 30,
            max_tasks: None,
        }
    }
}

/// `[retry]`: how `inlet run` restarts a task after a transient error (source connection lost,
/// source restart, S3 5xx or timeout): exponential backoff with jitter between these bounds,
/// for as long as the fault lasts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 1_000,
            max_delay_ms: 60_000,
        }
    }
}

/// `[validate]`: `inlet run` validates the task against its source on a schedule (see
/// `inlet validate`), reporting in the `inlet_validation_*` metrics and the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Minutes between validations, counted from the end of the previous one; 0 (default): off.
    pub interval_minutes: f64,
    /// How long a validation waits for the task to pass a source position.
    pub max_lag_seconds: u64,
    /// Memory for one table's target rows (see `inlet validate --memory-mb`).
    pub memory_mb: u64,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            interval_minutes: 0.0,
            max_lag_seconds: 120,
            memory_mb: 1024,
        }
    }
}

/// A config problem: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

/// The task files `inlet run` is given: one file, or every `*.toml` in a folder (sorted by
/// name). Task names must be unique.
pub fn load_all(path: &Path) -> Result<Vec<(PathBuf, TaskConfig)>, ConfigError> {
    let err = |file: &Path, message: String| ConfigError {
        file: file.to_path_buf(),
        message,
    };
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| err(path, format!("cannot list the task folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(err(path, "the folder holds no task file (*.toml)".into()));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut tasks: Vec<(PathBuf, TaskConfig)> = Vec::with_capacity(files.len());
    for file in files {
        let task = load(&file)?;
        if let Some((other, _)) = tasks.iter().find(|(_, t)| t.task.name == task.task.name) {
            return Err(err(
                &file,
                format!(
                    "task.name {:?} is also the name of {}; every task needs its own name (it names \
                     the slot, the checkpoint and the metrics)",
                    task.task.name,
                    other.display()
                ),
            ));
        }
        tasks.push((file, task));
    }
    Ok(tasks)
}

pub fn load(path: &Path) -> Result<TaskConfig, ConfigError> {
    let err = |message: String| ConfigError {
        file: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read the task file: {e}")))?;
    parse(&text, &|name| std::env::var(name).ok()).map_err(err)
}

/// Parses a task file, replacing `${NAME}` and `${NAME:-default}` in string values with
/// environment variables (`$${` writes a literal `${`).
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<TaskConfig, String> {
    let mut value: toml::Value = toml::from_str::<toml::Table>(text)
        .map(toml::Value::Table)
        .map_err(|e| format!("not valid TOML: {}", e.to_string().trim_end()))?;
    interpolate(&mut value, &mut Vec::new(), env)?;
    let toml::Value::Table(mut root) = value else {
        return Err("a task file is a TOML table".into());
    };
    let (kind, source) = section(&mut root, "source")?;
    let source = match kind.as_str() {
        "postgres" => SourceConfig::Postgres(deserialize("source", source)?),
        "mysql" | "mariadb" => SourceConfig::Mysql(deserialize("source", source)?),
        other => {
            return Err(format!(
                "source.kind: unknown source {other:?}; expected \"postgres\" or \"mysql\""
            ))
        }
    };
    let (kind, target) = section(&mut root, "target")?;
    let target = match kind.as_str() {
        "parquet" => TargetConfig::Parquet(deserialize("target", target)?),
        "iceberg" => TargetConfig::Iceberg(Box::new(deserialize("target", target)?)),
        other => {
            return Err(format!(
                "target.kind: unknown target {other:?}; expected \"parquet\" or \"iceberg\""
            ))
        }
    };
    let common: CommonSections = deserialize("", toml::Value::Table(root))?;
    let types = match &target {
        TargetConfig::Parquet(c) => c.types,
        TargetConfig::Iceberg(c) => c.types,
    };
    let values = ValuesConfig {
        times_as_text: types == inlet_core::TypeForms::Portable,
        ..common.values
    };
    let config = TaskConfig {
        task: common.task,
        source,
        target,
        tables: common.tables,
        full_load: common.full_load,
        cdc: common.cdc,
        values,
        service: common.service,
        retry: common.retry,
        validate: common.validate,
    };
    validate(&config)?;
    Ok(config)
}

/// Takes section `name` out of the file and splits off its `kind`.
fn section(root: &mut toml::Table, name: &str) -> Result<(String, toml::Value), String> {
    let Some(toml::Value::Table(mut t)) = root.remove(name) else {
        return Err(format!("[{name}] is missing (or is not a table)"));
    };
    match t.remove("kind") {
        Some(toml::Value::String(kind)) => Ok((kind, toml::Value::Table(t))),
        Some(_) => Err(format!("{name}.kind: must be a string")),
        None => Err(format!("{name}.kind: missing")),
    }
}

/// Deserializes `value`, reporting errors with their full key path under `prefix`.
fn deserialize<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: toml::Value,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // toml appends "in `table`" on a line of its own; the path already says where.
        let inner = e.into_inner().to_string();
        let inner = inner
            .split("\nin `")
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string();
        let key = match (prefix, path.as_str()) {
            (p, ".") | (p, "") => p.to_string(),
            ("", path) => path.to_string(),
            (p, path) => format!("{p}.{path}"),
        };
        if key.is_empty() {
            inner
        } else {
            format!("{key}: {inner}")
        }
    })
}

/// The shortest `cdc.stream_silence_timeout_s` accepted.
const MIN_STREAM_SILENCE_S: u64 = 5;

fn validate(config: &TaskConfig) -> Result<(), String> {
    let name = &config.task.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "task.name: {name:?} must be non-empty and use only letters, digits, '-' and '_'"
        ));
    }
    match &config.source {
        SourceConfig::Postgres(source) => {
            unambiguous_authority(&source.url)?;
            postgres_names_fit(source, name)?;
        }
        SourceConfig::Mysql(source) => unambiguous_authority(&source.url)?,
    }
    let interval = config.validate.interval_minutes;
    if !interval.is_finite() || interval < 0.0 {
        return Err(format!(
            "validate.interval_minutes: {interval} is not a number of minutes; use 0 (off) or more"
        ));
    }
    let fl = &config.full_load;
    if fl.batch_rows == 0 {
        return Err("full_load.batch_rows: must be at least 1".into());
    }
    if fl.batch_mb == 0 {
        return Err("full_load.batch_mb: must be at least 1".into());
    }
    let renew = fl.snapshot_minutes;
    if !renew.is_finite() || renew < 0.0 {
        return Err(format!(
            "full_load.snapshot_minutes: {renew} is not a number of minutes; use 0 (one snapshot \
             per run) or more"
        ));
    }
    let cdc = &config.cdc;
    if cdc.flush_interval_ms == 0 || cdc.flush_rows == 0 || cdc.part_rows == 0 {
        return Err("cdc: flush_interval_ms, flush_rows and part_rows must be at least 1".into());
    }
    if cdc.flush_mb == 0 {
        return Err("cdc.flush_mb: must be at least 1".into());
    }
    // A live server answers a keepalive request within milliseconds, but a busy one (a long
    // checkpoint, a slow disk) can take seconds: a shorter limit would turn such pauses into
    // reconnect loops.
    if cdc.stream_silence_timeout_s < MIN_STREAM_SILENCE_S {
        return Err(format!(
            "cdc.stream_silence_timeout_s: {} is too short; use at least {MIN_STREAM_SILENCE_S} \
             (seconds; the default is 60)",
            cdc.stream_silence_timeout_s
        ));
    }
    if let Some(dir) = &cdc.spool_dir {
        if !dir.is_dir() {
            return Err(format!(
                "cdc.spool_dir: {} is not a folder; create it or point spool_dir at one",
                dir.display()
            ));
        }
    }
    let retry = &config.retry;
    if retry.min_delay_ms == 0 || retry.max_delay_ms < retry.min_delay_ms {
        return Err(
            "retry: min_delay_ms must be at least 1 and max_delay_ms at least min_delay_ms".into(),
        );
    }
    if config
        .service
        .as_ref()
        .is_some_and(|s| !s.ready_max_lag_s.is_finite() || s.ready_max_lag_s <= 0.0)
    {
        return Err("service.ready_max_lag_s: must be a positive number of seconds".into());
    }
    if let Some(service) = &config.service {
        let port = service
            .listen
            .rsplit_once(':')
            .map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(_))) {
            return Err(format!(
                "service.listen: {:?} is not HOST:PORT; write e.g. \"127.0.0.1:9440\" (or \
                 \"0.0.0.0:9440\" to listen on every interface)",
                service.listen
            ));
        }
        if service.header_read_timeout_s == 0 {
            return Err("service.header_read_timeout_s: must be at least 1 (seconds)".into());
        }
        if service.max_connections == 0 {
            return Err("service.max_connections: must be at least 1".into());
        }
        if service.lease_seconds < 3 {
            return Err(format!(
                "service.lease_seconds: {} is too short; give at least 3 (the owner renews every \
                 sixth of it)",
                service.lease_seconds
            ));
        }
        if service.max_tasks == Some(0) {
            return Err("service.max_tasks: must be at least 1 (leave it out for no limit)".into());
        }
    }
    Ok(())
}

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1) and refuses longer slot
/// names, so a long task name would fail at the server, after the load started; slot names also
/// allow only lower-case letters, digits and `_`.
fn postgres_names_fit(source: &PostgresSourceConfig, task: &str) -> Result<(), String> {
    const MAX: usize = 63;
    for (key, configured, name) in [
        ("source.slot", &source.slot, source.slot_name(task)),
        (
            "source.publication",
            &source.publication,
            source.publication_name(task),
        ),
    ] {
        if name.len() <= MAX {
            continue;
        }
        return Err(match configured {
            Some(_) => format!(
                "{key}: {} bytes long; PostgreSQL names hold at most {MAX} bytes, so choose a \
                 shorter one",
                name.len()
            ),
            None => format!(
                "task.name: {} characters long, which makes the default {key} name \
                 (inlet_<task name>) {} bytes; PostgreSQL names hold at most {MAX} bytes, so \
                 shorten task.name to at most {} characters, or set {key} to a shorter name",
                task.len(),
                name.len(),
                MAX - "inlet_".len()
            ),
        });
    }
    if let Some(slot) = &source.slot {
        if slot.is_empty()
            || !slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "source.slot: {slot:?} is not a valid replication slot name; use only lower-case \
                 letters, digits and '_'"
            ));
        }
    }
    Ok(())
}

/// Refuses a source URL whose authority (`user:password@host:port`) holds more than one `@`.
/// URL parsers split such a URL at different `@`s, so part of the password would become the
/// user or the host name, and be shown in logs and `/status`. The message never quotes the URL.
fn unambiguous_authority(url: &str) -> Result<(), String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.matches('@').count() > 1 {
        return Err(
            "source.url: the user and password part holds more than one '@', so where the \
             password ends is ambiguous; percent-encode every '@' inside the user name or \
             password as %40 (postgres://USER:pa%40ss@host/db), or put the password in \
             source.password_file, which needs no encoding"
                .into(),
        );
    }
    Ok(())
}

fn interpolate(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = expand(s, env).map_err(|m| format!("{}: {m}", path.join(".")))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate(item, path, env)?;
                path.pop();
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                path.push(k.clone());
                interpolate(v, path, env)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unclosed ${ in value".to_string())?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{expr}}} is not a valid environment variable reference"
                ));
            }
            // As in the shell, `:-` also replaces a variable that is set but empty.
            match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [task]
        name = "t1"
        [source]
        kind = "postgres"
        url = "postgres://u:${PGPASS}@h:${PORT:-5432}/db"
        [target]
        kind = "parquet"
        url = "./out"
    "#;

    fn env(name: &str) -> Option<String> {
        (name == "PGPASS").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn minimal_with_defaults_and_env() {
        let c = parse(MINIMAL, &env).unwrap();
        let SourceConfig::Postgres(pg) = &c.source else {
            panic!("a postgres source")
        };
        assert_eq!(pg.url, "postgres://u:s3cr3t@h:5432/db");
        assert_eq!(c.full_load.chunk_mb, 64);
        assert_eq!(c.values.on_unrepresentable, Unrepresentable::Fail);
        assert_eq!(c.tables.include, vec!["*.*"]);
    }

    #[test]
    fn the_reload_setting_reads_its_old_name_too() {
        assert!(
            parse(MINIMAL, &env)
                .unwrap()
                .cdc
                .reload_on_unstreamed_change
        );
        for key in ["reload_on_unstreamed_change", "reload_on_added_default"] {
            let text = MINIMAL.replace("[target]", &format!("[cdc]\n{key} = false\n[target]"));
            assert!(!parse(&text, &env).unwrap().cdc.reload_on_unstreamed_change);
        }
    }

    #[test]
    fn values_columns_set_single_columns() {
        let text = format!(
            "{MINIMAL}\n[values]\non_unrepresentable = \"null\"\n[values.columns]\n\
             \"public.pol.n\" = \"text\"\n\"public.events.at\" = \"fail\"\n"
        );
        let c = parse(&text, &env).unwrap();
        let policy = c.values.policy();
        let pol = inlet_core::TableId::new("public", "pol");
        assert_eq!(policy.for_column(&pol, "n"), Unrepresentable::Text);
        assert_eq!(policy.for_column(&pol, "m"), Unrepresentable::Null);
        let events = inlet_core::TableId::new("public", "events");
        assert_eq!(policy.for_column(&events, "at"), Unrepresentable::Fail);

        let bad = format!("{MINIMAL}\n[values.columns]\n\"public.pol.n\" = \"texts\"\n");
        let e = parse(&bad, &env).unwrap_err().to_string();
        assert!(e.contains("values.columns") && e.contains("texts"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&MINIMAL.replace("[target]", "[target]\nbogus = 1"), &env).unwrap_err();
        assert!(e.starts_with("target") && e.contains("bogus"), "{e}");
        let e = parse(
            &MINIMAL.replace(
                "kind = \"postgres\"",
                "kind = \"postgres\"\ntls = \"maybe\"",
            ),
            &env,
        )
        .unwrap_err();
        assert!(e.starts_with("source") && e.contains("maybe"), "{e}");
        let e = parse(&MINIMAL.replace("[task]", "[task]\nmode = \"sync\""), &env).unwrap_err();
        assert!(e.starts_with("task.mode") && e.contains("sync"), "{e}");
        let e = parse(&MINIMAL.replace("${PGPASS}", "${NOPE}"), &env).unwrap_err();
        assert!(
            e.starts_with("source.url: environment variable NOPE is not set"),
            "{e}"
        );
        let e = parse("[task", &env).unwrap_err();
        assert!(e.starts_with("not valid TOML"), "{e}");
        let e = parse(&MINIMAL.replace("name = \"t1\"", "name = \"a b\""), &env).unwrap_err();
        assert!(e.starts_with("task.name"), "{e}");
        let e = parse(
            &MINIMAL.replace("[target]", "[full_load]\nworkers = \"two\"\n[target]"),
            &env,
        )
        .unwrap_err();
        assert!(e.starts_with("full_load.workers"), "{e}");
        let e = parse(
            &MINIMAL.replace("[target]", "[cdc]\nstream_silence_timeout_s = 1\n[target]"),
            &env,
        )
        .unwrap_err();
        assert!(
            e.starts_with("cdc.stream_silence_timeout_s") && e.contains("at least 5"),
            "{e}"
        );
        // An operator's mistakes: a negative renewal period, a misspelt key.
        let full_load = |line: &str| {
            parse(
                &MINIMAL.replace("[target]", &format!("[full_load]\n{line}\n[target]")),
                &env,
            )
            .unwrap_err()
        };
        let e = full_load("snapshot_minutes = -1");
        assert!(
            e.starts_with("full_load.snapshot_minutes: -1 is not a number of minutes"),
            "{e}"
        );
        let e = full_load("snapshot_minute = 5");
        assert!(
            e.starts_with("full_load") && e.contains("snapshot_minute"),
            "{e}"
        );
    }

    #[test]
    fn shipped_task_files_parse() {
        let env = |name: &str| match name {
            "PGPASSWORD" | "MYSQL_PASSWORD" => Some("x".to_string()),
            _ => None,
        };
        for file in [
            "config/example.toml",
            "config/demo.toml",
            "config/compose/shop-postgres.toml",
            "config/compose/shop-mysql.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let c = parse(&text, &env).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!c.task.name.is_empty(), "{file}");
        }
        let example = parse(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"),
            )
            .unwrap(),
            &env,
        )
        .unwrap();
        assert_eq!(
            example.service,
            Some(ServiceConfig {
                listen: "127.0.0.1:9440".into(),
                ready_max_lag_s: 300.0,
                ..ServiceConfig::default()
            })
        );
        assert_eq!(example.cdc.on_slot_lost, SlotLost::Fail);
        assert_eq!(example.retry.max_delay_ms, 60_000);
    }

    #[test]
    fn a_url_with_an_unencoded_at_in_the_password_is_refused() {
        for (kind, url) in [
            ("postgres", "postgres://inlet:Pw@Sekret_42@h/db"),
            ("mysql", "mysql://inlet:Pw@Sekret_42@h:3306/db"),
            ("postgres", "postgres://in@let:Pw@h/db?sslmode=disable"),
        ] {
            let text = MINIMAL
                .replace("kind = \"postgres\"", &format!("kind = \"{kind}\""))
                .replace("postgres://u:${PGPASS}@h:${PORT:-5432}/db", url);
            let e = parse(&text, &env).unwrap_err();
            assert!(
                e.starts_with("source.url:") && e.contains("%40"),
                "{url}: {e}"
            );
            assert!(!e.contains("Sekret") && !e.contains("Pw"), "{e}");
        }
        for url in [
            "postgres://inlet:Pw%40Sekret_42@h/db",
            "postgres://inlet@h/db?options=a@b",
            "postgres://h/db#x@y@z",
        ] {
            let text = MINIMAL.replace("postgres://u:${PGPASS}@h:${PORT:-5432}/db", url);
            parse(&text, &env).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn dollar_escapes() {
        assert_eq!(expand("a$${b}$c", &env).unwrap(), "a${b}$c");
        assert!(expand("${", &env).is_err());
    }
}
