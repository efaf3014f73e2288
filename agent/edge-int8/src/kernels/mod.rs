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

use multiversion::multiversion;
use tract_linalg::mmm::{AsInputValue, EagerPackedInput, FusedSpec, MMMInputValue, MatMatMul, PackedExoticFact};
use tract_linalg::pack::PackedI8K4;

use anyhow::ensure;
use tract_onnx::prelude::*;

use super::pack::{im2col_row, pack_i8k4, pack_rows_k4, pack_tap_major};
use super::tune::{candidates, pick};

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
        let (hp, wp) = self.padded_hw();
        ((hp - self.kh) / self.stride.0 + 1, (wp - self.kw) / self.stride.1 + 1)
    }

    /// The input's height and width with their padding.
    pub fn padded_hw(&self) -> (usize, usize) {
        let [pt, pl, pb, pr] = self.pads;
        (self.h + pt + pb, self.w + pl + pr)
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
pub const ROUND: f32 = 12_582_912.0;

/// `v` clamped to [0, 255] and rounded half to even (see [`ROUND`]); NaN gives 0. Every u8
/// result of the integer paths comes out through here.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max/min vectorise, and send NaN to 0 where clamp keeps it
pub fn saturate_u8(v: f32) -> u8 {
    (v.max(0.0).min(255.0) + ROUND).to_bits() as u8
}

impl Requant {
    /// Requantizes the sums of output channel `c` into `out`: exact i32 sums of a product,
    /// or exact integer f32 sums of the depthwise loop.
    #[inline]
    pub fn channel<T: Sum>(&self, c: usize, acc: &[T], out: &mut [u8]) {
        let mul = self.mul[c];
        // (acc + add) · mul, with add folded into a float offset (exact enough: |add·mul| is a
        // few hundred at most, far inside f32's 24 bits)
        requantize(acc, mul, self.add[c] as f32 * mul, self.y0, self.alpha, out);
    }
}

/// An exact sum the requantization reads: i32 or an integer-valued f32.
pub trait Sum: Copy + Send + Sync {
    fn as_f32(self) -> f32;
}

impl Sum for i32 {
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self as f32
    }
}

impl Sum for f32 {
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self
    }
}

