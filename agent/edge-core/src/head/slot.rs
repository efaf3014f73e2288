//! A head slot: the head a classify stage uses, swappable while frames flow. Readers take the
//! active head with one `ArcSwap` load per frame (no lock), so a swap never blocks or drops a
//! frame: frames in flight finish with the head they started with.
//!
//! A newly activated head is on probation for its first inferences: if one of them gives
//! non-finite scores, the slot falls back to the previous head on the spot (the frame is
//! classified again with it) and reports the rollback on its event channel, where the update
//! manager persists it and tells the broker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_channel::{Receiver, Sender};

use super::{Head, Scored};
use crate::store::VersionStore;

/// A head as a slot holds it.
#[derive(Debug)]
pub struct ActiveHead {
    pub head: Head,
    /// The version as stored (`shipped:<name>` for a head from the models folder).
    pub version: String,
}

/// Something the slot did on its own that the update manager must persist and announce.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotEvent {
    /// The head `failed` broke during probation; `restored` serves again.
    AutoRolledBack { slot: String, failed: String, restored: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("head {version} gave non-finite scores")]
    NonFinite { version: String },
}

/// One classification.
#[derive(Debug, Clone)]
pub struct Classified {
    pub labels: Vec<Scored>,
    pub head_name: String,
    pub head_version: String,
}

pub struct HeadSlot {
    pub name: String,
    pub backbone: String,
    pub backbone_sha256: String,
    pub dim: usize,
    active: ArcSwap<ActiveHead>,
    previous: ArcSwapOption<ActiveHead>,
    probation_left: AtomicU32,
    probation: u32,
    events: Sender<SlotEvent>,
    pub store: VersionStore,
    /// The head from the models folder: what is left when every update is rolled back.
    shipped: Arc<ActiveHead>,
    /// Scores of a fixed probe image's embedding, for trial inferences of new heads.
    pub probe: Vec<f32>,
}

impl std::fmt::Debug for HeadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSlot").field("name", &self.name).field("active", &self.active_version()).finish()
    }
}

/// What a slot needs to open.
pub struct SlotSpec<'a> {
    pub name: &'a str,
    pub backbone: &'a str,
    pub backbone_sha256: &'a str,
    pub dim: usize,
    /// The head from the models folder the slot starts with.
    pub shipped: Head,
    pub state_dir: &'a Path,
    pub probation: u32,
    pub probe: Vec<f32>,
}

impl HeadSlot {
    /// Opens the slot: the persisted current head when there is one and it still loads and
    /// fits the backbone, else (rolling the store back) the previous one, else the shipped head.
    pub fn open(spec: SlotSpec<'_>, events: Sender<SlotEvent>) -> HeadSlot {
        let store = VersionStore::new(spec.state_dir, spec.name);
        let shipped =
            Arc::new(ActiveHead { version: format!("shipped:{}", spec.shipped.manifest.name), head: spec.shipped });
        let slot = HeadSlot {
            name: spec.name.to_string(),
            backbone: spec.backbone.to_string(),
            backbone_sha256: spec.backbone_sha256.to_lowercase(),
            dim: spec.dim,
            active: ArcSwap::new(shipped.clone()),
            shipped,
            previous: ArcSwapOption::empty(),
            probation_left: AtomicU32::new(0),
            probation: spec.probation,
            events,
            store,
            probe: spec.probe,
        };
        let shipped = slot.shipped.clone();
        // walk back from `current` until a head loads (each failure is a rollback on disk)
        while let Some(version) = slot.store.current() {
            match slot.load_stored(&version) {
                Ok(head) => {
                    let previous = slot
                        .store
                        .previous()
                        .and_then(|p| slot.load_stored(&p).ok().map(|h| Arc::new(ActiveHead { head: h, version: p })))
                        .unwrap_or_else(|| shipped.clone());
                    slot.previous.store(Some(previous));
                    slot.active.store(Arc::new(ActiveHead { head, version }));
                    break;
                }
                Err(reason) => {
                    tracing::error!(slot = %slot.name, %version, %reason, "stored head does not load; rolling back");
                    // a store that cannot be rolled back would be read again and again:
                    // serve the shipped head and stop walking
                    let (restored, stuck) = match slot.store.rollback() {
                        Ok(r) => (r.unwrap_or_else(|| shipped.version.clone()), false),
                        Err(e) => {
                            tracing::error!(slot = %slot.name, error = %e, "cannot roll back on disk; serving the shipped head");
                            (shipped.version.clone(), true)
                        }
                    };
                    slot.report(SlotEvent::AutoRolledBack {
                        slot: slot.name.clone(),
                        failed: version,
                        restored,
                        reason: format!("failed to load at start: {reason}"),
                    });
                    if stuck {
                        break;
                    }
                }
            }
        }
        slot
    }

