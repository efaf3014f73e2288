//! Every topic the agent uses, under `<prefix>/<device_id>/`.

#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        Topics { base: format!("{}/{}", prefix.trim_end_matches('/'), device_id) }
    }

    /// Retained `online` / `offline` (the last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn detections(&self, pipeline: &str) -> String {
        format!("{}/detections/{pipeline}", self.base)
    }

    pub fn transcripts(&self, pipeline: &str) -> String {
        format!("{}/transcripts/{pipeline}", self.base)
    }

    /// Speech start/end events of an audio pipeline.
    pub fn speech(&self, pipeline: &str) -> String {
        format!("{}/speech/{pipeline}", self.base)
    }

    /// Retained per-pipeline statistics.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }

    /// Commands to the device (the agent subscribes here).
    pub fn commands(&self) -> String {
        format!("{}/commands", self.base)
    }

    /// Answers to commands.
    pub fn command_acks(&self) -> String {
        format!("{}/commands/ack", self.base)
    }

    /// Update requests for a head slot (the agent subscribes to `models/+/update`).
    pub fn model_update(&self, slot: &str) -> String {
        format!("{}/models/{slot}/update", self.base)
    }

    pub fn model_updates(&self) -> String {
        format!("{}/models/+/update", self.base)
    }

    /// Answers to update requests.
    pub fn update_status(&self, slot: &str) -> String {
        format!("{}/models/{slot}/update/status", self.base)
    }

    /// Retained: what a slot serves now.
    pub fn model_active(&self, slot: &str) -> String {
        format!("{}/models/{slot}/active", self.base)
    }

    /// Classifications of a pipeline without a detector.
    pub fn classifications(&self, pipeline: &str) -> String {
        format!("{}/classifications/{pipeline}", self.base)
    }

    /// `<prefix>/<device_id>`.
    pub fn base(&self) -> String {
        self.base.clone()
    }

    /// Everything of this device, for subscribers.
    pub fn all(&self) -> String {
        format!("{}/#", self.base)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        let t = super::Topics::new("edge-agent/", "pi-5");
        assert_eq!(t.status(), "edge-agent/pi-5/status");
        assert_eq!(t.detections("door"), "edge-agent/pi-5/detections/door");
        assert_eq!(t.stats(), "edge-agent/pi-5/stats");
        assert_eq!(t.all(), "edge-agent/pi-5/#");
    }
}
