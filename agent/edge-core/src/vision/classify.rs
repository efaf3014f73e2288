//! A classifier: a backbone plus a head slot. It classifies a whole frame, or each detected box
//! of the chosen labels (detect -> crop -> classify). `classify_*` are blocking. A pipeline
//! runs the backbone on its inference thread and the head ([`Classifier::label`]) on the
//! thread after it.

use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::detector::DetectOutput;
use super::embed::{Backbone, EmbedError};
use super::preprocess::Region;
use crate::head::Scored;
use crate::head::slot::{HeadSlot, SlotError};

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Slot(#[from] SlotError),
}

/// A whole frame's classification.
#[derive(Debug, Clone)]
pub struct ClassifyOutput {
    pub labels: Vec<Scored>,
    pub head_name: String,
    pub head_version: String,
    pub inference: Duration,
    pub backbone: String,
    pub backbone_version: String,
    pub precision: crate::Precision,
}

pub struct Classifier {
    pub backbone: Backbone,
    pub slot: Arc<HeadSlot>,
    pub top_k: usize,
    /// Detector labels whose boxes are classified (empty: all).
    pub on: Vec<String>,
}

impl Classifier {
    pub fn classify_frame(&self, frame: &RgbImage) -> Result<ClassifyOutput, ClassifyError> {
        self.classify_prepared(self.backbone.prepare(frame, None)?)
    }

    /// Classifies a whole frame prepared by `self.backbone.prepare(frame, None)`.
    pub fn classify_prepared(&self, prepared: super::embed::Prepared) -> Result<ClassifyOutput, ClassifyError> {
        let (embedding, inference) = self.backbone.embed_prepared(prepared)?;
        self.label(&embedding, inference)
    }

    /// The head's labels for a frame's embedding, which took `inference` in the backbone.
    pub fn label(&self, embedding: &[f32], inference: Duration) -> Result<ClassifyOutput, ClassifyError> {
        let c = self.slot.classify(embedding, self.top_k)?;
        Ok(ClassifyOutput {
            labels: c.labels,
            head_name: c.head_name,
            head_version: c.head_version,
            inference,
            backbone: self.backbone.name(),
            backbone_version: self.backbone.version(),
            precision: self.backbone.precision(),
        })
    }

    /// Adds a `classification` to each detection of the chosen labels; returns the time the
    /// backbone took over all crops.
    pub fn classify_detections(&self, frame: &RgbImage, out: &mut DetectOutput) -> Result<Duration, ClassifyError> {
        let mut total = Duration::ZERO;
        for d in out.detections.iter_mut().filter(|d| self.on.is_empty() || self.on.contains(&d.label)) {
            let Some(region) = region_of(d.bbox, frame) else { continue };
            let (embedding, took) = self.backbone.embed(frame, Some(region))?;
            total += took;
            d.classification = Some(self.slot.classify(&embedding, self.top_k)?.labels);
        }
        Ok(total)
    }
}

/// The pixel region of a box, clipped to the frame; `None` when it is empty.
fn region_of(b: [f64; 4], frame: &RgbImage) -> Option<Region> {
    let (fw, fh) = (frame.width() as f64, frame.height() as f64);
    let x1 = b[0].clamp(0.0, fw).floor() as u32;
    let y1 = b[1].clamp(0.0, fh).floor() as u32;
    let x2 = b[2].clamp(0.0, fw).ceil() as u32;
    let y2 = b[3].clamp(0.0, fh).ceil() as u32;
    (x2 > x1 + 1 && y2 > y1 + 1).then(|| Region { x: x1, y: y1, w: x2 - x1, h: y2 - y1 })
}
