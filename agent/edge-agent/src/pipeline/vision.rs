//! Frame pipelines: four threads, so that on a multi-core board the model's thread does
//! nothing but run the model.
//!
//! ```text
//! [src-<name>] --capture link--> [prep-<name>] --1, block--> [infer-<name>] --1, block--> [post-<name>] --> sinks
//!  FrameSource   keep-latest      Stage::prepare              Stage::infer                 Stage::post,
//!                or block         (resize, normalise)         (the models)                 the event
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::stage::{Inferred, Prepared, StageError};
use super::{PipelineError, Running, Stage, spawn_stage};
use crate::event::{Event, FrameInfo, FrameResult};
use crate::link::{LinkReceiver, LinkSender, Policy, link};
use crate::objects::Tracking;
use crate::sched::Class;
use crate::sink::{Observation, Sinks};
use crate::stats::PipelineStats;
use edge_core::source::{Frame, SourceSpec};

/// Frames queued between capture and inference: small, so results stay fresh.
const CAPTURE_LINK: usize = 2;

pub struct VisionPipeline {
    pub source: SourceSpec,
    pub stage: Stage,
    /// Detections into tracked objects (a detect pipeline with `objects` on).
    pub tracking: Option<Tracking>,
}

type PreparedFrame = (Frame, Result<Prepared, StageError>);
type InferredFrame = (Frame, Result<Inferred, StageError>);

impl VisionPipeline {
    pub fn spawn(
        self,
        name: String,
        threads: usize,
        cancel: CancellationToken,
        sinks: Arc<Sinks>,
    ) -> Result<Running, PipelineError> {
        let VisionPipeline { source, stage, tracking } = self;
        let policy = if source.live { Policy::KeepLatest } else { Policy::Block };
        let (tx, rx, dropped) = link(CAPTURE_LINK, policy);
        let stats = Arc::new(PipelineStats::new(dropped));
        // preparing runs beside inference, one frame ahead, and decoding one frame behind: each
        // link holds one frame and blocks, so it adds no drops and at most one frame of latency
        let (ptx, prx, _) = link(1, Policy::Block);
        let (itx, irx, _) = link(1, Policy::Block);
        let stage = Arc::new(stage);

        // the capture thread owns the cancellation token: shutdown reaches sources only
        let (n, st) = (name.clone(), stats.clone());
        let src = spawn_stage("src", &name, Class::Background, move || {
            super::sources::frames_loop(&n, &source, &cancel, &tx, &st)
        })?;
        let s = stage.clone();
        let prep = spawn_stage("prep", &name, Class::Background, move || {
            prep_loop(&s, &rx, &ptx);
            Ok(())
        })?;
        let s = stage.clone();
        let infer = spawn_stage("infer", &name, Class::Inference, move || {
            edge_core::model::with_threads(threads, || infer_loop(&s, &prx, &itx));
            Ok(())
        })?;
        let (n, st) = (name.clone(), stats.clone());
        let post = spawn_stage("post", &name, Class::Background, move || {
            post_loop(&n, &stage, &irx, &st, &sinks, tracking);
            Ok(())
        })?;
        Ok(Running { name, stats, threads: vec![src, prep, infer, post] })
    }
}

/// `prep-*`: each frame's model inputs (resizing, letterboxing, normalising).
fn prep_loop(stage: &Stage, rx: &LinkReceiver<Frame>, tx: &LinkSender<PreparedFrame>) {
    for frame in rx.iter() {
        let prepared = stage.prepare(&frame);
        if tx.send((frame, prepared)).is_err() {
            break;
        }
    }
}

/// `infer-*`: the models and nothing else.
fn infer_loop(stage: &Stage, rx: &LinkReceiver<PreparedFrame>, tx: &LinkSender<InferredFrame>) {
    for (frame, prepared) in rx.iter() {
        let inferred = prepared.and_then(|p| stage.infer(&frame, p));
        if tx.send((frame, inferred)).is_err() {
            break;
        }
    }
}

/// `post-*`: every frame's model outputs through the rest of the stage (decoding, NMS, the
/// head), each result numbered and handed to the sinks, then through the object tracker when
/// the pipeline has one (whose objects all end when the source does).
fn post_loop(
    name: &str,
    stage: &Stage,
    rx: &LinkReceiver<InferredFrame>,
    stats: &PipelineStats,
    sinks: &Sinks,
    mut tracking: Option<Tracking>,
) {
    let send_all = |events: Vec<Event>| events.iter().all(|e| sinks.send(e, stats));
    if let Some(t) = &mut tracking
        && !send_all(t.start())
    {
        return;
    }
    if !frames_to_sinks(name, stage, rx, stats, sinks, &mut tracking) {
        return;
    }
    if let Some(t) = &mut tracking {
        send_all(t.finish());
    }
}

/// The frames' results to the sinks; false when a sink's consumer has gone.
fn frames_to_sinks(
    name: &str,
    stage: &Stage,
    rx: &LinkReceiver<InferredFrame>,
    stats: &PipelineStats,
    sinks: &Sinks,
    tracking: &mut Option<Tracking>,
) -> bool {
    let mut seq = 0u64;
    for (frame, inferred) in rx.iter() {
        let output = match inferred.and_then(|i| stage.post(&frame, i)) {
            Ok(output) => output,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pipeline = %name, source = %frame.source, error = %e, "frame failed");
                continue;
            }
        };
        stats.record_inference(output.inference().as_secs_f32() * 1000.0);
        let (pipeline, info) = (name.to_string(), FrameInfo::of(&frame));
        let event = match output {
            super::stage::StageOutput::Detections(output) => {
                Event::Detections(FrameResult { pipeline, seq, frame: info, output })
            }
            super::stage::StageOutput::Classification(output) => {
                Event::Classification(FrameResult { pipeline, seq, frame: info, output })
            }
        };
        seq += 1;
        sinks.observe(&Observation::Frame(&frame, &event));
        if !sinks.send(&event, stats) {
            return false;
        }
        stats.results.fetch_add(1, Ordering::Relaxed);
        if let (Some(t), Event::Detections(r)) = (tracking.as_mut(), &event) {
            let started = std::time::Instant::now();
            let events = t.frame(&frame, &r.output);
            stats.record_tracking(started.elapsed());
            for e in &events {
                if !sinks.send(e, stats) {
                    return false;
                }
            }
        }
    }
    true
}
