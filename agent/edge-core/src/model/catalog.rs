//! The catalog of a models folder: one sub-folder per model with a `manifest.toml`, its
//! labels and its ONNX variants; and checking those files against their sha256.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Manifest;
use super::speech_manifest::{ModelFile, SpeechManifest};
use crate::Precision;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("models folder {0} does not exist (set agent.models_dir or --models-dir)")]
    NoDir(PathBuf),
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A model folder, its parsed manifest and labels.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub labels: Vec<String>,
}

impl ModelEntry {
    /// The ONNX file of a precision variant.
    pub fn variant_path(&self, precision: &Precision) -> Option<PathBuf> {
        self.manifest.variants.get(precision).map(|v| self.dir.join(&v.file))
    }
}

/// An audio model folder and its parsed manifest.
#[derive(Debug, Clone)]
pub struct SpeechEntry {
    pub dir: PathBuf,
    pub manifest: SpeechManifest,
}

impl SpeechEntry {
    /// The file of `role` for `precision` (a per-variant file, else a shared one).
    pub fn file(&self, precision: &Precision, role: &str) -> Option<(PathBuf, &ModelFile)> {
        let m = &self.manifest;
        let f = m.variants.get(precision).and_then(|v| v.files.get(role)).or_else(|| m.shared.get(role))?;
        Some((self.dir.join(&f.file), f))
    }

    /// The hint for producing a variant's missing files.
    pub fn make_hint(&self, precision: &Precision) -> Option<String> {
        self.manifest.variants.get(precision).and_then(|v| v.make.clone())
    }
}

/// What `models list` shows of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    pub name: String,
    pub version: String,
    pub task: String,
    /// Comma-separated.
    pub precisions: String,
    pub license: String,
    pub description: String,
}

/// All models in a folder, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    models: BTreeMap<String, ModelEntry>,
    speech: BTreeMap<String, SpeechEntry>,
}

/// The result of checking one variant's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    Ok,
    Missing { hint: Option<String> },
    Mismatch { expected: String, actual: String },
}

/// Where models are looked for when the config names no folder: `$EDGE_AGENT_MODELS`,
/// `./models`, the installed `/usr/share/edge-agent/models`, then this source tree's.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGE_AGENT_MODELS") {
        return PathBuf::from(dir);
    }
    let candidates = [
        PathBuf::from("models"),
        PathBuf::from("/usr/share/edge-agent/models"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"),
    ];
    candidates
        .iter()
        .find(|p| p.join("nanodet/manifest.toml").is_file())
        .cloned()
        .unwrap_or_else(|| candidates[2].clone())
}

impl Catalog {
    /// Reads every `*/manifest.toml` below `dir`.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        if !dir.is_dir() {
            return Err(CatalogError::NoDir(dir.to_path_buf()));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CatalogError::Io { path, source }
        };
        let mut models = BTreeMap::new();
        let mut speech = BTreeMap::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).map_err(io(dir))?.collect::<Result<_, _>>().map_err(io(dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let manifest_path = e.path().join("manifest.toml");
            if !manifest_path.is_file() {
                continue;
            }
            let bad = |message: String| CatalogError::Manifest { path: manifest_path.clone(), message };
            let text = std::fs::read_to_string(&manifest_path)
                .map_err(|source| CatalogError::Io { path: manifest_path.clone(), source })?;
            let task = toml::from_str::<toml::Table>(&text)
                .map_err(|e| bad(e.to_string()))?
                .get("task")
                .and_then(|t| t.as_str().map(String::from));
            if matches!(task.as_deref(), Some("transcription" | "vad")) {
                let manifest: SpeechManifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
                if manifest.variants.is_empty() {
                    return Err(bad("no variants".into()));
                }
                let entry = SpeechEntry { dir: e.path(), manifest };
                speech.insert(entry.manifest.name.clone(), entry);
            } else {
                let entry = Self::read_entry(&e.path(), &manifest_path, &text)?;
                models.insert(entry.manifest.name.clone(), entry);
            }
        }
        Ok(Catalog { dir: dir.to_path_buf(), models, speech })
    }

    fn read_entry(dir: &Path, manifest_path: &Path, text: &str) -> Result<ModelEntry, CatalogError> {
        let bad = |message: String| CatalogError::Manifest { path: manifest_path.to_path_buf(), message };
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let labels = match (&manifest.labels, manifest.task) {
            (Some(file), _) => {
                let labels_path = dir.join(file);
                let labels: Vec<String> = std::fs::read_to_string(&labels_path)
                    .map_err(|source| CatalogError::Io { path: labels_path.clone(), source })?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if labels.is_empty() {
                    return Err(bad(format!("labels file {} is empty", labels_path.display())));
                }
                labels
            }
            (None, super::Task::Detection) => return Err(bad("a detector needs a labels file".into())),
            (None, _) => Vec::new(),
        };
        if manifest.variants.is_empty() {
            return Err(bad("no variants".into()));
        }
        Ok(ModelEntry { dir: dir.to_path_buf(), manifest, labels })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn get_speech(&self, name: &str) -> Option<&SpeechEntry> {
        self.speech.get(name)
    }

    /// Names of every model, vision and audio.
    pub fn names(&self) -> Vec<String> {
        self.models.keys().chain(self.speech.keys()).cloned().collect()
    }

    pub fn speech_entries(&self) -> impl Iterator<Item = &SpeechEntry> {
        self.speech.values()
    }

    /// One line's worth of facts about every model, audio models first, each group by name.
    pub fn summaries(&self) -> Vec<ModelSummary> {
        // the two manifest kinds share these field names, not a type
        macro_rules! summary {
            ($m:expr) => {
                ModelSummary {
                    name: $m.name.clone(),
                    version: $m.version.clone(),
                    task: format!("{:?}", $m.task).to_lowercase(),
                    precisions: $m.variants.keys().map(|p| p.as_str()).collect::<Vec<_>>().join(","),
                    license: $m.license.clone(),
                    description: $m.description.clone(),
                }
            };
        }
        let audio = self.speech.values().map(|e| summary!(e.manifest));
        audio.chain(self.models.values().map(|e| summary!(e.manifest))).collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Checks every variant file of every model against its manifest's sha256.
    pub fn verify(&self) -> Vec<(String, Precision, PathBuf, VerifyReport)> {
        let mut out = Vec::new();
        for m in self.models.values() {
            for (precision, variant) in &m.manifest.variants {
                let path = m.dir.join(&variant.file);
                let report = check_file(&path, &variant.sha256, variant.make.clone());
                out.push((m.manifest.name.clone(), precision.clone(), path, report));
            }
            for head in m.manifest.heads.values() {
                let path = m.dir.join(&head.file);
                let report = check_file(&path, &head.sha256, head.make.clone());
                out.push((m.manifest.name.clone(), Precision::Fp32, path, report));
            }
        }
        for m in self.speech.values() {
            for (precision, variant) in &m.manifest.variants {
                let files = variant.files.values().chain(m.manifest.shared.values());
                for f in files {
                    let path = m.dir.join(&f.file);
                    let report = check_file(&path, &f.sha256, variant.make.clone());
                    out.push((m.manifest.name.clone(), precision.clone(), path, report));
                }
            }
        }
        out
    }
}

fn check_file(path: &Path, sha256: &str, hint: Option<String>) -> VerifyReport {
    match sha256_file(path) {
        Err(_) => VerifyReport::Missing { hint },
        Ok(actual) if actual.eq_ignore_ascii_case(sha256) => VerifyReport::Ok,
        Ok(actual) => VerifyReport::Mismatch { expected: sha256.to_string(), actual },
    }
}

/// Hex sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
