//! The typed result boundary: what a pipeline emits. Pipelines build these and hand them to
//! their sinks; they know nothing of topics, files or JSON. Sinks (`crate::sink`) own
//! serialisation and transport.
//!
//! Every event carries its pipeline, a per-pipeline sequence number (`seq`, from 0 at start,
//! counted per kind of result: frame results, transcripts, speech events), its times and the
//! model that produced it.

use std::time::{Duration, SystemTime};

use edge_core::source::Frame;
use edge_core::vision::classify::ClassifyOutput;
use edge_core::vision::detector::DetectOutput;

/// One result of a pipeline.
#[derive(Debug, Clone)]
pub enum Event {
    /// A frame's detections (one per frame of a `[detect]` or `[detect, classify]` pipeline).
    Detections(FrameResult<DetectOutput>),
    /// A frame's labels (one per frame of a `[classify]` pipeline).
    Classification(FrameResult<ClassifyOutput>),
    /// One utterance's text.
    Transcript(Transcript),
    /// Speech began or ended (when the `vad` stage has `events = true`).
    Speech(SpeechEvent),
    /// A tracked object appeared, changed or left (`[objects]` of a detect pipeline).
    Object(ObjectEvent),
    /// How many objects of a label are in view, or in a zone, now.
    Count(ObjectCount),
    /// A tracked object's best picture so far.
    Snapshot(Snapshot),
}

/// What a tracked object is now, as its events describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedObject {
    /// `<pipeline>-<unix ms of its first frame>-<n>`, stable for the object's life.
    pub id: String,
    pub label: String,
    /// This frame's detection score (0 when not detected in it).
    pub score: f32,
    /// Highest median of its recent scores.
    pub top_score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels.
    pub bbox: [f32; 4],
    pub start_time: SystemTime,
    /// When it was last seen; set on `end`.
    pub end_time: Option<SystemTime>,
    pub stationary: bool,
    pub current_zones: Vec<String>,
    /// Every zone it has been in, in order of first entry.
    pub entered_zones: Vec<String>,
    pub has_snapshot: bool,
    /// The frame this state is from.
    pub frame_time: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    New,
    Update,
    End,
}

impl ObjectChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectChange::New => "new",
            ObjectChange::Update => "update",
            ObjectChange::End => "end",
        }
    }
}

/// `new`: an object became real; `update`: its zones, stationary state or snapshot changed;
/// `end`: it left. `before` is its state at the previous event (the same as `after` on `new`).
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub pipeline: String,
    pub seq: u64,
    pub change: ObjectChange,
    pub before: TrackedObject,
    pub after: TrackedObject,
}

/// Objects of `label` in view of a pipeline, or in one of its zones.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectCount {
    pub pipeline: String,
    /// `None`: the whole frame.
    pub zone: Option<String>,
    pub label: String,
    pub count: usize,
}

/// A JPEG of an object's best frame, cropped around it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pipeline: String,
    pub label: String,
    pub object_id: String,
    pub jpeg: std::sync::Arc<Vec<u8>>,
    /// Where it is stored.
    pub path: std::path::PathBuf,
}

/// What an event says about the frame it came from.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    /// The file or device it came from.
    pub source: String,
    /// Counts up from 0 per source.
    pub id: u64,
    pub captured: SystemTime,
    pub width: u32,
    pub height: u32,
}

impl FrameInfo {
    pub fn of(frame: &Frame) -> FrameInfo {
        FrameInfo {
            source: frame.source.clone(),
            id: frame.id,
            captured: frame.captured,
            width: frame.image.width(),
            height: frame.image.height(),
        }
    }
}

/// A frame pipeline's result for one frame.
#[derive(Debug, Clone)]
pub struct FrameResult<T> {
    pub pipeline: String,
    pub seq: u64,
    pub frame: FrameInfo,
    /// The models' output (model name, version and precision included).
    pub output: T,
}

/// A model named in an event.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub precision: edge_core::Precision,
}

/// One transcribed utterance.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub pipeline: String,
    pub seq: u64,
    /// The audio source's description (`wav …`, `microphone …`).
    pub source: String,
    /// Per-pipeline utterance number (also in the speech events).
    pub utterance_id: u64,
    /// Wall-clock time of the utterance's first sample.
    pub began: SystemTime,
    /// Seconds from the start of the audio stream.
    pub start: f64,
    pub end: f64,
    /// Seconds of audio in the utterance.
    pub duration: f64,
    pub text: String,
    pub model: ModelInfo,
    /// Encoder and decoder time.
    pub processing: Duration,
}

/// Speech began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechEdge {
    Start,
    End,
}

impl SpeechEdge {
    pub fn as_str(self) -> &'static str {
        match self {
            SpeechEdge::Start => "start",
            SpeechEdge::End => "end",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SpeechEvent {
    pub pipeline: String,
    pub seq: u64,
    pub edge: SpeechEdge,
    pub utterance_id: u64,
    /// Wall-clock time of the edge.
    pub at: SystemTime,
    /// Seconds from the start of the audio stream.
    pub offset: f64,
    /// The voice activity model.
    pub model: String,
}

impl Event {
    pub fn pipeline(&self) -> &str {
        match self {
            Event::Detections(r) => &r.pipeline,
            Event::Classification(r) => &r.pipeline,
            Event::Transcript(t) => &t.pipeline,
            Event::Speech(s) => &s.pipeline,
            Event::Object(o) => &o.pipeline,
            Event::Count(c) => &c.pipeline,
            Event::Snapshot(s) => &s.pipeline,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Event::Detections(r) => r.seq,
            Event::Classification(r) => r.seq,
            Event::Transcript(t) => t.seq,
            Event::Speech(s) => s.seq,
            Event::Object(o) => o.seq,
            Event::Count(_) | Event::Snapshot(_) => 0,
        }
    }

    /// Whether this is one frame's result (what a sink's `per_frame = false` leaves out).
    pub fn is_per_frame(&self) -> bool {
        matches!(self, Event::Detections(_) | Event::Classification(_))
    }

    /// A frame result that found nothing (what `skip_empty` skips).
    pub fn is_empty(&self) -> bool {
        match self {
            Event::Detections(r) => r.output.detections.is_empty(),
            Event::Classification(r) => r.output.labels.is_empty(),
            Event::Transcript(t) => t.text.is_empty(),
            Event::Speech(_) | Event::Object(_) | Event::Count(_) | Event::Snapshot(_) => false,
        }
    }
}

/// RFC 3339, UTC, milliseconds: how every event time is written.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
