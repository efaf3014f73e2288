//! Classification heads: the small, replaceable part of a classifier that sits on a pretrained
//! backbone's embedding. A head is one safetensors file (`weight [classes, dim]`, `bias
//! [classes]`, f32) whose `__metadata__` is its manifest: name, version, labels, input dim,
//! the sha256 of the backbone file it was trained on, and training metrics. Parsing checks
//! every shape against the manifest, so a head that loads is a head that can run.

pub mod slot;
pub mod train;

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

/// The `format` every head's metadata carries.
pub const FORMAT: &str = "edge-agent.head.v1";
/// Largest number of classes a head may have.
pub const MAX_CLASSES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("not a head file: {0}")]
    Format(String),
    #[error("head metadata: {0}")]
    Metadata(String),
    #[error("head shapes: {0}")]
    Shape(String),
    #[error("cannot read {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("model {model} ships no head {head:?}")]
    NotShipped { model: String, head: String },
    #[error("head {path}: sha256 {actual} does not match the manifest")]
    Checksum { path: std::path::PathBuf, actual: String },
    #[error("head {path}: {source}")]
    File { path: std::path::PathBuf, source: Box<HeadError> },
}

/// A head shipped beside a model (its manifest's `[heads]`), checked against the manifest's
/// sha256 before it is parsed.
pub fn shipped(entry: &crate::model::ModelEntry, name: &str) -> Result<Head, HeadError> {
    let v = entry
        .manifest
        .heads
        .get(name)
        .ok_or_else(|| HeadError::NotShipped { model: entry.manifest.name.clone(), head: name.to_string() })?;
    let path = entry.dir.join(&v.file);
    let actual = crate::model::sha256_file(&path).map_err(|source| HeadError::Io { path: path.clone(), source })?;
    if !actual.eq_ignore_ascii_case(&v.sha256) {
        return Err(HeadError::Checksum { path, actual });
    }
    Head::from_file(&path).map_err(|e| HeadError::File { path, source: Box::new(e) })
}

/// What a head says about itself (the safetensors `__metadata__`, all strings on disk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadManifest {
    pub name: String,
    pub version: String,
    /// The backbone model's name, e.g. `efficientnet-lite0`.
    pub backbone: String,
    /// sha256 of the backbone ONNX file whose embeddings the head was trained on.
    pub backbone_sha256: String,
    pub input_dim: usize,
    pub labels: Vec<String>,
    /// Free-form training facts (accuracy, examples, regularisation).
    pub metrics: serde_json::Value,
    /// RFC 3339 time of training.
    pub created: String,
}

/// A parsed head, ready to score embeddings.
#[derive(Debug, Clone)]
pub struct Head {
    pub manifest: HeadManifest,
    /// Row-major `[classes, input_dim]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One label and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub label: String,
    /// Softmax probability, rounded to 4 decimals.
    pub score: f64,
}

impl Head {
    /// Builds a head from trained parameters, checking shapes.
    pub fn new(manifest: HeadManifest, weight: Vec<f32>, bias: Vec<f32>) -> Result<Head, HeadError> {
        let head = Head { manifest, weight, bias };
        head.check()?;
        Ok(head)
    }

    fn check(&self) -> Result<(), HeadError> {
        let (n, d) = (self.manifest.labels.len(), self.manifest.input_dim);
        if !(2..=MAX_CLASSES).contains(&n) {
            return Err(HeadError::Shape(format!("{n} labels; a head needs 2..={MAX_CLASSES}")));
        }
        if d == 0 || d > 65_536 {
            return Err(HeadError::Shape(format!("input_dim {d} out of range")));
        }
        if self.weight.len() != n.saturating_mul(d) || self.bias.len() != n {
            return Err(HeadError::Shape(format!(
                "weight has {} values and bias {}; {n} labels x input_dim {d} needs {} and {n}",
                self.weight.len(),
                self.bias.len(),
                n * d
            )));
        }
        if !self.weight.iter().chain(&self.bias).all(|v| v.is_finite()) {
            return Err(HeadError::Shape("weights are not all finite".into()));
        }
        Ok(())
    }

