//! Plain 1×1 convolutions on AVX-512 VNNI with the requantization in the kernel: owns the
//! weights' layout for it ([`Pointwise`]), the input's quad planes and the register tiles.
//!
//! tract-linalg's kernels store i32 sums that a second pass reads back and requantizes, and
//! take the activations as `x − 128` in panels of 16 columns. Here the u8 activations go into
//! `vpdpbusd` as they are (u8 × i8 is what it multiplies), four channels of a pixel to a word
//! in a plain `[k/4, n]` plane, and each tile of 6 output channels × 64 columns is requantized
//! in registers and stored as bytes into the NCHW output: no plane of sums, no tile copies.
//! The arithmetic is the same as the general path's, operation for operation (the sums are
//! exact; the requantization is the multiply, add, clamp and rounding of
//! [`super::kernels::saturate_u8`]), so both give the same bytes; a test checks that.

use super::kernels::{Geometry, Requant};

/// Output channels of a register tile.
const MR: usize = 6;
/// Columns of a register tile: four registers of sixteen.
const NR: usize = 64;
/// About how many bytes of quad planes are made and used at once (a part of L2).
const CHUNK_BYTES: usize = 96 << 10;

/// The weights of a 1×1 convolution laid out for [`Pointwise::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise {
    m: usize,
    k: usize,
    /// four weights of a row to a word, zeros past `k`; per tile of [`MR`] rows (fewer in the
    /// last), `[k/4, rows]`, the tile of rows from `r0` starting at `r0 · k/4`
    words: Vec<i32>,
    /// per output channel: `−128 · Σw`, so that the sums are those of `x − 128` as the
    /// requantization of the general path expects
    start: Vec<i32>,
}

/// The CPU features [`Pointwise`] needs.
pub(super) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Pointwise {
    /// The `[m, k]` weights of a plain 1×1 convolution; `None` where the core lacks AVX-512
    /// VNNI or the convolution is not a plain 1×1.
    pub fn new(w: &[i8], g: &Geometry) -> Option<Pointwise> {
        (supported() && g.is_pointwise() && w.len() == g.cout * g.cin).then(|| Pointwise::build(w, g.cout, g.cin))
    }

    fn build(w: &[i8], m: usize, k: usize) -> Pointwise {
        let kb = k.div_ceil(4);
        let word = |r: usize, b: usize| {
            let mut bytes = [0u8; 4];
            for (i, d) in bytes.iter_mut().enumerate() {
                if 4 * b + i < k {
                    *d = w[r * k + 4 * b + i] as u8;
                }
            }
            i32::from_le_bytes(bytes)
        };
        // each tile's rows interleaved: [k/4, rows] from row r0 on, at r0 · k/4
        let mut words = Vec::with_capacity(m * kb);
        for r0 in (0..m).step_by(MR) {
            let rows = r0..(r0 + MR).min(m);
            for b in 0..kb {
                words.extend(rows.clone().map(|r| word(r, b)));
            }
        }
        let start = w.chunks_exact(k).map(|row| -128 * row.iter().map(|&v| v as i32).sum::<i32>()).collect();
        Pointwise { m, k, words, start }
    }

    /// `out` (`[m, n]`, u8) = `rq` applied to the sums of `(x − 128) · w` over the input planes
    /// `x` (`[k, n]`, u8); the output channels of `rq` are those of the weights. With several
    /// threads for the pipeline, each takes a block of output channels.
    pub fn run(&self, x: &[u8], n: usize, rq: &Requant, out: &mut [u8]) {
        debug_assert!(x.len() == self.k * n && out.len() == self.m * n);
        match tract_linalg::multithread::current_tract_executor() {
            tract_linalg::multithread::Executor::MultiThread(pool) if self.m >= 2 * MR => {
                // the quad planes made once, whole, then read by every thread
                let width = n.next_multiple_of(NR);
                let mut quads = vec![0u32; self.k.div_ceil(4) * width];
                self.quads(x, n, 0..n, width, &mut quads);
                let block = self.m.div_ceil(pool.current_num_threads()).next_multiple_of(MR);
                let quads = &quads;
                pool.scope(|scope| {
                    for (i, out) in out.chunks_mut(block * n).enumerate() {
                        let rows = i * block..(i * block + block).min(self.m);
                        scope.spawn(move |_| self.tiles(quads, width, rq, (n, 0..n), rows, out));
                    }
                });
            }
            _ => QUADS.with_borrow_mut(|quads| {
                let kb = self.k.div_ceil(4);
                // columns per chunk: whole tiles, the chunk's quad planes about CHUNK_BYTES
                let chunk = (CHUNK_BYTES / (4 * kb)).next_multiple_of(NR).max(NR);
                for j0 in (0..n).step_by(chunk) {
                    let cols = j0..(j0 + chunk).min(n);
                    // the planes padded to whole tiles; what lies past `n` is never stored
                    let width = cols.len().next_multiple_of(NR);
                    if quads.len() < kb * width {
                        quads.resize(kb * width, 0);
                    }
                    self.quads(x, n, cols.clone(), width, quads);
                    self.tiles(&quads[..kb * width], width, rq, (n, cols), 0..self.m, out);
                }
            }),
        }
    }

    /// Columns `cols` of the input planes `x` (`[k, n]`) as quad planes in `quads`
    /// (`[k/4, width]`): four channels of a pixel to a word.
    fn quads(&self, x: &[u8], n: usize, cols: std::ops::Range<usize>, width: usize, quads: &mut [u32]) {
        for (b, plane) in quads.chunks_exact_mut(width).take(self.k.div_ceil(4)).enumerate() {
            // a channel past `k` meets zero weights: any plane will do
            let four = [0, 1, 2, 3].map(|i| {
                let c = (4 * b + i).min(self.k - 1);
                &x[c * n + cols.start..c * n + cols.end]
            });
            super::pack::interleave_row(four, &mut plane[..cols.len()], 0);
        }
    }

    /// The output channels `rows` (whose outputs `out` holds, `[rows, n]`) for the columns
    /// `cols`, from their quad planes.
    fn tiles(
        &self,
        quads: &[u32],
        width: usize,
        rq: &Requant,
        cols: (usize, std::ops::Range<usize>),
        rows: std::ops::Range<usize>,
        out: &mut [u8],
    ) {
        if supported() {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked on the line above), all that
            // `tiles` is compiled for.
            unsafe {
                tiles(self, quads, width, rq, cols, rows, out)
            };
        }
    }
}

