//! The MQTT sink: every event on its topic (`detections`, `classifications`, `transcripts`,
//! `speech`, then the pipeline), QoS 1, not retained, through the publisher's bounded results
//! channel (which blocks when full; the publisher spills to the disk outbox while the broker
//! is away).

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Sink, SinkContext, SinkError, json};
use crate::event::Event;
use crate::mqtt::{Outgoing, Topics};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Publish only frames with at least one detection (or label, or word).
    #[serde(default)]
    pub skip_empty: bool,
}

pub struct MqttSink {
    skip_empty: bool,
    device: String,
    topics: Topics,
    results: mpsc::Sender<Outgoing>,
}

impl MqttSink {
    pub fn new(c: &MqttSinkConfig, ctx: &SinkContext) -> MqttSink {
        MqttSink {
            skip_empty: c.skip_empty,
            device: ctx.device.clone(),
            topics: ctx.topics.clone(),
            results: ctx.results.clone(),
        }
    }

    fn topic(&self, event: &Event) -> String {
        let pipeline = event.pipeline();
        match event {
            Event::Detections(_) => self.topics.detections(pipeline),
            Event::Classification(_) => self.topics.classifications(pipeline),
            Event::Transcript(_) => self.topics.transcripts(pipeline),
            Event::Speech(_) => self.topics.speech(pipeline),
        }
    }
}

impl Sink for MqttSink {
    fn send(&self, event: &Event) -> Result<(), SinkError> {
        if self.skip_empty && event.is_empty() {
            return Ok(());
        }
        let payload = json::to_vec(&self.device, event)
            .map_err(|source| SinkError::Serialize { kind: super::kind(event), source })?;
        let msg = Outgoing { topic: self.topic(event), payload, retain: false };
        self.results.blocking_send(msg).map_err(|_| SinkError::Closed("results channel"))
    }
}
