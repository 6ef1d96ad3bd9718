//! Task ownership: one daemon owns a task at a time, through a lease kept in the task's target
//! store beside its checkpoint, and every write of the task's output and checkpoint is fenced by
//! it, so that a daemon that lost the lease (paused, partitioned, or slower than the lease)
//! writes nothing once another has taken the task.
//!
//! The lease is a series of epochs, one object each (`_inlet/<task>/lease/<epoch>`, see
//! [`inlet_core::lease`]). A daemon takes the task by creating the object of the next epoch
//! with a create-if-absent write, so of two takers only one wins; it renews the lease by
//! rewriting its own epoch's object (a counter that changes with each attempt). The record
//! carries its owner's `service.lease_seconds`, and a daemon watching the lease goes by the
//! record's timing, not its own, so daemons configured differently (a rolling config change)
//! still never write one task at once. Another daemon considers the lease expired when the
//! newest epoch's record has not changed for long enough, measured on its OWN monotonic
//! clock: no clock of two hosts is ever compared. It then takes the next epoch, and waits
//! before starting the task until the former owner has fenced itself. A daemon on the same
//! host whose process is gone (or an earlier run of this process) is not waited for. The
//! timing and why it keeps one writer: [`LeaseTiming`].
//!
//! A full load (`task.mode = "full-load"`) runs once per fleet: its owner ends it by writing
//! the time it finished into its record ([`Fence::finish`]) instead of releasing it, and a
//! daemon that started before that time takes the task as done ([`Seen::Done`]) rather than
//! loading it again. A daemon started after it (a new `inlet run` of the task) loads it again,
//! as a single daemon does. This is the one place where clocks of two hosts are compared (the
//! finish time with a daemon's start time); a skew between them matters only to a daemon
//! started within that skew of the finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inlet_core::lease::LeaseStore;
use serde::{Deserialize, Serialize};

use crate::JobError;

/// The lease's timing, from a daemon's `service.lease_seconds` (L).
///
/// | what | rule | L = 30 s |
/// |---|---|---|
/// | the owner renews (`renew_every`, R) | L/6 after the previous renewal ended | 5 s |
/// | a renewal is given up (`renewal_gives_up_after`, G) | L/3 after it was sent | 10 s |
/// | the owner fences itself (`writes_within`, F) | its last successful renewal, timed from when it was SENT, is L/3 old | 10 s |
/// | a watcher takes the lease (`expires_after`, E) | the newest record unchanged for L/2 on the watcher's own clock | 15 s |
/// | the taker waits before writing | the former owner's F, L/3 | 10 s |
/// | a watcher reads the lease (`look_every`, P) | every L/12, and exactly when the record would expire | 2.5 s |
///
/// Why this keeps one writer per task (Ow = the former owner, Tk = the taker; every duration
/// is the OWNER's, which its record carries, see [`LeaseTiming::of_owner`]):
///
/// 1. Ow's writes end before Tk's begin, whatever the store's latency and however long Ow is
///    paused. A renewal, sent at s, first lists the epochs ([`Fence::keep`]) and counts
///    (`renewed = s`) only when that list showed no newer epoch and the rewrite succeeded.
///    The stores list what was created before (S3 is strongly consistent, a folder too), so
///    the list of every renewal Ow counted was served before Tk's create of the next epoch
///    returned, at C: s < C for Ow's last counted renewal (and for its take, its first one).
///    Ow checks its fence before each write ([`Fence::check_now`]: the renewal's age on the
///    monotonic clock, which counts on through SIGSTOP), so it passes no check after
///    s + F < C + F. Tk writes nothing before C + F: it waits F after its take, in
///    `runner::wait_out_former_owner` ([`Fence::former_owner`]). This needs only that the
///    wait is the owner's F; E does not enter. (What remains is a write already past its
///    check when Ow was paused: the README's residual window.)
/// 2. A live owner is not taken from. Tk's clock for a record starts at the look that first
///    returned its bytes, after they landed. If Ow's renewal k landed at λ ≤ that start and Ow
///    is still unfenced, its renewal k+1 was answered before s_k + F ≤ λ + F, so it landed
///    before the start + E (E = F + L/6, the margin for the looks' own latency): the look
///    that would take finds changed bytes and starts the clock again. Every attempt's record
///    differs (its counter goes up even when an attempt fails), so an attempt that failed
///    after landing cannot leave Tk's clock running from the first landing. A healthy owner
///    stays unfenced while two consecutive renewals together take less than F - R = L/6.
///    A renewal given up after G is already fenced: it was sent R or more after the last
///    success, and R + G > F.
/// 3. A dead owner's tasks start elsewhere within L. Its last renewal landed at λ ≤ the
///    kill; Tk's first look after it is within P, its clock then runs E and it looks again
///    right then ([`LeaseWatch::next_look_in`]), takes, and waits F: λ + P + E + F = λ + 11L/12,
///    plus a few store round trips (a look, a create). A paused owner is the same case: its
///    tasks start elsewhere within L of the pause.
///
/// Daemons with different `service.lease_seconds` (a rolling config change): each renews and
/// fences itself by its own L, and writes it into its record; a watcher expires, waits and
/// looks by the record's L, exactly, not its own. Only the owner's R and F enter the
/// argument above, so the record's L is the tightest safe rule; the larger of the two would
/// be safe too but slows a takeover from a shorter-lease owner for nothing, and the
/// watcher's own (as before) let a watcher with L = 15 take the live lease of an owner with
/// L = 60, renewing every 10 s and writing until 20 s after a renewal, after 7.5 s. A record
/// without the field was written by an inlet from before it, with the former timing (renew
/// L/3, fence at 2L/3, expire after L): it is read as that timing with the watcher's own L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `service.lease_seconds`, as records carry it.
    pub lease_seconds: u64,
    /// How often the owner renews.
    pub renew_every: Duration,
    /// How long a renewal may take before the owner gives it up.
    pub renewal_gives_up_after: Duration,
    /// How long after sending its last successful renewal the owner still writes; a taker
    /// of its expired lease waits this long before writing.
    pub writes_within: Duration,
    /// How long a record must stay unchanged, on a watcher's clock, before it takes the task.
    pub expires_after: Duration,
    /// How often a watcher reads the lease.
    pub look_every: Duration,
}

