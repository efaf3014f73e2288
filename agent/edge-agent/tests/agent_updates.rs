//! Transfer learning end to end with a real broker: a head trained here on the digits fixtures
//! is signed and pushed to a running agent, acknowledged `active`, and its labels appear in
//! the published classifications; bad pushes (tampered, unsigned, unknown key, other backbone,
//! truncated, oversized, path traversal) are each rejected with their reason while the good
//! head keeps serving; a restart keeps it; a signed rollback restores the shipped head.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Message, Running, agent, collect_until, publish, root, run_with_timeout, sigterm, subscribe};
use edge_agent::update::protocol::{Kind, Request, UpdateManifest};
use edge_agent::update::{sha256_hex, sign, unix_now_ms};

const DEVICE: &str = "upd";

fn train(data: &str, out: &Path, version: &str) -> serde_json::Value {
    let mut c = agent();
    c.args(["head", "train", "--data"]).arg(root().join("tests/fixtures/heads").join(data));
    c.arg("--out").arg(out).args(["--version", version]);
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(300));
    assert!(status.success(), "{stderr}");
    serde_json::from_str(stdout.trim()).unwrap()
}

fn config(port: u16, public_key: &str, state: &Path) -> String {
    let sevens = root().join("tests/fixtures/heads/digits/7");
    format!(
        "[agent]\ndevice_id = \"{DEVICE}\"\nstate_dir = \"{}\"\nshutdown_timeout_secs = 15\n\
         [mqtt]\nport = {port}\nmax_backoff_secs = 1\n\
         [updates]\ntrusted_keys = [\"{public_key}\"]\nmax_bytes = 200000\ntransfer_timeout_secs = 2\n\
         [pipelines.digits]\nsource = {{ type = \"images\", path = \"{}\", fps = 4, loop = true }}\n\
         stages = [{{ type = \"classify\", top_k = 3 }}]\n",
        state.display(),
        sevens.display()
    )
}

/// The next classification published after now, as (head name, head version, top label).
fn next_classification(rx: &Receiver<Message>) -> (String, String, String) {
    let msgs = collect_until(rx, Duration::from_secs(60), |m| m.topic.contains("/classifications/"));
    let m = msgs.last().filter(|m| m.topic.contains("/classifications/")).expect("a classification");
    let v = m.json();
    (
        v["head"]["name"].as_str().unwrap().into(),
        v["head"]["version"].as_str().unwrap().into(),
        v["labels"][0]["label"].as_str().unwrap().into(),
    )
}

/// Statuses of request `id` until a final one (or the timeout).
fn statuses(rx: &Receiver<Message>, id: &str, timeout: Duration) -> Vec<serde_json::Value> {
    collect_until(rx, timeout, |m| {
        m.topic.ends_with("/update/status")
            && m.json()["id"] == id
            && matches!(m.json()["state"].as_str(), Some("active" | "rejected" | "rolled_back"))
    })
    .into_iter()
    .filter(|m| m.topic.ends_with("/update/status") && m.json()["id"] == id)
    .map(|m| m.json())
    .collect()
}

/// Sends a crafted push: `begin` with `manifest` signed by `key` (or the given signature),
/// then chunks of `bytes` as the device asks for them, at most `max_chunks`.
struct Crafted<'a> {
    port: u16,
    slot: &'a str,
    rx: &'a Receiver<Message>,
}

impl Crafted<'_> {
    fn send(
        &self,
        id: &str,
        manifest: &UpdateManifest,
        signature: Signature<'_>,
        bytes: &[u8],
        max_chunks: usize,
    ) -> serde_json::Value {
        let text = serde_json::to_string(manifest).unwrap();
        let signature = match signature {
            Signature::By(key) => sign::sign(key, text.as_bytes()),
            Signature::Raw(s) => s.to_string(),
        };
        let topic = format!("edge-agent/{DEVICE}/models/{}/update", self.slot);
        let begin = Request::Begin { id: id.into(), manifest: text, signature };
        publish(self.port, &topic, &serde_json::to_vec(&begin).unwrap());
        let mut sent = 0;
        loop {
            let got = collect_until(self.rx, Duration::from_secs(20), |m| {
                m.topic.ends_with("/update/status") && m.json()["id"] == id
            });
            let last = got.last().expect("a status").json();
            if last["state"] != "received" || sent == max_chunks {
                if last["state"] == "received" {
                    // stop sending: wait for the device to give up on us
                    return statuses(self.rx, id, Duration::from_secs(20)).pop().expect("a final status");
                }
                return last;
            }
            let offset = last["offset"].as_u64().unwrap() as usize;
            let end = (offset + 16 * 1024).min(bytes.len());
            let chunk = Request::Chunk {
                id: id.into(),
                offset: offset as u64,
                total: manifest.size,
                data: B64.encode(&bytes[offset..end]),
            };
            publish(self.port, &topic, &serde_json::to_vec(&chunk).unwrap());
            sent += 1;
        }
    }
}

