//! The benchmark's human table and its CSV.

use std::fmt::Write;

use super::Report;

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into())
}

/// The table `edge-agent bench` prints, one row per model, then what could not be measured.
pub fn print_table(reports: &[Report]) -> String {
    let mut s = String::new();
    if let Some(r) = reports.first() {
        let c = &r.cpu;
        let _ = writeln!(
            s,
            "{} ({}, {:.0} MHz, nominal peak {}/{} f32/int8 MACs per cycle); {} thread(s), median of {} runs, ms",
            c.cpu, c.isa, c.mhz, c.f32_macs_per_cycle, c.int8_macs_per_cycle, r.threads, r.runs
        );
    }
    let _ = writeln!(
        s,
        "{:<24} {:>7} {:>9} {:>9} {:>7} {:>9} {:>7} {:>8} {:>8} {:>9} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8}",
        "model",
        "GMACs",
        "tract f32",
        "tract i8",
        "i8/f32",
        "i8 QDQ",
        "QDQ/f32",
        "ort f32",
        "ort i8",
        "tract/ort",
        "%pk f32",
        "%pk i8",
        "e2e",
        "e2e/raw",
        "ppm/raw",
        "load i8",
        "RSS i8"
    );
    for r in reports {
        let i8v = r.tract.get("int8");
        let _ = writeln!(
            s,
            "{:<24} {:>7} {:>9} {:>9} {:>7} {:>9} {:>7} {:>8} {:>8} {:>9} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8}",
            r.model,
            cell(r.macs.map(|m| m as f64 / 1e9), 2),
            cell(r.tract_fp32_ms, 1),
            cell(r.tract_int8_ms, 1),
            cell(r.int8_over_fp32, 2),
            cell(r.tract_int8_qdq_ms, 1),
            cell(r.int8_qdq_over_fp32, 2),
            cell(r.onnxruntime_fp32_ms, 1),
            cell(r.onnxruntime_int8_ms, 1),
            cell(r.tract_over_onnxruntime_int8, 2),
            cell(r.peak_fraction_fp32.map(|f| f * 100.0), 1),
            cell(r.peak_fraction_int8.map(|f| f * 100.0), 1),
            cell(r.e2e.as_ref().map(|e| e.ms_per_frame), 1),
            cell(r.e2e_over_raw, 2),
            cell(r.e2e_raw_frames_over_raw, 2),
            cell(i8v.map(|v| v.load_ms), 0),
            cell(i8v.map(|v| v.peak_rss_mb), 0),
        );
    }
    for r in reports {
        for m in &r.missing {
            let _ = writeln!(s, "  {}: not measured: {m}", r.model);
        }
    }
    s
}

/// One CSV row per model and engine/precision.
pub fn csv(reports: &[Report]) -> String {
    let mut s = String::from("model,engine,precision,threads,median_ms,p90_ms,load_ms,peak_rss_mb,macs\n");
    for r in reports {
        let macs = r.macs.map(|m| m.to_string()).unwrap_or_default();
        for (p, v) in &r.tract {
            let _ = writeln!(
                s,
                "{},tract,{p},{},{:.3},{:.3},{:.1},{:.1},{macs}",
                r.model, r.threads, v.median_ms, v.p90_ms, v.load_ms, v.peak_rss_mb
            );
        }
        for (p, t) in &r.onnxruntime {
            let _ = writeln!(
                s,
                "{},onnxruntime,{p},{},{:.3},{:.3},{:.1},{},{macs}",
                r.model,
                r.threads,
                t.median_ms,
                t.p90_ms,
                t.load_ms,
                t.peak_rss_mb.map(|m| format!("{m:.1}")).unwrap_or_default()
            );
        }
        if let Some(e) = &r.e2e {
            let _ = writeln!(
                s,
                "{},agent-e2e,int8,{},{:.3},,,{:.1},{macs}",
                r.model, r.threads, e.ms_per_frame, e.peak_rss_mb
            );
        }
    }
    s
}
