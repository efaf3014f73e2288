//! The depthwise convolution of a u8 activation map (one filter per channel), summed exactly
//! in f32 channels-last and requantized straight to u8; its channel blocks split across a
//! pipeline's threads.

use super::kernels::{Geometry, Requant};

/// A depthwise filter bank `[c, kh, kw]` rearranged tap-major, `[kh·kw, c]`, for [`depthwise`].
pub fn depthwise_taps(w: &[i8], c: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0f32; c * taps];
    for ch in 0..c {
        for t in 0..taps {
            out[t * c + ch] = w[ch * taps + t] as f32;
        }
    }
    out
}

/// Depthwise convolution (one filter per channel) of `x` (u8, `[c, h, w]`): the sums of
/// `(x - x0) · w`, requantized by `rq` into `out` (`[c, ho·wo]`). `taps` comes from
/// [`depthwise_taps`].
///
/// The work is done channels-last: the input is copied once into a zero-padded `[h, w, c]`
/// image, so the inner loop runs over contiguous channels (hundreds in the models here)
/// instead of over rows as short as 7 outputs, and the compiler vectorises it. The arithmetic
/// is f32, which is exact here: every product is below 2^15 and every sum below 2^24
/// (at most 25 taps here; checked), and f32 multiply-add vectorises on every target, where
/// 32-bit integer multiplies do not on baseline x86.
pub fn depthwise(x: &[u8], g: &Geometry, x0: u8, taps: &[f32], rq: &Requant, out: &mut [u8]) {
    debug_assert!(g.kh * g.kw * 255 * 128 < 1 << 24, "depthwise sums must stay exact in f32 (checked at load)");
    let c = g.cin;
    let [pt, pl, pb, pr] = g.pads;
    let (hp, wp) = (g.h + pt + pb, g.w + pl + pr);
    SCRATCH_IMAGE.with_borrow_mut(|image| {
        // reused from call to call: a fresh buffer of megabytes costs its page faults each
        // time (measured: 2.4 of 6 ms on 96×112×112)
        if image.len() < hp * wp * c {
            image.resize(hp * wp * c, 0.0);
        }
        let image = &mut image[..hp * wp * c];
        image[..pt * wp * c].fill(0.0);
        image[(pt + g.h) * wp * c..].fill(0.0);
        // one image row at a time: its channels-last line stays in cache while each channel's
        // input row is read straight through
        let plane = g.h * g.w;
        for y in 0..g.h {
            let line = &mut image[(y + pt) * wp * c..(y + pt + 1) * wp * c];
            line[..pl * c].fill(0.0);
            line[(pl + g.w) * c..].fill(0.0);
            let line = &mut line[pl * c..(pl + g.w) * c];
            for ch in 0..c {
                let src = &x[ch * plane + y * g.w..ch * plane + (y + 1) * g.w];
                for (d, &v) in line[ch..].iter_mut().step_by(c).zip(src) {
                    *d = v as f32 - x0 as f32;
                }
            }
        }
        let (ho, wo) = g.out_hw();
        let image = &*image;
        match tract_linalg::multithread::current_tract_executor() {
            // several threads for this pipeline: each takes a block of channels (whole output
            // planes, so the blocks of `out` are disjoint)
            tract_linalg::multithread::Executor::MultiThread(pool) if c >= 32 => {
                let block = c.div_ceil(pool.current_num_threads()).max(8);
                pool.scope(|scope| {
                    for (i, out) in out.chunks_mut(block * ho * wo).enumerate() {
                        let channels = i * block..(i * block + block).min(c);
                        scope.spawn(move |_| depthwise_rows(image, g, taps, rq, channels, out));
                    }
                });
            }
            _ => depthwise_rows(image, g, taps, rq, 0..c, out),
        }
    });
}

