//! Whole detection models as update targets. A target is one (model, precision) the pipelines
//! share through the `ModelPool`'s `ArcSwap` handle; an update is a new ONNX file for it, kept
//! under `<state>/models/<model>@<precision>/<version>/model.onnx`. A version is only swapped
//! in after it has loaded in tract with the shipped manifest's input and output spec and
//! decoded a probe image without error. It then serves on probation (the updates thread watches
//! its inference counts); one that keeps the agent from finishing probation (a stall that the
//! watchdog ends, a crash) is rolled back at start after [`PROBATION_STARTS`] tries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use edge_core::Precision;
use edge_core::model::{LoadedModel, ModelEntry, ModelPool, SharedModel, Task, Variant};
use edge_core::store::VersionStore;
use edge_core::vision::detector::Detector;
use edge_core::vision::{DetectSettings, Tiling};

pub struct ModelTarget {
    pub name: String,
    pub precision: Precision,
    /// The catalog's entry: what is left when every update is rolled back.
    pub shipped: Arc<ModelEntry>,
    pub shared: SharedModel,
    pub store: VersionStore,
}

/// Every updatable model, by `<name>@<precision>`.
pub type ModelTargets = BTreeMap<String, Arc<ModelTarget>>;

pub fn key(name: &str, precision: &Precision) -> String {
    format!("{name}@{precision}")
}

impl ModelTarget {
    pub fn new(entry: Arc<ModelEntry>, precision: Precision, shared: SharedModel, state_dir: &Path) -> ModelTarget {
        ModelTarget {
            name: entry.manifest.name.clone(),
            store: VersionStore::for_model(state_dir, &entry.manifest.name, &precision),
            precision,
            shipped: entry,
            shared,
        }
    }

    /// Only detectors can be replaced whole: a new backbone would orphan every head trained
    /// on the old one.
    pub fn replaceable(entry: &ModelEntry) -> bool {
        entry.manifest.task == Task::Detection
    }

    /// The shipped manifest pointed at a stored version (its sha256 from the signed record).
    fn entry_for(&self, version: &str) -> Result<ModelEntry, String> {
        let record = self.store.record(version).ok_or("no update record")?;
        let manifest: super::protocol::UpdateManifest =
            serde_json::from_str(record["manifest"].as_str().ok_or("record without a manifest")?)
                .map_err(|e| format!("record: {e}"))?;
        let mut entry = (*self.shipped).clone();
        entry.dir = self.store.dir().join(version);
        entry.manifest.version = version.to_string();
        entry.manifest.variants.insert(
            self.precision.clone(),
            Variant { file: edge_core::store::MODEL_FILE.into(), sha256: manifest.sha256, make: None },
        );
        Ok(entry)
    }

    /// Loads a stored version and decodes the probe with it.
    pub fn load_version(&self, version: &str) -> Result<LoadedModel, String> {
        let entry = self.entry_for(version)?;
        trial(LoadedModel::load(Arc::new(entry), self.precision.clone()).map_err(|e| e.to_string())?)
    }

    pub fn load_shipped(&self) -> Result<LoadedModel, String> {
        LoadedModel::load(self.shipped.clone(), self.precision.clone()).map_err(|e| e.to_string())
    }

    pub fn active_version(&self) -> String {
        self.shared.load().version().to_string()
    }

    /// At start: the stored current version, if any, replaces the shipped model; one that
    /// fails is rolled back on disk (the next is tried). So is one still on probation after
    /// [`PROBATION_STARTS`] starts: it stalled or crashed the agent each time before passing,
    /// and would otherwise do so forever. Returns what was rolled back, with why.
    pub fn restore(&self) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        while let Some(version) = self.store.current() {
            let starts = self.store.probation().filter(|(v, _)| *v == version).map(|(_, n)| n);
            let on_probation = starts.is_some();
            let attempt = match starts {
                Some(starts) if starts >= PROBATION_STARTS => Err(format!(
                    "still on probation after {starts} restarts: it stalled or stopped the agent before \
                     passing {PROBATION_STARTS} times"
                )),
                Some(_) => self
                    .store
                    .count_probation_start(&version)
                    .map_err(|e| format!("cannot count its probation start: {e}"))
                    .and_then(|_| self.load_version(&version)),
                None => self.load_version(&version),
            };
            match attempt {
                Ok(m) => {
                    self.shared.store(Arc::new(m));
                    break;
                }
                Err(reason) => {
                    tracing::error!(model = %self.name, %version, %reason, "stored model does not load; rolling back");
                    failed.push((version, reason));
                    if on_probation && let Err(e) = self.store.end_probation() {
                        tracing::warn!(model = %self.name, error = %e, "probation marker not removed");
                    }
                    // a store that cannot be rolled back would be read again and again:
                    // keep the shipped model and stop walking
                    if let Err(e) = self.store.rollback() {
                        tracing::error!(model = %self.name, error = %e, "cannot roll back on disk; serving the shipped model");
                        break;
                    }
                }
            }
        }
        failed
    }
}

/// Starts a pushed model may have on probation before it is rolled back at the next one.
pub const PROBATION_STARTS: u32 = 2;

/// A detector's stored version that failed to load at start and was rolled back.
pub struct RolledBack {
    pub model: String,
    pub failed: String,
    /// The version serving instead.
    pub restored: String,
    pub reason: String,
}

/// Makes every replaceable model the pool loaded an update target and puts its stored current
/// version (if any) in place of the shipped one: a step `build_all` runs after loading, so
/// model loading never reaches into updates.
pub fn restore_all(pool: &ModelPool, state_dir: &Path) -> (ModelTargets, Vec<RolledBack>) {
    let mut targets = ModelTargets::new();
    let mut rolled_back = Vec::new();
    for (entry, precision, shared) in pool.loaded() {
        if !ModelTarget::replaceable(entry) {
            continue;
        }
        let target = ModelTarget::new(entry.clone(), precision.clone(), shared.clone(), state_dir);
        for (failed, reason) in target.restore() {
            let restored = target.active_version();
            rolled_back.push(RolledBack { model: target.name.clone(), failed, restored, reason });
        }
        if target.store.current().is_some() {
            tracing::info!(model = %target.name, version = %target.active_version(), "updated model restored");
        }
        targets.insert(key(&target.name, precision), Arc::new(target));
    }
    (targets, rolled_back)
}

/// Runs a detector with default settings on the probe image; the model must decode it.
fn trial(model: LoadedModel) -> Result<LoadedModel, String> {
    let stage = DetectSettings { tiling: Tiling::None, ..DetectSettings::default() };
    let shared: SharedModel = Arc::new(ArcSwap::from_pointee(model));
    Detector::new(shared.clone(), stage)
        .detect(&edge_core::vision::probe_image())
        .map_err(|e| format!("trial: {e}"))?;
    let arc = Arc::try_unwrap(shared).map_err(|_| "trial model still shared".to_string())?.into_inner();
    Arc::try_unwrap(arc).map_err(|_| "trial model still shared".to_string())
}
