//! What the benchmark feeds a graph: the same deterministic values to tract and to
//! onnxruntime, for every input the graph declares. A vision model or Whisper's encoder takes
//! one f32 tensor; Whisper's decoder step takes a token, the self-attention cache of the
//! tokens before it and the encoder's keys and values.

use std::path::Path;

use anyhow::{Context as _, bail};
use tract_onnx::pb::tensor_shape_proto::dimension::Value;
use tract_onnx::pb::type_proto;
use tract_onnx::prelude::*;

/// The self-attention cache length the decoder step is timed at: the step of the 32nd token.
pub const CACHE: usize = 32;

/// One input of a graph, as timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub dt: DatumType,
    pub shape: Vec<usize>,
}

/// The inputs of the ONNX graph at `path` in their order, a symbolic dimension (a cache
/// length) taken as [`CACHE`].
pub fn declared(path: &Path) -> TractResult<Vec<Input>> {
    let proto = tract_onnx::onnx().proto_model_for_path(path)?;
    let graph = proto.graph.context("no graph")?;
    let weights: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !weights.contains(i.name.as_str()))
        .map(|i| {
            let Some(type_proto::Value::TensorType(t)) = i.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
                bail!("input {} is not a tensor", i.name)
            };
            let dt = match t.elem_type {
                1 => f32::datum_type(),
                7 => i64::datum_type(),
                other => bail!("input {}: element type {other} not supported by the benchmark", i.name),
            };
            let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
            let shape = dims
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) if v > 0 => v as usize,
                    _ => CACHE,
                })
                .collect();
            Ok(Input { dt, shape })
        })
        .collect()
}

/// Deterministic values in [0, 1) (a token id below 50000 for an integer input), the same
/// from run to run and for both runtimes.
pub fn values(n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

impl Input {
    /// The tensor tract is fed.
    pub fn tensor(&self) -> TractResult<Tensor> {
        let v = values(self.shape.iter().product());
        if self.dt == i64::datum_type() {
            let tokens: Vec<i64> = v.iter().map(|&x| (x * 50_000.0) as i64).collect();
            return Tensor::from_shape(&self.shape, &tokens);
        }
        Tensor::from_shape(&self.shape, &v)
    }

    /// The same values as little-endian bytes, for onnxruntime; with numpy's name of the type.
    pub fn bytes(&self) -> TractResult<(Vec<u8>, &'static str)> {
        let t = self.tensor()?;
        if self.dt == i64::datum_type() {
            let v = t.try_as_plain_ram()?.as_slice::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
            return Ok((v, "<i8"));
        }
        Ok((t.try_as_plain_ram()?.as_slice::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(), "<f4"))
    }
}
