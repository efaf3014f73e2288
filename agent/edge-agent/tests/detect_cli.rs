//! `edge-agent detect` on the fixture photos: known answers for both precisions of both
//! models, int8 agreeing with fp32, and tiling finding a small person in a wide panorama.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::known::{PHOTOS, check_faces, check_objects, photo_of};
use common::{agent, fixture, iou, run_with_timeout};

fn detect(model: &str, precision: &str, extra: &[&str], images: &[std::path::PathBuf]) -> Vec<serde_json::Value> {
    let mut cmd = agent();
    cmd.args(["detect", "--model", model, "--precision", precision]).args(extra).args(images);
    let (status, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(300));
    assert!(status.success(), "detect failed: {stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn all_photos() -> Vec<std::path::PathBuf> {
    PHOTOS.iter().map(|p| fixture(&format!("{p}.jpg"))).collect()
}

fn by_photo(lines: Vec<serde_json::Value>) -> HashMap<String, serde_json::Value> {
    assert_eq!(lines.len(), PHOTOS.len());
    lines.into_iter().map(|v| (photo_of(&v), v)).collect()
}

type Found = Vec<(String, f64, Vec<f64>)>;

/// Runs `model` at both precisions over every photo, checks each answer with `check`, and
/// returns each photo's (int8, fp32) detections, which must be both empty or both not.
fn both_precisions(model: &str, check: fn(&str, &serde_json::Value)) -> Vec<(&'static str, Found, Found)> {
    let int8 = by_photo(detect(model, "int8", &[], &all_photos()));
    let fp32 = by_photo(detect(model, "fp32", &[], &all_photos()));
    PHOTOS
        .iter()
        .map(|photo| {
            let (a, b) = (&int8[*photo], &fp32[*photo]);
            check(photo, a);
            check(photo, b);
            assert_eq!(
                (a["model"]["precision"].as_str(), b["model"]["precision"].as_str()),
                (Some("int8"), Some("fp32"))
            );
            let (a, b) = (common::detections(a), common::detections(b));
            assert_eq!(a.is_empty(), b.is_empty(), "{photo}: int8 {a:?} fp32 {b:?}");
            (*photo, a, b)
        })
        .collect()
}

#[test]
fn objects_int8_and_fp32_give_the_known_answers_and_agree() {
    for (photo, a, b) in both_precisions("nanodet", check_objects) {
        if let (Some(a), Some(b)) = (a.first(), b.first()) {
            assert_eq!(a.0, b.0, "{photo}: top labels differ: int8 {a:?} fp32 {b:?}");
            assert!(iou(&a.2, &b.2) > 0.8, "{photo}: top boxes differ: int8 {a:?} fp32 {b:?}");
            assert!((a.1 - b.1).abs() < 0.2, "{photo}: top scores differ: int8 {a:?} fp32 {b:?}");
        }
    }
}

#[test]
fn faces_int8_and_fp32_give_the_known_answers_and_agree() {
    for (photo, a, b) in both_precisions("blazeface", check_faces) {
        if let (Some(a), Some(b)) = (a.first(), b.first()) {
            assert!(iou(&a.2, &b.2) > 0.7, "{photo}: face boxes differ: int8 {a:?} fp32 {b:?}");
        }
    }
}

/// A 4000×1000 panorama with a small Grace Hopper far right: letterboxed whole, she is ~30 px
/// tall at the model's input; the auto tiling must find her where she was pasted.
#[test]
fn tiling_finds_a_small_person_in_a_wide_panorama() {
    let dir = tempfile::tempdir().unwrap();
    let grace = image::open(fixture("grace_hopper.jpg")).unwrap().to_rgb8();
    let small = image::imageops::resize(&grace, 256, 300, image::imageops::FilterType::Triangle);
    let mut pano = image::RgbImage::from_pixel(4000, 1000, image::Rgb([120, 130, 125]));
    let (x, y) = (3100u32, 600u32);
    image::imageops::overlay(&mut pano, &small, x as i64, y as i64);
    let path = dir.path().join("panorama.png");
    pano.save(&path).unwrap();
    let pasted = [x as f64, y as f64, (x + 256) as f64, (y + 300) as f64];

    let tiled = detect("nanodet", "int8", &[], std::slice::from_ref(&path));
    assert_eq!(tiled[0]["passes"], 5, "{}", tiled[0]);
    let people: Vec<_> = common::detections(&tiled[0]).into_iter().filter(|d| d.0 == "person").collect();
    assert!(
        people.iter().any(|d| iou(&d.2, &pasted) > 0.5),
        "no person found over the pasted photo {pasted:?}: {}",
        tiled[0]
    );
    let whole = detect("nanodet", "int8", &["--no-tiling"], &[path]);
    assert_eq!(whole[0]["passes"], 1);
}

#[test]
fn bad_images_are_reported_per_file_and_the_rest_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff garbage").unwrap();
    let mut cmd = agent();
    cmd.args(["detect"]).arg(&bad).arg(fixture("chelsea.jpg"));
    let (status, stdout, _) = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(!status.success());
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["error"].as_str().unwrap().contains("broken.jpg"), "{}", lines[0]);
    check_objects("chelsea", &lines[1]);
}
