//! `EdgeQConv`: one quantized convolution as a single tract op, u8 in and u8 out.
//!
//! [`super::rewrite`] puts an `EdgeQConv` node in the ONNX graph where a
//! `DequantizeLinear → Conv → QuantizeLinear` sandwich was; [`build`] is its ONNX op builder.
//! At wiring time the constant inputs (weights, scales, zero points, bias) are read once:
//! the weights are packed for the integer kernel and the bias, zero-point correction and
//! scales become one [`Requant`]. At run time the op does im2col (or nothing, 1×1), the
//! integer product (or the direct depthwise loop) and the requantization.

use std::sync::Mutex;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use super::depthwise;
use super::kernels::{Geometry, PackedWeights, Requant, give_back, take_pooled};
use super::pointwise_vnni::Pointwise;

/// Inputs of an `EdgeQConv` node, in order.
pub const INPUTS: [&str; 8] = ["x", "x_scale", "x_zero_point", "w", "w_scale", "bias", "y_scale", "y_zero_point"];

/// The ONNX op builder of `EdgeQConv`.
pub fn build(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let pads = node.get_attr_opt_vec::<usize>("pads")?.unwrap_or_else(|| vec![0; 4]);
    ensure!(pads.len() == 4, "EdgeQConv {}: 2-D pads expected", node.name);
    let strides = node.get_attr_opt_vec::<usize>("strides")?.unwrap_or_else(|| vec![1, 1]);
    ensure!(
        strides.len() == 2 && strides.iter().all(|&s| s >= 1),
        "EdgeQConv {}: 2-D strides of at least 1 expected",
        node.name
    );
    let spec = Spec {
        // ONNX orders pads (top, left, bottom, right) as ours
        pads: [pads[0], pads[1], pads[2], pads[3]],
        stride: (strides[0], strides[1]),
        group: node.get_attr_opt::<usize>("group")?.unwrap_or(1),
        alpha: node.get_attr_opt::<f32>("alpha")?,
    };
    Ok((expand(QConvExpansion(spec)), vec![]))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Spec {
    pads: [usize; 4],
    stride: (usize, usize),
    group: usize,
    alpha: Option<f32>,
}

#[derive(Debug, Clone)]
struct QConvExpansion(Spec);

impl Expansion for QConvExpansion {
    fn name(&self) -> StaticName {
        "EdgeQConv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, INPUTS.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[0].rank, 4)?;
        let spec = self.0;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, x, w| {
            let (Ok(h), Ok(wd), Ok(kh), Ok(kw)) = (x[2].to_usize(), x[3].to_usize(), w[2].to_usize(), w[3].to_usize())
            else {
                bail!("EdgeQConv needs concrete spatial dimensions")
            };
            let [pt, pl, pb, pr] = spec.pads;
            let (Some(dh), Some(dw)) = ((h + pt + pb).checked_sub(kh), (wd + pl + pr).checked_sub(kw)) else {
                bail!("EdgeQConv: a {kh}x{kw} kernel is larger than its padded {h}x{wd} input")
            };
            let (ho, wo) = (dh / spec.stride.0 + 1, dw / spec.stride.1 + 1);
            s.equals(&outputs[0].shape, ShapeFactoid::from(tvec!(x[0].clone(), w[0].clone(), ho.into(), wo.into())))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{prefix}: {} is not a constant", INPUTS[i]))
        };
        let scalar = |i: usize| -> TractResult<f32> { konst(i)?.cast_to_scalar::<f32>() };
        let x_fact = model.outlet_fact(inputs[0])?.clone();
        ensure!(x_fact.datum_type == u8::datum_type(), "{prefix}: u8 input expected, got {:?}", x_fact.datum_type);
        let xs = x_fact.shape.as_concrete().with_context(|| format!("{prefix}: input shape must be concrete"))?;
        ensure!(xs.len() == 4 && xs[0] == 1, "{prefix}: a batch of one NCHW image expected, got {xs:?}");
        let w = konst(3)?;
        ensure!(w.datum_type() == i8::datum_type() && w.rank() == 4, "{prefix}: 4-D i8 weights expected");
        let ws = w.shape();
        let g = Geometry {
            cin: xs[1],
            h: xs[2],
            w: xs[3],
            cout: ws[0],
            kh: ws[2],
            kw: ws[3],
            stride: self.0.stride,
            pads: self.0.pads,
        };
        ensure!(
            g.kh >= 1 && g.kw >= 1 && g.padded_hw().0 >= g.kh && g.padded_hw().1 >= g.kw,
            "{prefix}: a {}x{} kernel does not fit its padded {}x{} input",
            g.kh,
            g.kw,
            g.h,
            g.w
        );
        let depthwise = self.0.group > 1;
        // the depthwise loop sums in f32, exact only while 255·128·taps < 2^24
        ensure!(!depthwise || g.kh * g.kw <= 512, "{prefix}: depthwise kernels above 512 taps are not supported");
        if depthwise {
            ensure!(
                self.0.group == g.cin && g.cout == g.cin && ws[1] == 1,
                "{prefix}: only depthwise grouping is supported"
            );
        } else {
            ensure!(self.0.group == 1 && ws[1] == g.cin, "{prefix}: weights do not match the input channels");
        }
        let (x_scale, x0, y_scale, y0) = (scalar(1)?, scalar(2)?, scalar(6)?, scalar(7)?);
        let w_scale = konst(4)?.cast_to::<f32>()?.into_owned();
        let w_scale = w_scale.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(w_scale.len() == 1 || w_scale.len() == g.cout, "{prefix}: one weight scale or one per channel");
        let bias = konst(5)?.cast_to::<f32>()?.into_owned();
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        ensure!(bias.len() == g.cout, "{prefix}: one bias per output channel");
        let wv = w.try_as_plain_ram()?.as_slice::<i8>()?.to_vec();
        let k = wv.len() / g.cout;
        let (mut mul, mut add) = (Vec::with_capacity(g.cout), Vec::with_capacity(g.cout));
        for c in 0..g.cout {
            let acc_scale = x_scale * w_scale[if w_scale.len() == 1 { 0 } else { c }];
            mul.push(acc_scale / y_scale);
            let bias_q = if acc_scale > 0.0 { (bias[c] / acc_scale).round_ties_even() as i32 } else { 0 };
            // the integer product sees x - 128; the depthwise loop subtracts x0 itself
            let shift = if depthwise {
                0
            } else {
                (128 - x0 as i32) * wv[c * k..(c + 1) * k].iter().map(|&v| v as i32).sum::<i32>()
            };
            add.push(bias_q + shift);
        }
        let (ho, wo) = g.out_hw();
        let kernel = if depthwise {
            Kernel::Depthwise(Arc::new(depthwise::Filters::new(&wv, &g, x0 as u8)))
        } else if let Some(pointwise) = Pointwise::new(&wv, &g) {
            // a plain 1×1 convolution on AVX-512 VNNI: the kernel that requantizes in registers
            Kernel::Pointwise(Arc::new(pointwise))
        } else {
            Kernel::Product(PackedWeights::conv(&wv, &g, Some(ho * wo))?)
        };
        let op = QConv { g, x0: x0 as u8, kernel, requant: Arc::new(Requant { mul, add, y0, alpha: self.0.alpha }) };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// What computes a convolution: exactly one of these per op.
#[derive(Debug, Clone)]
enum Kernel {
    /// im2col (or nothing, 1×1) and the product on tract-linalg's kernels, then the
    /// requantization pass
    Product(PackedWeights),
    /// a plain 1×1 convolution on AVX-512 VNNI, requantized in registers
    Pointwise(Arc<Pointwise>),
    /// one filter per channel
    Depthwise(Arc<depthwise::Filters>),
}

/// The typed, runnable op.
#[derive(Debug, Clone)]
pub struct QConv {
    g: Geometry,
    x0: u8,
    kernel: Kernel,
    requant: Arc<Requant>,
}

/// `[cout, ≥ block]` i32 buffers for the sums, shared by every convolution of the process: one
/// per output channel count and per inference running at that moment (a fresh one per call
/// cost its zeroing and page faults: measured, a tenth of NanoDet). Kept per op, they were
/// 18 MB for the three vision models of the demo.
static SUMS: Mutex<Vec<Tensor>> = Mutex::new(Vec::new());

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        self.g == other.g
            && self.x0 == other.x0
            && match (&self.kernel, &other.kernel) {
                (Kernel::Depthwise(a), Kernel::Depthwise(b)) => Arc::ptr_eq(a, b),
                (Kernel::Pointwise(a), Kernel::Pointwise(b)) => Arc::ptr_eq(a, b),
                (Kernel::Product(a), Kernel::Product(b)) => a.same_weights(b),
                _ => false,
            }
            && self.requant == other.requant
    }
}
impl Eq for QConv {}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "EdgeQConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kind = match &self.kernel {
            Kernel::Product(p) => format!("im2col + {}", p.kernel_name()),
            Kernel::Pointwise(_) => "1×1 avx512vnni, requantized in registers".into(),
            Kernel::Depthwise(f) => f.kind().into(),
        };
        Ok(vec![format!("{:?} {kind}, leaky={:?}", self.g, self.requant.alpha)])
    }

    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<u8>()?;
        let g = &self.g;
        ensure!(x.len() == g.cin * g.h * g.w, "EdgeQConv: input of {} values, expected {}", x.len(), g.cin * g.h * g.w);
        let (ho, wo) = g.out_hw();
        let n = ho * wo;
        let mut y = Tensor::zero::<u8>(&[1, g.cout, ho, wo])?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<u8>()?;
            match &self.kernel {
                Kernel::Pointwise(pointwise) => pointwise.run(x, n, &self.requant, out),
                Kernel::Depthwise(filters) => depthwise::depthwise(x, g, self.x0, filters, &self.requant, out),
                Kernel::Product(packed) => {
                    // the i32 sums' buffer is reused: every value is stored before it is read
                    // computed a block of columns at a time where the product allows it: the
                    // sums are requantized while still in cache
                    let block = packed.block(g);
                    // one as wide or wider does: its rows are `stride` apart
                    let pooled = take_pooled(&SUMS, |t| t.shape()[0] == g.cout && t.shape()[1] >= block)?;
                    let mut acc = match pooled {
                        Some(t) => t,
                        None => Tensor::zero::<i32>(&[g.cout, block])?,
                    };
                    let stride = acc.shape()[1];
                    for j0 in (0..n).step_by(block) {
                        let cols = j0..(j0 + block).min(n);
                        packed.product_columns(x, g, self.x0, cols.clone(), &mut acc)?;
                        let acc = acc.try_as_plain_ram()?;
                        let acc = acc.as_slice::<i32>()?;
                        for c in 0..g.cout {
                            let sums = &acc[c * stride..c * stride + cols.len()];
                            self.requant.channel(c, sums, &mut out[c * n + cols.start..c * n + cols.end]);
                        }
                    }
                    give_back(&SUMS, acc);
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (ho, wo) = self.g.out_hw();
        Ok(tvec!(u8::fact([1, self.g.cout, ho, wo])))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (ho, wo) = self.g.out_hw();
        let per_out = if matches!(self.kernel, Kernel::Depthwise(_)) { 1 } else { self.g.cin } * self.g.kh * self.g.kw;
        Ok(tvec!((Cost::FMA(i32::datum_type()), (self.g.cout * ho * wo * per_out).into())))
    }

    as_op!();
}
