//! The integer arithmetic of one quantized convolution, free of any graph: gathering u8
//! activations into the i8 matrix a product wants (im2col), the i8 × i8 → i32 product on
//! tract-linalg's own kernels (AMX, AVX-512 VNNI, AVX2, NEON dot product or plain NEON, picked
//! at run time for the core it runs on), and the requantization of the i32 sums to u8 with the
//! layer's activation folded in. The same product serves [`super::qmatmul`], whose activations
//! arrive as rows already quantized.
//!
//! Conventions: activations are u8 with a zero point `x0` (onnxruntime's static
//! quantization), weights are symmetric i8 per output channel. The product kernels are
//! s8 × s8, so activations enter them as `x - 128` and the constant `(128 - x0) * Σw` a row
//! owes for that shift is added back during requantization, with the bias.

use std::sync::Mutex;
use tract_linalg::MmmDispatch;
use tract_linalg::mmm::{AsInputValue, EagerPackedInput, FusedSpec, MMMInputValue, MatMatMul, PackedExoticFact, Query};
use tract_linalg::pack::PackedI8K4;

use anyhow::{Context, ensure};
use tract_onnx::prelude::Blob;
use tract_onnx::prelude::*;

/// Shape of one 2-D convolution, batch 1, NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    /// Padding before and after, (top, left, bottom, right).
    pub pads: [usize; 4],
}

impl Geometry {
    pub fn out_hw(&self) -> (usize, usize) {
        let [pt, pl, pb, pr] = self.pads;
        ((self.h + pt + pb - self.kh) / self.stride.0 + 1, (self.w + pl + pr - self.kw) / self.stride.1 + 1)
    }

    /// The plain 1×1, stride 1, unpadded case: the input already is the product's matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pads == [0; 4]
    }
}

/// How i32 sums become u8 outputs: `y = clamp(round(act((acc + add[c]) · mul[c]) + y0))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// x_scale · w_scale[c] / y_scale
    pub mul: Vec<f32>,
    /// bias in accumulator units plus the row's zero-point correction
    pub add: Vec<i32>,
    pub y0: f32,
    /// LeakyReLU's slope when the layer's activation was folded in
    pub alpha: Option<f32>,
}

/// Adding 1.5 · 2^23 to an f32 in [0, 2^22) rounds it half to even and leaves the integer in
/// the low bits of the mantissa: plain SSE2 or NEON arithmetic the compiler vectorises
/// (`round_ties_even` is a libm call on baseline x86, and float-to-int casts saturate).
const ROUND: f32 = 12_582_912.0;

impl Requant {
    /// Requantizes one exact sum (as f32) of output channel `c`.
    #[inline]
    #[allow(clippy::manual_clamp)] // as in `channel`
    pub fn one(&self, c: usize, acc: f32) -> u8 {
        let s = acc * self.mul[c] + self.add[c] as f32 * self.mul[c];
        let s = match self.alpha {
            Some(alpha) => s.max(s * alpha),
            None => s,
        };
        ((s + self.y0).max(0.0).min(255.0) + ROUND).to_bits() as u8
    }

    /// Requantizes the sums of output channel `c` into `out`.
    #[inline]
    #[allow(clippy::manual_clamp)] // max/min vectorise, and send NaN to 0 where clamp keeps it
    pub fn channel(&self, c: usize, acc: &[i32], out: &mut [u8]) {
        let mul = self.mul[c];
        // (acc + add) · mul, with add folded into a float offset (exact enough: |add·mul| is a
        // few hundred at most, far inside f32's 24 bits)
        let offset = self.add[c] as f32 * mul;
        let y0 = self.y0;
        // plain max/min (not clamp, not a branch), and reading the rounded value out of the
        // float's low mantissa bits instead of a saturating float-to-int cast, keep this loop
        // vectorised (measured: 1.6 ns per value with a cast)
        match self.alpha {
            None => {
                for (o, &a) in out.iter_mut().zip(acc) {
                    let v = (a as f32 * mul + offset + y0).max(0.0).min(255.0);
                    *o = (v + ROUND).to_bits() as u8;
                }
            }
            Some(alpha) => {
                for (o, &a) in out.iter_mut().zip(acc) {
                    let s = a as f32 * mul + offset;
                    // LeakyReLU with 0 < alpha < 1: the larger of s and alpha·s
                    let v = (s.max(s * alpha) + y0).max(0.0).min(255.0);
                    *o = (v + ROUND).to_bits() as u8;
                }
            }
        }
    }
}

