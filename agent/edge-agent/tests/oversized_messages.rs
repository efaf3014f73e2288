//! Messages too big for the agent, sent by anyone with publish access to its update topic:
//! - with the broker configured as the README says (mosquitto `max_packet_size 1048576`), a
//!   20 MB message is refused at the broker: the agent's connection is untouched (no `offline`,
//!   no second `online`) and its results keep flowing;
//! - without that limit, a 2 MiB message reaches the agent's client, which refuses to buffer it
//!   and resets its connection: its last will says `offline`, it comes back `online` by itself,
//!   and results resume.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{Message, Mosquitto, collect_until, fixture, subscribe};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Publishes `size` bytes at QoS 1; whether the broker acknowledged them.
fn publish_big(port: u16, topic: &str, size: usize) -> bool {
    let mut opts = MqttOptions::new("big-sender", "127.0.0.1", port);
    opts.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut conn) = Client::new(opts, 4);
    client.publish(topic, QoS::AtLeastOnce, false, vec![b'x'; size]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_secs(2)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
            Ok(Ok(_)) | Err(_) => {}
            // the broker closed the connection
            Ok(Err(_)) => return false,
        }
    }
    false
}

fn config(port: u16) -> String {
    format!(
        "[agent]\ndevice_id = \"big\"\nstats_interval_secs = 1\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {port}\nmax_backoff_secs = 1\n\
         [pipelines.faces]\nsource = {{ type = \"images\", path = \"{}\", fps = 2, loop = true }}\n\
         stages = [{{ type = \"detect\", model = \"blazeface\" }}]\n",
        common::STATE_DIR,
        fixture("grace_hopper.jpg").display()
    )
}

fn statuses(seen: &[Message]) -> Vec<String> {
    seen.iter().filter(|m| m.topic == "edge-agent/big/status").map(Message::text).collect()
}

fn detections(rx: &Receiver<Message>, secs: u64) -> Vec<Message> {
    collect_until(rx, Duration::from_secs(secs), |m| m.topic == "edge-agent/big/detections/faces")
}

#[test]
fn oversized_messages_are_refused_by_a_configured_broker_and_survived_without_one() {
    let Some(limited) = Mosquitto::start_with(Some("allow_anonymous true\nmax_packet_size 1048576")) else {
        eprintln!("mosquitto is not installed; skipped");
        return;
    };
    let rx = subscribe(limited.port, "watch-big", "edge-agent/big/#");
    let (_dir, path) = common::write_config(&config(limited.port));
    let mut agent = common::Running::agent(&path);
    let mut seen = detections(&rx, 120);
    assert!(statuses(&seen).contains(&"online".to_string()), "{:?}", statuses(&seen));
    assert!(!publish_big(limited.port, "edge-agent/big/models/faces/update", 20 << 20), "the broker took 20 MB");
    seen.extend(collect_until(&rx, Duration::from_secs(6), |_| false));
    assert_eq!(statuses(&seen), ["online"], "the agent's connection was disturbed");
    assert!(seen.iter().rev().take(20).any(|m| m.topic.ends_with("/detections/faces")), "results stopped");
    common::sigterm(&mut agent);
    drop(limited);

    let open = Mosquitto::start_with(None).unwrap();
    let rx = subscribe(open.port, "watch-big-open", "edge-agent/big/#");
    let (_dir, path) = common::write_config(&config(open.port));
    let mut agent = common::Running::agent(&path);
    detections(&rx, 120);
    assert!(publish_big(open.port, "edge-agent/big/models/faces/update", 2 << 20), "the broker refused 2 MiB");
    let reset =
        collect_until(&rx, Duration::from_secs(30), |m| m.topic == "edge-agent/big/status" && m.text() == "online");
    assert_eq!(statuses(&reset), ["offline", "online"], "the client reset its connection and came back");
    let after = detections(&rx, 30);
    assert!(after.last().is_some_and(|m| m.topic.ends_with("/detections/faces")), "results did not resume");
    assert!(agent.try_wait().unwrap().is_none());
    common::sigterm(&mut agent);
}
