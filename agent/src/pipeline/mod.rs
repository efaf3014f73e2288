//! Pipelines: built from config (every component builds itself; errors collected with their
//! path), then spawned as threads joined by bounded links, the last feeding the shared results
//! channel that the MQTT publisher drains. A frame pipeline has four threads, so that on a
//! multi-core board the model's thread does nothing but run the model:
//!
//! ```text
//! [src-<name>] --capture link--> [prep-<name>] --1, block--> [infer-<name>] --1, block--> [post-<name>] --results channel--> publisher task
//!  FrameSource   keep-latest      Stage::prepare              Stage::infer                 Stage::post,     blocks when full
//!                or block         (resize, normalise)         (the models)                 JSON payload
//! ```

mod audio;
mod stage;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use stage::{SlotContext, Stage, classifier, probe_image, shipped_head};

use crate::config::{Config, SinkConfig};
use crate::link::{LinkSender, Policy, link};
use crate::model::{Catalog, ModelPool};
use crate::mqtt::{Outgoing, Topics};
use crate::source::{SourceError, SourceSpec};
use crate::stats::PipelineStats;

/// Frames queued between capture and inference: small, so results stay fresh.
const CAPTURE_LINK: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipelines.{pipeline}: {message}")]
    Build { pipeline: String, message: String },
    #[error("pipeline {pipeline}: source failed: {source}")]
    Source { pipeline: String, source: SourceError },
    #[error("pipeline {0}: a thread panicked")]
    Panicked(String),
}

/// A pipeline whose components are built and whose models are loaded, not yet running.
pub struct Pipeline {
    pub name: String,
    kind: Kind,
    /// Threads for one inference.
    threads: usize,
}

enum Kind {
    Vision { source: SourceSpec, stage: Stage, skip_empty: bool },
    Audio(audio::AudioPipeline),
}

/// Built pipelines, the head slots their classify stages share, and the detectors that
/// updates may replace.
pub struct Built {
    pub pipelines: Vec<Pipeline>,
    pub slots: crate::head::slot::HeadSlots,
    pub models: crate::update::models::ModelTargets,
}

/// Builds every pipeline of `config`, loading each model once; reports every failure.
pub fn build_all(config: &Config, catalog: &Catalog) -> Result<Built, Vec<PipelineError>> {
    let mut pool = ModelPool::with_state(&config.agent.state_dir);
    let mut slots = crate::head::slot::HeadSlots::default();
    let mut speech = audio::SpeechPool::default();
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (name, p) in &config.pipelines {
        let fail = |message: String| PipelineError::Build { pipeline: name.clone(), message };
        if let Some(source) = crate::audio::build(&p.source) {
            let built_audio = source
                .map_err(|e| fail(format!("source: {e}")))
                .and_then(|source| speech.build(source, &p.stages, catalog).map_err(|e| fail(format!("stages: {e}"))));
            match built_audio {
                Ok(a) => built.push(Pipeline { name: name.clone(), kind: Kind::Audio(a), threads: p.threads }),
                Err(e) => errors.push(e),
            }
            continue;
        }
        let source = crate::source::build(&p.source).map_err(|e| fail(format!("source: {e}")));
        let mut ctx = SlotContext {
            state_dir: &config.agent.state_dir,
            probation: config.updates.probation_inferences,
            slots: &mut slots,
        };
        let stage =
            Stage::build(name, &p.stages, catalog, &mut pool, &mut ctx).map_err(|e| fail(format!("stages: {e}")));
        match (source, stage) {
            (Ok(source), Ok(stage)) => {
                let skip_empty = p.sinks.iter().any(|s| matches!(s, SinkConfig::Mqtt(m) if m.skip_empty));
                built.push(Pipeline {
                    name: name.clone(),
                    kind: Kind::Vision { source, stage, skip_empty },
                    threads: p.threads,
                });
            }
            (source, stage) => errors.extend(source.err().into_iter().chain(stage.err())),
        }
    }
    for (model, failed, reason) in std::mem::take(&mut pool.rolled_back) {
        let restored = pool.targets().values().find(|t| t.name == model).map(|t| t.active_version());
        let event = crate::head::slot::SlotEvent::AutoRolledBack {
            slot: model,
            failed,
            restored: restored.unwrap_or_default(),
            reason: format!("failed to load at start: {reason}"),
        };
        if slots.events_tx.try_send(event).is_err() {
            tracing::error!("model rollback event dropped: the updates queue is full");
        }
    }
    let models = pool.targets();
    if errors.is_empty() { Ok(Built { pipelines: built, slots, models }) } else { Err(errors) }
}

