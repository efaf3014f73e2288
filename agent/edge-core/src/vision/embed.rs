//! A backbone: a shared embedding model (task `embedding`) that turns a frame, or a region
//! of it, into the pooled feature vector heads classify. `embed` is blocking.

use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::preprocess::{self, Region};
use crate::model::{DecoderSpec, EngineError, LoadedModel, Resize, SharedModel, Task};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("model {0} is not an embedding backbone (task = \"embedding\")")]
    NotBackbone(String),
    #[error("embedding output: {0}")]
    Output(String),
    #[error("empty image or region")]
    Empty,
}

/// A frame's (or region's) input tensor, made for the model version it will run on.
pub struct Prepared {
    model: Arc<LoadedModel>,
    input: tract_onnx::prelude::Tensor,
}

#[derive(Clone)]
pub struct Backbone {
    model: SharedModel,
    dim: usize,
}

impl Backbone {
    pub fn new(model: SharedModel) -> Result<Backbone, EmbedError> {
        let m = model.load();
        let manifest = &m.entry.manifest;
        match (&manifest.task, &manifest.decoder) {
            (Task::Embedding, DecoderSpec::Embedding { dim, .. }) => {
                let dim = *dim;
                drop(m);
                Ok(Backbone { model, dim })
            }
            _ => Err(EmbedError::NotBackbone(manifest.name.clone())),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn name(&self) -> String {
        self.model.load().name().to_string()
    }

    /// sha256 of the variant file in use (checked when it was loaded): what a head's
    /// `backbone_sha256` must equal.
    pub fn sha256(&self) -> String {
        let m = self.model.load();
        m.entry.manifest.variants.get(&m.precision).map(|v| v.sha256.to_lowercase()).unwrap_or_default()
    }

    pub fn version(&self) -> String {
        self.model.load().version().to_string()
    }

    pub fn precision(&self) -> crate::Precision {
        self.model.load().precision.clone()
    }

    /// The embedding of `region` (the whole frame when `None`) and the model time.
    pub fn embed(&self, frame: &RgbImage, region: Option<Region>) -> Result<(Vec<f32>, Duration), EmbedError> {
        self.embed_prepared(self.prepare(frame, region)?)
    }

    /// The input tensor of `region` (the whole frame when `None`).
    pub fn prepare(&self, frame: &RgbImage, region: Option<Region>) -> Result<Prepared, EmbedError> {
        let region = region.unwrap_or(Region { x: 0, y: 0, w: frame.width(), h: frame.height() });
        if region.w == 0 || region.h == 0 || region.x + region.w > frame.width() || region.y + region.h > frame.height()
        {
            return Err(EmbedError::Empty);
        }
        let model = self.model.load_full();
        let spec = &model.entry.manifest.input;
        let input = match spec.resize {
            Resize::CenterCrop => preprocess::center_crop(frame, region, spec),
            Resize::Letterbox => preprocess::letterbox(frame, region, spec).0,
        };
        Ok(Prepared { model, input })
    }

    /// The embedding of a prepared input and the model time.
    pub fn embed_prepared(&self, prepared: Prepared) -> Result<(Vec<f32>, Duration), EmbedError> {
        let Prepared { model, input } = prepared;
        let (outputs, took) = model.run(input)?;
        let out = outputs.first().ok_or_else(|| EmbedError::Output("no output".into()))?;
        let view = out.to_plain_array_view::<f32>().map_err(|e| EmbedError::Output(e.to_string()))?;
        let values: Vec<f32> = view.iter().copied().collect();
        if values.len() != self.dim {
            return Err(EmbedError::Output(format!("{} values, manifest says {}", values.len(), self.dim)));
        }
        Ok((values, took))
    }
}
