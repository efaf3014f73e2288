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
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Event::Detections(r) => r.seq,
            Event::Classification(r) => r.seq,
            Event::Transcript(t) => t.seq,
            Event::Speech(s) => s.seq,
        }
    }

    /// A frame result that found nothing (what `skip_empty` skips).
    pub fn is_empty(&self) -> bool {
        match self {
            Event::Detections(r) => r.output.detections.is_empty(),
            Event::Classification(r) => r.output.labels.is_empty(),
            Event::Transcript(t) => t.text.is_empty(),
            Event::Speech(_) => false,
        }
    }
}

/// RFC 3339, UTC, milliseconds: how every event time is written.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
