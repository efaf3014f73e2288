//! Home Assistant MQTT discovery (`[homeassistant] enabled = true`). The device's entities are
//! declared in one retained device-based discovery message ([`discovery`]), sent on every
//! connect and again, after a random delay of up to `birth_delay_secs`, whenever Home
//! Assistant announces itself (`<discovery_prefix>/status` = `online`). Components of an
//! earlier run that are no longer configured are removed (the ids sent last are kept in
//! `<state_dir>/homeassistant.json`); turning discovery off clears the device.

pub mod discovery;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use crate::config::HomeAssistantSettings;
use crate::mqtt::{Outgoing, Topics};
pub use discovery::Components;

/// What the discovery task sends.
pub struct Discovery {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The components sent by the last run, and where they are kept.
pub struct State {
    path: PathBuf,
}

impl State {
    pub fn new(state_dir: &Path) -> State {
        State { path: state_dir.join("homeassistant.json") }
    }

    /// Component id to platform; empty when there is no (readable) file.
    pub fn load(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, platforms: &BTreeMap<String, String>) {
        let tmp = self.path.with_extension("json.tmp");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let r = std::fs::create_dir_all(dir)
            .and_then(|()| serde_json::to_vec_pretty(platforms).map_err(std::io::Error::other))
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot keep the Home Assistant components");
        }
    }

    pub fn clear(&self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot forget the Home Assistant components");
        }
    }
}

/// The discovery message of this run (the removal of components of the last run included),
/// or, with discovery off after an earlier run had it on, the empty retained message that
/// removes the device. `None`: nothing to send.
pub fn prepare(
    settings: &HomeAssistantSettings,
    components: Option<Components>,
    device: &str,
    topics: &Topics,
    state_dir: &Path,
) -> Option<Discovery> {
    let state = State::new(state_dir);
    let topic = settings.config_topic(device);
    let Some(components) = components.filter(|_| settings.enabled) else {
        if state.load().is_empty() {
            return None;
        }
        state.clear();
        return Some(Discovery { topic, payload: Vec::new() });
    };
    let removed = state.load();
    let name = settings.name.clone().unwrap_or_else(|| device.to_string());
    let payload = components.payload(device, &name, topics, &removed);
    state.save(&components.platforms());
    Some(Discovery { topic, payload: serde_json::to_vec(&payload).unwrap_or_default() })
}

/// A random wait in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return max / 2;
    }
    max.mul_f64(f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0))
}

/// Sends `discovery` (retained) on every connect and after each birth message of Home
/// Assistant, until cancelled.
pub async fn run(
    discovery: Discovery,
    birth_delay: Duration,
    results: mpsc::Sender<Outgoing>,
    mut connected: watch::Receiver<bool>,
    mut births: mpsc::Receiver<()>,
    cancel: CancellationToken,
) {
    let send = || Outgoing { topic: discovery.topic.clone(), payload: discovery.payload.clone(), retain: true };
    if *connected.borrow_and_update() && results.send(send()).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connected.borrow_and_update() && results.send(send()).await.is_err() {
                    return;
                }
            }
            birth = births.recv() => {
                if birth.is_none() {
                    return;
                }
                let wait = jitter(birth_delay);
                tracing::info!(ms = wait.as_millis() as u64, "Home Assistant is online; sending discovery again");
                tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
                if results.send(send()).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
