//! A detector: one shared model plus one stage's settings (threshold, NMS, class filter,
//! tiling). `detect` is blocking. A pipeline splits it in three, each on its own thread:
//! `prepare` (letterboxing every pass into its input tensor), `infer` (the model alone) and
//! `decode` (decoding, NMS), so the next frame is prepared and the previous one decoded while
//! this one is in the model.

use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use tract_onnx::prelude::{TValue, Tensor};

use super::{Candidate, Detection, decode, nms, preprocess, tiling};
use crate::model::{EngineError, LoadedModel, SharedModel};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("decoding outputs: {0}")]
    Decode(#[from] decode::DecodeError),
    #[error("empty image")]
    EmptyImage,
}

/// What one frame yielded.
#[derive(Debug, Clone)]
pub struct DetectOutput {
    pub detections: Vec<Detection>,
    /// Total model time over all passes.
    pub inference: Duration,
    pub passes: usize,
    pub model_name: String,
    pub model_version: String,
    pub precision: crate::Precision,
}

/// A frame's input tensors, one per pass, made for the model version they will run on.
pub struct Prepared {
    model: Arc<LoadedModel>,
    passes: Vec<(Tensor, preprocess::Transform)>,
}

/// A frame's model outputs, one set per pass, waiting to be decoded.
pub struct Inferred {
    model: Arc<LoadedModel>,
    passes: Vec<(Vec<TValue>, preprocess::Transform)>,
    inference: Duration,
}

/// What a detector does with its model's outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSettings {
    /// Minimum score of a detection, in (0, 1); `None`: the model's own default.
    pub threshold: Option<f32>,
    /// IoU above which the lower-scoring box of one class is suppressed.
    pub nms_iou: f32,
    /// Keep only these labels (empty: all).
    pub classes: Vec<String>,
    pub max_detections: usize,
    pub tiling: super::Tiling,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            threshold: None,
            nms_iou: 0.5,
            classes: vec![],
            max_detections: 100,
            tiling: super::Tiling::default(),
        }
    }
}

pub struct Detector {
    model: SharedModel,
    stage: DetectSettings,
    /// Class ids kept (None: all).
    keep: Option<Vec<u32>>,
}

impl Detector {
    pub fn new(model: SharedModel, stage: DetectSettings) -> Detector {
        let keep = if stage.classes.is_empty() {
            None
        } else {
            let m = model.load();
            Some(
                m.entry
                    .labels
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| stage.classes.contains(l))
                    .map(|(i, _)| i as u32)
                    .collect(),
            )
        };
        Detector { model, stage, keep }
    }

    pub fn detect(&self, frame: &RgbImage) -> Result<DetectOutput, DetectError> {
        let prepared = self.prepare(frame)?;
        self.detect_prepared(frame, prepared)
    }

    /// The input tensor of every pass over `frame` (the whole frame, then tiles if it is large).
    pub fn prepare(&self, frame: &RgbImage) -> Result<Prepared, DetectError> {
        if frame.width() == 0 || frame.height() == 0 {
            return Err(DetectError::EmptyImage);
        }
        // the version current now; a swap before the inference leaves this frame on it
        let model = self.model.load_full();
        let spec = &model.entry.manifest.input;
        let regions = tiling::plan(frame.width(), frame.height(), spec.width, spec.height, self.stage.tiling);
        let passes = regions.iter().map(|r| preprocess::letterbox(frame, *r, spec)).collect();
        Ok(Prepared { model, passes })
    }

    /// Runs the model on `prepared`'s passes over `frame` and merges what they found.
    pub fn detect_prepared(&self, frame: &RgbImage, prepared: Prepared) -> Result<DetectOutput, DetectError> {
        self.decode(frame, self.infer(prepared)?)
    }

    /// The model's outputs for every pass of `prepared`.
    pub fn infer(&self, prepared: Prepared) -> Result<Inferred, DetectError> {
        let Prepared { model, passes } = prepared;
        let mut inference = Duration::ZERO;
        let mut outputs = Vec::with_capacity(passes.len());
        for (input, transform) in passes {
            let (out, took) = model.run(input)?;
            inference += took;
            outputs.push((out, transform));
        }
        Ok(Inferred { model, passes: outputs, inference })
    }

    /// The detections in `inferred`'s outputs, in `frame`'s pixels, merged over its passes.
    pub fn decode(&self, frame: &RgbImage, inferred: Inferred) -> Result<DetectOutput, DetectError> {
        let Inferred { model, passes, inference } = inferred;
        let manifest = &model.entry.manifest;
        let spec = &manifest.input;
        let threshold = self.stage.threshold.unwrap_or(manifest.default_threshold);
        let npasses = passes.len();
        let mut all: Vec<Candidate> = Vec::new();
        for (outputs, transform) in passes {
            let mut cands = decode::decode(
                &manifest.decoder,
                &outputs,
                (spec.width, spec.height),
                model.entry.labels.len(),
                threshold,
            )?;
            if let Some(keep) = &self.keep {
                cands.retain(|c| keep.contains(&c.class_id));
            }
            for c in nms::nms(cands, self.stage.nms_iou, self.stage.max_detections) {
                all.push(Candidate { bbox: clip(transform.to_source(c.bbox), frame), ..c });
            }
        }
        let merged =
            if npasses > 1 { nms::merge_passes(all, self.stage.nms_iou, self.stage.max_detections) } else { all };
        let detections = merged
            .into_iter()
            .map(|c| Detection {
                label: model.entry.labels.get(c.class_id as usize).cloned().unwrap_or_else(|| c.class_id.to_string()),
                class_id: c.class_id,
                score: round(c.score, 4),
                bbox: c.bbox.map(|v| round(v, 1)),
                classification: None,
            })
            .collect();
        Ok(DetectOutput {
            detections,
            inference,
            passes: npasses,
            model_name: manifest.name.clone(),
            model_version: manifest.version.clone(),
            precision: model.precision.clone(),
        })
    }
}

fn clip(b: super::BBox, frame: &RgbImage) -> super::BBox {
    let (w, h) = (frame.width() as f32, frame.height() as f32);
    [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)]
}

fn round(v: f32, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v as f64 * p).round() / p
}
