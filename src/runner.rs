//! `inlet run`: every task of a file or folder runs on its own, restarting after transient
//! errors with jittered exponential backoff, while the HTTP endpoints and systemd report on all
//! of them. One task failing never stops the others; its state stays visible until the end.
//!
//! Daemons that share the task files form a fleet: each task runs in the one daemon that holds
//! its lease (module `lease`); the others watch the lease and take the task when it expires
//! or is released, up to `service.max_tasks` tasks per daemon. A full load runs once for the
//! daemons running when it finishes: they show it done (`lease::Seen::Done`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{self, Mode, ServiceConfig, TaskConfig};
use crate::http::{self, Endpoints};
use crate::lease::{self, DaemonId, Fence, LeaseTiming, LeaseWatch, Seen};
use crate::sink::Target;
use crate::state::{Metrics, Phase, TaskState};
use crate::{engine, systemd, JobError};

/// A task that ran this long before failing transiently starts its backoff from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(120);

pub async fn run(path: &Path, listen: Option<String>) -> Result<(), JobError> {
    let tasks = config::load_all(path).map_err(JobError::config)?;
    let service = service_config(&tasks)?;
    let listen = listen.unwrap_or(service.listen.clone());
    let metrics = Arc::new(Metrics::new());
    let me = DaemonId::this_process();
    let timing = LeaseTiming::new(service.lease_seconds);
    let slots = service.max_tasks.map(|n| Arc::new(Semaphore::new(n)));
    let mut states = Vec::with_capacity(tasks.len());
    for (file, task) in &tasks {
        let (source, target) =
            describe(task).map_err(|e| JobError::Config(format!("{}: {}", file.display(), e)))?;
        states.push(TaskState::new(
            metrics.clone(),
            &task.task.name,
            mode_name(task.task.mode),
            source,
            target,
        ));
    }
    let endpoints = Arc::new(Endpoints {
        tasks: states.clone(),
        metrics: metrics.clone(),
        ready_max_lag_s: service.ready_max_lag_s,
        daemon: me.to_string(),
    });
    let limits = http::ConnectionLimits {
        header_read_timeout: Duration::from_secs(service.header_read_timeout_s),
        max_connections: service.max_connections,
    };
    // The address is configuration (`[service] listen` or --listen): a bad or busy one is
    // exit 2, like any other setting to fix.
    let (bound, server) = http::serve(&listen, endpoints, limits)
        .await
        .map_err(JobError::Config)?;
    tracing::info!(address = %bound, tasks = tasks.len(), daemon = %me, "serving /healthz /readyz /metrics /status");

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        crate::wait_for_signal().await;
        tracing::info!("signal received: flushing and stopping");
        let _ = stop.send(true);
    });
    let notifier = systemd::spawn(states.clone(), stopped.clone());
    // Validations on a schedule (`[validate] interval_minutes`), read-only, beside the tasks.
    let validations: Vec<_> = tasks
        .iter()
        .filter(|(_, task)| task.validate.interval_minutes > 0.0)
        .map(|(_, task)| {
            tokio::spawn(crate::validate::schedule(
                task.clone(),
                metrics.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    let mut set = JoinSet::new();
    for ((_, task), state) in tasks.into_iter().zip(states.iter().cloned()) {
        let owner = Owner {
            me: me.clone(),
            timing,
            slots: slots.clone(),
            max_tasks: service.max_tasks,
        };
        let stopped = stopped.clone();
        set.spawn(async move { owner.run(task, state, stopped).await });
    }
    let mut failures = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err((task, e))) => failures.push(format!("task {task}: {}", e.message())),
            Err(e) => failures.push(format!("a task stopped unexpectedly: {e}")),
        }
    }
    notifier.abort();
    for v in validations {
        v.abort();
    }
    server.abort();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(JobError::Failed(failures.join("\n")))
    }
}