impl LeaseTiming {
    pub fn new(lease_seconds: u64) -> Self {
        let lease_seconds = lease_seconds.max(1);
        let l = Duration::from_secs(lease_seconds);
        Self {
            lease_seconds,
            renew_every: l / 6,
            renewal_gives_up_after: l / 3,
            writes_within: l / 3,
            expires_after: l / 2,
            look_every: l / 12,
        }
    }

    /// The timing of inlet before records carried `lease_seconds`: renew every L/3, fence at
    /// 2L/3, expire after L, look every L/6.
    fn before_records_carried_it(lease_seconds: u64) -> Self {
        let lease_seconds = lease_seconds.max(1);
        let l = Duration::from_secs(lease_seconds);
        Self {
            lease_seconds,
            renew_every: l / 3,
            renewal_gives_up_after: l / 3,
            writes_within: l * 2 / 3,
            expires_after: l,
            look_every: l / 6,
        }
    }

    /// The timing the owner of a record follows, which a watcher of it goes by: the
    /// record's `lease_seconds`; for a record without it (an inlet from before it) or one
    /// that cannot be read, the former timing with this daemon's `lease_seconds`.
    fn of_owner(record: Option<&LeaseRecord>, mine: LeaseTiming) -> Self {
        match record.and_then(|r| r.lease_seconds) {
            Some(theirs) => Self::new(theirs),
            None => Self::before_records_carried_it(mine.lease_seconds),
        }
    }
}

/// This daemon as lease records name it: `<hostname>/<pid>`, and the pid namespace in which
/// that pid means this process (two containers may share a hostname, each with its own pids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonId {
    pub host: String,
    pub pid: u32,
    /// `/proc/self/ns/pid`'s target (`pid:[4026531836]`); empty where it cannot be read.
    pub pid_namespace: String,
    /// The running kernel's `/proc/sys/kernel/random/boot_id` (shared by the containers of one
    /// host, new at every boot); empty where it cannot be read. Two machines given the same
    /// hostname still differ here, so a pid is only ever looked up on the kernel it ran on.
    pub boot_id: String,
    /// When this daemon started, on the wall clock (ms since the Unix epoch): a full load
    /// that finished after it is done for this daemon; one finished before it is loaded again.
    pub started_ms: u64,
}

/// Now on the wall clock, in ms since the Unix epoch (0 for a clock set before 1970).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A wall-clock time in ms since the Unix epoch, as people read it (RFC 3339, UTC).
pub fn show_wall_clock_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms after the Unix epoch"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

