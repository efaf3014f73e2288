//! Activations packed for the integer product kernels: the K=4-interleaved panels of the
//! VNNI and AMX kernels written directly (from a 1×1 convolution's input planes, from a
//! padded copy of the input with 4 channels to a word for every other convolution, or from
//! rows already quantized), and the plain im2col rows other kernels' own packers take.

use anyhow::ensure;
use multiversion::multiversion;
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::Blob;
use tract_onnx::prelude::*;

use super::kernels::Geometry;

/// A buffer of at least `size` bytes (plus the slack AMX kernels read past the end), aligned
/// for `format`, reused when `blob` already is one.
pub(super) fn packing_buffer(format: &PackedI8K4, size: usize, blob: &mut Blob) -> TractResult<()> {
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
/// A panel's length in u32 words (`r` times the `factors`) and the bytes of `n` columns in
/// such panels, refused when they overflow: a pushed model's shapes are not to be trusted.
fn panel_and_size(n: usize, r: usize, factors: &[usize]) -> TractResult<(usize, usize)> {
    let too_large = || anyhow::anyhow!("a packing buffer for {n} columns of panels {r}×{factors:?} is too large");
    let panel = factors.iter().try_fold(r, |acc, f| acc.checked_mul(*f)).ok_or_else(too_large)?;
    let size = n.div_ceil(r).checked_mul(panel).and_then(|s| s.checked_mul(4)).ok_or_else(too_large)?;
    Ok((panel, size))
}

pub(super) fn pack_rows_k4(
    format: &PackedI8K4,
    rows: &[i8],
    n: usize,
    k: usize,
    blob: &mut Blob,
) -> TractResult<usize> {
    let r = format.r;
    ensure!(k > 0 && r > 0, "packing rows of {k} values in panels of {r}");
    let blocks = k.div_ceil(4);
    let (panel, size) = panel_and_size(n, r, &[blocks])?;
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

/// Columns `cols` of the input planes of a plain 1×1 convolution (its im2col matrix), packed
/// straight into the K=4-interleaved layout of the VNNI and AMX kernels: panels of `r` columns, each holding,
/// per block of 4 rows, the 4 bytes of every column together, shifted by −128 as they are
/// interleaved, into `blob` (reused from call to call: a fresh multi-megabyte buffer per call
/// costs its page faults every time). tract-linalg's own packer for this layout goes byte by
/// byte with strided reads; through it, packing was most of a convolution's time (measured on
/// NanoDet: about 70 of 100 ms per inference). Other shapes go through [`pack_tap_major`].
pub(super) fn pack_i8k4(
    format: &PackedI8K4,
    x: &[u8],
    g: &Geometry,
    cols: std::ops::Range<usize>,
    blob: &mut Blob,
) -> TractResult<usize> {
    ensure!(g.is_pointwise(), "plane packing is for 1×1 convolutions");
    let plane = g.h * g.w;
    ensure!(cols.end <= plane, "columns {cols:?} of a {plane} plane");
    let (n, k, r) = (cols.len(), g.cin, format.r);
    ensure!(k > 0 && r > 0, "packing {k} channels in panels of {r}");
    let blocks = k.div_ceil(4);
    let (panel, size) = panel_and_size(n, r, &[blocks])?; // panel in u32 words
    packing_buffer(format, size, blob)?;
    // what lies past `size`, and in the last panel's columns past `n`, may be left from an
    // earlier use: it only meets zero weights or feeds sums that are never stored
    let packed: &mut [u32] =
        bytemuck::try_cast_slice_mut(&mut blob.as_bytes_mut()[..size]).map_err(|e| anyhow::anyhow!("{e}"))?;
    for kb in 0..blocks {
        // a row past `k` meets zero weights: any plane will do
        let four = [0, 1, 2, 3].map(|i| {
            let c = (kb * 4 + i).min(k - 1);
            &x[c * plane + cols.start..c * plane + cols.end]
        });
        interleave_block(four, packed, panel, r, kb, 0x8080_8080);
    }
    Ok(panel * 4)
}

/// Block `kb` (4 rows of K) of every panel (`panel` words, `r` columns) of `packed`, from the
/// 4 rows `four`. Compiled for AVX-512, AVX2 and NEON, picked at run time (measured: the 1×1
/// convolutions' packing 9 % of EfficientNet in SSE2).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2", "x86_64+avx2", "aarch64+neon"))]
fn interleave_block(four: [&[u8]; 4], packed: &mut [u32], panel: usize, r: usize, kb: usize, flip: u32) {
    let n = four[0].len();
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

#[inline(always)]
fn interleave_any(rows: [&[u8]; 4], dst: &mut [u32], flip: u32) {
    for (j, d) in dst.iter_mut().enumerate() {
        *d = u32::from_le_bytes([rows[0][j], rows[1][j], rows[2][j], rows[3][j]]) ^ flip;
    }
}

/// The im2col matrix of `x` in tap-major order (row `k` is channel `k % cin4` under tap
/// `k / cin4`, `cin4` the channels rounded up to a multiple of 4; the weights are packed in
/// the same order, with zeros for the extra channels, see
/// [`super::kernels::PackedWeights::conv`]), packed into the K=4-interleaved layout from a
/// zero-padded copy of the input in which every 4 channels of a pixel are one u32. The copy
/// holds one plane of such words per 4 channels and column phase: for stride `sx` along x,
/// phase `px` has the padded columns `px, px + sx, …` (all of them at stride 1). Each run of a
/// panel (one tap, 4 channels, `r` output columns) is then one contiguous stretch of a phase
/// per output row it spans, at any stride: a copy, not a transpose (measured on NanoDet, whose
/// head's 3×3 convolutions are its heaviest: the channels-last copy this replaced, with each
/// run gathered word by word, was 17 % of its time).
pub(super) fn pack_tap_major(
    format: &PackedI8K4,
    x: &[u8],
    g: &Geometry,
    x0: u8,
    blob: &mut Blob,
) -> TractResult<usize> {
    let (ho, wo) = g.out_hw();
    ensure!(g.cin > 0 && format.r > 0, "packing {} channels in panels of {}", g.cin, format.r);
    let n = ho.checked_mul(wo).ok_or_else(|| anyhow::anyhow!("an output of {ho}×{wo} is too large"))?;
    let (r, c4) = (format.r, g.cin.div_ceil(4));
    let taps = g.kh.checked_mul(g.kw).ok_or_else(|| anyhow::anyhow!("a {}×{} kernel is too large", g.kh, g.kw))?;
    let (panel, size) = panel_and_size(n, r, &[taps, c4])?; // panel in u32 words
    packing_buffer(format, size, blob)?;
    let packed: &mut [u32] =
        bytemuck::try_cast_slice_mut(&mut blob.as_bytes_mut()[..size]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (sy, sx) = g.stride;
    let (hp, wp) = g.padded_hw();
    let wq = wp.div_ceil(sx);
    let phase = hp * wq;
    // the planes of 4 channels `cb` start `cb · sx · phase` in
    let group = sx * phase;
    let plane = g.h * g.w;
    SCRATCH_IMAGE.with_borrow_mut(|(image, line)| {
        // 16 words of slack: the last stretch of a run is copied as 16 words too
        if image.len() < group * c4 + 16 {
            image.resize(group * c4 + 16, 0);
        }
        let image = &mut image[..group * c4 + 16];
        for (cb, words) in image.chunks_exact_mut(group).take(c4).enumerate() {
            // an extra channel meets zero weights: any plane will do
            let four = [0, 1, 2, 3].map(|i| {
                let c = (4 * cb + i).min(g.cin - 1);
                &x[c * plane..(c + 1) * plane]
            });
            fill_phases(four, g, x0, words, line);
        }
        let image = &*image;
        // where each tap reads, relative to the window's corner: phase kx % sx, row ky,
        // column kx / sx
        let offsets: Vec<usize> = (0..taps).map(|t| (t % g.kw % sx) * phase + t / g.kw * wq + t % g.kw / sx).collect();
        let mut corners = vec![0usize; r];
        for (p, dst) in packed.chunks_mut(panel).enumerate() {
            let n0 = p * r;
            let width = r.min(n - n0);
            for (j, corner) in corners[..width].iter_mut().enumerate() {
                let (oy, ox) = ((n0 + j) / wo, (n0 + j) % wo);
                *corner = oy * sy * wq + ox;
            }
            gather_panel(image, (group, c4), &corners[..width], &offsets, dst);
        }
    });
    Ok(panel * 4)
}

/// The phases of 4 channels in [`pack_tap_major`]'s copy (`words`, `sx` phases): each word the 4
/// bytes of `four` at a pixel, shifted by −128; padding reads as the zero point `x0`, shifted
/// like every other value. At stride 1 rows are interleaved in place; otherwise into `line`,
/// then dealt out to the phases.
fn fill_phases(four: [&[u8]; 4], g: &Geometry, x0: u8, words: &mut [u32], line: &mut Vec<u32>) {
    let [pt, pl, _, _] = g.pads;
    let sx = g.stride.1;
    let wq = g.padded_hw().1.div_ceil(sx);
    let pad = u32::from_ne_bytes([x0 ^ 0x80; 4]);
    let phase = words.len() / sx;
    for words in words.chunks_exact_mut(phase) {
        words[..pt * wq].fill(pad);
        words[(pt + g.h) * wq..].fill(pad);
    }
    let rows = |y: usize| four.map(|plane| &plane[y * g.w..(y + 1) * g.w]);
    if sx == 1 {
        for (y, row) in words[pt * wq..(pt + g.h) * wq].chunks_exact_mut(wq).enumerate() {
            row[..pl].fill(pad);
            row[pl + g.w..].fill(pad);
            interleave_row(rows(y), &mut row[pl..pl + g.w], 0x8080_8080);
        }
        return;
    }
    line.resize(wq * sx, 0);
    let line = &mut line[..wq * sx];
    line[..pl].fill(pad);
    line[pl + g.w..].fill(pad);
    for y in 0..g.h {
        interleave_row(rows(y), &mut line[pl..pl + g.w], 0x8080_8080);
        let at = (pt + y) * wq;
        if sx == 2 {
            // the common case, as whole pairs (`step_by` goes value by value)
            let (even, odd) = words.split_at_mut(phase);
            for ((pair, e), o) in line.chunks_exact(2).zip(&mut even[at..at + wq]).zip(&mut odd[at..at + wq]) {
                (*e, *o) = (pair[0], pair[1]);
            }
            continue;
        }
        for (px, words) in words.chunks_exact_mut(phase).enumerate() {
            for (d, &v) in words[at..at + wq].iter_mut().zip(line[px..].iter().step_by(sx)) {
                *d = v;
            }
        }
    }
}

/// `interleave` over a whole row, 16 words at a time. Compiled for AVX-512, AVX2 and NEON,
/// picked at run time.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2", "x86_64+avx2", "aarch64+neon"))]
pub(super) fn interleave_row(rows: [&[u8]; 4], dst: &mut [u32], flip: u32) {
    let whole = dst.len() / 16 * 16;
    let (head, tail) = dst.split_at_mut(whole);
    for (i, d) in head.chunks_exact_mut(16).enumerate() {
        interleave::<16>(rows.map(|row| &row[i * 16..(i + 1) * 16]), d, flip);
    }
    interleave_any(rows.map(|row| &row[whole..]), tail, flip);
}

/// One panel of [`pack_tap_major`] (`r` columns): word `t·c4 + cb` of column `j` is
/// `image[cb·group + corners[j] + offsets[t]]`. Each run of `r` words is written in order.
/// The columns of one output row read consecutive words: a run is one stretch per output row
/// it spans, each copied as 16 words (`image` has 16 words of slack past its planes), later
/// ones over the excess of earlier ones. Measured on NanoDet: copies of the exact length,
/// through `memcpy`, took a quarter more time; assembling a run on the stack first took a
/// half more (its loads wait for the stores). Compiled for AVX-512, AVX2 and NEON, picked at
/// run time.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2", "x86_64+avx2", "aarch64+neon"))]
fn gather_panel(image: &[u32], groups: (usize, usize), corners: &[usize], offsets: &[usize], dst: &mut [u32]) {
    let (group, c4) = groups;
    let width = corners.len();
    let r = dst.len() / (offsets.len() * c4);
    // the stretches of consecutive corners: (first column, its corner, length)
    let mut stretches = [(0usize, 0usize, 0usize); 16];
    let mut count = 0;
    let mut j = 0;
    while j < width && count < stretches.len() {
        let mut end = j + 1;
        while end < width && corners[end] == corners[j] + (end - j) {
            end += 1;
        }
        stretches[count] = (j, corners[j], end - j);
        count += 1;
        j = end;
    }
    if j < width {
        count = 0; // more output rows than stretches: gather word by word below
    }
    let stretches = &stretches[..count];
    let runs = offsets.iter().flat_map(|&off| (0..c4).map(move |cb| cb * group + off)).enumerate();
    for (i, at) in runs {
        let run = i * r;
        if stretches.is_empty() {
            for (d, &c) in dst[run..run + r].iter_mut().zip(corners) {
                *d = image[c + at];
            }
            continue;
        }
        for &(j, c, len) in stretches {
            let (to, from) = (run + j, c + at);
            // 16 words whatever the stretch's length, where both sides have them: what
            // runs past the stretch, even into the next run, is written over later
            let whole = (r == 16).then(|| dst.get_mut(to..).and_then(|d| d.first_chunk_mut::<16>())).flatten();
            match (whole, image.get(from..).and_then(|s| s.first_chunk::<16>())) {
                (Some(d), Some(s)) => *d = *s,
                _ => dst[to..to + len].copy_from_slice(&image[from..from + len]),
            }
        }
    }
}

thread_local! {
    /// the phases of 4-channel words [`pack_tap_major`] reads, and a padded row of them, kept from
    /// call to call
    static SCRATCH_IMAGE: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}
