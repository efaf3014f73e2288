//! Property tests: untrusted input (config files, image files, outbox segments) gives an error
//! value, never a panic.

use std::path::Path;

use proptest::prelude::*;

use edge_core::model::Catalog;

fn catalog() -> Catalog {
    Catalog::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
}

const VALID: &str = r#"
[agent]
device_id = "pi"
stats_interval_secs = 5
[mqtt]
host = "broker"
port = 1883
[outbox]
max_mb = 8
[pipelines.door]
source = { type = "images", path = "/srv/*.jpg", fps = 2.5, loop = true }
stages = [{ type = "detect", model = "nanodet", threshold = 0.4, classes = ["person"], tiling = { grid = { cols = 2, rows = 1, overlap = 0.1 } } }]
sinks = [{ type = "mqtt", skip_empty = true }]
"#;

fn load_text(text: &[u8]) -> Result<crate::config::Config, crate::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    crate::config::load(&path, &catalog())
}

#[test]
fn the_reference_config_is_valid() {
    load_text(VALID.as_bytes()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_config_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        drop(load_text(&bytes));
    }

    /// Single-byte edits of a valid file: deletions, insertions and replacements, including
    /// huge numbers, invalid UTF-8 and stray brackets.
    #[test]
    fn mutated_configs_never_panic(at in 0usize..VALID.len(), edit in 0u8..3, byte in prop::sample::select(
        vec![b'9', b'-', b'"', b'[', b']', b'{', b'}', b'=', b'\n', 0xff, 0xc3, b'e', b'.', b'#', b'x']
    )) {
        let mut b = VALID.as_bytes().to_vec();
        match edit {
            0 => { b.remove(at); }
            1 => b.insert(at, byte),
            _ => b[at] = byte,
        }
        drop(load_text(&b));
    }

    #[test]
    fn numbers_out_of_range_are_errors(port in any::<i64>(), threshold in any::<f64>(), fps in any::<f64>()) {
        let text = VALID
            .replace("port = 1883", &format!("port = {port}"))
            .replace("threshold = 0.4", &format!("threshold = {threshold:?}"))
            .replace("fps = 2.5", &format!("fps = {fps:?}"));
        let ok = load_text(text.as_bytes()).is_ok();
        let expected = (0..=65535).contains(&port) && threshold > 0.0 && threshold < 1.0 && fps.is_finite() && fps > 0.0;
        prop_assert_eq!(ok, expected, "{}", text);
    }

    #[test]
    fn arbitrary_or_truncated_images_are_errors(cut in 0usize..4000, junk in prop::collection::vec(any::<u8>(), 0..64), png in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images/chelsea.jpg");
        let mut bytes = if png {
            let img = image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        } else {
            std::fs::read(fixture).unwrap()
        };
        bytes.truncate(cut.min(bytes.len() - 1));
        bytes.extend(junk);
        let path = dir.path().join(if png { "x.png" } else { "x.jpg" });
        std::fs::write(&path, &bytes).unwrap();
        // decoding may succeed on a lucky prefix (JPEG is forgiving); it must never panic
        if let Ok(img) = edge_core::source::decode_image_file(&path) {
            prop_assert!(img.width() > 0 && img.height() > 0);
        }
    }

    #[test]
    fn arbitrary_outbox_segments_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{:016}.seg", 3)), &bytes).unwrap();
        let mut outbox = crate::outbox::Outbox::open(dir.path(), 1 << 20, 1 << 12).unwrap();
        while let Some((id, _)) = outbox.take_oldest().unwrap() {
            outbox.ack(id).unwrap();
        }
    }
}

#[test]
fn images_claiming_huge_or_zero_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // a PNG header claiming 100000 x 100000 pixels, and one claiming 0 x 0
    for (w, h) in [(100_000u32, 100_000u32), (0, 0)] {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32fast::hash(&[b"IHDR".as_slice(), &ihdr].concat());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        let path = dir.path().join(format!("{w}.png"));
        std::fs::write(&path, &png).unwrap();
        let err = edge_core::source::decode_image_file(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{w}.png")), "{err}");
    }
}

