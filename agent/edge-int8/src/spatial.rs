//! `EdgeMaxPoolU8` and `EdgeResizeU8`: max pooling and bilinear resizing done on the u8
//! activations themselves.
//!
//! A QDQ graph wraps these ops as `DequantizeLinear → op → QuantizeLinear` with the same
//! scale and zero point on both sides. Dequantization is affine and increasing, so the max of
//! the dequantized values is the dequantized max, and a bilinear interpolation (weights
//! summing to 1) of the dequantized values is the dequantized interpolation: the sandwich is
//! the op on the u8 values, rounded once. tract ran it in float with two passes around it
//! (measured on NanoDet once its convolutions were integers: MaxPool 9.5 ms and Resize 12 ms
//! of ~100).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};
use tract_onnx::tract_hir::internal::*;

use multiversion::multiversion;

use super::kernels::saturate_u8;
use super::rewrite::{Index, attr, substitute};

pub const MAX_POOL: &str = "EdgeMaxPoolU8";
pub const RESIZE: &str = "EdgeResizeU8";

/// What one op does to each `[h, w]` plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spatial {
    /// kernel, strides, pads (top, left, bottom, right); padding never wins the max
    MaxPool { kernel: (usize, usize), stride: (usize, usize), pads: [usize; 4] },
    /// bilinear, half-pixel centres, by these factors (height, width)
    Resize { scale: (f32, f32) },
}

impl Spatial {
    fn out_hw(&self, h: usize, w: usize) -> TractResult<(usize, usize)> {
        match *self {
            Spatial::MaxPool { kernel, stride, pads } => {
                let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
                ensure!(ph >= kernel.0 && pw >= kernel.1, "pooling window larger than its padded {h}x{w} input");
                Ok(((ph - kernel.0) / stride.0 + 1, (pw - kernel.1) / stride.1 + 1))
            }
            Spatial::Resize { scale } => {
                let (oh, ow) = ((h as f32 * scale.0).floor() as usize, (w as f32 * scale.1).floor() as usize);
                ensure!(oh > 0 && ow > 0 && h > 0 && w > 0, "resize of {h}x{w} by {scale:?} is empty");
                Ok((oh, ow))
            }
        }
    }
}

/// Replaces each `DequantizeLinear → MaxPool|Resize → QuantizeLinear` of one per-tensor u8
/// scale and zero point by the u8 op; returns how many.
pub fn rewrite(graph: &mut GraphProto) -> usize {
    substitute(graph, plan)
}

