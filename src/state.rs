//! What every task is doing, shared between the task that does it and the HTTP server that
//! reports it: the phase, per-table progress and counts, the lag and the last committed
//! position (`TaskState`), plus the Prometheus metrics the same updates feed (`Metrics`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    task: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    task: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    task: String,
    /// `equal`, `different` or `failed` (not finished: the task did not catch up, an error).
    result: String,
}

/// The metric families of the whole daemon; each task writes its own label values.
pub struct Metrics {
    registry: Registry,
    rows_loaded: Family<TableLabels, Counter>,
    changes_written: Family<TableLabels, Counter>,
    bytes_written: Family<TableLabels, Counter>,
    snapshot_progress: Family<TableLabels, Gauge<f64, AtomicU64>>,
    lag_seconds: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    slot_retained_wal_bytes: Family<TaskLabels, Gauge>,
    slot_lost: Family<TaskLabels, Gauge>,
    connected: Family<TaskLabels, Gauge>,
    failed: Family<TaskLabels, Gauge>,
    flush_seconds: Family<TaskLabels, Histogram>,
    commit_seconds: Family<TaskLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    retries: Family<ErrorLabels, Counter>,
    index_bytes_per_row: Family<TableLabels, Gauge<f64, AtomicU64>>,
    /// The last scheduled validation of each table (`[validate] interval_minutes`).
    validation_rows: Family<TableLabels, Gauge>,
    validation_missing: Family<TableLabels, Gauge>,
    validation_extra: Family<TableLabels, Gauge>,
    validation_different: Family<TableLabels, Gauge>,
    validations: Family<ValidationLabels, Counter>,
    validation_seconds: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    validation_finished: Family<TaskLabels, Gauge>,
}

