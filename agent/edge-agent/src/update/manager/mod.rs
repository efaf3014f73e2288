//! The device side of updates, on its own `updates` thread: checks each request, assembles
//! chunks on disk (resumable), verifies the result, persists it, swaps it in (a head into its
//! slot, a detection model into the pool's shared handle) and answers every step on
//! `.../models/<name>/update/status`.
//!
//! Nothing is trusted before its signature is: the manifest is verified against the
//! configured keys first, then its claims (slot, device, version, size, backbone, freshness);
//! bytes are only kept for a verified manifest, written under the slot's own folder, and the
//! finished file must match the signed sha256 and size, and parse as a head that fits the
//! backbone and gives finite scores on a probe (or load in tract as the model it replaces and
//! decode a probe) before it replaces anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crossbeam_channel::{Receiver, select};
use ed25519_dalek::VerifyingKey;
use tokio::sync::mpsc;

use super::UpdateSettings;
use super::models::{ModelTarget, ModelTargets, key as model_key};
use super::protocol::{Kind, Request, RollbackOrder, State, Status, UpdateManifest, parse, slot_of_topic};
use super::sign;
use crate::mqtt::{Outgoing, Topics};
use crate::update::sha256_hex;
use edge_core::Precision;
use edge_core::head::slot::{HeadSlot, SlotEvent};
use edge_core::head::{Head, valid_name};
use edge_core::store::VersionStore;
use edge_core::store::valid_version;

mod announce;
mod claims;
mod housekeeping;
mod probation;

/// A message from the broker on an update topic.
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What an update replaces.
#[derive(Clone)]
enum Target {
    Slot(Arc<HeadSlot>),
    Model(Arc<ModelTarget>),
}

impl Target {
    fn store(&self) -> &VersionStore {
        match self {
            Target::Slot(s) => &s.store,
            Target::Model(m) => &m.store,
        }
    }
}

struct Transfer {
    id: String,
    target: Target,
    manifest: UpdateManifest,
    /// The signed manifest text and signature, stored beside the head.
    record: serde_json::Value,
    part: PathBuf,
    file: std::fs::File,
    received: u64,
    last: Instant,
}

pub struct Manager {
    device: String,
    topics: Topics,
    settings: UpdateSettings,
    trusted: Vec<VerifyingKey>,
    slots: BTreeMap<String, Arc<HeadSlot>>,
    models: ModelTargets,
    transfers: BTreeMap<String, Transfer>,
    out: mpsc::Sender<Outgoing>,
    /// The status page's state, told what is published about each slot and model.
    view: Option<Arc<crate::view::Hub>>,
    /// Signs every status (see `Status::signature`).
    device_key: Option<ed25519_dalek::SigningKey>,
    /// Pushed models on probation, by `<name>@<precision>`.
    probation: BTreeMap<String, probation::Watch>,
}

/// A rejection: the reason goes back to the sender.
type Reject = String;

impl Manager {
    pub fn new(
        device: &str,
        topics: Topics,
        settings: UpdateSettings,
        slots: BTreeMap<String, Arc<HeadSlot>>,
        models: ModelTargets,
        out: mpsc::Sender<Outgoing>,
    ) -> Manager {
        let trusted = settings.trusted_keys.iter().filter_map(|k| sign::public_key(k).ok()).collect();
        Manager {
            device: device.into(),
            topics,
            settings,
            trusted,
            slots,
            models,
            transfers: BTreeMap::new(),
            out,
            view: None,
            device_key: None,
            probation: BTreeMap::new(),
        }
    }

    /// Sign every status with the device's own key.
    pub fn with_device_key(mut self, key: ed25519_dalek::SigningKey) -> Manager {
        self.device_key = Some(key);
        self
    }

    /// Also tell the status page what each slot and model serves and how updates went.
    pub fn with_view(mut self, view: Option<Arc<crate::view::Hub>>) -> Manager {
        self.view = view;
        self
    }

