//! `EdgeQuantizeU8` and `EdgeDequantizeU8`: per-tensor u8 `QuantizeLinear` and
//! `DequantizeLinear` as plain loops the compiler vectorises.
//!
//! After the convolutions are rewritten, what is left of an int8 graph's quantization is at the
//! edges of the float ops between them (concatenations, resizes, additions, pooling) and at the
//! input. tract rounds each value through a scalar ties-to-even routine there, which made those
//! passes a fifth of NanoDet's time once its convolutions ran in integers (measured: 23 of
//! 107 ms). Here rounding is the add-and-subtract-1.5·2^23 trick, exact for the magnitudes
//! that survive the clamp, and the results are the same values ONNX defines.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use multiversion::multiversion;

use super::kernels::saturate_u8;

/// Op type names in the rewritten graph.
pub const QUANTIZE: &str = "EdgeQuantizeU8";
pub const DEQUANTIZE: &str = "EdgeDequantizeU8";

pub fn build_quantize(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(QdqExpansion(Direction::Quantize)), vec![]))
}

pub fn build_dequantize(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(QdqExpansion(Direction::Dequantize)), vec![]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    Quantize,
    Dequantize,
}

impl Direction {
    fn output(self) -> DatumType {
        match self {
            Direction::Quantize => u8::datum_type(),
            Direction::Dequantize => f32::datum_type(),
        }
    }
}

#[derive(Debug, Clone)]
struct QdqExpansion(Direction);

impl Expansion for QdqExpansion {
    fn name(&self) -> StaticName {
        match self.0 {
            Direction::Quantize => QUANTIZE.into(),
            Direction::Dequantize => DEQUANTIZE.into(),
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.0.output())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let scalar = |i: usize| -> TractResult<f32> {
            let k = model.outlet_fact(inputs[i])?.konst.clone();
            k.with_context(|| format!("{prefix}: input {i} is not a constant"))?.cast_to_scalar::<f32>()
        };
        let op = Qdq { direction: self.0, scale: scalar(1)?, zero_point: scalar(2)? };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The typed op: f32 → u8 (quantize) or u8 → f32 (dequantize), one scale and zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct Qdq {
    direction: Direction,
    scale: f32,
    zero_point: f32,
}

impl Eq for Qdq {}

impl Qdq {
    /// u8 → f32: `(q − zero_point) · scale`.
    pub fn dequantize(scale: f32, zero_point: f32) -> Qdq {
        Qdq { direction: Direction::Dequantize, scale, zero_point }
    }

    /// f32 → u8: `clamp(round(x / scale) + zero_point)`.
    pub fn quantize(scale: f32, zero_point: f32) -> Qdq {
        Qdq { direction: Direction::Quantize, scale, zero_point }
    }
}

impl Op for Qdq {
    fn name(&self) -> StaticName {
        match self.direction {
            Direction::Quantize => QUANTIZE.into(),
            Direction::Dequantize => DEQUANTIZE.into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for Qdq {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let (scale, zp) = (self.scale, self.zero_point);
        let y = match self.direction {
            Direction::Quantize => {
                let src = x.try_as_plain_ram()?;
                let src = src.as_slice::<f32>()?;
                let mut y = Tensor::zero::<u8>(x.shape())?;
                quantize(src, scale, zp, y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
                y
            }
            Direction::Dequantize => {
                let src = x.try_as_plain_ram()?;
                let src = src.as_slice::<u8>()?;
                let mut y = Tensor::zero::<f32>(x.shape())?;
                dequantize(src, scale, zp, y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
                y
            }
        };
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Qdq {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.direction.output().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_as_onnx_defines_and_back() -> TractResult<()> {
        let q = Qdq { direction: Direction::Quantize, scale: 0.5, zero_point: 10.0 };
        // x / 0.5 + 10: 0.25 → 10.5 → 10 (ties to even), 0.75 → 11.5 → 12, −100 → 0, 1e9 → 255
        let x = tensor1(&[0.25f32, 0.75, -100.0, 1e9, f32::NAN]);
        let y = q.eval(&EvalContext::out_of_plan(), tvec!(x.into_tvalue()))?;
        assert_eq!(y[0].try_as_plain_ram()?.as_slice::<u8>()?, &[10, 12, 0, 255, 0]);
        let d = Qdq { direction: Direction::Dequantize, ..q };
        let back = d.eval(&EvalContext::out_of_plan(), tvec!(tensor1(&[10u8, 12, 255]).into_tvalue()))?;
        assert_eq!(back[0].try_as_plain_ram()?.as_slice::<f32>()?, &[0.0, 1.0, 122.5]);
        Ok(())
    }
}

/// `y = saturate(x / scale + zp)`, ONNX's QuantizeLinear to u8. Compiled for AVX-512, AVX2
/// and NEON and picked at run time, like every elementwise loop of the integer path (in
/// baseline SSE2, quantizing NanoDet's input and dequantizing its outputs were 3 % of it).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn quantize(x: &[f32], scale: f32, zp: f32, y: &mut [u8]) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = saturate_u8(v / scale + zp);
    }
}

/// `y = (x - zp) · scale`, ONNX's DequantizeLinear from u8; compiled like [`quantize`].
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dequantize(x: &[u8], scale: f32, zp: f32, y: &mut [f32]) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = (v as f32 - zp) * scale;
    }
}
