//! Nothing in memory only at stop: results the MQTT client holds without the broker's
//! acknowledgement when the agent stops go to the outbox and arrive after the next start.
//!
//! The broker link goes silent (a relay swallows everything, as a Wi-Fi link that dropped
//! without a reset): the agent still thinks it is connected and keeps handing results to its
//! client, none of which reach the broker. Then the agent is stopped, the link comes back, and
//! a second run (another pipeline) delivers the first run's outbox. Every result the first run
//! produced (its `jsonl` sink is the record) must have arrived; duplicates are allowed and
//! counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::blackhole::Blackhole;
use common::{collect_until, sigterm, subscribe};

#[test]
fn results_unacknowledged_at_stop_arrive_after_the_next_start() {
    let broker = common::rumqttd();
    let link = Blackhole::start(broker.port);
    let images = common::root().join("tests/fixtures/images");
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.jsonl");
    let agent_config = |pipeline: &str, source: &str, sinks: &str| {
        format!(
            "[agent]\ndevice_id = \"stopped\"\nstats_interval_secs = 1\nshutdown_timeout_secs = 20\n\
             state_dir = \"{}\"\n\n[mqtt]\nport = {}\nmax_backoff_secs = 1\nkeep_alive_secs = 60\n\n\
             [pipelines.{pipeline}]\nsource = {{ type = \"images\", path = \"{}\"{source} }}\n\
             stages = [{{ type = \"detect\", model = \"blazeface\" }}]\nsinks = [{sinks}]\n",
            dir.path().join("state").display(),
            link.port,
            images.display()
        )
    };
    let first = dir.path().join("first.toml");
    let sinks = format!("{{ type = \"mqtt\" }}, {{ type = \"jsonl\", path = \"{}\" }}", truth.display());
    std::fs::write(&first, agent_config("objects", ", fps = 6, loop = true", &sinks)).unwrap();
    let second = dir.path().join("second.toml");
    std::fs::write(&second, agent_config("later", "", "{ type = \"mqtt\" }")).unwrap();

    let rx = subscribe(broker.port, "watch-stopped", "edge-agent/stopped/#");
    let mut agent = common::Running::agent(&first);
    let mut seen = collect_until(&rx, Duration::from_secs(120), |m| {
        m.topic.ends_with("/detections/objects") && m.json()["seq"].as_u64().unwrap() >= 3
    });
    link.set_dark(true);
    std::thread::sleep(Duration::from_secs(4)); // results go to a client whose broker is gone
    sigterm(&mut agent);
    assert!(agent.wait().unwrap().success());
    link.set_dark(false);
    let produced = std::fs::read_to_string(&truth).unwrap().lines().count() as u64;
    assert!(produced >= 10, "the first run produced {produced} results");

    let mut later = common::agent();
    later.arg("run").arg("--config").arg(&second);
    let (status, _, stderr) = common::run_with_timeout(later, Duration::from_secs(300));
    assert!(status.success(), "{stderr}");
    // up to the second run's `offline` (the first run's last will came before its `online`)
    let mut online = false;
    seen.extend(collect_until(&rx, Duration::from_secs(10), |m| {
        online |= m.topic.ends_with("/status") && m.payload == b"online";
        online && m.topic.ends_with("/status") && m.payload == b"offline"
    }));

    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for m in seen.iter().filter(|m| m.topic.ends_with("/detections/objects")) {
        *copies.entry(m.json()["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let missing: Vec<u64> = (0..produced).filter(|s| !copies.contains_key(s)).collect();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    eprintln!("produced {produced}, received {} distinct, {duplicates} duplicates", copies.len());
    assert!(missing.is_empty(), "results lost: seq {missing:?} of 0..{produced}");
}
