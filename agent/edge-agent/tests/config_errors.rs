//! Configuration mistakes are all reported at once, each with its path and the file, by
//! `validate` and by `run`, before anything starts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{agent, run_with_timeout};

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BAD: &str = r#"
[agent]
device_id = "pi"

[mqtt]
host = "127.0.0.1"
prot = 1883

[pipelines.front_door]
source = { type = "images", path = "/tmp/x", fps = 5 }
stages = [{ type = "detect", model = "nanodt" }]

[pipelines.garden]
source = { type = "images", path = "/tmp/y" }
stages = [{ type = "detect", model = "nanodet", threshold = 1.5 }]
"#;

#[test]
fn every_error_is_reported_with_its_path_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, BAD);
    for cmd in ["validate", "run"] {
        let mut c = agent();
        c.args([cmd, "--config"]).arg(&path);
        let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
        assert!(!status.success(), "{cmd} accepted a bad config");
        assert!(stderr.contains(&path.display().to_string()), "{cmd}: file not named: {stderr}");
        for needle in [
            "mqtt.prot: unknown field `prot`",
            r#"pipelines.front_door.stages[0].model: no model named "nanodt" (available: blazeface, efficientnet-lite0, nanodet, silero-vad, whisper-tiny-en)"#,
            "pipelines.garden.stages[0].threshold: must be in (0, 1), got 1.5",
        ] {
            assert!(stderr.contains(needle), "{cmd}: missing {needle:?} in:\n{stderr}");
        }
    }
}

#[test]
fn a_good_config_validates_and_env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let good = BAD.replace("prot", "port").replace("nanodt", "nanodet").replace("1.5", "0.5");
    let path = write(&dir, &good);
    let mut c = agent();
    c.args(["validate", "--config"]).arg(&path);
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("2 pipeline(s): front_door, garden"), "{stdout}");

    // an override from the environment is checked like the file
    let mut c = agent();
    c.args(["validate", "--config"]).arg(&path).env("EDGE_AGENT__MQTT__PORT", "not-a-port");
    let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!status.success());
    assert!(stderr.contains("mqtt.port"), "{stderr}");
}

#[test]
fn a_missing_or_unparsable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = agent();
    c.args(["validate", "--config"]).arg(dir.path().join("nope.toml"));
    let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!status.success());
    assert!(stderr.contains("nope.toml") && stderr.contains("no such file"), "{stderr}");
    let path = write(&dir, "[mqtt\nhost=");
    let mut c = agent();
    c.args(["validate", "--config"]).arg(&path);
    let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(!status.success());
    assert!(stderr.contains("agent.toml"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let mut c = agent();
    c.args(["validate", "--config"]).arg(common::root().join("systemd/edge-agent.toml"));
    let (status, stdout, stderr) = run_with_timeout(c, Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("1 pipeline(s): driveway"), "{stdout}");
}

#[test]
fn every_board_overlay_in_targets_is_valid() {
    let mut found = 0;
    for e in std::fs::read_dir(common::root().join("targets")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            found += 1;
            let mut c = agent();
            c.args(["validate", "--config"]).arg(&path);
            let (status, _, stderr) = run_with_timeout(c, Duration::from_secs(60));
            assert!(status.success(), "{}: {stderr}", path.display());
        }
    }
    assert!(found >= 4, "board overlays missing");
}
