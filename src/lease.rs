//! Task ownership: one daemon owns a task at a time, through a lease kept in the task's target
//! store beside its checkpoint, and every write of the task's output and checkpoint is fenced by
//! it, so that a daemon that lost the lease (paused, partitioned, or slower than the lease)
//! writes nothing once another has taken the task.
//!
//! The lease is a series of epochs, one object each (`_inlet/<task>/lease/<epoch>`, see
//! [`inlet_core::lease`]). A daemon takes the task by creating the object of the next epoch
//! with a create-if-absent write, so of two takers only one wins; it renews the lease by
//! rewriting its own epoch's object (a counter that changes each time) every third of the lease
//! duration. Another daemon considers the lease expired when the newest epoch's record has not
//! changed for a whole lease duration measured on its OWN monotonic clock: no clock of two
//! hosts is ever compared. It then takes the next epoch. A daemon on the same host whose
//! process is gone (or an earlier run of this process) is not waited for.
//!
//! The owner fences itself: it writes only while its last successful renewal (timed from when
//! the renewal was sent) is younger than two thirds of the lease duration, on its monotonic
//! clock, which goes on counting while the process is stopped (SIGSTOP). A taker waits a whole
//! duration after it last saw the record change, which is after the owner sent it, so the
//! owner has stopped writing a third of the duration before anyone can take over. The owner
//! also stops as soon as it sees a newer epoch (at each renewal and before each checkpoint).
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

/// The lease's timing, from `service.lease_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a record must stay unchanged before another daemon takes the task.
    pub duration: Duration,
    /// How often the owner renews (a third of the duration).
    pub renew_every: Duration,
    /// How long after its last successful renewal the owner still writes (two thirds of it).
    pub writes_within: Duration,
}

