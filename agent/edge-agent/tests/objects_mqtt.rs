//! Objects end to end, with Debian's mosquitto and the real BlazeFace: a scripted sequence of
//! frames (Grace Hopper's portrait pasted along a path across a background, then gone) gives
//! exactly one `new`, a zone entry, one `end`, counts 0 -> 1 -> 0, and a snapshot in which
//! the detector finds the face again. Home Assistant discovery is sent on connect and again
//! after Home Assistant's birth message.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Message, STATE_DIR, agent, collect_until, fixture, subscribe};
use image::{Rgb, RgbImage};

/// Frames: 6 empty, 14 with the portrait moving right (into the right half, the zone), 8 empty.
fn write_frames(dir: &Path) {
    let portrait = image::open(fixture("grace_hopper.jpg")).unwrap().to_rgb8();
    let h = 300;
    let w = portrait.width() * h / portrait.height();
    let portrait = image::imageops::resize(&portrait, w, h, image::imageops::FilterType::Triangle);
    let background = RgbImage::from_fn(640, 360, |x, y| Rgb([60 + (x % 40) as u8, 80 + (y % 30) as u8, 90]));
    for i in 0..28u32 {
        let mut frame = background.clone();
        if (6..20).contains(&i) {
            let x = 10 + (i - 6) * 28;
            image::imageops::overlay(&mut frame, &portrait, i64::from(x), 30);
        }
        frame.save(dir.join(format!("f{i:03}.png"))).unwrap();
    }
}

fn config(port: u16, frames: &Path) -> String {
    format!(
        "[agent]\ndevice_id = \"objects\"\nstats_interval_secs = 0.5\nshutdown_timeout_secs = 15\n\
         state_dir = \"{STATE_DIR}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nmax_backoff_secs = 1\n\n\
         [homeassistant]\nenabled = true\n\n\
         [pipelines.door]\nsource = {{ type = \"images\", path = \"{}\" }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n\
         objects = {{ enabled = true, max_disappeared = 3 }}\n\
         [pipelines.door.zones.porch]\npoints = [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]\n",
        frames.display()
    )
}

fn on<'a>(messages: &'a [Message], topic: &str) -> Vec<&'a Message> {
    messages.iter().filter(|m| m.topic == topic).collect()
}

