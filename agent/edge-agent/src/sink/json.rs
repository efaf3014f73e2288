//! The JSON of every event: one stable schema per kind (documented in the README), the same
//! bytes whichever sink writes them (MQTT payloads, stdout and JSON-lines files). The
//! `schema` field names its version so consumers can detect changes; field order is part of
//! the schema and matches what the agent has always published.

use serde::Serialize;

use crate::event::{Event, FrameInfo, ModelInfo, SpeechEvent, Transcript, timestamp};
use edge_core::head::Scored;
use edge_core::vision::Detection;
use edge_core::vision::classify::ClassifyOutput;
use edge_core::vision::detector::DetectOutput;

pub const DETECTIONS_SCHEMA: &str = "edge-agent.detections.v1";
pub const CLASSIFICATION_SCHEMA: &str = "edge-agent.classification.v1";
pub const TRANSCRIPT_SCHEMA: &str = "edge-agent.transcript.v1";
pub const SPEECH_EVENT_SCHEMA: &str = "edge-agent.speech.v1";

#[derive(Debug, Clone, Serialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    pub precision: String,
}

impl ModelRef {
    fn of(m: &ModelInfo) -> ModelRef {
        ModelRef { name: m.name.clone(), version: m.version.clone(), precision: m.precision.to_string() }
    }

    fn detector(out: &DetectOutput) -> ModelRef {
        ModelRef {
            name: out.model_name.clone(),
            version: out.model_version.clone(),
            precision: out.precision.to_string(),
        }
    }
}

/// What every per-frame message starts with.
#[derive(Debug, Clone, Serialize)]
pub struct FrameHeader {
    /// RFC 3339, UTC, when the frame was captured.
    pub timestamp: String,
    pub device: String,
    pub pipeline: String,
    /// Per-pipeline sequence number, from 0 at agent start.
    pub seq: u64,
    pub source: String,
    pub frame_id: u64,
    pub image: ImageSize,
}

impl FrameHeader {
    fn new(device: &str, pipeline: &str, seq: u64, frame: &FrameInfo) -> FrameHeader {
        FrameHeader {
            timestamp: timestamp(frame.captured),
            device: device.into(),
            pipeline: pipeline.into(),
            seq,
            source: frame.source.clone(),
            frame_id: frame.id,
            image: ImageSize { width: frame.width, height: frame.height },
        }
    }
}

/// `<prefix>/<device>/detections/<pipeline>`
#[derive(Debug, Clone, Serialize)]
pub struct DetectionsMessage {
    pub schema: &'static str,
    #[serde(flatten)]
    pub frame: FrameHeader,
    pub model: ModelRef,
    pub inference_ms: f64,
    /// Model runs for this frame (1, or more when the frame was tiled).
    pub passes: usize,
    pub detections: Vec<Detection>,
}

/// Milliseconds rounded to two decimals.
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// One line of `edge-agent detect`: the same detection objects as on MQTT.
#[derive(Debug, Clone, Serialize)]
pub struct DetectLine {
    pub source: String,
    pub image: ImageSize,
    pub model: ModelRef,
    pub inference_ms: f64,
    pub passes: usize,
    pub detections: Vec<Detection>,
}

pub fn detect_line(source: &str, width: u32, height: u32, out: &DetectOutput) -> DetectLine {
    DetectLine {
        source: source.into(),
        image: ImageSize { width, height },
        model: ModelRef::detector(out),
        inference_ms: ms(out.inference),
        passes: out.passes,
        detections: out.detections.clone(),
    }
}

/// The head that produced labels.
#[derive(Debug, Clone, Serialize)]
pub struct HeadRef {
    pub name: String,
    pub version: String,
}

/// `<prefix>/<device>/classifications/<pipeline>`: one per frame of a `[classify]` pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationMessage {
    pub schema: &'static str,
    #[serde(flatten)]
    pub frame: FrameHeader,
    /// The backbone.
    pub model: ModelRef,
    pub head: HeadRef,
    pub inference_ms: f64,
    /// Best first.
    pub labels: Vec<Scored>,
}