fn duration_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("inlet");
        let m = Self {
            rows_loaded: Family::default(),
            changes_written: Family::default(),
            bytes_written: Family::default(),
            snapshot_progress: Family::default(),
            lag_seconds: Family::default(),
            slot_retained_wal_bytes: Family::default(),
            slot_lost: Family::default(),
            connected: Family::default(),
            failed: Family::default(),
            flush_seconds: Family::new_with_constructor(duration_buckets),
            commit_seconds: Family::new_with_constructor(duration_buckets),
            errors: Family::default(),
            retries: Family::default(),
            index_bytes_per_row: Family::default(),
            validation_rows: Family::default(),
            validation_missing: Family::default(),
            validation_extra: Family::default(),
            validation_different: Family::default(),
            validations: Family::default(),
            validation_seconds: Family::default(),
            validation_finished: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rows_loaded",
            "Rows written by the full load",
            m.rows_loaded.clone(),
        );
        registry.register(
            "changes_written",
            "Change rows written to the target",
            m.changes_written.clone(),
        );
        registry.register(
            "bytes_written",
            "Bytes of files written to the target",
            m.bytes_written.clone(),
        );
        registry.register(
            "snapshot_progress_ratio",
            "Full-load progress of a table, 0 to 1 (rows copied / estimated rows)",
            m.snapshot_progress.clone(),
        );
        registry.register(
            "source_lag_seconds",
            "Seconds from the source commit of the oldest change not yet durable to now",
            m.lag_seconds.clone(),
        );
        registry.register(
            "slot_retained_wal_bytes",
            "WAL the PostgreSQL server keeps for the task's replication slot",
            m.slot_retained_wal_bytes.clone(),
        );
        registry.register(
            "slot_lost",
            "1 when the task's replication slot is missing or lost (wal_status = lost)",
            m.slot_lost.clone(),
        );
        registry.register(
            "source_connected",
            "1 while the task is connected to its source",
            m.connected.clone(),
        );
        registry.register(
            "task_failed",
            "1 when the task stopped on an error it will not retry",
            m.failed.clone(),
        );
        registry.register(
            "flush_duration_seconds",
            "Time to write one flush of change files",
            m.flush_seconds.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to write the checkpoint and acknowledge the source after a flush",
            m.commit_seconds.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "retries",
            "Task restarts after a transient error, by kind",
            m.retries.clone(),
        );
        registry.register(
            "pk_index_bytes_per_row",
            "Memory of an upserting target's primary-key index per indexed row",
            m.index_bytes_per_row.clone(),
        );
        for (name, help, family) in [
            (
                "validation_rows_compared",
                "Rows of a table compared by the last scheduled validation",
                &m.validation_rows,
            ),
            (
                "validation_missing_rows",
                "Rows the last scheduled validation found missing from the target",
                &m.validation_missing,
            ),
            (
                "validation_extra_rows",
                "Rows the last scheduled validation found in the target and not in the source",
                &m.validation_extra,
            ),
            (
                "validation_different_rows",
                "Rows the last scheduled validation found with other values in the target",
                &m.validation_different,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "validations",
            "Scheduled validations by result: equal, different, failed (not finished)",
            m.validations.clone(),
        );
        registry.register(
            "validation_duration_seconds",
            "Time the last scheduled validation took",
            m.validation_seconds.clone(),
        );
        registry.register(
            "validation_last_finished_timestamp_seconds",
            "When the last scheduled validation finished (Unix time)",
            m.validation_finished.clone(),
        );
        Self { registry, ..m }
    }

    /// Records a scheduled validation of `task`: per table (name, rows compared, missing,
    /// extra, different), or none when it did not finish; `result` is `equal`, `different` or
    /// `failed`.
    pub fn record_validation(
        &self,
        task: &str,
        tables: &[(String, u64, u64, u64, u64)],
        result: &str,
        seconds: f64,
    ) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (table, rows, missing, extra, different) in tables {
            let labels = TableLabels {
                task: task.to_string(),
                table: table.clone(),
            };
            self.validation_rows
                .get_or_create(&labels)
                .set(gauge(*rows));
            self.validation_missing
                .get_or_create(&labels)
                .set(gauge(*missing));
            self.validation_extra
                .get_or_create(&labels)
                .set(gauge(*extra));
            self.validation_different
                .get_or_create(&labels)
                .set(gauge(*different));
        }
        self.validations
            .get_or_create(&ValidationLabels {
                task: task.to_string(),
                result: result.to_string(),
            })
            .inc();
        let task = TaskLabels {
            task: task.to_string(),
        };
        self.validation_seconds.get_or_create(&task).set(seconds);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.validation_finished
            .get_or_create(&task)
            .set(gauge(now));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    Starting,
    Snapshotting,
    Streaming,
    /// A transient error stopped the task; it starts again after a backoff.
    Retrying {
        reason: String,
    },
    /// A full load finished: in this daemon, or (`reason` says which and when) in the daemon
    /// of the fleet that loaded it after this one started.
    Done {
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Stopped on an error that retrying cannot fix.
    Failed {
        reason: String,
    },
    /// Stopped by a signal, after flushing.
    Stopped,
    /// Not run by this daemon: another daemon owns the task's lease (`owner`), or this one
    /// has no room for it (`service.max_tasks`), or it is waiting for the lease to expire.
    Standby {
        owner: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub table: String,
    /// Rows copied by the full load so far.
    pub snapshot_rows: u64,
    pub snapshot_rows_estimated: Option<u64>,
    /// Percentage of the estimate, capped at 100 once the table is done.
    pub snapshot_percent: Option<f64>,
    pub snapshot_done: bool,
    pub changes_written: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub task: String,
    pub mode: String,
    pub source: String,
    pub target: String,
    #[serde(flatten)]
    pub phase: Phase,
    pub connected: bool,
    /// The last position durable in the target and acknowledged to the source.
    pub position: Option<String>,
    pub lag_seconds: f64,
    pub slot_retained_wal_bytes: Option<i64>,
    pub retries: u64,
    /// The daemon that owns the task's lease (this one when it runs the task), as far as this
    /// daemon knows.
    pub owner: Option<String>,
    /// The epoch of that lease.
    pub lease_epoch: Option<u64>,
    pub tables: Vec<TableStatus>,
}

struct Inner {
    status: TaskStatus,
    /// Source commit time (µs since the epoch) of the oldest change received but not durable.
    oldest_pending_micros: Option<i64>,
    disconnected_since: Option<Instant>,
}

/// One task's observable state. Cheap to clone; every clone is the same state.
#[derive(Clone)]
pub struct TaskState {
    inner: Arc<Mutex<Inner>>,
    metrics: Arc<Metrics>,
    task: String,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

impl TaskState {
    pub fn new(
        metrics: Arc<Metrics>,
        task: &str,
        mode: &str,
        source: String,
        target: String,
    ) -> Self {
        let state = Self {
            inner: Arc::new(Mutex::new(Inner {
                status: TaskStatus {
                    task: task.to_string(),
                    mode: mode.to_string(),
                    source,
                    target,
                    phase: Phase::Starting,
                    connected: false,
                    position: None,
                    lag_seconds: 0.0,
                    slot_retained_wal_bytes: None,
                    retries: 0,
                    owner: None,
                    lease_epoch: None,
                    tables: Vec::new(),
                },
                oldest_pending_micros: None,
                disconnected_since: Some(Instant::now()),
            })),
            metrics,
            task: task.to_string(),
        };
        state
            .metrics
            .connected
            .get_or_create(&state.task_labels())
            .set(0);
        state
            .metrics
            .failed
            .get_or_create(&state.task_labels())
            .set(0);
        state
    }

    /// A state that reports to a registry nobody reads: for one-shot commands.
    pub fn detached(task: &str) -> Self {
        Self::new(
            Arc::new(Metrics::new()),
            task,
            "",
            String::new(),
            String::new(),
        )
    }

    /// A state for work running beside this task's stream (a joining table's load): it counts
    /// into the task's metrics (rows loaded, load progress) but leaves the task's phase and
    /// table list in `/status` to the stream.
    pub fn beside(&self) -> Self {
        let status = self.lock().status.clone();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                status,
                oldest_pending_micros: None,
                disconnected_since: None,
            })),
            metrics: self.metrics.clone(),
            task: self.task.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is plain data: a panic elsewhere cannot leave it half-updated in a way
        // that matters more than losing the report.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn task_labels(&self) -> TaskLabels {
        TaskLabels {
            task: self.task.clone(),
        }
    }

    fn table_labels(&self, table: &str) -> TableLabels {
        TableLabels {
            task: self.task.clone(),
            table: table.to_string(),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        let failed = matches!(phase, Phase::Failed { .. });
        self.metrics
            .failed
            .get_or_create(&self.task_labels())
            .set(i64::from(failed));
        if !matches!(phase, Phase::Snapshotting | Phase::Streaming) {
            self.set_connected(false);
        }
        self.lock().status.phase = phase;
    }

    /// The daemon that owns the task's lease, and its epoch.
    pub fn set_owner(&self, owner: Option<String>, epoch: Option<u64>) {
        let mut inner = self.lock();
        inner.status.owner = owner;
        inner.status.lease_epoch = epoch;
    }

    pub fn set_connected(&self, connected: bool) {
        self.metrics
            .connected
            .get_or_create(&self.task_labels())
            .set(i64::from(connected));
        let mut inner = self.lock();
        inner.status.connected = connected;
        match (connected, inner.disconnected_since) {
            (true, _) => inner.disconnected_since = None,
            (false, None) => inner.disconnected_since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
    }

    /// The tables of this run, with the row estimates of a full load (None when streaming only).
    pub fn set_tables(&self, tables: Vec<(String, Option<u64>)>) {
        let mut inner = self.lock();
        let old = std::mem::take(&mut inner.status.tables);
        inner.status.tables = tables
            .into_iter()
            .map(|(table, estimate)| {
                // Counts survive a restart of the task within the process.
                let previous = old.iter().find(|t| t.table == table);
                TableStatus {
                    snapshot_rows: 0,
                    snapshot_rows_estimated: estimate,
                    snapshot_percent: estimate.map(|_| 0.0),
                    snapshot_done: previous.is_some_and(|p| p.snapshot_done),
                    changes_written: previous.map_or(0, |p| p.changes_written),
                    table,
                }
            })
            .collect();
    }

    pub fn add_snapshot_rows(&self, table: &str, rows: u64) {
        self.metrics
            .rows_loaded
            .get_or_create(&self.table_labels(table))
            .inc_by(rows);
        let mut inner = self.lock();
        if let Some(t) = inner.status.tables.iter_mut().find(|t| t.table == table) {
            t.snapshot_rows += rows;
            if let Some(est) = t.snapshot_rows_estimated.filter(|&e| e > 0) {
                let pct = (t.snapshot_rows as f64 / est as f64 * 100.0).min(99.9);
                t.snapshot_percent = Some(pct);
                self.metrics
                    .snapshot_progress
                    .get_or_create(&self.table_labels(table))
                    .set(pct / 100.0);
            }
        }
    }

    pub fn snapshot_done(&self, table: &str) {
        self.metrics
            .snapshot_progress
            .get_or_create(&self.table_labels(table))
            .set(1.0);
        let mut inner = self.lock();
        if let Some(t) = inner.status.tables.iter_mut().find(|t| t.table == table) {
            t.snapshot_done = true;
            t.snapshot_percent = Some(100.0);
        }
    }

    pub fn add_bytes(&self, table: &str, bytes: u64) {
        self.metrics
            .bytes_written
            .get_or_create(&self.table_labels(table))
            .inc_by(bytes);
    }

    pub fn add_changes(&self, table: &str, rows: u64) {
        self.metrics
            .changes_written
            .get_or_create(&self.table_labels(table))
            .inc_by(rows);
        let mut inner = self.lock();
        if let Some(t) = inner.status.tables.iter_mut().find(|t| t.table == table) {
            t.changes_written += rows;
        }
    }

    /// A transaction was received; until the next [`Self::durable`] it counts towards the lag.
    pub fn received(&self, commit_time_micros: i64) {
        let mut inner = self.lock();
        if inner.oldest_pending_micros.is_none() {
            inner.oldest_pending_micros = Some(commit_time_micros);
        }
    }

    /// Everything received is durable and acknowledged up to `position`.
    pub fn durable(&self, position: String) {
        let mut inner = self.lock();
        inner.oldest_pending_micros = None;
        inner.status.position = Some(position);
    }

    pub fn set_index_bytes_per_row(&self, table: &str, bytes: f64) {
        self.metrics
            .index_bytes_per_row
            .get_or_create(&self.table_labels(table))
            .set(bytes);
    }

    pub fn observe_flush(&self, took: Duration) {
        self.metrics
            .flush_seconds
            .get_or_create(&self.task_labels())
            .observe(took.as_secs_f64());
    }

    pub fn observe_commit(&self, took: Duration) {
        self.metrics
            .commit_seconds
            .get_or_create(&self.task_labels())
            .observe(took.as_secs_f64());
    }

    pub fn set_slot(&self, retained_wal_bytes: Option<i64>, lost: bool) {
        let labels = self.task_labels();
        self.metrics
            .slot_lost
            .get_or_create(&labels)
            .set(i64::from(lost));
        if let Some(bytes) = retained_wal_bytes {
            self.metrics
                .slot_retained_wal_bytes
                .get_or_create(&labels)
                .set(bytes);
        }
        self.lock().status.slot_retained_wal_bytes = retained_wal_bytes;
    }

    pub fn error(&self, kind: &str) {
        self.metrics
            .errors
            .get_or_create(&ErrorLabels {
                task: self.task.clone(),
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn retry(&self, kind: &str) {
        self.metrics
            .retries
            .get_or_create(&ErrorLabels {
                task: self.task.clone(),
                kind: kind.to_string(),
            })
            .inc();
        self.lock().status.retries += 1;
    }

    /// The lag now: the age of the oldest change not yet durable; while disconnected, the time
    /// since the connection was lost; otherwise 0.
    fn lag_seconds(inner: &Inner) -> f64 {
        if let Some(oldest) = inner.oldest_pending_micros {
            return ((now_micros() - oldest).max(0) as f64) / 1e6;
        }
        match (&inner.status.phase, inner.disconnected_since) {
            (Phase::Done { .. } | Phase::Stopped | Phase::Standby { .. }, _) => 0.0,
            (_, Some(since)) if inner.status.mode != "full-load" => since.elapsed().as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The status as of now; also refreshes the lag gauge.
    pub fn snapshot(&self) -> TaskStatus {
        let inner = self.lock();
        let mut status = inner.status.clone();
        status.lag_seconds = Self::lag_seconds(&inner);
        drop(inner);
        self.metrics
            .lag_seconds
            .get_or_create(&self.task_labels())
            .set(status.lag_seconds);
        status
    }

    /// The status as every report shows it (/status, /readyz, /metrics, systemd's STATUS=):
    /// [`Self::snapshot`], except that a task whose lease is lost (`lease::Fence::lost`:
    /// another daemon took it, or this daemon was paused past its fence) shows `standby` and
    /// not connected at once, as it is fenced at once, although the task itself notices only at
    /// its next renewal or write: a daemon continued after SIGSTOP would otherwise report that
    /// it still runs the task.
    pub fn current(&self) -> TaskStatus {
        let mut status = self.snapshot();
        let running = !matches!(status.phase, Phase::Standby { .. } | Phase::Done { .. });
        let lost = running
            .then(|| crate::lease::fence_of(&status.task))
            .flatten()
            .and_then(|fence| fence.lost());
        if let Some(lost) = lost {
            let (owner, epoch) = lost.taken_by.unzip();
            status.owner = owner.clone();
            status.lease_epoch = epoch;
            status.connected = false;
            status.phase = Phase::Standby {
                owner,
                reason: lost.message,
            };
            self.metrics
                .connected
                .get_or_create(&self.task_labels())
                .set(0);
        }
        status
    }
}
