//! What a model asks of the core: its multiply-accumulate count, read off tract's own cost
//! model of the decluttered graph, and this core's nominal peak MAC rate, read off
//! `/proc/cpuinfo`, so a measured time becomes a fraction of what the silicon could do.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;

/// Multiply-accumulates of one inference of a typed model (convolutions, matmuls, gemms).
pub fn macs(model: &TypedModel) -> TractResult<u64> {
    let mut total = 0u64;
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id)?;
        for (cost, count) in node.op.cost(&inputs)? {
            if let Cost::FMA(_) = cost {
                total += count.to_i64().map(|c| c.max(0) as u64).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// A core's nominal peak, in multiply-accumulates per second, for f32 and for int8.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peak {
    pub cpu: String,
    pub mhz: f64,
    /// The vector extension the figures assume.
    pub isa: String,
    pub f32_macs_per_cycle: f64,
    pub int8_macs_per_cycle: f64,
}

impl Peak {
    /// From `/proc/cpuinfo`. Assumes two vector FMA pipes (true of the server x86 cores and of
    /// Cortex-A76/A78; a Cortex-A72 or an AVX-512 part with one FMA unit has half).
    pub fn detect() -> Peak {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Peak::from_cpuinfo(&info)
    }

    pub fn from_cpuinfo(info: &str) -> Peak {
        let field = |key: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags: Vec<String> = field("flags")
            .or_else(|| field("Features"))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let has = |f: &str| flags.iter().any(|x| x == f);
        let cpu =
            field("model name").or_else(|| field("CPU part").map(|p| format!("ARM part {p}"))).unwrap_or_default();
        let mhz = field("cpu MHz").and_then(|m| m.parse().ok()).unwrap_or(0.0);
        let (isa, f32_lanes, int8_lanes) = if has("avx512_vnni") {
            ("avx512-vnni", 16.0, 64.0)
        } else if has("avx512f") {
            ("avx512", 16.0, 32.0)
        } else if has("avx_vnni") {
            ("avx-vnni", 8.0, 32.0)
        } else if has("avx2") && has("fma") {
            ("avx2+fma", 8.0, 16.0)
        } else if has("asimddp") {
            ("neon+dotprod", 4.0, 16.0)
        } else if has("asimd") || has("neon") {
            ("neon", 4.0, 8.0)
        } else {
            ("scalar", 1.0, 1.0)
        };
        Peak { cpu, mhz, isa: isa.into(), f32_macs_per_cycle: 2.0 * f32_lanes, int8_macs_per_cycle: 2.0 * int8_lanes }
    }

    /// The share of this core's peak that `macs` in `ms` milliseconds reach, at a precision.
    pub fn fraction(&self, macs: u64, ms: f64, int8: bool) -> Option<f64> {
        let per_cycle = if int8 { self.int8_macs_per_cycle } else { self.f32_macs_per_cycle };
        (self.mhz > 0.0 && ms > 0.0).then(|| macs as f64 / (ms * 1e-3) / (per_cycle * self.mhz * 1e6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_x86_and_arm_cpuinfo() {
        let x86 = "model name\t: Some Xeon\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n";
        let p = Peak::from_cpuinfo(x86);
        assert_eq!(
            (p.isa.as_str(), p.mhz, p.f32_macs_per_cycle, p.int8_macs_per_cycle),
            ("avx512-vnni", 2100.0, 32.0, 128.0)
        );
        // 1e9 MACs in 1 s at 2.1 GHz x 32 per cycle
        let f = p.fraction(1_000_000_000, 1000.0, false).unwrap_or_default();
        assert!((f - 1.0 / 67.2).abs() < 1e-6, "{f}");
        let arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm asimddp\nCPU part\t: 0xd0b\n";
        let p = Peak::from_cpuinfo(arm);
        assert_eq!((p.isa.as_str(), p.f32_macs_per_cycle), ("neon+dotprod", 8.0));
        assert!(p.fraction(1, 1.0, true).is_none(), "no clock, no fraction");
    }
}