#[test]
fn a_face_walking_through_a_zone_is_one_object_with_one_snapshot() {
    let Some(broker) = common::mosquitto() else {
        eprintln!("mosquitto is not installed; skipped");
        return;
    };
    let frames = tempfile::tempdir().unwrap();
    write_frames(frames.path());
    let (dir, path) = common::write_config(&config(broker.port, frames.path()));
    let ha = subscribe(broker.port, "watch-ha", "homeassistant/#");
    let messages = common::run_to_end(broker.port, "objects", &path);
    let faces: Vec<usize> = on(&messages, "edge-agent/objects/detections/door")
        .iter()
        .map(|m| m.json()["detections"].as_array().unwrap().len())
        .collect();
    assert_eq!(faces.len(), 28, "per-frame detections stay on for files");

    let events: Vec<serde_json::Value> =
        on(&messages, "edge-agent/objects/events/door").iter().map(|m| m.json()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let summary = format!("faces per frame {faces:?}, events {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "new").count(), 1, "{summary}");
    assert_eq!(kinds.iter().filter(|k| **k == "end").count(), 1, "{summary}");
    assert_eq!(kinds.last(), Some(&"end"), "{summary}");
    let id = events[0]["after"]["id"].as_str().unwrap();
    assert!(id.starts_with("door-"), "{id}");
    assert!(events.iter().all(|e| e["after"]["id"] == id && e["schema"] == "edge-agent.object-event.v1"));
    for key in [
        "id",
        "label",
        "score",
        "top_score",
        "box",
        "area",
        "start_time",
        "end_time",
        "stationary",
        "current_zones",
        "entered_zones",
        "has_snapshot",
        "frame_time",
    ] {
        assert!(events[0]["after"].get(key).is_some(), "no {key} in {}", events[0]);
    }
    assert!(
        events.iter().any(|e| e["type"] == "update" && e["after"]["current_zones"] == serde_json::json!(["porch"])),
        "no update entering the porch: {summary}"
    );
    let end = events.last().unwrap();
    assert_eq!(end["after"]["entered_zones"], serde_json::json!(["porch"]));
    assert!(end["after"]["end_time"].is_string() && end["after"]["has_snapshot"] == true);
    assert_eq!(end["after"]["label"], "face");

    let counts = |topic: &str| on(&messages, topic).iter().map(|m| (m.text(), m.retain)).collect::<Vec<_>>();
    let zero_one_zero = vec![("0".to_string(), false), ("1".into(), false), ("0".into(), false)];
    // a live subscriber gets them with retain false; the broker keeps the last
    assert_eq!(counts("edge-agent/objects/objects/door/face"), zero_one_zero);
    assert_eq!(counts("edge-agent/objects/zones/porch/face"), zero_one_zero);
    let retained = subscribe(broker.port, "late", "edge-agent/objects/objects/door/face");
    let late = collect_until(&retained, Duration::from_secs(5), |_| true);
    assert_eq!((late[0].text(), late[0].retain), ("0".to_string(), true));

    // the snapshot: published, stored, and the face is in it
    let snaps = on(&messages, "edge-agent/objects/snapshots/door/face");
    assert!(!snaps.is_empty(), "no snapshot published");
    let stored = dir.path().join(format!("state/snapshots/door/{id}.jpg"));
    assert_eq!(std::fs::read(&stored).unwrap(), snaps.last().unwrap().payload, "the stored file is the last one sent");
    let out = agent().arg("detect").arg("--model").arg("blazeface").arg(&stored).output().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!line["detections"].as_array().unwrap().is_empty(), "no face in the snapshot: {line}");

    // discovery: one retained device message with the occupancy of faces at the door
    let discovery = collect_until(&ha, Duration::from_secs(5), |_| true);
    let d = discovery.iter().find(|m| m.topic == "homeassistant/device/objects/config").expect("discovery sent");
    let cmps = &d.json()["cmps"];
    assert_eq!(cmps["door_face_occupancy"]["state_topic"], "edge-agent/objects/objects/door/face");
    assert_eq!(cmps["porch_face_count"]["state_topic"], "edge-agent/objects/zones/porch/face");
    drop(dir);
}

#[test]
fn discovery_is_sent_again_when_home_assistant_comes_online() {
    let Some(broker) = common::mosquitto() else {
        eprintln!("mosquitto is not installed; skipped");
        return;
    };
    let images = fixture("grace_hopper.jpg");
    let config = format!(
        "[agent]\ndevice_id = \"birth\"\nstate_dir = \"{STATE_DIR}\"\nshutdown_timeout_secs = 15\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nmax_backoff_secs = 1\n\
         [homeassistant]\nenabled = true\nbirth_delay_secs = 0.5\n\
         [pipelines.door]\nsource = {{ type = \"images\", path = \"{}\", fps = 2, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\nobjects = {{ enabled = true }}\n",
        broker.port,
        images.display()
    );
    let (_dir, path) = common::write_config(&config);
    let ha = subscribe(broker.port, "watch-birth", "homeassistant/device/birth/config");
    let mut agent = common::Running::agent(&path);
    let first = collect_until(&ha, Duration::from_secs(60), |_| true);
    assert_eq!(first.len(), 1, "no discovery after connecting");
    let p = first[0].json();
    for key in ["dev", "o", "cmps", "availability_topic"] {
        assert!(p.get(key).is_some(), "no {key} in {p}");
    }
    assert_eq!(p["availability_topic"], "edge-agent/birth/status");
    common::publish(broker.port, "homeassistant/status", b"online");
    let again = collect_until(&ha, Duration::from_secs(10), |_| true);
    assert_eq!(again.len(), 1, "discovery not sent again after the birth message");
    assert_eq!(again[0].json(), p, "the same components, the same ids");
    common::sigterm(&mut agent);
}