    pub fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Parses a head file's bytes (untrusted: every field and size is checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<Head, HeadError> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| HeadError::Format(format!("{e:?}")))?;
        let meta: &HashMap<String, String> =
            meta.metadata().as_ref().ok_or_else(|| HeadError::Metadata("no __metadata__".into()))?;
        let field = |k: &str| meta.get(k).ok_or_else(|| HeadError::Metadata(format!("missing field {k:?}")));
        if field("format")? != FORMAT {
            return Err(HeadError::Metadata(format!("format is {:?}, expected {FORMAT:?}", field("format")?)));
        }
        let manifest = HeadManifest {
            name: field("name")?.clone(),
            version: field("version")?.clone(),
            backbone: field("backbone")?.clone(),
            backbone_sha256: field("backbone_sha256")?.clone(),
            input_dim: field("input_dim")?
                .parse()
                .map_err(|_| HeadError::Metadata("input_dim is not a number".into()))?,
            labels: serde_json::from_str(field("labels")?).map_err(|e| HeadError::Metadata(format!("labels: {e}")))?,
            metrics: meta.get("metrics").and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default(),
            created: meta.get("created").cloned().unwrap_or_default(),
        };
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| HeadError::Format(format!("{e:?}")))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>), HeadError> {
            let t = tensors.tensor(name).map_err(|_| HeadError::Format(format!("no tensor {name:?}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(HeadError::Format(format!("tensor {name:?} is {:?}, expected F32", t.dtype())));
            }
            let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((t.shape().to_vec(), values))
        };
        let (wshape, weight) = read("weight")?;
        let (bshape, bias) = read("bias")?;
        let (n, d) = (manifest.labels.len(), manifest.input_dim);
        if wshape != [n, d] || bshape != [n] {
            return Err(HeadError::Shape(format!(
                "weight {wshape:?} and bias {bshape:?} do not match {n} labels x input_dim {d}"
            )));
        }
        Head::new(manifest, weight, bias)
    }

    pub fn from_file(path: &Path) -> Result<Head, HeadError> {
        let bytes = std::fs::read(path).map_err(|source| HeadError::Io { path: path.to_path_buf(), source })?;
        Head::from_bytes(&bytes)
    }

    /// The safetensors bytes (header padded to 8 bytes, tensors in `bias`, `weight` order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let m = &self.manifest;
        let meta = serde_json::json!({
            "format": FORMAT,
            "name": m.name,
            "version": m.version,
            "backbone": m.backbone,
            "backbone_sha256": m.backbone_sha256,
            "input_dim": m.input_dim.to_string(),
            "labels": serde_json::to_string(&m.labels).expect("a list of strings always serialises"),
            "metrics": m.metrics.to_string(),
            "created": m.created,
        });
        let (n, d) = (self.classes(), m.input_dim);
        let bias_bytes = self.bias.len() * 4;
        let header = serde_json::json!({
            "__metadata__": meta,
            "bias": {"dtype": "F32", "shape": [n], "data_offsets": [0, bias_bytes]},
            "weight": {"dtype": "F32", "shape": [n, d], "data_offsets": [bias_bytes, bias_bytes + self.weight.len() * 4]},
        });
        let mut h = serde_json::to_vec(&header).expect("a map of strings and numbers always serialises");
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut out = Vec::with_capacity(8 + h.len() + (self.bias.len() + self.weight.len()) * 4);
        out.extend_from_slice(&(h.len() as u64).to_le_bytes());
        out.extend_from_slice(&h);
        for v in self.bias.iter().chain(&self.weight) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Class logits for one embedding (`input_dim` values).
    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        let d = self.manifest.input_dim;
        self.weight.chunks_exact(d).zip(&self.bias).map(|(row, b)| dot(row, embedding) + b).collect()
    }

    /// Softmax probabilities; `None` when the embedding has the wrong size or the result is
    /// not finite (which counts against a newly swapped-in head).
    pub fn probabilities(&self, embedding: &[f32]) -> Option<Vec<f32>> {
        if embedding.len() != self.manifest.input_dim {
            return None;
        }
        let p = softmax(&self.logits(embedding));
        p.iter().all(|v| v.is_finite()).then_some(p)
    }

    /// The `k` most probable labels, best first.
    pub fn top_k(&self, probabilities: &[f32], k: usize) -> Vec<Scored> {
        let mut idx: Vec<usize> = (0..probabilities.len()).collect();
        idx.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        idx.into_iter()
            .take(k)
            .map(|i| Scored {
                label: self.manifest.labels[i].clone(),
                score: (probabilities[i] as f64 * 1e4).round() / 1e4,
            })
            .collect()
    }
}

