//! What `inlet check` reports: each prerequisite of a task, whether it holds, and the fix.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    /// Needed by this task and not in place: the task would fail.
    Missing,
    /// Worth knowing, but this task can run.
    Warning,
}

#[derive(Debug, Clone)]
pub struct Prerequisite {
    pub name: String,
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do when it is not ok.
    pub fix: Option<String>,
    /// What a missing prerequisite does to a task that starts (`inlet check` reports it as
    /// missing whatever this says).
    pub at_start: AtStart,
}

/// What a missing prerequisite does to a task that starts: the connector decides, since it
/// knows why the prerequisite matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtStart {
    /// The task does not start.
    #[default]
    Refuse,
    /// Only a task that has not started yet (no checkpoint) is refused; a running one goes on
    /// (a selection that matches no table while the tables are recreated).
    RefuseFirstStart,
    /// The task starts and logs it (a replica id that is most likely this task's own earlier
    /// connection, which the server drops when the task registers).
    Warn,
}

impl Prerequisite {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
            at_start: AtStart::Refuse,
        }
    }
    pub fn missing(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
            at_start: AtStart::Refuse,
        }
    }
    pub fn warning(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Warning,
            detail: detail.into(),
            fix: Some(fix.into()),
            at_start: AtStart::Refuse,
        }
    }
}

impl Prerequisite {
    /// This prerequisite, with what it does to a task that starts when it is missing.
    pub fn at_start(mut self, at_start: AtStart) -> Self {
        self.at_start = at_start;
        self
    }
}

impl fmt::Display for Prerequisite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            CheckStatus::Ok => "ok     ",
            CheckStatus::Missing => "MISSING",
            CheckStatus::Warning => "warning",
        };
        write!(f, "[{tag}] {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n          fix: {fix}")?;
        }
        Ok(())
    }
}
