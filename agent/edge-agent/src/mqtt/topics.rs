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

    /// `new` / `update` / `end` events of a detect pipeline's tracked objects.
    pub fn events(&self, pipeline: &str) -> String {
        format!("{}/events/{pipeline}", self.base)
    }

    /// Retained: how many objects of `label` a pipeline sees now.
    pub fn object_count(&self, pipeline: &str, label: &str) -> String {
        format!("{}/objects/{pipeline}/{}", self.base, level(label))
    }

    /// Retained: how many objects of `label` are in a zone now.
    pub fn zone_count(&self, zone: &str, label: &str) -> String {
        format!("{}/zones/{zone}/{}", self.base, level(label))
    }

    /// Retained: the JPEG of the latest best object of `label` (raw bytes).
    pub fn snapshot(&self, pipeline: &str, label: &str) -> String {
        format!("{}/snapshots/{pipeline}/{}", self.base, level(label))
    }

    /// Retained: the last transcript of an audio pipeline.
    pub fn speech_last(&self, pipeline: &str) -> String {
        format!("{}/speech/{pipeline}/last", self.base)
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

/// A label as one topic level: labels are the model's words ("traffic light", "tabby, tabby
/// cat"), so the characters a topic level cannot hold or that read badly become '_'.
pub fn level(label: &str) -> String {
    label.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
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
        assert_eq!(t.events("door"), "edge-agent/pi-5/events/door");
        assert_eq!(t.object_count("door", "traffic light"), "edge-agent/pi-5/objects/door/traffic_light");
        assert_eq!(t.zone_count("porch", "person"), "edge-agent/pi-5/zones/porch/person");
        assert_eq!(t.snapshot("door", "person"), "edge-agent/pi-5/snapshots/door/person");
        assert_eq!(t.speech_last("kitchen"), "edge-agent/pi-5/speech/kitchen/last");
    }
}
