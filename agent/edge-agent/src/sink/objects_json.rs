//! The JSON of tracked-object events, counts and snapshots (for the JSON-lines and stdout
//! sinks; on MQTT counts are plain numbers and snapshots raw JPEG).

use serde::Serialize;

use crate::event::{ObjectCount, ObjectEvent, Snapshot, TrackedObject, timestamp};

pub const OBJECT_EVENT_SCHEMA: &str = "edge-agent.object-event.v1";
pub const COUNT_SCHEMA: &str = "edge-agent.count.v1";
pub const SNAPSHOT_SCHEMA: &str = "edge-agent.snapshot.v1";

/// `<prefix>/<device>/events/<pipeline>`
#[derive(Debug, Clone, Serialize)]
pub struct ObjectEventMessage {
    pub schema: &'static str,
    /// `new`, `update` or `end`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device: String,
    pub pipeline: String,
    /// Per-pipeline number of object events, from 0 at agent start.
    pub seq: u64,
    pub before: ObjectJson,
    pub after: ObjectJson,
}

/// An object as events describe it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectJson {
    pub id: String,
    pub label: String,
    pub score: f64,
    pub top_score: f64,
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    /// Box area in pixels.
    pub area: u64,
    pub start_time: String,
    pub end_time: Option<String>,
    pub stationary: bool,
    pub current_zones: Vec<String>,
    pub entered_zones: Vec<String>,
    pub has_snapshot: bool,
    pub frame_time: String,
}

fn round(v: f32, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (f64::from(v) * k).round() / k
}

impl ObjectJson {
    pub fn of(o: &TrackedObject) -> ObjectJson {
        let b = o.bbox;
        ObjectJson {
            id: o.id.clone(),
            label: o.label.clone(),
            score: round(o.score, 4),
            top_score: round(o.top_score, 4),
            bbox: b.map(|v| round(v, 1)),
            area: ((b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)).round() as u64,
            start_time: timestamp(o.start_time),
            end_time: o.end_time.map(timestamp),
            stationary: o.stationary,
            current_zones: o.current_zones.clone(),
            entered_zones: o.entered_zones.clone(),
            has_snapshot: o.has_snapshot,
            frame_time: timestamp(o.frame_time),
        }
    }
}

pub fn object_event(device: &str, e: &ObjectEvent) -> ObjectEventMessage {
    ObjectEventMessage {
        schema: OBJECT_EVENT_SCHEMA,
        kind: e.change.as_str(),
        device: device.into(),
        pipeline: e.pipeline.clone(),
        seq: e.seq,
        before: ObjectJson::of(&e.before),
        after: ObjectJson::of(&e.after),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CountMessage {
    pub schema: &'static str,
    pub device: String,
    pub pipeline: String,
    /// `null`: the whole frame.
    pub zone: Option<String>,
    pub label: String,
    pub count: usize,
}

pub fn count(device: &str, c: &ObjectCount) -> CountMessage {
    CountMessage {
        schema: COUNT_SCHEMA,
        device: device.into(),
        pipeline: c.pipeline.clone(),
        zone: c.zone.clone(),
        label: c.label.clone(),
        count: c.count,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotMessage {
    pub schema: &'static str,
    pub device: String,
    pub pipeline: String,
    pub label: String,
    pub object_id: String,
    /// Where the JPEG is stored.
    pub path: String,
    pub bytes: usize,
}

pub fn snapshot(device: &str, s: &Snapshot) -> SnapshotMessage {
    SnapshotMessage {
        schema: SNAPSHOT_SCHEMA,
        device: device.into(),
        pipeline: s.pipeline.clone(),
        label: s.label.clone(),
        object_id: s.object_id.clone(),
        path: s.path.display().to_string(),
        bytes: s.jpeg.len(),
    }
}
