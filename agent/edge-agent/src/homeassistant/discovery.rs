//! The device-based discovery payload (`<discovery_prefix>/device/<device>/config`): one
//! message that declares the device (`dev`), this software (`o`) and every entity (`cmps`),
//! all available while `<prefix>/<device>/status` is `online`.
//!
//! Entities: per tracked label of each detect pipeline an occupancy `binary_sensor`, a count
//! `sensor` and (with snapshots) an `image`; the same occupancy and count per zone and label;
//! per transcribing audio pipeline an `event` entity and a last-transcript `sensor`; and
//! diagnostic sensors from the stats message (each pipeline's fps and inference time, the
//! outbox depth, the CPU temperature where the board reports one).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::{Config, StageConfig};
use crate::mqtt::{Topics, topics::level};
use edge_core::model::Catalog;

/// Every entity of the device, by component id.
pub struct Components(pub BTreeMap<String, Value>);

fn occupancy(name: String, topic: &str) -> Value {
    json!({
        "p": "binary_sensor",
        "name": name,
        "device_class": "occupancy",
        "state_topic": topic,
        "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
    })
}

fn count(name: String, topic: &str) -> Value {
    json!({
        "p": "sensor",
        "name": name,
        "state_topic": topic,
        "state_class": "measurement",
        "unit_of_measurement": "objects",
        "icon": "mdi:counter",
    })
}

fn diagnostic(name: String, template: String, unit: Option<&str>, topic: &str) -> Value {
    let mut v = json!({
        "p": "sensor",
        "name": name,
        "state_topic": topic,
        "value_template": template,
        "entity_category": "diagnostic",
        "state_class": "measurement",
    });
    if let Some(u) = unit {
        v["unit_of_measurement"] = json!(u);
    }
    v
}

impl Components {
    /// The entities `config` calls for (`catalog` gives each detector's labels).
    pub fn of(config: &Config, catalog: &Catalog, topics: &Topics, cpu_temp: bool) -> Components {
        let mut c = BTreeMap::new();
        let stats = topics.stats();
        for (name, p) in &config.pipelines {
            if let Some(d) = p.detect_stage().filter(|_| p.tracks_objects()) {
                let labels = catalog.get(&d.model).map(|m| m.labels.clone()).unwrap_or_default();
                for label in p.objects.tracked_labels(&d.classes, &labels) {
                    let (l, topic) = (level(&label), topics.object_count(name, &label));
                    c.insert(format!("{name}_{l}_occupancy"), occupancy(format!("{name} {label}"), &topic));
                    c.insert(format!("{name}_{l}_count"), count(format!("{name} {label} count"), &topic));
                    if p.objects.snapshots.enabled {
                        let image = json!({
                            "p": "image",
                            "name": format!("{name} {label} snapshot"),
                            "image_topic": topics.snapshot(name, &label),
                            "content_type": "image/jpeg",
                        });
                        c.insert(format!("{name}_{l}_snapshot"), image);
                    }
                    for (zone, z) in &p.zones {
                        if z.objects.is_empty() || z.objects.contains(&label) {
                            let topic = topics.zone_count(zone, &label);
                            c.insert(format!("{zone}_{l}_occupancy"), occupancy(format!("{zone} {label}"), &topic));
                            c.insert(format!("{zone}_{l}_count"), count(format!("{zone} {label} count"), &topic));
                        }
                    }
                }
            }
            if p.stages.iter().any(|s| matches!(s, StageConfig::Transcribe(_))) {
                let event = json!({
                    "p": "event",
                    "name": format!("{name} speech"),
                    "state_topic": topics.transcripts(name),
                    "event_types": ["transcript"],
                    "value_template": "{{ {'event_type': 'transcript', 'text': value_json.text, 'utterance_id': value_json.utterance_id} | tojson }}",
                    "icon": "mdi:account-voice",
                });
                c.insert(format!("{name}_transcript"), event);
                let last = json!({
                    "p": "sensor",
                    "name": format!("{name} last transcript"),
                    "state_topic": topics.speech_last(name),
                    "value_template": "{{ value_json.text[:255] }}",
                    "icon": "mdi:text-box-outline",
                });
                c.insert(format!("{name}_last_transcript"), last);
            }
            let at = |field: &str| format!("{{{{ value_json.pipelines['{name}'].{field} }}}}");
            c.insert(format!("{name}_fps"), diagnostic(format!("{name} fps"), at("fps"), Some("fps"), &stats));
            let ms = "{{ value_json.pipelines['NAME'].inference_ms_p50 | default(0, true) }}".replace("NAME", name);
            c.insert(format!("{name}_inference"), diagnostic(format!("{name} inference"), ms, Some("ms"), &stats));
        }
        let depth = "{{ value_json.outbox.messages }}".to_string();
        c.insert("outbox".into(), diagnostic("outbox".into(), depth, Some("messages"), &stats));
        if cpu_temp {
            let mut t = diagnostic("CPU temperature".into(), "{{ value_json.cpu_temp_c }}".into(), Some("°C"), &stats);
            t["device_class"] = json!("temperature");
            c.insert("cpu_temperature".into(), t);
        }
        Components(c)
    }

    /// Component id to platform, as the state file keeps it.
    pub fn platforms(&self) -> BTreeMap<String, String> {
        self.0.iter().map(|(k, v)| (k.clone(), v["p"].as_str().unwrap_or_default().to_string())).collect()
    }

    /// The discovery message: every entity with its unique id, plus a platform-only entry for
    /// each component of an earlier run that is gone (which removes it from Home Assistant).
    pub fn payload(&self, device: &str, name: &str, topics: &Topics, removed: &BTreeMap<String, String>) -> Value {
        let mut cmps = Map::new();
        for (id, platform) in removed.iter().filter(|(id, _)| !self.0.contains_key(*id)) {
            cmps.insert(id.clone(), json!({ "p": platform }));
        }
        for (id, v) in &self.0 {
            let mut v = v.clone();
            v["unique_id"] = json!(format!("edge_agent_{device}_{id}"));
            v["object_id"] = json!(format!("{device}_{id}"));
            cmps.insert(id.clone(), v);
        }
        let version = env!("CARGO_PKG_VERSION");
        json!({
            "dev": {
                "ids": [format!("edge_agent_{device}")],
                "name": name,
                "mf": "edge-agent",
                "mdl": "edge-agent",
                "sw": version,
            },
            "o": { "name": "edge-agent", "sw": version },
            "cmps": cmps,
            "availability_topic": topics.status(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
        })
    }
}
