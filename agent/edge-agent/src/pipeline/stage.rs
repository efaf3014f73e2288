//! The processing stages of a frame pipeline, built from its config, and what they yield per
//! frame: `[detect]`, `[classify]` or `[detect, classify]` (each box of the chosen labels
//! cropped and classified).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClassifyStage, StageConfig};

use edge_core::head::slot::{HeadSlot, HeadSlots, SlotSpec};
use edge_core::model::{Catalog, ModelPool};
use edge_core::source::Frame;
use edge_core::vision::classify::{Classifier, ClassifyError, ClassifyOutput};
use edge_core::vision::detector::{DetectError, DetectOutput, Detector};
use edge_core::vision::embed::Backbone;

/// A frame's inputs made by [`Stage::prepare`].
pub enum Prepared {
    Detect(edge_core::vision::detector::Prepared),
    Classify(edge_core::vision::embed::Prepared),
}

/// A frame's model outputs made by [`Stage::infer`], for [`Stage::post`].
pub enum Inferred {
    Detect(edge_core::vision::detector::Inferred),
    /// The backbone's embedding and its time.
    Classify(Vec<f32>, Duration),
    /// Nothing left to do after the models.
    Done(StageOutput),
}

pub enum Stage {
    Detect(Detector),
    Classify(Classifier),
    DetectClassify(Detector, Classifier),
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// A frame's prepared inputs or model outputs are not of this stage's kind: a bug in how
    /// the threads were wired, reported instead of silently recomputed.
    #[error("internal error: {0}")]
    Mismatch(&'static str),
}

/// Why a pipeline's stages could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no model named {0:?}")]
    NoModel(String),
    #[error("no speech model named {0:?}")]
    NoSpeechModel(String),
    #[error("{0}")]
    Shape(&'static str),
    #[error("slot {0:?} is used by stages with different backbones")]
    SlotBackbones(String),
    #[error(transparent)]
    Engine(#[from] edge_core::model::EngineError),
    #[error(transparent)]
    Embed(#[from] edge_core::vision::embed::EmbedError),
    #[error("probe: {0}")]
    Probe(edge_core::vision::embed::EmbedError),
    #[error(transparent)]
    Head(#[from] edge_core::head::HeadError),
    #[error(transparent)]
    Speech(#[from] edge_core::speech::SpeechError),
}

/// One frame's result.
pub enum StageOutput {
    Detections(DetectOutput),
    Classification(ClassifyOutput),
}

/// Where a stage's slots live and how long new heads are on probation.
pub struct SlotContext<'a> {
    pub state_dir: &'a std::path::Path,
    pub probation: u32,
    pub slots: &'a mut HeadSlots,
}

impl StageOutput {
    pub fn inference(&self) -> Duration {
        match self {
            StageOutput::Detections(d) => d.inference,
            StageOutput::Classification(c) => c.inference,
        }
    }
}

impl Stage {
    /// Builds the stage chain of pipeline `pipeline` (validated: one of the three shapes).
    pub fn build(
        pipeline: &str,
        stages: &[StageConfig],
        catalog: &Catalog,
        pool: &mut ModelPool,
        ctx: &mut SlotContext<'_>,
    ) -> Result<Stage, BuildError> {
        let detector = |d: &crate::config::DetectStage, pool: &mut ModelPool| -> Result<Detector, BuildError> {
            let entry = catalog.get(&d.model).ok_or_else(|| BuildError::NoModel(d.model.clone()))?;
            let model = pool.get_or_load(entry, &d.precision)?;
            Ok(Detector::new(model, d.settings()))
        };
        match stages {
            [StageConfig::Detect(d)] => Ok(Stage::Detect(detector(d, pool)?)),
            [StageConfig::Classify(c)] => Ok(Stage::Classify(classifier(pipeline, c, catalog, pool, ctx)?)),
            [StageConfig::Detect(d), StageConfig::Classify(c)] => {
                Ok(Stage::DetectClassify(detector(d, pool)?, classifier(pipeline, c, catalog, pool, ctx)?))
            }
            _ => Err(BuildError::Shape("a frame pipeline runs [detect], [classify] or [detect, classify]")),
        }
    }

    /// The frame's model inputs (resizing, letterboxing, normalising): the work that can run on
    /// its own thread while the previous frame is in the model.
    pub fn prepare(&self, frame: &Frame) -> Result<Prepared, StageError> {
        Ok(match self {
            Stage::Detect(d) | Stage::DetectClassify(d, _) => Prepared::Detect(d.prepare(&frame.image)?),
            Stage::Classify(c) => {
                Prepared::Classify(c.backbone.prepare(&frame.image, None).map_err(ClassifyError::from)?)
            }
        })
    }

    /// The models' part: the inference thread's work.
    pub fn infer(&self, frame: &Frame, prepared: Prepared) -> Result<Inferred, StageError> {
        match (self, prepared) {
            (Stage::Detect(d), Prepared::Detect(p)) => Ok(Inferred::Detect(d.infer(p)?)),
            (Stage::Classify(c), Prepared::Classify(p)) => {
                let (embedding, took) = c.backbone.embed_prepared(p).map_err(ClassifyError::from)?;
                Ok(Inferred::Classify(embedding, took))
            }
            // the crops are more inference: all of it here
            (Stage::DetectClassify(d, c), Prepared::Detect(p)) => {
                let mut out = d.detect_prepared(&frame.image, p)?;
                let crops = c.classify_detections(&frame.image, &mut out)?;
                out.inference += crops;
                Ok(Inferred::Done(StageOutput::Detections(out)))
            }
            (_, _) => Err(StageError::Mismatch("prepared inputs of another kind of stage reached infer")),
        }
    }

    /// The rest after [`Stage::infer`]: decoding and NMS, or the head.
    pub fn post(&self, frame: &Frame, inferred: Inferred) -> Result<StageOutput, StageError> {
        match (self, inferred) {
            (_, Inferred::Done(out)) => Ok(out),
            (Stage::Detect(d) | Stage::DetectClassify(d, _), Inferred::Detect(i)) => {
                Ok(StageOutput::Detections(d.decode(&frame.image, i)?))
            }
            (Stage::Classify(c) | Stage::DetectClassify(_, c), Inferred::Classify(embedding, took)) => {
                Ok(StageOutput::Classification(c.label(&embedding, took)?))
            }
            (_, _) => Err(StageError::Mismatch("model outputs of another kind of stage reached post")),
        }
    }
}

/// The classifier of a classify stage: its backbone from the pool, its slot from the registry
/// (opened on first use: the persisted head, else the shipped one).
pub fn classifier(
    pipeline: &str,
    c: &ClassifyStage,
    catalog: &Catalog,
    pool: &mut ModelPool,
    ctx: &mut SlotContext<'_>,
) -> Result<Classifier, BuildError> {
    let entry = catalog.get(&c.model).ok_or_else(|| BuildError::NoModel(c.model.clone()))?;
    let model = pool.get_or_load(entry, &c.precision)?;
    let backbone = Backbone::new(model)?;
    let name = c.slot_name(pipeline);
    let slot = match ctx.slots.slots.get(&name) {
        Some(s) if s.backbone_sha256 == backbone.sha256() => s.clone(),
        Some(_) => return Err(BuildError::SlotBackbones(name)),
        None => {
            let shipped = edge_core::head::shipped(entry, &c.head)?;
            let probe = backbone.embed(&edge_core::vision::probe_image(), None).map_err(BuildError::Probe)?.0;
            let spec = SlotSpec {
                name: &name,
                backbone: &c.model,
                backbone_sha256: &backbone.sha256(),
                dim: backbone.dim(),
                shipped,
                state_dir: ctx.state_dir,
                probation: ctx.probation,
                probe,
            };
            let slot = Arc::new(HeadSlot::open(spec, ctx.slots.events_tx.clone()));
            tracing::info!(slot = %name, head = %slot.active_version(), "head slot open");
            ctx.slots.slots.insert(name, slot.clone());
            slot
        }
    };
    Ok(Classifier { backbone, slot, top_k: c.top_k, on: c.on.clone() })
}
