//! `EdgeConcatU8` and `EdgeAddU8`: concatenations and additions of u8 activations, each input
//! requantized to the output's scale in the same pass.
//!
//! A QDQ graph writes them as `DequantizeLinear` on every input, the float op, and one
//! `QuantizeLinear`: two passes over every value through f32 memory. Here each output value is
//! `round(Σ (q_i − z_i) · s_i / s_o + z_o)` straight from the u8 inputs (for a concatenation
//! the sum has one term, and an input already on the output's scale is copied).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use multiversion::multiversion;

use super::kernels::saturate_u8;
use super::qdq::Qdq;
use super::rewrite::{Index, attr, substitute};

pub const CONCAT: &str = "EdgeConcatU8";
pub const ADD: &str = "EdgeAddU8";

/// Replaces each `Concat`/`Add` whose inputs are all per-tensor u8 `DequantizeLinear`s and
/// whose only reader is a per-tensor u8 `QuantizeLinear`; returns how many.
pub fn rewrite(graph: &mut GraphProto) -> usize {
    substitute(graph, plan)
}

/// One scale and u8 zero point, when `n` (a Q or DQ node) has them as initializers.
fn params(ix: &Index, n: &NodeProto) -> Option<(f32, u8)> {
    let s = ix.tensor(n.input.get(1)?).ok()?;
    let z = ix.tensor(n.input.get(2)?).ok()?;
    if s.len() != 1 || z.len() != 1 || z.datum_type() != u8::datum_type() {
        return None;
    }
    let scale = s.cast_to_scalar::<f32>().ok()?;
    (scale.is_finite() && scale > 0.0).then_some((scale, z.cast_to_scalar::<u8>().ok()?))
}

fn plan(ix: &Index, n: &NodeProto) -> Option<(NodeProto, usize)> {
    let op = match n.op_type.as_str() {
        "Concat" => CONCAT,
        "Add" if n.input.len() == 2 => ADD,
        _ => return None,
    };
    let q = ix.sole_reader(n.output.first()?, "QuantizeLinear")?;
    let mut inputs = Vec::new();
    let (mut scales, mut zero_points) = (Vec::new(), Vec::new());
    for x in &n.input {
        let dq = ix.made_by(x, "DequantizeLinear")?;
        let (s, z) = params(ix, dq)?;
        inputs.push(dq.input[0].clone());
        scales.push(s);
        zero_points.push(z as i64);
    }
    let (s, z) = params(ix, q)?;
    scales.push(s);
    zero_points.push(z as i64);
    let mut attribute = vec![
        AttributeProto {
            name: "scales".into(),
            r#type: AttributeType::Floats as i32,
            floats: scales,
            ..Default::default()
        },
        AttributeProto {
            name: "zero_points".into(),
            r#type: AttributeType::Ints as i32,
            ints: zero_points,
            ..Default::default()
        },
    ];
    if op == CONCAT {
        attribute.push(AttributeProto {
            name: "axis".into(),
            r#type: AttributeType::Int as i32,
            i: attr(n, "axis")?.i,
            ..Default::default()
        });
    }
    let node = NodeProto {
        name: n.name.clone(),
        op_type: op.into(),
        input: inputs,
        output: vec![q.output[0].clone()],
        attribute,
        ..Default::default()
    };
    Some((node, ix.producer[q.output[0].as_str()]))
}

/// How each input maps onto the output's scale: `q_out = q_in · mul + add` (before rounding).
#[derive(Debug, Clone, PartialEq)]
struct Terms {
    /// per input then the output, as in the graph
    scales: Vec<f32>,
    zero_points: Vec<i64>,
    mul: Vec<f32>,
    add: f32,
    /// per input, the constant its zero point contributes
    offsets: Vec<f32>,
}