    /// Runs until `requests` closes: requests, slot events, and idle-transfer checks.
    pub fn run(mut self, requests: Receiver<Incoming>, events: Receiver<SlotEvent>) {
        for slot in self.slots.values() {
            self.publish_active(slot);
        }
        for m in self.models.values() {
            self.publish_model(m);
        }
        self.watch_restored();
        // events from opening the slots (a stored head that failed to load) come first
        while let Ok(e) = events.try_recv() {
            self.on_event(e);
        }
        loop {
            select! {
                recv(requests) -> msg => match msg {
                    Ok(m) => self.on_message_guarded(&m),
                    Err(_) => return,
                },
                recv(events) -> e => if let Ok(e) = e { self.on_event(e) },
                default(Duration::from_millis(250)) => {}
            }
            self.expire_idle();
            self.check_probation();
        }
    }

    /// Handles one message. The updates thread calls it through a panic guard; tests and the
    /// fuzzer (`agent/fuzz`) call it directly, so a panic is seen.
    pub fn on_message(&mut self, m: &Incoming) {
        let Some(slot) = slot_of_topic(&self.topics.base(), &m.topic) else { return };
        let slot = slot.to_string();
        let request = match parse(&m.payload) {
            Ok(r) => r,
            Err(reason) => {
                let id = crate::commands::salvage_id(&m.payload);
                tracing::warn!(%slot, %reason, "bad update request");
                return self.send(
                    &sanitize(&slot),
                    Status::new(id.as_deref(), &sanitize(&slot), State::Rejected).reason(reason),
                );
            }
        };
        let id = request.id().to_string();
        let known = self.slots.contains_key(&slot) || self.models.values().any(|m| m.name == slot);
        if !valid_name(&slot) || !known {
            let reason = if valid_name(&slot) {
                format!("no classify stage uses slot {slot:?} and no pipeline runs a model of that name")
            } else {
                "invalid slot name (letters, digits, '.', '_', '-'; no path)".to_string()
            };
            tracing::warn!(slot = %sanitize(&slot), %reason, "update rejected");
            return self
                .send(&sanitize(&slot), Status::new(Some(&id), &sanitize(&slot), State::Rejected).reason(reason));
        }
        let pending = self.transfers.get(&slot).filter(|t| t.id == id).map(|t| t.manifest.version.clone());
        let result = match request {
            Request::Begin { manifest, signature, .. } => self.begin(&slot, &id, &manifest, &signature),
            Request::Chunk { offset, total, data, .. } => self.chunk(&slot, &id, offset, total, &data),
            Request::Rollback { order, signature, .. } => self.rollback(&slot, &id, &order, &signature),
        };
        if let Err(reason) = result {
            // a bad request leaves a transfer in progress alone (anyone who saw its id could
            // otherwise cancel it); one whose bytes fail their checks has ended in `finish`
            tracing::warn!(%slot, %id, %reason, "update rejected");
            let current = self.transfers.get(&slot).filter(|t| t.id == id).map(|t| t.manifest.version.clone());
            let version = current.or(pending);
            let mut status = Status::new(Some(&id), &slot, State::Rejected).reason(reason);
            status.version = version;
            self.send(&slot, status);
        }
    }