thread_local! {
    /// One thread's quad planes, reused from call to call.
    static QUADS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every tile of the columns `cols` (of `n`) and the output channels `rows`: the quad planes
/// `quads` (`[k/4, width]`, column 0 being `cols.start`) against every group of [`MR`] weight
/// rows, into `out` (the outputs of `rows`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tiles(
    p: &Pointwise,
    quads: &[u32],
    width: usize,
    rq: &Requant,
    (n, cols): (usize, std::ops::Range<usize>),
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let kb = p.k.div_ceil(4);
    // the sizes `Pointwise::run` gives: every read of a tile lies inside its buffer (a read
    // that did not would leave the tile unwritten)
    debug_assert!(width.is_multiple_of(NR) && cols.len() <= width && quads.len() >= kb * width);
    debug_assert!(p.words.len() == p.m * kb && out.len() >= rows.len() * n);
    for j in (0..cols.len()).step_by(NR) {
        let stored = (cols.len() - j).min(NR);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let count = (rows.end - r0).min(MR);
            let tile = Tile { p, quads, width, kb, j, rq, r0, first: rows.start, at: cols.start + j, stored, n };
            match count {
                6 => tile.run::<6>(out),
                5 => tile.run::<5>(out),
                4 => tile.run::<4>(out),
                3 => tile.run::<3>(out),
                2 => tile.run::<2>(out),
                _ => tile.run::<1>(out),
            }
            r0 += count;
        }
    }
}

/// Never called: [`Pointwise::new`] gives `None` off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code)]
unsafe fn tiles(
    _: &Pointwise,
    _: &[u32],
    _: usize,
    _: &Requant,
    _: (usize, std::ops::Range<usize>),
    _: std::ops::Range<usize>,
    _: &mut [u8],
) {
}

