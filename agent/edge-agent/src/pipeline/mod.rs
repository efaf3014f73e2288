//! Pipelines: built from config (every component builds itself; errors collected with their
//! path), then spawned as named threads joined by bounded links. Each pipeline's last threads
//! hand typed events ([`crate::event`]) to its sinks ([`crate::sink`]); nothing here knows a
//! topic or a JSON field.
//!
//! ```text
//! frames: [src-<name>] --capture link--> [prep-<name>] --1--> [infer-<name>] --1--> [post-<name>] --> sinks
//! audio:  [src-<name>] --blocks-------->  [vad-<name>] --utterances--> [asr-<name>] --> sinks
//!                                               '--> sinks (speech events)
//! ```
//! (`vision.rs` and `audio.rs` own the two shapes; `sources.rs` the source threads.)

mod audio;
mod sources;
mod stage;
mod vision;

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

pub use stage::{SlotContext, Stage, StageError, classifier};

use crate::config::Config;
use crate::sched::Class;
use crate::sink::{SinkConfig, SinkContext, SinkError, Sinks};
use crate::stats::PipelineStats;
use edge_core::model::{Catalog, ModelPool};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipelines.{pipeline}: {message}")]
    Build { pipeline: String, message: String },
    #[error("pipeline {pipeline}: source failed: {source}")]
    Source { pipeline: String, source: sources::BuildError },
    #[error("pipeline {pipeline}: {message}")]
    Stage { pipeline: String, message: String },
    #[error("pipeline {pipeline}: sink: {source}")]
    Sink { pipeline: String, source: SinkError },
    #[error("pipeline {pipeline}: cannot start thread {thread}: {source}")]
    Spawn { pipeline: String, thread: String, source: std::io::Error },
    #[error("pipeline {0}: a thread panicked")]
    Panicked(String),
}

/// A pipeline whose components are built and whose models are loaded, not yet running.
pub struct Pipeline {
    pub name: String,
    kind: Kind,
    sinks: Vec<SinkConfig>,
    /// Threads for one inference.
    threads: usize,
    /// Whether the source is a camera (see [`SinkContext::camera`]).
    camera: bool,
}

enum Kind {
    Vision(vision::VisionPipeline),
    Audio(audio::AudioPipeline),
}

/// Built pipelines, the head slots their classify stages share, and the detectors that
/// updates may replace.
pub struct Built {
    pub pipelines: Vec<Pipeline>,
    pub slots: edge_core::head::slot::HeadSlots,
    pub models: crate::update::models::ModelTargets,
}

/// Builds every pipeline of `config`, loading each model once, then puts stored model updates
/// in place of the shipped files; reports every failure.
pub fn build_all(config: &Config, catalog: &Catalog) -> Result<Built, Vec<PipelineError>> {
    let mut pool = ModelPool::default();
    let mut slots = edge_core::head::slot::HeadSlots::default();
    let mut speech = audio::SpeechPool::default();
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (name, p) in &config.pipelines {
        let fail = |message: String| PipelineError::Build { pipeline: name.clone(), message };
        let kind = match sources::build(&p.source) {
            Err(e) => Err(fail(format!("source: {e}"))),
            Ok(sources::Source::Audio(source)) => {
                speech.build(source, &p.stages, catalog).map(Kind::Audio).map_err(|e| fail(format!("stages: {e}")))
            }
            Ok(sources::Source::Frames(source)) => {
                let mut ctx = SlotContext {
                    state_dir: &config.agent.state_dir,
                    probation: config.updates.probation_inferences,
                    slots: &mut slots,
                };
                let tracking =
                    tracking(name, p, catalog, &config.agent.state_dir).map_err(|e| fail(format!("objects: {e}")));
                Stage::build(name, &p.stages, catalog, &mut pool, &mut ctx)
                    .map_err(|e| fail(format!("stages: {e}")))
                    .and_then(|stage| Ok(Kind::Vision(vision::VisionPipeline { source, stage, tracking: tracking? })))
            }
        };
        match kind {
            Ok(kind) => built.push(Pipeline {
                name: name.clone(),
                kind,
                sinks: p.sinks.clone(),
                threads: p.threads,
                camera: p.source.is_camera(),
            }),
            Err(e) => errors.push(e),
        }
    }
    // stored model updates replace the shipped files now that every model is loaded
    let (models, rolled_back) = crate::update::models::restore_all(&pool, &config.agent.state_dir);
    for r in rolled_back {
        let event = edge_core::head::slot::SlotEvent::AutoRolledBack {
            slot: r.model,
            failed: r.failed,
            restored: r.restored,
            reason: format!("failed to load at start: {}", r.reason),
        };
        if slots.events_tx.try_send(event).is_err() {
            tracing::error!("model rollback event dropped: the updates queue is full");
        }
    }
    if errors.is_empty() { Ok(Built { pipelines: built, slots, models }) } else { Err(errors) }
}