thread_local! {
    static SCRATCH_IMAGE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Channels summed together, their accumulators kept in registers across the taps.
const LANES: usize = 16;

/// The sums of `channels` over the channels-last padded `image`, requantized into `out`
/// (`[channels, ho·wo]`). Output by output, [`LANES`] channels at a time: each tap is two
/// loads and a multiply-add per channel, the sums never leave registers until requantized
/// (measured: a third of the time of a row of accumulators updated tap by tap).
fn depthwise_rows(
    image: &[f32],
    g: &Geometry,
    taps: &[f32],
    rq: &Requant,
    channels: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let c = g.cin;
    let (c0, cb) = (channels.start, channels.len());
    let (ho, wo) = g.out_hw();
    let n = ho * wo;
    let wp = g.w + g.pads[1] + g.pads[3];
    let (sy, sx) = g.stride;
    // where each tap reads, relative to the window's corner, and its filter row
    let offsets: Vec<(usize, usize)> =
        (0..g.kh * g.kw).map(|t| ((t / g.kw * wp + t % g.kw) * c + c0, t * c + c0)).collect();
    let mut sums = vec![0f32; cb];
    let mut q = vec![0u8; cb];
    for oy in 0..ho {
        for ox in 0..wo {
            let corner = (oy * sy * wp + ox * sx) * c;
            let mut ch = 0;
            while ch + LANES <= cb {
                let mut acc = [0f32; LANES];
                for &(at, t) in &offsets {
                    let v = &image[corner + at + ch..corner + at + ch + LANES];
                    let w = &taps[t + ch..t + ch + LANES];
                    for ((a, &v), &w) in acc.iter_mut().zip(v).zip(w) {
                        *a += v * w;
                    }
                }
                sums[ch..ch + LANES].copy_from_slice(&acc);
                ch += LANES;
            }
            for (ch, s) in sums.iter_mut().enumerate().skip(ch) {
                *s = offsets.iter().map(|&(at, t)| image[corner + at + ch] * taps[t + ch]).sum();
            }
            rq.across(c0, &sums, &mut q);
            for (ch, &v) in q.iter().enumerate() {
                out[ch * n + oy * wo + ox] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::int8::kernels::tests::{data, geometries, reference};

    #[test]
    fn depthwise_equals_the_direct_sum() {
        for (i, mut g) in geometries().into_iter().enumerate() {
            g.cout = g.cin;
            let x = data(g.cin * g.h * g.w, 7 + i as u32);
            let w: Vec<i8> = data(g.cin * g.kh * g.kw, 50 + i as u32).iter().map(|&v| v as i8).collect();
            let (ho, wo) = g.out_hw();
            // requantized with unit scale around 128: the sums themselves, where they fit
            let rq = Requant { mul: vec![1.0; g.cin], add: vec![0; g.cin], y0: 128.0, alpha: None };
            let mut out = vec![0u8; g.cin * ho * wo];
            depthwise(&x, &g, 77, &depthwise_taps(&w, g.cin, g.kh * g.kw), &rq, &mut out);
            let expected: Vec<u8> =
                reference(&x, &g, 77, &w, true).iter().map(|&s| (s + 128).clamp(0, 255) as u8).collect();
            assert_eq!(out, expected, "geometry {g:?}");
        }
    }

    #[test]
    fn depthwise_on_two_threads_equals_one() {
        use tract_linalg::multithread::{Executor, multithread_tract_scope};
        let g = Geometry { cin: 70, h: 9, w: 11, cout: 70, kh: 3, kw: 3, stride: (2, 1), pads: [1; 4] };
        let x = data(g.cin * g.h * g.w, 3);
        let taps = depthwise_taps(&data(g.cin * 9, 4).iter().map(|&v| v as i8).collect::<Vec<_>>(), g.cin, 9);
        let rq = Requant {
            mul: (0..g.cin).map(|c| 0.01 + c as f32 * 1e-3).collect(),
            add: vec![5; g.cin],
            y0: 100.0,
            alpha: Some(0.1),
        };
        let (ho, wo) = g.out_hw();
        let (mut one, mut two) = (vec![0u8; g.cin * ho * wo], vec![0u8; g.cin * ho * wo]);
        depthwise(&x, &g, 9, &taps, &rq, &mut one);
        multithread_tract_scope(Executor::multithread(2), || depthwise(&x, &g, 9, &taps, &rq, &mut two));
        assert_eq!(one, two);
        assert!(one.iter().any(|&v| v != one[0]), "a test that cannot tell outputs apart");
    }
}
