//! Audio pipelines: three threads joined by bounded links.
//!
//! ```text
//! [src-<name>] --blocks (block)--> [vad-<name>] --utterances (block)--> [asr-<name>] --> sinks (transcripts)
//!  mic / wav                        Silero + segmenter --> sinks          Whisper
//!                                   (speech events)
//! ```
//!
//! Nothing is dropped inside the pipeline: when transcription falls behind, the links fill
//! and the source waits; a microphone then overflows its own ring (counted as `dropped`), a
//! WAV file simply waits. Silence and noise never reach Whisper.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::stage::BuildError;
use super::{PipelineError, Running, spawn_stage};
use crate::config::{EncoderWindow, Precision, StageConfig, VadStage};
use crate::event::{Event, ModelInfo, SpeechEdge, SpeechEvent, Transcript};
use crate::link::{LinkReceiver, LinkSender, Policy, link};
use crate::sched::Class;
use crate::sink::{Observation, Sinks};
use crate::stats::PipelineStats;
use edge_core::audio::AudioSourceSpec;
use edge_core::model::Catalog;
use edge_core::speech::segmenter::{self, Segmenter, Utterance};
use edge_core::speech::vad::{CHUNK, SileroVad};
use edge_core::speech::whisper::Whisper;
use edge_core::speech::{Plan, SAMPLE_RATE};

/// Blocks (about 20–100 ms each) between capture and VAD.
const BLOCK_LINK: usize = 64;
/// Utterances waiting for transcription.
const UTTERANCE_LINK: usize = 4;

/// Loads each speech model once for all pipelines.
#[derive(Default)]
pub struct SpeechPool {
    whisper: HashMap<(String, Precision), Arc<Whisper>>,
    vad: HashMap<String, Plan>,
}

impl SpeechPool {
    pub fn build(
        &mut self,
        source: AudioSourceSpec,
        stages: &[StageConfig],
        catalog: &Catalog,
    ) -> Result<AudioPipeline, BuildError> {
        let [StageConfig::Vad(vad), StageConfig::Transcribe(asr)] = stages else {
            return Err(BuildError::Shape("an audio source needs exactly a vad and a transcribe stage"));
        };
        let entry = |name: &str| catalog.get_speech(name).ok_or_else(|| BuildError::NoSpeechModel(name.to_string()));
        let vad_plan = match self.vad.get(&vad.model) {
            Some(p) => p.clone(),
            None => {
                let plan = SileroVad::load(entry(&vad.model)?)?.plan();
                self.vad.insert(vad.model.clone(), plan.clone());
                plan
            }
        };
        let key = (asr.model.clone(), asr.precision.clone());
        let whisper = match self.whisper.get(&key) {
            Some(w) => w.clone(),
            None => {
                let mut w = Whisper::load(entry(&asr.model)?, asr.precision.clone())?;
                w.set_sized_windows(asr.window == EncoderWindow::Sized);
                let w = Arc::new(w);
                tracing::info!(model = %w.name, precision = %w.precision, load_ms = w.load_time.as_millis() as u64, "speech model loaded");
                self.whisper.insert(key, w.clone());
                w
            }
        };
        Ok(AudioPipeline { source, vad_plan, vad: vad.clone(), whisper })
    }
}

pub struct AudioPipeline {
    source: AudioSourceSpec,
    vad_plan: Plan,
    vad: VadStage,
    whisper: Arc<Whisper>,
}

struct Block {
    samples: Vec<f32>,
    captured: SystemTime,
}

struct Spoken {
    id: u64,
    utterance: Utterance,
    /// Wall-clock time of the utterance's first sample.
    began: SystemTime,
}

