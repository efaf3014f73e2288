//! Whole recordings at once (the `transcribe` command and tests): VAD-cut utterances, each
//! transcribed, joined into one text with per-segment times.

use serde::Serialize;

use super::segmenter::{Event, Segmenter, SegmenterConfig};
use super::vad::{CHUNK, SileroVad};
use super::whisper::{Transcription, Whisper};
use super::{SAMPLE_RATE, SpeechError};

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// Seconds from the start of the recording.
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Encoder + decoder time for this segment, in ms.
    pub processing_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileTranscript {
    pub text: String,
    pub segments: Vec<Segment>,
    /// Seconds of audio in the recording.
    pub duration: f64,
    /// Total processing time over audio duration (below 1: faster than real time).
    pub real_time_factor: f64,
}

/// Cuts `samples` (16 kHz mono) into utterances and transcribes each.
pub fn transcribe(
    samples: &[f32],
    vad: &mut SileroVad,
    whisper: &Whisper,
    cfg: SegmenterConfig,
) -> Result<FileTranscript, SpeechError> {
    let mut seg = Segmenter::new(cfg);
    let mut utterances = Vec::new();
    let mut keep = |events: Vec<Event>| {
        utterances.extend(events.into_iter().filter_map(|e| match e {
            Event::Utterance(u) => Some(u),
            Event::SpeechStart(_) => None,
        }))
    };
    for chunk in samples.chunks_exact(CHUNK) {
        let p = vad.probability(chunk)?;
        keep(seg.push(chunk, p));
    }
    keep(seg.flush());
    let mut segments = Vec::new();
    let mut processing = 0.0;
    for u in utterances {
        let Transcription { text, encode, decode, .. } = whisper.transcribe(&u.samples)?;
        let ms = (encode + decode).as_secs_f64() * 1000.0;
        processing += ms / 1000.0;
        if text.is_empty() {
            continue;
        }
        let secs = |s: u64| s as f64 / SAMPLE_RATE as f64;
        segments.push(Segment { start: secs(u.start), end: secs(u.end()), text, processing_ms: ms });
    }
    let text = segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let duration = samples.len() as f64 / SAMPLE_RATE as f64;
    let real_time_factor = if duration > 0.0 { processing / duration } else { 0.0 };
    Ok(FileTranscript { text, segments, duration, real_time_factor })
}
