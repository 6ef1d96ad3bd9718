//! systemd integration for `Type=notify` units: READY=1 once every task has connected (or
//! settled), WATCHDOG=1 pings at half the unit's WatchdogSec, and a STATUS= line per change.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::state::{Phase, TaskState};

pub fn spawn(tasks: Vec<TaskState>, stopped: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let watchdog = sd_notify::watchdog_enabled().map(|usec| usec / 2);
        let tick = watchdog
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        let mut ready = false;
        let mut last_status = String::new();
        let mut last_ping = std::time::Instant::now();
        loop {
            if *stopped.borrow() {
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                return;
            }
            let statuses: Vec<_> = tasks.iter().map(TaskState::current).collect();
            if !ready && statuses.iter().all(|s| s.phase != Phase::Starting) {
                ready = true;
                let _ = sd_notify::notify(&[NotifyState::Ready]);
            }
            let line = statuses
                .iter()
                .map(|s| {
                    let phase = match &s.phase {
                        Phase::Retrying { .. } => "retrying".to_string(),
                        Phase::Failed { .. } => "FAILED".to_string(),
                        Phase::Done { .. } => "done".to_string(),
                        Phase::Standby {
                            owner: Some(owner), ..
                        } => {
                            format!("standby (owned by {owner})")
                        }
                        Phase::Standby { owner: None, .. } => "standby".to_string(),
                        other => format!("{other:?}").to_lowercase(),
                    };
                    format!("{} {phase} lag {:.1}s", s.task, s.lag_seconds)
                })
                .collect::<Vec<_>>()
                .join("; ");
            if line != last_status {
                let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
                last_status = line;
            }
            if let Some(interval) = watchdog {
                if last_ping.elapsed() >= interval {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                    last_ping = std::time::Instant::now();
                }
            }
            tokio::time::sleep(tick).await;
        }
    })
}
