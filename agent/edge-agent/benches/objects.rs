//! Objects against frames, measured in one run: what the tracker costs per frame beside the
//! detector it follows (BlazeFace and NanoDet, int8, on this machine), and how many MQTT
//! messages a person standing in view for a minute at 10 fps makes with per-frame results
//! (what a camera published before objects) and with tracked objects (events, counts and
//! snapshots, a camera's default now). The detections are the detector's real output on a
//! frame, repeated with a pixel or two of jitter and a little score noise, as a camera gives.
//! `cargo bench --bench objects`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use edge_agent::config::{DetectStage, Precision};
use edge_agent::event::Event;
use edge_agent::objects::{Coordinates, ObjectsConfig, Tracking, ZoneConfig};
use edge_core::model::{Catalog, ModelPool};
use edge_core::source::Frame;
use edge_core::vision::detector::{DetectOutput, Detector};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A deterministic jitter in [-1, 1].
fn noise(i: u64, k: u64) -> f64 {
    let x = (i.wrapping_mul(6364136223846793005).wrapping_add(k.wrapping_mul(1442695040888963407)) >> 33) as f64;
    x / f64::from(u32::MAX >> 1) - 1.0
}

/// Messages on MQTT for these events with `per_frame` off (the MQTT sink's mapping).
fn messages(events: &[Event]) -> usize {
    events.iter().filter(|e| !e.is_per_frame()).count()
}

struct Run {
    tracker_us: f64,
    messages: usize,
    events: usize,
}

/// `frames` frames of `out` (jittered) through a tracker with a zone over the right half.
fn track(frame: &Frame, out: &DetectOutput, frames: u64, snapshots: bool, dir: &Path) -> Run {
    let zones = BTreeMap::from([(
        "right".to_string(),
        ZoneConfig {
            points: vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
            coordinates: Coordinates::Normalized,
            objects: vec![],
        },
    )]);
    let mut c = ObjectsConfig {
        enabled: Some(true),
        track: out.detections.iter().map(|d| d.label.clone()).collect(),
        ..Default::default()
    };
    c.track.dedup();
    c.snapshots.enabled = snapshots;
    let tracked = c.track.clone();
    let mut t = Tracking::new("bench", &c, &zones, tracked, Some(dir)).expect("tracking");
    let mut events = t.start();
    let mut times = Vec::new();
    for i in 0..frames {
        let mut o = out.clone();
        for (k, d) in o.detections.iter_mut().enumerate() {
            for (j, v) in d.bbox.iter_mut().enumerate() {
                *v += 1.5 * noise(i, (k * 4 + j) as u64);
            }
            d.score = (d.score + 0.03 * noise(i, 99 + k as u64)).clamp(0.0, 1.0);
        }
        let f = Frame {
            captured: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 100 * i),
            ..frame.clone()
        };
        let started = Instant::now();
        events.extend(t.frame(&f, &o));
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    events.extend(t.finish());
    Run {
        tracker_us: median(times),
        messages: messages(&events),
        events: events.iter().filter(|e| matches!(e, Event::Object(_))).count(),
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::open(&root.join("models")).expect("models folder");
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut pool = ModelPool::default();
    println!("## a person (face) standing 60 s in view at 10 fps: 600 frames\n");
    println!(
        "| model | photo | objects | inference ms | tracker µs/frame | with snapshots | tracker / inference | messages/min per frame | messages/min objects | events |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (model, photo) in
        [("blazeface", "grace_hopper.jpg"), ("nanodet", "astronaut.jpg"), ("nanodet", "motorcycle.jpg")]
    {
        let entry = catalog.get(model).expect("model");
        let shared = pool.get_or_load(entry, &Precision::Int8).expect("load");
        let detector = Detector::new(shared, DetectStage::defaults(model, Precision::Int8).settings());
        let image = Arc::new(
            edge_core::source::decode_image_file(&root.join("tests/fixtures/images").join(photo)).expect("photo"),
        );
        let frame = Frame {
            id: 0,
            source: photo.into(),
            captured: SystemTime::now(),
            image: image.clone(),
            decode: Duration::ZERO,
        };
        let out = detector.detect(&image).expect("detect");
        let inference: Vec<f64> =
            (0..3).map(|_| detector.detect(&image).expect("detect").inference.as_secs_f64() * 1e3).collect();
        let inference = median(inference);
        let plain = track(&frame, &out, 600, false, &dir.path().join("plain"));
        let snaps = track(&frame, &out, 600, true, &dir.path().join(format!("{model}-{photo}")));
        println!(
            "| {model} int8 | {photo} | {} | {inference:.1} | {:.1} | {:.1} | {:.5} | 600 | {} | {} |",
            out.detections.len(),
            plain.tracker_us,
            snaps.tracker_us,
            snaps.tracker_us / 1e3 / inference,
            snaps.messages,
            snaps.events,
        );
    }
    println!("\n(messages/min per frame: one detections message per frame, what a camera pipeline published before");
    println!("objects; objects: events, retained counts per label and zone, and snapshots, with per_frame off.)");
}
