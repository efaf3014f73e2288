//! Test support shared by every crate's tests (included with `#[path]`): where the repository,
//! the models and the fixtures are, and the git-ignored fp32 reference graphs that some tests
//! compare int8 with, made on first need.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository's top folder.
pub fn root() -> PathBuf {
    // every crate sits at agent/<crate>
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The shipped models folder, with the fp32 reference graphs made if missing
/// ([`fp32_references`]).
pub fn models() -> PathBuf {
    fp32_references();
    root().join("models")
}

/// A photo of `tests/fixtures/images`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/images").join(name)
}

/// The fp32 graphs that are not in git (190 MB of Whisper, 13 MB of EfficientNet-Lite0), each
/// with the `scripts/make-models.sh` target that makes it.
const REFERENCES: &[(&str, &str)] = &[
    ("whisper-tiny-en/encoder.fp32.onnx", "speech-fp32"),
    ("whisper-tiny-en/decoder.fp32.onnx", "speech-fp32"),
    ("efficientnet-lite0/backbone.fp32.onnx", "classify-fp32"),
];

/// Makes the git-ignored fp32 reference graphs if they are missing: once per machine (they are
/// kept in `models/`), once per test process (later calls return at once), and one process at
/// a time (a lock folder). Takes a minute or two the first time; says so on stderr.
pub fn fp32_references() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let missing = || {
            let mut targets: Vec<&str> =
                REFERENCES.iter().filter(|(f, _)| !root().join("models").join(f).is_file()).map(|(_, t)| *t).collect();
            targets.dedup();
            targets
        };
        if missing().is_empty() {
            return;
        }
        let lock = root().join("scripts/.make-models.lock");
        let started = Instant::now();
        // mkdir is atomic: the process that creates the folder makes the files, others wait
        while std::fs::create_dir(&lock).is_err() {
            assert!(started.elapsed() < Duration::from_secs(1800), "{} held for 30 minutes", lock.display());
            std::thread::sleep(Duration::from_millis(500));
        }
        for target in missing() {
            eprintln!(
                "tests: making the fp32 reference graphs once (scripts/make-models.sh {target}; a minute or two)"
            );
            let status = Command::new(root().join("scripts/make-models.sh")).arg(target).status();
            std::fs::remove_dir(&lock).ok();
            let status = status.unwrap_or_else(|e| panic!("scripts/make-models.sh {target}: {e}"));
            assert!(status.success(), "scripts/make-models.sh {target} failed ({status}); see its output above");
            std::fs::create_dir(&lock).ok();
        }
        std::fs::remove_dir(&lock).ok();
    });
}