/// What a daemon needs to own tasks in a fleet.
struct Owner {
    me: DaemonId,
    timing: LeaseTiming,
    /// Free places under `service.max_tasks` (None: no limit).
    slots: Option<Arc<Semaphore>>,
    max_tasks: Option<usize>,
}

impl Owner {
    /// Runs `task` whenever this daemon holds its lease, until the task ends, fails for good,
    /// or `stopped` turns true; meanwhile watches the lease while another daemon owns it. A task
    /// whose target keeps no lease runs at once.
    async fn run(
        &self,
        task: TaskConfig,
        state: TaskState,
        stopped: watch::Receiver<bool>,
    ) -> Result<(), (String, JobError)> {
        let name = task.task.name.clone();
        let store = Target::new(&task.target, &name)
            .ok()
            .and_then(|t| t.lease_store(&name));
        let Some(store) = store else {
            return supervise(task, state, stopped).await;
        };
        let mut watch = LeaseWatch::new(&name, Arc::from(store), self.timing, self.me.clone());
        // How this daemon last lost the task, shown while the daemon that took it holds it.
        let mut taken: Option<lease::Lost> = None;
        loop {
            let took = self.take(&mut watch, &state, taken.as_ref(), stopped.clone());
            let (fence, slot) = match took.await {
                Watched::Took(fence, slot) => (fence, slot),
                Watched::Stopped => {
                    state.set_phase(Phase::Stopped);
                    return Ok(());
                }
                // Another daemon finished the full load since this one started: done here
                // too, as if this daemon had loaded it (the phase says by whom).
                Watched::Done => return Ok(()),
            };
            state.set_owner(Some(self.me.to_string()), Some(fence.epoch()));
            tracing::info!(task = %name, epoch = fence.epoch(), daemon = %self.me, "took the task's lease; starting it");
            // Registered until the phase below says how the task ended: meanwhile /status
            // reads the fence of a task that still shows running (http::current).
            let _registered = lease::register(&name, fence.clone());
            let ended = match wait_out_former_owner(&fence, &state, &name, stopped.clone()).await {
                FormerOwner::Gone => tokio::select! {
                    result = supervise(task.clone(), state.clone(), stopped.clone()) => Some(result),
                    _ = fence.keep() => None,
                },
                FormerOwner::LeaseLost => None,
                // Stopping while waiting: nothing was written, the lease is given back.
                FormerOwner::Stopped => Some(Ok(())),
            };
            if let Some(Err(_)) = &ended {
                // A write the target refused because the task was taken (an Iceberg table
                // that records a newer owner) shows in the lease: read it before deciding.
                let _ = fence.check().await;
            }
            match (ended, fence.lost()) {
                // A finished full load: the fleet's running daemons take it as done.
                (Some(Ok(())), None) if finished_full_load(&task, &state) => {
                    fence.finish().await;
                    drop(slot);
                    return Ok(());
                }
                // Ended on its own (a signal, a failure, a task that ended) with the lease
                // still held: give it to the fleet at once.
                (Some(result), None) => {
                    fence.release().await;
                    drop(slot);
                    return result;
                }
                (_, Some(lost)) => {
                    let lost = fence.name_the_taker(lost).await;
                    tracing::error!(task = %name, "{}", lost.message);
                    let (owner, epoch) = lost.taken_by.clone().unzip();
                    state.set_owner(owner.clone(), epoch);
                    state.set_phase(Phase::Standby {
                        owner,
                        reason: lost.message.clone(),
                    });
                    taken = Some(lost);
                    drop(slot);
                }
                // `keep` only returns once the lease is lost, which `lost` then reports.
                (None, None) => drop(slot),
            }
        }
    }

