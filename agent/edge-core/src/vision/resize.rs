//! Resizing a region of an RGB frame with a triangle filter (bilinear when enlarging, widened
//! to the scale when shrinking, so every source pixel counts): the filter the image crate's
//! `FilterType::Triangle` applies, which the models were calibrated with, computed the same
//! way (vertical pass into floats, then horizontal, rounded once) but with the weights worked
//! out once per row and column and loops the compiler vectorises, and reading the region in
//! place instead of copying it first. Measured on NanoDet's letterbox of a 512×512 photo: the
//! image crate's resize was a fifth of the agent's CPU time, as much as a third of inference.

use image::RgbImage;
use multiversion::multiversion;

use super::preprocess::Region;

/// For each output coordinate, the first source coordinate it reads and the weights of that
/// and the following ones (summing to 1).
fn taps(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = src as f32 / dst as f32;
    let widen = ratio.max(1.0);
    (0..dst)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - widen).floor().max(0.0) as usize).min(src - 1);
            let right = ((centre + widen).ceil() as usize).clamp(left + 1, src);
            let mut w: Vec<f32> =
                (left..right).map(|i| (1.0 - ((i as f32 - (centre - 0.5)) / widen).abs()).max(0.0)).collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (left, w)
        })
        .collect()
}

/// `region` of `frame` resized to `width` × `height` (both at least 1; an empty region gives
/// a black image).
pub fn resize_region(frame: &RgbImage, region: Region, width: u32, height: u32) -> RgbImage {
    let (rw, rh) =
        (region.w.min(frame.width().saturating_sub(region.x)), region.h.min(frame.height().saturating_sub(region.y)));
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let mut out = RgbImage::new(w as u32, h as u32);
    if rw == 0 || rh == 0 {
        return out;
    }
    let (rw, rh) = (rw as usize, rh as usize);
    let (rows, columns) = (taps(rh, h), taps(rw, w));
    TALL.with_borrow_mut(|tall| {
        // grown, never shrunk: the vertical pass clears each line before it adds to it
        if tall.len() < h * rw * 3 {
            tall.resize(h * rw * 3, 0.0);
        }
        filter(frame, region, rw, &rows, &columns, &mut tall[..h * rw * 3], &mut out);
    });
    out
}

thread_local! {
    /// The vertical pass's output, kept from frame to frame: allocated afresh (786 KB for a
    /// 512-wide photo shrunk to 128 rows), its pages were faulted in anew on every frame, each
    /// fault flushing the TLBs of the other cores (measured: 2 % of the samples of BlazeFace's
    /// end to end, in the prepare thread).
    static TALL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Values summed at once in the vertical pass: four AVX-512 registers, eight NEON ones.
const COLUMNS: usize = 64;

/// The two passes of [`resize_region`] over the clipped region, `rw` wide, into `out`, with the
/// taps of its rows and columns. Compiled for AVX-512, AVX2 and NEON and picked at run time
/// (measured in a profile of the agent end to end on BlazeFace: in SSE2 this resize of the
/// 512×512 photo took 12 % of the samples, more than the inference thread's 9.5 %; 1.7 %
/// now). A multiply and an add, not `mul_add`: every clone rounds alike.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn filter(
    frame: &RgbImage,
    region: Region,
    rw: usize,
    rows: &[(usize, Vec<f32>)],
    columns: &[(usize, Vec<f32>)],
    tall: &mut [f32],
    out: &mut RgbImage,
) {
    let (w, h) = (out.width() as usize, out.height() as usize);
    debug_assert!(rows.len() == h && columns.len() == w);
    let stride = frame.width() as usize * 3;
    let pixels = frame.as_raw();
    let row = |y: usize| {
        let start = (region.y as usize + y) * stride + region.x as usize * 3;
        &pixels[start..start + rw * 3]
    };
    // vertical: each output row a weighted sum of source rows, across the region's width, in
    // blocks of COLUMNS values whose sums stay in registers over all the taps (adding each tap
    // into the line in memory loaded and stored the line once per tap)
    debug_assert!(tall.len() == h * rw * 3);
    for (line, (top, weights)) in tall.chunks_exact_mut(rw * 3).zip(rows) {
        let mut blocks = line.chunks_exact_mut(COLUMNS);
        let mut x = 0;
        for block in &mut blocks {
            let mut acc = [0f32; COLUMNS];
            for (i, &wt) in weights.iter().enumerate() {
                for (a, &v) in acc.iter_mut().zip(&row(top + i)[x..x + COLUMNS]) {
                    *a += wt * v as f32;
                }
            }
            block.copy_from_slice(&acc);
            x += COLUMNS;
        }
        let rest = blocks.into_remainder();
        rest.fill(0.0);
        for (i, &wt) in weights.iter().enumerate() {
            for (a, &v) in rest.iter_mut().zip(&row(top + i)[x..]) {
                *a += wt * v as f32;
            }
        }
    }
    // horizontal: each output pixel a weighted sum of the pixels of its row, rounded once
    for (line, dst) in tall.chunks_exact(rw * 3).zip(out.chunks_exact_mut(w * 3)) {
        for ((left, weights), px) in columns.iter().zip(dst.chunks_exact_mut(3)) {
            let mut rgb = [0f32; 3];
            for (src, &wt) in line[left * 3..].chunks_exact(3).zip(weights) {
                for (acc, &v) in rgb.iter_mut().zip(src) {
                    *acc += wt * v;
                }
            }
            for (p, v) in px.iter_mut().zip(rgb) {
                *p = saturate_u8(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops;

    fn photo() -> RgbImage {
        // a smooth gradient with a sharp edge and some texture
        RgbImage::from_fn(97, 61, |x, y| {
            let edge = if x > 40 { 200 } else { 30 };
            image::Rgb([(x * 2) as u8, edge, ((x * y) % 251) as u8])
        })
    }

    #[test]
    fn matches_the_image_crates_triangle_filter_within_one_level() {
        let frame = photo();
        for (w, h) in [(40, 30), (150, 90), (97, 20), (13, 61)] {
            let region = Region { x: 5, y: 3, w: 80, h: 50 };
            let ours = resize_region(&frame, region, w, h);
            let view = imageops::crop_imm(&frame, 5, 3, 80, 50).to_image();
            let theirs = imageops::resize(&view, w, h, imageops::FilterType::Triangle);
            let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst <= Some(1), "{w}x{h}: off by {worst:?}");
        }
    }

    #[test]
    fn an_empty_or_clipped_region_does_not_panic() {
        let frame = photo();
        let out = resize_region(&frame, Region { x: 90, y: 50, w: 50, h: 50 }, 8, 8);
        assert_eq!(out.dimensions(), (8, 8));
        let out = resize_region(&frame, Region { x: 200, y: 0, w: 5, h: 5 }, 4, 4);
        assert!(out.as_raw().iter().all(|&v| v == 0));
    }
}

/// `v` clamped to [0, 255] and rounded half to even by the float trick (adding 1.5 × 2^23 leaves
/// the rounded integer in the low mantissa bits); NaN gives 0. The int8 engine requantizes the
/// same way.
#[inline(always)]
fn saturate_u8(v: f32) -> u8 {
    (v.max(0.0).min(255.0) + 12_582_912.0).to_bits() as u8
}