impl AudioPipeline {
    pub fn spawn(
        self,
        name: String,
        threads: usize,
        cancel: CancellationToken,
        sinks: Arc<Sinks>,
    ) -> Result<Running, PipelineError> {
        let AudioPipeline { source, vad_plan, vad, whisper } = self;
        let (block_tx, block_rx, _) = link::<Block>(BLOCK_LINK, Policy::Block);
        let (utt_tx, utt_rx, _) = link::<Spoken>(UTTERANCE_LINK, Policy::Block);
        // audio links block, so nothing is dropped between threads; a microphone loses samples
        // in its own ring instead, counted apart
        let mut st = PipelineStats::new(Arc::new(AtomicU64::new(0)));
        st.overrun_samples = source.live.then(|| source.overruns.clone());
        let stats = Arc::new(st);
        let describe = source.describe.clone();

        // a sound card does not wait: capture stays in the process's own class
        let (n, st) = (name.clone(), stats.clone());
        let source_cancel = cancel.clone();
        let src =
            spawn_stage("src", &name, Class::Helper, move || source_loop(&n, &source, &source_cancel, &block_tx, &st))?;
        let (n, st, sk) = (name.clone(), stats.clone(), sinks.clone());
        let vad_thread = spawn_stage("vad", &name, Class::Inference, move || {
            let model = SileroVad::with_plan(vad_plan)
                .map_err(|e| PipelineError::Stage { pipeline: n.clone(), message: e.to_string() })?;
            vad_loop(Vad { pipeline: n, settings: vad, stats: st, sinks: sk }, model, &block_rx, &utt_tx);
            Ok(())
        })?;
        let (n, st, stop) = (name.clone(), stats.clone(), cancel.clone());
        let asr = spawn_stage("asr", &name, Class::Inference, move || {
            let asr = Asr { name: &n, source: &describe, whisper: &whisper, stats: &st, sinks: &sinks, stop };
            edge_core::model::with_threads(threads, || asr_loop(&asr, &utt_rx));
            Ok(())
        })?;
        Ok(Running { name, stats, threads: vec![src, vad_thread, asr] })
    }
}

/// What the `vad-*` thread works with.
struct Vad {
    pipeline: String,
    settings: VadStage,
    stats: Arc<PipelineStats>,
    sinks: Arc<Sinks>,
}

/// Numbers the segmenter's events, sends finished utterances on to transcription and speech
/// edges to the sinks (when asked for). False when the pipeline is going away.
struct Edges<'a> {
    vad: &'a Vad,
    utterances: &'a LinkSender<Spoken>,
    next_utterance: u64,
    seq: u64,
}

impl Edges<'_> {
    fn handle(&mut self, events: Vec<segmenter::Event>, stream_start: SystemTime) -> bool {
        for e in events {
            let (edge, at, id) = match e {
                segmenter::Event::SpeechStart(at) => (SpeechEdge::Start, at, self.next_utterance),
                segmenter::Event::Utterance(utterance) => {
                    let (id, at) = (self.next_utterance, utterance.end());
                    let began = stream_start + secs(utterance.start);
                    if self.utterances.send(Spoken { id, utterance, began }).is_err() {
                        return false;
                    }
                    self.next_utterance += 1;
                    (SpeechEdge::End, at, id)
                }
            };
            self.vad.sinks.observe(&Observation::Speaking(edge == SpeechEdge::Start));
            if self.vad.settings.events {
                let event = Event::Speech(SpeechEvent {
                    pipeline: self.vad.pipeline.clone(),
                    seq: self.seq,
                    edge,
                    utterance_id: id,
                    at: stream_start + secs(at),
                    offset: at as f64 / SAMPLE_RATE as f64,
                    model: self.vad.settings.model.clone(),
                });
                self.seq += 1;
                if !self.vad.sinks.send(&event, &self.vad.stats) {
                    return false;
                }
            }
        }
        true
    }
}

