//! The agent binary end to end against real brokers: the in-process rumqttd and Debian's
//! mosquitto (when installed; CI installs it). Known answers arrive over MQTT for both
//! precisions, the status topic follows the MQTT conventions (retained online/offline, last
//! will on a crash), and statistics are published.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::known::{PHOTOS, check_faces, check_objects, photo_of};
use common::{Message, agent, collect_until, config, run_with_timeout, subscribe};

/// Runs the agent on `config` to completion while collecting everything it publishes.
fn run_agent(port: u16, device: &str, config: &str) -> Vec<Message> {
    let (_dir, path) = common::write_config(config);
    let rx = subscribe(port, &format!("watch-{device}"), &format!("edge-agent/{device}/#"));
    let mut cmd = agent();
    cmd.arg("run").arg("--config").arg(&path);
    let (status, _, stderr) = run_with_timeout(cmd, Duration::from_secs(600));
    assert!(status.success(), "agent failed: {stderr}");
    collect_until(&rx, Duration::from_secs(20), |m| m.topic.ends_with("/status") && m.payload == b"offline")
}

fn by_pipeline(messages: &[Message], device: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
    let prefix = format!("edge-agent/{device}/detections/");
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for m in messages.iter().filter(|m| m.topic.starts_with(&prefix)) {
        out.entry(m.topic[prefix.len()..].to_string()).or_default().push(m.json());
    }
    out
}

fn check_run(messages: &[Message], device: &str, pipelines: &[(&str, &str, &str)]) {
    let statuses: Vec<String> =
        messages.iter().filter(|m| m.topic == format!("edge-agent/{device}/status")).map(Message::text).collect();
    assert_eq!(statuses.first().map(String::as_str), Some("online"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("offline"), "{statuses:?}");

    let results = by_pipeline(messages, device);
    for (name, model, precision) in pipelines {
        let got = &results[*name];
        assert_eq!(got.len(), PHOTOS.len(), "{name}: one message per photo");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v["schema"], "edge-agent.detections.v1");
            assert_eq!(v["seq"], i as u64, "{name}: sequence numbers count up without gaps");
            assert_eq!(v["pipeline"], *name);
            assert_eq!(v["device"], device);
            assert_eq!(v["model"]["name"], *model);
            assert_eq!(v["model"]["precision"], *precision);
            assert!(v["inference_ms"].as_f64().unwrap() > 0.0);
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
            let photo = photo_of(v);
            match *model {
                "nanodet" => check_objects(&photo, v),
                _ => check_faces(&photo, v),
            }
        }
    }
    let stats: Vec<serde_json::Value> =
        messages.iter().filter(|m| m.topic == format!("edge-agent/{device}/stats")).map(Message::json).collect();
    let last = stats.last().expect("stats published");
    for (name, ..) in pipelines {
        assert_eq!(last["pipelines"][*name]["frames_done"], PHOTOS.len() as u64, "{last}");
        assert_eq!(last["pipelines"][*name]["errors"], 0, "{last}");
    }
}

#[test]
fn known_answers_over_mqtt_with_rumqttd_both_precisions() {
    let broker = common::rumqttd();
    let pipelines = [
        ("objects_int8", "nanodet", "int8"),
        ("objects_fp32", "nanodet", "fp32"),
        ("faces_int8", "blazeface", "int8"),
        ("faces_fp32", "blazeface", "fp32"),
    ];
    let messages = run_agent(broker.port, "rumq", &config(broker.port, "rumq", &pipelines, ""));
    check_run(&messages, "rumq", &pipelines);
    // int8 and fp32 agree on each photo's best object
    let results = by_pipeline(&messages, "rumq");
    for (a, b) in results["objects_int8"].iter().zip(&results["objects_fp32"]) {
        let (a, b) = (common::detections(a), common::detections(b));
        assert_eq!(a.first().map(|d| &d.0), b.first().map(|d| &d.0), "int8 {a:?} vs fp32 {b:?}");
    }
}

#[test]
fn interop_with_mosquitto_and_retained_status() {
    let Some(broker) = common::mosquitto() else {
        eprintln!("mosquitto is not installed; skipping (CI installs it)");
        return;
    };
    let pipelines = [("objects", "nanodet", "int8"), ("faces", "blazeface", "int8")];
    let messages = run_agent(broker.port, "mosq", &config(broker.port, "mosq", &pipelines, ""));
    check_run(&messages, "mosq", &pipelines);
    // a subscriber arriving later is told the device is offline, and the last stats
    let late = subscribe(broker.port, "late", "edge-agent/mosq/+");
    let retained = collect_until(&late, Duration::from_secs(5), |_| false);
    let status = retained.iter().find(|m| m.topic.ends_with("/status")).expect("retained status");
    assert!(status.retain && status.payload == b"offline", "{status:?}");
    assert!(retained.iter().any(|m| m.topic.ends_with("/stats") && m.retain), "{retained:?}");
}

#[test]
fn a_killed_agent_is_reported_offline_by_its_last_will() {
    let broker = common::mosquitto().unwrap_or_else(common::rumqttd);
    let cfg = config(broker.port, "crash", &[("objects", "nanodet", "int8")], ", fps = 5, loop = true");
    let (_dir, path) = common::write_config(&cfg);
    let rx = subscribe(broker.port, "watch-crash", "edge-agent/crash/#");
    let mut child = common::Running::agent(&path);
    let before = collect_until(&rx, Duration::from_secs(120), |m| m.topic.contains("/detections/"));
    assert!(before.iter().any(|m| m.topic.ends_with("/status") && m.payload == b"online"), "{before:?}");
    assert!(before.last().is_some_and(|m| m.topic.contains("/detections/")), "no detection before the kill");
    child.kill().unwrap(); // SIGKILL: no clean shutdown, the broker must send the will
    child.wait().unwrap();
    let after = collect_until(&rx, Duration::from_secs(30), |m| m.topic.ends_with("/status"));
    let last = after.last().expect("a status after the kill");
    assert_eq!((last.topic.as_str(), last.text().as_str()), ("edge-agent/crash/status", "offline"));
    // started again (as systemd would), it is back online
    let _again = common::Running::agent(&path);
    let back = collect_until(&rx, Duration::from_secs(60), |m| m.topic.ends_with("/status"));
    assert_eq!(back.last().map(Message::text).as_deref(), Some("online"), "{back:?}");
}

#[test]
fn sigterm_stops_a_looping_agent_cleanly() {
    let broker = common::rumqttd();
    // BlazeFace: frames in flight must drain within the stop deadline, and int8 NanoDet takes
    // seconds per frame on x86 cores without VNNI
    let cfg = config(broker.port, "term", &[("objects", "blazeface", "int8")], ", fps = 5, loop = true");
    let (_dir, path) = common::write_config(&cfg);
    let rx = subscribe(broker.port, "watch-term", "edge-agent/term/#");
    let mut child = common::Running::agent(&path);
    collect_until(&rx, Duration::from_secs(120), |m| m.topic.contains("/detections/"));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "agent did not stop within its deadline");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let after = collect_until(&rx, Duration::from_secs(10), |m| m.topic.ends_with("/status"));
    assert_eq!(after.last().map(Message::text).as_deref(), Some("offline"));
}
