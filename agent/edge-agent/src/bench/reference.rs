//! The reference runtime: onnxruntime (Python, from the venv `scripts/make-bench-venv.sh`
//! makes) timing the same ONNX file on the same input bytes with the same thread count.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::rounds::Runner;

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Timing {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub load_ms: f64,
    pub version: String,
    /// The Python process's high-water resident memory (interpreter included).
    pub peak_rss_mb: Option<f64>,
}

/// The venv's python: `$EDGE_AGENT_ORT_PYTHON`, else `scripts/.venv-bench` of this source tree.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGE_AGENT_ORT_PYTHON") {
        return Some(p.into());
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/.venv-bench/bin/python");
    p.is_file().then_some(p)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-ort.py")
}

/// One input as onnxruntime reads it: raw little-endian values in a file.
#[derive(Debug, Clone)]
pub struct Fed {
    pub path: PathBuf,
    /// numpy's name of the element type (`<f4`, `<i8`)
    pub dtype: &'static str,
    pub shape: Vec<usize>,
}

/// Starts onnxruntime on `model` and `inputs` (in the graph's input order), loaded and warm,
/// ready to be asked for runs (see [`super::rounds`]).
pub fn start(python: &Path, model: &Path, inputs: &[Fed], threads: usize, name: &str) -> Result<Runner, String> {
    let inputs: Vec<_> =
        inputs.iter().map(|i| serde_json::json!({"file": i.path, "dtype": i.dtype, "shape": i.shape})).collect();
    let args = serde_json::json!({ "model": model, "inputs": inputs, "threads": threads, "warmup": 3 });
    let mut cmd = Command::new(python);
    cmd.arg(script()).arg(args.to_string());
    Runner::start(name, cmd)
}

/// The timing of a finished runner from its first line, its times and its last line.
pub fn timing(ready: &serde_json::Value, times: &mut [f64], last: &serde_json::Value) -> Timing {
    let (median_ms, p90_ms) = super::median_p90(times);
    Timing {
        median_ms,
        p90_ms,
        load_ms: ready["load_ms"].as_f64().unwrap_or(f64::NAN),
        version: ready["version"].as_str().unwrap_or_default().to_string(),
        peak_rss_mb: last["peak_rss_mb"].as_f64(),
    }
}