/// The object tracking of a detect pipeline that has it on (snapshots under
/// `<state_dir>/snapshots/<pipeline>`).
fn tracking(
    name: &str,
    p: &crate::config::PipelineConfig,
    catalog: &Catalog,
    state_dir: &std::path::Path,
) -> Result<Option<crate::objects::Tracking>, crate::objects::snapshot::SnapshotError> {
    let Some(detect) = p.detect_stage().filter(|_| p.tracks_objects()) else { return Ok(None) };
    let labels = catalog.get(&detect.model).map(|m| m.labels.clone()).unwrap_or_default();
    let tracked = p.objects.tracked_labels(&detect.classes, &labels);
    let dir = state_dir.join("snapshots").join(name);
    crate::objects::Tracking::new(name, &p.objects, &p.zones, tracked, Some(&dir)).map(Some)
}

type Thread = JoinHandle<Result<(), PipelineError>>;

/// A spawned pipeline.
pub struct Running {
    pub name: String,
    pub stats: Arc<PipelineStats>,
    /// Its threads, the source first.
    threads: Vec<Thread>,
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

impl Pipeline {
    /// Opens the pipeline's sinks and starts its threads.
    pub fn spawn(self, cancel: CancellationToken, sinks: &SinkContext) -> Result<Running, PipelineError> {
        let Pipeline { name, kind, sinks: configs, threads, camera } = self;
        let ctx = SinkContext { camera, ..sinks.clone() };
        let sinks = Sinks::build(&name, &configs, &ctx)
            .map_err(|source| PipelineError::Sink { pipeline: name.clone(), source })?;
        let sinks = Arc::new(sinks);
        match kind {
            Kind::Vision(v) => v.spawn(name, threads, cancel, sinks),
            Kind::Audio(a) => a.spawn(name, threads, cancel, sinks),
        }
    }
}

/// Starts one of a pipeline's threads, named `<kind>-<pipeline>` (cut to Linux's 15 bytes), in
/// scheduling class `class` (set by the thread itself: going back up needs privilege).
fn spawn_stage(
    kind: &str,
    pipeline: &str,
    class: Class,
    body: impl FnOnce() -> Result<(), PipelineError> + Send + 'static,
) -> Result<Thread, PipelineError> {
    std::thread::Builder::new()
        .name(thread_name(kind, pipeline))
        .spawn(move || {
            match class {
                Class::Helper => {}
                Class::Background => crate::sched::background_thread(),
                Class::Inference => crate::sched::inference_thread(),
            }
            body()
        })
        .map_err(|source| PipelineError::Spawn { pipeline: pipeline.to_string(), thread: kind.to_string(), source })
}

/// Linux limits thread names to 15 bytes.
pub(crate) fn thread_name(kind: &str, pipeline: &str) -> String {
    let mut n = format!("{kind}-{pipeline}");
    n.truncate(15);
    n
}
