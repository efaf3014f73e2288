//! Classification with the EfficientNet-Lite0 backbone and its shipped ImageNet head: known
//! answers on the fixture photos for both precisions, int8 agreeing with fp32 within the
//! quantization tolerance, a trained head via `--head`, and detect -> crop -> classify in a
//! running agent (the cat NanoDet finds is classified as a cat).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::known::PHOTOS;
use common::{Running, agent, collect_until, fixture, root, run_with_timeout, subscribe};

fn classify(extra: &[&str], images: &[std::path::PathBuf]) -> Vec<serde_json::Value> {
    let mut cmd = agent();
    cmd.args(["classify", "--top-k", "3"]).args(extra).args(images);
    let (status, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(300));
    assert!(status.success(), "classify failed: {stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn labels(v: &serde_json::Value) -> Vec<String> {
    v["labels"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap().to_string()).collect()
}

/// Top-3 labels per photo.
fn by_photo(precision: &str) -> HashMap<&'static str, Vec<String>> {
    let photos: Vec<_> = PHOTOS.iter().map(|p| fixture(&format!("{p}.jpg"))).collect();
    let lines = classify(&["--precision", precision], &photos);
    assert_eq!(lines.len(), PHOTOS.len());
    PHOTOS.iter().copied().zip(lines.iter().map(labels)).collect()
}

/// What ImageNet says each photo shows: one of these must be the top label.
fn expected(photo: &str) -> &'static [&'static str] {
    match photo {
        "chelsea" => &["tabby, tabby cat", "tiger cat", "Egyptian cat"],
        "coffee" => &["espresso", "cup", "coffee mug"],
        "camera" => &["tripod", "reflex camera"],
        "motorcycle" => &["moped", "motor scooter, scooter", "crash helmet"],
        "rocket" => &["missile", "projectile, missile", "space shuttle"],
        "grace_hopper" => {
            &["military uniform", "academic gown, academic robe, judge's robe", "mortarboard", "suit, suit of clothes"]
        }
        "astronaut" => &["football helmet", "bobsled, bobsleigh, bob", "space shuttle", "crash helmet"],
        other => panic!("no known answer for {other}"),
    }
}

#[test]
fn imagenet_head_knows_the_photos_and_int8_agrees_with_fp32() {
    let int8 = by_photo("int8");
    let fp32 = by_photo("fp32");
    let mut same_top = 0;
    for photo in PHOTOS {
        for (precision, got) in [("int8", &int8[photo]), ("fp32", &fp32[photo])] {
            assert!(expected(photo).contains(&got[0].as_str()), "{precision} {photo}: {got:?}");
        }
        // quantization tolerance: the float answer stays among the int8 model's first three
        assert!(int8[photo].contains(&fp32[photo][0]), "{photo}: int8 {:?} fp32 {:?}", int8[photo], fp32[photo]);
        same_top += usize::from(int8[photo][0] == fp32[photo][0]);
    }
    assert!(same_top >= PHOTOS.len() - 2, "int8 and fp32 top-1 agree on only {same_top} photos");
}

#[test]
fn a_trained_head_classifies_unseen_digits_and_bad_heads_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // train on all but the last two images of each digit, then classify those
    let data = dir.path().join("digits");
    let mut held_out = Vec::new();
    for d in 0..10 {
        let src = root().join(format!("tests/fixtures/heads/digits/{d}"));
        let mut files: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        std::fs::create_dir_all(data.join(d.to_string())).unwrap();
        for (i, f) in files.iter().enumerate() {
            if i + 2 >= files.len() {
                held_out.push((d.to_string(), f.clone()));
            } else {
                std::fs::copy(f, data.join(d.to_string()).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let head = dir.path().join("digits.safetensors");
    let mut c = agent();
    c.args(["head", "train", "--holdout", "0", "--name", "digits", "--version", "1", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&head);
    let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(300));
    assert!(status.success(), "{stderr}");

    let images: Vec<_> = held_out.iter().map(|(_, p)| p.clone()).collect();
    let lines = classify(&["--head", head.to_str().unwrap()], &images);
    let right = held_out.iter().zip(&lines).filter(|((d, _), v)| labels(v)[0] == *d).count();
    assert!(right >= 16, "only {right} of 20 unseen digits right: {lines:?}");

    // a head file that is not one
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"not a head").unwrap();
    let mut c = agent();
    c.args(["classify", "--head"]).arg(&bogus).arg(fixture("coffee.jpg"));
    let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!status.success() && stderr.contains("not a head file"), "{stderr}");
}

#[test]
fn detected_boxes_are_cropped_and_classified() {
    let broker = common::rumqttd();
    let rx = subscribe(broker.port, "crops", "edge-agent/crops/#");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ndevice_id = \"crops\"\nstate_dir = \"{}\"\n[mqtt]\nport = {}\n\
             [pipelines.pets]\nsource = {{ type = \"images\", path = \"{}\" }}\n\
             stages = [{{ type = \"detect\", model = \"nanodet\" }}, {{ type = \"classify\", on = [\"cat\"], top_k = 3 }}]\n",
            dir.path().join("state").display(),
            broker.port,
            fixture("chelsea.jpg").display()
        ),
    )
    .unwrap();
    let mut running = Running::agent(&cfg);
    // a deadline, not a timing: two models load first, beside the other tests of this file
    let msgs = collect_until(&rx, Duration::from_secs(240), |m| m.topic.contains("/detections/"));
    let v = msgs.iter().rfind(|m| m.topic.contains("/detections/")).expect("a detections message").json();
    let cat = v["detections"].as_array().unwrap().iter().find(|d| d["label"] == "cat").expect("NanoDet finds the cat");
    let top: Vec<&str> =
        cat["classification"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap()).collect();
    assert!(top.iter().any(|l| l.contains("cat")), "the cat's crop: {top:?}");
    assert!(running.wait().unwrap().success());
}
