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

use std::collections::HashSet;
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

/// What one table's folder held when this daemon opened it, and what it wrote since.
pub(crate) struct LateFiles {
    log: ChangeLogTable,
    /// The table's committed position as the opening read it from the folder.
    opened_at: Option<Position>,
    /// The change files the folder held then.
    present: HashSet<String>,
    /// The change files this daemon wrote since.
    written: HashSet<String>,
    until: Instant,
    next: Instant,
}

impl LateFiles {
    /// The table as opened: its change files then.
    pub(crate) fn opened(log: ChangeLogTable, names: Vec<String>) -> Self {
        let opened_at = ChangeFile::highest_last(&names);
        let now = Instant::now();
        Self {
            log,
            opened_at,
            present: names.into_iter().collect(),
            written: HashSet::new(),
            until: now + SWEEP_FOR,
            next: now,
        }
    }

    /// The table's committed position as the opening read it: the highest position of a
    /// transaction's change file.
    pub(crate) fn opened_at(&self) -> Option<Position> {
        self.opened_at
    }

    /// Whether the time to look for late files has passed: the state can go.
    pub(crate) fn over(&self) -> bool {
        Instant::now() >= self.until
    }

    /// A change file this daemon wrote.
    pub(crate) fn wrote(&mut self, name: String) {
        self.written.insert(name);
    }

    /// Deletes the change files that a former owner landed after the opening (see the module
    /// doc), when a look is due; returns their names.
    pub(crate) async fn sweep(&mut self) -> Result<Vec<String>, SinkError> {
        let log = &self.log;
        let now = Instant::now();
        // A late file duplicates changes once this daemon wrote them: until then it is their
        // one copy (and a table that gets no changes costs no listing).
        if now >= self.until || now < self.next || self.written.is_empty() {
            return Ok(Vec::new());
        }
        self.next = now + SWEEP_EVERY;
        let mut late = Vec::new();
        for name in log.change_file_names().await? {
            let after_opening = ChangeFile::first_position(&name)
                .is_some_and(|first| self.opened_at.is_none_or(|at| first > at));
            if after_opening && !self.present.contains(&name) && !self.written.contains(&name) {
                log.delete_file(&name).await?;
                tracing::warn!(
                    file = %log.location_of(&name),
                    "a former owner of the task landed this change file after this daemon took \
                     the task over and opened the table; this daemon writes the same changes, \
                     so the file was deleted"
                );
                late.push(name);
            }
        }
        Ok(late)
    }
}
