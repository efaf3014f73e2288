//! Output decoders: raw output tensors of one inference → candidate boxes in input-tensor
//! pixels. Each checks the shapes it is given and fails with an error, never a panic.

mod blazeface;
mod nanodet;

use tract_onnx::prelude::*;

use super::Candidate;
use crate::model::DecoderSpec;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("output {index} has shape {shape:?}, expected {expected}")]
    Shape { index: usize, shape: Vec<usize>, expected: String },
    #[error("output {0} is not f32")]
    Type(usize),
    #[error("the model is an embedding backbone, not a detector")]
    NotDetector,
}

/// Decodes `outputs` (in the manifest's order) into candidates scoring at least `threshold`.
pub fn decode(
    spec: &DecoderSpec,
    outputs: &[TValue],
    input: (u32, u32),
    classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>, DecodeError> {
    match spec {
        DecoderSpec::NanodetGfl { strides, bins, .. } => {
            nanodet::decode(strides, *bins, outputs, input, classes, threshold)
        }
        DecoderSpec::Blazeface { grids, anchors, .. } => blazeface::decode(grids, anchors, outputs, input, threshold),
        DecoderSpec::Embedding { .. } => Err(DecodeError::NotDetector),
    }
}

/// Views output `index` as a `[1, rows, cols]` f32 array, checking the shape.
fn rows<'a>(
    outputs: &'a [TValue],
    index: usize,
    rows: usize,
    cols: usize,
) -> Result<tract_ndarray::ArrayView2<'a, f32>, DecodeError> {
    let t = outputs.get(index).ok_or(DecodeError::Shape {
        index,
        shape: vec![],
        expected: format!("[1, {rows}, {cols}]"),
    })?;
    let view = t.to_plain_array_view::<f32>().map_err(|_| DecodeError::Type(index))?;
    let shape = view.shape().to_vec();
    if shape != [1, rows, cols] {
        return Err(DecodeError::Shape { index, shape, expected: format!("[1, {rows}, {cols}]") });
    }
    view.into_shape_with_order((rows, cols)).map_err(|_| DecodeError::Type(index))
}
