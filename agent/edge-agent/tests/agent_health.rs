//! Health: the Prometheus endpoint serves the pipeline figures, and a live source that
//! disappears is reported down, retried with backoff, and comes back by itself.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Message, collect_until, fixture, subscribe};

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn stats_until(
    rx: &std::sync::mpsc::Receiver<Message>,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<Message> {
    let seen = collect_until(rx, Duration::from_secs(60), |m| {
        m.topic.ends_with("/stats") && pred(&m.json()["pipelines"]["cam"])
    });
    assert!(seen.last().is_some_and(|m| m.topic.ends_with("/stats")), "never saw {what}");
    seen
}

#[test]
fn metrics_and_a_source_that_goes_away_and_comes_back() {
    let broker = common::rumqttd();
    let metrics_port = edge_broker::free_port().unwrap();
    let frames = tempfile::tempdir().unwrap();
    let photo = frames.path().join("frame.jpg");
    std::fs::copy(fixture("chelsea.jpg"), &photo).unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[agent]\ndevice_id = \"health\"\nstats_interval_secs = 0.3\nstate_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
         [mqtt]\nport = {}\n\
         [pipelines.cam]\nsource = {{ type = \"images\", path = \"{}\", fps = 5, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"nanodet\" }}]\n",
        state.path().display(),
        broker.port,
        frames.path().display()
    );
    let cfg_path = state.path().join("agent.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let rx = subscribe(broker.port, "watch-health", "edge-agent/health/#");
    let mut child = common::Running::agent(&cfg_path);

    stats_until(&rx, "frames done", |p| p["frames_done"].as_u64().unwrap_or(0) >= 2 && p["source_up"] == true);
    let metrics = get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
    for needle in [
        "edge_agent_frames_done_total{pipeline=\"cam\"} ",
        "edge_agent_source_up{pipeline=\"cam\"} 1",
        "edge_agent_broker_connected 1",
        "edge_agent_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    assert!(get(metrics_port, "/other").starts_with("HTTP/1.0 404"));

    // the "camera" goes away: reported down, the agent keeps running
    std::fs::remove_file(&photo).unwrap();
    let down = stats_until(&rx, "source down", |p| p["source_up"] == false);
    let last = down.last().unwrap().json();
    assert!(last["pipelines"]["cam"]["errors"].as_u64().unwrap() >= 1, "{last}");
    assert!(child.try_wait().unwrap().is_none(), "the agent must survive a lost source");

    // and comes back: detections flow again by themselves
    std::fs::copy(fixture("chelsea.jpg"), &photo).unwrap();
    let started = Instant::now();
    stats_until(&rx, "source back up", |p| p["source_up"] == true);
    let again = collect_until(&rx, Duration::from_secs(60), |m| m.topic.ends_with("/detections/cam"));
    let det = again.last().unwrap().json();
    assert_eq!(det["detections"][0]["label"], "cat", "{det}");
    eprintln!("source recovered in {:?}", started.elapsed());

    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}
