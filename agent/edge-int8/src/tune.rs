//! Which product kernel does a product: the candidates this core offers for its shape, and,
//! for a convolution, the one that runs it fastest, timed on the layer itself once when the
//! model loads. Which kernel is faster depends on the layer's shape in ways no simple
//! rule caught (on this project's x86 test machine AMX beat AVX-512 VNNI on NanoDet's deep
//! 128-channel layers and lost by 40 % on its 32-channel ones); every candidate computes the
//! same exact integer sums, so the choice changes speed only, never an answer.

use std::time::Instant;

use anyhow::{Context, ensure};
use tract_linalg::MmmDispatch;
use tract_linalg::mmm::{MatMatMul, Query};
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::*;

use super::kernels::{Geometry, PackedWeights};

/// Timed products per candidate after one untimed one; the fastest counts (a slower run is the
/// host's doing, not the kernel's).
const RUNS: usize = 2;

/// The candidate that runs a product of geometry `g` fastest here; the only one without timing.
pub fn fastest(mut options: Vec<PackedWeights>, g: &Geometry) -> TractResult<PackedWeights> {
    if options.len() <= 1 {
        return options.pop().context("no i8 x i8 -> i32 product kernel on this core");
    }
    // the data does not change an integer kernel's time: a constant input will do; and a few
    // rows of outputs tell the time per column (measured, NanoDet's load: 22 ms untimed,
    // 220 ms timing whole layers three times, 85-99 ms timing slices twice)
    let g = &slice(g);
    let x = vec![128u8; g.cin * g.h * g.w];
    let (ho, wo) = g.out_hw();
    let mut c = Tensor::zero::<i32>(&[g.cout, ho * wo])?;
    let mut best: Option<(f64, usize)> = None;
    for (i, option) in options.iter().enumerate() {
        option.product(&x, g, 128, &mut c)?;
        let mut fastest = f64::INFINITY;
        for _ in 0..RUNS {
            let started = Instant::now();
            option.product(&x, g, 128, &mut c)?;
            fastest = fastest.min(started.elapsed().as_secs_f64());
        }
        if best.is_none_or(|(t, _)| fastest < t) {
            best = Some((fastest, i));
        }
    }
    let (_, i) = best.context("no candidate timed")?;
    tracing::debug!(geometry = ?g, kernel = options[i].kernel_name(), "product kernel chosen by timing");
    Ok(options.swap_remove(i))
}

/// The i8 × i8 → i32 product kernels of this core for an `m × k` by `k × n` product, and their
/// packings.
fn query(m: usize, k: usize, n: Option<usize>) -> Query {
    Query {
        weight: i8::datum_type().into(),
        activation: i8::datum_type(),
        accumulators: tvec!(i32::datum_type()),
        store: Some(i32::datum_type()),
        allow_extractor: false,
        m: Some(m),
        k: Some(k),
        n,
    }
}

fn is_amx(mmm: &dyn MatMatMul) -> bool {
    mmm.name().contains("amx")
}

/// The best product kernel for the shape on this core (tract's choice), and its packing.
pub(super) fn pick(m: usize, k: usize, n: Option<usize>) -> TractResult<(Box<dyn MatMatMul>, usize)> {
    candidates(m, k, n, true)?.into_iter().next().context("no i8 x i8 -> i32 product kernel on this core")
}

