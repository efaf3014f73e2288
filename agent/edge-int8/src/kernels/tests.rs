//! Reference arithmetic and data for the kernels' tests (shared with the other ops' tests).

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
        g(5, 10, 11, 7, 3, 3, [1, 0, 1, 2]),
        // channels in fours
        g(8, 9, 7, 20, 3, 1, [1, 1, 1, 1]),
        g(12, 11, 13, 16, 3, 2, [1, 1, 0, 0]),
        g(32, 6, 5, 8, 3, 1, [1, 1, 1, 1]),
        // rows wider than a panel: most panels one copy per run
        g(8, 4, 37, 8, 3, 1, [1, 1, 1, 1]),
        // rows the depthwise loop converts and requantizes in place (at stride 1 and 2)
        g(4, 3, 60, 4, 3, 1, [1, 1, 1, 1]),
        g(4, 5, 100, 4, 5, 2, [2, 2, 2, 2]),
    ]
}

#[test]
fn a_product_by_blocks_of_columns_equals_the_whole() -> TractResult<()> {
    let g = Geometry { cin: 19, h: 9, w: 13, cout: 40, kh: 1, kw: 1, stride: (1, 1), pads: [0; 4] };
    let n = g.h * g.w;
    let x = data(g.cin * n, 5);
    let w: Vec<i8> = data(g.cout * g.cin, 6).iter().map(|&v| v as i8).collect();
    let packed = PackedWeights::conv(&w, &g, Some(n))?;
    let mut whole = Tensor::zero::<i32>(&[g.cout, n])?;
    packed.product(&x, &g, 3, &mut whole)?;
    let whole = whole.to_plain_array_view::<i32>()?.to_owned();
    if !packed.blocks(&g) {
        return Ok(()); // no K=4 kernel on this core: only whole products
    }
    let mut block = Tensor::zero::<i32>(&[g.cout, 48])?;
    for cols in [0..16, 16..64, 64..112, 112..117, 7..30] {
        packed.product_columns(&x, &g, 3, cols.clone(), &mut block)?;
        let got = block.to_plain_array_view::<i32>()?;
        for c in 0..g.cout {
            for (j, col) in cols.clone().enumerate() {
                assert_eq!(got[[c, j]], whole[[c, col]], "row {c}, column {col} of block {cols:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn every_candidate_kernel_gives_the_same_sums() -> TractResult<()> {
    // the kernel is chosen by timing: whichever wins, the answer must be the same
    let (mut compared, mut amx) = (0, 0);
    for (i, g) in geometries().into_iter().enumerate() {
        let x = data(g.cin * g.h * g.w, 30 + i as u32);
        let w: Vec<i8> = data(g.cout * g.cin * g.kh * g.kw, 60 + i as u32).iter().map(|&v| v as i8).collect();
        let (ho, wo) = g.out_hw();
        let mut sums = Vec::new();
        for option in PackedWeights::conv_options(&w, &g, Some(ho * wo))? {
            let mut c = Tensor::zero::<i32>(&[g.cout, ho * wo])?;
            option.product(&x, &g, 99, &mut c)?;
            sums.push((option.kernel_name().to_string(), c));
        }
        amx += sums.iter().any(|(name, _)| name.contains("amx")) as usize;
        for (name, c) in &sums[1..] {
            assert_eq!(c, &sums[0].1, "{name} against {} on {g:?}", sums[0].0);
            compared += 1;
        }
    }
    // wherever AMX was a candidate, another kernel was too, and they agreed
    assert!(compared >= amx, "{compared} comparisons, {amx} layers on AMX");
    Ok(())
}

#[test]
fn product_through_im2col_equals_the_direct_sum() -> TractResult<()> {
    let mut tap_major = 0;
    for (i, g) in geometries().into_iter().enumerate() {
        let x = data(g.cin * g.h * g.w, i as u32);
        let w: Vec<i8> = data(g.cout * g.cin * g.kh * g.kw, 100 + i as u32).iter().map(|&v| v as i8).collect();
        let x0 = ((3 + 40 * i) % 251) as u8;
        let (ho, wo) = g.out_hw();
        let k = g.cin * g.kh * g.kw;
        let packed = PackedWeights::conv(&w, &g, Some(ho * wo))?;
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
        let how = format!("{} {}", packed.kernel_name(), if packed.tap_major { "tap-major" } else { "im2col" });
        assert_eq!(got, reference(&x, &g, x0, &w, false), "geometry {g:?} on {how}");
        tap_major += packed.tap_major as usize;
    }
    // where the VNNI/AMX kernels are, the tap-major packing was the one tested
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512vnni") {
        assert_eq!(tap_major, geometries().iter().filter(|g| !g.is_pointwise()).count());
    }
    // elsewhere the kernels may take other panels
    #[cfg(not(target_arch = "x86_64"))]
    let _ = tap_major;
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