impl Terms {
    fn new(scales: &[f32], zero_points: &[i64]) -> TractResult<Terms> {
        ensure!(
            scales.len() == zero_points.len() && scales.len() >= 2,
            "one scale and zero point per input and output"
        );
        ensure!(scales.iter().all(|s| s.is_finite() && *s > 0.0), "scales must be positive");
        let (so, zo) = (scales[scales.len() - 1], zero_points[zero_points.len() - 1] as f32);
        let ins = scales.len() - 1;
        let mul: Vec<f32> = scales[..ins].iter().map(|s| s / so).collect();
        let offsets = mul.iter().zip(zero_points).map(|(m, &z)| -(z as f32) * m).collect();
        Ok(Terms { scales: scales.to_vec(), zero_points: zero_points.to_vec(), mul, add: zo, offsets })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Concat(i64),
    Add,
}

pub fn build_concat(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let terms = Terms::new(&node.get_attr_vec::<f32>("scales")?, &node.get_attr_vec::<i64>("zero_points")?)?;
    ensure!(terms.mul.len() == node.input.len(), "{}: one scale per input", node.name);
    Ok((expand(JoinU8 { kind: Kind::Concat(node.get_attr::<i64>("axis")?), terms }), vec![]))
}

pub fn build_add(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let terms = Terms::new(&node.get_attr_vec::<f32>("scales")?, &node.get_attr_vec::<i64>("zero_points")?)?;
    ensure!(terms.mul.len() == 2 && node.input.len() == 2, "{}: two inputs", node.name);
    Ok((expand(JoinU8 { kind: Kind::Add, terms }), vec![]))
}

/// Both the ONNX expansion and the typed op.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinU8 {
    kind: Kind,
    terms: Terms,
}

// the floats are finite scale ratios, checked when built
impl Eq for JoinU8 {}

impl JoinU8 {
    /// The output shape, or why the inputs do not fit this op.
    fn output_shape(&self, shapes: &[TVec<TDim>]) -> TractResult<TVec<TDim>> {
        let first = shapes.first().context("no input")?;
        match self.kind {
            Kind::Add => {
                ensure!(shapes.iter().all(|s| s == first), "EdgeAddU8 adds equal shapes, got {shapes:?}");
                Ok(first.clone())
            }
            Kind::Concat(axis) => {
                let rank = first.len();
                let axis = if axis < 0 { axis + rank as i64 } else { axis };
                ensure!((0..rank as i64).contains(&axis), "concat axis {axis} out of rank {rank}");
                let axis = axis as usize;
                let mut out = first.clone();
                for s in &shapes[1..] {
                    ensure!(s.len() == rank, "concatenated tensors differ in rank");
                    ensure!((0..rank).all(|d| d == axis || s[d] == first[d]), "concatenated shapes differ");
                    out[axis] = out[axis].clone() + s[axis].clone();
                }
                Ok(out)
            }
        }
    }
}