/// `out = saturate(act(acc · mul + offset) + y0)`, compiled for AVX-512, AVX2 and NEON
/// and picked at run time (measured: a tenth of EfficientNet's int8 time in SSE2). Plain
/// max/min (not clamp, not a branch), and reading the rounded value out of the float's low
/// mantissa bits instead of a saturating float-to-int cast, keep the loop vectorised
/// (measured: 1.6 ns per value with a cast).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn requantize<T: Sum>(acc: &[T], mul: f32, offset: f32, y0: f32, alpha: Option<f32>, out: &mut [u8]) {
    match alpha {
        None => {
            let offset = offset + y0;
            for (o, &a) in out.iter_mut().zip(acc) {
                *o = saturate_u8(a.as_f32() * mul + offset);
            }
        }
        Some(alpha) => {
            for (o, &a) in out.iter_mut().zip(acc) {
                let s = a.as_f32() * mul + offset;
                // LeakyReLU with 0 < alpha < 1: the larger of s and alpha·s
                *o = saturate_u8(s.max(s * alpha) + y0);
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
    /// a convolution's K axis ordered tap by tap, channels within (see [`PackedWeights::conv`])
    tap_major: bool,
}

/// About how many bytes of i32 sums a blocked product computes at once (see
/// [`PackedWeights::block`]): a part of a core's L2, which is 256 KB to 2 MB on the cores this
/// runs on.
const BLOCK_BYTES: usize = 192 << 10;

/// Buffers for packed activations, shared by every convolution: one per inference running at
/// that moment, kept warm in cache from one layer to the next.
static SCRATCH: Mutex<Vec<Blob>> = Mutex::new(Vec::new());

/// Takes from `pool` (a process-wide pool of reused buffers) one that `fits`, if it holds one.
pub(crate) fn take_pooled<T>(pool: &Mutex<Vec<T>>, fits: impl Fn(&T) -> bool) -> TractResult<Option<T>> {
    let mut pool = pool.lock().map_err(|_| anyhow::anyhow!("buffer pool poisoned"))?;
    Ok(pool.iter().position(fits).map(|i| pool.swap_remove(i)))
}

/// Returns a buffer taken with [`take_pooled`] (a poisoned pool just lets it go).
pub(crate) fn give_back<T>(pool: &Mutex<Vec<T>>, buffer: T) {
    if let Ok(mut pool) = pool.lock() {
        pool.push(buffer);
    }
}

/// Packed matmul weights of the plans alive, by a hash of the weights and how they are packed.
#[allow(clippy::type_complexity)]
static PACKED: Mutex<Vec<(u64, std::sync::Weak<Box<dyn MMMInputValue>>)>> = Mutex::new(Vec::new());

impl PackedWeights {
    /// `w`, the `[m, k]` i8 weight matrix, packed from the tensor itself (copying it first,
    /// Whisper's 20 MB output projection was copied three times while loading); `n` is the
    /// product's width when known, which the kernel choice uses (a wide tile only pays on
    /// wide products). Weights already packed the same way for a plan still alive are shared,
    /// not packed again: each of Whisper's encoder windows is its own plan of the same
    /// weights. They are found by a 64-bit hash of the weights, their shape and the packing.
    pub fn from_tensor(w: &Tensor, n: Option<usize>) -> TractResult<PackedWeights> {
        ensure!(w.datum_type() == i8::datum_type() && w.rank() == 2, "2-D i8 weights expected");
        let (m, k) = (w.shape()[0], w.shape()[1]);
        let (mmm, packing) = pick(m, k, n)?;
        let bytes = w.try_as_plain_ram()?.as_slice::<i8>()?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (bytes, m, k, mmm.name(), packing).hash(&mut h);
            h.finish()
        };
        let mut shared = PACKED.lock().map_err(|_| anyhow::anyhow!("packed weights cache poisoned"))?;
        shared.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(a) = shared.iter().filter(|(h, _)| *h == hash).find_map(|(_, weak)| weak.upgrade()) {
            return Ok(PackedWeights { mmm, packing, a, m, k, tap_major: false });
        }
        let a = Arc::new(mmm.packings()[packing].0.prepare_one(w, 1, 0)?);
        shared.push((hash, Arc::downgrade(&a)));
        Ok(PackedWeights { mmm, packing, a, m, k, tap_major: false })
    }

    /// `w` (`[m, k]`) packed for the given kernel and packing.
    pub(crate) fn with_kernel(
        w: &[i8],
        m: usize,
        k: usize,
        mmm: Box<dyn MatMatMul>,
        packing: usize,
    ) -> TractResult<PackedWeights> {
        let w = Tensor::from_shape(&[m, k], w)?;
        let a = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
        Ok(PackedWeights { mmm, packing, a: Arc::new(a), m, k, tap_major: false })
    }

    /// The weights `[cout, cin, kh, kw]` of a convolution of geometry `g`. Where the kernel
    /// takes K=4-interleaved panels, a convolution other than a plain 1×1 has its K axis
    /// reordered tap-major (`[cout, kh, kw, cin4]`, the channels rounded up to a multiple of 4
    /// with zero weights) so that [`pack_tap_major`] can fill the panels from a copy of the input,
    /// 4 channels to a word (measured: im2col rows then interleaving were two fifths of
    /// NanoDet's time; for the 3-channel first layers, im2col rows were 4 % of NanoDet).
    ///
    /// Where the core has two kinds of kernel for the product (AMX and AVX-512 VNNI), the
    /// weights are packed for both and the one that runs this layer faster is kept
    /// ([`super::tune`]): neither wins everywhere (measured on NanoDet: AMX 10 % faster on its
    /// 128-channel 3×3 layers, VNNI 40 % faster on its 32-channel ones).
    pub fn conv(w: &[i8], g: &Geometry, n: Option<usize>) -> TractResult<PackedWeights> {
        super::tune::fastest(Self::conv_options(w, g, n)?, g)
    }

    /// The weights of [`PackedWeights::conv`] packed for each candidate kernel.
    fn conv_options(w: &[i8], g: &Geometry, n: Option<usize>) -> TractResult<Vec<PackedWeights>> {
        let (m, taps) = (g.cout, g.kh * g.kw);
        let k = g.cin * taps;
        ensure!(w.len() == m * k, "convolution weights of {} values, expected {}", w.len(), m * k);
        let w = Tensor::from_shape(&[m, g.cin, taps], w)?;
        let (mmm, packing) = pick(m, k, n)?;
        let k4 = mmm.packings()[packing].1.downcast_ref::<PackedI8K4>().is_some();
        Ok(if !k4 || g.is_pointwise() {
            let w = w.into_shape(&[m, k])?;
            candidates(m, k, n, !k4)?
                .into_iter()
                .map(|(mmm, packing)| {
                    let a = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
                    Ok(PackedWeights { mmm, packing, a: Arc::new(a), m, k, tap_major: false })
                })
                .collect::<TractResult<Vec<_>>>()?
        } else {
            let cin4 = g.cin.next_multiple_of(4);
            let mut padded = Tensor::zero::<i8>(&[m, cin4, taps])?;
            padded.assign_slice(0..g.cin, &w, 0..g.cin, 1)?;
            let k = cin4 * taps;
            let w = padded.permute_axes(&[0, 2, 1])?.into_shape(&[m, k])?;
            // the deeper product may take other kernels; each must take K=4 panels
            candidates(m, k, n, false)?
                .into_iter()
                .map(|(mmm, packing)| {
                    let a = mmm.packings()[packing].0.prepare_one(&w, 1, 0)?;
                    Ok(PackedWeights { mmm, packing, a: Arc::new(a), m, k, tap_major: true })
                })
                .collect::<TractResult<Vec<_>>>()?
        })
    }

    /// Whether `other` holds these very packed weights (a clone of them), not just equal ones.
    pub fn same_weights(&self, other: &PackedWeights) -> bool {
        Arc::ptr_eq(&self.a, &other.a)
    }

    pub fn kernel_name(&self) -> &str {
        self.mmm.name()
    }

    /// `c[m, n] = w[m, k] · b[k, n]` where `b` is the im2col matrix of `x` (never materialised
    /// for the kernels whose packing this module writes itself).
    pub fn product(&self, x: &[u8], g: &Geometry, x0: u8, c: &mut Tensor) -> TractResult<()> {
        let (ho, wo) = g.out_hw();
        self.product_columns(x, g, x0, 0..ho * wo, c)
    }

    /// [`PackedWeights::product`] for the output columns `cols` only, stored from column 0 of
    /// `c`. Any range for a plain 1×1 convolution on a K=4 kernel, the whole width otherwise
    /// (see [`PackedWeights::block`]).
    pub fn product_columns(
        &self,
        x: &[u8],
        g: &Geometry,
        x0: u8,
        cols: std::ops::Range<usize>,
        c: &mut Tensor,
    ) -> TractResult<()> {
        let (ho, wo) = g.out_hw();
        let cin = if self.tap_major { g.cin.next_multiple_of(4) } else { g.cin };
        ensure!(cin * g.kh * g.kw == self.k, "product shapes do not agree");
        ensure!(
            cols.start < cols.end && cols.end <= ho * wo && (cols.len() == ho * wo || self.blocks(g)),
            "columns {cols:?} of a product {} wide",
            ho * wo
        );
        let n = cols.len();
        self.run(Activations::Im2col { x, g, x0, cols }, n, c, (0, 1))
    }

    /// How many output columns of a convolution of geometry `g` to compute at once: for a
    /// plain 1×1 convolution on a K=4 kernel, enough for about [`BLOCK_BYTES`] of i32 sums, so
    /// that they are still in cache when they are requantized, and the packed block of the
    /// input too when the kernel reads it; the whole width otherwise.
    pub fn block(&self, g: &Geometry) -> usize {
        let (ho, wo) = g.out_hw();
        let n = ho * wo;
        match self.k4() {
            Some(k4) if g.is_pointwise() => (BLOCK_BYTES / (4 * self.m)).max(16 * k4.r).next_multiple_of(k4.r).min(n),
            _ => n,
        }
    }

    /// Whether a product of geometry `g` can be computed a block of columns at a time.
    fn blocks(&self, g: &Geometry) -> bool {
        g.is_pointwise() && self.k4().is_some()
    }

    /// The K=4-interleaved panel format of this kernel's activations, if it takes that one.
    fn k4(&self) -> Option<&PackedI8K4> {
        self.mmm.packings()[self.packing].1.downcast_ref::<PackedI8K4>()
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
        let b: &dyn MMMInputValue = match self.k4() {
            Some(k4) => {
                let panel_bytes = match b {
                    Activations::Im2col { x, g, x0, .. } if self.tap_major => pack_tap_major(k4, x, g, x0, &mut blob)?,
                    Activations::Im2col { x, g, cols, .. } => pack_i8k4(k4, x, g, cols, &mut blob)?,
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
                    Activations::Im2col { x, g, x0, .. } => {
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
    /// the im2col matrix of a u8 activation map, `[k, n]`, its columns `cols` only (all of
    /// them but for [`PackedWeights::block`]'s case)
    Im2col { x: &'a [u8], g: &'a Geometry, x0: u8, cols: std::ops::Range<usize> },
    /// quantized rows, `[n, k]`
    Rows(&'a [i8]),
}

#[cfg(test)]
pub(super) mod tests;
