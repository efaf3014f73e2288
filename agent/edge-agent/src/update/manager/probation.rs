//! A pushed model's probation: after it becomes active (or is restored at start while still on
//! probation), the updates thread watches its inference counts. `probation_inferences` clean
//! inferences on real frames end it; `PROBATION_FAILURES` failed ones roll it back at once.
//! A model that hangs or kills the agent never gets there: the restart count kept beside it
//! (`models::PROBATION_STARTS`) rolls it back at a later start.

use std::sync::Arc;

use super::Manager;
use crate::update::models::ModelTarget;
use crate::update::protocol::{State, Status};

/// Failed inferences that end a probation with a rollback.
pub const PROBATION_FAILURES: u64 = 3;

/// A model version being watched, with its counts when the watch began.
pub(super) struct Watch {
    version: String,
    base: (u64, u64),
}

impl Manager {
    /// Watches `m`'s active version from now on.
    pub(super) fn watch(&mut self, m: &ModelTarget) {
        let active = m.shared.load();
        let key = crate::update::models::key(&m.name, &m.precision);
        self.probation.insert(key, Watch { version: active.version().to_string(), base: active.counts() });
    }

    /// At start: the models restored while still on probation.
    pub(super) fn watch_restored(&mut self) {
        let on: Vec<Arc<ModelTarget>> = self
            .models
            .values()
            .filter(|m| m.store.probation().is_some_and(|(v, _)| v == m.active_version()))
            .cloned()
            .collect();
        for m in on {
            tracing::info!(model = %m.name, version = %m.active_version(), "model on probation");
            self.watch(&m);
        }
    }

    pub(super) fn check_probation(&mut self) {
        let needed = u64::from(self.settings.probation_inferences.max(1));
        let mut done = Vec::new();
        for (key, w) in &self.probation {
            let Some(m) = self.models.get(key) else { continue };
            let active = m.shared.load();
            if active.version() != w.version {
                done.push((key.clone(), None)); // replaced or rolled back meanwhile
                continue;
            }
            let (runs, failures) = active.counts();
            let (runs, failures) = (runs.saturating_sub(w.base.0), failures.saturating_sub(w.base.1));
            if failures >= PROBATION_FAILURES {
                done.push((
                    key.clone(),
                    Some(format!("{failures} failed inferences on probation (after {runs} good)")),
                ));
            } else if runs >= needed {
                tracing::info!(model = %m.name, version = %w.version, inferences = runs, "model passed probation");
                done.push((key.clone(), None));
            }
        }
        for (key, failed) in done {
            self.probation.remove(&key);
            let Some(m) = self.models.get(&key).cloned() else { continue };
            if let Err(e) = m.store.end_probation() {
                tracing::warn!(model = %m.name, error = %e, "probation marker not removed");
            }
            if let Some(reason) = failed {
                self.roll_back_on_probation(&m, &reason);
            }
        }
    }

    fn roll_back_on_probation(&mut self, m: &ModelTarget, reason: &str) {
        let failed = m.active_version();
        let loaded = match m.store.previous() {
            Some(v) => m.load_version(&v),
            None => m.load_shipped(),
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(model = %m.name, %failed, error = %e, "model failed probation, and the previous one does not load: kept");
                return;
            }
        };
        if let Err(e) = m.store.rollback() {
            tracing::error!(model = %m.name, error = %e, "cannot persist the rollback");
        }
        m.shared.store(Arc::new(loaded));
        let restored = m.active_version();
        tracing::error!(model = %m.name, %failed, %restored, %reason, "model failed probation; rolled back");
        let status =
            Status::new(None, &m.name, State::RolledBack).version(&restored).reason(format!("{failed}: {reason}"));
        self.send(&m.name, status);
        self.publish_model(m);
    }
}
