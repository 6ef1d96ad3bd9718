//! Full-load progress: a bar per table on a terminal, a log line per table every few seconds
//! otherwise (systemd, containers, CI).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::state::TaskState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(10);

struct TableProgress {
    name: String,
    estimate: Option<u64>,
    rows: AtomicU64,
    done: AtomicBool,
    bar: Option<ProgressBar>,
}

/// Shared by the workers; counting is lock-free.
#[derive(Clone)]
pub struct Progress {
    tables: Arc<Vec<TableProgress>>,
    /// Where `/status` and the metrics read the same counts.
    state: TaskState,
}

impl Progress {
    /// `tables`: name and row estimate of each table, in the runner's table order.
    pub fn new(tables: Vec<(String, Option<u64>)>, state: TaskState) -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let style = ProgressStyle::with_template(
            "{prefix:>30.bold} {bar:30} {human_pos:>11}/{human_len:11} rows {per_sec:>14} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let tables = tables
            .into_iter()
            .map(|(name, estimate)| {
                let bar = multi.as_ref().map(|m| {
                    let bar = m.add(ProgressBar::new(estimate.unwrap_or(0)));
                    bar.set_style(style.clone());
                    bar.set_prefix(name.clone());
                    bar
                });
                TableProgress {
                    name,
                    estimate,
                    rows: AtomicU64::new(0),
                    done: AtomicBool::new(false),
                    bar,
                }
            })
            .collect();
        Self {
            tables: Arc::new(tables),
            state,
        }
    }

    pub fn add_rows(&self, table: usize, rows: u64) {
        let Some(t) = self.tables.get(table) else {
            return;
        };
        let total = t.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        self.state.add_snapshot_rows(&t.name, rows);
        if let Some(bar) = &t.bar {
            // Estimates come from statistics and may be low; never show more than 100 %.
            if bar.length().is_some_and(|len| total > len) {
                bar.set_length(total);
            }
            bar.set_position(total);
        }
    }

    /// `rows` of `table` were loaded by earlier runs of a load that resumes: counted as loaded
    /// (the bar and `/status` show the whole table), without a rate.
    pub fn resumed(&self, table: usize, rows: u64) {
        self.add_rows(table, rows);
        if let Some(bar) = self.tables.get(table).and_then(|t| t.bar.as_ref()) {
            bar.set_message(format!("resumed: {rows} rows kept"));
        }
    }

    /// Every chunk of `table` was read and handed to the writers; its files may still be
    /// closing (and fail: disk full), so this neither logs "table loaded" nor tells /status.
    pub fn table_read(&self, table: usize) {
        let Some(t) = self.tables.get(table) else {
            return;
        };
        t.done.store(true, Ordering::Relaxed);
        if let Some(bar) = &t.bar {
            bar.set_message("read; closing files");
        }
    }

    /// `table` is loaded: its files are complete in the target.
    pub fn table_done(&self, table: usize) {
        let Some(t) = self.tables.get(table) else {
            return;
        };
        t.done.store(true, Ordering::Relaxed);
        self.state.snapshot_done(&t.name);
        let rows = t.rows.load(Ordering::Relaxed);
        match &t.bar {
            Some(bar) => {
                bar.set_length(rows);
                bar.finish_with_message("done");
            }
            None => tracing::info!(table = %t.name, rows, "table loaded"),
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.tables.iter().any(|t| t.bar.is_some())
    }

    /// Logs a line per unfinished table every few seconds, until the returned guard drops.
    pub fn spawn_logger(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.is_terminal() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            // Rows kept from earlier runs of a resumed load are no rate of this one.
            let mut last: Vec<u64> = this
                .tables
                .iter()
                .map(|t| t.rows.load(Ordering::Relaxed))
                .collect();
            let mut tick = tokio::time::interval(LOG_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                for (i, t) in this.tables.iter().enumerate() {
                    let rows = t.rows.load(Ordering::Relaxed);
                    if t.done.load(Ordering::Relaxed) || rows == last[i] {
                        continue;
                    }
                    let rate = (rows - last[i]) as f64 / LOG_EVERY.as_secs_f64();
                    last[i] = rows;
                    match t.estimate.filter(|e| *e > 0) {
                        Some(e) => tracing::info!(
                            table = %t.name, rows, percent = format!("{:.0}", (rows as f64 * 100.0 / e as f64).min(100.0)),
                            rows_per_s = rate as u64, "loading"
                        ),
                        None => {
                            tracing::info!(table = %t.name, rows, rows_per_s = rate as u64, "loading")
                        }
                    }
                }
            }
        }))
    }
}
