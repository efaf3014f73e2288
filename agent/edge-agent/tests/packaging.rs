//! `scripts/install.sh` into a scratch root and `scripts/make-deb.sh`: the files land where
//! the unit and the agent look for them, a user's config survives a reinstall, the large
//! optional variants stay out, and the installed binary works from the installed models.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{root, run_with_timeout};

const BIN: &str = env!("CARGO_BIN_EXE_edge-agent");

fn install(dest: &std::path::Path) {
    let mut c = Command::new(root().join("scripts/install.sh"));
    c.env("DESTDIR", dest).args(["--binary", BIN, "--no-start"]);
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(120));
    assert!(status.success(), "{stdout}{stderr}");
}

#[test]
fn install_into_a_scratch_root_keeps_the_config_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    install(dest);
    for f in [
        "usr/bin/edge-agent",
        "lib/systemd/system/edge-agent.service",
        "etc/edge-agent/config.toml",
        "usr/share/edge-agent/models/nanodet/manifest.toml",
        "usr/share/edge-agent/models/efficientnet-lite0/heads/imagenet.safetensors",
        "usr/share/edge-agent/samples/chelsea.jpg",
        "usr/share/edge-agent/samples/speech.wav",
        "usr/share/doc/edge-agent/models/whisper-tiny-en/LICENSE",
    ] {
        assert!(dest.join(f).is_file(), "{f} not installed");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("usr/bin/edge-agent")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    // git-ignored large variants are not shipped by default
    assert!(!dest.join("usr/share/edge-agent/models/whisper-tiny-en/encoder.fp32.onnx").exists());
    assert!(!dest.join("usr/share/edge-agent/models/efficientnet-lite0/backbone.fp32.onnx").exists());

    // a user's config survives a reinstall
    let config = dest.join("etc/edge-agent/config.toml");
    std::fs::write(&config, "# mine\n").unwrap();
    install(dest);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    // the installed binary finds the cat with the installed model
    let mut c = Command::new(dest.join("usr/bin/edge-agent"));
    c.arg("--models-dir").arg(dest.join("usr/share/edge-agent/models"));
    c.args(["detect", "--no-tiling"]).arg(dest.join("usr/share/edge-agent/samples/chelsea.jpg"));
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(120));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("\"label\":\"cat\""), "{stdout}");
}

#[test]
fn the_debian_package_holds_what_install_places() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("dpkg-deb not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(root().join("scripts/make-deb.sh"));
    c.env("DEB_COMPRESSION", "gzip").args(["--arch", "amd64", "--binary", BIN, "--out"]).arg(dir.path());
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(300));
    assert!(status.success(), "{stdout}{stderr}");
    let deb = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let field = |f: &str| {
        let out = Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "edge-agent");
    assert_eq!(field("Architecture"), "amd64");
    assert!(field("Depends").starts_with("libc6 (>= 2."), "{}", field("Depends"));
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "./usr/bin/edge-agent",
        "./lib/systemd/system/edge-agent.service",
        "./etc/edge-agent/config.toml",
        "./usr/share/edge-agent/models/nanodet/nanodet.int8.onnx",
        "./usr/share/doc/edge-agent/README.md",
    ] {
        assert!(listing.contains(f), "{f} not in the package:\n{listing}");
    }
    assert!(listing.contains("root/root"), "files must be owned by root");
    let conffiles = Command::new("dpkg-deb").arg("--ctrl-tarfile").arg(&deb).output().unwrap();
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("conffiles"));
}

#[test]
fn the_unit_verifies_and_scores_at_most_2_in_systemd_analyze_security() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root().join("systemd/edge-agent.service")).unwrap();
    let path = dir.path().join("edge-agent.service");
    std::fs::write(&path, unit.replace("/usr/bin/edge-agent", BIN)).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).to_string();
    // warnings about this unit name it; the host's own units are not our business
    assert!(verify.status.success() && !said.contains("edge-agent.service:"), "systemd-analyze verify: {said}");
    let security = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path).output().unwrap();
    let out = String::from_utf8_lossy(&security.stdout);
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for edge-agent.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{out}"));
    assert!(score <= 2.0, "exposure {score}:\n{out}");
}
