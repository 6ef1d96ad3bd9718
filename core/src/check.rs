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
}

impl Prerequisite {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
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
        }
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