/// The kernels worth timing for the shape, best guess first: tract's choice and, where it
/// took AMX, the widest of the others. AMX multiplies 64 bytes of K at a time: a shallower
/// product pays for padding and tile setup (measured: a 16-deep 1x1 convolution of
/// EfficientNet at 2.3 GMAC/s on the AMX 8x8 kernel), so there only the others are
/// candidates. `any_format` keeps kernels whose panels are not K=4-interleaved; otherwise
/// only K=4 ones are offered.
pub(super) fn candidates(
    m: usize,
    k: usize,
    n: Option<usize>,
    any_format: bool,
) -> TractResult<Vec<(Box<dyn MatMatMul>, usize)>> {
    let q = query(m, k, n);
    let dispatch = MmmDispatch::native();
    let k4 =
        |s: &(Box<dyn MatMatMul>, usize)| any_format || s.0.packings()[s.1].1.downcast_ref::<PackedI8K4>().is_some();
    let mut others: Vec<(Box<dyn MatMatMul>, usize)> = dispatch
        .suitable(&q)
        .into_iter()
        .filter(|s| s.2.is_none() && !is_amx(&*s.0))
        .map(|s| (s.0, s.1))
        .filter(k4)
        .collect();
    // the widest tile; between tiles as wide, a dot-product (K=4) kernel: on a Cortex-A76
    // the widening `arm64simd_mmm_i32_8x8` came before `arm64simd_mmm_i32_8x8_dot` and took
    // every layer shallower than 64 (checked under qemu by scripts/arm-kernels.sh)
    others.sort_by_key(|s| std::cmp::Reverse((s.0.mr() * s.0.nr(), !is_plain(s))));
    let widest_other = others.into_iter().next().map(prefer_plain);
    if k < 64 {
        return Ok(widest_other.into_iter().collect());
    }
    let (mmm, packing, extractor) = dispatch.pick(&q).context("no i8 x i8 -> i32 product kernel on this core")?;
    ensure!(extractor.is_none(), "the picked kernel needs a panel extractor");
    let first = prefer_plain((mmm, packing));
    if !k4(&first) {
        return Ok(widest_other.into_iter().collect());
    }
    let mut out = vec![first];
    if is_amx(&*out[0].0) {
        out.extend(widest_other);
    }
    Ok(out)
}

/// Whether a kernel's activations are in a plain (not K=4-interleaved) layout: the widening
/// kernels of cores without a dot-product instruction.
fn is_plain(s: &(Box<dyn MatMatMul>, usize)) -> bool {
    s.0.packings()[s.1].1.downcast_ref::<PackedI8K4>().is_none()
}

/// `kernel` or, where it is a plain-layout one, the plain-layout kernel measured fastest on
/// this core (once per process, [`fastest_plain`]). Which one that is cannot be read off the
/// instruction set: on this project's AVX2-only test machine (Zen 3 under KVM), tract's ymm
/// `avx2_mmm_i32_8x8` ran an i8 product at 0.43 GMAC/s, its inner loop's one legacy-SSE load
/// stalling every step, while the xmm `avx_mmm_i32_8x4` it is meant to supersede does not
/// have that load. Every candidate computes the same exact sums.
fn prefer_plain(kernel: (Box<dyn MatMatMul>, usize)) -> (Box<dyn MatMatMul>, usize) {
    if !is_plain(&kernel) {
        return kernel;
    }
    let Some(name) = fastest_plain() else { return kernel };
    if kernel.0.name() == name {
        return kernel;
    }
    let q = query(64, 256, Some(256));
    MmmDispatch::native()
        .suitable(&q)
        .into_iter()
        .find(|s| s.0.name() == name && s.2.is_none())
        .map(|s| (s.0, s.1))
        .unwrap_or(kernel)
}

/// The name of the fastest plain-layout i8 kernel of this core that is not a generic
/// (portable Rust) one, timed once on a 64 × 256 by 256 × 256 product; `None` when there is
/// no choice to make.
fn fastest_plain() -> Option<&'static str> {
    static CHOICE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let (m, k, n) = (64, 256, 256);
            let options: Vec<_> = MmmDispatch::native()
                .suitable(&query(m, k, Some(n)))
                .into_iter()
                .filter(|s| s.2.is_none() && !s.0.name().starts_with("generic"))
                .map(|s| (s.0, s.1))
                .filter(is_plain)
                .collect();
            if options.len() < 2 {
                return None;
            }
            let w: Vec<i8> = (0..m * k).map(|i| (i % 251) as i8).collect();
            let x = vec![128u8; k * n];
            let g = Geometry { cin: k, h: 1, w: n, cout: m, kh: 1, kw: 1, stride: (1, 1), pads: [0; 4] };
            let mut best: Option<(f64, String)> = None;
            for (mmm, packing) in options {
                let name = mmm.name().to_string();
                let Ok(weights) = PackedWeights::with_kernel(&w, m, k, mmm, packing) else { continue };
                let Ok(mut c) = Tensor::zero::<i32>(&[m, n]) else { return None };
                let mut fastest = f64::INFINITY;
                for run in 0..=RUNS {
                    let started = Instant::now();
                    if weights.product(&x, &g, 128, &mut c).is_err() {
                        fastest = f64::INFINITY;
                        break;
                    }
                    if run > 0 {
                        fastest = fastest.min(started.elapsed().as_secs_f64());
                    }
                }
                tracing::debug!(kernel = name, ms = fastest * 1e3, "plain-layout i8 kernel timed");
                if fastest.is_finite() && best.as_ref().is_none_or(|(t, _)| fastest < *t) {
                    best = Some((fastest, name));
                }
            }
            best.map(|(_, name)| name)
        })
        .as_deref()
}

