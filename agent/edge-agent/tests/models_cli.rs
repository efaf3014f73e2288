//! `edge-agent models list|verify`: the shipped files match their manifests, and a
//! corrupted or missing file is caught and named.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{models, run_with_timeout};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn run(models_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    cmd.arg("--models-dir").arg(models_dir).args(args);
    let (status, out, err) = run_with_timeout(cmd, Duration::from_secs(60));
    (status.success(), out, err)
}

#[test]
fn shipped_models_verify_and_list() {
    let (ok, out, err) = run(&models(), &["models", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("ok ")), "{out}");
    // detectors: 2 files each; backbone: 2 + its ImageNet head; silero: 1; whisper: 3 graphs +
    // vocabulary + generation per precision
    assert_eq!(out.lines().count(), 4 + 3 + 1 + 5 + 5, "{out}");
    for file in [
        "nanodet.int8.onnx",
        "silero_vad_16k.onnx",
        "decoder.int8.onnx",
        "decoder.fp32.onnx",
        "backbone.int8.onnx",
        "heads/imagenet.safetensors",
    ] {
        assert!(out.contains(file), "{file} not verified: {out}");
    }
    let (ok, out, _) = run(&models(), &["models", "list"]);
    assert!(ok);
    for (name, task) in [
        ("nanodet", "detection"),
        ("blazeface", "detection"),
        ("whisper-tiny-en", "transcription"),
        ("silero-vad", "vad"),
        ("efficientnet-lite0", "embedding"),
    ] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} not listed: {out}"));
        assert!(line.contains(task), "{line}");
    }
    assert!(out.contains("int8,fp32"), "{out}");
}

#[test]
fn a_corrupted_and_a_missing_file_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&models(), dir.path());
    let victim = dir.path().join("blazeface/blazeface.int8.onnx");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(dir.path().join("nanodet/nanodet.fp32.onnx")).unwrap();
    let (ok, out, err) = run(dir.path(), &["models", "verify"]);
    assert!(!ok);
    assert!(out.lines().any(|l| l.starts_with("CORRUPT") && l.contains("blazeface.int8.onnx")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("MISSING") && l.contains("nanodet.fp32.onnx") && l.contains("make-models")),
        "{out}"
    );
    assert!(err.contains("2 model file(s) failed"), "{err}");
    // the missing variant is reported clearly when used, too
    let (ok, _, err) =
        run(dir.path(), &["detect", "--precision", "fp32", common::fixture("chelsea.jpg").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("nanodet.fp32.onnx") && err.contains("make-models.sh"), "{err}");
    // and the corrupted one is refused at load, not run
    let (ok, _, err) =
        run(dir.path(), &["detect", "--model", "blazeface", common::fixture("chelsea.jpg").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("sha256") && err.contains("refusing to load"), "{err}");
}
