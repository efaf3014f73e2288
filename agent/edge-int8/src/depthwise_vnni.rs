//! The depthwise convolution on AVX-512 VNNI: four taps of a kernel row in one `vpdpbusd`
//! (u8 activations times i8 weights, summed exactly in i32) where the f32 loop of
//! [`super::depthwise`] spends a multiply and an add on every tap. Owns the regrouping of a
//! filter bank into fours ([`Quads`]) and the per-channel loop; x86-64 cores with AVX-512 VNNI
//! and VBMI (for the byte shuffle that makes the words of four bytes) only: [`Quads::new`]
//! gives `None` elsewhere, and the f32 loop runs.
//!
//! The input plane is split by stride phase as in the f32 loop (see `Phases` there), but kept
//! in bytes and padded with the zero point `x0` instead of zero: the sums start from
//! `-x0 · Σw`, so a padded tap adds `x0 · w - x0 · w = 0`. Word `i` of a group's read is
//! bytes `i..i+4` of the phases: the four columns a group of four taps of one kernel row
//! reads for the output whose window starts at `i`. A group is then one run of such words
//! against one broadcast word of four weights, the 4th (or 2nd to 4th) weight zero where the
//! row has fewer taps. The words are made as they are used, sixteen by one `vpermb` of 64
//! bytes: storing them as a quad image first, four times the phases' size, and reading that
//! back was measured 8 % slower on EfficientNet-Lite0 (3.10–3.20 → 2.86–2.93 ms).

use super::depthwise::copy_rows;
#[cfg(target_arch = "x86_64")]
use super::depthwise::copy_short;
use super::kernels::{Geometry, Requant};

/// Outputs summed together: four registers of sixteen.
const RUN: usize = 64;

/// A depthwise filter bank regrouped for [`Quads::channels`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quads {
    g: Geometry,
    /// columns of a phase row
    wq: usize,
    /// bytes of one phase plane
    len: usize,
    /// where each group reads in the phases (the same for every channel)
    reads: Vec<usize>,
    /// per channel, per group: its four weight bytes as one word
    weights: Vec<i32>,
    /// per channel: what its sums start from, `-x0 · Σw`
    start: Vec<i32>,
    x0: u8,
}

/// The CPU features [`Quads`] need: those of the 1×1 kernel, whose requantization it shares,
/// and VBMI.
fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::pointwise_vnni::supported() && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Quads {
    /// `w` (`[c, kh, kw]`) regrouped for geometry `g` and input zero point `x0`; `None` where the
    /// core lacks AVX-512 VNNI or VBMI.
    pub fn new(w: &[i8], g: &Geometry, x0: u8) -> Option<Quads> {
        supported().then(|| Quads::build(w, g, x0))
    }

    fn build(w: &[i8], g: &Geometry, x0: u8) -> Quads {
        let (sy, sx) = g.stride;
        let (hp, wp) = g.padded_hw();
        let (hq, wq) = (hp.div_ceil(sy), wp.div_ceil(sx));
        let len = hq * wq;
        // groups: per kernel row and column phase, that phase's taps four at a time
        let mut groups = Vec::new(); // (read, taps as kernel columns, usize::MAX for none)
        for ky in 0..g.kh {
            for px in 0..sx.min(g.kw) {
                let columns: Vec<usize> = (px..g.kw).step_by(sx).collect();
                for (i, four) in columns.chunks(4).enumerate() {
                    let read = ((ky % sy) * sx + px) * len + (ky / sy) * wq + 4 * i;
                    let mut kx = [usize::MAX; 4];
                    kx[..four.len()].copy_from_slice(four);
                    groups.push((read, ky, kx));
                }
            }
        }
        let t = g.kh * g.kw;
        let mut weights = Vec::with_capacity(g.cin * groups.len());
        let mut start = Vec::with_capacity(g.cin);
        for taps in w.chunks_exact(t).take(g.cin) {
            for &(_, ky, kx) in &groups {
                let bytes = kx.map(|kx| if kx == usize::MAX { 0 } else { taps[ky * g.kw + kx] as u8 });
                weights.push(i32::from_le_bytes(bytes));
            }
            start.push(-(x0 as i32) * taps.iter().map(|&v| v as i32).sum::<i32>());
        }
        Quads { g: *g, wq, len, reads: groups.iter().map(|g| g.0).collect(), weights, start, x0 }
    }

    /// Convolves the planes of `channels` (`x` holds those planes only) into `out`, requantized
    /// by `rq`.
    pub fn channels(&self, x: &[u8], rq: &Requant, channels: std::ops::Range<usize>, out: &mut [u8]) {
        let g = &self.g;
        let (ho, wo) = g.out_hw();
        let (plane, n, run) = (g.h * g.w, ho * wo, ho * self.wq);
        let runs = run.next_multiple_of(RUN);
        let groups = self.reads.len();
        // the last group's last run of sums reads words up to `last`, each made from a load
        // of 64 bytes that starts at its block of 16
        let last = self.reads.iter().max().copied().unwrap_or(0) + runs;
        let phases_len = (self.len * g.stride.0 * g.stride.1).max(last + 48);
        SCRATCH.with_borrow_mut(|(phases, bytes)| {
            // padding once: every channel writes the same places in between
            phases.clear();
            phases.resize(phases_len, self.x0);
            bytes.resize(runs, 0);
            for (i, ch) in channels.enumerate() {
                let weights = &self.weights[ch * groups..(ch + 1) * groups];
                if supported() {
                    #[allow(unsafe_code)]
                    // SAFETY: the CPU has AVX-512 F, BW, VBMI and VNNI (checked on the line above),
                    // all that `sum_groups` is compiled for.
                    unsafe {
                        sum_groups(
                            self,
                            &x[i * plane..(i + 1) * plane],
                            phases,
                            (weights, self.start[ch]),
                            (rq, ch),
                            bytes,
                        )
                    };
                }
                copy_rows(bytes, (self.wq, wo), &mut out[i * n..(i + 1) * n]);
            }
        });
    }
}

