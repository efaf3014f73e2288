//! The JSON published. Field names are a stable schema (documented in the README); the
//! `schema` field names its version so consumers can detect changes.

use std::collections::BTreeMap;
use std::time::SystemTime;

use image::RgbImage;
use serde::Serialize;

use crate::stats::StatsSnapshot;
use crate::vision::Detection;
use crate::vision::detector::DetectOutput;

pub const DETECTIONS_SCHEMA: &str = "edge-agent.detections.v1";
pub const STATS_SCHEMA: &str = "edge-agent.stats.v1";

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
    pub fn new(device: &str, pipeline: &str, seq: u64, frame: &crate::source::Frame) -> FrameHeader {
        FrameHeader {
            timestamp: timestamp(frame.captured),
            device: device.into(),
            pipeline: pipeline.into(),
            seq,
            source: frame.source.clone(),
            frame_id: frame.id,
            image: ImageSize { width: frame.image.width(), height: frame.image.height() },
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

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn model_ref(out: &DetectOutput) -> ModelRef {
    ModelRef { name: out.model_name.clone(), version: out.model_version.clone(), precision: out.precision.to_string() }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl DetectionsMessage {
    pub fn new(
        device: &str,
        pipeline: &str,
        seq: u64,
        frame: &crate::source::Frame,
        out: &DetectOutput,
    ) -> DetectionsMessage {
        DetectionsMessage {
            schema: DETECTIONS_SCHEMA,
            frame: FrameHeader::new(device, pipeline, seq, frame),
            model: model_ref(out),
            inference_ms: ms(out.inference),
            passes: out.passes,
            detections: out.detections.clone(),
        }
    }
}

/// `<prefix>/<device>/stats` (retained)
#[derive(Debug, Clone, Serialize)]
pub struct StatsMessage {
    pub schema: &'static str,
    pub timestamp: String,
    pub device: String,
    pub uptime_secs: u64,
    pub broker_connected: bool,
    pub rss_bytes: Option<u64>,
    pub cpu_temp_c: Option<f64>,
    pub pipelines: BTreeMap<String, StatsSnapshot>,
    pub outbox: crate::outbox::OutboxStats,
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

pub fn detect_line(source: &str, image: &RgbImage, out: &DetectOutput) -> DetectLine {
    DetectLine {
        source: source.into(),
        image: ImageSize { width: image.width(), height: image.height() },
        model: model_ref(out),
        inference_ms: ms(out.inference),
        passes: out.passes,
        detections: out.detections.clone(),
    }
}

pub const CLASSIFICATION_SCHEMA: &str = "edge-agent.classification.v1";

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
    pub labels: Vec<crate::head::Scored>,
}

impl ClassificationMessage {
    pub fn new(
        device: &str,
        pipeline: &str,
        seq: u64,
        frame: &crate::source::Frame,
        out: &crate::vision::classify::ClassifyOutput,
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
}

pub const TRANSCRIPT_SCHEMA: &str = "edge-agent.transcript.v1";
pub const SPEECH_EVENT_SCHEMA: &str = "edge-agent.speech.v1";

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
