//! Cutting a stream of VAD probabilities into utterances (pure logic, no model).
//!
//! Speech starts when a chunk's probability reaches `threshold`; it ends after `min_silence`
//! of chunks below `threshold - 0.15` (the hangover). An utterance keeps `pad` of audio before
//! its first and after its last voiced chunk; one with less than `min_speech` of voiced audio
//! is dropped (a click, a cough). Speech longer than `max_utterance` is cut at the quietest
//! chunk of its last third, so nothing is lost and every piece fits Whisper's 30 s window.

use std::collections::VecDeque;

use super::vad::CHUNK;

#[derive(Debug, Clone, Copy)]
pub struct SegmenterConfig {
    pub threshold: f32,
    /// In samples (all lengths here are at 16 kHz).
    pub min_speech: usize,
    pub min_silence: usize,
    pub pad: usize,
    pub max_utterance: usize,
}

/// A finished utterance: its samples and where they sit in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Sample offset of the first sample in the stream.
    pub start: u64,
    pub samples: Vec<f32>,
}

impl Utterance {
    pub fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Enough voiced audio to count as speech began at this sample offset.
    SpeechStart(u64),
    Utterance(Utterance),
}

#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    /// Samples seen so far (the offset of the next chunk).
    position: u64,
    /// Recent audio kept as pre-roll while idle.
    preroll: VecDeque<f32>,
    speech: Option<Speech>,
}

#[derive(Debug)]
struct Speech {
    start: u64,
    samples: Vec<f32>,
    /// Probability of each chunk of `samples` (chunk-aligned after the pre-roll).
    probs: Vec<(usize, f32)>,
    voiced: usize,
    /// Samples since the last voiced chunk.
    silence: usize,
    announced: bool,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Segmenter {
        Segmenter { cfg, position: 0, preroll: VecDeque::with_capacity(cfg.pad + CHUNK), speech: None }
    }

    /// Feeds one chunk and its speech probability; returns what happened.
    pub fn push(&mut self, chunk: &[f32], p: f32) -> Vec<Event> {
        let mut events = Vec::new();
        let at = self.position;
        self.position += chunk.len() as u64;
        let cfg = self.cfg;
        match &mut self.speech {
            None if p >= cfg.threshold => {
                let mut samples: Vec<f32> = self.preroll.drain(..).collect();
                let start = at - samples.len() as u64;
                let offset = samples.len();
                samples.extend_from_slice(chunk);
                let speech = Speech {
                    start,
                    samples,
                    probs: vec![(offset, p)],
                    voiced: chunk.len(),
                    silence: 0,
                    announced: false,
                };
                self.speech = Some(speech);
            }
            None => {
                self.preroll.extend(chunk);
                let excess = self.preroll.len().saturating_sub(cfg.pad);
                self.preroll.drain(..excess);
                return events;
            }
            Some(s) => {
                s.probs.push((s.samples.len(), p));
                s.samples.extend_from_slice(chunk);
                if p >= cfg.threshold {
                    s.voiced += chunk.len();
                    s.silence = 0;
                } else if p < cfg.threshold - 0.15 || s.silence > 0 {
                    s.silence += chunk.len();
                }
            }
        }
        let Some(s) = &mut self.speech else { return events };
        if !s.announced && s.voiced >= cfg.min_speech {
            s.announced = true;
            events.push(Event::SpeechStart(s.start));
        }
        if s.silence >= cfg.min_silence {
            events.extend(self.finish());
        } else if s.samples.len() >= cfg.max_utterance {
            events.extend(self.split());
        }
        events
    }

    /// Ends the stream: a pending utterance is emitted if it is long enough.
    pub fn flush(&mut self) -> Vec<Event> {
        self.preroll.clear();
        self.finish().into_iter().collect()
    }

    /// Closes the current speech: trailing silence beyond `pad` is trimmed, the remainder
    /// becomes pre-roll for what follows.
    fn finish(&mut self) -> Option<Event> {
        let s = self.speech.take()?;
        let keep = s.samples.len() - s.silence.saturating_sub(self.cfg.pad);
        let tail = &s.samples[keep..];
        self.preroll.extend(&tail[tail.len().saturating_sub(self.cfg.pad)..]);
        if s.voiced < self.cfg.min_speech {
            return None;
        }
        let mut samples = s.samples;
        samples.truncate(keep);
        Some(Event::Utterance(Utterance { start: s.start, samples }))
    }

