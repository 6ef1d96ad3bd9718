//! A task's PostgreSQL change capture as the stream loop drives it: the pgoutput stream, ended at
//! a transaction boundary when the watch beside it found a table that should join, and what a
//! lost slot or a dropped publication means for the task (a clear stop, or a start over with
//! `cdc.on_slot_lost = "resnapshot"`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use inlet_core::snapshot::SourceError;
use inlet_core::source::Capture;
use inlet_core::{CaptureEvent, Checkpoint, Position, PostgresResume, SourceResume};

use crate::capture::ChangeCapture;
use crate::error::PgError;
use crate::replication::Lsn;
use crate::slot_plan::publication_lost_reason;

/// What a stream error means for the task: the slot and publication it streams through.
#[derive(Clone)]
pub(super) struct StreamErrors {
    pub(super) slot: String,
    pub(super) publication: String,
    /// Where the task checkpoint is, for the lost-slot message.
    pub(super) checkpoint_at: String,
    /// `cdc.on_slot_lost = "resnapshot"`.
    pub(super) resnapshot: bool,
    /// Why the slot cannot go on, for the next start (which then loads again).
    pub(super) lost: Arc<Mutex<Option<String>>>,
}

impl StreamErrors {
    /// The task's publication was dropped while it streamed: the slot cannot go on (see
    /// [`publication_lost_reason`]); with `resnapshot`, the task starts over through a new slot.
    pub(super) fn publication_lost(&self) -> SourceError {
        let (slot, checkpoint) = (&self.slot, &self.checkpoint_at);
        let reason = publication_lost_reason(&self.publication, slot);
        if self.resnapshot {
            // The next start takes this as "resnapshot now", whatever it then finds.
            if let Ok(mut lost) = self.lost.lock() {
                *lost = Some(reason.clone());
            }
            SourceError::transient(reason).with_starts_over(true)
        } else {
            SourceError::failed(format!(
                "{reason}. To load every table again: drop the slot \
                 (SELECT pg_drop_replication_slot('{slot}')) and delete the task checkpoint \
                 ({checkpoint}), then run the task again (inlet creates the publication anew); \
                 or set cdc.on_slot_lost = \"resnapshot\" to do this automatically"
            ))
        }
    }

    /// A slot dropped while streaming gets the same clear message as at start-up (or, with
    /// `on_slot_lost = "resnapshot"`, a restart that resnapshots); so does a dropped
    /// publication. Other errors are classified as usual.
    pub(super) fn classify(&self, e: PgError) -> SourceError {
        if e.is_publication_missing() {
            return self.publication_lost();
        }
        if e.is_slot_missing() {
            let (slot, checkpoint) = (&self.slot, &self.checkpoint_at);
            let message = format!(
                "replication slot {slot:?} was dropped while the task used it: changes since the \
                 last checkpoint may be lost. inlet never recreates a slot silently; delete the \
                 task checkpoint ({checkpoint}) and run the task again for a new full load, or \
                 set cdc.on_slot_lost = \"resnapshot\""
            );
            return if self.resnapshot {
                SourceError::transient(message)
            } else {
                SourceError::failed(message)
            };
        }
        e.into()
    }
}

/// A background task, aborted when this is dropped (the stream ended).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The change capture of a PostgreSQL task.
pub struct PgCapture {
    pub(super) capture: ChangeCapture,
    /// Set by the watch when a table the selection matches appeared.
    pub(super) new_tables: Arc<AtomicBool>,
    /// Set by the watch when the publication no longer exists.
    pub(super) publication_gone: Arc<AtomicBool>,
    pub(super) errors: StreamErrors,
    /// The watch beside the stream, which ends with it.
    pub(super) _watch: AbortOnDrop,
}

impl Capture for PgCapture {
    async fn next(&mut self) -> Result<Option<CaptureEvent>, SourceError> {
        if !self.capture.in_transaction() && self.new_tables.swap(false, Ordering::Relaxed) {
            tracing::info!("a table the selection matches appeared: re-discovering the tables once the changes before now are written");
            return Ok(Some(CaptureEvent::TablesChanged));
        }
        if self.publication_gone.load(Ordering::Relaxed) {
            return Err(self.errors.publication_lost());
        }
        let Self {
            capture, errors, ..
        } = self;
        capture.next().await.map_err(|e| errors.classify(e))
    }
    inlet_core::forward_capture_buffers!(capture);
    fn fill_checkpoint(&self, checkpoint: &mut Checkpoint) {
        checkpoint.source = Some(SourceResume::Postgres(PostgresResume {
            slot: self.errors.slot.clone(),
            created_by: None,
        }));
    }
    fn show(&self, position: Position) -> String {
        Lsn(position.0).to_string()
    }
}