/// Weights packed once for tract-linalg's integer product kernel, with that kernel.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    a: Arc<Box<dyn MMMInputValue>>,
    m: usize,
    k: usize,
}

/// Buffers for packed activations, shared by every convolution: one per inference running at
/// that moment, kept warm in cache from one layer to the next.
static SCRATCH: Mutex<Vec<Blob>> = Mutex::new(Vec::new());

impl PackedWeights {
    /// `w` is the `[m, k]` i8 weight matrix; `n` the product's width when known, which the
    /// kernel choice uses (a wide tile only pays on wide products).
    pub fn new(w: &[i8], m: usize, k: usize, n: Option<usize>) -> TractResult<PackedWeights> {
        let query = Query {
            weight: i8::datum_type().into(),
            activation: i8::datum_type(),
            accumulators: tvec!(i32::datum_type()),
            store: Some(i32::datum_type()),
            allow_extractor: false,
            m: Some(m),
            k: Some(k),
            n,
        };
        let dispatch = MmmDispatch::native();
        // AMX multiplies 64 bytes of K at a time: a shallower product pays for padding and
        // tile setup (measured: a 16-deep 1x1 convolution of EfficientNet at 2.3 GMAC/s on the
        // AMX 8x8 kernel); there the best of the other kernels does the work
        let shallow = (k < 64)
            .then(|| {
                let mut others: Vec<_> =
                    dispatch.suitable(&query).into_iter().filter(|s| !s.0.name().contains("amx")).collect();
                others.sort_by_key(|s| std::cmp::Reverse(s.0.mr() * s.0.nr()));
                others.into_iter().next()
            })
            .flatten();
        let (mmm, packing, extractor) = match shallow {
            Some(s) => s,
            None => dispatch.pick(&query).context("no i8 x i8 -> i32 product kernel on this core")?,
        };
        ensure!(extractor.is_none(), "the picked kernel needs a panel extractor");
        let w = Tensor::from_shape(&[m, k], w)?;
        let a = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
        Ok(PackedWeights { mmm, packing, a: Arc::new(a), m, k })
    }

    pub fn kernel_name(&self) -> &str {
        self.mmm.name()
    }

    /// `c[m, n] = w[m, k] · b[k, n]` where `b` is the im2col matrix of `x` (never materialised
    /// for the kernels whose packing this module writes itself).
    pub fn product(&self, x: &[u8], g: &Geometry, x0: u8, c: &mut Tensor) -> TractResult<()> {
        let (ho, wo) = g.out_hw();
        ensure!(g.cin * g.kh * g.kw == self.k, "product shapes do not agree");
        self.run(Activations::Im2col { x, g, x0 }, ho * wo, c, (0, 1))
    }

    /// `c[n, m] = Σ_k rows[n, k] · w[m, k]`: `rows` (`[n, k]`, i8) against the weights, stored
    /// transposed (row `n` of `c` holds the `m` outputs of input row `n`); `c` may have more
    /// rows than `n`, the rest left as they were.
    pub fn product_rows(&self, rows: &[i8], n: usize, c: &mut Tensor) -> TractResult<()> {
        ensure!(rows.len() == n * self.k, "product shapes do not agree");
        self.run(Activations::Rows(rows), n, c, (1, 0))
    }

