//! The update path against someone who can publish on the device's topics and replay what
//! they recorded, but holds no key, and against signed pushes that are wrong: each hole found
//! by reading the update code is tried on a running agent, with a small real head pushed to its
//! classify slot.
//! - a version named like the store's own entries (`current`, `incoming`, …) is refused, and a
//!   normal push afterwards works and survives a restart;
//! - orders from the future (which would lock the slot) and expired ones are refused;
//! - a request with a transfer's id but no valid signature, a chunk that lies about the total,
//!   or (with signed chunk hashes) a forged chunk does not cancel that transfer: it completes;
//! - a finished push replayed is refused; an abandoned one superseded by a newer push is too;
//! - an unreadable replay counter refuses updates (fails closed) until it is repaired;
//! - a forged `active` status, sent the moment a push begins, does not fool `push --device-key`,
//!   and a push given another device's key believes none of the real statuses either.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Message, collect_until, publish, root, subscribe};
use edge_agent::update::protocol::{Kind, Request, UpdateManifest};
use edge_agent::update::{sha256_hex, sign, unix_now_ms};
use edge_core::head::{Head, HeadManifest};

const DEVICE: &str = "attacked";
const SLOT: &str = "digits";
const TOPIC: &str = "edge-agent/attacked/models/digits/update";

/// A two-label head for the int8 EfficientNet-Lite0 backbone.
fn head(version: &str) -> Vec<u8> {
    let backbone = std::fs::read(root().join("models/efficientnet-lite0/backbone.int8.onnx")).unwrap();
    let manifest = HeadManifest {
        name: "attack-test".into(),
        version: version.into(),
        backbone: "efficientnet-lite0".into(),
        backbone_sha256: sha256_hex(&backbone),
        input_dim: 1280,
        labels: vec!["left".into(), "right".into()],
        metrics: serde_json::json!({}),
        created: "2026-12-06T00:00:00Z".into(),
    };
    let weight = (0..2 * 1280).map(|i| ((i % 7) as f32 - 3.0) * 1e-3).collect();
    Head::new(manifest, weight, vec![0.0, 0.0]).unwrap().to_bytes()
}

fn manifest(version: &str, bytes: &[u8], issued_at_ms: u64) -> UpdateManifest {
    let backbone = std::fs::read(root().join("models/efficientnet-lite0/backbone.int8.onnx")).unwrap();
    UpdateManifest {
        kind: Kind::Head,
        slot: SLOT.into(),
        version: version.into(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        backbone_sha256: Some(sha256_hex(&backbone)),
        precision: None,
        device: DEVICE.into(),
        issued_at_ms,
        chunk_bytes: None,
        chunk_sha256: Vec::new(),
    }
}

struct Device<'a> {
    port: u16,
    rx: &'a Receiver<Message>,
    key: &'a ed25519_dalek::SigningKey,
}

impl Device<'_> {
    fn begin(&self, id: &str, m: &UpdateManifest, signature: Option<&str>) -> Request {
        let text = serde_json::to_string(m).unwrap();
        let signature = signature.map_or_else(|| sign::sign(self.key, text.as_bytes()), str::to_string);
        let begin = Request::Begin { id: id.into(), manifest: text, signature };
        publish(self.port, TOPIC, &serde_json::to_vec(&begin).unwrap());
        begin
    }

    fn chunk(&self, id: &str, offset: usize, total: u64, data: &[u8]) {
        let chunk = Request::Chunk { id: id.into(), offset: offset as u64, total, data: B64.encode(data) };
        publish(self.port, TOPIC, &serde_json::to_vec(&chunk).unwrap());
    }

    /// The next status of request `id`.
    fn status(&self, id: &str) -> serde_json::Value {
        let got = collect_until(self.rx, Duration::from_secs(30), |m| {
            m.topic.ends_with("/update/status") && m.json()["id"] == id
        });
        let last = got.last().filter(|m| m.topic.ends_with("/update/status")).expect("a status");
        last.json()
    }

    /// Sends the rest of `bytes` in 4 KiB chunks from the device's offset, until a final state.
    fn send_rest(&self, id: &str, bytes: &[u8], mut last: serde_json::Value) -> serde_json::Value {
        while last["state"] == "received" {
            let offset = last["offset"].as_u64().unwrap() as usize;
            let end = (offset + 4096).min(bytes.len());
            self.chunk(id, offset, bytes.len() as u64, &bytes[offset..end]);
            last = self.status(id);
        }
        // verified comes before active
        while last["state"] == "verified" {
            last = self.status(id);
        }
        last
    }

    /// A whole push; its final status.
    fn push(&self, id: &str, version: &str, issued_at_ms: u64) -> serde_json::Value {
        let bytes = head(version);
        self.begin(id, &manifest(version, &bytes, issued_at_ms), None);
        let first = self.status(id);
        self.send_rest(id, &bytes, first)
    }
}