thread_local! {
    /// One thread's phases and requantized sums, reused from call to call (the sums stay in
    /// registers, and the words of four bytes are made in them).
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Copies one channel's plane `x` into the phases of `q`; the padding is left as it was (`x0`).
/// Inlined into [`sum_groups`], to be compiled for its features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fill(q: &Quads, x: &[u8], phases: &mut [u8]) {
    let g = &q.g;
    let [pt, pl, ..] = g.pads;
    let (sy, sx) = g.stride;
    for (r, src) in x.chunks_exact(g.w).enumerate() {
        let (py, qy) = ((r + pt) % sy, (r + pt) / sy);
        let row = |px: usize| (py * sx + px) * q.len + qy * q.wq;
        if sx == 1 {
            // rows of 7 to 56 bytes: a `memcpy` call each was 4 % of EfficientNet-Lite0's samples
            copy_short(&mut phases[row(0) + pl..row(0) + pl + g.w], src);
            continue;
        }
        if sx == 2 {
            // the common case, as whole pairs (`step_by` goes byte by byte): with an odd left
            // pad the first column goes alone to phase 1, then pairs start in phase 0
            let (lead, pairs) = src.split_at(pl % 2);
            let (even, odd) = phases.split_at_mut(row(1));
            let odd = &mut odd[pl / 2..];
            if let Some(&v) = lead.first() {
                odd[0] = v;
            }
            let at = pl.div_ceil(2);
            let (even, odd) = (&mut even[row(0) + at..], &mut odd[lead.len()..]);
            for ((pair, e), o) in pairs.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
                (*e, *o) = (pair[0], pair[1]);
            }
            if pairs.len() % 2 == 1 {
                even[pairs.len() / 2] = pairs[pairs.len() - 1];
            }
            continue;
        }
        // column j goes to phase (j + pl) % sx, column (j + pl) / sx: the columns of the
        // source that land in one phase are every sx-th from the first that does
        for px in 0..sx {
            let first = (px + sx - pl % sx) % sx;
            let Some(from) = src.get(first..) else { continue };
            let at = row(px) + (first + pl) / sx;
            for (d, &v) in phases[at..].iter_mut().zip(from.iter().step_by(sx)) {
                *d = v;
            }
        }
    }
}

/// One channel: its plane `x` into the phases ([`fill`]), then, with word `i` = bytes
/// `i..i+4` of `phases`, the sums `start + Σ_groups` of the four byte products of word
/// `reads[t] + i` and `weights[t]`, [`RUN`] outputs at a time, requantized in registers
/// by `rq` for channel `c` into `bytes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
fn sum_groups(
    q: &Quads,
    x: &[u8],
    phases: &mut [u8],
    (weights, start): (&[i32], i32),
    (rq, c): (&Requant, usize),
    bytes: &mut [u8],
) {
    let runs = bytes.len();
    // the sizes `Quads::channels` gives: every read below lies inside its buffer (a read that
    // did not would leave outputs unwritten)
    debug_assert!(runs.is_multiple_of(RUN));
    debug_assert!(q.reads.iter().all(|&r| r + runs + 48 <= phases.len()));
    fill(q, x, phases);
    let (phases, reads) = (&*phases, &q.reads[..]);
    use std::arch::x86_64::{__m512i, _mm512_dpbusd_epi32, _mm512_permutexvar_epi8, _mm512_set1_epi32};
    // sixteen words from one load of 64 bytes: byte k of word l is byte l + k
    let spread: [u8; 64] = std::array::from_fn(|b| (b / 4 + b % 4) as u8);
    // opaque to the compiler: with the constant in sight it rebuilt the one vpermb as a
    // dozen 128-bit shuffles (measured: a quarter of this function's time)
    let spread = std::hint::black_box(bytemuck::cast::<[u8; 64], __m512i>(spread));
    for (i, out) in bytes.chunks_exact_mut(RUN).enumerate() {
        let mut acc = [_mm512_set1_epi32(start); RUN / 16];
        for (&r, &w) in reads.iter().zip(weights) {
            let w = _mm512_set1_epi32(w);
            let Some(src) = phases.get(r + i * RUN..).and_then(|s| s.first_chunk::<{ RUN + 48 }>()) else { continue };
            for (k, a) in acc.iter_mut().enumerate() {
                let Some(b) = src.get(16 * k..).and_then(|b| b.first_chunk::<64>()) else { continue };
                let words = _mm512_permutexvar_epi8(spread, bytemuck::cast::<[u8; 64], __m512i>(*b));
                *a = _mm512_dpbusd_epi32(*a, words, w);
            }
        }
        for (o, a) in out.chunks_exact_mut(16).zip(acc) {
            o.copy_from_slice(&super::pointwise_vnni::requantize16(a, rq, c));
        }
    }
}

/// Never called: [`Quads::new`] gives `None` off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code)]
unsafe fn sum_groups(_: &Quads, _: &[u8], _: &mut [u8], _: (&[i32], i32), _: (&Requant, usize), _: &mut [u8]) {}
