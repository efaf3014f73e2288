//! The event logic on scripted detections: what a user sees on the events topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use edge_core::vision::Detection;

fn frame(i: u64) -> Frame {
    Frame {
        id: i,
        source: "test".into(),
        captured: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(100 * i),
        image: Arc::new(image::RgbImage::from_pixel(320, 240, image::Rgb([90, 120, 60]))),
        decode: Duration::ZERO,
    }
}

fn output(boxes: &[(&str, [f64; 4], f64)]) -> DetectOutput {
    DetectOutput {
        detections: boxes
            .iter()
            .map(|(label, bbox, score)| Detection {
                label: label.to_string(),
                class_id: 0,
                score: *score,
                bbox: *bbox,
                classification: None,
            })
            .collect(),
        inference: Duration::from_millis(10),
        passes: 1,
        model_name: "m".into(),
        model_version: "1".into(),
        precision: edge_core::Precision::Int8,
    }
}

fn porch() -> BTreeMap<String, ZoneConfig> {
    // the right half of the frame
    let z = ZoneConfig {
        points: vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
        coordinates: Coordinates::Normalized,
        objects: vec![],
    };
    BTreeMap::from([("porch".to_string(), z)])
}

fn config() -> ObjectsConfig {
    ObjectsConfig { max_disappeared: 3, stationary_frames: 5, update_interval_secs: 1.0, ..Default::default() }
}

fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Object(o) => format!("{} {} {:?}", o.change.as_str(), o.after.label, o.after.current_zones),
            Event::Count(c) => format!("count {:?} {} {}", c.zone, c.label, c.count),
            Event::Snapshot(s) => format!("snapshot {}", s.label),
            _ => "other".into(),
        })
        .collect()
}

#[test]
fn a_person_walking_into_a_zone_and_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tracking::new("door", &config(), &porch(), vec!["person".into()], Some(dir.path())).unwrap();
    let mut all = summary(&t.start());
    assert_eq!(all, ["count None person 0", "count Some(\"porch\") person 0"]);
    // 30 frames walking right across the whole frame, then 10 empty ones
    for i in 0..40u64 {
        let boxes = if i < 30 {
            let x = 5.0 + 8.0 * i as f64;
            vec![("person", [x, 60.0, x + 40.0, 200.0], 0.9)]
        } else {
            vec![]
        };
        all.extend(summary(&t.frame(&frame(i), &output(&boxes))));
    }
    let objects: Vec<&String> = all.iter().filter(|s| !s.starts_with("count") && !s.starts_with("snapshot")).collect();
    assert_eq!(objects.iter().filter(|s| s.starts_with("new")).count(), 1, "{all:#?}");
    assert_eq!(objects.iter().filter(|s| s.starts_with("end")).count(), 1, "{all:#?}");
    assert!(objects.iter().any(|s| *s == "update person [\"porch\"]"), "no zone entry: {all:#?}");
    let counts: Vec<&String> = all.iter().filter(|s| s.starts_with("count None")).collect();
    assert_eq!(counts, ["count None person 0", "count None person 1", "count None person 0"]);
    let zone: Vec<&String> = all.iter().filter(|s| s.starts_with("count Some")).collect();
    assert_eq!(
        zone,
        ["count Some(\"porch\") person 0", "count Some(\"porch\") person 1", "count Some(\"porch\") person 0"]
    );
    assert!(all.iter().position(|s| s == "snapshot person") < all.iter().position(|s| s.starts_with("new")));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "one snapshot file per object");
}

#[test]
fn end_carries_the_last_state_and_the_entered_zones() {
    let mut t = Tracking::new("door", &config(), &porch(), vec!["person".into()], None).unwrap();
    let mut events = Vec::new();
    for i in 0..12u64 {
        let boxes = if i < 8 { vec![("person", [250.0, 60.0, 290.0, 200.0], 0.85)] } else { vec![] };
        events.extend(t.frame(&frame(i), &output(&boxes)));
    }
    let objects: Vec<&ObjectEvent> =
        events.iter().filter_map(|e| if let Event::Object(o) = e { Some(o) } else { None }).collect();
    let kinds: Vec<&str> = objects.iter().map(|o| o.change.as_str()).collect();
    // it stood still from its 6th frame
    assert_eq!(kinds, ["new", "update", "end"]);
    let (new, update, end) = (objects[0], objects[1], objects[2]);
    assert_eq!(new.before, new.after);
    assert!(update.after.stationary && !update.before.stationary);
    assert_eq!(new.after.id, end.after.id);
    assert!(new.after.id.starts_with("door-1700000000000-"));
    assert_eq!(end.after.entered_zones, ["porch"]);
    assert!(end.after.current_zones.is_empty());
    assert_eq!(end.after.end_time, Some(frame(7).captured));
    assert!(!end.after.has_snapshot, "snapshots are off");
}

#[test]
fn untracked_labels_and_flicker_make_no_events() {
    let mut t = Tracking::new("door", &config(), &BTreeMap::new(), vec!["person".into()], None).unwrap();
    t.start();
    for i in 0..30u64 {
        // a cat (not tracked) all along, a "person" in one frame of three
        let mut boxes = vec![("cat", [10.0, 10.0, 60.0, 60.0], 0.9)];
        if i % 3 == 0 {
            boxes.push(("person", [100.0, 60.0, 140.0, 200.0], 0.95));
        }
        let events = t.frame(&frame(i), &output(&boxes));
        assert!(events.is_empty(), "frame {i}: {:?}", summary(&events));
    }
}

#[test]
fn better_snapshots_are_paced_by_the_update_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = ObjectsConfig { stationary_frames: 1000, update_interval_secs: 1.0, ..config() };
    let mut t = Tracking::new("door", &c, &BTreeMap::new(), vec!["person".into()], Some(dir.path())).unwrap();
    let mut updates = Vec::new();
    // the score climbs every frame (10 fps): a better picture each frame
    for i in 0..40u64 {
        let score = 0.75 + 0.005 * i as f64;
        for e in t.frame(&frame(i), &output(&[("person", [100.0, 60.0, 140.0, 200.0], score)])) {
            if let Event::Object(o) = e
                && o.change == ObjectChange::Update
            {
                updates.push(i);
            }
        }
    }
    // confirmed at frame 2; updates at most once a second after that
    assert_eq!(updates, [12, 22, 32], "updates at frames {updates:?}");
}
