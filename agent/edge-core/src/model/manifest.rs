//! The `manifest.toml` beside every model: what the model is, where its weights came from,
//! which files make each precision variant, how to feed it and how to read its outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Precision;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub task: Task,
    pub description: String,
    pub license: String,
    /// Where the weights came from (package, version, file).
    pub source: String,
    /// How the ONNX files were produced (script and steps).
    pub conversion: String,
    /// Labels file, one label per line, relative to the manifest (detectors; a backbone's
    /// labels come with each head).
    #[serde(default)]
    pub labels: Option<String>,
    /// Default score threshold when a stage sets none (detectors).
    #[serde(default)]
    pub default_threshold: f32,
    pub variants: BTreeMap<Precision, Variant>,
    pub input: InputSpec,
    pub decoder: DecoderSpec,
    /// Heads shipped for an embedding backbone, by name (`heads/<name>.safetensors`).
    #[serde(default)]
    pub heads: BTreeMap<String, Variant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Detection,
    /// A backbone whose output is an embedding that replaceable heads classify.
    Embedding,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// ONNX file, relative to the manifest.
    pub file: String,
    pub sha256: String,
    /// How to produce the file when it is not in the checkout.
    #[serde(default)]
    pub make: Option<String>,
}

/// How an image becomes the model's input tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    pub color: ColorOrder,
    /// Per channel, in the `color` order, applied as `(pixel - mean) / std` to 0..255 values.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// How a frame is fitted to the input.
    pub resize: Resize,
    /// For `center_crop`: the fraction of the shorter side kept.
    #[serde(default = "default_crop")]
    pub crop: f32,
}

fn default_crop() -> f32 {
    0.875
}

/// The resize policy the model was calibrated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Keep the aspect ratio, centre, fill the border with the mean colour (0 after
    /// normalisation); boxes are mapped back through the inverse transform.
    Letterbox,
    /// Crop the centre square (`crop` of the shorter side) and scale it to the input.
    CenterCrop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

/// How raw outputs become boxes; outputs are named so the order in the file cannot mislead.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecoderSpec {
    /// NanoDet's GFL head: per stride, sigmoid class scores `[1,HW,C]` and box side
    /// distributions `[1,HW,4*bins]`.
    NanodetGfl { strides: Vec<u32>, bins: usize, scores: Vec<String>, boxes: Vec<String> },
    /// MediaPipe BlazeFace SSD: per anchor layer, score logits `[1,N,1]` and regressors
    /// `[1,N,16]` (box centre/size, then 6 key points), anchors on a `grid` with
    /// `anchors` per cell.
    Blazeface { grids: Vec<u32>, anchors: Vec<u32>, scores: Vec<String>, boxes: Vec<String> },
    /// One output `[1, dim]`: the pooled embedding a head reads.
    Embedding { output: String, dim: usize },
}

impl DecoderSpec {
    /// Output names in the order the decoder reads them.
    pub fn output_names(&self) -> Vec<String> {
        match self {
            DecoderSpec::NanodetGfl { scores, boxes, .. } | DecoderSpec::Blazeface { scores, boxes, .. } => {
                scores.iter().chain(boxes).cloned().collect()
            }
            DecoderSpec::Embedding { output, .. } => vec![output.clone()],
        }
    }
}
