//! `edge-agent bench`: every shipped model timed side by side in one run. For each model, tract
//! at fp32 and at int8 as shipped, and onnxruntime at both precisions on the same input bytes
//! when its venv is there, each in its own process (its own peak RSS and load time) and all
//! timed in turns over the same stretch of time ([`rounds`]); the model's MAC count and the
//! share of this core's peak it reaches; and the agent end to end (photos in, results
//! published to a broker) against raw inference timed in the same process.

pub mod cli;
pub mod cost;
pub mod e2e;
pub mod inputs;
pub mod profile;
pub mod reference;
pub mod rounds;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::config::Precision;
use edge_core::model::Int8Exec;
use edge_core::model::{Catalog, engine};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no model named {0:?} to benchmark (have: {1})")]
    Unknown(String, String),
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{0}")]
    Child(String),
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// tract's (and onnxruntime's) threads for one inference.
    pub threads: usize,
    /// Timed runs after three warm-ups.
    pub runs: usize,
    pub reference: bool,
    pub e2e: bool,
}

/// One graph the benchmark can time: a vision model, Whisper's encoder or its decoder step.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub shape: Vec<usize>,
    /// The graph file of each precision, and the command that makes it when it is missing.
    pub files: BTreeMap<Precision, (PathBuf, Option<String>)>,
    speech: bool,
    /// The model's task for the end-to-end run (vision only).
    pub task: Option<edge_core::model::Task>,
}

/// Whisper's encoder input: 80 mel bins by 3000 frames (30 s).
const WHISPER_MEL: [usize; 3] = [1, 80, 3000];

/// Every benchmarkable graph of a catalog, vision models first.
pub fn targets(catalog: &Catalog) -> Vec<Target> {
    let mut out = Vec::new();
    for name in catalog.names() {
        if let Some(entry) = catalog.get(&name) {
            let files = entry
                .manifest
                .variants
                .iter()
                .map(|(p, v)| (p.clone(), (entry.dir.join(&v.file), v.make.clone())))
                .collect();
            let shape = engine::input_shape(&entry.manifest.input).to_vec();
            out.push(Target { name, shape, files, speech: false, task: Some(entry.manifest.task) });
        }
    }
    for entry in catalog.speech_entries() {
        for role in ["encoder", "decoder"] {
            let mut files = BTreeMap::new();
            for precision in entry.manifest.variants.keys() {
                if let Some((path, _)) = entry.file(precision, role) {
                    files.insert(precision.clone(), (path, entry.make_hint(precision)));
                }
            }
            if !files.is_empty() {
                let name = format!("{}/{role}", entry.manifest.name);
                // the encoder's mel spectrogram; the decoder's one token (its other inputs: [`feed`])
                let shape = if role == "encoder" { WHISPER_MEL.to_vec() } else { vec![1, 1] };
                out.push(Target { name, shape, files, speech: true, task: None });
            }
        }
    }
    out
}

/// tract on one precision of one graph, measured in this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Variant {
    pub file: PathBuf,
    pub file_bytes: u64,
    pub load_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// This process's high-water resident memory (kernel's VmHWM) after the runs.
    pub peak_rss_mb: f64,
}

/// The whole report of one model, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub input_shape: Vec<usize>,
    pub threads: usize,
    pub runs: usize,
    pub macs: Option<u64>,
    pub tract_fp32_ms: Option<f64>,
    pub tract_int8_ms: Option<f64>,
    /// tract int8 / tract fp32 (below 1: int8 pays).
    pub int8_over_fp32: Option<f64>,
    /// The int8 graph as tract runs it without the integer rewrite: float convolutions
    /// between quantize/dequantize passes.
    pub tract_int8_qdq_ms: Option<f64>,
    /// tract int8 QDQ / tract fp32.
    pub int8_qdq_over_fp32: Option<f64>,
    pub onnxruntime_fp32_ms: Option<f64>,
    pub onnxruntime_int8_ms: Option<f64>,
    /// tract int8 / onnxruntime int8.
    pub tract_over_onnxruntime_int8: Option<f64>,
    /// Share of the core's nominal peak MAC rate, per precision.
    pub peak_fraction_fp32: Option<f64>,
    pub peak_fraction_int8: Option<f64>,
    pub e2e: Option<e2e::EndToEnd>,
    /// e2e ms per frame / raw inference ms of the same precision, timed in the end-to-end
    /// run's process between its rounds.
    pub e2e_over_raw: Option<f64>,
    /// The same with raw RGB frames (PPM) in place of the JPEG: what the agent adds when the
    /// frames need no decoding, as a camera's raw frames.
    pub e2e_raw_frames_over_raw: Option<f64>,
    pub tract: BTreeMap<String, Variant>,
    pub onnxruntime: BTreeMap<String, reference::Timing>,
    /// Variants or runs that could not be measured, and why.
    pub missing: Vec<String>,
    pub cpu: cost::Peak,
}