/// `Σ a·b` in 16 running partial sums, which the compiler keeps in vector registers. A plain
/// float `sum` must add in order and stays scalar: measured 1.1 ms per frame for the
/// 1000-class ImageNet head (1.3 M products), a tenth of EfficientNet-Lite0's whole int8
/// inference, spent on the inference thread after the backbone.
#[multiversion::multiversion(targets("x86_64+avx512f+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0f32; LANES];
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

pub use crate::store::valid_name;

/// A 2-class head on a 3-d embedding (labels `a`, `b`; backbone sha256 `00`): a fixture for
/// tests here and in the crates above.
#[doc(hidden)]
pub fn example(name: &str, version: &str) -> Head {
    let manifest = HeadManifest {
        name: name.into(),
        version: version.into(),
        backbone: "b".into(),
        backbone_sha256: "00".into(),
        input_dim: 3,
        labels: vec!["a".into(), "b".into()],
        metrics: serde_json::json!({"val_accuracy": 1.0}),
        created: "2026-01-01T00:00:00Z".into(),
    };
    Head::new(manifest, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0], vec![0.0, 0.5]).expect("the example head is well formed")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::example as tiny;

    #[test]
    fn round_trips_through_bytes_and_scores() {
        let h = tiny("t", "1");
        let back = Head::from_bytes(&h.to_bytes()).unwrap();
        assert_eq!(back.manifest, h.manifest);
        let p = back.probabilities(&[3.0, 0.0, 0.0]).unwrap();
        assert!(p[0] > p[1]);
        assert_eq!(back.top_k(&p, 1)[0].label, "a");
        assert!(back.probabilities(&[1.0]).is_none(), "wrong embedding size");
    }

    #[test]
    fn rejects_garbage_and_mismatched_shapes() {
        assert!(Head::from_bytes(b"").is_err());
        assert!(Head::from_bytes(&[0xff; 64]).is_err());
        let mut h = tiny("t", "1");
        h.manifest.labels.push("c".into());
        // three labels but weights for two: written anyway, refused when read
        let bytes = h.to_bytes();
        assert!(matches!(Head::from_bytes(&bytes), Err(HeadError::Shape(_))));
        let mut bytes = tiny("t", "1").to_bytes();
        let n = bytes.len();
        bytes.truncate(n - 4);
        assert!(Head::from_bytes(&bytes).is_err(), "truncated data");
    }

    #[test]
    fn dot_products_of_any_length_match_a_plain_sum() {
        for n in [0, 1, 15, 16, 17, 1280, 1283] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!((got - exact).abs() <= 1e-4 * (1.0 + exact.abs()), "n={n}: {got} vs {exact}");
        }
    }

    #[test]
    fn names_cannot_climb_out_of_a_folder() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "x y", &"n".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["digits", "imagenet", "v1.2_x-y"] {
            assert!(valid_name(good));
        }
    }
}