/// Output columns a timed product computes at most.
const COLUMNS: usize = 1024;

/// `g` cut to the fewest input rows that give about [`COLUMNS`] outputs (all of it when it
/// is smaller): same channels, width, kernel, stride and padding, so the same per-column
/// work.
fn slice(g: &Geometry) -> Geometry {
    let (ho, wo) = g.out_hw();
    let rows = COLUMNS.div_ceil(wo.max(1)).max(1);
    if rows >= ho {
        return *g;
    }
    let [pt, _, pb, _] = g.pads;
    // the input height whose padded height gives `rows` output rows
    let h = ((rows - 1) * g.stride.0 + g.kh).saturating_sub(pt + pb).max(1);
    Geometry { h: h.min(g.h), ..*g }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plain_layout_kernel_gives_the_reference_sums() -> TractResult<()> {
        use crate::kernels::tests::{data, reference};
        let g = Geometry { cin: 24, h: 9, w: 11, cout: 20, kh: 1, kw: 1, stride: (1, 1), pads: [0; 4] };
        let (m, k, n) = (g.cout, g.cin, g.h * g.w);
        let w: Vec<i8> = data(m * k, 3).into_iter().map(|v| v as i8).collect();
        let x = data(k * n, 5);
        let want = reference(&x, &g, 128, &w, false);
        let plain: Vec<_> = MmmDispatch::native()
            .suitable(&query(m, k, Some(n)))
            .into_iter()
            .filter(|s| s.2.is_none())
            .map(|s| (s.0, s.1))
            .filter(is_plain)
            .collect();
        for (mmm, packing) in plain {
            let name = mmm.name().to_string();
            let weights = PackedWeights::with_kernel(&w, m, k, mmm, packing)?;
            let mut c = Tensor::zero::<i32>(&[m, n])?;
            weights.product(&x, &g, 128, &mut c)?;
            assert_eq!(c.try_as_plain_ram()?.as_slice::<i32>()?, &want[..], "{name}");
        }
        // and the choice, where there is one, is one of them
        if let Some(name) = fastest_plain() {
            assert!(!name.starts_with("generic"), "{name}");
        }
        Ok(())
    }

    #[test]
    fn a_slice_keeps_the_layer_but_its_height() {
        let g = Geometry { cin: 32, h: 104, w: 104, cout: 32, kh: 3, kw: 3, stride: (1, 1), pads: [1; 4] };
        let s = slice(&g);
        assert_eq!(Geometry { h: s.h, ..g }, s);
        let (ho, wo) = s.out_hw();
        assert!(ho * wo >= COLUMNS && ho * wo < COLUMNS + wo, "{ho}x{wo}");
        // strided, and small enough to be timed whole
        let g = Geometry { cin: 3, h: 416, w: 416, cout: 32, kh: 3, kw: 3, stride: (2, 2), pads: [1; 4] };
        let (ho, wo) = slice(&g).out_hw();
        assert!(ho * wo >= COLUMNS && ho * wo < COLUMNS + wo, "{ho}x{wo}");
        let g = Geometry { cin: 8, h: 7, w: 7, cout: 8, kh: 1, kw: 1, stride: (1, 1), pads: [0; 4] };
        assert_eq!(slice(&g), g);
    }
}