    /// Loads and checks a stored version.
    pub fn load_stored(&self, version: &str) -> Result<Head, String> {
        let head = Head::from_file(&self.store.path(version)).map_err(|e| e.to_string())?;
        self.check(&head)?;
        Ok(head)
    }

    /// Does `head` fit this slot's backbone and give finite scores on the probe?
    pub fn check(&self, head: &Head) -> Result<(), String> {
        if head.manifest.backbone_sha256.to_lowercase() != self.backbone_sha256 {
            return Err(format!(
                "head was trained on backbone {}, this slot runs {} ({})",
                short(&head.manifest.backbone_sha256),
                self.backbone,
                short(&self.backbone_sha256)
            ));
        }
        if head.manifest.input_dim != self.dim {
            return Err(format!("head reads {} features, the backbone gives {}", head.manifest.input_dim, self.dim));
        }
        match head.probabilities(&self.probe) {
            Some(p) if (p.iter().sum::<f32>() - 1.0).abs() < 1e-3 => Ok(()),
            _ => Err("trial inference gave non-finite scores".into()),
        }
    }

    pub fn active_version(&self) -> String {
        self.active.load().version.clone()
    }

    pub fn active(&self) -> Arc<ActiveHead> {
        self.active.load_full()
    }

    pub fn previous_version(&self) -> Option<String> {
        self.previous.load().as_ref().map(|p| p.version.clone())
    }

    /// Swaps `head` in; the old one becomes previous; probation starts.
    pub fn activate(&self, head: Head, version: &str) {
        let old = self.active.swap(Arc::new(ActiveHead { head, version: version.to_string() }));
        self.previous.store(Some(old));
        self.probation_left.store(self.probation, Ordering::Release);
    }

    /// Puts the previous head back; the shipped head becomes previous (as on disk, see
    /// [`VersionStore::rollback`]). Returns the restored version.
    pub fn restore_previous(&self) -> Option<String> {
        let prev = self.previous.load_full()?;
        let version = prev.version.clone();
        self.active.store(prev);
        self.after_rollback();
        Some(version)
    }

    /// After any rollback: nothing on probation, the shipped head is what comes next.
    pub fn after_rollback(&self) {
        self.probation_left.store(0, Ordering::Release);
        let at_shipped = Arc::ptr_eq(&self.active.load_full(), &self.shipped);
        self.previous.store((!at_shipped).then(|| self.shipped.clone()));
    }

    /// Scores one embedding with the active head (top `k`).
    pub fn classify(&self, embedding: &[f32], k: usize) -> Result<Classified, SlotError> {
        loop {
            let active = self.active.load_full();
            if let Some(p) = active.head.probabilities(embedding) {
                // Err only means probation was already over
                let _ = self.probation_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                return Ok(Classified {
                    labels: active.head.top_k(&p, k),
                    head_name: active.head.manifest.name.clone(),
                    head_version: active.version.clone(),
                });
            }
            let on_probation = self.probation_left.load(Ordering::Acquire) > 0;
            let previous = self.previous.load_full();
            let (true, Some(previous)) = (on_probation, previous) else {
                return Err(SlotError::NonFinite { version: active.version.clone() });
            };
            // only the first thread to notice swaps; the others just retry with what is active
            let prior = self.active.compare_and_swap(&active, previous.clone());
            if Arc::ptr_eq(&prior, &active) {
                self.after_rollback();
                tracing::error!(slot = %self.name, failed = %active.version, restored = %previous.version, "new head failed on probation; rolled back");
                self.report(SlotEvent::AutoRolledBack {
                    slot: self.name.clone(),
                    failed: active.version.clone(),
                    restored: previous.version.clone(),
                    reason: "non-finite scores during probation".into(),
                });
            }
        }
    }
}

