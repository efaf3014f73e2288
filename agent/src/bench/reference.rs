//! The reference runtime: onnxruntime (Python, from the venv `scripts/make-bench-venv.sh`
//! makes) timing the same ONNX file on the same input bytes with the same thread count.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Timing {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub load_ms: f64,
    pub version: String,
}

/// The venv's python: `$EDGE_AGENT_ORT_PYTHON`, else `scripts/.venv-bench` of this source tree.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGE_AGENT_ORT_PYTHON") {
        return Some(p.into());
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/.venv-bench/bin/python");
    p.is_file().then_some(p)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench-ort.py")
}

/// One input as onnxruntime reads it: raw little-endian values in a file.
#[derive(Debug, Clone)]
pub struct Fed {
    pub path: PathBuf,
    /// numpy's name of the element type (`<f4`, `<i8`)
    pub dtype: &'static str,
    pub shape: Vec<usize>,
}

/// Times `model` in onnxruntime on `inputs`, in the graph's input order.
pub fn time(python: &Path, model: &Path, inputs: &[Fed], threads: usize, runs: usize) -> Result<Timing, String> {
    let inputs: Vec<_> =
        inputs.iter().map(|i| serde_json::json!({"file": i.path, "dtype": i.dtype, "shape": i.shape})).collect();
    let args = serde_json::json!({
        "model": model, "inputs": inputs, "threads": threads, "runs": runs, "warmup": 3,
    });
    let out = Command::new(python)
        .arg(script())
        .arg(args.to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("onnxruntime on {}: {}", model.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("onnxruntime's answer: {e}"))
}