impl Expansion for JoinU8 {
    fn name(&self) -> StaticName {
        Op::name(self)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.terms.mul.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        for x in inputs {
            s.equals(&x.datum_type, u8::datum_type())?;
        }
        let me = self.clone();
        s.given_all(inputs.iter().map(|i| &i.shape), move |s, shapes: Vec<TVec<TDim>>| {
            // an Add of different (broadcast) shapes gets its output from the float path in `wire`
            if let Ok(out) = me.output_shape(&shapes) {
                s.equals(&outputs[0].shape, ShapeFactoid::from(out))?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let shapes: Vec<TVec<TDim>> =
            inputs.iter().map(|i| Ok(model.outlet_fact(*i)?.shape.to_tvec())).collect::<TractResult<_>>()?;
        if self.output_shape(&shapes).is_ok() {
            return model.wire_node(prefix, self.clone(), inputs);
        }
        ensure!(self.kind == Kind::Add, "{prefix}: {:?}", self.output_shape(&shapes).err());
        // a broadcasting addition: dequantize, add in float, quantize, as the graph was written
        let t = &self.terms;
        let z = |i: usize| t.zero_points[i] as f32;
        let a = model.wire_node(format!("{prefix}.dequantize_a"), Qdq::dequantize(t.scales[0], z(0)), &inputs[..1])?;
        let b = model.wire_node(format!("{prefix}.dequantize_b"), Qdq::dequantize(t.scales[1], z(1)), &inputs[1..2])?;
        let sum = wire_with_rank_broadcast(format!("{prefix}.add"), model, math::add(), &[a[0], b[0]])?;
        model.wire_node(prefix, Qdq::quantize(t.scales[2], z(2)), &sum)
    }
}

impl Op for JoinU8 {
    fn name(&self) -> StaticName {
        match self.kind {
            Kind::Concat(_) => CONCAT.into(),
            Kind::Add => ADD.into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for JoinU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shapes: Vec<TVec<TDim>> = inputs.iter().map(|t| t.shape().iter().map(|&d| d.to_dim()).collect()).collect();
        let shape = self.output_shape(&shapes)?;
        let shape: TVec<usize> =
            shape.iter().map(|d| d.to_usize().map_err(|e| anyhow::anyhow!("{e:?}"))).collect::<TractResult<_>>()?;
        let mut y = Tensor::zero::<u8>(&shape)?;
        let views: Vec<_> = inputs.iter().map(|t| t.try_as_plain_ram()).collect::<TractResult<_>>()?;
        let xs: Vec<&[u8]> = views.iter().map(|v| v.as_slice::<u8>()).collect::<TractResult<_>>()?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<u8>()?;
            let t = &self.terms;
            match self.kind {
                Kind::Add => {
                    add(xs[0], xs[1], (t.mul[0], t.mul[1]), t.add + t.offsets[0] + t.offsets[1], out);
                }
                Kind::Concat(axis) => {
                    let rank = shape.len() as i64;
                    let axis = (if axis < 0 { axis + rank } else { axis }) as usize;
                    let outer: usize = shape[..axis].iter().product();
                    let chunks: Vec<usize> = inputs.iter().map(|x| x.shape()[axis..].iter().product()).collect();
                    let mut dst = out.chunks_mut(chunks.iter().sum::<usize>().max(1));
                    for o in 0..outer {
                        let Some(row) = dst.next() else { break };
                        let mut at = 0;
                        for (i, &len) in chunks.iter().enumerate() {
                            let (src, d) = (&xs[i][o * len..(o + 1) * len], &mut row[at..at + len]);
                            if t.mul[i] == 1.0 && t.offsets[i] + t.add == 0.0 {
                                d.copy_from_slice(src);
                            } else {
                                let c = t.add + t.offsets[i];
                                for (d, &v) in d.iter_mut().zip(src) {
                                    *d = saturate_u8(v as f32 * t.mul[i] + c);
                                }
                            }
                            at += len;
                        }
                    }
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for JoinU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shapes: Vec<TVec<TDim>> = inputs.iter().map(|f| f.shape.to_tvec()).collect();
        Ok(tvec!(u8::fact(self.output_shape(&shapes)?)))
    }

    as_op!();
}

/// `out = saturate(a · mul.0 + b · mul.1 + c)`: two u8 tensors of the same shape added in
/// their output's scale. Compiled for AVX-512, AVX2 and NEON and picked at run time (in
/// baseline SSE2 the additions were 4 % of NanoDet).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn add(a: &[u8], b: &[u8], mul: (f32, f32), c: f32, out: &mut [u8]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = saturate_u8(a as f32 * mul.0 + b as f32 * mul.1 + c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(op: &JoinU8, inputs: Vec<Tensor>) -> Vec<u8> {
        let out = op.eval(&EvalContext::out_of_plan(), inputs.into_iter().map(|t| t.into_tvalue()).collect()).unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<u8>().unwrap().to_vec()
    }

    #[test]
    fn add_and_concat_requantize_like_the_float_graph() {
        // a: scale 0.5 zp 10, b: scale 0.25 zp 0, out: scale 1 zp 5
        let terms = Terms::new(&[0.5, 0.25, 1.0], &[10, 0, 5]).unwrap();
        let add = JoinU8 { kind: Kind::Add, terms: terms.clone() };
        let a = Tensor::from_shape(&[1, 3], &[10u8, 20, 255]).unwrap();
        let b = Tensor::from_shape(&[1, 3], &[0u8, 6, 255]).unwrap();
        // (10−10)·0.5 + 0 + 5 = 5; 5 + 1.5 + 5 = 11.5 → 12; 122.5 + 63.75 + 5 = 191.25 → 191
        assert_eq!(eval(&add, vec![a.clone(), b.clone()]), [5, 12, 191]);
        let concat = JoinU8 { kind: Kind::Concat(1), terms };
        // a: (q−10)·0.5 + 5; b: q·0.25 + 5
        assert_eq!(eval(&concat, vec![a, b]), [5, 10, 128, 5, 6, 69]);
    }

    /// `x → Q → DQ`, `y → Q → DQ`, their sum `→ Q → DQ`: an ONNX model of one quantized
    /// addition of a `[1, 4, 2, 2]` tensor and a `y` of shape `y_shape`.
    fn quantized_add(y_shape: &[i64]) -> tract_onnx::pb::ModelProto {
        use tract_onnx::pb::*;
        let scalar = |name: &str, v: f32| TensorProto {
            name: name.into(),
            data_type: tensor_proto::DataType::Float as i32,
            float_data: vec![v],
            ..Default::default()
        };
        let zero_point = |name: &str, v: u8| TensorProto {
            name: name.into(),
            data_type: tensor_proto::DataType::Uint8 as i32,
            raw_data: vec![v],
            ..Default::default()
        };
        let node = |op: &str, inputs: [&str; 3], output: &str| NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        };
        let input = |name: &str, shape: &[i64]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: tensor_proto::DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: shape
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let graph = GraphProto {
            node: vec![
                node("QuantizeLinear", ["x", "sx", "zx"], "xq"),
                node("DequantizeLinear", ["xq", "sx", "zx"], "xd"),
                node("QuantizeLinear", ["y", "sy", "zy"], "yq"),
                node("DequantizeLinear", ["yq", "sy", "zy"], "yd"),
                NodeProto {
                    name: "sum".into(),
                    op_type: "Add".into(),
                    input: vec!["xd".into(), "yd".into()],
                    output: vec!["sum".into()],
                    ..Default::default()
                },
                node("QuantizeLinear", ["sum", "so", "zo"], "sq"),
                node("DequantizeLinear", ["sq", "so", "zo"], "out"),
            ],
            initializer: vec![
                scalar("sx", 0.05),
                zero_point("zx", 20),
                scalar("sy", 0.03),
                zero_point("zy", 100),
                scalar("so", 0.07),
                zero_point("zo", 60),
            ],
            input: vec![input("x", &[1, 4, 2, 2]), input("y", y_shape)],
            output: vec![ValueInfoProto { name: "out".into(), ..Default::default() }],
            ..Default::default()
        };
        ModelProto {
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            ..Default::default()
        }
    }

    #[test]
    fn an_addition_runs_on_u8_values_and_a_broadcasting_one_as_written() {
        use crate::{Int8Exec, onnx_proto_model};
        let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.37 - 2.0).collect();
        for y_shape in [[1i64, 4, 2, 2], [1, 4, 1, 1]] {
            let n = y_shape.iter().product::<i64>() as usize;
            let y: Vec<f32> = (0..n).map(|i| 1.5 - i as f32 * 0.21).collect();
            let y_dims: Vec<usize> = y_shape.iter().map(|&d| d as usize).collect();
            let inputs = tvec!(
                Tensor::from_shape(&[1, 4, 2, 2], &x).unwrap().into_tvalue(),
                Tensor::from_shape(&y_dims, &y).unwrap().into_tvalue()
            );
            let run = |exec| {
                let (model, done) = onnx_proto_model(quantized_add(&y_shape), exec).unwrap();
                let plan = model.into_optimized().unwrap().into_runnable().unwrap();
                let out = plan.run(inputs.clone()).unwrap().remove(0);
                (out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec(), done.joins)
            };
            let ((ours, joins), (written, _)) = (run(Int8Exec::Integer), run(Int8Exec::FakeQuant));
            assert_eq!(joins, 1);
            // the float path rounds the same sums; the u8 path at most one step (0.07) apart
            for (a, b) in ours.iter().zip(&written) {
                assert!((a - b).abs() <= 0.07 + 1e-6, "{y_shape:?}: {ours:?} vs {written:?}");
            }
            assert!(ours.iter().any(|v| *v != ours[0]), "a test that cannot tell outputs apart");
        }
    }
}
