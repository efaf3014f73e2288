//! `[pipelines.<name>.objects]`: how detections become objects (the tracker, the
//! false-positive filter, stationary objects, update pacing, snapshots), and their checks.

use serde::{Deserialize, Serialize};

/// Tracking settings of a detect pipeline. Defaults follow Frigate's, whose users know them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectsConfig {
    /// Track objects and publish events. Unset: on for cameras, off for image files (turn it
    /// on for a folder of frames of one scene).
    pub enabled: Option<bool>,
    /// Labels that become objects. Empty: the detect stage's `classes`, else `person` when
    /// the model has it, else every label of the model.
    pub track: Vec<String>,
    /// Detection scores below this count as 0 in an object's score history.
    pub min_score: f32,
    /// Median of the recent scores an object must reach to be real (and announced).
    pub threshold: f32,
    /// Detections in a row an object needs before it can be real.
    pub min_frames: u32,
    /// Frames without a detection after which an object has left.
    pub max_disappeared: u32,
    /// Frames without moving after which an object is stationary.
    pub stationary_frames: u32,
    /// Lowest IoU between an object's predicted box and a detection that can be it.
    pub match_iou: f32,
    /// Least time between two `update` events of one object caused by a better snapshot
    /// (zone and stationary changes are sent at once).
    pub update_interval_secs: f64,
    pub snapshots: SnapshotSettings,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig {
            enabled: None,
            track: Vec::new(),
            min_score: 0.5,
            threshold: 0.7,
            min_frames: 3,
            max_disappeared: 25,
            stationary_frames: 50,
            match_iou: 0.2,
            update_interval_secs: 5.0,
            snapshots: SnapshotSettings::default(),
        }
    }
}

/// The best frame of each object, cropped around it (`<state_dir>/snapshots/<pipeline>/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSettings {
    pub enabled: bool,
    /// Cap of one pipeline's snapshot folder; the oldest files are deleted past it.
    pub max_mb: u64,
    /// Room around the box, as a fraction of its size on each side.
    pub margin: f32,
    /// Longest side of a snapshot in pixels (larger crops are scaled down).
    pub max_side: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings { enabled: true, max_mb: 64, margin: 0.2, max_side: 640, quality: 85 }
    }
}

impl ObjectsConfig {
    /// Whether tracking runs for a camera (or another kind of source).
    pub fn enabled_for(&self, camera: bool) -> bool {
        self.enabled.unwrap_or(camera)
    }

    /// The labels that become objects (see [`ObjectsConfig::track`]).
    pub fn tracked_labels(&self, classes: &[String], model_labels: &[String]) -> Vec<String> {
        if !self.track.is_empty() {
            self.track.clone()
        } else if !classes.is_empty() {
            classes.to_vec()
        } else if model_labels.iter().any(|l| l == "person") {
            vec!["person".into()]
        } else {
            model_labels.to_vec()
        }
    }

    /// Every problem with its path (`pipelines.door.objects.threshold`).
    pub fn check(&self, path: &str, model_labels: &[String], problems: &mut Vec<(String, String)>) {
        let at = |f: &str| format!("{path}.objects.{f}");
        for l in self.track.iter().filter(|l| !model_labels.contains(l)) {
            problems.push((at("track"), format!("the detector has no label {l:?}")));
        }
        let unit = |v: f32| v > 0.0 && v < 1.0;
        if !unit(self.min_score) {
            problems.push((at("min_score"), format!("must be in (0, 1), got {}", self.min_score)));
        }
        if !unit(self.threshold) || self.threshold < self.min_score {
            problems.push((at("threshold"), format!("must be in [min_score, 1), got {}", self.threshold)));
        }
        if !(1..=100).contains(&self.min_frames) {
            problems.push((at("min_frames"), "must be in [1, 100]".into()));
        }
        if !(1..=10_000).contains(&self.max_disappeared) {
            problems.push((at("max_disappeared"), "must be in [1, 10000] frames".into()));
        }
        if self.stationary_frames < 2 {
            problems.push((at("stationary_frames"), "must be at least 2".into()));
        }
        if !unit(self.match_iou) {
            problems.push((at("match_iou"), format!("must be in (0, 1), got {}", self.match_iou)));
        }
        if !(self.update_interval_secs >= 0.0 && self.update_interval_secs <= 3600.0) {
            problems.push((at("update_interval_secs"), "must be in [0, 3600]".into()));
        }
        let s = &self.snapshots;
        if s.max_mb == 0 || s.max_mb > 1 << 20 {
            problems.push((at("snapshots.max_mb"), "must be in [1, 1048576]".into()));
        }
        if !(0.0..=2.0).contains(&s.margin) {
            problems.push((at("snapshots.margin"), "must be in [0, 2]".into()));
        }
        if !(32..=8192).contains(&s.max_side) {
            problems.push((at("snapshots.max_side"), "must be in [32, 8192]".into()));
        }
        if !(1..=100).contains(&s.quality) {
            problems.push((at("snapshots.quality"), "must be in [1, 100]".into()));
        }
    }
}
