//! `EdgeQMatMul`: a float activation times int8 weights, multiplied in integers.
//!
//! Weight-only int8 graphs (Whisper's here) store each projection as
//! `MatMul(x, DequantizeLinear(w_i8, per-column scale))`, with float activations. tract folds
//! the weights back to f32 at load, so such a model computes exactly as its fp32 twin: smaller
//! on disk, no faster. [`rewrite`] puts one `EdgeQMatMul(x, w_i8, w_scale)` node in place of
//! each such `MatMul` (also when the weights reach it through a 2-D `Transpose`, as a tied
//! output embedding does). At run time each row of `x` (a token) is quantized to symmetric i8
//! with a scale of its own (dynamic quantization, as onnxruntime's `MatMulInteger` path does),
//! the product runs on tract-linalg's i8 kernels ([`super::kernels::PackedWeights`]) and each
//! sum comes back to float as `acc · row_scale · column_scale + bias` (the `Add` after the
//! `MatMul` is folded in). [`rewrite_gathers`] keeps a `Gather` of int8 rows (a token
//! embedding) int8 too.

use std::sync::Mutex;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use super::kernels::{PackedWeights, ROUND, give_back, take_pooled};
use super::rewrite::{Index, attr, is_zero};

/// The custom op's type name in the rewritten graph.
pub const OP: &str = "EdgeQMatMul";