fn rejected_because(status: &serde_json::Value, why: &str) {
    assert_eq!(status["state"], "rejected", "{status}");
    assert!(status["reason"].as_str().unwrap().contains(why), "expected {why:?}: {status}");
}

fn config(port: u16, public: &str, state: &Path) -> String {
    format!(
        "[agent]\ndevice_id = \"{DEVICE}\"\nstate_dir = \"{}\"\nshutdown_timeout_secs = 15\n\
         [mqtt]\nport = {port}\nmax_backoff_secs = 1\n\
         [updates]\ntrusted_keys = [\"{public}\"]\nmax_bytes = 200000\ntransfer_timeout_secs = 2\n\
         [pipelines.digits]\nsource = {{ type = \"images\", path = \"{}\", fps = 2, loop = true }}\n\
         stages = [{{ type = \"classify\", top_k = 2 }}]\n",
        state.display(),
        root().join("tests/fixtures/heads/digits/7").display()
    )
}

#[test]
fn replays_reserved_names_clocks_and_forged_requests_do_not_get_through() {
    let broker = common::rumqttd();
    let dir = tempfile::tempdir().unwrap();
    let key = sign::generate().unwrap();
    let public = sign::encode_public(&key.verifying_key());
    let path = dir.path().join("agent.toml");
    let state = dir.path().join("state");
    std::fs::write(&path, config(broker.port, &public, &state)).unwrap();
    let rx = subscribe(broker.port, "watch-attacks", &format!("edge-agent/{DEVICE}/#"));
    let mut agent = common::Running::agent(&path);
    collect_until(&rx, Duration::from_secs(120), |m| m.topic.contains("/classifications/"));
    let device = Device { port: broker.port, rx: &rx, key: &key };
    let now = unix_now_ms;

    // the store's own names are not versions
    for (i, name) in ["current", "previous", "incoming", "issued_at_ms"].iter().enumerate() {
        let bytes = head(name);
        let id = format!("reserved-{i}");
        device.begin(&id, &manifest(name, &bytes, now()), None);
        rejected_because(&device.status(&id), "invalid version");
    }

    // clocks: from the future (would lock the slot), or expired
    let bytes = head("9");
    device.begin("future", &manifest("9", &bytes, now() + 3_600_000), None);
    rejected_because(&device.status("future"), "in the future");
    device.begin("old", &manifest("9", &bytes, now() - 2 * 86_400_000), None);
    rejected_because(&device.status("old"), "expired");

    // a transfer survives requests that carry its id but no valid signature or a false total
    let one = head("1");
    let signed_one = manifest("1", &one, now());
    let begin_one = device.begin("good", &signed_one, None);
    let first = device.status("good");
    assert_eq!(first["state"], "received", "{first}");
    device.begin("good", &manifest("1", &one, now()), Some("bm90IGEgc2lnbmF0dXJl"));
    rejected_because(&device.status("good"), "signature");
    device.chunk("good", 0, 999_999, &one[..4096]);
    rejected_because(&device.status("good"), "total");
    let done = device.send_rest("good", &one, first);
    assert_eq!(done["state"], "active", "{done}");

    // the finished push replayed, word for word: refused
    publish(broker.port, TOPIC, &serde_json::to_vec(&begin_one).unwrap());
    rejected_because(&device.status("good"), "stale or replayed");

    // an abandoned push (one chunk, then silence), superseded by a newer one, cannot come back
    let two = head("2");
    let signed_two = manifest("2", &two, now());
    let begin_two = device.begin("abandoned", &signed_two, None);
    device.status("abandoned");
    device.chunk("abandoned", 0, two.len() as u64, &two[..4096]);
    device.status("abandoned");
    let gave_up = device.status("abandoned");
    rejected_because(&gave_up, "incomplete");
    assert_eq!(device.push("three", "3", now())["state"], "active");
    publish(broker.port, TOPIC, &serde_json::to_vec(&begin_two).unwrap());
    rejected_because(&device.status("abandoned"), "stale or replayed");

    // with signed chunk hashes (as the push client sends), a forged chunk at the right offset
    // is refused on its own and the transfer completes
    let chunked = head("3.1");
    let signed = manifest("3.1", &chunked, now()).with_chunks(&chunked, 4096);
    device.begin("chunked", &signed, None);
    let first = device.status("chunked");
    device.chunk("chunked", 0, chunked.len() as u64, &[0x5a; 4096]);
    rejected_because(&device.status("chunked"), "signed hash");
    assert_eq!(device.send_rest("chunked", &chunked, first)["state"], "active");

    // an unreadable replay counter refuses everything until it is repaired
    let counter = state.join("models").join(SLOT).join("issued_at_ms");
    std::fs::write(&counter, "not a number").unwrap();
    let four = head("4");
    device.begin("blind", &manifest("4", &four, now()), None);
    rejected_because(&device.status("blind"), "replay counter");
    std::fs::remove_file(&counter).unwrap();
    assert_eq!(device.push("repaired", "4", now())["state"], "active");

    // a restart keeps what was pushed last
    common::sigterm(&mut agent);
    let mut agent = common::Running::agent(&path);
    let seen = collect_until(&rx, Duration::from_secs(120), |m| m.topic.contains("/classifications/"));
    let c = seen.last().unwrap().json();
    assert_eq!((c["head"]["name"].as_str(), c["head"]["version"].as_str()), (Some("attack-test"), Some("4")), "{c}");
    common::sigterm(&mut agent);
}