    /// Watches the lease until this daemon takes it, is stopped, or sees the task's full
    /// load finished by another daemon since this one started.
    async fn take(
        &self,
        watch: &mut LeaseWatch,
        state: &TaskState,
        taken: Option<&lease::Lost>,
        mut stopped: watch::Receiver<bool>,
    ) -> Watched {
        loop {
            if *stopped.borrow() {
                return Watched::Stopped;
            }
            match watch.look().await {
                Ok(Seen::Free { next_epoch }) => {
                    let slot = match &self.slots {
                        Some(slots) => match slots.clone().try_acquire_owned() {
                            Ok(slot) => Some(Some(slot)),
                            Err(_) => None,
                        },
                        None => Some(None),
                    };
                    match slot {
                        None => state.set_phase(Phase::Standby {
                            owner: None,
                            reason: format!(
                                "nobody owns it, and this daemon already runs \
                                 service.max_tasks = {} tasks",
                                self.max_tasks.unwrap_or(0)
                            ),
                        }),
                        Some(slot) => match watch.take(next_epoch).await {
                            Ok(Some(fence)) => return Watched::Took(fence, slot),
                            // Another daemon created that epoch first.
                            Ok(None) => continue,
                            Err(e) => state.set_phase(Phase::Standby {
                                owner: None,
                                reason: e.message().to_string(),
                            }),
                        },
                    }
                }
                Ok(Seen::Owned { owner, epoch }) => {
                    state.set_owner(Some(owner.clone()), Some(epoch));
                    // While the daemon that took the task from this one holds it, say so.
                    let reason = match taken {
                        Some(lost) if lost.taken_by.as_ref().is_some_and(|t| t.1 == epoch) => {
                            lost.message.clone()
                        }
                        _ => format!("owned by daemon {owner} (lease epoch {epoch})"),
                    };
                    state.set_phase(Phase::Standby {
                        reason,
                        owner: Some(owner),
                    });
                }
                Ok(Seen::Done {
                    owner,
                    epoch,
                    finished_ms,
                }) => {
                    let at = lease::show_wall_clock_ms(finished_ms);
                    tracing::info!(task = %state.snapshot().task, %owner, epoch, finished = %at, "the task's full load was finished by another daemon since this one started; not loading it again");
                    state.set_owner(Some(owner.clone()), Some(epoch));
                    state.set_phase(Phase::Done {
                        reason: Some(format!(
                            "loaded by daemon {owner} (lease epoch {epoch}) at {at}, after this \
                             daemon started; a daemon started later loads it again"
                        )),
                    });
                    return Watched::Done;
                }
                Err(e) => {
                    tracing::warn!(error = %e.message(), "cannot read a task's lease; retrying");
                    state.set_phase(Phase::Standby {
                        owner: None,
                        reason: e.message().to_string(),
                    });
                }
            }
            // By the owner's timing, and right when its record would expire (lease::LeaseTiming).
            tokio::select! {
                _ = tokio::time::sleep(watch.next_look_in()) => {}
                _ = stopped.wait_for(|s| *s) => return Watched::Stopped,
            }
        }
    }
}

/// How a daemon's watch on a task's lease ended.
/// How the wait for a former owner's lease to run out ended.
enum FormerOwner {
    /// It can no longer write (or there was none to wait for): the task may start.
    Gone,
    /// This daemon lost the lease meanwhile.
    LeaseLost,
    /// The daemon is stopping.
    Stopped,
}

/// After taking a lease that expired (its owner neither released it nor is known gone), waits
/// as long as that owner may still write ([`Fence::former_owner`]), renewing meanwhile, so
/// two daemons never write one task's output at the same time.
async fn wait_out_former_owner(
    fence: &Fence,
    state: &TaskState,
    name: &str,
    mut stopped: watch::Receiver<bool>,
) -> FormerOwner {
    let Some((former, wait)) = fence.former_owner() else {
        return FormerOwner::Gone;
    };
    let reason = format!(
        "took the lease of daemon {former} after it expired (epoch {}); waiting {:.1} s, as long \
         as that daemon may still write, before starting",
        fence.epoch(),
        wait.as_secs_f64()
    );
    tracing::info!(task = %name, "{reason}");
    state.set_phase(Phase::Standby {
        owner: None,
        reason,
    });
    tokio::select! {
        _ = tokio::time::sleep(wait) => FormerOwner::Gone,
        _ = fence.keep() => FormerOwner::LeaseLost,
        _ = stopped.wait_for(|s| *s) => FormerOwner::Stopped,
    }
}