    fn begin(&mut self, slot_name: &str, id: &str, text: &str, signature: &str) -> Result<(), Reject> {
        self.verify_signature(text, signature)?;
        let manifest: UpdateManifest = serde_json::from_str(text).map_err(|e| format!("manifest: {e}"))?;
        let target = self.target_for(slot_name, manifest.kind, manifest.precision.as_ref())?;
        // the same signed begin again, with its bytes still on disk, resumes its own transfer
        let resuming = target.store().incoming().join(format!("{}.part", manifest.sha256.to_lowercase())).exists();
        let claims = (manifest.slot.as_str(), manifest.device.as_str(), manifest.issued_at_ms);
        self.check_claims(slot_name, target.store(), claims, resuming)?;
        if !valid_version(&manifest.version) || manifest.version.starts_with("shipped") {
            return Err(format!(
                "invalid version {:?} (letters, digits, '.', '_', '-'; not current, previous, incoming, issued_at_ms or shipped…)",
                manifest.version
            ));
        }
        let store = target.store();
        if [store.current(), store.previous()].contains(&Some(manifest.version.clone())) {
            return Err(format!(
                "version {:?} is already installed (use rollback, or a new version)",
                manifest.version
            ));
        }
        if manifest.size == 0 || manifest.size > self.settings.max_bytes {
            return Err(format!(
                "size {} is not in 1..={} bytes (updates.max_bytes)",
                manifest.size, self.settings.max_bytes
            ));
        }
        if manifest.sha256.len() != 64 || !manifest.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 is not 64 hex digits".into());
        }
        manifest.check_chunks()?;
        if let Target::Slot(slot) = &target
            && manifest.backbone_sha256.as_deref().map(str::to_lowercase).as_deref()
                != Some(slot.backbone_sha256.as_str())
        {
            return Err(format!("for another backbone: slot {:?} runs {}", slot.name, slot.backbone));
        }
        let sha = manifest.sha256.to_lowercase();
        let incoming = target.store().incoming();
        std::fs::create_dir_all(&incoming).map_err(|e| format!("cannot store: {e}"))?;
        // one partial transfer per slot is kept: drop other slots' leftovers of this slot
        for e in std::fs::read_dir(&incoming).into_iter().flatten().filter_map(Result::ok) {
            if e.file_name().to_string_lossy() != format!("{sha}.part") {
                remove_quietly(&e.path());
            }
        }
        let part = incoming.join(format!("{sha}.part"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| format!("cannot store: {e}"))?;
        let mut received = file.metadata().map(|m| m.len()).unwrap_or(0);
        if received > manifest.size {
            file.set_len(0).map_err(|e| format!("cannot store: {e}"))?;
            received = 0;
        }
        // with signed chunks, resume at a chunk's start
        if let Some(c) = manifest.chunk_bytes
            && received < manifest.size
            && !received.is_multiple_of(c)
        {
            received -= received % c;
            file.set_len(received).map_err(|e| format!("cannot store: {e}"))?;
        }
        // accepted: from now on this order (and anything older) cannot start again, only resume
        target.store().set_last_issued_at_ms(manifest.issued_at_ms).map_err(|e| format!("cannot store: {e}"))?;
        let status = Status::new(Some(id), slot_name, State::Received)
            .version(&manifest.version)
            .progress(received, manifest.size);
        tracing::info!(slot = %slot_name, version = %manifest.version, size = manifest.size, resume_at = received, "update announced");
        let record = serde_json::json!({ "manifest": text, "signature": signature });
        let transfer = Transfer { id: id.into(), target, manifest, record, part, file, received, last: Instant::now() };
        self.transfers.insert(slot_name.into(), transfer);
        self.send(slot_name, status);
        if received == self.transfers[slot_name].manifest.size {
            return self.finish_and_release(slot_name);
        }
        Ok(())
    }

    fn chunk(&mut self, slot_name: &str, id: &str, offset: u64, total: u64, data: &str) -> Result<(), Reject> {
        let t = match self.transfers.get_mut(slot_name) {
            Some(t) if t.id == id => t,
            _ => return Err(format!("no transfer {id:?} in progress for slot {slot_name:?} (send begin first)")),
        };
        if total != t.manifest.size {
            return Err(format!("chunk says total {total}, the signed manifest {}", t.manifest.size));
        }
        let bytes = B64.decode(data).map_err(|_| "chunk data is not base64".to_string())?;
        if offset != t.received {
            // a repeat or a gap: say where to continue
            let s = Status::new(Some(id), slot_name, State::Received)
                .version(&t.manifest.version)
                .progress(t.received, total);
            self.send(slot_name, s);
            return Ok(());
        }
        if let Some(c) = t.manifest.chunk_bytes {
            let expected_len = c.min(total - offset);
            let index = (offset / c) as usize;
            let matches = offset.is_multiple_of(c)
                && bytes.len() as u64 == expected_len
                && t.manifest.chunk_sha256.get(index).is_some_and(|h| h.eq_ignore_ascii_case(&sha256_hex(&bytes)));
            if !matches {
                return Err(format!("chunk at {offset} does not match its signed hash; it is not stored"));
            }
        }
        if offset + bytes.len() as u64 > total {
            return Err(format!("chunk at {offset} of {} bytes runs past the end ({total})", bytes.len()));
        }
        t.file.write_all(&bytes).map_err(|e| format!("cannot store: {e}"))?;
        t.received += bytes.len() as u64;
        t.last = Instant::now();
        if t.received < total {
            let s = Status::new(Some(id), slot_name, State::Received)
                .version(&t.manifest.version)
                .progress(t.received, total);
            self.send(slot_name, s);
            return Ok(());
        }
        self.finish_and_release(slot_name)
    }