/// Answers every `begin` on the slot's update topic with a forged `active` status (unsigned, or
/// signed with a key that is not the device's), as someone watching the topics would.
fn forge_statuses(port: u16, forger: ed25519_dalek::SigningKey) {
    let requests = subscribe(port, "forger", TOPIC);
    std::thread::spawn(move || {
        for m in requests {
            let Ok(Request::Begin { id, .. }) = serde_json::from_slice::<Request>(&m.payload) else { continue };
            let status =
                edge_agent::update::protocol::Status::new(Some(&id), SLOT, edge_agent::update::protocol::State::Active)
                    .version("forged");
            for s in [status.clone(), status.signed(&forger, DEVICE)] {
                publish(port, &format!("{TOPIC}/status"), &serde_json::to_vec(&s).unwrap());
            }
        }
    });
}

#[test]
fn push_believes_only_statuses_the_device_signed() {
    let broker = common::rumqttd();
    let dir = tempfile::tempdir().unwrap();
    let key = sign::generate().unwrap();
    let (secret, _) = sign::write_pair(&key, &dir.path().join("ops")).unwrap();
    let path = dir.path().join("agent.toml");
    let state = dir.path().join("state");
    std::fs::write(&path, config(broker.port, &sign::encode_public(&key.verifying_key()), &state)).unwrap();
    // the operator reads the device's key on the device (made on first use, kept after)
    let device_key = || {
        let mut c = common::agent();
        c.args(["device-key", "--config"]).arg(&path);
        let (status, stdout, stderr) = common::run_with_timeout(c, Duration::from_secs(30));
        assert!(status.success(), "{stderr}");
        stdout.trim().to_string()
    };
    let rx = subscribe(broker.port, "watch-forged", &format!("edge-agent/{DEVICE}/#"));
    let mut agent = common::Running::agent(&path);
    collect_until(&rx, Duration::from_secs(120), |m| m.topic.contains("/classifications/"));
    let public = device_key();
    assert!(sign::public_key(&public).is_ok(), "{public}");
    forge_statuses(broker.port, sign::generate().unwrap());
    let head_file = dir.path().join("head.safetensors");
    let push = |version: &str, device_key: &str| {
        std::fs::write(&head_file, head(version)).unwrap();
        let mut c = common::agent();
        c.args(["push", "--device", DEVICE, "--slot", SLOT, "--timeout", "5", "--device-key", device_key])
            .args(["--port", &broker.port.to_string(), "--key"])
            .arg(&secret)
            .arg("--head")
            .arg(&head_file)
            .env("RUST_LOG", "warn");
        let (status, stdout, stderr) = common::run_with_timeout(c, Duration::from_secs(120));
        (status.success(), stdout, stderr)
    };

    let (ok, stdout, stderr) = push("5", &public);
    assert!(ok, "{stdout}\n{stderr}");
    let printed: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(printed.iter().all(|s| s["version"] != "forged"), "a forged status was believed: {stdout}");
    assert_eq!(printed.last().unwrap()["state"], "active");
    assert_eq!(printed.last().unwrap()["version"], "5");
    assert!(stderr.contains("not signed by the device"), "the forgeries were seen and ignored: {stderr}");
    // the device really serves it
    let served = collect_until(&rx, Duration::from_secs(60), |m| {
        m.topic.contains("/classifications/") && m.json()["head"]["version"] == "5"
    });
    assert!(served.last().is_some_and(|m| m.json()["head"]["version"] == "5"));

    // another device's key: no status verifies, forged or real, so the push does not end well
    let stranger = sign::encode_public(&sign::generate().unwrap().verifying_key());
    let (ok, stdout, stderr) = push("6", &stranger);
    assert!(!ok, "a push that saw no verified status must fail: {stdout}\n{stderr}");
    assert!(stdout.trim().is_empty(), "nothing unverified is printed: {stdout}");
    assert!(stderr.contains("no answer"), "{stderr}");
    common::sigterm(&mut agent);
}