enum Signature<'a> {
    By(&'a ed25519_dalek::SigningKey),
    Raw(&'a str),
}

fn keygen(dir: &Path) -> (PathBuf, String) {
    let mut c = agent();
    c.args(["keygen", "--out"]).arg(dir.join("ops"));
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    (dir.join("ops.secret"), stdout.trim().to_string())
}

fn cli(port: u16, key: &Path, args: &[&str]) -> (bool, String, String) {
    let mut c = agent();
    c.args(args).args(["--device", DEVICE, "--port", &port.to_string(), "--timeout", "30", "--key"]).arg(key);
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(120));
    (status.success(), stdout, stderr)
}

#[test]
fn a_trained_head_is_pushed_verified_swapped_kept_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let head_path = dir.path().join("digits.safetensors");
    let report = train("digits", &head_path, "2");
    let (val, chance) = (report["val_accuracy"].as_f64().unwrap(), report["chance"].as_f64().unwrap());
    assert!(val >= 0.8 && val > 5.0 * chance, "held-out accuracy {val} (chance {chance})");
    let faces = train("faces", &dir.path().join("faces.safetensors"), "1");
    assert!(faces["val_accuracy"].as_f64().unwrap() >= 0.85, "{faces}");

    let (key_path, public) = keygen(dir.path());
    let broker = common::rumqttd();
    let rx = subscribe(broker.port, "watcher", &format!("edge-agent/{DEVICE}/#"));
    let state = dir.path().join("state");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, config(broker.port, &public, &state)).unwrap();
    let mut running = Running::agent(&cfg);

    let (head, _, _) = next_classification(&rx);
    assert_eq!(head, "imagenet", "the shipped head serves first");

    // push with the CLI: acks received -> verified -> active
    let (ok, stdout, stderr) = cli(broker.port, &key_path, &["push", "--head", head_path.to_str().unwrap()]);
    assert!(ok, "push failed: {stdout}\n{stderr}");
    let states: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("received"));
    assert_eq!(&states[states.len() - 2..], ["verified", "active"]);

    // the published classifications now use the new labels, and see sevens
    let mut tops = Vec::new();
    while tops.len() < 6 {
        let (name, version, top) = next_classification(&rx);
        if name == "digits" {
            assert_eq!(version, "2");
            tops.push(top);
        }
    }
    assert!(tops.iter().filter(|t| *t == "7").count() >= 5, "{tops:?}");

    // bad pushes, each rejected with its reason
    let bytes = std::fs::read(&head_path).unwrap();
    let good = |issued: u64| UpdateManifest {
        kind: Kind::Head,
        slot: "digits".into(),
        version: "3".into(),
        sha256: sha256_hex(&bytes),
        size: bytes.len() as u64,
        backbone_sha256: Some(edge_core::head::Head::from_bytes(&bytes).unwrap().manifest.backbone_sha256),
        precision: None,
        device: DEVICE.into(),
        issued_at_ms: unix_now_ms() + issued,
        chunk_bytes: None,
        chunk_sha256: Vec::new(),
    };
    let key = sign::read_secret(&key_path).unwrap();
    let stranger = sign::generate().unwrap();
    let crafted = Crafted { port: broker.port, slot: "digits", rx: &rx };
    let mut tampered = bytes.clone();
    let n = tampered.len();
    tampered[n - 3] ^= 0x40;
    let reason = |v: serde_json::Value| {
        assert_eq!(v["state"], "rejected", "{v}");
        v["reason"].as_str().unwrap().to_string()
    };
    let r = reason(crafted.send("tampered", &good(1), Signature::By(&key), &tampered, usize::MAX));
    assert!(r.contains("sha256 mismatch"), "{r}");
    let r = reason(crafted.send("unsigned", &good(2), Signature::Raw(""), &bytes, usize::MAX));
    assert!(r.contains("signature"), "{r}");
    let r = reason(crafted.send("stranger", &good(3), Signature::By(&stranger), &bytes, usize::MAX));
    assert!(r.contains("trusted key"), "{r}");
    let other_backbone = UpdateManifest { backbone_sha256: Some("ab".repeat(32)), ..good(4) };
    let r = reason(crafted.send("backbone", &other_backbone, Signature::By(&key), &bytes, usize::MAX));
    assert!(r.contains("another backbone"), "{r}");
    let r = reason(crafted.send("truncated", &good(5), Signature::By(&key), &bytes, 1));
    assert!(r.contains("incomplete"), "{r}");
    let huge = UpdateManifest { size: 50 << 20, ..good(6) };
    let r = reason(crafted.send("oversized", &huge, Signature::By(&key), &bytes, usize::MAX));
    assert!(r.contains("updates.max_bytes"), "{r}");
    let climbing = UpdateManifest { version: "../../etc".into(), ..good(7) };
    let r = reason(crafted.send("traversal-version", &climbing, Signature::By(&key), &bytes, usize::MAX));
    assert!(r.contains("invalid version"), "{r}");
    let outside = Crafted { port: broker.port, slot: "..", rx: &rx };
    let r = reason(outside.send(
        "traversal-slot",
        &UpdateManifest { slot: "..".into(), ..good(8) },
        Signature::By(&key),
        &bytes,
        0,
    ));
    assert!(r.contains("invalid slot name"), "{r}");
    // older than what was accepted last (the truncated push's begin), not old enough to expire
    let replayed = UpdateManifest { issued_at_ms: unix_now_ms() - 60_000, ..good(0) };
    let r = reason(crafted.send("replayed", &replayed, Signature::By(&key), &bytes, usize::MAX));
    assert!(r.contains("stale or replayed"), "{r}");
    assert!(!state.parent().unwrap().join("etc").exists() && !state.join("models/digits/3").exists());
    assert_eq!(next_classification(&rx).0, "digits", "the good head still serves");

    // a restart keeps the pushed head
    sigterm(&mut running);
    assert!(running.try_wait().unwrap().is_some_and(|s| s.success()));
    while rx.try_recv().is_ok() {} // nothing from the first run may answer for the second
    let mut running = Running::agent(&cfg);
    let (name, version, _) = next_classification(&rx);
    assert_eq!((name.as_str(), version.as_str()), ("digits", "2"));

    // a signed rollback restores the shipped head
    let (ok, stdout, stderr) = cli(broker.port, &key_path, &["rollback", "--slot", "digits"]);
    assert!(ok, "rollback failed: {stdout}\n{stderr}");
    assert!(stdout.contains("\"rolled_back\"") && stdout.contains("shipped:imagenet"), "{stdout}");
    loop {
        let (name, _, _) = next_classification(&rx);
        if name == "imagenet" {
            break;
        }
    }
    sigterm(&mut running);
}

