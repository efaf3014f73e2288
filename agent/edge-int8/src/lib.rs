//! Integer execution of int8 (QDQ) models: the rewrite of quantized convolutions into one
//! `EdgeQConv` op each ([`rewrite`]), that op ([`qconv`]) and its arithmetic ([`kernels`]).
//!
//! tract runs an ONNX QDQ model as its float twin plus a quantize and a dequantize pass around
//! every layer, which makes int8 slower than fp32. Loading through [`onnx_model`] instead
//! keeps activations u8 between quantized convolutions and does their products on
//! tract-linalg's integer kernels, so int8 is the faster variant, as on onnxruntime.
//!
//! The crate depends on tract (and tracing, for one debug line). Its public API is [`Int8Exec`], [`onnx_model`] (and
//! [`onnx_proto_model`]), [`Rewritten`], and the op name [`ROW_MATMUL_OP`] for tests that
//! count rewritten nodes; the kernels, packing and tuning are private.

mod depthwise;
mod depthwise_vnni;
mod join;
mod kernels;
mod pack;
mod pointwise_vnni;
mod qconv;
mod qdq;
mod qmatmul;
mod rewrite;
mod row_matmul;
mod spatial;
mod tune;

use std::path::Path;

use tract_onnx::prelude::*;

pub use rewrite::Rewritten;
/// The op name of one-row activation products after the rewrite.
pub use row_matmul::OP as ROW_MATMUL_OP;

/// How an int8 (QDQ) model is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int8Exec {
    /// quantized convolutions in integers (the default)
    #[default]
    Integer,
    /// the graph as written: float convolutions between quantize/dequantize passes
    FakeQuant,
    /// int8 weights of matmuls left to be dequantized once at load (float products, 4x the
    /// weight memory), the other rewrites kept: for cores whose float products beat their
    /// integer ones
    FloatWeights,
}

/// Parses an ONNX file into tract, first rewriting its quantized convolutions and int8-weight
/// matmuls when `exec` asks for integers (and marking one-row activation products for
/// `row_matmul`). A float model's arithmetic comes out unchanged.
pub fn onnx_model(path: &Path, exec: Int8Exec) -> TractResult<(InferenceModel, Rewritten)> {
    let proto = tract_onnx::onnx().proto_model_for_path(path)?;
    onnx_proto_model(proto, exec)
}

/// [`onnx_model`] from a parsed ONNX model.
pub fn onnx_proto_model(
    mut proto: tract_onnx::pb::ModelProto,
    exec: Int8Exec,
) -> TractResult<(InferenceModel, Rewritten)> {
    let mut onnx = tract_onnx::onnx();
    let mut done = Rewritten::default();
    if let Some(graph) = proto.graph.as_mut() {
        match exec {
            Int8Exec::Integer => {
                done = rewrite::rewrite(graph);
                crate::row_matmul::rewrite(graph);
            }
            Int8Exec::FloatWeights => {
                crate::row_matmul::rewrite(graph);
            }
            Int8Exec::FakeQuant => {}
        }
    }
    onnx.op_register.insert(rewrite::OP, qconv::build);
    onnx.op_register.insert(qmatmul::OP, qmatmul::build);
    onnx.op_register.insert(crate::row_matmul::OP, crate::row_matmul::build);
    onnx.op_register.insert(join::CONCAT, join::build_concat);
    onnx.op_register.insert(join::ADD, join::build_add);
    onnx.op_register.insert(spatial::MAX_POOL, spatial::build_max_pool);
    onnx.op_register.insert(spatial::RESIZE, spatial::build_resize);
    onnx.op_register.insert(qdq::QUANTIZE, qdq::build_quantize);
    onnx.op_register.insert(qdq::DEQUANTIZE, qdq::build_dequantize);
    Ok((onnx.model_for_proto_model(&proto)?, done))
}