/// A spawned pipeline.
pub struct Running {
    pub name: String,
    pub stats: Arc<PipelineStats>,
    /// Its threads, the source first.
    threads: Vec<JoinHandle<Result<(), PipelineError>>>,
}

impl Running {
    /// Blocks until every thread ends (the source finished or was cancelled, and each
    /// downstream thread drained its input); the first error wins.
    pub fn join(self) -> Result<(), PipelineError> {
        let mut result = Ok(());
        for t in self.threads.into_iter().rev() {
            let r = t.join().unwrap_or_else(|_| Err(PipelineError::Panicked(self.name.clone())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// What every pipeline's results need to become messages.
#[derive(Clone)]
pub struct Publish {
    pub device: String,
    pub topics: Topics,
    pub results: mpsc::Sender<Outgoing>,
}

impl Pipeline {
    /// Starts the pipeline's threads.
    pub fn spawn(self, cancel: CancellationToken, publish: Publish) -> std::io::Result<Running> {
        let Pipeline { name, kind, threads } = self;
        match kind {
            Kind::Vision { source, stage, skip_empty } => {
                spawn_vision(name, source, stage, skip_empty, threads, cancel, publish)
            }
            Kind::Audio(a) => a.spawn(name, threads, cancel, publish),
        }
    }
}

fn spawn_vision(
    name: String,
    source: SourceSpec,
    stage: Stage,
    skip_empty: bool,
    threads: usize,
    cancel: CancellationToken,
    publish: Publish,
) -> std::io::Result<Running> {
    {
        let policy = if source.live { Policy::KeepLatest } else { Policy::Block };
        let (tx, rx, dropped) = link(CAPTURE_LINK, policy);
        let stats = Arc::new(PipelineStats::new(dropped));
        let src_stats = stats.clone();
        let src_name = name.clone();
        // the capture thread owns the cancellation token: shutdown reaches sources only
        let source_thread = std::thread::Builder::new().name(thread_name("src", &name)).spawn(move || {
            crate::sched::background_thread();
            run_source(&src_name, &source, &cancel, &tx, &src_stats)
        })?;
        // preparing (resize, letterbox, normalise) runs beside inference, one frame ahead; the
        // link between them holds one prepared frame and blocks, so it adds no drops and at
        // most one frame of latency
        let stage = Arc::new(stage);
        let (ptx, prx, _) = link(1, Policy::Block);
        let prep_stage = stage.clone();
        let prep_thread = std::thread::Builder::new().name(thread_name("prep", &name)).spawn(move || {
            crate::sched::background_thread();
            for frame in rx.iter() {
                let prepared = prep_stage.prepare(&frame);
                if ptx.send((frame, prepared)).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        // decoding, NMS or the head, and the payload, run beside the model, one frame behind
        // it: the same one-frame blocking link
        let (itx, irx, _) = link(1, Policy::Block);
        let infer_stage = stage.clone();
        let infer_thread = std::thread::Builder::new().name(thread_name("infer", &name)).spawn(move || {
            crate::sched::inference_thread();
            crate::model::with_threads(threads, || {
                for (frame, prepared) in prx.iter() {
                    let inferred = prepared.and_then(|p| infer_stage.infer(&frame, p));
                    if itx.send((frame, inferred)).is_err() {
                        break;
                    }
                }
            });
            Ok(())
        })?;
        let post_stats = stats.clone();
        let post_name = name.clone();
        let post_thread = std::thread::Builder::new().name(thread_name("post", &name)).spawn(move || {
            crate::sched::background_thread();
            post_loop(&post_name, &stage, skip_empty, &irx, &post_stats, &publish)
        })?;
        Ok(Running { name, stats, threads: vec![source_thread, prep_thread, infer_thread, post_thread] })
    }
}

/// The last thread's loop: every frame's model outputs through the rest of the stage, each
/// result to the publisher.
fn post_loop(
    name: &str,
    stage: &Stage,
    skip_empty: bool,
    rx: &crate::link::LinkReceiver<(crate::source::Frame, Result<stage::Inferred, stage::StageError>)>,
    stats: &PipelineStats,
    publish: &Publish,
) -> Result<(), PipelineError> {
    let mut seq = 0u64;
    for (frame, inferred) in rx.iter() {
        match inferred.and_then(|i| stage.post(&frame, i)) {
            Ok(result) => {
                stats.record_inference(result.inference().as_secs_f32() * 1000.0);
                if skip_empty && result.is_empty() {
                    continue;
                }
                let payload = result.to_json(&publish.device, name, seq, &frame);
                seq += 1;
                let msg = Outgoing { topic: result.topic(&publish.topics, name), payload, retain: false };
                if publish.results.blocking_send(msg).is_err() {
                    tracing::warn!(pipeline = %name, "results channel closed; stopping");
                    return Ok(());
                }
                stats.results.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pipeline = %name, source = %frame.source, error = %e, "frame failed");
            }
        }
    }
    Ok(())
}

/// Longest wait between attempts to reopen a failed live source.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(30);

/// The source thread's loop, for frames and audio alike: opens the source, forwards what it
/// yields until it ends, `forward` reports the pipeline gone, or `cancel` fires. A failing live
/// source is reopened with exponential backoff and reported down in the stats meanwhile; a
/// failing batch source ends the pipeline with its error.
pub(crate) fn supervise_source<S, T, E: std::fmt::Display>(
    pipeline: &str,
    live: bool,
    cancel: &CancellationToken,
    stats: &PipelineStats,
    open: impl Fn() -> Result<S, E>,
    next: impl Fn(&mut S, &CancellationToken) -> Result<Option<T>, E>,
    mut forward: impl FnMut(T) -> bool,
) -> Result<(), E> {
    let mut backoff = Duration::from_millis(500);
    let mut source = None;
    // counts the failure; a batch source's failure ends the pipeline
    let failed = |e: E, what: &str, backoff: Duration| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.source_up.store(false, Ordering::Relaxed);
        if !live {
            return Err(e);
        }
        tracing::warn!(%pipeline, error = %e, retry_in_ms = backoff.as_millis() as u64, "{what}");
        Ok(())
    };
    while !cancel.is_cancelled() {
        let current = match &mut source {
            Some(s) => s,
            None => match open() {
                Ok(s) => {
                    stats.source_up.store(true, Ordering::Relaxed);
                    source.insert(s)
                }
                Err(e) => {
                    failed(e, "source unavailable", backoff)?;
                    crate::source::sleep_until(Instant::now() + backoff, cancel);
                    backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
                    continue;
                }
            },
        };
        match next(current, cancel) {
            Ok(Some(item)) => {
                backoff = Duration::from_millis(500);
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                if !forward(item) {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                failed(e, "source failed; reopening", backoff)?;
                source = None;
            }
        }
    }
    Ok(())
}

/// A frame source's thread: frames are numbered here, so ids keep counting across reopenings.
fn run_source(
    pipeline: &str,
    spec: &SourceSpec,
    cancel: &CancellationToken,
    tx: &LinkSender<crate::source::Frame>,
    stats: &PipelineStats,
) -> Result<(), PipelineError> {
    let mut next_id = 0u64;
    supervise_source(
        pipeline,
        spec.live,
        cancel,
        stats,
        || spec.open(),
        |s, cancel| s.next_frame(cancel),
        |mut frame| {
            frame.id = next_id;
            next_id += 1;
            tx.send(frame).is_ok()
        },
    )
    .map_err(|source| PipelineError::Source { pipeline: pipeline.to_string(), source })
}

/// Linux limits thread names to 15 bytes.
pub(crate) fn thread_name(kind: &str, pipeline: &str) -> String {
    let mut n = format!("{kind}-{pipeline}");
    n.truncate(15);
    n
}