    /// Cuts over-long speech at the quietest chunk of its last third; the rest stays open.
    fn split(&mut self) -> Option<Event> {
        let s = self.speech.as_mut()?;
        let from = s.samples.len() * 2 / 3;
        let cut = s
            .probs
            .iter()
            .filter(|(offset, _)| *offset >= from && *offset > 0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(offset, _)| *offset)
            .unwrap_or(s.samples.len());
        let rest = s.samples.split_off(cut);
        let head = std::mem::replace(&mut s.samples, rest);
        let start = s.start;
        s.start += cut as u64;
        s.probs = s.probs.iter().filter(|(o, _)| *o >= cut).map(|(o, p)| (o - cut, *p)).collect();
        s.silence = s.silence.min(s.samples.len());
        Some(Event::Utterance(Utterance { start, samples: head }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: usize = 16;

    fn cfg() -> SegmenterConfig {
        SegmenterConfig {
            threshold: 0.5,
            min_speech: 250 * MS,
            min_silence: 500 * MS,
            pad: 200 * MS,
            max_utterance: 30_000 * MS,
        }
    }

    /// Feeds `(probability, chunks)` runs; returns the utterances as (start, end) in chunks
    /// of the stream and the speech-start offsets.
    fn run(seg: &mut Segmenter, runs: &[(f32, usize)]) -> (Vec<(u64, u64)>, Vec<u64>) {
        let mut utts = Vec::new();
        let mut starts = Vec::new();
        let chunk = vec![0.0f32; CHUNK];
        let mut handle = |events: Vec<Event>| {
            for e in events {
                match e {
                    Event::Utterance(u) => utts.push((u.start, u.end())),
                    Event::SpeechStart(at) => starts.push(at),
                }
            }
        };
        for &(p, n) in runs {
            for _ in 0..n {
                handle(seg.push(&chunk, p));
            }
        }
        handle(seg.flush());
        (utts, starts)
    }

    #[test]
    fn speech_between_silences_is_one_padded_utterance() {
        let mut seg = Segmenter::new(cfg());
        let c = CHUNK as u64;
        // 2 s silence (62 chunks), 1 s speech (31), 2 s silence
        let (utts, starts) = run(&mut seg, &[(0.05, 62), (0.9, 31), (0.05, 62)]);
        let pad = (200 * MS) as u64;
        assert_eq!(utts, vec![(62 * c - pad, 93 * c + pad)]);
        assert_eq!(starts, vec![62 * c - pad]);
    }

    #[test]
    fn clicks_are_dropped_and_short_pauses_do_not_split() {
        let mut seg = Segmenter::new(cfg());
        // a 64 ms click, then speech with a 300 ms pause inside
        let (utts, _) = run(&mut seg, &[(0.0, 40), (0.95, 2), (0.0, 40), (0.9, 20), (0.1, 9), (0.9, 20), (0.0, 40)]);
        assert_eq!(utts.len(), 1, "{utts:?}");
        let c = CHUNK as u64;
        assert!(utts[0].0 < 82 * c && utts[0].1 > 131 * c, "{utts:?}");
    }

    #[test]
    fn long_speech_is_cut_at_its_quietest_point_and_loses_nothing() {
        let mut seg = Segmenter::new(cfg());
        // 45 s of speech with a dip at ~25 s: the first piece ends at the dip
        let chunks_25s = 25 * 16_000 / CHUNK;
        let (utts, _) = run(&mut seg, &[(0.9, chunks_25s), (0.55, 1), (0.9, 45 * 16_000 / CHUNK - chunks_25s - 1)]);
        assert_eq!(utts.len(), 2, "{utts:?}");
        assert_eq!(utts[0].1, (chunks_25s * CHUNK) as u64);
        assert_eq!(utts[0].1, utts[1].0, "pieces are contiguous");
        assert!(utts.iter().all(|(s, e)| e - s <= 30 * 16_000), "{utts:?}");
    }

    #[test]
    fn silence_and_noise_give_nothing() {
        let mut seg = Segmenter::new(cfg());
        assert_eq!(run(&mut seg, &[(0.0, 300), (0.3, 300), (0.49, 10)]), (vec![], vec![]));
    }
}