/// `vad-*`: Silero on every chunk of 512 samples, the segmenter on its probabilities.
fn vad_loop(vad: Vad, mut model: SileroVad, blocks: &LinkReceiver<Block>, utterances: &LinkSender<Spoken>) {
    let mut seg = Segmenter::new(vad.settings.segmenter());
    let mut pending: Vec<f32> = Vec::new();
    let mut stream_start: Option<SystemTime> = None;
    let mut edges = Edges { vad: &vad, utterances, next_utterance: 0, seq: 0 };
    for block in blocks.iter() {
        let start = *stream_start.get_or_insert(block.captured);
        pending.extend_from_slice(&block.samples);
        let mut used = 0;
        while pending.len() - used >= CHUNK {
            let chunk = &pending[used..used + CHUNK];
            used += CHUNK;
            let p = model.probability(chunk).unwrap_or_else(|e| {
                vad.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pipeline = %vad.pipeline, error = %e, "vad failed on a chunk");
                0.0
            });
            vad.sinks.observe(&Observation::VoiceLevel(p));
            if !edges.handle(seg.push(chunk, p), start) {
                return;
            }
        }
        pending.drain(..used);
        // a block is done once the VAD has seen it: the watchdog's measure of progress
        vad.stats.frames_done.fetch_add(1, Ordering::Relaxed);
    }
    // the source ended or was cancelled: what was being said still counts
    edges.handle(seg.flush(), stream_start.unwrap_or_else(SystemTime::now));
}

/// Transcription a stop still waits for: utterances queued when the agent is asked to stop
/// are transcribed for this long after it; the rest are counted and let go, so that what was
/// already made reaches the outbox within the stop deadline (`agent.shutdown_timeout_secs`).
const STOP_BUDGET: Duration = Duration::from_secs(5);

/// What the `asr-*` thread works with.
struct Asr<'a> {
    name: &'a str,
    source: &'a str,
    whisper: &'a Whisper,
    stats: &'a PipelineStats,
    sinks: &'a Sinks,
    stop: CancellationToken,
}

/// `asr-*`: Whisper on each utterance; every non-empty text becomes a transcript event.
fn asr_loop(asr: &Asr, utterances: &LinkReceiver<Spoken>) {
    let Asr { name, source, whisper, stats, sinks, .. } = *asr;
    let mut stopping: Option<std::time::Instant> = None;
    let mut skipped = 0u64;
    let model = ModelInfo {
        name: whisper.name.clone(),
        version: whisper.version.clone(),
        precision: whisper.precision.clone(),
    };
    let mut seq = 0u64;
    for spoken in utterances.iter() {
        if asr.stop.is_cancelled() && stopping.get_or_insert_with(std::time::Instant::now).elapsed() > STOP_BUDGET {
            skipped += 1;
            continue;
        }
        let u = &spoken.utterance;
        let t = match whisper.transcribe(&u.samples) {
            Ok(t) => t,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pipeline = %name, error = %e, "transcription failed");
                continue;
            }
        };
        let processing = t.processing();
        stats.record_latency(processing.as_secs_f32() * 1000.0);
        if t.text.is_empty() {
            continue;
        }
        let event = Event::Transcript(Transcript {
            pipeline: name.to_string(),
            seq,
            source: source.to_string(),
            utterance_id: spoken.id,
            began: spoken.began,
            start: u.start as f64 / SAMPLE_RATE as f64,
            end: u.end() as f64 / SAMPLE_RATE as f64,
            duration: u.samples.len() as f64 / SAMPLE_RATE as f64,
            text: t.text,
            model: model.clone(),
            processing,
        });
        seq += 1;
        if !sinks.send(&event, stats) {
            return;
        }
        stats.results.fetch_add(1, Ordering::Relaxed);
    }
    if skipped > 0 {
        stats.errors.fetch_add(skipped, Ordering::Relaxed);
        tracing::warn!(pipeline = %name, utterances = skipped, "not transcribed: still queued when the stop's transcription time ran out");
    }
}

fn secs(samples: u64) -> Duration {
    Duration::from_secs_f64(samples as f64 / SAMPLE_RATE as f64)
}

/// `src-*`: blocks stamped with their arrival time.
fn source_loop(
    pipeline: &str,
    spec: &AudioSourceSpec,
    cancel: &CancellationToken,
    tx: &LinkSender<Block>,
    stats: &PipelineStats,
) -> Result<(), PipelineError> {
    super::sources::supervise(
        pipeline,
        spec.live,
        cancel,
        stats,
        || spec.open(),
        |s, cancel| s.next_block(cancel),
        |samples| tx.send(Block { samples, captured: SystemTime::now() }).is_ok(),
    )
    .map_err(|source| PipelineError::Source { pipeline: pipeline.into(), source: source.into() })
}
