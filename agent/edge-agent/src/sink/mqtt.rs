//! The MQTT sink. Per-frame results on `detections/<pipeline>` or `classifications/<pipeline>`
//! (left out for cameras unless `per_frame = true`), transcripts on `transcripts/<pipeline>`
//! and retained on `speech/<pipeline>/last`, speech edges on `speech/<pipeline>`, tracked
//! objects' events on `events/<pipeline>`; retained counts on `objects/<pipeline>/<label>` and
//! `zones/<zone>/<label>` (plain numbers) and retained snapshots on
//! `snapshots/<pipeline>/<label>` (raw JPEG). QoS 1, through the publisher's bounded results
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
    /// Publish every frame's result. Unset: yes, except for cameras, whose tracked objects'
    /// events, counts and snapshots say what matters without a message per frame.
    #[serde(default)]
    pub per_frame: Option<bool>,
}

pub struct MqttSink {
    skip_empty: bool,
    per_frame: bool,
    device: String,
    topics: Topics,
    results: mpsc::Sender<Outgoing>,
}

impl MqttSink {
    pub fn new(c: &MqttSinkConfig, ctx: &SinkContext) -> MqttSink {
        MqttSink {
            skip_empty: c.skip_empty,
            per_frame: c.per_frame.unwrap_or(!ctx.camera),
            device: ctx.device.clone(),
            topics: ctx.topics.clone(),
            results: ctx.results.clone(),
        }
    }

    /// The messages of one event.
    fn messages(&self, event: &Event) -> Result<Vec<Outgoing>, SinkError> {
        let pipeline = event.pipeline();
        let json = || {
            json::to_vec(&self.device, event)
                .map_err(|source| SinkError::Serialize { kind: super::kind(event), source })
        };
        let msg = |topic: String, payload: Vec<u8>, retain: bool| Outgoing { topic, payload, retain };
        Ok(match event {
            Event::Detections(_) => vec![msg(self.topics.detections(pipeline), json()?, false)],
            Event::Classification(_) => vec![msg(self.topics.classifications(pipeline), json()?, false)],
            Event::Transcript(_) => {
                let payload = json()?;
                vec![
                    msg(self.topics.transcripts(pipeline), payload.clone(), false),
                    msg(self.topics.speech_last(pipeline), payload, true),
                ]
            }
            Event::Speech(_) => vec![msg(self.topics.speech(pipeline), json()?, false)],
            Event::Object(_) => vec![msg(self.topics.events(pipeline), json()?, false)],
            Event::Count(c) => {
                let topic = match &c.zone {
                    None => self.topics.object_count(pipeline, &c.label),
                    Some(zone) => self.topics.zone_count(zone, &c.label),
                };
                vec![msg(topic, c.count.to_string().into_bytes(), true)]
            }
            Event::Snapshot(s) => vec![msg(self.topics.snapshot(pipeline, &s.label), s.jpeg.to_vec(), true)],
        })
    }
}

impl Sink for MqttSink {
    fn send(&self, event: &Event) -> Result<(), SinkError> {
        if (self.skip_empty && event.is_empty()) || (!self.per_frame && event.is_per_frame()) {
            return Ok(());
        }
        for msg in self.messages(event)? {
            self.results.blocking_send(msg).map_err(|_| SinkError::Closed("results channel"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{FrameInfo, FrameResult, ObjectCount, Snapshot};

    fn detections() -> Event {
        Event::Detections(FrameResult {
            pipeline: "door".into(),
            seq: 0,
            frame: FrameInfo { source: "cam".into(), id: 0, captured: std::time::UNIX_EPOCH, width: 4, height: 4 },
            output: edge_core::vision::detector::DetectOutput {
                detections: vec![],
                inference: std::time::Duration::ZERO,
                passes: 1,
                model_name: "nanodet".into(),
                model_version: "1".into(),
                precision: edge_core::Precision::Int8,
            },
        })
    }

    fn context(camera: bool) -> (SinkContext, mpsc::Receiver<Outgoing>) {
        let (results, rx) = mpsc::channel(16);
        let topics = Topics::new("edge-agent", "d");
        (SinkContext { device: "d".into(), topics, results, base_dir: ".".into(), camera, view: None }, rx)
    }

    /// What a sink for a camera (or not) with `per_frame` publishes for a frame, a zone count
    /// and a snapshot.
    fn sent(camera: bool, per_frame: Option<bool>) -> Vec<(String, Vec<u8>, bool)> {
        let (ctx, mut rx) = context(camera);
        let sink = MqttSink::new(&MqttSinkConfig { skip_empty: false, per_frame }, &ctx);
        let count =
            ObjectCount { pipeline: "door".into(), zone: Some("porch".into()), label: "person".into(), count: 2 };
        let snapshot = Snapshot {
            pipeline: "door".into(),
            label: "person".into(),
            object_id: "door-1-1".into(),
            jpeg: std::sync::Arc::new(vec![0xff, 0xd8]),
            path: "x.jpg".into(),
        };
        for e in [detections(), Event::Count(count), Event::Snapshot(snapshot)] {
            sink.send(&e).unwrap();
        }
        drop(sink);
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push((m.topic, m.payload, m.retain));
        }
        out
    }

    #[test]
    fn a_transcript_is_also_kept_retained_as_the_last() {
        let (ctx, mut rx) = context(false);
        let t = crate::event::Transcript {
            pipeline: "kitchen".into(),
            seq: 0,
            source: "wav".into(),
            utterance_id: 0,
            began: std::time::UNIX_EPOCH,
            start: 0.0,
            end: 1.0,
            duration: 1.0,
            text: "lights off".into(),
            model: crate::event::ModelInfo {
                name: "whisper-tiny-en".into(),
                version: "1".into(),
                precision: edge_core::Precision::Int8,
            },
            processing: std::time::Duration::from_millis(100),
        };
        MqttSink::new(&MqttSinkConfig::default(), &ctx).send(&Event::Transcript(t)).unwrap();
        let (a, b) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!((a.topic.as_str(), a.retain), ("edge-agent/d/transcripts/kitchen", false));
        assert_eq!((b.topic.as_str(), b.retain), ("edge-agent/d/speech/kitchen/last", true));
        assert_eq!(a.payload, b.payload);
    }

    #[test]
    fn cameras_publish_objects_not_frames_unless_asked() {
        let objects = [
            ("edge-agent/d/zones/porch/person".to_string(), b"2".to_vec(), true),
            ("edge-agent/d/snapshots/door/person".to_string(), vec![0xff, 0xd8], true),
        ];
        assert_eq!(sent(true, None), objects);
        let all = sent(false, None);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, "edge-agent/d/detections/door");
        assert!(!all[0].2);
        assert_eq!(sent(true, Some(true)).len(), 3);
        assert_eq!(sent(false, Some(false)), objects);
    }
}
