//! `EdgeRowMatMul`: a float product of two activations whose left side has a handful of rows,
//! done as streamed row updates instead of tract's packed matmul.
//!
//! A decoder step attends from one token to every cached or encoded position: `q · Kᵀ` and
//! `p · V` where `K` and `V` are inputs that change per utterance (Whisper's cross-attention
//! keys and values, 1500 positions by 64 per head) and the left side is one row. tract packs
//! both sides of such a product on every call, so packing `K` and `V` was two thirds of the
//! step (measured: 17 of 25 ms). Here each output row is `Σ_k a[k] · B[k, :]`, one pass over
//! `B`, contiguous and vectorised, nothing packed.
//!
//! [`rewrite`] marks every `MatMul` of two non-constant operands; at wiring time, once shapes
//! are known, a product whose left side has at most [`MAX_ROWS`] rows (and the same batch
//! dimensions on both sides) becomes this op, any other becomes tract's own matmul as before.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::matmul::MatMulInference;

/// The custom op's type name in the rewritten graph.
pub const OP: &str = "EdgeRowMatMul";

/// Products whose left side has more rows than this stay tract's (a packed matmul reuses what
/// it packs across rows; a row update does not).
pub const MAX_ROWS: usize = 4;

/// Marks every `MatMul` of `graph` whose operands are both computed: neither an initializer
/// nor the output of a node reading initializers only. (A weight further from its initializer
/// is marked too; it is still multiplied correctly, as a streamed row update.) Returns how
/// many.
pub fn rewrite(graph: &mut GraphProto) -> usize {
    let constant: std::collections::HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let computed_from_constant: std::collections::HashSet<String> = graph
        .node
        .iter()
        .filter(|n| !n.input.is_empty() && n.input.iter().all(|i| constant.contains(i)))
        .flat_map(|n| n.output.clone())
        .collect();
    let mut marked = 0;
    for n in graph.node.iter_mut().filter(|n| n.op_type == "MatMul" && n.input.len() == 2) {
        if n.input.iter().all(|i| !constant.contains(i) && !computed_from_constant.contains(i)) {
            n.op_type = OP.into();
            marked += 1;
        }
    }
    marked
}

/// The ONNX op builder of `EdgeRowMatMul`.
pub fn build(_ctx: &ParsingContext, _node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(RowMatMulExpansion(MatMulInference::default())), vec![]))
}

/// Wraps ONNX's own `MatMul` expansion, which types it and wires any product this op does not take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowMatMulExpansion(MatMulInference);

impl Expansion for RowMatMulExpansion {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        // exactly ONNX MatMul's shapes and types
        self.0.rules(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let (a, b) = (model.outlet_fact(inputs[0])?.clone(), model.outlet_fact(inputs[1])?.clone());
        let rank = a.rank();
        let fits = a.datum_type == f32::datum_type()
            && b.datum_type == f32::datum_type()
            && rank >= 2
            && b.rank() == rank
            && a.shape[..rank - 2] == b.shape[..rank - 2]
            && a.shape[rank - 2].to_usize().is_ok_and(|m| m <= MAX_ROWS);
        if !fits {
            return self.0.wire(prefix, model, inputs);
        }
        model.wire_node(prefix, RowMatMul, inputs)
    }
}

/// The typed, runnable op: `c[.., m, n] = a[.., m, k] · b[.., k, n]`, same batch dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowMatMul;

impl Op for RowMatMul {
    fn name(&self) -> StaticName {
        OP.into()
    }

    op_as_typed_op!();
}

impl EvalOp for RowMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let rank = a.rank();
        ensure!(rank >= 2 && b.rank() == rank, "EdgeRowMatMul: operands of rank {rank} and {}", b.rank());
        let (m, k, n) = (a.shape()[rank - 2], a.shape()[rank - 1], b.shape()[rank - 1]);
        ensure!(
            b.shape()[rank - 2] == k && a.shape()[..rank - 2] == b.shape()[..rank - 2],
            "EdgeRowMatMul: {:?} by {:?}",
            a.shape(),
            b.shape()
        );
        let mut shape: TVec<usize> = a.shape().into();
        shape[rank - 1] = n;
        let mut c = Tensor::zero::<f32>(&shape)?;
        {
            let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
            let (a, b) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
            let mut view = c.try_as_plain_ram_mut()?;
            let c = view.as_slice_mut::<f32>()?;
            if k > 0 && n > 0 {
                for ((a, b), c) in a.chunks_exact(m * k).zip(b.chunks_exact(k * n)).zip(c.chunks_exact_mut(m * n)) {
                    rows(a, b, c, k, n);
                }
            }
        }
        Ok(tvec!(c.into_tvalue()))
    }
}

/// `c[i, :] = Σ_k a[i, k] · b[k, :]` for each row `i` of `a` (`c` zeroed by the caller).
fn rows(a: &[f32], b: &[f32], c: &mut [f32], k: usize, n: usize) {
    for (a, c) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        for (&x, b) in a.iter().zip(b.chunks_exact(n)) {
            for (c, &y) in c.iter_mut().zip(b) {
                *c += x * y;
            }
        }
    }
}

impl TypedOp for RowMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rank = inputs[0].rank();
        let mut shape = inputs[0].shape.to_tvec();
        shape[rank - 1] = inputs[1].shape[rank - 1].clone();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rank = inputs[0].rank();
        let a: TDim = inputs[0].shape.iter().product();
        Ok(tvec!((Cost::FMA(f32::datum_type()), a * inputs[1].shape[rank - 1].clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_times_a_matrix_equal_the_direct_product() {
        let (m, k, n) = (3, 5, 7);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v % 11) as f32 - 4.0).collect();
        let mut c = vec![0.0; m * n];
        rows(&a, &b, &mut c, k, n);
        for i in 0..m {
            for j in 0..n {
                let direct: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                assert_eq!(c[i * n + j], direct, "({i}, {j})");
            }
        }
    }
}
