//! The depthwise convolution of a u8 activation map (one filter per channel): each channel's
//! plane summed exactly in f32, in place of the NCHW layout the graph has, and requantized
//! straight to u8; channels split across a pipeline's threads.

use multiversion::multiversion;

use super::depthwise_vnni::Quads;
use super::kernels::{Geometry, Requant, Sum};

/// A depthwise filter bank `[c, kh, kw]` as [`depthwise`] takes it: f32 multipliers for the
/// loop below, and regrouped in fours where the core has AVX-512 VNNI
/// ([`super::depthwise_vnni`]; measured on EfficientNet-Lite0 on a Zen 4 core, its depthwise
/// layers went from 1.46 to about 1.0 ms of its 4.3 ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    taps: Vec<f32>,
    quads: Option<Quads>,
}

impl Filters {
    /// The filters of a depthwise convolution of geometry `g` on an input of zero point `x0`.
    pub fn new(w: &[i8], g: &Geometry, x0: u8) -> Filters {
        Filters { taps: w.iter().map(|&v| v as f32).collect(), quads: Quads::new(w, g, x0) }
    }

    /// The same filters for the f32 loop only (to test it where the core has VNNI).
    #[cfg(test)]
    fn f32_only(w: &[i8]) -> Filters {
        Filters { taps: w.iter().map(|&v| v as f32).collect(), quads: None }
    }

    /// Which loop runs.
    pub fn kind(&self) -> &'static str {
        match self.quads {
            Some(_) => "depthwise avx512vnni",
            // NEON is part of every aarch64 core, so the multiversioned loops always take it
            None if cfg!(target_arch = "aarch64") => "depthwise f32 neon",
            None => "depthwise f32",
        }
    }
}

/// Depthwise convolution (one filter per channel) of `x` (u8, `[c, h, w]`): the sums of
/// `(x - x0) · w`, requantized by `rq` into `out` (`[c, ho·wo]`). `x0` and `g` must be those
/// `filters` were made for.
///
/// Channel by channel, in the planar layout the graph already has (measured: transposing to
/// channels-last and back was a third of EfficientNet's depthwise time). A strided
/// convolution reads its input split into `sy·sx` phases (even and odd rows and columns for
/// stride 2), so that every tap, at any stride, is one contiguous run of the same length
/// through one phase: the whole plane is then `taps` multiply-adds of long vectors. The
/// arithmetic is f32, which is exact here: every product is below 2^15 and every sum below
/// 2^24 (at most 512 taps; checked at load).
pub fn depthwise(x: &[u8], g: &Geometry, x0: u8, filters: &Filters, rq: &Requant, out: &mut [u8]) {
    debug_assert!(g.kh * g.kw * 255 * 128 < 1 << 24, "depthwise sums must stay exact in f32 (checked at load)");
    let phases = Phases::new(g);
    let taps = &filters.taps[..];
    let run = |x: &[u8], channels: std::ops::Range<usize>, out: &mut [u8]| match &filters.quads {
        Some(quads) => quads.channels(x, rq, channels, out),
        None => phases.channels(x, x0, taps, rq, channels, out),
    };
    let (c, plane) = (g.cin, g.h * g.w);
    let (ho, wo) = g.out_hw();
    match tract_linalg::multithread::current_tract_executor() {
        // several threads for this pipeline: each takes a block of channels (whole output
        // planes, so the blocks of `out` are disjoint)
        tract_linalg::multithread::Executor::MultiThread(pool) if c >= 32 => {
            let block = c.div_ceil(pool.current_num_threads()).max(8);
            let run = &run;
            pool.scope(|scope| {
                for (i, out) in out.chunks_mut(block * ho * wo).enumerate() {
                    let channels = i * block..(i * block + block).min(c);
                    let x = &x[channels.start * plane..channels.end * plane];
                    scope.spawn(move |_| run(x, channels, out));
                }
            });
        }
        _ => run(x, 0..c, out),
    }
}

thread_local! {
    /// One thread's phases, sums and requantized sums, reused from call to call (a fresh
    /// buffer costs its page faults every time).
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch::new()) };
}

/// The f32 loop's buffers, one set per thread: its phases, a line (a row in f32), the sums
/// and the requantized sums of one channel.
struct Scratch {
    phases: Vec<f32>,
    line: Vec<f32>,
    sums: Vec<f32>,
    bytes: Vec<u8>,
}

