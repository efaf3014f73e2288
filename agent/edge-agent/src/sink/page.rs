//! The status page's sink: added to every pipeline when `[web]` is on (it is not configured
//! per pipeline). It keeps what the page shows in the [`Hub`]: each result's JSON (the same
//! bytes the other sinks write), recent events, transcripts, counts, the voice level, and a
//! frame now and then while a page is open. It never blocks: a page that falls behind skips.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{Observation, Sink, SinkError, json, kind};
use crate::event::{Event, timestamp};
use crate::view::{Hub, PipelineView};

/// Least time between two per-frame results of one pipeline in the recent events (objects,
/// transcripts and speech events are all kept): a camera at 10 fps would push everything else
/// out of the list in 20 s.
const FRAME_RESULT_EVERY: Duration = Duration::from_secs(2);

pub struct PageSink {
    hub: Arc<Hub>,
    view: Arc<PipelineView>,
    device: String,
    last_listed: Mutex<Option<Instant>>,
}

impl PageSink {
    /// `None` when the hub does not know the pipeline (it is built from the same config).
    pub fn new(hub: Arc<Hub>, pipeline: &str, device: &str) -> Option<PageSink> {
        let view = hub.pipeline(pipeline)?.clone();
        Some(PageSink { hub, view, device: device.to_string(), last_listed: Mutex::new(None) })
    }

    fn json(&self, event: &Event) -> Result<String, SinkError> {
        let bytes =
            json::to_vec(&self.device, event).map_err(|source| SinkError::Serialize { kind: kind(event), source })?;
        // serde_json writes UTF-8
        String::from_utf8(bytes).map_err(|e| SinkError::Io {
            sink: "page".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Lists `data` (an event's JSON) among the recent events and tells open pages.
    fn list(&self, event: &Event, data: &str) {
        let msg = format!(
            r#"{{"type":"event","kind":"{}","pipeline":{},"at":"{}","data":{data}}}"#,
            kind(event),
            serde_json::Value::from(self.view.name.as_str()),
            timestamp(SystemTime::now()),
        );
        self.hub.event(msg.into());
    }

    fn due(&self) -> bool {
        let mut last = self.last_listed.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < FRAME_RESULT_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

impl Sink for PageSink {
    fn send(&self, event: &Event) -> Result<(), SinkError> {
        match event {
            Event::Detections(_) | Event::Classification(_) => {
                let data = self.json(event)?;
                if !event.is_empty() && self.due() {
                    self.list(event, &data);
                }
                self.view.set_result(data.into());
            }
            Event::Transcript(t) => {
                let data = self.json(event)?;
                self.list(event, &data);
                self.view.add_transcript(serde_json::json!({"text": t.text, "offset": t.start, "seq": t.seq}));
                self.view.set_result(data.into());
            }
            Event::Speech(_) | Event::Object(_) => self.list(event, &self.json(event)?),
            Event::Count(c) => {
                let key = match &c.zone {
                    Some(z) => format!("{z}/{}", c.label),
                    None => c.label.clone(),
                };
                self.view.set_count(key, c.count as u64);
            }
            Event::Snapshot(s) => {
                let data = serde_json::json!({"label": s.label, "object_id": s.object_id, "bytes": s.jpeg.len()});
                self.list(event, &data.to_string());
            }
        }
        Ok(())
    }

    fn observe(&self, seen: &Observation<'_>) {
        match seen {
            Observation::Frame(frame, event) => {
                self.view.offer_frame(&self.hub, event.seq(), &frame.image, || self.json(event).ok());
            }
            Observation::VoiceLevel(p) => self.view.set_level(*p),
            Observation::Speaking(on) => self.view.set_speaking(*on),
        }
    }
}
