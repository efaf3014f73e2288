//! Whole recordings at once (the `transcribe` command and tests): VAD-cut utterances, each
//! transcribed, joined into one text with per-segment times.
//!
//! Neighbouring utterances are transcribed together (with the pause between them) when their
//! joint encoder window costs less than theirs apart: a 20 s reading the VAD cut at a pause is
//! one 30 s pass, not two of 20 s; two sentences far apart stay two segments.

use serde::Serialize;

use super::segmenter::{Event, Segmenter, SegmenterConfig, Utterance};
use super::vad::{CHUNK, SileroVad};
use super::whisper::{Transcription, WINDOW_SAMPLES, Whisper};
use super::window::frames_for;
use super::{SAMPLE_RATE, SpeechError};

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// Seconds from the start of the recording.
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Encoder + decoder time for this segment, in ms.
    pub processing_ms: f64,
    /// Of which the log-mel frontend and encoder (every window tried), in ms.
    pub encode_ms: f64,
    /// Seconds of audio the encoder ran on (the window sized to the segment, or 30).
    pub window_secs: f32,
    /// Whether the sized window's answer was refused and the full 30 s window redid it.
    pub redone: bool,
    /// Mean log-probability of the segment's tokens: how sure the model was (0 is certain).
    pub avg_logprob: f32,
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
    // with the full window every utterance costs the same 30 s: kept apart, as they were said
    let utterances = if whisper.sized_windows() { joined(&utterances, samples) } else { utterances };
    for u in utterances {
        let Transcription { text, encode, decode, window_secs, redone, avg_logprob, .. } =
            whisper.transcribe(&u.samples)?;
        let ms = (encode + decode).as_secs_f64() * 1000.0;
        processing += ms / 1000.0;
        if text.is_empty() {
            continue;
        }
        let secs = |s: u64| s as f64 / SAMPLE_RATE as f64;
        segments.push(Segment {
            start: secs(u.start),
            end: secs(u.end()),
            text,
            processing_ms: ms,
            encode_ms: encode.as_secs_f64() * 1000.0,
            window_secs,
            redone,
            avg_logprob,
        });
    }
    let text = segments.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let duration = samples.len() as f64 / SAMPLE_RATE as f64;
    let real_time_factor = if duration > 0.0 { processing / duration } else { 0.0 };
    Ok(FileTranscript { text, segments, duration, real_time_factor })
}

/// `utterances` (in order, cut from `recording`) with each run of neighbours whose joint
/// window (see [`frames_for`]) is smaller than the sum of their own made one utterance, the
/// recording's audio between them included.
fn joined(utterances: &[Utterance], recording: &[f32]) -> Vec<Utterance> {
    let mut out: Vec<Utterance> = Vec::new();
    // per utterance in `out`, the encoder frames its parts would cost apart
    let mut apart: Vec<usize> = Vec::new();
    for u in utterances {
        let own = frames_for(u.samples.len());
        if let (Some(last), Some(cost)) = (out.last_mut(), apart.last_mut()) {
            let span = (u.end() - last.start) as usize;
            let (from, to) = (last.start as usize, u.end() as usize);
            if span <= WINDOW_SAMPLES && frames_for(span) < *cost + own && to <= recording.len() {
                last.samples = recording[from..to].to_vec();
                *cost += own;
                continue;
            }
        }
        out.push(u.clone());
        apart.push(own);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utterance(start_s: f32, end_s: f32, recording: &[f32]) -> Utterance {
        let (a, b) = ((start_s * SAMPLE_RATE as f32) as usize, (end_s * SAMPLE_RATE as f32) as usize);
        Utterance { start: a as u64, samples: recording[a..b].to_vec() }
    }

    #[test]
    fn neighbours_are_joined_only_when_one_window_costs_less() {
        let recording: Vec<f32> = (0..40 * SAMPLE_RATE as usize).map(|i| i as f32).collect();
        // a 20 s reading cut at a pause: 10 s + 10 s would be two 20 s windows, joined one 30 s
        let reading = [utterance(1.0, 11.0, &recording), utterance(11.5, 21.0, &recording)];
        let j = joined(&reading, &recording);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].start, SAMPLE_RATE as u64);
        assert_eq!(j[0].samples, recording[SAMPLE_RATE as usize..21 * SAMPLE_RATE as usize]);
        // two short sentences 3 s apart: two 5 s windows cost less than one 20 s window
        let apart = [utterance(2.0, 6.0, &recording), utterance(9.0, 12.0, &recording)];
        assert_eq!(joined(&apart, &recording), apart.to_vec());
        // never past Whisper's 30 s
        let long = [utterance(0.0, 19.0, &recording), utterance(19.5, 39.0, &recording)];
        assert_eq!(joined(&long, &recording).len(), 2);
    }
}