    /// What a request of `kind` addresses under topic name `name`.
    fn target_for(&self, name: &str, kind: Kind, precision: Option<&Precision>) -> Result<Target, Reject> {
        match kind {
            Kind::Head => self
                .slots
                .get(name)
                .cloned()
                .map(Target::Slot)
                .ok_or_else(|| format!("no classify stage uses slot {name:?}")),
            Kind::Model => {
                let p = precision.ok_or("a model update must name its precision")?;
                self.models
                    .get(&model_key(name, p))
                    .cloned()
                    .map(Target::Model)
                    .ok_or_else(|| format!("no pipeline runs detection model {name:?} at {p}"))
            }
        }
    }

    /// All bytes are here: verify, persist, swap. The part file goes either way.
    fn finish(&mut self, name: &str) -> Result<(), Reject> {
        let started = Instant::now();
        let t = self.transfers.remove(name).ok_or("no transfer")?;
        let bytes = std::fs::read(&t.part).map_err(|e| format!("cannot read the received file: {e}"));
        remove_quietly(&t.part);
        let bytes = bytes?;
        let sha = crate::update::sha256_hex(&bytes);
        if bytes.len() as u64 != t.manifest.size {
            return Err(format!("received {} bytes, the manifest says {}", bytes.len(), t.manifest.size));
        }
        if sha != t.manifest.sha256.to_lowercase() {
            return Err(format!("sha256 mismatch: received {sha}, signed {}", t.manifest.sha256));
        }
        let version = t.manifest.version.clone();
        let record = serde_json::to_vec_pretty(&t.record).map_err(|e| format!("cannot serialise the record: {e}"))?;
        let store = t.target.store().clone();
        let persist = |e: std::io::Error| format!("cannot persist: {e}");
        let status = |state| Status::new(Some(&t.id), name, state).version(&version);
        match &t.target {
            Target::Slot(slot) => {
                let head = Head::from_bytes(&bytes).map_err(|e| e.to_string())?;
                if head.manifest.version != version {
                    return Err(format!("head says version {:?}, the manifest {version:?}", head.manifest.version));
                }
                slot.check(&head)?;
                self.send(name, status(State::Verified));
                store.install(&version, &bytes, &record).map_err(persist)?;
                store
                    .activate(&version)
                    .and_then(|_| store.set_last_issued_at_ms(t.manifest.issued_at_ms))
                    .map_err(persist)?;
                let verify_ms = started.elapsed().as_secs_f64() * 1e3;
                let swap_started = Instant::now();
                slot.activate(head, &version);
                let swap_us = swap_started.elapsed().as_secs_f64() * 1e6;
                tracing::info!(slot = %name, %version, verify_ms, swap_us, "head active");
                self.send(name, status(State::Active));
                self.publish_active(slot);
            }
            Target::Model(m) => {
                // stored first (tract loads from a file), current only once it has loaded
                store.install(&version, &bytes, &record).map_err(persist)?;
                let loaded = m.load_version(&version).map_err(|e| {
                    if let Err(e) = store.discard(&version) {
                        tracing::warn!(%version, error = %e, "rejected model not removed from the store");
                    }
                    format!("does not load as {}: {e}", m.name)
                })?;
                self.send(name, status(State::Verified));
                store
                    .begin_probation(&version)
                    .and_then(|_| store.activate(&version))
                    .and_then(|_| store.set_last_issued_at_ms(t.manifest.issued_at_ms))
                    .map_err(persist)?;
                m.shared.store(Arc::new(loaded));
                self.watch(m);
                tracing::info!(model = %name, %version, verify_ms = started.elapsed().as_secs_f64() * 1e3, "model active");
                self.send(name, status(State::Active));
                self.publish_model(m);
            }
        }
        Ok(())
    }

