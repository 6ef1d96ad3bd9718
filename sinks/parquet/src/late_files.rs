//! Change files that a former owner of the task lands after this daemon took the task over.
//!
//! A daemon paused (SIGSTOP, a VM pause) while a change file's upload was under way lands it
//! when it continues, after its lease expired and another daemon took the task. Such a file
//! either landed before the new owner opened the table, and then counts in the table's
//! committed position (the new owner skips what it holds), or after, and then duplicates
//! changes the new owner writes itself. The second kind is told from the first by what the
//! folder held when the table was opened, and deleted: the new owner lists the table at its
//! commits for a while after a takeover of an expired lease ([`SWEEP_FOR`], at most every
//! [`SWEEP_EVERY`]). Deleting the first kind would lose its changes, so only files that appear
//! after the opening, start past the opening's committed position and were not written here go.
//!
//! The record of a takeover outlives one run of the task: a task restarted in this process
//! (a transient error) opens its tables again under the same lease epoch, and a late file that
//! landed after its first opening must not then count as present (its changes would stay beside
//! the copy this daemon wrote before the restart). So does a lease this daemon lost and took
//! back (a process starved of CPU fences itself; its own record then counts as gone and the
//! next epoch has no former owner): the epoch right after the record's was this daemon's too,
//! nobody else wrote in between, and a former owner's file landing meanwhile is still late.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use inlet_core::Position;

use crate::changes::{ChangeFile, ChangeLogTable};
use crate::SinkError;

/// How long after opening a table a new owner looks for a former owner's late files. A paused
/// process lands its upload whenever it continues, but S3 ends a request whose client stopped
/// sending within about 20 s, so on S3 nothing lands this late.
pub(crate) const SWEEP_FOR: Duration = Duration::from_secs(600);

/// The least time between two looks of one table.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The records of this process's takeovers, by table folder.
static TAKEOVERS: Mutex<BTreeMap<String, Arc<Mutex<Takeover>>>> = Mutex::new(BTreeMap::new());

/// Plain data, replaced or extended whole: a panic elsewhere leaves it usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one table's folder held when this daemon first opened it after taking the task over,
/// and what it wrote since.
struct Takeover {
    /// The lease epoch this daemon holds the task under: the takeover's, or a later one it took
    /// back from itself.
    epoch: u64,
    /// The table's committed position as that opening read it from the folder.
    opened_at: Option<Position>,
    /// The change files the folder held then.
    present: HashSet<String>,
    /// The change files this daemon wrote since.
    written: HashSet<String>,
    until: Instant,
    next: Instant,
}

impl Takeover {
    fn opened(epoch: u64, names: Vec<String>, until: Instant) -> Self {
        Self {
            epoch,
            opened_at: ChangeFile::highest_last(&names),
            present: names.into_iter().collect(),
            written: HashSet::new(),
            until,
            next: Instant::now(),
        }
    }

    /// Whether `name` is a former owner's file landed after the opening.
    fn is_late(&self, name: &str) -> bool {
        let after_opening = ChangeFile::first_position(name)
            .is_some_and(|first| self.opened_at.is_none_or(|at| first > at));
        after_opening && !self.present.contains(name) && !self.written.contains(name)
    }
}

/// One table's takeover record, as a change table of this run holds it.
pub(crate) struct LateFiles {
    log: ChangeLogTable,
    takeover: Arc<Mutex<Takeover>>,
}

impl LateFiles {
    /// Opens the table under lease `epoch`: the table's committed position, and the record to
    /// sweep with, if any. A takeover of an expired lease (`after_expiry`) starts a record of
    /// what the folder holds; the same epoch again (the task restarted) or the next one (this
    /// daemon took back its own lease) goes on with this process's record. Opening again
    /// deletes the late files first when this daemon has written changes since (they duplicate
    /// them), and counts the files it keeps in the position.
    pub(crate) async fn open(
        log: ChangeLogTable,
        epoch: u64,
        after_expiry: bool,
    ) -> Result<(Option<Self>, Option<Position>), SinkError> {
        let folder = log.folder_location();
        let earlier = {
            let mut takeovers = lock(&TAKEOVERS);
            takeovers.retain(|_, t| Instant::now() < lock(t).until);
            let ours = takeovers.get(&folder).cloned().filter(|t| {
                let mut t = lock(t);
                // Epochs are taken one after another: the one after this daemon's was taken
                // by nobody else.
                let goes_on = t.epoch == epoch || t.epoch + 1 == epoch;
                if goes_on {
                    t.epoch = epoch;
                }
                goes_on
            });
            if ours.is_none() {
                // Another daemon held the task since: its files are no late ones.
                takeovers.remove(&folder);
            }
            ours
        };
        let Some(takeover) = earlier else {
            if !after_expiry {
                let at = log.committed_position().await?;
                return Ok((None, at));
            }
            let names = log.change_file_names().await?;
            let takeover = Takeover::opened(epoch, names, Instant::now() + SWEEP_FOR);
            let at = takeover.opened_at;
            let takeover = Arc::new(Mutex::new(takeover));
            lock(&TAKEOVERS).insert(folder, takeover.clone());
            return Ok((Some(Self { log, takeover }), at));
        };
        let files = Self { log, takeover };
        let wrote = !lock(&files.takeover).written.is_empty();
        let names = if wrote {
            files.delete_late().await?
        } else {
            files.log.change_file_names().await?
        };
        let at = ChangeFile::highest_last(&names);
        if !wrote {
            // Nothing written here yet: what the folder holds is the one copy of its changes,
            // as at the first opening.
            let mut t = lock(&files.takeover);
            let until = t.until;
            *t = Takeover::opened(epoch, names, until);
        }
        Ok((Some(files), at))
    }

    /// Whether the time to look for late files has passed: the state can go.
    pub(crate) fn over(&self) -> bool {
        Instant::now() >= lock(&self.takeover).until
    }

    /// A change file this daemon wrote.
    pub(crate) fn wrote(&self, name: String) {
        lock(&self.takeover).written.insert(name);
    }

    /// Deletes the change files that a former owner landed after the opening (see the module
    /// doc), when a look is due.
    pub(crate) async fn sweep(&self) -> Result<(), SinkError> {
        {
            let mut t = lock(&self.takeover);
            let now = Instant::now();
            // A late file duplicates changes once this daemon wrote them: until then it is
            // their one copy (and a table that gets no changes costs no listing).
            if now >= t.until || now < t.next || t.written.is_empty() {
                return Ok(());
            }
            t.next = now + SWEEP_EVERY;
        }
        self.delete_late().await.map(drop)
    }

    /// Deletes the late files of one listing of the folder; returns the change files kept.
    async fn delete_late(&self) -> Result<Vec<String>, SinkError> {
        let log = &self.log;
        let names = log.change_file_names().await?;
        let (late, kept): (Vec<String>, Vec<String>) = {
            let t = lock(&self.takeover);
            names.into_iter().partition(|n| t.is_late(n))
        };
        for name in &late {
            log.delete_file(name).await?;
            tracing::warn!(
                file = %log.location_of(name),
                "a former owner of the task landed this change file after this daemon took \
                 the task over and opened the table; this daemon writes the same changes, so \
                 the file was deleted"
            );
        }
        Ok(kept)
    }
}
