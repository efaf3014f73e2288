//! What keeps the updates thread standing: a panic while handling a request becomes a
//! rejection, transfers left idle are abandoned (their bytes kept for a resume), and what
//! loading a pushed file freed goes back to the kernel.

use std::time::Duration;

use super::{Incoming, Manager, Reject, remove_quietly, sanitize};
use crate::update::protocol::{State, Status, slot_of_topic};

impl Manager {
    /// [`Manager::finish`], then what loading the new file freed goes back to the kernel.
    pub(super) fn finish_and_release(&mut self, name: &str) -> Result<(), Reject> {
        let outcome = self.finish(name);
        edge_core::heap::release_free();
        outcome
    }

    /// [`Self::on_message`], with a panic in it (a pushed model that trips a bug while loading)
    /// turned into a rejection: the updates thread, and the models serving, carry on.
    pub(super) fn on_message_guarded(&mut self, m: &Incoming) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.on_message(m)));
        if outcome.is_err() {
            let slot = slot_of_topic(&self.topics.base(), &m.topic).map(sanitize).unwrap_or_else(|| "_".into());
            tracing::error!(%slot, "handling an update panicked; it is rejected and the transfer dropped");
            if let Some(t) = self.transfers.remove(&slot) {
                remove_quietly(&t.part);
            }
            let id = crate::commands::salvage_id(&m.payload);
            self.send(&slot, Status::new(id.as_deref(), &slot, State::Rejected).reason("the update crashed its check"));
        }
    }

    pub(super) fn expire_idle(&mut self) {
        let timeout = Duration::from_secs_f64(self.settings.transfer_timeout_secs);
        let idle: Vec<String> =
            self.transfers.iter().filter(|(_, t)| t.last.elapsed() > timeout).map(|(s, _)| s.clone()).collect();
        for slot in idle {
            if let Some(t) = self.transfers.remove(&slot) {
                let reason = format!(
                    "incomplete: {} of {} bytes, no chunk for {:.0} s (begin again to resume)",
                    t.received,
                    t.manifest.size,
                    timeout.as_secs_f64()
                );
                tracing::warn!(%slot, %reason, "update abandoned");
                let s = Status::new(Some(&t.id), &slot, State::Rejected).version(&t.manifest.version).reason(reason);
                self.send(&slot, s.progress(t.received, t.manifest.size));
            }
        }
    }
}
