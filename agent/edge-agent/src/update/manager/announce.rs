//! What the updates thread tells the broker: each request's status, and the retained
//! descriptions of what every slot and model serves.

use super::Manager;
use crate::mqtt::Outgoing;
use crate::update::models::ModelTarget;
use crate::update::protocol::Status;
use edge_core::head::slot::HeadSlot;

impl Manager {
    pub(super) fn send(&self, slot: &str, status: Status) {
        // only slots and models this device has: a rejected request may name anything, and the
        // page's map must not grow with what the network chooses
        if self.slots.contains_key(slot) || self.models.values().any(|m| m.name == slot) {
            self.show(&format!("{slot}/last_update"), &status);
        }
        let status = match &self.device_key {
            Some(key) => status.signed(key, &self.device),
            None => status,
        };
        let Some(payload) = json(&status, slot) else { return };
        self.emit(Outgoing { topic: self.topics.update_status(slot), payload, retain: false });
    }

    /// Into the results channel (the publisher, or its outbox when the broker is away). It
    /// closes only at shutdown, after which there is nobody to tell.
    pub(super) fn emit(&self, msg: Outgoing) {
        if let Err(e) = self.out.blocking_send(msg) {
            tracing::debug!(topic = %e.0.topic, "results channel closed; update message not published");
        }
    }

    /// Tells the status page, when there is one.
    fn show(&self, key: &str, value: &impl serde::Serialize) {
        if let Some(view) = &self.view
            && let Ok(v) = serde_json::to_value(value)
        {
            view.update(key, v);
        }
    }

    /// The retained description of what a slot serves now.
    pub(super) fn publish_active(&self, slot: &HeadSlot) {
        let active = slot.active();
        let m = &active.head.manifest;
        let value = serde_json::json!({
            "schema": "edge-agent.model-active.v1",
            "slot": slot.name,
            "version": active.version,
            "head": m.name,
            "labels": m.labels.len(),
            "backbone": slot.backbone,
            "previous": slot.previous_version(),
        });
        self.show(&slot.name, &value);
        let Some(payload) = json(&value, &slot.name) else { return };
        self.emit(Outgoing { topic: self.topics.model_active(&slot.name), payload, retain: true });
    }

    /// The retained description of a model target (`.../models/<name>/active/<precision>`).
    pub(super) fn publish_model(&self, m: &ModelTarget) {
        let value = serde_json::json!({
            "schema": "edge-agent.model-active.v1",
            "model": m.name,
            "precision": m.precision,
            "version": m.active_version(),
            "previous": m.store.previous().or_else(|| m.store.current().map(|_| m.shipped.manifest.version.clone())),
        });
        self.show(&format!("{}/{}", m.name, m.precision), &value);
        let Some(payload) = json(&value, &m.name) else { return };
        let topic = format!("{}/{}", self.topics.model_active(&m.name), m.precision);
        self.emit(Outgoing { topic, payload, retain: true });
    }
}

/// `value` as JSON; a failure is logged and nothing sent (an empty payload would read as a
/// broken message).
fn json(value: &impl serde::Serialize, slot: &str) -> Option<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| tracing::error!(%slot, error = %e, "update message not serialisable; not sent"))
        .ok()
}
