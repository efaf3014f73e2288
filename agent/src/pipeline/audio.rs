//! Audio pipelines: three threads joined by bounded links.
//!
//! ```text
//! [src-<name>] --blocks (block)--> [vad-<name>] --utterances (block)--> [asr-<name>] --> results channel
//!  mic / wav                        Silero + segmenter                   Whisper
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

use super::{PipelineError, Publish, Running, thread_name};
use crate::audio::AudioSourceSpec;
use crate::config::{Precision, StageConfig, VadStage};
use crate::link::{LinkSender, Policy, link};
use crate::model::Catalog;
use crate::mqtt::Outgoing;
use crate::mqtt::payload::{
    ModelRef, SPEECH_EVENT_SCHEMA, SpeechEventMessage, TRANSCRIPT_SCHEMA, TranscriptMessage, timestamp,
};
use crate::speech::segmenter::{Event, Segmenter, SegmenterConfig, Utterance};
use crate::speech::vad::{CHUNK, SileroVad};
use crate::speech::whisper::Whisper;
use crate::speech::{Plan, SAMPLE_RATE};
use crate::stats::PipelineStats;

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
    ) -> Result<AudioPipeline, String> {
        let [StageConfig::Vad(vad), StageConfig::Transcribe(asr)] = stages else {
            return Err("an audio source needs exactly a vad and a transcribe stage".into());
        };
        let entry = |name: &str| catalog.get_speech(name).ok_or_else(|| format!("no speech model named {name:?}"));
        let vad_plan = match self.vad.get(&vad.model) {
            Some(p) => p.clone(),
            None => {
                let plan = SileroVad::load(entry(&vad.model)?).map_err(|e| e.to_string())?.plan();
                self.vad.insert(vad.model.clone(), plan.clone());
                plan
            }
        };
        let key = (asr.model.clone(), asr.precision.clone());
        let whisper = match self.whisper.get(&key) {
            Some(w) => w.clone(),
            None => {
                let w = Arc::new(Whisper::load(entry(&asr.model)?, asr.precision.clone()).map_err(|e| e.to_string())?);
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
        publish: Publish,
    ) -> std::io::Result<Running> {
        let AudioPipeline { source, vad_plan, vad, whisper } = self;
        let (block_tx, block_rx, _) = link::<Block>(BLOCK_LINK, Policy::Block);
        let (utt_tx, utt_rx, _) = link::<Spoken>(UTTERANCE_LINK, Policy::Block);
        // audio links block, so nothing is dropped between threads; a microphone loses samples
        // in its own ring instead, counted apart
        let mut st = PipelineStats::new(Arc::new(AtomicU64::new(0)));
        st.overrun_samples = source.live.then(|| source.overruns.clone());
        let stats = Arc::new(st);
        let describe = source.describe.clone();

        let (n, st) = (name.clone(), stats.clone());
        let src = std::thread::Builder::new()
            .name(thread_name("src", &name))
            .spawn(move || run_source(&n, &source, &cancel, &block_tx, &st))?;

        let (n, st, pb) = (name.clone(), stats.clone(), publish.clone());
        let vad_thread = std::thread::Builder::new().name(thread_name("vad", &name)).spawn(move || {
            crate::sched::inference_thread();
            let mut vad_model = SileroVad::with_plan(vad_plan)
                .map_err(|e| PipelineError::Build { pipeline: n.clone(), message: e.to_string() })?;
            let mut seg = Segmenter::new(SegmenterConfig::from_stage(&vad));
            let mut pending: Vec<f32> = Vec::new();
            let mut stream_start: Option<SystemTime> = None;
            let mut next_id = 0u64;
            let mut handle = |events: Vec<Event>, start: SystemTime| -> bool {
                for e in events {
                    let (event, at) = match e {
                        Event::SpeechStart(at) => ("start", at),
                        Event::Utterance(utterance) => {
                            let at = utterance.end();
                            let began = start + secs(utterance.start);
                            if utt_tx.send(Spoken { id: next_id, utterance, began }).is_err() {
                                return false;
                            }
                            next_id += 1;
                            ("end", at)
                        }
                    };
                    if vad.events {
                        let id = if event == "end" { next_id - 1 } else { next_id };
                        let msg = SpeechEventMessage {
                            schema: SPEECH_EVENT_SCHEMA,
                            timestamp: timestamp(start + secs(at)),
                            device: pb.device.clone(),
                            pipeline: n.clone(),
                            event,
                            utterance_id: id,
                            at: at as f64 / SAMPLE_RATE as f64,
                        };
                        let payload = serde_json::to_vec(&msg).unwrap_or_default();
                        let out = Outgoing { topic: pb.topics.speech(&n), payload, retain: false };
                        if pb.results.blocking_send(out).is_err() {
                            return false;
                        }
                    }
                }
                true
            };
            for block in block_rx.iter() {
                let start = *stream_start.get_or_insert(block.captured);
                pending.extend_from_slice(&block.samples);
                let mut used = 0;
                while pending.len() - used >= CHUNK {
                    let chunk = &pending[used..used + CHUNK];
                    used += CHUNK;
                    let p = match vad_model.probability(chunk) {
                        Ok(p) => p,
                        Err(e) => {
                            st.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(pipeline = %n, error = %e, "vad failed on a chunk");
                            0.0
                        }
                    };
                    if !handle(seg.push(chunk, p), start) {
                        return Ok(());
                    }
                }
                pending.drain(..used);
                // a block is done once the VAD has seen it: the watchdog's measure of progress
                st.frames_done.fetch_add(1, Ordering::Relaxed);
            }
            // the source ended or was cancelled: what was being said still counts
            handle(seg.flush(), stream_start.unwrap_or_else(SystemTime::now));
            Ok(())
        })?;

        let (n, st) = (name.clone(), stats.clone());
        let asr = std::thread::Builder::new().name(thread_name("asr", &name)).spawn(move || {
            crate::sched::inference_thread();
            crate::model::with_threads(threads, move || {
                let topic = publish.topics.transcripts(&n);
                let mut seq = 0u64;
                for spoken in utt_rx.iter() {
                    let u = &spoken.utterance;
                    let t = match whisper.transcribe(&u.samples) {
                        Ok(t) => t,
                        Err(e) => {
                            st.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(pipeline = %n, error = %e, "transcription failed");
                            continue;
                        }
                    };
                    let processing = t.processing();
                    st.record_latency(processing.as_secs_f32() * 1000.0);
                    if t.text.is_empty() {
                        continue;
                    }
                    let duration = u.samples.len() as f64 / SAMPLE_RATE as f64;
                    let msg = TranscriptMessage {
                        schema: TRANSCRIPT_SCHEMA,
                        timestamp: timestamp(spoken.began),
                        device: publish.device.clone(),
                        pipeline: n.clone(),
                        seq,
                        source: describe.clone(),
                        utterance_id: spoken.id,
                        start: u.start as f64 / SAMPLE_RATE as f64,
                        end: u.end() as f64 / SAMPLE_RATE as f64,
                        duration,
                        text: t.text,
                        model: ModelRef {
                            name: whisper.name.clone(),
                            version: whisper.version.clone(),
                            precision: whisper.precision.to_string(),
                        },
                        processing_ms: (processing.as_secs_f64() * 1e5).round() / 100.0,
                        real_time_factor: ((processing.as_secs_f64() / duration.max(1e-3)) * 1000.0).round() / 1000.0,
                    };
                    seq += 1;
                    let payload = serde_json::to_vec(&msg).unwrap_or_default();
                    if publish.results.blocking_send(Outgoing { topic: topic.clone(), payload, retain: false }).is_err()
                    {
                        tracing::warn!(pipeline = %n, "results channel closed; stopping");
                        return Ok(());
                    }
                    st.results.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })?;
        Ok(Running { name, stats, threads: vec![src, vad_thread, asr] })
    }
}

fn secs(samples: u64) -> Duration {
    Duration::from_secs_f64(samples as f64 / SAMPLE_RATE as f64)
}

/// An audio source's thread: blocks stamped with their arrival time.
fn run_source(
    pipeline: &str,
    spec: &AudioSourceSpec,
    cancel: &CancellationToken,
    tx: &LinkSender<Block>,
    stats: &PipelineStats,
) -> Result<(), PipelineError> {
    super::supervise_source(
        pipeline,
        spec.live,
        cancel,
        stats,
        || spec.open(),
        |s, cancel| s.next_block(cancel),
        |samples| tx.send(Block { samples, captured: SystemTime::now() }).is_ok(),
    )
    .map_err(|e| PipelineError::Build { pipeline: pipeline.into(), message: e.to_string() })
}