/// A deterministic input in [0, 1): the same bytes for tract and onnxruntime.
/// The inputs `target` is timed on, in its graph's order (see [`inputs`]).
pub fn input_specs(target: &Target) -> TractResult<Vec<inputs::Input>> {
    if !target.speech {
        return Ok(vec![inputs::Input { dt: f32::datum_type(), shape: target.shape.clone() }]);
    }
    let (path, _) = target.files.values().next().context("no graph file")?;
    inputs::declared(path)
}

/// The tensors tract is fed for `target`.
pub fn feed(target: &Target) -> TractResult<TVec<TValue>> {
    input_specs(target)?.iter().map(|i| Ok(i.tensor()?.into_tvalue())).collect()
}

/// Loads one graph of a target as the agent would, or (`FakeQuant`) as tract runs it unaided.
pub fn plan(target: &Target, path: &Path, exec: Int8Exec) -> TractResult<Arc<TypedRunnableModel>> {
    if target.speech {
        return edge_core::speech::load_plan_with(path, exec).map_err(|e| anyhow::anyhow!("{e}"));
    }
    engine::optimized_with(path, &target.shape, exec)?.into_runnable()
}

/// The tract variants of a target: each precision as the agent runs it, and the int8 graph
/// once more as tract runs it unaided (`int8-qdq`, the "before" of the integer rewrite).
pub fn variants(target: &Target) -> Vec<(String, Precision, Int8Exec)> {
    let mut out: Vec<_> = target.files.keys().map(|p| (p.to_string(), p.clone(), Int8Exec::Integer)).collect();
    if target.files.contains_key(&Precision::Int8) {
        out.push(("int8-qdq".into(), Precision::Int8, Int8Exec::FakeQuant));
    }
    out
}

/// One precision of a target loaded here and warmed up: its file, load time, plan and input.
struct Loaded {
    path: PathBuf,
    load_ms: f64,
    plan: Arc<TypedRunnableModel>,
    input: TVec<TValue>,
}

impl Loaded {
    fn new(target: &Target, precision: &Precision, exec: Int8Exec) -> Result<Loaded, BenchError> {
        let (path, hint) = target.files.get(precision).cloned().ok_or_else(|| BenchError::Model {
            path: PathBuf::from(&target.name),
            message: format!("no {precision} variant"),
        })?;
        let err = |message: String| BenchError::Model { path: path.clone(), message };
        if !path.is_file() {
            return Err(err(format!("missing (make it with {})", hint.unwrap_or_default())));
        }
        let load = || -> TractResult<Loaded> {
            let started = Instant::now();
            let plan = plan(target, &path, exec)?;
            let load_ms = started.elapsed().as_secs_f64() * 1e3;
            let input = feed(target)?;
            for _ in 0..3 {
                plan.run(input.clone())?;
            }
            Ok(Loaded { path: path.clone(), load_ms, plan, input })
        };
        load().map_err(|e| err(format!("{e:#}")))
    }

    fn run(&self) -> TractResult<()> {
        self.plan.run(self.input.clone()).map(drop)
    }
}

/// Loads one precision of a target here, warms it up and times it on request (the child
/// process's work; see [`rounds`]).
pub fn serve_variant(target: &Target, precision: &Precision, exec: Int8Exec, opts: &Options) -> anyhow::Result<()> {
    // this thread runs the model, as an agent's inference thread does (`main` put the
    // process among the helpers)
    crate::sched::inference_thread();
    engine::with_threads(opts.threads, || {
        let loaded = Loaded::new(target, precision, exec)?;
        let file_bytes = std::fs::metadata(&loaded.path).map(|m| m.len()).unwrap_or(0);
        let ready = serde_json::json!({ "file": loaded.path, "file_bytes": file_bytes, "load_ms": loaded.load_ms });
        rounds::serve(ready, || loaded.run())
    })
}