enum Watched {
    /// This daemon took the lease (and a place under `service.max_tasks`, if limited).
    Took(Arc<Fence>, Option<tokio::sync::OwnedSemaphorePermit>),
    /// The daemon is stopping.
    Stopped,
    /// Another daemon finished the task's full load after this one started.
    Done,
}

/// Whether `task` ended because its full load finished (not stopped by a signal).
fn finished_full_load(task: &TaskConfig, state: &TaskState) -> bool {
    task.task.mode == Mode::FullLoad && matches!(state.snapshot().phase, Phase::Done { .. })
}

/// Runs one task until it ends, fails for good, or `stopped` turns true.
async fn supervise(
    task: TaskConfig,
    state: TaskState,
    stopped: watch::Receiver<bool>,
) -> Result<(), (String, JobError)> {
    let name = task.task.name.clone();
    let retry = &task.retry;
    let new_backoff = || {
        RetryDelays::new(
            Duration::from_millis(retry.min_delay_ms),
            Duration::from_millis(retry.max_delay_ms),
        )
    };
    let mut backoff = new_backoff();
    loop {
        state.set_phase(Phase::Starting);
        let started = Instant::now();
        let work = engine::run(&task, &state, stopped.clone());
        let Some(result) = until_stopped(work, &state, stopped.clone(), &name).await else {
            state.set_phase(Phase::Stopped);
            return Ok(());
        };
        let e = match result {
            Ok(()) => {
                state.set_phase(if task.task.mode == Mode::FullLoad {
                    Phase::Done { reason: None }
                } else {
                    Phase::Stopped
                });
                return Ok(());
            }
            Err(e) => e,
        };
        let JobError::Transient { kind, message } = &e else {
            // A write the task's fence refused: the task stopped because this daemon may no
            // longer own it, not because it failed; the caller shows it `standby` and watches
            // the lease.
            if crate::lease::fence_of(&name).is_some_and(|f| f.lost().is_some()) {
                return Err((name, e));
            }
            state.error("fatal");
            tracing::error!(task = %name, error = %e.message(), "task failed; it will not be retried");
            state.set_phase(Phase::Failed {
                reason: e.message().to_string(),
            });
            return Err((name, e));
        };
        if *stopped.borrow() {
            state.set_phase(Phase::Stopped);
            return Ok(());
        }
        state.error(kind);
        state.retry(kind);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = new_backoff();
        }
        let delay = backoff.next_delay();
        tracing::warn!(task = %name, kind, error = %message, retry_in_s = delay.as_secs_f32(), "transient error; restarting the task from its checkpoint");
        state.set_phase(Phase::Retrying {
            reason: format!("{message} (retrying in {:.1} s)", delay.as_secs_f32()),
        });
        let mut stopped = stopped.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|s| *s) => {
                state.set_phase(Phase::Stopped);
                return Ok(());
            }
        }
    }
}

/// Runs `work` until it ends. On SIGTERM/SIGINT a streaming task gets [`STOP_GRACE`] to flush,
/// commit and acknowledge (it watches `stopped` itself); a task still connecting, loading or
/// waiting has nothing to flush and is dropped at once, so the process never outlives a signal
/// by more than seconds, whatever the source does. `None` when the task was dropped.
async fn until_stopped<F: std::future::Future<Output = Result<(), JobError>>>(
    work: F,
    state: &TaskState,
    stopped: watch::Receiver<bool>,
    name: &str,
) -> Option<Result<(), JobError>> {
    tokio::pin!(work);
    let mut signal = stopped;
    tokio::select! {
        result = &mut work => return Some(result),
        _ = signal.wait_for(|s| *s) => {}
    }
    let phase = state.snapshot().phase;
    let grace = match phase {
        Phase::Streaming => STOP_GRACE,
        _ => Duration::ZERO,
    };
    match tokio::time::timeout(grace, &mut work).await {
        Ok(result) => Some(result),
        Err(_) => {
            let what = match phase {
                Phase::Starting => "stopped while connecting to the source; nothing was written",
                Phase::Snapshotting => {
                    "stopped during its full load, which is not complete: do not read the \
                     tables it was loading until a full load finishes"
                }
                Phase::Streaming => &format!(
                    "stopped after it did not finish flushing within {} s",
                    STOP_GRACE.as_secs()
                ),
                _ => "stopped",
            };
            tracing::warn!(
                task = %name,
                "{what}; nothing after its last checkpoint was acknowledged, so the next start \
                 takes it up from there"
            );
            None
        }
    }
}