/// The u8 node standing for `n` and the index of the `QuantizeLinear` it absorbs.
fn plan(ix: &Index, n: &NodeProto) -> Option<(NodeProto, usize)> {
    let op = match n.op_type.as_str() {
        "MaxPool" => MAX_POOL,
        "Resize" => RESIZE,
        _ => return None,
    };
    // the DequantizeLinear may feed others too (the pruning after the rewrite drops it when not)
    let dq = ix.made_by(n.input.first()?, "DequantizeLinear")?;
    let q = ix.sole_reader(n.output.first()?, "QuantizeLinear")?;
    if n.output.len() != 1 || dq.input.len() != 3 || q.input.len() != 3 {
        return None;
    }
    // one u8 scale and zero point, the same on both sides
    let value = |name: &str| ix.tensor(name).ok();
    let (s_in, z_in, s_out, z_out) =
        (value(&dq.input[1])?, value(&dq.input[2])?, value(&q.input[1])?, value(&q.input[2])?);
    if s_in.len() != 1 || z_in.datum_type() != u8::datum_type() || s_in != s_out || z_in != z_out {
        return None;
    }
    let ints = |name: &str| attr(n, name).map(|a| a.ints.clone());
    let mut attributes = Vec::new();
    if op == MAX_POOL {
        let kernel = ints("kernel_shape")?;
        let strides = ints("strides").unwrap_or_else(|| vec![1, 1]);
        let pads = ints("pads").unwrap_or_else(|| vec![0; 4]);
        let plain = attr(n, "ceil_mode").is_none_or(|a| a.i == 0)
            && attr(n, "storage_order").is_none_or(|a| a.i == 0)
            && ints("dilations").is_none_or(|d| d.iter().all(|&d| d == 1))
            && attr(n, "auto_pad").is_none_or(|a| a.s.is_empty() || a.s == b"NOTSET");
        let shapes = kernel.len() == 2 && strides.len() == 2 && pads.len() == 4;
        if !plain || !shapes || kernel.iter().chain(&strides).any(|&v| v < 1) || pads.iter().any(|&p| p < 0) {
            return None;
        }
        attributes.push(ints_attr("kernel_shape", kernel));
        attributes.push(ints_attr("strides", strides));
        attributes.push(ints_attr("pads", pads));
    } else {
        let text = |name: &str| attr(n, name).map(|a| a.s.clone());
        let linear = text("mode").as_deref() == Some(b"linear");
        let half_pixel = text("coordinate_transformation_mode").as_deref() == Some(b"half_pixel");
        let plain = attr(n, "antialias").is_none_or(|a| a.i == 0) && attr(n, "axes").is_none();
        let scales = n.input.get(2).filter(|s| !s.is_empty()).and_then(|s| ix.init(s))?;
        if !linear || !half_pixel || !plain || n.input.len() > 3 || scales.data_type != DataType::Float as i32 {
            return None;
        }
        let scales =
            value(&n.input[2])?.cast_to::<f32>().ok()?.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
        if scales.len() != 4 || scales[0] != 1.0 || scales[1] != 1.0 || !scales[2..].iter().all(|s| *s > 0.0) {
            return None;
        }
        attributes.push(AttributeProto {
            name: "scales".into(),
            r#type: AttributeType::Floats as i32,
            floats: scales[2..].to_vec(),
            ..Default::default()
        });
    }
    let node = NodeProto {
        name: n.name.clone(),
        op_type: op.into(),
        input: vec![dq.input[0].clone()],
        output: vec![q.output[0].clone()],
        attribute: attributes,
        ..Default::default()
    };
    Some((node, ix.producer[q.output[0].as_str()]))
}

fn ints_attr(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints, ..Default::default() }
}

/// The ONNX op builder of `EdgeMaxPoolU8`.
pub fn build_max_pool(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let k = node.get_attr_vec::<usize>("kernel_shape")?;
    let s = node.get_attr_vec::<usize>("strides")?;
    let p = node.get_attr_vec::<usize>("pads")?;
    ensure!(k.len() == 2 && s.len() == 2 && p.len() == 4, "{}: 2-D pooling expected", node.name);
    ensure!(k.iter().chain(&s).all(|&v| v >= 1), "{}: kernel and strides of at least 1", node.name);
    let op = Spatial::MaxPool { kernel: (k[0], k[1]), stride: (s[0], s[1]), pads: [p[0], p[1], p[2], p[3]] };
    Ok((expand(SpatialU8(op)), vec![]))
}

/// The ONNX op builder of `EdgeResizeU8`.
pub fn build_resize(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let s = node.get_attr_vec::<f32>("scales")?;
    ensure!(s.len() == 2 && s.iter().all(|v| v.is_finite() && *v > 0.0), "{}: two positive scales", node.name);
    Ok((expand(SpatialU8(Spatial::Resize { scale: (s[0], s[1]) })), vec![]))
}

/// Both the ONNX expansion and the typed op.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialU8(Spatial);

// the only floats are resize factors, checked finite when built
impl Eq for SpatialU8 {}