    fn rollback(&mut self, name: &str, id: &str, text: &str, signature: &str) -> Result<(), Reject> {
        self.verify_signature(text, signature)?;
        let order: RollbackOrder = serde_json::from_str(text).map_err(|e| format!("order: {e}"))?;
        let kind = if order.precision.is_some() { Kind::Model } else { Kind::Head };
        let target = self.target_for(name, kind, order.precision.as_ref())?;
        self.check_claims(
            name,
            target.store(),
            (order.slot.as_str(), order.device.as_str(), order.issued_at_ms),
            false,
        )?;
        let store = target.store();
        let persist = |e: std::io::Error| format!("cannot roll back on disk: {e}");
        let restored = match &target {
            Target::Slot(slot) => {
                if slot.previous_version().is_none() {
                    return Err("nothing to roll back to: the shipped head is active".into());
                }
                store.rollback().map_err(persist)?;
                slot.restore_previous().unwrap_or_default()
            }
            Target::Model(m) => {
                if store.current().is_none() {
                    return Err("nothing to roll back to: the shipped model is active".into());
                }
                let loaded = match store.previous() {
                    Some(v) => m.load_version(&v),
                    None => m.load_shipped(),
                }
                .map_err(|e| format!("the previous version does not load: {e}"))?;
                store.rollback().map_err(persist)?;
                m.shared.store(Arc::new(loaded));
                m.active_version()
            }
        };
        store.set_last_issued_at_ms(order.issued_at_ms).map_err(persist)?;
        // a transfer begun before this newer order is superseded by it
        if let Some(t) = self.transfers.remove(name) {
            remove_quietly(&t.part);
            let s = Status::new(Some(&t.id), name, State::Rejected).version(&t.manifest.version);
            self.send(name, s.reason("superseded by a newer rollback order"));
        }
        tracing::info!(%name, %restored, "rolled back by request");
        self.send(name, Status::new(Some(id), name, State::RolledBack).version(&restored));
        match &target {
            Target::Slot(slot) => self.publish_active(slot),
            Target::Model(m) => self.publish_model(m),
        }
        Ok(())
    }

    fn on_event(&mut self, e: SlotEvent) {
        let SlotEvent::AutoRolledBack { slot, failed, restored, reason } = e;
        if let Some(s) = self.slots.get(&slot).cloned() {
            if s.store.current().as_deref() == Some(failed.as_str())
                && let Err(e) = s.store.rollback()
            {
                tracing::error!(%slot, error = %e, "cannot persist the automatic rollback");
            }
            self.publish_active(&s);
        }
        for m in self.models.values().filter(|m| m.name == slot) {
            self.publish_model(m);
        }
        let reason = format!("{failed}: {reason}");
        self.send(&slot, Status::new(None, &slot, State::RolledBack).version(&restored).reason(reason));
    }
}

/// Removes a leftover file; a failure is logged (it costs disk, not correctness: a stale part
/// file is checked like any other before use).
pub(super) fn remove_quietly(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove")
        }
        _ => {}
    }
}

/// A topic level fit to echo back in a status topic (no wildcards or separators).
pub(super) fn sanitize(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !matches!(c, '/' | '+' | '#' | '\0')).take(64).collect();
    if clean.is_empty() { "_".into() } else { clean }
}
