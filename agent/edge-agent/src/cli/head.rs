//! `edge-agent classify` and `edge-agent head train|info`: the work behind the commands, so
//! the binary only parses arguments.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::tract_ndarray::Array2;

use crate::config::Precision;
use edge_core::head::train::{Dataset, FitOptions, accuracy, fit};
use edge_core::head::{Head, HeadManifest};
use edge_core::model::{Catalog, ModelPool};
use edge_core::vision::embed::Backbone;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no model named {0:?} (available: {1})")]
    NoModel(String, String),
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// Loads a backbone model by name.
pub fn backbone(catalog: &Catalog, name: &str, precision: &Precision) -> Result<Backbone, CliError> {
    let entry = catalog.get(name).ok_or_else(|| CliError::NoModel(name.into(), catalog.names().join(", ")))?;
    let model = ModelPool::default().get_or_load(entry, precision).map_err(other)?;
    Backbone::new(model).map_err(other)
}

/// Embeds images on every core (the plan is shared; each run has its own state), with a
/// progress bar on a terminal. Results are in input order.
pub fn embed_all(backbone: &Backbone, paths: &[PathBuf]) -> Vec<Result<Vec<f32>, String>> {
    let bar = Progress::new("embedding", paths.len());
    type Slot = Mutex<Option<Result<Vec<f32>, String>>>;
    let results: Vec<Slot> = paths.iter().map(|_| Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { return };
                    let r = edge_core::source::decode_image_file(path)
                        .map_err(|e| e.to_string())
                        .and_then(|img| backbone.embed(&img, None).map(|(e, _)| e).map_err(|e| e.to_string()));
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                    bar.step();
                }
            });
        }
    });
    bar.finish();
    results.into_iter().map(|m| m.into_inner().ok().flatten().unwrap_or_else(|| Err("not embedded".into()))).collect()
}

/// `<what> <done>/<total>` redrawn on one stderr line while stderr is a terminal (at most
/// every tenth of a second); nothing otherwise, so logs stay clean.
struct Progress {
    what: &'static str,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    last: Mutex<Instant>,
    tty: bool,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        Progress { what, total, done: 0.into(), last: Mutex::new(Instant::now()), tty }
    }

    fn step(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if !self.tty {
            return;
        }
        // try_lock: a worker never waits on the display
        if let Ok(mut last) = self.last.try_lock()
            && (last.elapsed().as_millis() >= 100 || done == self.total)
        {
            *last = Instant::now();
            eprint!("\r{} {done}/{}", self.what, self.total);
        }
    }

    fn finish(&self) {
        if self.tty {
            // clear the line
            eprint!("\r{:width$}\r", "", width = self.what.len() + 24);
        }
    }
}

/// What `head train` reports (also stored in the head's metrics).
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub head: String,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    pub chance: f64,
    pub l2: f32,
    pub iterations: usize,
    pub embed_secs: f64,
    pub fit_secs: f64,
    pub bytes: usize,
}

pub struct TrainArgs<'a> {
    pub backbone: &'a str,
    pub precision: Precision,
    pub data: &'a Path,
    pub out: &'a Path,
    pub name: Option<String>,
    pub version: Option<String>,
    pub holdout: f64,
    pub l2: f32,
    pub seed: u64,
}