/// The next detections message, as (model version, top label).
fn next_detection(rx: &Receiver<Message>) -> (String, String) {
    let msgs = collect_until(rx, Duration::from_secs(60), |m| m.topic.contains("/detections/"));
    let v = msgs.last().filter(|m| m.topic.contains("/detections/")).expect("detections").json();
    (v["model"]["version"].as_str().unwrap().into(), v["detections"][0]["label"].as_str().unwrap_or("-").into())
}

#[test]
fn a_detector_is_replaced_whole_kept_and_rolled_back_and_a_broken_one_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, public) = keygen(dir.path());
    let broker = common::rumqttd();
    let rx = subscribe(broker.port, "watcher-models", &format!("edge-agent/{DEVICE}/#"));
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ndevice_id = \"{DEVICE}\"\nstate_dir = \"{}\"\n[mqtt]\nport = {}\nmax_backoff_secs = 1\n\
             [updates]\ntrusted_keys = [\"{public}\"]\n\
             [pipelines.pets]\nsource = {{ type = \"images\", path = \"{}\", fps = 3, loop = true }}\n\
             stages = [{{ type = \"detect\", model = \"nanodet\", tiling = \"none\" }}]\n",
            dir.path().join("state").display(),
            broker.port,
            common::fixture("chelsea.jpg").display()
        ),
    )
    .unwrap();
    let mut running = Running::agent(&cfg);
    assert_eq!(next_detection(&rx), ("1.0.0".to_string(), "cat".to_string()));

    // another real NanoDet file (the fp32 graph) replaces the int8 variant as version 2
    let replacement = root().join("models/nanodet/nanodet.fp32.onnx");
    let push = |file: &Path, version: &str| {
        cli(
            broker.port,
            &key_path,
            &[
                "push",
                "--model",
                file.to_str().unwrap(),
                "--slot",
                "nanodet",
                "--precision",
                "int8",
                "--version",
                version,
            ],
        )
    };
    let (ok, stdout, stderr) = push(&replacement, "2");
    assert!(ok && stdout.contains("\"active\""), "{stdout}\n{stderr}");
    loop {
        let (version, top) = next_detection(&rx);
        if version == "2" {
            assert_eq!(top, "cat", "the new model still finds the cat");
            break;
        }
    }

    // a signed file that is no model: rejected, version 2 keeps serving
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    let (ok, stdout, _) = push(&junk, "3");
    assert!(!ok && stdout.contains("\"rejected\"") && stdout.contains("does not load"), "{stdout}");
    assert_eq!(next_detection(&rx).0, "2");

    // a signed graph that panics tract while it is typed (scripts/make-crafted-models.py):
    // rejected with the reason, version 2 keeps serving, and the updates thread lives on (the
    // rollback below is answered by it)
    let crafted = root().join("tests/fixtures/models/maxpool-stride-0.onnx");
    let (ok, stdout, _) = push(&crafted, "4");
    assert!(!ok && stdout.contains("\"rejected\"") && stdout.contains("bug in tract"), "{stdout}");
    assert_eq!(next_detection(&rx).0, "2");

    sigterm(&mut running);
    while rx.try_recv().is_ok() {}
    let mut running = Running::agent(&cfg);
    assert_eq!(next_detection(&rx).0, "2", "the update survives a restart");

    let (ok, stdout, stderr) = cli(broker.port, &key_path, &["rollback", "--slot", "nanodet", "--precision", "int8"]);
    assert!(ok && stdout.contains("\"rolled_back\"") && stdout.contains("1.0.0"), "{stdout}\n{stderr}");
    loop {
        if next_detection(&rx).0 == "1.0.0" {
            break;
        }
    }
    sigterm(&mut running);
}

