use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::config::Config;
use edge_core::model::Catalog;

fn catalog() -> Catalog {
    Catalog::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
}

fn config(toml: &str) -> Config {
    let raw: Value = toml::from_str::<toml::Value>(toml).unwrap().try_into().unwrap();
    crate::config::validate::check(raw, &catalog()).unwrap()
}

const CONFIG: &str = r#"
[agent]
device_id = "pi5"
[homeassistant]
enabled = true
[pipelines.door]
source = { type = "images", path = "x", fps = 5 }
stages = [{ type = "detect", model = "nanodet", classes = ["person", "car"] }]
objects = { enabled = true }
[pipelines.door.zones.porch]
points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
objects = ["person"]
[pipelines.kitchen]
source = { type = "microphone" }
stages = [{ type = "vad" }, { type = "transcribe" }]
"#;

fn payload(c: &Config, removed: &BTreeMap<String, String>) -> Value {
    let topics = Topics::new(&c.mqtt.prefix, "pi5");
    Components::of(c, &catalog(), &topics, true).payload("pi5", "Pi 5", &topics, removed)
}

#[test]
fn the_discovery_payload_declares_every_entity() {
    let c = config(CONFIG);
    let p = payload(&c, &BTreeMap::new());
    assert_eq!(p["dev"]["ids"][0], "edge_agent_pi5");
    assert_eq!(p["dev"]["name"], "Pi 5");
    assert!(p["dev"]["sw"].is_string() && p["o"]["name"] == "edge-agent");
    assert_eq!(p["availability_topic"], "edge-agent/pi5/status");
    let cmps = p["cmps"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for (key, v) in cmps {
        let platform = v["p"].as_str().unwrap_or_else(|| panic!("{key} has no platform"));
        assert!(ids.insert(v["unique_id"].as_str().unwrap().to_string()), "duplicate unique_id in {key}");
        assert!(v["name"].is_string(), "{key} has no name");
        let topic = if platform == "image" { &v["image_topic"] } else { &v["state_topic"] };
        assert!(topic.as_str().unwrap().starts_with("edge-agent/pi5/"), "{key}: {topic}");
    }
    let get = |k: &str| cmps.get(k).unwrap_or_else(|| panic!("no component {k}; have {:?}", cmps.keys()));
    assert_eq!(get("door_person_occupancy")["p"], "binary_sensor");
    assert_eq!(get("door_person_occupancy")["state_topic"], "edge-agent/pi5/objects/door/person");
    assert_eq!(get("door_car_count")["p"], "sensor");
    assert_eq!(get("door_person_snapshot")["image_topic"], "edge-agent/pi5/snapshots/door/person");
    assert_eq!(get("porch_person_occupancy")["state_topic"], "edge-agent/pi5/zones/porch/person");
    assert!(!cmps.contains_key("porch_car_count"), "the porch counts only people");
    assert_eq!(get("kitchen_transcript")["p"], "event");
    assert_eq!(get("kitchen_last_transcript")["state_topic"], "edge-agent/pi5/speech/kitchen/last");
    assert_eq!(get("door_fps")["entity_category"], "diagnostic");
    assert_eq!(get("cpu_temperature")["device_class"], "temperature");
    assert_eq!(get("outbox")["value_template"], "{{ value_json.outbox.messages }}");
    // the same config gives the same ids
    assert_eq!(payload(&c, &BTreeMap::new()), p);
}

#[test]
fn components_gone_from_the_config_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("edge-agent", "pi5");
    let settings = HomeAssistantSettings { enabled: true, ..Default::default() };
    let first = config(CONFIG);
    let d = prepare(&settings, Some(Components::of(&first, &catalog(), &topics, false)), "pi5", &topics, dir.path())
        .unwrap();
    assert_eq!(d.topic, "homeassistant/device/pi5/config");
    // the next run has no zone, and its audio pipeline has another name
    let second = config(
        r#"
[agent]
device_id = "pi5"
[pipelines.door]
source = { type = "images", path = "x", fps = 5 }
stages = [{ type = "detect", model = "nanodet", classes = ["person", "car"] }]
objects = { enabled = true }
[pipelines.kitchen2]
source = { type = "microphone" }
stages = [{ type = "vad" }, { type = "transcribe" }]
"#,
    );
    let d = prepare(&settings, Some(Components::of(&second, &catalog(), &topics, false)), "pi5", &topics, dir.path())
        .unwrap();
    let p: Value = serde_json::from_slice(&d.payload).unwrap();
    let cmps = p["cmps"].as_object().unwrap();
    assert_eq!(cmps["kitchen_transcript"], serde_json::json!({ "p": "event" }));
    assert_eq!(cmps["porch_person_count"], serde_json::json!({ "p": "sensor" }));
    assert!(cmps["kitchen2_transcript"]["unique_id"].is_string());
    // a third run with the same config removes nothing more
    let d = prepare(&settings, Some(Components::of(&second, &catalog(), &topics, false)), "pi5", &topics, dir.path())
        .unwrap();
    let p: Value = serde_json::from_slice(&d.payload).unwrap();
    assert!(p["cmps"].as_object().unwrap().values().all(|v| v.get("unique_id").is_some()));
    // turning discovery off clears the device once
    let off = HomeAssistantSettings::default();
    let d = prepare(&off, None, "pi5", &topics, dir.path()).unwrap();
    assert!(d.payload.is_empty());
    assert!(prepare(&off, None, "pi5", &topics, dir.path()).is_none());
}

#[test]
fn jitter_stays_below_its_bound() {
    for _ in 0..100 {
        assert!(jitter(Duration::from_millis(50)) < Duration::from_millis(50));
    }
}
