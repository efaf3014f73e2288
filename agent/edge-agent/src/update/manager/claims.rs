//! Whether a signed order may be acted on: who signed it, and whether it is meant for this
//! device and slot, fresh (not a replay, not expired, not from the future).

use super::{Manager, Reject};
use crate::update::sign;
use edge_core::store::VersionStore;

impl Manager {
    /// Checks a signed text and returns which key signed it.
    pub(super) fn verify_signature(&self, text: &str, signature: &str) -> Result<usize, Reject> {
        if self.trusted.is_empty() {
            return Err("updates are disabled: no trusted keys configured (updates.trusted_keys)".into());
        }
        sign::verify(&self.trusted, text.as_bytes(), signature).map_err(|e| format!("signature: {e}"))
    }

    /// The signed claims fit this device and slot, and the order is fresh: after the last one
    /// accepted (or the same one, when `resuming` its own transfer), not expired, not from the
    /// future. An unreadable replay counter refuses everything (fails closed).
    pub(super) fn check_claims(
        &self,
        topic_name: &str,
        store: &VersionStore,
        claims: (&str, &str, u64),
        resuming: bool,
    ) -> Result<(), Reject> {
        let (for_slot, device, issued_at_ms) = claims;
        if for_slot != topic_name {
            return Err(format!("signed for {for_slot:?}, sent to {topic_name:?}"));
        }
        if device != "*" && device != self.device {
            return Err(format!("signed for device {device:?}, this is {:?}", self.device));
        }
        let now = crate::update::protocol::now_ms();
        let skew = (self.settings.max_clock_skew_secs * 1e3) as u64;
        if issued_at_ms > now.saturating_add(skew) {
            return Err(format!(
                "issued {:.0} s in the future: the signer's clock or this device's is wrong",
                (issued_at_ms - now) as f64 / 1e3
            ));
        }
        let max_age = (self.settings.max_age_secs * 1e3) as u64;
        if now.saturating_sub(issued_at_ms) > max_age {
            return Err(format!(
                "expired: issued {:.0} s ago, more than updates.max_age_secs",
                (now - issued_at_ms) as f64 / 1e3
            ));
        }
        let last = store
            .last_issued_at_ms()
            .map_err(|e| format!("updates refused: the replay counter cannot be read ({e}); repair or remove it"))?;
        if issued_at_ms < last || (issued_at_ms == last && !resuming) {
            return Err(format!("stale or replayed order: issued_at_ms {issued_at_ms} is not after {last}"));
        }
        Ok(())
    }
}