#[test]
fn a_pushed_detector_that_never_passes_probation_is_rolled_back_at_a_later_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, public) = keygen(dir.path());
    let broker = common::rumqttd();
    let rx = subscribe(broker.port, "watcher-probation", &format!("edge-agent/{DEVICE}/#"));
    let cfg = dir.path().join("agent.toml");
    let state = dir.path().join("state");
    let write_config = |probation: u32| {
        let text = format!(
            "[agent]\ndevice_id = \"{DEVICE}\"\nstate_dir = \"{}\"\n[mqtt]\nport = {}\nmax_backoff_secs = 1\n\
             [updates]\ntrusted_keys = [\"{public}\"]\nprobation_inferences = {probation}\n\
             [pipelines.pets]\nsource = {{ type = \"images\", path = \"{}\", fps = 3, loop = true }}\n\
             stages = [{{ type = \"detect\", model = \"nanodet\", tiling = \"none\" }}]\n",
            state.display(),
            broker.port,
            common::fixture("chelsea.jpg").display()
        );
        std::fs::write(&cfg, text).unwrap();
    };
    let marker = state.join("models/nanodet@int8/probation");
    let replacement = root().join("models/nanodet/nanodet.fp32.onnx");
    let push = |version: &str| {
        let file = replacement.to_str().unwrap();
        let args = ["push", "--model", file, "--slot", "nanodet", "--precision", "int8", "--version", version];
        let (ok, stdout, stderr) = cli(broker.port, &key_path, &args);
        assert!(ok && stdout.contains("\"active\""), "{stdout}\n{stderr}");
    };
    // a probation it cannot pass in this test: each life ends (as the watchdog ends a stalled
    // agent, or a crash) before it has run a million frames
    write_config(1_000_000);
    let mut running = Running::agent(&cfg);
    assert_eq!(next_detection(&rx).0, "1.0.0");
    push("2");
    assert!(std::fs::read_to_string(&marker).unwrap().starts_with("2 "), "on probation");
    for start in 1..=2 {
        running.0.kill().unwrap();
        running.0.wait().unwrap();
        while rx.try_recv().is_ok() {}
        running = Running::agent(&cfg);
        assert_eq!(next_detection(&rx).0, "2", "start {start} still tries the pushed model");
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), format!("2 {start}"));
    }
    running.0.kill().unwrap();
    running.0.wait().unwrap();
    while rx.try_recv().is_ok() {}
    running = Running::agent(&cfg);
    let seen = collect_until(&rx, Duration::from_secs(120), |m| {
        m.topic.ends_with("/models/nanodet/update/status") && m.json()["state"] == "rolled_back"
    });
    let status = seen.last().unwrap().json();
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert!(status["reason"].as_str().unwrap().contains("still on probation"), "{status}");
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(next_detection(&rx).0, "1.0.0", "the shipped model serves again");
    assert!(!marker.exists());
    sigterm(&mut running);

    // a probation it passes: the marker goes, and a hard stop afterwards keeps the model
    write_config(3);
    while rx.try_recv().is_ok() {}
    let mut running = Running::agent(&cfg);
    assert_eq!(next_detection(&rx).0, "1.0.0");
    push("3");
    let passed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        !marker.exists()
    });
    assert!(passed, "probation not ended after 20 s at 3 frames/s");
    running.0.kill().unwrap();
    running.0.wait().unwrap();
    while rx.try_recv().is_ok() {}
    let mut running = Running::agent(&cfg);
    assert_eq!(next_detection(&rx).0, "3", "a model past probation stays");
    sigterm(&mut running);
}