impl DaemonId {
    pub fn this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let pid_namespace = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        Self {
            host,
            pid: std::process::id(),
            pid_namespace,
            boot_id,
            started_ms: wall_clock_ms(),
        }
    }
}

impl std::fmt::Display for DaemonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.pid)
    }
}

/// What an epoch's object holds (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LeaseRecord {
    host: String,
    pid: u32,
    #[serde(default)]
    pid_namespace: String,
    #[serde(default)]
    boot_id: String,
    /// Counts the owner's renewal attempts: the record changes with each one.
    renewals: u64,
    /// The owner gave the task up (SIGTERM): another daemon takes it at once.
    released: bool,
    /// The owner finished the task's full load at this wall-clock time (ms since the Unix
    /// epoch): daemons started before it take the task as done. Records of daemons without
    /// full-load leases lack it.
    #[serde(default)]
    finished: Option<u64>,
    /// The owner's `service.lease_seconds`, whose timing ([`LeaseTiming`]) a watcher of this
    /// record goes by. Records of daemons from before it lack it.
    #[serde(default)]
    lease_seconds: Option<u64>,
}

impl LeaseRecord {
    fn of(daemon: &DaemonId, timing: LeaseTiming, renewals: u64, released: bool) -> Self {
        Self {
            host: daemon.host.clone(),
            pid: daemon.pid,
            pid_namespace: daemon.pid_namespace.clone(),
            boot_id: daemon.boot_id.clone(),
            renewals,
            released,
            finished: None,
            lease_seconds: Some(timing.lease_seconds),
        }
    }

    fn owner(&self) -> String {
        format!("{}/{}", self.host, self.pid)
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether the daemon that wrote this record is known to be gone without waiting for the
    /// lease: it ran on this host, in this pid namespace, and its process no longer exists, or
    /// it is this very process (which holds no lease it does not know of: an earlier run of
    /// the task in it, or a lease whose renewal failed). Anywhere else its pid says nothing.
    fn owner_is_gone(&self, me: &DaemonId) -> bool {
        self.host == me.host
            && !me.pid_namespace.is_empty()
            && self.pid_namespace == me.pid_namespace
            && !me.boot_id.is_empty()
            && self.boot_id == me.boot_id
            && (self.pid == me.pid
                || !std::path::Path::new(&format!("/proc/{}", self.pid)).exists())
    }
}

fn store_error(task: &str, e: inlet_core::sink::TargetError) -> JobError {
    JobError::Transient {
        kind: "target",
        message: format!("task {task}: the task's lease: {e}"),
    }
}

/// What a daemon that does not own a task saw of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Nobody holds the lease (none yet, released, expired, or its owner is gone): the next
    /// epoch may be taken.
    Free { next_epoch: u64 },
    /// Daemon `owner` holds epoch `epoch`.
    Owned { owner: String, epoch: u64 },
    /// Daemon `owner` finished the task's full load under epoch `epoch` at `finished_ms` (wall
    /// clock, ms since the Unix epoch), after this daemon started: the task is done here too.
    Done {
        owner: String,
        epoch: u64,
        finished_ms: u64,
    },
}

/// A daemon's watch on the lease of a task it does not own: remembers when the newest
/// record last changed, on this daemon's clock.
pub struct LeaseWatch {
    task: String,
    store: Arc<dyn LeaseStore>,
    timing: LeaseTiming,
    me: DaemonId,
    /// The newest epoch and its record as last read, and when it was first read so.
    last: Option<(u64, Vec<u8>, Instant)>,
    /// When to read the lease again ([`LeaseWatch::next_look_in`]).
    next_look: Duration,
    /// The owner of the epoch the last look found expired (not released, not gone), and how
    /// long after its last renewal it may still write: a taker of that lease lets it run out
    /// before writing ([`Fence::former_owner`]).
    expired_owner: Option<(String, Duration)>,
}

impl LeaseWatch {
    pub fn new(task: &str, store: Arc<dyn LeaseStore>, timing: LeaseTiming, me: DaemonId) -> Self {
        Self {
            task: task.to_string(),
            store,
            timing,
            me,
            last: None,
            next_look: timing.look_every,
            expired_owner: None,
        }
    }

    /// How long to wait before the next [`LeaseWatch::look`]: the owner's look interval (its
    /// record's timing, or this daemon's when there is no owner), and no later than the
    /// moment the newest record would expire, so that a dead owner's task is taken on time.
    pub fn next_look_in(&self) -> Duration {
        self.next_look
    }