/// Slot events waiting for the updates thread.
const EVENT_QUEUE: usize = 64;

impl HeadSlot {
    /// Hands an event to the updates thread without waiting (a pipeline's post thread calls this);
    /// one that does not fit is logged, the rollback itself has already happened.
    fn report(&self, event: SlotEvent) {
        if let Err(e) = self.events.try_send(event) {
            tracing::error!(slot = %self.name, event = ?e.into_inner(), "slot event dropped: the updates queue is full");
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Every slot of the running agent, by name, and the channel their events arrive on.
pub struct HeadSlots {
    pub slots: BTreeMap<String, Arc<HeadSlot>>,
    pub events_tx: Sender<SlotEvent>,
    pub events: Receiver<SlotEvent>,
}

impl Default for HeadSlots {
    fn default() -> Self {
        // one event per rollback at most: a small bound, and senders never wait (try_send)
        let (events_tx, events) = crossbeam_channel::bounded(EVENT_QUEUE);
        HeadSlots { slots: BTreeMap::new(), events_tx, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadManifest;

    fn head(version: &str, w0: f32) -> Head {
        let manifest = HeadManifest {
            name: "t".into(),
            version: version.into(),
            backbone: "b".into(),
            backbone_sha256: "ab".into(),
            input_dim: 2,
            labels: vec!["x".into(), "y".into()],
            metrics: serde_json::Value::Null,
            created: String::new(),
        };
        Head::new(manifest, vec![w0, 0.0, 0.0, 1.0], vec![0.0, 0.0]).unwrap()
    }

    fn slot(dir: &Path, probation: u32) -> (HeadSlot, Receiver<SlotEvent>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let spec = SlotSpec {
            name: "s",
            backbone: "b",
            backbone_sha256: "AB",
            dim: 2,
            shipped: head("0", 1.0),
            state_dir: dir,
            probation,
            probe: vec![0.0, 1.0],
        };
        (HeadSlot::open(spec, tx), rx)
    }

    #[test]
    fn a_head_that_breaks_on_probation_is_rolled_back_and_the_frame_still_classified() {
        let dir = tempfile::tempdir().unwrap();
        let (s, events) = slot(dir.path(), 5);
        // finite on the probe (x = 0 there), overflows when x is large
        let bad = head("1", f32::MAX);
        assert!(s.check(&bad).is_ok());
        s.activate(bad, "1");
        assert_eq!(s.classify(&[0.0, 1.0], 1).unwrap().head_version, "1");
        let c = s.classify(&[1e3, 1.0], 1).unwrap();
        assert_eq!(c.head_version, "shipped:t");
        assert_eq!(c.labels[0].label, "x");
        assert!(matches!(events.try_recv(), Ok(SlotEvent::AutoRolledBack { failed, .. }) if failed == "1"));
    }

    #[test]
    fn after_probation_a_failure_is_an_error_not_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let (s, events) = slot(dir.path(), 1);
        s.activate(head("1", f32::MAX), "1");
        s.classify(&[0.0, 1.0], 1).unwrap();
        assert!(s.classify(&[1e3, 1.0], 1).is_err());
        assert_eq!(s.active_version(), "1");
        assert!(events.try_recv().is_err());
    }

    #[test]
    fn wrong_backbone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = slot(dir.path(), 1);
        let mut h = head("2", 1.0);
        h.manifest.backbone_sha256 = "cd".into();
        assert!(s.check(&h).unwrap_err().contains("trained on backbone"));
    }

    #[test]
    fn a_stored_head_that_no_longer_loads_is_rolled_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::new(dir.path(), "s");
        store.install("1", &head("1", 2.0).to_bytes(), b"{}").unwrap();
        store.activate("1").unwrap();
        store.install("2", b"corrupt", b"{}").unwrap();
        store.activate("2").unwrap();
        let (s, events) = slot(dir.path(), 1);
        assert_eq!(s.active_version(), "1");
        assert_eq!(s.previous_version().as_deref(), Some("shipped:t"));
        assert!(
            matches!(events.try_recv(), Ok(SlotEvent::AutoRolledBack { failed, restored, .. }) if failed == "2" && restored == "1")
        );
        assert_eq!(store.current().as_deref(), Some("1"));
    }
}