/// A manager with one slot (`s`, dim 3) trusting `key`, its state in `dir`.
fn update_manager(
    dir: &Path,
    key: &ed25519_dalek::SigningKey,
) -> (crate::update::manager::Manager, std::sync::Arc<edge_core::head::slot::HeadSlot>) {
    use edge_core::head::slot::{HeadSlot, SlotSpec};
    let mut shipped = edge_core::head::example("shipped", "0");
    shipped.manifest.backbone_sha256 = "ab".repeat(32);
    let spec = SlotSpec {
        name: "s",
        backbone: "b",
        backbone_sha256: &"ab".repeat(32),
        dim: 3,
        shipped,
        state_dir: dir,
        probation: 2,
        probe: vec![0.1, 0.2, 0.3],
    };
    let slot = std::sync::Arc::new(HeadSlot::open(spec, crossbeam_channel::unbounded().0));
    let settings = crate::config::UpdateSettings {
        trusted_keys: vec![crate::update::sign::encode_public(&key.verifying_key())],
        max_bytes: 4096,
        ..Default::default()
    };
    // statuses are not read here: a closed channel makes publishing a no-op
    let (out, _) = tokio::sync::mpsc::channel(1);
    let slots = std::collections::BTreeMap::from([("s".to_string(), slot.clone())]);
    (
        crate::update::manager::Manager::new(
            "dev",
            crate::mqtt::Topics::new("ea", "dev"),
            settings,
            slots,
            Default::default(),
            out,
        ),
        slot,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any bytes, and any corruption of a valid head file, parse to an error or a consistent head.
    #[test]
    fn arbitrary_or_mutated_head_files_never_panic(
        junk in prop::collection::vec(any::<u8>(), 0..300),
        at in 0usize..4096,
        byte in any::<u8>(),
    ) {
        drop(edge_core::head::Head::from_bytes(&junk));
        let mut bytes = edge_core::head::example("t", "1").to_bytes();
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(h) = edge_core::head::Head::from_bytes(&bytes) {
            prop_assert_eq!(h.logits(&[1.0, 2.0, 3.0]).len(), h.manifest.labels.len());
        }
    }

    /// A signed begin followed by arbitrary chunk and request messages, on arbitrary topics:
    /// the manager answers or ignores each, never panics, never writes outside its slot's
    /// folder, and the shipped head keeps serving unless a valid head arrived.
    #[test]
    fn arbitrary_update_traffic_never_panics_or_escapes(
        msgs in prop::collection::vec((0u8..4, any::<u64>(), any::<u64>(), "[ -~]{0,40}", prop::collection::vec(any::<u8>(), 0..64)), 1..12),
        slot_name in prop::sample::select(vec!["s", "..", "s/../..", "", "x", "s\u{0}"]),
    ) {
        use crate::update::manager::Incoming;
        use crate::update::protocol::{Kind, Request, UpdateManifest};
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let key = crate::update::sign::generate().unwrap();
        let (mut manager, slot) = update_manager(dir.path(), &key);
        let payload = b"not really a head but 48 bytes long, for tests!!";
        let manifest = UpdateManifest {
            kind: Kind::Head, slot: "s".into(), version: "1".into(),
            sha256: crate::update::sha256_hex(payload), size: payload.len() as u64,
            backbone_sha256: Some("ab".repeat(32)), precision: None, device: "dev".into(),
            issued_at_ms: crate::update::protocol::now_ms(), chunk_bytes: None, chunk_sha256: Vec::new(),
        };
        let text = serde_json::to_string(&manifest).unwrap();
        let begin = Request::Begin { id: "a".into(), signature: crate::update::sign::sign(&key, text.as_bytes()), manifest: text };
        let topic = format!("ea/dev/models/{slot_name}/update");
        manager.on_message(&Incoming { topic: topic.clone(), payload: serde_json::to_vec(&begin).unwrap() });
        for (kind, offset, total, text, data) in msgs {
            let body = match kind {
                0 => serde_json::to_vec(&Request::Chunk {
                    id: "a".into(), offset: offset % 64, total: if total % 2 == 0 { 48 } else { total },
                    data: base64::engine::general_purpose::STANDARD.encode(&data),
                }).unwrap(),
                1 => serde_json::to_vec(&Request::Begin { id: text.clone(), manifest: text.clone(), signature: text }).unwrap(),
                2 => serde_json::to_vec(&Request::Rollback { id: "r".into(), order: text.clone(), signature: text }).unwrap(),
                _ => data,
            };
            manager.on_message(&Incoming { topic: topic.clone(), payload: body });
        }
        // nothing outside <state>/models/s, and the garbage payload never became a head
        for e in std::fs::read_dir(dir.path()).unwrap() {
            prop_assert_eq!(e.unwrap().file_name(), "models");
        }
        for e in std::fs::read_dir(dir.path().join("models")).into_iter().flatten() {
            prop_assert_eq!(e.unwrap().file_name(), "s");
        }
        prop_assert_eq!(slot.active_version(), "shipped:shipped");
    }
}
