#![allow(clippy::unwrap_used)]
//! Known answers for the fixture photos, shared by every end-to-end test.

use super::detections;

/// What NanoDet must find in each photo (labels it must report, the label of the best
/// detection) and labels it must not report.
pub fn check_objects(photo: &str, v: &serde_json::Value) {
    let dets = detections(v);
    let labels: Vec<&str> = dets.iter().map(|d| d.0.as_str()).collect();
    let top = dets.first().map(|d| d.0.as_str());
    let ctx = format!("{photo}: {dets:?}");
    match photo {
        "astronaut" | "camera" => assert_eq!(top, Some("person"), "{ctx}"),
        "grace_hopper" => {
            assert_eq!(top, Some("person"), "{ctx}");
            assert!(labels.contains(&"tie"), "{ctx}");
        }
        "chelsea" => assert_eq!(top, Some("cat"), "{ctx}"),
        "motorcycle" => assert_eq!(top, Some("motorcycle"), "{ctx}"),
        "coffee" => assert!(!labels.contains(&"person") && !labels.is_empty(), "{ctx}"),
        "rocket" => assert!(dets.iter().all(|d| d.1 < 0.5), "{ctx}"),
        other => panic!("no known answer for {other}"),
    }
    // boxes are in source pixels, inside the image
    let (w, h) = (v["image"]["width"].as_f64().unwrap(), v["image"]["height"].as_f64().unwrap());
    for (_, score, b) in &dets {
        assert!(*score > 0.0 && *score <= 1.0, "{ctx}");
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h && b[0] < b[2] && b[1] < b[3], "{ctx}");
    }
}

/// Faces: one in the portraits, none elsewhere (the cat included).
pub fn check_faces(photo: &str, v: &serde_json::Value) {
    let dets = detections(v);
    let ctx = format!("{photo}: {dets:?}");
    match photo {
        "astronaut" | "grace_hopper" | "camera" => {
            assert_eq!(dets.len(), 1, "{ctx}");
            let b = &dets[0].2;
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            assert!(w > 40.0 && h > 40.0 && w < 300.0, "implausible face size: {ctx}");
        }
        "chelsea" | "coffee" | "motorcycle" | "rocket" => assert!(dets.is_empty(), "{ctx}"),
        other => panic!("no known answer for {other}"),
    }
}

/// The photo's name from a message's `source` path.
pub fn photo_of(v: &serde_json::Value) -> String {
    std::path::Path::new(v["source"].as_str().unwrap()).file_stem().unwrap().to_string_lossy().to_string()
}

pub const PHOTOS: &[&str] = &["astronaut", "camera", "chelsea", "coffee", "grace_hopper", "motorcycle", "rocket"];