impl LeaseTiming {
    pub fn new(lease_seconds: u64) -> Self {
        let duration = Duration::from_secs(lease_seconds.max(1));
        Self {
            duration,
            renew_every: duration / 3,
            writes_within: duration * 2 / 3,
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
    /// Counts the owner's renewals: the record changes with each one.
    renewals: u64,
    /// The owner gave the task up (SIGTERM): another daemon takes it at once.
    released: bool,
    /// The owner finished the task's full load at this wall-clock time (ms since the Unix
    /// epoch): daemons started before it take the task as done. Records of daemons without
    /// full-load leases lack it.
    #[serde(default)]
    finished: Option<u64>,
}

impl LeaseRecord {
    fn of(daemon: &DaemonId, renewals: u64, released: bool) -> Self {
        Self {
            host: daemon.host.clone(),
            pid: daemon.pid,
            pid_namespace: daemon.pid_namespace.clone(),
            boot_id: daemon.boot_id.clone(),
            renewals,
            released,
            finished: None,
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
    /// The owner of the epoch the last look found expired (not released, not gone): a taker
    /// of that lease lets it run out before writing ([`Fence::former_owner`]).
    expired_owner: Option<String>,
}

impl LeaseWatch {
    pub fn new(task: &str, store: Arc<dyn LeaseStore>, timing: LeaseTiming, me: DaemonId) -> Self {
        Self {
            task: task.to_string(),
            store,
            timing,
            me,
            last: None,
            expired_owner: None,
        }
    }

    /// Reads the lease once.
    pub async fn look(&mut self) -> Result<Seen, JobError> {
        self.expired_owner = None;
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
        if now.duration_since(unchanged_since) >= self.timing.duration {
            self.expired_owner = Some(record.map_or_else(|| "unknown".into(), |r| r.owner()));
            return Ok(free);
        }
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
        let record = LeaseRecord::of(&self.me, 0, false);
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
}

/// This daemon's ownership of one task under one epoch, checked before every write of the
/// task's output and checkpoint ([`crate::sink::Target`]).
pub struct Fence {
    task: String,
    /// The daemon whose expired lease this one took: it may still write until its own
    /// renewals run out ([`Fence::former_owner`]).
    former_owner: Option<String>,
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
    /// that owner, and how long it may still write. Its renewals are counted from when they
    /// were sent, and one sent just before the take that lands after the taker's last look
    /// lets it write for up to two thirds of the lease after the take; the new owner writes
    /// nothing before that has passed.
    pub fn former_owner(&self) -> Option<(&str, Duration)> {
        self.former_owner
            .as_deref()
            .map(|owner| (owner, self.timing.writes_within))
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
        let age = held.renewed.elapsed();
        (age >= self.timing.writes_within).then(|| Lost {
            message: format!(
                "task {}: this daemon ({}) last renewed its lease (epoch {}) {:.1} s ago, \
                 longer than two thirds of service.lease_seconds = {}; another daemon may take \
                 the task, so this one stops writing it",
                self.task,
                self.me,
                self.epoch,
                age.as_secs_f64(),
                self.timing.duration.as_secs()
            ),
            taken_by: None,
        })
    }

    /// Before a write of the task's output: fails, for good, once the lease is lost.
    pub fn check_now(&self) -> Result<(), JobError> {
        match self.lost() {
            Some(lost) => Err(JobError::Failed(lost.message)),
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

    /// Renews the lease every third of its duration until it is lost; returns why.
    pub async fn keep(&self) -> Lost {
        loop {
            tokio::time::sleep(self.timing.renew_every).await;
            if let Some(lost) = self.lost() {
                return self.name_the_taker(lost).await;
            }
            let sent = Instant::now();
            let renewed = async {
                self.look_for_newer().await?;
                if self.held().taken_by.is_some() {
                    return Ok(());
                }
                let renewals = self.held().renewals + 1;
                let record = LeaseRecord::of(&self.me, renewals, false);
                self.store
                    .rewrite(self.epoch, record.encode())
                    .await
                    .map_err(|e| store_error(&self.task, e))?;
                let mut held = self.held();
                held.renewals = renewals;
                held.renewed = sent;
                Ok::<(), JobError>(())
            };
            // A renewal stuck in a slow store must not keep this loop from seeing the lease run
            // out: the task is stopped as soon as it may no longer write.
            match tokio::time::timeout(self.timing.renew_every, renewed).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task = %self.task, error = %e.message(), "cannot renew the task's lease; retrying")
                }
                Err(_) => {
                    tracing::warn!(task = %self.task, "renewing the task's lease took longer than a third of service.lease_seconds; retrying")
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
        let look = tokio::time::timeout(self.timing.renew_every, self.look_for_newer()).await;
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
        let record = LeaseRecord::of(&self.me, renewals, true);
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
            ..LeaseRecord::of(&self.me, renewals, true)
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
mod tests {
    use super::*;

    /// Lease objects in memory, as a store with create-if-absent writes keeps them.
    #[derive(Default)]
    struct MemoryLease(Mutex<std::collections::BTreeMap<u64, Vec<u8>>>);

    #[async_trait::async_trait]
    impl LeaseStore for MemoryLease {
        fn location(&self) -> String {
            "memory".into()
        }
        async fn epochs(&self) -> Result<Vec<u64>, inlet_core::sink::TargetError> {
            Ok(self.0.lock().unwrap().keys().copied().collect())
        }
        async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, inlet_core::sink::TargetError> {
            Ok(self.0.lock().unwrap().get(&epoch).cloned())
        }
        async fn create(
            &self,
            epoch: u64,
            record: Vec<u8>,
        ) -> Result<bool, inlet_core::sink::TargetError> {
            let mut objects = self.0.lock().unwrap();
            if objects.contains_key(&epoch) {
                return Ok(false);
            }
            objects.insert(epoch, record);
            Ok(true)
        }
        async fn rewrite(
            &self,
            epoch: u64,
            record: Vec<u8>,
        ) -> Result<(), inlet_core::sink::TargetError> {
            self.0.lock().unwrap().insert(epoch, record);
            Ok(())
        }
        async fn remove(&self, epoch: u64) -> Result<(), inlet_core::sink::TargetError> {
            self.0.lock().unwrap().remove(&epoch);
            Ok(())
        }
    }

    fn daemon(host: &str) -> DaemonId {
        DaemonId {
            host: host.into(),
            pid: 7,
            pid_namespace: "pid:[1]".into(),
            boot_id: "another kernel".into(),
            started_ms: 0,
        }
    }

    /// A lease taken after it expired makes the taker wait as long as the former owner may
    /// still write (a renewal of it in flight at the take may land after the taker's last
    /// look); one the former owner released is started at once.
    #[tokio::test]
    async fn a_lease_taken_after_it_expired_waits_out_the_former_owner() {
        let store: Arc<dyn LeaseStore> = Arc::new(MemoryLease::default());
        let timing = LeaseTiming::new(3);
        let mut a = LeaseWatch::new("t", store.clone(), timing, daemon("a"));
        let mut b = LeaseWatch::new("t", store.clone(), timing, daemon("b"));
        assert!(matches!(
            a.look().await.unwrap(),
            Seen::Free { next_epoch: 1 }
        ));
        let first = a.take(1).await.unwrap().unwrap();
        assert!(first.former_owner().is_none(), "nobody held it before");
        assert!(matches!(
            b.look().await.unwrap(),
            Seen::Owned { epoch: 1, .. }
        ));
        // a stops renewing (paused, cut off, or its renewals stuck in the store).
        tokio::time::sleep(timing.duration + Duration::from_millis(100)).await;
        assert!(matches!(
            b.look().await.unwrap(),
            Seen::Free { next_epoch: 2 }
        ));
        let second = b.take(2).await.unwrap().unwrap();
        assert_eq!(
            second.former_owner(),
            Some(("a/7", timing.writes_within)),
            "the taker of an expired lease waits out its former owner"
        );
        // b gives the task up: the next taker starts at once.
        second.release().await;
        assert!(matches!(
            a.look().await.unwrap(),
            Seen::Free { next_epoch: 3 }
        ));
        let third = a.take(3).await.unwrap().unwrap();
        assert!(
            third.former_owner().is_none(),
            "a released lease is not waited for"
        );
    }

    #[test]
    fn a_record_without_a_finish_time_reads_as_unfinished() {
        let old = br#"{"host":"h","pid":7,"pid_namespace":"pid:[1]","renewals":2,"released":true}"#;
        let record: LeaseRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(record.finished, None);
        let finished = LeaseRecord {
            finished: Some(1_765_000_000_123),
            ..record
        };
        let back: LeaseRecord = serde_json::from_slice(&finished.encode()).unwrap();
        assert_eq!(back, finished);
        assert_eq!(
            show_wall_clock_ms(1_765_000_000_123),
            "2025-12-06T05:46:40.123Z"
        );
    }

    #[test]
    fn timing_renews_every_third_and_writes_within_two_thirds() {
        let t = LeaseTiming::new(30);
        assert_eq!(t.duration, Duration::from_secs(30));
        assert_eq!(t.renew_every, Duration::from_secs(10));
        assert_eq!(t.writes_within, Duration::from_secs(20));
    }

    #[test]
    fn a_record_of_a_gone_process_on_this_host_is_not_waited_for() {
        let me = DaemonId::this_process();
        assert!(me.pid_namespace.starts_with("pid:["), "{me:?}");
        let on_this_host = |pid: u32| DaemonId { pid, ..me.clone() };
        assert!(LeaseRecord::of(&me, 3, false).owner_is_gone(&me));
        // pid 1 exists in every pid namespace.
        assert!(!LeaseRecord::of(&on_this_host(1), 3, false).owner_is_gone(&me));
        assert!(LeaseRecord::of(&on_this_host(u32::MAX - 1), 3, false).owner_is_gone(&me));
        // Another host, or another container with this hostname: its pid means nothing here.
        let elsewhere = DaemonId {
            host: "another-host".into(),
            ..on_this_host(u32::MAX - 1)
        };
        assert!(!LeaseRecord::of(&elsewhere, 3, false).owner_is_gone(&me));
        let other_namespace = DaemonId {
            pid_namespace: "pid:[1]".into(),
            ..on_this_host(me.pid)
        };
        assert!(!LeaseRecord::of(&other_namespace, 3, false).owner_is_gone(&me));
        // Another machine given this hostname, in its initial pid namespace (whose link reads
        // the same on every machine): another kernel, so its pid means nothing here either.
        let same_name_other_machine = DaemonId {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..on_this_host(u32::MAX - 1)
        };
        assert!(!LeaseRecord::of(&same_name_other_machine, 3, false).owner_is_gone(&me));
        // A record of an earlier version, without the namespace, is waited for.
        let mut old = LeaseRecord::of(&on_this_host(u32::MAX - 1), 3, false);
        old.pid_namespace.clear();
        assert!(!old.owner_is_gone(&me));
    }
}