impl Expansion for SpatialU8 {
    fn name(&self) -> StaticName {
        Op::name(self)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        let op = self.0;
        s.given(&inputs[0].shape, move |s, x| {
            let (Ok(h), Ok(w)) = (x[2].to_usize(), x[3].to_usize()) else {
                bail!("{} needs concrete spatial dimensions", Op::name(&SpatialU8(op)))
            };
            let (oh, ow) = op.out_hw(h, w)?;
            s.equals(&outputs[0].shape, ShapeFactoid::from(tvec!(x[0].clone(), x[1].clone(), oh.into(), ow.into())))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for SpatialU8 {
    fn name(&self) -> StaticName {
        match self.0 {
            Spatial::MaxPool { .. } => MAX_POOL.into(),
            Spatial::Resize { .. } => RESIZE.into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for SpatialU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = inputs[0].shape();
        ensure!(shape.len() == 4, "{}: NCHW input expected", Op::name(self));
        let (planes, h, w) = (shape[0] * shape[1], shape[2], shape[3]);
        let (oh, ow) = self.0.out_hw(h, w)?;
        let x = inputs[0].try_as_plain_ram()?;
        let x = x.as_slice::<u8>()?;
        let mut y = Tensor::zero::<u8>(&[shape[0], shape[1], oh, ow])?;
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let y = view.as_slice_mut::<u8>()?;
            if h * w > 0 && oh * ow > 0 {
                for (x, y) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)).take(planes) {
                    match self.0 {
                        Spatial::MaxPool { kernel, stride, pads } => {
                            max_pool(x, (h, w), y, (oh, ow), kernel, stride, pads)
                        }
                        Spatial::Resize { scale } => resize(x, (h, w), y, (oh, ow), scale),
                    }
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for SpatialU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = inputs[0].shape.as_concrete().context("concrete input shape expected")?;
        ensure!(s.len() == 4, "NCHW input expected");
        let (oh, ow) = self.0.out_hw(s[2], s[3])?;
        Ok(tvec!(u8::fact([s[0], s[1], oh, ow])))
    }

    as_op!();
}

/// One plane's max pooling; windows are clipped to the plane (a padded cell never wins: it
/// reads as 0, the least u8, and every window holds at least one real cell). Compiled for
/// AVX-512, AVX2 and NEON and picked at run time, as is [`resize`].
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2", "x86_64+avx2", "aarch64+neon"))]
fn max_pool(
    x: &[u8],
    (h, w): (usize, usize),
    y: &mut [u8],
    (oh, ow): (usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    pads: [usize; 4],
) {
    // the column-wise max of a window's rows, padded left and right with zeros; then the max
    // of each run of kernel.1 of it, for every start (whole vectors), of which the outputs take
    // every stride.1-th (measured: per-output windows here and per-output gathers in
    // [`resize`] were together a tenth of NanoDet)
    let pl = pads[1];
    let span = (ow - 1) * stride.1 + 1;
    let mut line = vec![0u8; (span + kernel.1).max(pl + w)];
    let mut runs = vec![0u8; span];
    for oy in 0..oh {
        let top = (oy * stride.0) as isize - pads[0] as isize;
        let rows = top.max(0) as usize..((top + kernel.0 as isize).min(h as isize)).max(0) as usize;
        line.fill(0);
        for r in rows {
            for (m, &v) in line[pl..pl + w].iter_mut().zip(&x[r * w..(r + 1) * w]) {
                *m = (*m).max(v);
            }
        }
        runs.copy_from_slice(&line[..span]);
        for k in 1..kernel.1 {
            for (m, &v) in runs.iter_mut().zip(&line[k..k + span]) {
                *m = (*m).max(v);
            }
        }
        for (out, &m) in y[oy * ow..(oy + 1) * ow].iter_mut().zip(runs.iter().step_by(stride.1)) {
            *out = m;
        }
    }
}

/// Where output coordinate `o` samples an input axis of `n` (half-pixel centres, clamped):
/// the two neighbours and the weight of the second.
fn taps(o: usize, n: usize, scale: f32) -> (usize, usize, f32) {
    let at = ((o as f32 + 0.5) / scale - 0.5).clamp(0.0, (n - 1) as f32);
    let i = at.floor() as usize;
    (i, (i + 1).min(n - 1), at - i as f32)
}

/// One plane's bilinear resize, rounded half to even once at the end. Separable: every input
/// row is interpolated along x once, then each output row blends two of those (the same
/// arithmetic as per output, in the same order, so the same values; see [`max_pool`] for
/// what per-output work cost).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn resize(x: &[u8], (h, w): (usize, usize), y: &mut [u8], (oh, ow): (usize, usize), scale: (f32, f32)) {
    let cols: Vec<_> = (0..ow).map(|o| taps(o, w, scale.1)).collect();
    let doubling = doubles(&cols, w);
    let mut along_x = vec![0f32; h * ow];
    for (row, line) in x.chunks_exact(w).zip(along_x.chunks_exact_mut(ow)) {
        if doubling {
            double_row(row, line);
        } else {
            interpolate_row(row, &cols, line);
        }
    }
    for (oy, out) in y.chunks_exact_mut(ow).enumerate().take(oh) {
        let (r0, r1, fy) = taps(oy, h, scale.0);
        let (top, bottom) = (&along_x[r0 * ow..(r0 + 1) * ow], &along_x[r1 * ow..(r1 + 1) * ow]);
        for ((out, &top), &bottom) in out.iter_mut().zip(top).zip(bottom) {
            *out = saturate_u8(top + (bottom - top) * fy);
        }
    }
}

/// One row interpolated along x at the columns `cols` ([`taps`] of each output).
#[inline(always)]
fn interpolate_row(row: &[u8], cols: &[(usize, usize, f32)], line: &mut [f32]) {
    for (v, &(c0, c1, fx)) in line.iter_mut().zip(cols) {
        *v = row[c0] as f32 + (row[c1] as f32 - row[c0] as f32) * fx;
    }
}

/// Whether `cols` are those of a ×2 upsampling of `w` columns (the detectors' feature
/// pyramids): output 2i blends columns i−1 and i at 0.75, output 2i+1 columns i and i+1 at
/// 0.25, clamped at both ends.
fn doubles(cols: &[(usize, usize, f32)], w: usize) -> bool {
    let doubled = |o: usize| {
        let i = o / 2;
        match (o % 2, i) {
            (0, 0) => (0, 1, 0.0),
            (0, _) => (i - 1, i, 0.75),
            _ if i + 1 < w => (i, i + 1, 0.25),
            // the last output's coordinate is clamped to the last column
            _ => (w - 1, w - 1, 0.0),
        }
    };
    w >= 2 && cols.len() == 2 * w && cols.iter().enumerate().all(|(o, &c)| c == doubled(o))
}

/// [`interpolate_row`] for the columns [`doubles`] recognises: the same operands and
/// arithmetic, but each pair of neighbours read once for the two outputs between them, with
/// no per-output gathers (measured: the gathers made resizes 4-5 % of NanoDet).
#[inline(always)]
fn double_row(row: &[u8], line: &mut [f32]) {
    let w = row.len();
    line[0] = row[0] as f32 + (row[1] as f32 - row[0] as f32) * 0.0;
    for ((pair, &a), &b) in line[1..2 * w - 1].chunks_exact_mut(2).zip(row).zip(&row[1..]) {
        let (a, b) = (a as f32, b as f32);
        pair[0] = a + (b - a) * 0.25;
        pair[1] = a + (b - a) * 0.75;
    }
    line[2 * w - 1] = row[w - 1] as f32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_rows_equals_interpolating_them() {
        for w in 2..40 {
            let cols: Vec<_> = (0..2 * w).map(|o| taps(o, w, 2.0)).collect();
            assert!(doubles(&cols, w), "w={w}");
            let row: Vec<u8> = (0..w).map(|i| ((i * 97 + w * 13) % 256) as u8).collect();
            let (mut fast, mut plain) = (vec![0f32; 2 * w], vec![0f32; 2 * w]);
            double_row(&row, &mut fast);
            interpolate_row(&row, &cols, &mut plain);
            assert_eq!(
                fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "w={w}"
            );
        }
        // other scales take the general path
        let cols: Vec<_> = (0..9).map(|o| taps(o, 3, 3.0)).collect();
        assert!(!doubles(&cols, 3));
        let cols: Vec<_> = (0..2).map(|o| taps(o, 1, 2.0)).collect();
        assert!(!doubles(&cols, 1));
    }

    #[test]
    fn max_pool_ignores_padding_and_takes_each_window_max() {
        // 3x3 windows, stride 2, padding 1 on a 4x4 plane
        let x: Vec<u8> = (0..16).map(|v| (v * 7 % 16) as u8).collect();
        let mut y = [0u8; 4];
        max_pool(&x, (4, 4), &mut y, (2, 2), (3, 3), (2, 2), [1, 1, 1, 1]);
        let direct = |oy: isize, ox: isize| {
            let mut m = 0;
            for r in (oy * 2 - 1)..(oy * 2 + 2) {
                for c in (ox * 2 - 1)..(ox * 2 + 2) {
                    if (0..4).contains(&r) && (0..4).contains(&c) {
                        m = m.max(x[(r * 4 + c) as usize]);
                    }
                }
            }
            m
        };
        assert_eq!(y, [direct(0, 0), direct(0, 1), direct(1, 0), direct(1, 1)]);

        // and against the direct window max over other shapes, odd sizes and uneven padding
        for (i, &(h, w, kernel, stride, pads)) in [
            (7, 9, (2, 2), (2, 2), [0; 4]),
            (6, 5, (3, 3), (1, 1), [1, 1, 1, 1]),
            (9, 11, (5, 5), (1, 1), [2, 2, 2, 2]),
            (8, 7, (3, 2), (2, 3), [0, 1, 2, 1]),
        ]
        .iter()
        .enumerate()
        {
            let x: Vec<u8> = (0..h * w).map(|v| ((v * 37 + i * 11) % 251) as u8).collect();
            let op = Spatial::MaxPool { kernel, stride, pads };
            let (oh, ow) = op.out_hw(h, w).unwrap();
            let mut y = vec![0u8; oh * ow];
            max_pool(&x, (h, w), &mut y, (oh, ow), kernel, stride, pads);
            for oy in 0..oh {
                for ox in 0..ow {
                    let (top, left) =
                        ((oy * stride.0) as isize - pads[0] as isize, (ox * stride.1) as isize - pads[1] as isize);
                    let mut m = 0;
                    for r in top.max(0)..(top + kernel.0 as isize).min(h as isize) {
                        for c in left.max(0)..(left + kernel.1 as isize).min(w as isize) {
                            m = m.max(x[r as usize * w + c as usize]);
                        }
                    }
                    assert_eq!(y[oy * ow + ox], m, "{h}x{w} {kernel:?} {stride:?} {pads:?} at ({oy}, {ox})");
                }
            }
        }
    }

    #[test]
    fn resize_interpolates_at_half_pixel_centres() {
        // 2x upsampling of [0, 100]: outputs at input coordinates −0.25 (clamped to 0), 0.25,
        // 0.75, 1.25 (clamped to 1)
        let mut y = [0u8; 4];
        resize(&[0, 100], (1, 2), &mut y, (1, 4), (1.0, 2.0));
        assert_eq!(y, [0, 25, 75, 100]);
        // halving averages pairs: (10 + 21) / 2 = 15.5 rounds to even
        let mut y = [0u8; 1];
        resize(&[10, 21], (1, 2), &mut y, (1, 1), (1.0, 0.5));
        assert_eq!(y, [16]);
    }
}