/// How long a streaming task may take to flush and commit after SIGTERM before it is dropped
/// (systemd's default TimeoutStopSec is 90 s).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `[retry]`'s delays: exponential from `min` (doubling per attempt) up to `max`, with jitter
/// inside that bound, so that tasks failing together do not retry together and no delay ever
/// exceeds `retry.max_delay_ms` (jitter added after the cap once made it up to twice that).
struct RetryDelays {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl RetryDelays {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay: the capped exponential step `base`, minus up to half of it at random
    /// (never below `min`).
    fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(30))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = base / 2;
        let jitter = half.mul_f64(random_unit());
        base.saturating_sub(jitter).max(self.min)
    }
}

/// A number in [0, 1) from the standard library's randomly seeded hasher: jitter needs no
/// cryptographic quality and no extra crate.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The `[service]` settings: those of the task files that have the section, which must agree.
fn service_config(tasks: &[(std::path::PathBuf, TaskConfig)]) -> Result<ServiceConfig, JobError> {
    let mut chosen: Option<(&Path, &ServiceConfig)> = None;
    for (file, task) in tasks {
        let Some(s) = &task.service else { continue };
        match chosen {
            Some((first, c)) if c != s => {
                return Err(JobError::Config(format!(
                    "{}: [service] differs from the one in {}; the daemon has one HTTP endpoint, \
                     so set [service] in one task file only (or the same in all)",
                    file.display(),
                    first.display()
                )))
            }
            Some(_) => {}
            None => chosen = Some((file, s)),
        }
    }
    Ok(chosen.map(|(_, s)| s.clone()).unwrap_or_default())
}

/// Source and target as shown in `/status`: servers and URLs, never credentials.
fn describe(task: &TaskConfig) -> Result<(String, String), String> {
    let source = engine::describe_source(task)?;
    let target = Target::new(&task.target, &task.task.name).map_err(|e| e.message().to_string())?;
    Ok((source, target.describe()))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::FullLoad => "full-load",
        Mode::Cdc => "cdc",
        Mode::FullLoadAndCdc => "full-load-and-cdc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12.12: no delay exceeds retry.max_delay_ms or falls below min_delay_ms; the delays grow
    /// to the cap and keep jitter there.
    #[test]
    fn retry_delays_stay_within_the_configured_bounds() {
        for (min_ms, max_ms) in [(1_000, 60_000), (200, 1_000), (500, 500), (1, 3)] {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
            let mut seen_max = Duration::ZERO;
            let mut at_cap = std::collections::BTreeSet::new();
            for _ in 0..20 {
                let mut delays = RetryDelays::new(min, max);
                for attempt in 0..60 {
                    let d = delays.next_delay();
                    assert!(d <= max, "{min_ms}..{max_ms} ms, attempt {attempt}: {d:?}");
                    assert!(d >= min, "{min_ms}..{max_ms} ms, attempt {attempt}: {d:?}");
                    seen_max = seen_max.max(d);
                    if attempt > 40 {
                        at_cap.insert(d);
                    }
                }
            }
            assert!(
                seen_max * 2 > max,
                "{min_ms}..{max_ms} ms never came near the cap"
            );
            if max_ms >= 1_000 {
                assert!(at_cap.len() > 1, "no jitter at the cap: {at_cap:?}");
            }
        }
    }
}