/// Embeds the dataset, fits a head, checks it on the held-out split and writes it.
pub fn train(catalog: &Catalog, args: TrainArgs<'_>) -> Result<TrainReport, CliError> {
    let ds = Dataset::open(args.data).map_err(other)?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "head".into())
    });
    let version = args.version.clone().unwrap_or_else(default_version);
    for (what, v) in [("name", &name), ("version", &version)] {
        if !edge_core::head::valid_name(v) {
            return Err(CliError::Other(format!("{what} {v:?}: use 1 to 64 of letters, digits, '.', '_', '-'")));
        }
    }
    if !(0.0..0.9).contains(&args.holdout) {
        return Err(CliError::Other("--holdout must be in [0, 0.9)".into()));
    }
    let backbone = backbone(catalog, args.backbone, &args.precision)?;
    let started = Instant::now();
    let paths: Vec<PathBuf> = ds.examples.iter().map(|(p, _)| p.clone()).collect();
    let embedded = embed_all(&backbone, &paths);
    let embed_secs = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    let mut usable = Vec::new();
    for (i, r) in embedded.into_iter().enumerate() {
        match r {
            Ok(e) => {
                rows.push(e);
                usable.push(i);
            }
            Err(e) => tracing::warn!(image = %ds.examples[i].0.display(), error = %e, "skipped"),
        }
    }
    let (train_idx, val_idx) = ds.split(args.holdout, args.seed);
    let pick = |idx: &[usize]| {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for &i in idx {
            if let Some(row) = usable.iter().position(|&u| u == i) {
                x.extend_from_slice(&rows[row]);
                y.push(ds.examples[i].1);
            }
        }
        let n = y.len();
        (Array2::from_shape_vec((n, backbone.dim()), x).unwrap_or_else(|_| Array2::zeros((0, backbone.dim()))), y)
    };
    let (x_train, y_train) = pick(&train_idx);
    let (x_val, y_val) = pick(&val_idx);
    if y_train.is_empty() {
        return Err(CliError::Other("no training image could be read".into()));
    }
    let fit_started = Instant::now();
    let fitted = fit(&x_train, &y_train, ds.labels.len(), FitOptions { l2: args.l2, ..FitOptions::default() });
    let fit_secs = fit_started.elapsed().as_secs_f64();
    let train_accuracy = accuracy(&fitted.weight, &fitted.bias, &x_train, &y_train);
    let val_accuracy = accuracy(&fitted.weight, &fitted.bias, &x_val, &y_val);
    let metrics = serde_json::json!({
        "train_examples": y_train.len(), "val_examples": y_val.len(),
        "train_accuracy": train_accuracy, "val_accuracy": if val_accuracy.is_nan() { None } else { Some(val_accuracy) },
        "l2": args.l2, "iterations": fitted.iterations, "loss": fitted.final_loss, "seed": args.seed,
        "precision": args.precision.as_str(),
    });
    let manifest = HeadManifest {
        name: name.clone(),
        version: version.clone(),
        backbone: args.backbone.into(),
        backbone_sha256: backbone.sha256(),
        input_dim: backbone.dim(),
        labels: ds.labels.clone(),
        metrics,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let head = Head::new(manifest, fitted.weight.iter().copied().collect(), fitted.bias.to_vec()).map_err(other)?;
    let bytes = head.to_bytes();
    std::fs::write(args.out, &bytes).map_err(|e| CliError::Other(format!("{}: {e}", args.out.display())))?;
    Ok(TrainReport {
        head: args.out.display().to_string(),
        name,
        version,
        chance: 1.0 / ds.labels.len() as f64,
        labels: ds.labels,
        train_examples: y_train.len(),
        val_examples: y_val.len(),
        train_accuracy,
        val_accuracy,
        l2: args.l2,
        iterations: fitted.iterations,
        embed_secs,
        fit_secs,
        bytes: bytes.len(),
    })
}

/// `YYYYMMDDTHHMMSSZ` now, a valid version that sorts by time.
fn default_version() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "")
}

/// `edge-agent classify`: one JSON line per image; returns whether any failed.
pub fn classify_files(
    catalog: &Catalog,
    model: &str,
    precision: &Precision,
    head: Option<&Path>,
    top_k: usize,
    images: &[PathBuf],
) -> Result<bool, CliError> {
    let entry = catalog.get(model).ok_or_else(|| CliError::NoModel(model.into(), catalog.names().join(", ")))?;
    let head = match head {
        Some(p) => Head::from_file(p).map_err(other)?,
        None => edge_core::head::shipped(entry, "imagenet").map_err(|e| CliError::Other(e.to_string()))?,
    };
    let backbone = backbone(catalog, model, precision)?;
    if head.manifest.input_dim != backbone.dim() {
        return Err(CliError::Other(format!(
            "head reads {} features, {model} gives {}",
            head.manifest.input_dim,
            backbone.dim()
        )));
    }
    if head.manifest.backbone_sha256.to_lowercase() != backbone.sha256() {
        tracing::warn!(head = %head.manifest.name, "head was trained on another backbone file; scores may be off");
    }
    let mut failed = false;
    for path in images {
        let result = edge_core::source::decode_image_file(path).map_err(|e| e.to_string()).and_then(|img| {
            let (e, took) = backbone.embed(&img, None).map_err(|e| e.to_string())?;
            let p = head.probabilities(&e).ok_or("non-finite scores")?;
            Ok((head.top_k(&p, top_k), took))
        });
        let line = match result {
            Ok((labels, took)) => serde_json::json!({
                "source": path.display().to_string(),
                "head": {"name": head.manifest.name, "version": head.manifest.version},
                "inference_ms": (took.as_secs_f64() * 1e5).round() / 100.0,
                "labels": labels,
            }),
            Err(e) => {
                failed = true;
                serde_json::json!({ "source": path.display().to_string(), "error": e })
            }
        };
        println!("{line}");
    }
    Ok(failed)
}

/// `edge-agent head info`: the manifest of a head file, as JSON.
pub fn info(path: &Path) -> Result<serde_json::Value, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    let head = Head::from_bytes(&bytes).map_err(other)?;
    let mut v = serde_json::to_value(&head.manifest).map_err(other)?;
    v["bytes"] = bytes.len().into();
    v["sha256"] = crate::update::sha256_hex(&bytes).into();
    Ok(v)
}