/// One register tile: rows `r0..r0 + R` of the weights, columns `j..j + NR` of the quad
/// planes, stored at column `at` of the output (its first `stored` columns), whose rows start
/// at output channel `first`.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    p: &'a Pointwise,
    quads: &'a [u32],
    width: usize,
    kb: usize,
    j: usize,
    rq: &'a Requant,
    r0: usize,
    first: usize,
    at: usize,
    stored: usize,
    n: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn run<const R: usize>(&self, out: &mut [u8]) {
        use std::arch::x86_64::*;
        let Tile { p, quads, width, kb, j, rq, r0, first, at, stored, n } = *self;
        let mut acc = [[_mm512_setzero_si512(); NR / 16]; R];
        for r in 0..R {
            acc[r] = [_mm512_set1_epi32(p.start[r0 + r]); NR / 16];
        }
        // no closures here: they would not be compiled for this function's features
        let words = &p.words[r0 * kb..(r0 + R) * kb];
        for b in 0..kb {
            let (Some(x), Some(w)) = (
                quads.get(b * width + j..).and_then(|q| q.first_chunk::<NR>()),
                words.get(b * R..).and_then(|w| w.first_chunk::<R>()),
            ) else {
                return;
            };
            let x = bytemuck::cast::<[u32; NR], [__m512i; NR / 16]>(*x);
            for r in 0..R {
                let w = _mm512_set1_epi32(w[r]);
                for q in 0..NR / 16 {
                    acc[r][q] = _mm512_dpbusd_epi32(acc[r][q], x[q], w);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let c = r0 + r;
            let mut bytes = [0u8; NR];
            for (q, &a) in acc.iter().enumerate() {
                bytes[16 * q..16 * q + 16].copy_from_slice(&requantize16(a, rq, c));
            }
            let row = (c - first) * n + at;
            // a whole tile as one fixed-size store (a copy of `stored` bytes is a call)
            match out.get_mut(row..row + NR).and_then(|o| o.first_chunk_mut::<NR>()) {
                Some(o) if stored == NR => *o = bytes,
                _ => {
                    for (o, &b) in out[row..row + stored].iter_mut().zip(&bytes) {
                        *o = b;
                    }
                }
            }
        }
    }
}

/// Sixteen sums of output channel `c` requantized in a register exactly as
/// `Requant::channel` does: `acc · mul + add · mul`, the LeakyReLU, `+ y0`, clamped to
/// [0, 255] (NaN to 0) and rounded half to even by adding 1.5 · 2^23.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) fn requantize16(acc: std::arch::x86_64::__m512i, rq: &Requant, c: usize) -> [u8; 16] {
    use std::arch::x86_64::*;
    let mul = rq.mul[c];
    let offset = rq.add[c] as f32 * mul;
    let s = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(mul));
    let v = match rq.alpha {
        None => _mm512_add_ps(s, _mm512_set1_ps(offset + rq.y0)),
        Some(alpha) => {
            let s = _mm512_add_ps(s, _mm512_set1_ps(offset));
            _mm512_add_ps(_mm512_max_ps(s, _mm512_mul_ps(s, _mm512_set1_ps(alpha))), _mm512_set1_ps(rq.y0))
        }
    };
    // max(v, 0) gives 0 for NaN, as f32::max does
    let v = _mm512_add_ps(
        _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.0)),
        _mm512_set1_ps(super::kernels::ROUND),
    );
    bytemuck::cast(_mm512_cvtepi32_epi8(_mm512_castps_si512(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::PackedWeights;
    use crate::kernels::tests::data;
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    use tract_onnx::prelude::*;

    /// The general path: the product on tract-linalg's kernel, then the requantization pass.
    fn general(x: &[u8], w: &[i8], g: &Geometry, x0: u8, rq: &Requant) -> TractResult<Vec<u8>> {
        let n = g.h * g.w;
        let mut acc = Tensor::zero::<i32>(&[g.cout, n])?;
        PackedWeights::conv(w, g, Some(n))?.product(x, g, x0, &mut acc)?;
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        let mut out = vec![0u8; g.cout * n];
        for c in 0..g.cout {
            rq.channel(c, &acc[c * n..(c + 1) * n], &mut out[c * n..(c + 1) * n]);
        }
        Ok(out)
    }

    #[test]
    fn the_fused_kernel_gives_the_general_paths_bytes() -> TractResult<()> {
        let mut checked = 0;
        // rows and columns off the tile sizes, channels off a multiple of 4, several chunks
        for (i, (cin, h, w, cout)) in
            [(19, 9, 13, 40), (16, 7, 7, 24), (3, 1, 200, 7), (96, 40, 60, 13)].into_iter().enumerate()
        {
            let g = Geometry { cin, h, w, cout, kh: 1, kw: 1, stride: (1, 1), pads: [0; 4] };
            let n = h * w;
            let x = data(cin * n, 11 + i as u32);
            let wv: Vec<i8> = data(cout * cin, 21 + i as u32).iter().map(|&v| v as i8).collect();
            let Some(fused) = Pointwise::new(&wv, &g) else { continue };
            for alpha in [None, Some(0.1)] {
                let rq = Requant {
                    mul: (0..cout).map(|c| 0.002 + c as f32 * 1e-4).collect(),
                    add: (0..cout).map(|c| c as i32 * 37 - 500).collect(),
                    y0: 90.0,
                    alpha,
                };
                let x0 = 128; // the general path folds (128 − x0)·Σw into `add`: 0 here
                let expected = general(&x, &wv, &g, x0, &rq)?;
                let mut out = vec![0u8; cout * n];
                fused.run(&x, n, &rq, &mut out);
                assert_eq!(out, expected, "{g:?}, alpha {alpha:?}");
                // a pipeline with two threads: a block of output channels each
                let mut two = vec![0u8; cout * n];
                multithread_tract_scope(Executor::multithread(2), || fused.run(&x, n, &rq, &mut two));
                assert_eq!(two, expected, "{g:?} on two threads");
                assert!(out.iter().any(|&v| v != out[0]), "outputs that cannot tell a wrong answer");
                checked += 1;
            }
        }
        eprintln!("{checked} geometries compared (none without AVX-512 VNNI)");
        Ok(())
    }
}