impl Scratch {
    const fn new() -> Self {
        Scratch { phases: Vec::new(), line: Vec::new(), sums: Vec::new(), bytes: Vec::new() }
    }
}

/// Requantizes one channel's sums (rows `wq` apart) into `out` (rows `wo` long): rows of
/// [`WIDE`] outputs or more in place, one call per row; shorter ones in one pass over the
/// whole run into `bytes` (measured: a call per output row was most of the requantization in
/// the 7 and 14 wide layers), then each output row copied from the first `wo` of its `wq`.
/// `bytes` is the run's length.
fn store<T: Sum>(rq: &Requant, ch: usize, sums: &[T], (wq, wo): (usize, usize), bytes: &mut [u8], out: &mut [u8]) {
    if wo >= WIDE {
        for (o, s) in out.chunks_exact_mut(wo).zip(sums.chunks(wq)) {
            rq.channel(ch, &s[..wo], o);
        }
        return;
    }
    let run = bytes.len();
    rq.channel(ch, &sums[..run], bytes);
    copy_rows(bytes, (wq, wo), out);
}

/// Each output row of `out` (`wo` long) from the first `wo` of its `wq` in `bytes`, without a
/// `memcpy` call per short row (measured: a call per row of 7 to 28 bytes was 6 % of
/// EfficientNet-Lite0's int8 time).
pub(super) fn copy_rows(bytes: &[u8], (wq, wo): (usize, usize), out: &mut [u8]) {
    for (o, b) in out.chunks_exact_mut(wo.max(1)).zip(bytes.chunks(wq.max(1))) {
        copy_short(o, &b[..wo]);
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small planes without a `memcpy` call: whole
/// copies of 16, 8 or 4 bytes, the last one ending where the row ends (over part of the one
/// before), nothing written outside `dst`; longer rows by `copy_from_slice`. Inlined, to be
/// compiled for its caller's features.
#[inline(always)]
pub(super) fn copy_short(dst: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn chunks<const K: usize>(dst: &mut [u8], src: &[u8]) {
        let n = dst.len().min(src.len());
        let mut j = 0;
        loop {
            // the last chunk ends at `n` (and so starts at or before `j`)
            let at = j.min(n - K);
            if let (Some(d), Some(s)) = (dst[at..].first_chunk_mut::<K>(), src[at..].first_chunk::<K>()) {
                *d = *s;
            }
            if at + K >= n {
                break;
            }
            j += K;
        }
    }
    match dst.len().min(src.len()) {
        0..4 => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s),
        4..8 => chunks::<4>(dst, src),
        8..16 => chunks::<8>(dst, src),
        16..=64 => chunks::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Where a convolution of geometry `g` reads: its padded input split by stride phase.
///
/// Phase `(py, px)` holds the padded input's rows `py, py + sy, …` and columns `px, px + sx,
/// …` as a `hq × wq` plane. Output `(oy, ox)`'s tap `(ky, kx)` is then phase
/// `(ky % sy, kx % sx)` at `(oy + ky / sy, ox + kx / sx)`; computed for `ox` up to `wq` (the
/// columns past `wo` are discarded), the outputs of a plane are one run `ho·wq` long and each
/// tap reads one run of the same length.
struct Phases {
    g: Geometry,
    wq: usize,
    /// one phase's length: `hq·wq` and zeros the last runs read past the end
    len: usize,
    /// where each tap's run starts in the phases
    reads: Vec<usize>,
}

impl Phases {
    fn new(g: &Geometry) -> Phases {
        let (sy, sx) = g.stride;
        let (hp, wp) = g.padded_hw();
        let (hq, wq) = (hp.div_ceil(sy), wp.div_ceil(sx));
        let len = hq * wq + g.kw / sx + 1;
        let reads = (0..g.kh * g.kw)
            .map(|t| {
                let (ky, kx) = (t / g.kw, t % g.kw);
                ((ky % sy) * sx + kx % sx) * len + (ky / sy) * wq + kx / sx
            })
            .collect();
        Phases { g: *g, wq, len, reads }
    }

    /// Convolves the planes of `channels` (`x` holds those planes only) into `out`.
    fn channels(&self, x: &[u8], x0: u8, taps: &[f32], rq: &Requant, channels: std::ops::Range<usize>, out: &mut [u8]) {
        let g = &self.g;
        let (ho, wo) = g.out_hw();
        let (plane, n, run, t) = (g.h * g.w, ho * wo, ho * self.wq, g.kh * g.kw);
        SCRATCH.with_borrow_mut(|Scratch { phases, line, sums, bytes }| {
            // whole runs of sums: the last one reads up to a run past the last phase
            let runs = run.next_multiple_of(RUN);
            // zero once: padding, and what the last runs read past the phases; every channel
            // writes the same places in between
            phases.clear();
            phases.resize(self.len * g.stride.0 * g.stride.1 + RUN, 0.0);
            line.resize(plane, 0.0);
            sums.resize(runs, 0.0);
            bytes.resize(run, 0);
            for (i, ch) in channels.enumerate() {
                fill(self, &x[i * plane..(i + 1) * plane], x0, phases, line);
                sum_taps(phases, &self.reads, &taps[ch * t..(ch + 1) * t], &mut sums[..runs]);
                store(rq, ch, sums, (self.wq, wo), bytes, &mut out[i * n..(i + 1) * n]);
            }
        });
    }
}

/// Rows at least this long are converted or requantized in place, one call or pass per row;
/// shorter ones a whole plane at a time through a buffer, then copied row by row (measured on
/// EfficientNet-Lite0: those copies were 3.5 % of its int8 time when every width took them).
pub(super) const WIDE: usize = 48;

/// Writes the phases of one channel's plane `x` (`[h, w]`) of `p`, less `x0`; where they are
/// padded is left as it was (zero). Narrow planes go through `line`, the whole plane in f32
/// first: one vectorised pass, where row by row the short rows of the late layers (7 and 14
/// wide) ran mostly in scalar tails (measured: 18 ns a row). Compiled like [`sum_taps`].
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn fill(p: &Phases, x: &[u8], x0: u8, phases: &mut [f32], line: &mut [f32]) {
    let g = &p.g;
    let [pt, pl, ..] = g.pads;
    let (sy, sx) = g.stride;
    let (wq, len) = (p.wq, p.len);
    let x0 = x0 as f32;
    if sx == 1 && g.w >= WIDE {
        for (r, src) in x.chunks_exact(g.w).enumerate() {
            let (py, qy) = ((r + pt) % sy, (r + pt) / sy);
            let at = py * len + qy * wq + pl;
            for (d, &v) in phases[at..at + g.w].iter_mut().zip(src) {
                *d = v as f32 - x0;
            }
        }
        return;
    }
    for (d, &v) in line.iter_mut().zip(x) {
        *d = v as f32 - x0;
    }
    for (r, src) in line.chunks_exact(g.w).enumerate() {
        let y = r + pt;
        let (py, qy) = (y % sy, y / sy);
        // where column j of the image goes: phase (py, (j + pl) % sx), column (j + pl) / sx
        let at = |j: usize| (py * sx + (j + pl) % sx) * len + qy * wq + (j + pl) / sx;
        match sx {
            1 => phases[at(0)..at(0) + g.w].copy_from_slice(src),
            2 => {
                // the image's columns alternate between the two phases, column 0 in phase a
                let (a, b) = (at(0), at(1));
                let (na, nb) = (g.w.div_ceil(2), g.w / 2);
                let (to_a, to_b) = if a < b {
                    let (lo, hi) = phases.split_at_mut(b);
                    (&mut lo[a..a + na], &mut hi[..nb])
                } else {
                    let (lo, hi) = phases.split_at_mut(a);
                    (&mut hi[..na], &mut lo[b..b + nb])
                };
                for ((pair, da), db) in src.chunks_exact(2).zip(to_a.iter_mut()).zip(to_b.iter_mut()) {
                    (*da, *db) = (pair[0], pair[1]);
                }
                if g.w % 2 == 1 {
                    to_a[na - 1] = src[g.w - 1];
                }
            }
            _ => {
                for (j, &v) in src.iter().enumerate() {
                    phases[at(j)] = v;
                }
            }
        }
    }
}

/// `sums[i] = Σ_t w[t] · src[reads[t] + i]` for whole runs of [`RUN`] outputs, each run held
/// in registers across the taps. Compiled for AVX-512, AVX2 and NEON, picked at run time. A
/// multiply and an add, not `mul_add`: outside the FMA clones (and in every unoptimised
/// build) that is a call to a software fma per value.
#[multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn sum_taps(src: &[f32], reads: &[usize], w: &[f32], sums: &mut [f32]) {
    debug_assert!(sums.len().is_multiple_of(RUN));
    for (i, out) in sums.chunks_exact_mut(RUN).enumerate() {
        let mut acc = [0f32; RUN];
        for (&r, &w) in reads.iter().zip(w) {
            let s = &src[r + i * RUN..r + (i + 1) * RUN];
            for (a, &s) in acc.iter_mut().zip(s) {
                *a += s * w;
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// Outputs summed together: 4 AVX-512 registers, 8 AVX2 or 16 NEON (enough independent
/// multiply-adds in flight to cover their latency).
const RUN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::{data, geometries, reference};

    #[test]
    fn short_copies_write_the_row_and_nothing_else() {
        for n in 0..80 {
            let src: Vec<u8> = (0..n as u8).map(|v| v.wrapping_mul(7).wrapping_add(1)).collect();
            let mut dst = vec![0xEE; n + 8];
            copy_short(&mut dst[4..4 + n], &src);
            assert_eq!(&dst[4..4 + n], &src[..], "{n}");
            assert!(dst[..4].iter().chain(&dst[4 + n..]).all(|&b| b == 0xEE), "{n}");
        }
    }

    #[test]
    fn depthwise_equals_the_direct_sum() {
        for (i, mut g) in geometries().into_iter().enumerate() {
            g.cout = g.cin;
            let x = data(g.cin * g.h * g.w, 7 + i as u32);
            let w: Vec<i8> = data(g.cin * g.kh * g.kw, 50 + i as u32).iter().map(|&v| v as i8).collect();
            let (ho, wo) = g.out_hw();
            // requantized with unit scale around 128: the sums themselves, where they fit
            let rq = Requant { mul: vec![1.0; g.cin], add: vec![0; g.cin], y0: 128.0, alpha: None };
            let expected: Vec<u8> =
                reference(&x, &g, 77, &w, true).iter().map(|&s| (s + 128).clamp(0, 255) as u8).collect();
            // both loops where the core has VNNI: whichever runs, the answer is the same
            for filters in [Filters::new(&w, &g, 77), Filters::f32_only(&w)] {
                let mut out = vec![0u8; g.cin * ho * wo];
                depthwise(&x, &g, 77, &filters, &rq, &mut out);
                assert_eq!(out, expected, "geometry {g:?}, {}", filters.kind());
            }
        }
    }

    #[test]
    fn depthwise_on_two_threads_equals_one_and_both_loops_agree() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let g = Geometry { cin: 70, h: 9, w: 11, cout: 70, kh: 3, kw: 3, stride: (2, 1), pads: [1; 4] };
        let x = data(g.cin * g.h * g.w, 3);
        let w: Vec<i8> = data(g.cin * 9, 4).iter().map(|&v| v as i8).collect();
        let filters = Filters::new(&w, &g, 9);
        let rq = Requant {
            mul: (0..g.cin).map(|c| 0.01 + c as f32 * 1e-3).collect(),
            add: vec![5; g.cin],
            y0: 100.0,
            alpha: Some(0.1),
        };
        let (ho, wo) = g.out_hw();
        let (mut one, mut two) = (vec![0u8; g.cin * ho * wo], vec![0u8; g.cin * ho * wo]);
        depthwise(&x, &g, 9, &filters, &rq, &mut one);
        multithread_tract_scope(Executor::multithread(2), || depthwise(&x, &g, 9, &filters, &rq, &mut two));
        assert_eq!(one, two);
        // the VNNI loop requantizes in registers: the same bytes as the f32 loop's pass
        let mut f32_loop = vec![0u8; g.cin * ho * wo];
        depthwise(&x, &g, 9, &Filters::f32_only(&w), &rq, &mut f32_loop);
        assert_eq!(one, f32_loop, "{}", filters.kind());
        assert!(one.iter().any(|&v| v != one[0]), "a test that cannot tell outputs apart");
    }
}