    /// Reads the lease once.
    pub async fn look(&mut self) -> Result<Seen, JobError> {
        self.expired_owner = None;
        self.next_look = self.timing.look_every;
        let task = self.task.clone();
        let epochs = self
            .store
            .epochs()
            .await
            .map_err(|e| store_error(&task, e))?;
        let Some(&newest) = epochs.last() else {
            return Ok(Seen::Free { next_epoch: 1 });
        };
        let Some(bytes) = self
            .store
            .read(newest)
            .await
            .map_err(|e| store_error(&task, e))?
        else {
            // Removed between the list and the read: look again next time.
            return Ok(Seen::Owned {
                owner: "unknown".into(),
                epoch: newest,
            });
        };
        let now = Instant::now();
        let unchanged_since = match &self.last {
            Some((epoch, seen, since)) if *epoch == newest && *seen == bytes => *since,
            _ => {
                self.last = Some((newest, bytes.clone(), now));
                now
            }
        };
        let free = Seen::Free {
            next_epoch: newest + 1,
        };
        let record: Option<LeaseRecord> = serde_json::from_slice(&bytes).ok();
        if let Some(r) = &record {
            // Before the other checks: a finished record never changes again and says
            // released, and its daemon may be gone, yet the load is done.
            match r.finished {
                Some(at) if at >= self.me.started_ms => {
                    return Ok(Seen::Done {
                        owner: r.owner(),
                        epoch: newest,
                        finished_ms: at,
                    })
                }
                // Finished before this daemon started: this run loads it again.
                Some(_) => return Ok(free),
                None => {}
            }
            if r.released || r.owner_is_gone(&self.me) {
                return Ok(free);
            }
        }
        // By the owner's timing, which its record carries: it renews and fences itself by
        // its own service.lease_seconds, whatever this daemon's is.
        let owner_timing = LeaseTiming::of_owner(record.as_ref(), self.timing);
        let unchanged = now.duration_since(unchanged_since);
        if unchanged >= owner_timing.expires_after {
            self.expired_owner = Some((
                record.map_or_else(|| "unknown".into(), |r| r.owner()),
                owner_timing.writes_within,
            ));
            return Ok(free);
        }
        self.next_look = owner_timing
            .look_every
            .min(owner_timing.expires_after.saturating_sub(unchanged));
        Ok(Seen::Owned {
            owner: record.map_or_else(|| "unknown".into(), |r| r.owner()),
            epoch: newest,
        })
    }

    /// Tries to take epoch `next_epoch`: the fence of the new owner, or None when another
    /// daemon created that epoch first.
    pub async fn take(&mut self, next_epoch: u64) -> Result<Option<Arc<Fence>>, JobError> {
        let task = self.task.clone();
        let sent = Instant::now();
        let record = LeaseRecord::of(&self.me, self.timing, 0, false);
        let won = self
            .store
            .create(next_epoch, record.encode())
            .await
            .map_err(|e| store_error(&task, e))?;
        if !won {
            return Ok(None);
        }
        // Epochs before the previous one name nobody a fence still compares with.
        if let Ok(epochs) = self.store.epochs().await {
            for old in epochs.into_iter().filter(|&e| e + 1 < next_epoch) {
                let _ = self.store.remove(old).await;
            }
        }
        Ok(Some(Arc::new(Fence {
            task,
            former_owner: self.expired_owner.take(),
            epoch: next_epoch,
            timing: self.timing,
            me: self.me.clone(),
            store: self.store.clone(),
            held: Mutex::new(Held {
                renewed: sent,
                renewals: 0,
                taken_by: None,
                refused: None,
            }),
        })))
    }
}

struct Held {
    /// When the last successful renewal (or the take) was sent.
    renewed: Instant,
    renewals: u64,
    /// The daemon that took a newer epoch, and that epoch, once seen.
    taken_by: Option<(String, u64)>,
    /// Why a write was refused by the lease's timing, once one was: the ownership stays
    /// lost then, even when a renewal sent before lands later (a process starved of CPU wakes
    /// its writer before its renewal loop), so the task is stopped and taken again through
    /// the lease instead of failing for good on a write that was refused.
    refused: Option<String>,
}

/// This daemon's ownership of one task under one epoch, checked before every write of the
/// task's output and checkpoint ([`crate::sink::Target`]).
pub struct Fence {
    task: String,
    /// The daemon whose expired lease this one took, and how long after its last renewal it
    /// may still write ([`Fence::former_owner`]).
    former_owner: Option<(String, Duration)>,
    epoch: u64,
    timing: LeaseTiming,
    me: DaemonId,
    store: Arc<dyn LeaseStore>,
    held: Mutex<Held>,
}