fn classification(
    device: &str,
    pipeline: &str,
    seq: u64,
    frame: &FrameInfo,
    out: &ClassifyOutput,
) -> ClassificationMessage {
    ClassificationMessage {
        schema: CLASSIFICATION_SCHEMA,
        frame: FrameHeader::new(device, pipeline, seq, frame),
        model: ModelRef {
            name: out.backbone.clone(),
            version: out.backbone_version.clone(),
            precision: out.precision.to_string(),
        },
        head: HeadRef { name: out.head_name.clone(), version: out.head_version.clone() },
        inference_ms: ms(out.inference),
        labels: out.labels.clone(),
    }
}

/// `<prefix>/<device>/transcripts/<pipeline>`: one per utterance.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptMessage {
    pub schema: &'static str,
    /// RFC 3339, UTC, when the utterance began.
    pub timestamp: String,
    pub device: String,
    pub pipeline: String,
    /// Per-pipeline sequence number of published transcripts.
    pub seq: u64,
    pub source: String,
    /// Per-pipeline utterance number (also in the speech events).
    pub utterance_id: u64,
    /// Seconds from the start of the audio stream.
    pub start: f64,
    pub end: f64,
    pub duration: f64,
    pub text: String,
    pub model: ModelRef,
    /// Encoder + decoder time.
    pub processing_ms: f64,
    /// Processing time over utterance duration (below 1: faster than real time).
    pub real_time_factor: f64,
}

fn transcript(device: &str, t: &Transcript) -> TranscriptMessage {
    let duration = t.duration;
    let processing = t.processing.as_secs_f64();
    TranscriptMessage {
        schema: TRANSCRIPT_SCHEMA,
        timestamp: timestamp(t.began),
        device: device.into(),
        pipeline: t.pipeline.clone(),
        seq: t.seq,
        source: t.source.clone(),
        utterance_id: t.utterance_id,
        start: t.start,
        end: t.end,
        duration,
        text: t.text.clone(),
        model: ModelRef::of(&t.model),
        processing_ms: ms(t.processing),
        real_time_factor: ((processing / duration.max(1e-3)) * 1000.0).round() / 1000.0,
    }
}

/// `<prefix>/<device>/speech/<pipeline>`: speech began / ended (when the `vad` stage has
/// `events = true`).
#[derive(Debug, Clone, Serialize)]
pub struct SpeechEventMessage {
    pub schema: &'static str,
    pub timestamp: String,
    pub device: String,
    pub pipeline: String,
    /// `start` or `end`.
    pub event: &'static str,
    pub utterance_id: u64,
    /// Seconds from the start of the audio stream.
    pub at: f64,
}

fn speech(device: &str, s: &SpeechEvent) -> SpeechEventMessage {
    SpeechEventMessage {
        schema: SPEECH_EVENT_SCHEMA,
        timestamp: timestamp(s.at),
        device: device.into(),
        pipeline: s.pipeline.clone(),
        event: s.edge.as_str(),
        utterance_id: s.utterance_id,
        at: s.offset,
    }
}

/// The event's JSON, as every sink writes it.
pub fn to_vec(device: &str, event: &Event) -> serde_json::Result<Vec<u8>> {
    match event {
        Event::Detections(r) => serde_json::to_vec(&DetectionsMessage {
            schema: DETECTIONS_SCHEMA,
            frame: FrameHeader::new(device, &r.pipeline, r.seq, &r.frame),
            model: ModelRef::detector(&r.output),
            inference_ms: ms(r.output.inference),
            passes: r.output.passes,
            detections: r.output.detections.clone(),
        }),
        Event::Classification(r) => {
            serde_json::to_vec(&classification(device, &r.pipeline, r.seq, &r.frame, &r.output))
        }
        Event::Transcript(t) => serde_json::to_vec(&transcript(device, t)),
        Event::Speech(s) => serde_json::to_vec(&speech(device, s)),
        Event::Object(o) => serde_json::to_vec(&super::objects_json::object_event(device, o)),
        Event::Count(c) => serde_json::to_vec(&super::objects_json::count(device, c)),
        Event::Snapshot(s) => serde_json::to_vec(&super::objects_json::snapshot(device, s)),
    }
}
