//! The update protocol as an attacker sends it: after a valid signed `begin` for slot `s`,
//! the input is split at 0xFF bytes into messages, each sent on the slot's update topic (a
//! first byte of 1 sends it to `..`, 2 to another device's slot). The manager must never panic,
//! never write outside its slot's folder, and never serve what it was not signed for.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use edge_agent::update::manager::{Incoming, Manager};
use edge_agent::update::protocol::{Kind, Request, UpdateManifest};
use edge_core::head::slot::{HeadSlot, SlotSpec};
use libfuzzer_sys::fuzz_target;

struct World {
    manager: Manager,
    slot: Arc<HeadSlot>,
    key: ed25519_dalek::SigningKey,
    dir: std::path::PathBuf,
    n: u64,
}

fn world() -> &'static Mutex<World> {
    static W: OnceLock<Mutex<World>> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edge-fuzz-update-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = edge_agent::update::sign::generate().unwrap();
        let mut shipped = edge_core::head::example("shipped", "0");
        shipped.manifest.backbone_sha256 = "ab".repeat(32);
        let spec = SlotSpec {
            name: "s",
            backbone: "b",
            backbone_sha256: &"ab".repeat(32),
            dim: 3,
            shipped,
            state_dir: &dir,
            probation: 2,
            probe: vec![0.1, 0.2, 0.3],
        };
        let slot = Arc::new(HeadSlot::open(spec, crossbeam_channel::unbounded().0));
        let settings = edge_agent::config::UpdateSettings {
            trusted_keys: vec![edge_agent::update::sign::encode_public(&key.verifying_key())],
            max_bytes: 4096,
            ..Default::default()
        };
        let (out, _) = tokio::sync::mpsc::channel(1); // statuses are not read: a closed channel
        let slots = std::collections::BTreeMap::from([("s".to_string(), slot.clone())]);
        let topics = edge_agent::mqtt::Topics::new("ea", "dev");
        let manager = Manager::new("dev", topics, settings, slots, Default::default(), out);
        Mutex::new(World { manager, slot, key, dir, n: 0 })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut w = world().lock().unwrap();
    w.n += 1;
    let payload = b"not really a head but 48 bytes long, for tests!!";
    let manifest = UpdateManifest {
        kind: Kind::Head,
        slot: "s".into(),
        version: format!("v{}", w.n),
        sha256: edge_agent::update::sha256_hex(payload),
        size: payload.len() as u64,
        backbone_sha256: Some("ab".repeat(32)),
        precision: None,
        device: "dev".into(),
        issued_at_ms: edge_agent::update::protocol::now_ms() + w.n,
        chunk_bytes: None,
        chunk_sha256: Vec::new(),
    };
    let text = serde_json::to_string(&manifest).unwrap();
    let signature = edge_agent::update::sign::sign(&w.key, text.as_bytes());
    let begin = Request::Begin { id: format!("t{}", w.n), signature, manifest: text };
    let topic = |which: u8| match which {
        1 => "ea/dev/models/../update".to_string(),
        2 => "ea/other/models/s/update".to_string(),
        _ => "ea/dev/models/s/update".to_string(),
    };
    w.manager.on_message(&Incoming { topic: topic(0), payload: serde_json::to_vec(&begin).unwrap() });
    for part in data.split(|b| *b == 0xFF) {
        let (which, body) = part.split_first().map_or((0, part), |(w, rest)| (*w, rest));
        w.manager.on_message(&Incoming { topic: topic(which), payload: body.to_vec() });
    }
    // the garbage payload can never become the served head; nothing leaves the slot's folder
    assert_eq!(w.slot.active_version(), "shipped:shipped");
    for e in std::fs::read_dir(&w.dir).unwrap() {
        assert_eq!(e.unwrap().file_name(), "models");
    }
});
