//! Loading a model variant into tract and running it.
//!
//! A model is loaded once per (name, precision) and shared by every pipeline that uses it;
//! each holder sees it through an `ArcSwap`, so a later update can replace it without locks.
//! `run` is blocking and must only be called from an inference thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tract_onnx::prelude::*;

use super::{InputSpec, Layout, ModelEntry};
use crate::Precision;
use edge_int8::Int8Exec;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model {name} has no {precision} variant")]
    NoVariant { name: String, precision: Precision },
    #[error("model file {path} is missing{}", hint.as_ref().map(|h| format!(" (produce it with: {h})")).unwrap_or_default())]
    Missing { path: PathBuf, hint: Option<String> },
    #[error("cannot load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: output {name:?} named by the manifest is not an output of the graph (outputs: {found:?})")]
    Outputs { path: PathBuf, name: String, found: Vec<String> },
    #[error("{path}: sha256 {actual} does not match the manifest's {expected}; refusing to load")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("inference failed: {0}")]
    Run(String),
}

type Plan = Arc<TypedRunnableModel>;

/// A runnable model variant with what is needed to feed it and read its outputs.
pub struct LoadedModel {
    pub entry: Arc<ModelEntry>,
    pub precision: Precision,
    plan: Plan,
    /// For each output the decoder reads (in the manifest's order), its index in the plan.
    output_index: Vec<usize>,
    pub load_time: Duration,
    /// Inferences completed and failed since loading (the warm-up included): what a pushed
    /// model's probation watches.
    runs: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.entry.manifest.name)
            .field("precision", &self.precision)
            .field("load_time", &self.load_time)
            .finish()
    }
}

/// One node of a loaded plan (see [`LoadedModel::layers`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    pub node: String,
    pub op: String,
    pub info: String,
}

/// A model as pipelines hold it: swappable in place.
pub type SharedModel = Arc<ArcSwap<LoadedModel>>;

impl LoadedModel {
    /// Parses, types and optimises the ONNX file of `precision`, then runs one warm-up
    /// inference on a zero input.
    pub fn load(entry: Arc<ModelEntry>, precision: Precision) -> Result<LoadedModel, EngineError> {
        let m = &entry.manifest;
        let variant = m
            .variants
            .get(&precision)
            .ok_or_else(|| EngineError::NoVariant { name: m.name.clone(), precision: precision.clone() })?;
        let path = entry.dir.join(&variant.file);
        if !path.is_file() {
            return Err(EngineError::Missing { path, hint: variant.make.clone() });
        }
        let started = Instant::now();
        // a flipped bit on an SD card must not silently become wrong answers
        let actual = super::catalog::sha256_file(&path)
            .map_err(|e| EngineError::Load { path: path.clone(), message: e.to_string() })?;
        if !actual.eq_ignore_ascii_case(&variant.sha256) {
            return Err(EngineError::Checksum { path, expected: variant.sha256.clone(), actual });
        }
        let load_err = |e: TractError| EngineError::Load { path: path.clone(), message: format!("{e:#}") };
        let model = optimized(&path, &input_shape(&m.input)).map_err(load_err)?;
        let found: Vec<String> = model
            .output_outlets()
            .map_err(load_err)?
            .iter()
            .map(|o| model.outlet_label(*o).map(String::from).unwrap_or_else(|| model.node(o.node).name.clone()))
            .collect();
        let mut output_index = Vec::new();
        for name in m.decoder.output_names() {
            let i = found.iter().position(|f| *f == name).ok_or_else(|| EngineError::Outputs {
                path: path.clone(),
                name: name.clone(),
                found: found.clone(),
            })?;
            output_index.push(i);
        }
        let plan = unpanicked(|| model.into_runnable())
            .unwrap_or_else(|panic| {
                Err(tract_onnx::tract_core::internal::format_err!("the graph trips a bug in tract: {panic}"))
            })
            .map_err(load_err)?;
        let loaded = LoadedModel {
            entry,
            precision,
            plan,
            output_index,
            load_time: Duration::ZERO,
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        let zero = Tensor::zero::<f32>(&input_shape(&loaded.entry.manifest.input)).map_err(load_err)?;
        loaded.run(zero).map_err(|e| EngineError::Load { path: path.clone(), message: format!("warm-up: {e}") })?;
        Ok(LoadedModel { load_time: started.elapsed(), ..loaded })
    }

    pub fn name(&self) -> &str {
        &self.entry.manifest.name
    }

    /// Every computing node of the optimised plan, in evaluation order: its name, op and what
    /// the op says of itself (for the agent's integer ops, the product kernel that runs it).
    pub fn layers(&self) -> Vec<Layer> {
        use tract_onnx::tract_core::ops::konst::Const;
        use tract_onnx::tract_core::ops::source::TypedSource;
        let model = self.plan.model();
        model
            .nodes()
            .iter()
            .filter(|n| !n.op_is::<Const>() && !n.op_is::<TypedSource>())
            .map(|n| Layer {
                node: n.name.clone(),
                op: n.op.name().to_string(),
                info: n.op.info().map(|i| i.join("; ")).unwrap_or_else(|e| format!("{e}")),
            })
            .collect()
    }

    pub fn version(&self) -> &str {
        &self.entry.manifest.version
    }

    /// Inferences completed, and failed, since loading.
    pub fn counts(&self) -> (u64, u64) {
        (self.runs.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }

    /// Runs one inference; returns the decoder's outputs in manifest order and the time taken.
    pub fn run(&self, input: Tensor) -> Result<(Vec<TValue>, Duration), EngineError> {
        let started = Instant::now();
        // a panic in an op (a pushed graph that trips a bug only on real input) is one failed
        // inference, which probation counts, not the end of the inference thread
        let outcome = unpanicked(|| self.plan.run(tvec!(input.into()))).unwrap_or_else(|panic| {
            Err(tract_onnx::tract_core::internal::format_err!("the model tripped a bug in tract: {panic}"))
        });
        let outputs = outcome.map_err(|e| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            EngineError::Run(format!("{e:#}"))
        })?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let picked = self.output_index.iter().map(|&i| outputs[i].clone()).collect();
        Ok((picked, elapsed))
    }
}

/// Parses an image model's ONNX file for an input of `shape` and optimises it: the graph the
/// agent runs (and `edge-agent bench` times).
/// Quantized convolutions run in integers (the `edge_int8` crate).
pub fn optimized(path: &std::path::Path, shape: &[usize]) -> TractResult<TypedModel> {
    optimized_with(path, shape, Int8Exec::Integer)
}

/// [`optimized`], choosing how an int8 model's quantized layers run.
pub fn optimized_with(path: &std::path::Path, shape: &[usize], exec: Int8Exec) -> TractResult<TypedModel> {
    // tract asserts on shapes a well-formed graph never has (a pooling stride of 0 panics it
    // while typing the graph): a model file is input, and a bad one is an error, not a crash
    unpanicked(|| {
        let (model, _) = edge_int8::onnx_model(path, exec)?;
        model.with_input_fact(0, f32::fact(shape).into())?.into_optimized()
    })
    .unwrap_or_else(|panic| {
        Err(tract_onnx::tract_core::internal::format_err!("the graph trips a bug in tract: {panic}"))
    })
}

/// `f`, with a panic in it caught and returned as its message. The panic hook still prints it
/// to stderr; the caller turns it into an error of its own.
pub fn unpanicked<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Runs `f` with tract using `threads` threads for each inference (1: the calling thread).
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    if threads <= 1 {
        return f();
    }
    multithread_tract_scope(Executor::multithread(threads), f)
}

