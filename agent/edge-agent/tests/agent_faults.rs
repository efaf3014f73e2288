//! Broker faults, for real, against Debian's mosquitto (CI installs it; without it these
//! tests say so and pass): killed mid-stream and restarted, down at start-up. Nothing the
//! agent produced may be missing afterwards, counted by the per-pipeline sequence numbers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Message, Mosquitto, collect_until, config, sigterm, subscribe_durable};

fn seqs(messages: &[Message], pipeline: &str) -> BTreeSet<u64> {
    messages
        .iter()
        .filter(|m| m.topic.ends_with(&format!("/detections/{pipeline}")))
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .collect()
}

fn assert_no_gaps(seen: &BTreeSet<u64>, at_least: u64) {
    let max = *seen.last().expect("some results arrived");
    let missing: Vec<u64> = (0..=max).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "results lost: seq {missing:?} of 0..={max}");
    assert!(max + 1 >= at_least, "only {} results arrived", max + 1);
}

#[test]
fn a_broker_killed_mid_stream_loses_no_result() {
    let Some(mut broker) = Mosquitto::start_with(None) else {
        eprintln!("mosquitto is not installed; skipping (CI installs it)");
        return;
    };
    // BlazeFace: the subject is the outbox, and int8 NanoDet takes seconds per frame on x86
    // cores without VNNI, too slow to feed a 4 s outage
    let cfg = config(broker.port, "kill", &[("objects", "blazeface", "int8")], ", fps = 6, loop = true");
    let (_dir, path) = common::write_config(&cfg);
    let rx = subscribe_durable(broker.port, "watch-kill", "edge-agent/kill/#");
    std::thread::sleep(Duration::from_millis(3000)); // the durable session is saved to disk (every 1-2 s)
    let mut child = common::Running::agent(&path);

    let mut seen = collect_until(&rx, Duration::from_secs(120), |m| {
        m.topic.contains("/detections/") && m.json()["seq"].as_u64().unwrap() >= 3
    });
    broker.kill9();
    std::thread::sleep(Duration::from_secs(4)); // results keep coming: they go to the outbox
    broker.start();
    // after the restart: the backlog is replayed and live results flow again
    seen.extend(collect_until(&rx, Duration::from_secs(8), |_| false));
    // the command subscription was restored: a command is answered, a bad one with an error
    common::publish(broker.port, "edge-agent/kill/commands", br#"{"id":"after-restart","command":"ping"}"#);
    common::publish(broker.port, "edge-agent/kill/commands", b"{not json");
    let acks =
        collect_until(&rx, Duration::from_secs(20), |m| m.topic.ends_with("/commands/ack") && m.json()["ok"] == false);
    let acks: Vec<serde_json::Value> =
        acks.iter().filter(|m| m.topic.ends_with("/commands/ack")).map(Message::json).collect();
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!((acks[0]["id"].as_str(), acks[0]["ok"].as_bool()), (Some("after-restart"), Some(true)), "{acks:?}");
    assert!(acks[1]["error"].as_str().unwrap().contains("not a command"), "{acks:?}");
    sigterm(&mut child);
    seen.extend(collect_until(&rx, Duration::from_secs(10), |m| {
        m.topic.ends_with("/status") && m.payload == b"offline"
    }));

    let got = seqs(&seen, "objects");
    assert_no_gaps(&got, 8);
    let onlines = seen.iter().filter(|m| m.topic.ends_with("/status") && m.payload == b"online").count();
    assert!(onlines >= 2, "the agent announces itself again after reconnecting ({onlines} online)");
    let last_stats = seen.iter().rev().find(|m| m.topic.ends_with("/stats")).unwrap().json();
    assert_eq!(last_stats["outbox"]["dropped"], 0, "{last_stats}");
    let spilled = last_stats["outbox"]["spilled"].as_u64().unwrap();
    assert!(spilled >= 3, "the outage must have gone through the outbox: {last_stats}");
    assert_eq!(last_stats["outbox"]["replayed"].as_u64().unwrap(), spilled, "{last_stats}");
    eprintln!("{} results, {spilled} of them through the outbox", got.len());
}

#[test]
fn a_broker_down_at_start_up_gets_everything_later() {
    let Some(mut broker) = Mosquitto::start_with(None) else {
        eprintln!("mosquitto is not installed; skipping (CI installs it)");
        return;
    };
    // a durable subscriber registers, then the broker goes away before the agent starts
    let rx = subscribe_durable(broker.port, "watch-late", "edge-agent/late/#");
    std::thread::sleep(Duration::from_millis(3000)); // the durable session is saved to disk (every 1-2 s)
    broker.kill9();

    let mut cfg = config(broker.port, "late", &[("objects", "nanodet", "int8")], "");
    cfg = cfg.replace("shutdown_timeout_secs = 15", "shutdown_timeout_secs = 60");
    let (_dir, path) = common::write_config(&cfg);
    let mut child = common::Running::agent(&path);
    // the 7 photos are processed while the broker is down; the agent waits to deliver them
    std::thread::sleep(Duration::from_secs(6));
    assert!(child.try_wait().unwrap().is_none(), "the agent must keep its results until it can send them");
    broker.start();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "agent did not deliver and stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let seen = collect_until(&rx, Duration::from_secs(10), |m| m.topic.ends_with("/status") && m.payload == b"offline");
    let got = seqs(&seen, "objects");
    assert_eq!(got, (0..7).collect::<BTreeSet<u64>>(), "every photo's result arrives once the broker is up");
    // the retained announcement of the active model, made at start-up while the broker was down
    let active = "edge-agent/late/models/nanodet/active/int8";
    assert!(
        seen.iter().any(|m| m.topic == active),
        "the start-up announcement {active} must arrive once the broker is up"
    );
    // and the broker keeps it for whoever subscribes next
    let later = subscribe_durable(broker.port, "watch-after", active);
    let kept = collect_until(&later, Duration::from_secs(5), |m| m.topic == active);
    assert!(kept.iter().any(|m| m.topic == active && m.retain), "{active} must be retained: {kept:?}");
}