/// Rewrites every `MatMul` of `graph` whose right operand is per-column symmetric int8 weights,
/// with the bias `Add` after it when there is one; returns how many. The weights'
/// `DequantizeLinear` stays for any other reader and is pruned by the caller otherwise.
pub fn rewrite(graph: &mut GraphProto) -> usize {
    struct Plan {
        matmul: usize,
        inputs: Vec<String>,
        transposed: bool,
        /// the bias `Add` folded in: its index and output
        add: Option<(usize, String)>,
    }
    let plans: Vec<Plan> = {
        let ix = Index::new(graph);
        let mut plans = Vec::new();
        for (i, n) in graph.node.iter().enumerate().filter(|(_, n)| n.op_type == "MatMul" && n.input.len() == 2) {
            let Some((w, s, transposed)) = weights(&ix, &n.input[1]) else { continue };
            let mut inputs = vec![n.input[0].clone(), w.clone(), s];
            let mut add = None;
            if let Some((a, bias)) = bias_add(&ix, &n.output[0], &w, transposed) {
                inputs.push(bias);
                add = Some((ix.producer[a.output[0].as_str()], a.output[0].clone()));
            }
            plans.push(Plan { matmul: i, inputs, transposed, add });
        }
        plans
    };
    let mut folded = std::collections::HashSet::new();
    for p in &plans {
        let node = &mut graph.node[p.matmul];
        let output = match &p.add {
            Some((i, out)) => {
                folded.insert(*i);
                out.clone()
            }
            None => node.output[0].clone(),
        };
        *node = NodeProto {
            name: node.name.clone(),
            op_type: OP.into(),
            input: p.inputs.clone(),
            output: vec![output],
            attribute: vec![AttributeProto {
                name: "transposed".into(),
                r#type: AttributeType::Int as i32,
                i: p.transposed as i64,
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    super::rewrite::drop_nodes(graph, &folded);
    plans.len()
}

/// Rewrites each `Gather` (axis 0) of rows of per-row symmetric int8 weights behind a
/// `DequantizeLinear` (a token embedding) into a gather of the int8 rows and of their scales,
/// multiplied after: the table stays int8 in memory instead of being dequantized whole at load
/// (Whisper's decoder: 80 MB of f32 for 20 MB of int8); returns how many.
pub fn rewrite_gathers(graph: &mut GraphProto) -> usize {
    let plans: Vec<(usize, Vec<NodeProto>, TensorProto)> = {
        let ix = Index::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Gather" && n.input.len() == 2 && attr(n, "axis").is_none_or(|a| a.i == 0))
            .filter_map(|(i, n)| {
                let dq = ix.made_by(&n.input[0], "DequantizeLinear")?;
                let q = ix.init(&dq.input[0])?;
                let scale = ix.init(dq.input.get(1)?)?;
                let rows = *q.dims.first()?;
                let per_row = scale.dims.iter().product::<i64>() == rows && attr(dq, "axis").is_some_and(|a| a.i == 0);
                let zero = dq
                    .input
                    .get(2)
                    .filter(|z| !z.is_empty())
                    .is_none_or(|z| ix.tensor(z).and_then(|t| is_zero(&t)).unwrap_or(false));
                if q.data_type != DataType::Int8 as i32 || q.dims.len() != 2 || !per_row || !zero {
                    return None;
                }
                Some((i, gather_rows(n, &dq.input[0], &dq.input[1]), axes_minus_one(&n.name)))
            })
            .collect()
    };
    // replacing from the last, so the indices of the earlier ones still hold
    for (i, nodes, axes) in plans.iter().rev() {
        graph.node.splice(*i..*i + 1, nodes.iter().cloned());
        graph.initializer.push(axes.clone());
    }
    plans.len()
}

/// `out = f32(Gather(q, idx)) · Unsqueeze(Gather(scale, idx), −1)` in place of `gather`.
fn gather_rows(gather: &NodeProto, q: &str, scale: &str) -> Vec<NodeProto> {
    let name = |suffix: &str| format!("{}.edge_{suffix}", gather.name);
    let node = |op: &str, suffix: &str, input: Vec<String>, output: String, attribute: Vec<AttributeProto>| NodeProto {
        name: name(suffix),
        op_type: op.into(),
        input,
        output: vec![output],
        attribute,
        ..Default::default()
    };
    let idx = gather.input[1].clone();
    let to_float = AttributeProto {
        name: "to".into(),
        r#type: AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..Default::default()
    };
    vec![
        node("Gather", "rows", vec![q.into(), idx.clone()], name("rows"), vec![]),
        node("Cast", "rows_f32", vec![name("rows")], name("rows_f32"), vec![to_float]),
        node("Gather", "scales", vec![scale.into(), idx], name("scales"), vec![]),
        node("Unsqueeze", "scales_col", vec![name("scales"), name("axes")], name("scales_col"), vec![]),
        node("Mul", "dequantized", vec![name("rows_f32"), name("scales_col")], gather.output[0].clone(), vec![]),
    ]
}

/// The `[-1]` axes initializer of a gather's `Unsqueeze`.
fn axes_minus_one(gather: &str) -> TensorProto {
    TensorProto {
        name: format!("{gather}.edge_axes"),
        dims: vec![1],
        data_type: DataType::Int64 as i32,
        int64_data: vec![-1],
        ..Default::default()
    }
}

/// The `Add` of a constant float vector, one value per output column, that is the only reader
/// of a matmul's `output`: `(that Add, the bias initializer)`.
fn bias_add<'g>(ix: &Index<'g>, output: &str, w: &str, transposed: bool) -> Option<(&'g NodeProto, String)> {
    let add = ix.sole_reader(output, "Add")?;
    let bias = add.input.iter().find(|i| i.as_str() != output)?;
    let b = ix.init(bias)?;
    let columns = ix.init(w)?.dims[if transposed { 0 } else { 1 }];
    (b.data_type == DataType::Float as i32 && b.dims == [columns]).then(|| (add, bias.clone()))
}

/// `(weights, scales, transposed)` when `b` is int8 weights the op takes: a 2-D i8 initializer,
/// per output column scales (`axis` 1 of `[k, n]`, or `axis` 0 of `[n, k]` behind a
/// `Transpose`), zero points all 0.
fn weights(ix: &Index, b: &str) -> Option<(String, String, bool)> {
    let (dq, transposed) = match ix.made_by(b, "Transpose") {
        Some(t) => {
            let perm = attr(t, "perm").map(|a| a.ints.clone());
            if !(perm.is_none() || perm == Some(vec![1, 0])) {
                return None;
            }
            (ix.made_by(&t.input[0], "DequantizeLinear")?, true)
        }
        None => (ix.made_by(b, "DequantizeLinear")?, false),
    };
    let w = ix.init(&dq.input[0])?;
    if w.data_type != DataType::Int8 as i32 || w.dims.len() != 2 {
        return None;
    }
    let out_axis = if transposed { 0 } else { 1 };
    let scale = ix.init(dq.input.get(1)?)?;
    let per_column = scale.dims.iter().product::<i64>() == w.dims[out_axis]
        && attr(dq, "axis").map(|a| a.i).unwrap_or(1) == out_axis as i64;
    let per_tensor = scale.dims.iter().product::<i64>() == 1;
    if scale.data_type != DataType::Float as i32 || !(per_column || per_tensor) {
        return None;
    }
    if let Some(z) = dq.input.get(2).filter(|z| !z.is_empty())
        && !ix.tensor(z).and_then(|t| is_zero(&t)).unwrap_or(false)
    {
        return None;
    }
    Some((dq.input[0].clone(), dq.input[1].clone(), transposed))
}

/// The ONNX op builder of `EdgeQMatMul`.
pub fn build(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let transposed = node.get_attr_opt::<i64>("transposed")?.unwrap_or(0) != 0;
    Ok((expand(QMatMulExpansion { transposed }), vec![]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct QMatMulExpansion {
    /// weights stored `[n, k]` (else `[k, n]`)
    transposed: bool,
}

impl Expansion for QMatMulExpansion {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        if inputs.len() != 3 && inputs.len() != 4 {
            bail!("EdgeQMatMul takes 3 or 4 inputs, got {}", inputs.len());
        }
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[1].rank, 2)?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        let transposed = self.transposed;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, w| {
            let n = if transposed { w[0].clone() } else { w[1].clone() };
            let mut shape = x.clone();
            let Some(last) = shape.last_mut() else { bail!("EdgeQMatMul: a scalar input") };
            *last = n;
            s.equals(&outputs[0].shape, ShapeFactoid::from(shape))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize, what: &str| -> TractResult<Arc<Tensor>> {
            model.outlet_fact(inputs[i])?.konst.clone().with_context(|| format!("{prefix}: {what} is not a constant"))
        };
        let w = konst(1, "the weights")?;
        ensure!(w.datum_type() == i8::datum_type() && w.rank() == 2, "{prefix}: 2-D i8 weights expected");
        // the kernel wants them [n, k]: transposed weights are packed from the constant itself
        let w = if self.transposed { w } else { Arc::new(w.as_ref().clone().permute_axes(&[1, 0])?) };
        let (n, k) = (w.shape()[0], w.shape()[1]);
        // a pushed model may name this op directly: an empty side would divide by zero later
        ensure!(n > 0 && k > 0, "{prefix}: weights of {n}×{k} (both sides must be non-empty)");
        let scale = konst(2, "the weight scale")?.cast_to::<f32>()?.into_owned();
        let scale = scale.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(scale.len() == 1 || scale.len() == n, "{prefix}: one weight scale or one per column");
        let x = model.outlet_fact(inputs[0])?.clone();
        ensure!(x.rank() >= 1 && x.shape[x.rank() - 1] == k.to_dim(), "{prefix}: inputs of width {k} expected");
        // the product's width is the number of rows, known here only when the shape is
        let rows = x.shape.iter().take(x.rank() - 1).map(|d| d.to_usize().ok()).product::<Option<usize>>();
        // one-token products read the weights once each: as rows they cost what packed
        // panels do, and a tied embedding's rows are the very table its Gather reads
        let weights = match rows {
            Some(r) if r <= UNPACKED_ROWS => Weights::Rows(w),
            _ => Weights::Packed(PackedWeights::from_tensor(&w, rows)?),
        };
        let scale = if scale.len() == 1 { vec![scale[0]; n] } else { scale };
        let bias = match inputs.get(3) {
            None => vec![0.0; n],
            Some(_) => {
                let b = konst(3, "the bias")?.cast_to::<f32>()?.into_owned();
                let b = b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                ensure!(b.len() == n, "{prefix}: one bias per column");
                b
            }
        };
        let op = QMatMul { weights, scale: Arc::new(scale), bias: Arc::new(bias), k, n };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The typed, runnable op.
#[derive(Debug, Clone)]
pub struct QMatMul {
    weights: Weights,
    /// per output column
    scale: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    k: usize,
    n: usize,
}

/// Products of at most this many rows (a decoder step's one token) keep the weights as rows.
const UNPACKED_ROWS: usize = 4;

/// A product's weights, `[n, k]`.
#[derive(Debug, Clone)]
enum Weights {
    /// packed for tract-linalg's integer kernels
    Packed(PackedWeights),
    /// as stored, each output's k weights contiguous, shared with the model's constant:
    /// Whisper's tied output projection is the 20 MB embedding table its token lookup reads,
    /// so it is not held a second time, packed
    Rows(Arc<Tensor>),
}

/// Buffers for one block of rows, shared by every `QMatMul` of the process: one set per
/// output width and per inference running at that moment. Kept per op, they were 10 MB for
/// each of Whisper's encoder plans (24 products of up to 128 × 1536 sums), all but one idle.
static SCRATCH: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());

/// What one block of rows needs between quantization and the output: reused from call to
/// call, as a fresh buffer of megabytes costs its page faults each time (measured: a fifth of
/// Whisper's encoder time went to faults and zeroing with fresh buffers).
#[derive(Debug)]
struct Scratch {
    q: Vec<i8>,
    row_scale: Vec<f32>,
    acc: Tensor,
}

/// Rows quantized and multiplied together: enough for the product to fill the kernels' tiles
/// and few enough that the i32 sums stay in cache until they are scaled into the output.
const BLOCK: usize = 128;

impl PartialEq for QMatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scale, &other.scale)
    }
}
impl Eq for QMatMul {}

impl Op for QMatMul {
    fn name(&self) -> StaticName {
        OP.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = match &self.weights {
            Weights::Packed(p) => p.kernel_name(),
            Weights::Rows(_) => "i8 rows dot",
        };
        Ok(vec![format!("k={} n={} on {kernel}", self.k, self.n)])
    }

    op_as_typed_op!();
}

impl EvalOp for QMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let (k, n) = (self.k, self.n);
        ensure!(k > 0 && x.len() % k == 0, "EdgeQMatMul: input of {} values is not rows of {k}", x.len());
        let rows = x.len() / k;
        let mut shape: TVec<usize> = inputs[0].shape().into();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let mut y = Tensor::zero::<f32>(&shape)?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            match &self.weights {
                Weights::Rows(w) => self.on_rows(w.try_as_plain_ram()?.as_slice::<i8>()?, x, out),
                Weights::Packed(packed) => self.on_packed(packed, x, rows, out)?,
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl QMatMul {
    /// `out = x · wᵀ` with `w` as stored (`[n, k]`), one dot per output and row.
    fn on_rows(&self, w: &[i8], x: &[f32], out: &mut [f32]) {
        let k = self.k;
        let mut q = vec![0i8; k];
        for (x, out) in x.chunks_exact(k).zip(out.chunks_exact_mut(self.n)) {
            let rs = quantize_row(x, &mut q);
            let columns = w.chunks_exact(k).zip(self.scale.iter()).zip(self.bias.iter());
            for (out, ((w, &c), &b)) in out.iter_mut().zip(columns) {
                *out = dot(&q, w) as f32 * (rs * c) + b;
            }
        }
    }

    /// `out = x · wᵀ` on the packed weights, [`BLOCK`] rows at a time.
    fn on_packed(&self, packed: &PackedWeights, x: &[f32], rows: usize, out: &mut [f32]) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        let block = rows.clamp(1, BLOCK);
        let pooled = take_pooled(&SCRATCH, |s| s.acc.shape()[1] == n && s.acc.shape()[0] >= block)?;
        let mut s = match pooled {
            Some(s) => s,
            None => Scratch { q: Vec::new(), row_scale: Vec::new(), acc: Tensor::zero::<i32>(&[block, n])? },
        };
        if s.q.len() < block * k {
            s.q.resize(block * k, 0);
        }
        if s.row_scale.len() < block {
            s.row_scale.resize(block, 0.0);
        }
        for (x, y) in x.chunks(block * k).zip(out.chunks_mut(block * n)) {
            let r = x.len() / k;
            for ((x, q), rs) in x.chunks_exact(k).zip(s.q.chunks_exact_mut(k)).zip(&mut s.row_scale) {
                *rs = quantize_row(x, q);
            }
            packed.product_rows(&s.q[..r * k], r, &mut s.acc)?;
            let acc = s.acc.try_as_plain_ram()?;
            let acc = acc.as_slice::<i32>()?;
            for ((y, acc), &rs) in y.chunks_exact_mut(n).zip(acc.chunks_exact(n)).zip(&s.row_scale) {
                for (((y, &a), &c), &b) in y.iter_mut().zip(acc).zip(self.scale.iter()).zip(self.bias.iter()) {
                    *y = a as f32 * (rs * c) + b;
                }
            }
        }
        give_back(&SCRATCH, s);
        Ok(())
    }
}

/// `Σ a[i] · b[i]` of two i8 rows, exact in i32 for rows up to 2^17 long.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&x, &y)| s.wrapping_add(i32::from(x) * i32::from(y)))
}

/// Quantizes `x` to symmetric i8 over its own range: `q = round(x / s)` with
/// `s = max|x| / 127`; returns `s` (1 for a row of zeros, which then stays zeros). A NaN or
/// infinite value makes the whole row's scale non-finite, so the row comes out NaN as it would
/// in float, rather than silently clipped.
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return 1.0;
    }
    if !amax.is_finite() {
        q.fill(0);
        return f32::NAN;
    }
    let inv = 127.0 / amax;
    for (q, &v) in q.iter_mut().zip(x) {
        // |v · inv| ≤ 127: adding 1.5 · 2^23 rounds half to even and leaves the integer,
        // two's complement, in the low mantissa bits (see `kernels::Requant`)
        *q = ((v * inv) + ROUND).to_bits() as u8 as i8;
    }
    amax / 127.0
}

impl TypedOp for QMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        if let Some(last) = shape.last_mut() {
            *last = self.n.to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let rows: TDim = inputs[0].shape.iter().take(inputs[0].rank().saturating_sub(1)).product();
        Ok(tvec!((Cost::FMA(i32::datum_type()), rows * (self.k * self.n))))
    }

    as_op!();
}

#[cfg(test)]
mod tests;