/// How a renewal ended the ownership.
#[derive(Debug, Clone)]
pub struct Lost {
    pub message: String,
    /// The daemon that took the task and its epoch, when one did.
    pub taken_by: Option<(String, u64)>,
}

impl Fence {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When this lease was taken after the former owner's expired (not released, not gone):
    /// that owner, and how long it may still write after the take: its own `writes_within`
    /// (its record's timing). Every renewal it counted was sent before the take, but one sent
    /// just before it lets it write that long after it; the new owner writes nothing before
    /// that has passed ([`LeaseTiming`], point 1).
    pub fn former_owner(&self) -> Option<(&str, Duration)> {
        self.former_owner
            .as_ref()
            .map(|(owner, wait)| (owner.as_str(), *wait))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // Plain data, updated in single assignments: a panic elsewhere leaves it whole.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why this daemon may no longer write, if it may not: a newer epoch was seen, or the last
    /// successful renewal is too old (the process was paused or the store unreachable).
    pub fn lost(&self) -> Option<Lost> {
        let held = self.held();
        if let Some((by, epoch)) = &held.taken_by {
            return Some(Lost {
                message: format!(
                    "task {} was taken by daemon {by} (lease epoch {epoch}); this daemon ({}) \
                     stopped it and writes nothing more to its target",
                    self.task, self.me
                ),
                taken_by: Some((by.clone(), *epoch)),
            });
        }
        if let Some(message) = &held.refused {
            return Some(Lost {
                message: message.clone(),
                taken_by: None,
            });
        }
        let age = held.renewed.elapsed();
        (age >= self.timing.writes_within).then(|| Lost {
            message: format!(
                "task {}: this daemon ({}) last renewed its lease (epoch {}) {:.1} s ago, \
                 longer than a third of service.lease_seconds = {}; another daemon may take \
                 the task, so this one stops writing it",
                self.task,
                self.me,
                self.epoch,
                age.as_secs_f64(),
                self.timing.lease_seconds
            ),
            taken_by: None,
        })
    }

    /// Before a write of the task's output: fails, for good, once the lease is lost.
    pub fn check_now(&self) -> Result<(), JobError> {
        match self.lost() {
            Some(lost) => {
                if lost.taken_by.is_none() {
                    self.held().refused.get_or_insert(lost.message.clone());
                }
                Err(JobError::Failed(lost.message))
            }
            None => Ok(()),
        }
    }

    /// Before a checkpoint: also reads the lease, so a newer epoch stops the write even
    /// within the renewal timing.
    pub async fn check(&self) -> Result<(), JobError> {
        self.check_now()?;
        self.look_for_newer().await?;
        // The look itself may have been slow (or the process paused during it).
        self.check_now()
    }

    /// Notes a newer epoch's owner if there is one.
    async fn look_for_newer(&self) -> Result<(), JobError> {
        let epochs = self
            .store
            .epochs()
            .await
            .map_err(|e| store_error(&self.task, e))?;
        if let Some(&newest) = epochs.last().filter(|&&e| e > self.epoch) {
            let by = match self.store.read(newest).await {
                Ok(Some(bytes)) => serde_json::from_slice::<LeaseRecord>(&bytes)
                    .map_or_else(|_| "unknown".to_string(), |r| r.owner()),
                _ => "unknown".to_string(),
            };
            self.held().taken_by = Some((by, newest));
        }
        Ok(())
    }

    /// Renews the lease every sixth of its duration until it is lost; returns why.
    pub async fn keep(&self) -> Lost {
        // The first renewal is due a sixth of the lease after the last one (the take, or a
        // renewal made while waiting out a former owner), not after this call: a full sixth
        // from here would come as late as the fence itself when the wait ended just before
        // a renewal, and the new owner stopped the task it had just started.
        let mut wait = self
            .timing
            .renew_every
            .saturating_sub(self.held().renewed.elapsed());
        loop {
            tokio::time::sleep(wait).await;
            if let Some(lost) = self.lost() {
                return self.name_the_taker(lost).await;
            }
            let sent = Instant::now();
            let renewed = async {
                self.look_for_newer().await?;
                // Counted per attempt, so that every record written differs: one that landed
                // although its attempt failed must not look the same as the retry's.
                let renewals = {
                    let mut held = self.held();
                    if held.taken_by.is_some() {
                        return Ok(());
                    }
                    held.renewals += 1;
                    held.renewals
                };
                let record = LeaseRecord::of(&self.me, self.timing, renewals, false);
                self.store
                    .rewrite(self.epoch, record.encode())
                    .await
                    .map_err(|e| store_error(&self.task, e))?;
                self.held().renewed = sent;
                Ok::<(), JobError>(())
            };
            // A renewal stuck in a slow store must not keep this loop from seeing the lease run
            // out: the task is stopped as soon as it may no longer write.
            match tokio::time::timeout(self.timing.renewal_gives_up_after, renewed).await {
                Ok(Ok(())) => wait = self.timing.renew_every,
                // A failed renewal is retried soon: the owner fences itself a sixth of the
                // lease after the renewal it would have made, and one store error (an S3 500)
                // must not stop the task.
                Ok(Err(e)) => {
                    wait = self.timing.renew_every / 4;
                    tracing::warn!(task = %self.task, error = %e.message(), "cannot renew the task's lease; retrying")
                }
                Err(_) => {
                    tracing::warn!(task = %self.task, "renewing the task's lease took longer than a third of service.lease_seconds; giving it up")
                }
            }
            if let Some(lost) = self.lost() {
                return self.name_the_taker(lost).await;
            }
        }
    }

    /// A lease lost by its timing (the process was paused, the store unreachable) may have
    /// been taken meanwhile: one look names the taker, for the message.
    pub async fn name_the_taker(&self, lost: Lost) -> Lost {
        if lost.taken_by.is_some() {
            return lost;
        }
        let look =
            tokio::time::timeout(self.timing.renewal_gives_up_after, self.look_for_newer()).await;
        match look {
            Ok(Ok(())) => self.lost().unwrap_or(lost),
            _ => lost,
        }
    }

    /// Gives the task up (after it stopped): the record says released, so another daemon
    /// takes it at once. Not done when the lease is already lost.
    pub async fn release(&self) {
        if self.lost().is_some() {
            return;
        }
        let renewals = self.held().renewals + 1;
        let record = LeaseRecord::of(&self.me, self.timing, renewals, true);
        match self.store.rewrite(self.epoch, record.encode()).await {
            Ok(()) => {
                tracing::info!(task = %self.task, epoch = self.epoch, "released the task's lease")
            }
            Err(e) => {
                tracing::warn!(task = %self.task, error = %e, "cannot release the task's lease; another daemon takes it when it expires")
            }
        }
    }

    /// Ends the lease of a finished full load: the record says when it finished (and
    /// released, for daemons that do not know the field), so the daemons running now take the
    /// task as done and do not load it again. Not done when the lease is already lost.
    pub async fn finish(&self) {
        if self.lost().is_some() {
            return;
        }
        let renewals = self.held().renewals + 1;
        let finished = wall_clock_ms();
        let record = LeaseRecord {
            finished: Some(finished),
            ..LeaseRecord::of(&self.me, self.timing, renewals, true)
        };
        match self.store.rewrite(self.epoch, record.encode()).await {
            Ok(()) => tracing::info!(
                task = %self.task,
                epoch = self.epoch,
                finished = %show_wall_clock_ms(finished),
                "recorded the finished full load in the task's lease: the daemons running now \
                 do not load it again"
            ),
            Err(e) => tracing::warn!(
                task = %self.task,
                error = %e,
                "cannot record the finished full load in the task's lease; another daemon \
                 loads the task again when the lease expires"
            ),
        }
    }
}

/// The fences of the tasks this process owns, by task name: [`crate::sink::Target::new`]
/// fences the target of a task found here, wherever in the task it is built.
fn fences() -> &'static Mutex<HashMap<String, Arc<Fence>>> {
    static FENCES: OnceLock<Mutex<HashMap<String, Arc<Fence>>>> = OnceLock::new();
    FENCES.get_or_init(Default::default)
}

/// While the returned guard lives, targets of `task` built in this process are fenced by
/// `fence`.
pub fn register(task: &str, fence: Arc<Fence>) -> Registered {
    fences()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(task.to_string(), fence);
    Registered {
        task: task.to_string(),
    }
}

/// The fence of `task`, if this process owns it under a lease.
pub fn fence_of(task: &str) -> Option<Arc<Fence>> {
    fences()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(task)
        .cloned()
}

/// Removes a task's fence from the registry when dropped.
pub struct Registered {
    task: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        fences()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.task);
    }
}

#[cfg(test)]
mod tests;