/// `runs` timings of one precision of a target, in this process (the raw inference the end
/// to end run is compared with, timed just before and after it).
pub fn time_here(target: &Target, precision: &Precision, opts: &Options) -> anyhow::Result<Vec<f64>> {
    // in the inference class while timing, as an agent's inference thread; back among the
    // helpers after, so that the threads this one starts next (the end-to-end run's) are
    // helpers as in the agent
    crate::sched::inference_thread();
    let times = time_loaded(target, precision, opts);
    if let Err(e) = crate::sched::enter(crate::sched::Class::Helper) {
        tracing::debug!(error = %e, "bench thread left in the inference class");
    }
    times
}

fn time_loaded(target: &Target, precision: &Precision, opts: &Options) -> anyhow::Result<Vec<f64>> {
    engine::with_threads(opts.threads, || {
        let loaded = Loaded::new(target, precision, Int8Exec::Integer)?;
        (0..opts.runs)
            .map(|_| {
                let t = Instant::now();
                loaded.run()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    })
}

/// The median and 90th percentile of `times` (sorted in place).
pub fn median_p90(times: &mut [f64]) -> (f64, f64) {
    if times.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    (median, times[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1])
}

/// The kernel's high-water mark of this process's resident memory, in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// MACs of a target's fp32 graph (the int8 one computes the same products).
pub fn target_macs(target: &Target) -> Option<u64> {
    let (path, _) = target.files.get(&Precision::Fp32).or_else(|| target.files.values().next())?;
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| if target.speech { Ok(m) } else { m.with_input_fact(0, f32::fact(&target.shape).into()) })
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .ok()?;
    cost::macs(&model).ok()
}

/// Measures one target: each tract variant in a child process (`exe`), onnxruntime, e2e.
pub fn report(exe: &Path, overrides: &[String], target: &Target, opts: &Options) -> Report {
    let mut missing = Vec::new();
    // every engine loaded first, then timed in turns (see [`rounds`])
    let mut runners = Vec::new();
    for (key, precision, exec) in variants(target) {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["bench", "--model", &target.name, "--child-variant", &precision.to_string()])
            .args(["--threads", &opts.threads.to_string()])
            .args(overrides)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        if exec == Int8Exec::FakeQuant {
            cmd.arg("--child-fake-quant");
        }
        match rounds::Runner::start(&format!("tract {key}"), cmd) {
            Ok(r) => runners.push(r),
            Err(e) => missing.push(e),
        }
    }
    // onnxruntime reads its inputs from files, kept until it is done
    let mut inputs_dir = None;
    if opts.reference {
        match reference::python() {
            None => missing.push("onnxruntime: no venv (make it with scripts/make-bench-venv.sh)".into()),
            Some(python) => match start_ort(&python, target, opts) {
                Ok((dir, started)) => {
                    inputs_dir = Some(dir);
                    runners.extend(started);
                }
                Err(e) => missing.push(e),
            },
        }
    }
    missing.extend(rounds::interleave(&mut runners, opts.runs));
    let mut tract = BTreeMap::new();
    let mut onnxruntime = BTreeMap::new();
    for mut runner in runners {
        let mut times = std::mem::take(&mut runner.times);
        let ready = runner.ready.clone();
        let name = runner.name.clone();
        let last = match runner.finish() {
            Ok(last) => last,
            Err(e) => {
                missing.push(e);
                continue;
            }
        };
        if let Some(key) = name.strip_prefix("onnxruntime ") {
            onnxruntime.insert(key.to_string(), reference::timing(&ready, &mut times, &last));
        } else if let Some(key) = name.strip_prefix("tract ") {
            let (median_ms, p90_ms) = median_p90(&mut times);
            let v = Variant {
                file: ready["file"].as_str().map(PathBuf::from).unwrap_or_default(),
                file_bytes: ready["file_bytes"].as_u64().unwrap_or(0),
                load_ms: ready["load_ms"].as_f64().unwrap_or(f64::NAN),
                median_ms,
                p90_ms,
                peak_rss_mb: last["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
            };
            tract.insert(key.to_string(), v);
        }
    }
    drop(inputs_dir);
    let e2e = if opts.e2e && target.task.is_some() {
        match child(exe, overrides, target, &Precision::Int8, opts, "--child-e2e") {
            Ok(v) => serde_json::from_value::<e2e::EndToEnd>(v).map_err(|e| missing.push(format!("e2e: {e}"))).ok(),
            Err(e) => {
                missing.push(format!("e2e: {e}"));
                None
            }
        }
    } else {
        None
    };
    let cpu = cost::Peak::detect();
    let macs = target_macs(target);
    let ms = |m: &BTreeMap<String, Variant>, p: &str| m.get(p).map(|v| v.median_ms);
    let ort = |p: &str| onnxruntime.get(p).map(|t: &reference::Timing| t.median_ms);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let (fp32, int8) = (ms(&tract, "fp32"), ms(&tract, "int8"));
    Report {
        model: target.name.clone(),
        input_shape: target.shape.clone(),
        threads: opts.threads,
        runs: opts.runs,
        macs,
        tract_fp32_ms: fp32,
        tract_int8_ms: int8,
        int8_over_fp32: ratio(int8, fp32),
        tract_int8_qdq_ms: ms(&tract, "int8-qdq"),
        int8_qdq_over_fp32: ratio(ms(&tract, "int8-qdq"), fp32),
        onnxruntime_fp32_ms: ort("fp32"),
        onnxruntime_int8_ms: ort("int8"),
        tract_over_onnxruntime_int8: ratio(int8, ort("int8")),
        peak_fraction_fp32: macs.zip(fp32).and_then(|(m, t)| cpu.fraction(m, t, false)),
        peak_fraction_int8: macs.zip(int8).and_then(|(m, t)| cpu.fraction(m, t, true)),
        e2e_over_raw: e2e.as_ref().map(|e| e.ms_per_frame / e.raw_ms),
        e2e_raw_frames_over_raw: e2e.as_ref().map(|e| e.raw_frames_ms_per_frame / e.raw_ms),
        e2e,
        tract,
        onnxruntime,
        missing,
        cpu,
    }
}

/// onnxruntime on each precision of `target`, loaded and warm; the folder of their inputs.
fn start_ort(
    python: &Path,
    target: &Target,
    opts: &Options,
) -> Result<(tempfile::TempDir, Vec<rounds::Runner>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut fed = Vec::new();
    for (i, input) in input_specs(target).map_err(|e| format!("{e:#}"))?.iter().enumerate() {
        let path = dir.path().join(format!("input{i}"));
        let (bytes, dtype) = input.bytes().map_err(|e| format!("{e:#}"))?;
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        fed.push(reference::Fed { path, dtype, shape: input.shape.clone() });
    }
    let mut out = Vec::new();
    for (precision, (path, _)) in &target.files {
        if path.is_file() {
            out.push(reference::start(python, path, &fed, opts.threads, &format!("onnxruntime {precision}"))?);
        }
    }
    Ok((dir, out))
}

/// Runs `exe bench --model NAME <mode> PRECISION --json` and parses its one JSON line.
fn child(
    exe: &Path,
    overrides: &[String],
    target: &Target,
    precision: &Precision,
    opts: &Options,
    mode: &str,
) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(exe)
        .args(["bench", "--model", &target.name, mode, &precision.to_string(), "--json"])
        .args(["--threads", &opts.threads.to_string(), "--runs", &opts.runs.to_string()])
        .args(overrides)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .output()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(stderr.lines().rev().find(|l| l.starts_with("error")).unwrap_or(stderr.trim()).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("child's answer: {e}"))
}

/// Picks the targets named (all when empty).
pub fn select(catalog: &Catalog, names: &[String]) -> Result<Vec<Target>, BenchError> {
    let all = targets(catalog);
    if names.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for n in names {
        // a speech model's name picks each of its graphs; `NAME/encoder` just the one
        let found: Vec<Target> =
            all.iter().filter(|t| t.name == *n || t.name.split('/').next() == Some(n.as_str())).cloned().collect();
        if found.is_empty() {
            let have = all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(BenchError::Unknown(n.clone(), have));
        }
        out.extend(found);
    }
    Ok(out)
}

pub use table::{csv, print_table};