    /// The product against `b`, `n` wide, into `c` whose axes `(m, n)` are `axes`.
    fn run(&self, b: Activations, n: usize, c: &mut Tensor, axes: (usize, usize)) -> TractResult<()> {
        // `c` may be larger than the product along n (a buffer reused for blocks of rows)
        ensure!(
            c.datum_type() == i32::datum_type()
                && c.rank() == 2
                && c.shape()[axes.0] == self.m
                && c.shape()[axes.1] >= n
                && axes.0 != axes.1,
            "product output shape"
        );
        let format = &self.mmm.packings()[self.packing].1;
        let mut blob = SCRATCH.lock().map_err(|_| anyhow::anyhow!("packing pool poisoned"))?.pop().unwrap_or_default();
        let (mut eager, mut other) = (None, None);
        let b: &dyn MMMInputValue = match format.downcast_ref::<PackedI8K4>() {
            Some(k4) => {
                let panel_bytes = match b {
                    Activations::Im2col { x, g, x0 } => pack_i8k4(k4, x, g, x0, &mut blob)?,
                    Activations::Rows(rows) => pack_rows_k4(k4, rows, n, self.k, &mut blob)?,
                };
                eager.insert(EagerPackedInput {
                    fact: PackedExoticFact { format: Box::new(k4.clone()), mn: n.to_dim(), k: self.k },
                    packed: Arc::new(blob),
                    panel_bytes,
                    mn: n,
                })
            }
            None => {
                let b = match b {
                    Activations::Im2col { x, g, x0 } => {
                        let mut b = Tensor::zero::<i8>(&[self.k, n])?;
                        {
                            let mut view = b.try_as_plain_ram_mut()?;
                            for (k, row) in view.as_slice_mut::<i8>()?.chunks_mut(n).enumerate() {
                                im2col_row(x, g, x0, k, row);
                            }
                        }
                        format.prepare_one(&b, 0, 1)?
                    }
                    Activations::Rows(rows) => format.prepare_one(&Tensor::from_shape(&[n, self.k], rows)?, 1, 0)?,
                };
                &**other.insert(b)
            }
        };
        #[allow(unsafe_code)]
        // SAFETY: `c` is an i32 tensor of `m` by at least `n` on the axes given (checked above)
        // that outlives the run, and the packed operands are in the layouts of this kernel's own
        // packing `self.packing`.
        unsafe {
            let store = self.mmm.c_view(Some(axes.0), Some(axes.1)).wrap(&c.view_mut());
            self.mmm.run(
                self.m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&**self.a),
                        b: AsInputValue::Borrowed(b),
                        packing: self.packing,
                    },
                    FusedSpec::Store(store),
                ],
            )?;
        }
        // the packed activations' buffer goes back to the pool for the next call
        if let Some(blob) = eager.and_then(|e| Arc::try_unwrap(e.packed).ok())
            && let Ok(mut pool) = SCRATCH.lock()
        {
            pool.push(blob);
        }
        Ok(())
    }
}

/// The right-hand operand of a product, before packing.
enum Activations<'a> {
    /// the im2col matrix of a u8 activation map, `[k, n]`
    Im2col { x: &'a [u8], g: &'a Geometry, x0: u8 },
    /// quantized rows, `[n, k]`
    Rows(&'a [i8]),
}

/// A buffer of at least `size` bytes (plus the slack AMX kernels read past the end), aligned
/// for `format`, reused when `blob` already is one.
fn packing_buffer(format: &PackedI8K4, size: usize, blob: &mut Blob) -> TractResult<()> {
    // AMX kernels step through K 64 bytes at a time: the last panel is read up to 60 rows past
    // its end (against zero weights), so that much slack must be mapped after it
    let slack = 64 * format.r;
    if blob.as_bytes().len() < size + slack || blob.layout().align() < format.align {
        *blob = Blob::from_bytes_alignment(&vec![0u8; size + slack], format.align)?;
    }
    Ok(())
}

