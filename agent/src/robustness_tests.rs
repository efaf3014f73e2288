//! Property tests: untrusted input (config files, image files, outbox segments) gives an error
//! value, never a panic.

use std::path::Path;

use proptest::prelude::*;

use crate::model::Catalog;

fn catalog() -> Catalog {
    Catalog::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")).unwrap()
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
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg");
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
        if let Ok(img) = crate::source::decode_image_file(&path) {
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
        let err = crate::source::decode_image_file(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{w}.png")), "{err}");
    }
}