/// The input tensor shape an [`InputSpec`] describes (batch of one).
pub fn input_shape(spec: &InputSpec) -> [usize; 4] {
    let (w, h) = (spec.width as usize, spec.height as usize);
    match spec.layout {
        Layout::Nchw => [1, 3, h, w],
        Layout::Nhwc => [1, h, w, 3],
    }
}

/// Loads each (model, precision) once and hands out shared handles. Whatever replaces a
/// loaded model later (an update restored at start, one pushed while running) stores into the
/// same handle, so every holder sees it; the pool itself only loads shipped files.
#[derive(Default)]
pub struct ModelPool {
    loaded: HashMap<(String, Precision), (Arc<ModelEntry>, SharedModel)>,
}

impl ModelPool {
    pub fn get_or_load(&mut self, entry: &ModelEntry, precision: &Precision) -> Result<SharedModel, EngineError> {
        let key = (entry.manifest.name.clone(), precision.clone());
        if let Some((_, m)) = self.loaded.get(&key) {
            return Ok(m.clone());
        }
        let entry = Arc::new(entry.clone());
        let model = LoadedModel::load(entry.clone(), precision.clone())?;
        tracing::info!(model = %key.0, %precision, load_ms = model.load_time.as_millis() as u64, "model loaded");
        let shared = Arc::new(ArcSwap::from_pointee(model));
        self.loaded.insert(key, (entry, shared.clone()));
        Ok(shared)
    }

    /// Every model loaded so far: its catalog entry (the shipped files), precision and handle.
    pub fn loaded(&self) -> impl Iterator<Item = (&Arc<ModelEntry>, &Precision, &SharedModel)> {
        self.loaded.iter().map(|((_, p), (e, m))| (e, p, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_panics_tract_is_an_error() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/maxpool-stride-0.onnx");
        let message = format!("{:#}", optimized(&path, &[1, 3, 416, 416]).expect_err("a stride of 0 cannot load"));
        assert!(message.contains("bug in tract"), "{message}");
    }

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(unpanicked(|| 7), Ok(7));
        let n = std::hint::black_box(0usize);
        assert!(unpanicked(|| 1 / n).unwrap_err().contains("divide by zero"));
        assert_eq!(unpanicked(|| -> u8 { panic!("{}", String::from("owned")) }), Err("owned".into()));
    }
}
