//! `edge-agent bench`: one JSON object per model with tract's medians at both precisions, the
//! MAC count, and the agent end to end through a real in-process broker; a bad request is an
//! error. Only the shape of the report is asserted, never a timing.
#![allow(clippy::unwrap_used)]
// the command exists in builds with the `bench` feature (`cargo test --all-features`)
#![cfg(feature = "bench")]

mod common;

use std::time::Duration;

use common::{agent, run_with_timeout};

fn bench(args: &[&str]) -> (bool, String, String) {
    let mut cmd = agent();
    cmd.args(["bench", "--no-reference"]).args(args);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(300));
    (status.success(), out, err)
}

#[test]
fn json_report_for_blazeface() {
    let (ok, out, err) = bench(&["--model", "blazeface", "--runs", "3", "--json"]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["model"], "blazeface");
    assert_eq!(r["input_shape"], serde_json::json!([1, 128, 128, 3]));
    for key in ["tract_fp32_ms", "tract_int8_ms", "int8_over_fp32"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    // BlazeFace-128 does about 31 M multiply-accumulates (tract's own cost model)
    let macs = r["macs"].as_u64().unwrap();
    assert!((20_000_000..50_000_000).contains(&macs), "{macs}");
    for p in ["fp32", "int8"] {
        let v = &r["tract"][p];
        assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0, "{v}");
        assert!(v["file"].as_str().unwrap().ends_with(&format!("blazeface.{p}.onnx")), "{v}");
    }
    // the end-to-end run timed its results through the broker: at least 100 of them, however
    // few runs the rest took (a few frames of a fast model last too short a span to time),
    // more to fill a second of a fast model's, never more than 5000
    let frames = r["e2e"]["frames"].as_u64().unwrap();
    assert!((100..=5000).contains(&frames), "{r}");
    assert!(r["e2e"]["ms_per_frame"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["e2e"]["raw_frames_ms_per_frame"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["e2e_raw_frames_over_raw"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["missing"].as_array().unwrap().is_empty(), "{r}");
}

#[test]
fn table_and_csv_name_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bench.csv");
    let (ok, out, err) = bench(&["--model", "blazeface", "--runs", "2", "--no-e2e", "--csv", csv.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("blazeface ")), "{out}");
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("blazeface,tract,fp32,1,")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("blazeface,tract,int8,1,")), "{csv}");
}

#[test]
fn bad_requests_are_errors() {
    let (ok, _, err) = bench(&["--model", "no-such-model"]);
    assert!(!ok && err.contains("no model named \"no-such-model\""), "{err}");
    let (ok, _, err) = bench(&["--model", "blazeface", "--file", "int8=/no/such.onnx"]);
    assert!(!ok && err.contains("/no/such.onnx"), "{err}");
    let (ok, _, err) = bench(&["--runs", "0"]);
    assert!(!ok && err.contains("--runs"), "{err}");
}

#[test]
fn whisper_decoder_step_is_timed_with_its_cache_inputs() {
    // the step takes a token, 8 self-attention cache tensors and 8 encoder keys/values
    let (ok, out, err) = bench(&["--model", "whisper-tiny-en/decoder", "--runs", "2", "--json"]);
    assert!(ok, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["model"], "whisper-tiny-en/decoder");
    for key in ["tract_fp32_ms", "tract_int8_ms", "tract_int8_qdq_ms"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    assert!(r["missing"].as_array().unwrap().is_empty(), "{r}");
}