/// `rows` (`[n, k]`, i8) packed into the K=4-interleaved layout: in each panel of `r` rows,
/// per block of 4 along `k`, the 4 bytes of every row together, which is a plain u32 read of
/// the row when `k` is a multiple of 4.
fn pack_rows_k4(format: &PackedI8K4, rows: &[i8], n: usize, k: usize, blob: &mut Blob) -> TractResult<usize> {
    let r = format.r;
    let blocks = k.div_ceil(4);
    let panel = blocks * r;
    let size = n.div_ceil(r) * panel * 4;
    packing_buffer(format, size, blob)?;
    let packed: &mut [u32] =
        bytemuck::try_cast_slice_mut(&mut blob.as_bytes_mut()[..size]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows: &[u8] = bytemuck::cast_slice(rows);
    for (p, dst) in packed.chunks_mut(panel).enumerate() {
        for (j, row) in rows.chunks(k).skip(p * r).take(r).enumerate() {
            let (whole, tail) = row.split_at(k / 4 * 4);
            for (kb, v) in whole.chunks_exact(4).enumerate() {
                dst[kb * r + j] = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            }
            if !tail.is_empty() {
                let mut v = [0u8; 4];
                v[..tail.len()].copy_from_slice(tail);
                dst[(blocks - 1) * r + j] = u32::from_le_bytes(v);
            }
        }
    }
    Ok(panel * 4)
}

/// Writes row `k` (input channel, kernel row, kernel column) of the im2col matrix of `x`
/// (u8, `[cin, h, w]`): for each output position, the input value under that tap, shifted
/// by −128; padding reads as the zero point `x0`, i.e. as a real 0.
pub fn im2col_row(x: &[u8], g: &Geometry, x0: u8, k: usize, dst: &mut [i8]) {
    let (ho, wo) = g.out_hw();
    let pad = (x0 ^ 0x80) as i8;
    let [pt, pl, ..] = g.pads;
    let (c, ky, kx) = (k / (g.kh * g.kw), k / g.kw % g.kh, k % g.kw);
    let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
    if g.is_pointwise() {
        for (d, &v) in dst.iter_mut().zip(plane) {
            *d = (v ^ 0x80) as i8;
        }
        return;
    }
    let s = g.stride.1;
    // the outputs whose input column ox·s + kx − pl lies inside the row
    let lo = pl.saturating_sub(kx).div_ceil(s).min(wo);
    let hi = (g.w + pl).saturating_sub(kx).div_ceil(s).clamp(lo, wo);
    for oy in 0..ho {
        let d = &mut dst[oy * wo..(oy + 1) * wo];
        let iy = (oy * g.stride.0 + ky) as isize - pt as isize;
        if iy < 0 || iy >= g.h as isize {
            d.fill(pad);
            continue;
        }
        let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
        d[..lo].fill(pad);
        d[hi..].fill(pad);
        let first = lo * s + kx - pl;
        if s == 1 {
            for (o, &v) in d[lo..hi].iter_mut().zip(&src[first..first + hi - lo]) {
                *o = (v ^ 0x80) as i8;
            }
        } else {
            for (o, &v) in d[lo..hi].iter_mut().zip(src[first..].iter().step_by(s)) {
                *o = (v ^ 0x80) as i8;
            }
        }
    }
}

/// The im2col matrix of `x`, packed straight into the K=4-interleaved layout of the VNNI and
/// AMX kernels: panels of `r` columns, each holding, per block of 4 rows, the 4 bytes of every
/// column together (rows past `k` zero). Four im2col rows are made at a time and interleaved
/// as one u32 per column, into `blob` (reused from call to call: a fresh multi-megabyte
/// buffer per call costs its page faults every time). tract-linalg's own packer for this
/// layout goes byte by byte with strided reads; through it, packing was most of a
/// convolution's time (measured on NanoDet: about 70 of 100 ms per inference).
fn pack_i8k4(format: &PackedI8K4, x: &[u8], g: &Geometry, x0: u8, blob: &mut Blob) -> TractResult<usize> {
    let (ho, wo) = g.out_hw();
    let (n, k, r) = (ho * wo, g.cin * g.kh * g.kw, format.r);
    let blocks = k.div_ceil(4);
    let panel = blocks * r; // in u32 words
    let size = n.div_ceil(r) * panel * 4;
    packing_buffer(format, size, blob)?;
    // what lies past `size`, and in the last panel's columns past `n`, may be left from an
    // earlier use: it only meets zero weights or feeds sums that are never stored
    let packed: &mut [u32] =
        bytemuck::try_cast_slice_mut(&mut blob.as_bytes_mut()[..size]).map_err(|e| anyhow::anyhow!("{e}"))?;
    // a plain 1×1 convolution's im2col rows are its input planes, read in place and shifted by
    // −128 as they are interleaved; other shapes gather 4 rows at a time into `rows`
    let pointwise = g.is_pointwise();
    let flip = if pointwise { 0x8080_8080 } else { 0 };
    SCRATCH_ROWS.with_borrow_mut(|rows| {
        if rows.len() < 4 * n {
            rows.resize(4 * n, 0);
        }
        for kb in 0..blocks {
            let four: [&[u8]; 4] = if pointwise {
                // a row past `k` meets zero weights: any plane will do
                [0, 1, 2, 3].map(|i| {
                    let c = (kb * 4 + i).min(k - 1);
                    &x[c * n..(c + 1) * n]
                })
            } else {
                for (i, row) in rows.chunks_mut(n).take(4).enumerate() {
                    if kb * 4 + i < k {
                        im2col_row(x, g, x0, kb * 4 + i, bytemuck::cast_slice_mut(row));
                    }
                }
                let (r0, rest) = rows.split_at(n);
                let (r1, rest) = rest.split_at(n);
                let (r2, rest) = rest.split_at(n);
                [r0, r1, r2, &rest[..n]]
            };
            for (p, dst) in packed.chunks_mut(panel).enumerate() {
                let n0 = p * r;
                let width = r.min(n - n0);
                let dst = &mut dst[kb * r..kb * r + width];
                let rows = four.map(|row| &row[n0..n0 + width]);
                match width {
                    16 => interleave::<16>(rows, dst, flip),
                    8 => interleave::<8>(rows, dst, flip),
                    _ => interleave_any(rows, dst, flip),
                }
            }
        }
    });
    Ok(panel * 4)
}

thread_local! {
    /// im2col rows for [`pack_i8k4`], kept from call to call
    static SCRATCH_ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[j] = [a[j], b[j], c[j], d[j]] ^ flip` as bytes; a fixed width lets the compiler turn
/// it into byte shuffles.
#[inline(always)]
fn interleave<const R: usize>(rows: [&[u8]; 4], dst: &mut [u32], flip: u32) {
    let (Ok(a), Ok(b), Ok(c), Ok(d)) = (
        <&[u8; R]>::try_from(rows[0]),
        <&[u8; R]>::try_from(rows[1]),
        <&[u8; R]>::try_from(rows[2]),
        <&[u8; R]>::try_from(rows[3]),
    ) else {
        return interleave_any(rows, dst, flip);
    };
    let Some(dst) = dst.first_chunk_mut::<R>() else { return };
    for j in 0..R {
        dst[j] = (a[j] as u32 | (b[j] as u32) << 8 | (c[j] as u32) << 16 | (d[j] as u32) << 24) ^ flip;
    }
}

fn interleave_any(rows: [&[u8]; 4], dst: &mut [u32], flip: u32) {
    for (j, d) in dst.iter_mut().enumerate() {
        *d = u32::from_le_bytes([rows[0][j], rows[1][j], rows[2][j], rows[3][j]]) ^ flip;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Straightforward reference: Σ (x - x0) · w over the window, padding contributing 0.
    pub(crate) fn reference(x: &[u8], g: &Geometry, x0: u8, w: &[i8], depthwise: bool) -> Vec<i32> {
        let (ho, wo) = g.out_hw();
        let mut out = vec![0; g.cout * ho * wo];
        for co in 0..g.cout {
            let cins: Vec<usize> = if depthwise { vec![co] } else { (0..g.cin).collect() };
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0;
                    for (ci_idx, &ci) in cins.iter().enumerate() {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride.0 + ky) as isize - g.pads[0] as isize;
                                let ix = (ox * g.stride.1 + kx) as isize - g.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[ci * g.h * g.w + iy as usize * g.w + ix as usize] as i32 - x0 as i32;
                                let per = if depthwise { g.kh * g.kw } else { g.cin * g.kh * g.kw };
                                let wi = co * per + ci_idx * g.kh * g.kw + ky * g.kw + kx;
                                s += xv * w[wi] as i32;
                            }
                        }
                    }
                    out[co * ho * wo + oy * wo + ox] = s;
                }
            }
        }
        out
    }

    pub(crate) fn data(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
            .collect()
    }

    pub(crate) fn geometries() -> Vec<Geometry> {
        let g = |cin, h, w, cout, k, s, pads| Geometry { cin, h, w, cout, kh: k, kw: k, stride: (s, s), pads };
        vec![
            g(3, 9, 11, 8, 3, 2, [1, 1, 1, 1]),
            g(16, 7, 7, 24, 1, 1, [0; 4]),
            g(5, 8, 6, 17, 3, 1, [1, 1, 1, 1]),
            g(4, 10, 9, 4, 5, 2, [1, 1, 2, 2]),
            g(6, 6, 6, 6, 3, 1, [0, 0, 1, 1]),
        ]
    }

    #[test]
    fn product_through_im2col_equals_the_direct_sum() -> TractResult<()> {
        for (i, g) in geometries().into_iter().enumerate() {
            let x = data(g.cin * g.h * g.w, i as u32);
            let w: Vec<i8> = data(g.cout * g.cin * g.kh * g.kw, 100 + i as u32).iter().map(|&v| v as i8).collect();
            let x0 = 3 + 40 * i as u8;
            let (ho, wo) = g.out_hw();
            let k = g.cin * g.kh * g.kw;
            let packed = PackedWeights::new(&w, g.cout, k, Some(ho * wo))?;
            let mut c = Tensor::zero::<i32>(&[g.cout, ho * wo])?;
            packed.product(&x, &g, x0, &mut c)?;
            // the −128 shift comes back as (128 - x0) · Σw per row
            let c = c.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
            let got: Vec<i32> = c
                .chunks(ho * wo)
                .enumerate()
                .flat_map(|(m, row)| {
                    let sum: i32 = w[m * k..(m + 1) * k].iter().map(|&v| v as i32).sum();
                    row.iter().map(move |&v| v + (128 - x0 as i32) * sum).collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(got, reference(&x, &g, x0, &w, false), "geometry {g:?} on {}", packed.kernel_name());
        }
        Ok(())
    }

    #[test]
    fn requantization_rounds_half_to_even_and_saturates() {
        let r = Requant { mul: vec![0.5], add: vec![1], y0: 10.0, alpha: None };
        let mut out = [0u8; 5];
        // (acc + 1) · 0.5 + 10 = 20.5 → 20, 21.5 → 22, −∞ → 0, +∞ → 255, 10.5 → 10
        r.channel(0, &[20, 22, -1000, 1000, 0], &mut out);
        assert_eq!(out, [20, 22, 0, 255, 10]);
        let leaky = Requant { alpha: Some(0.1), ..r };
        leaky.channel(0, &[-41, 19], &mut out[..2]);
        // (−40 · 0.5) · 0.1 + 10 = 8; 10 · 1 + 10 = 20
        assert_eq!(out[..2], [8, 20]);
    }
}
