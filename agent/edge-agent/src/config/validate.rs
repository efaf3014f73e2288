//! Turns the merged, untyped configuration tree into a [`Config`], collecting every problem
//! (unknown fields, wrong types, bad values, missing models) with its path instead of stopping
//! at the first.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{AgentSettings, Config, Issue, MqttSettings, PipelineConfig, StageConfig, Tiling};
use edge_core::model::Catalog;

const TOP_LEVEL: &[&str] = &["agent", "mqtt", "outbox", "updates", "homeassistant", "web", "pipelines"];

/// Deserializes and checks `raw`; either a valid config or every issue found.
pub fn check(raw: Value, catalog: &Catalog) -> Result<Config, Vec<Issue>> {
    let mut issues = Vec::new();
    let Value::Object(mut top) = raw else {
        return Err(vec![issue("", "the configuration must be a table")]);
    };
    for key in top.keys().filter(|k| !TOP_LEVEL.contains(&k.as_str())) {
        issues.push(issue(key, format!("unknown section (expected one of {TOP_LEVEL:?})")));
    }
    let agent: Option<AgentSettings> = part(&mut top, "agent", &mut issues);
    let mqtt: Option<MqttSettings> = part(&mut top, "mqtt", &mut issues);
    let outbox: Option<super::OutboxSettings> = part(&mut top, "outbox", &mut issues);
    let updates: Option<super::UpdateSettings> = part(&mut top, "updates", &mut issues);
    let homeassistant: Option<super::HomeAssistantSettings> = part(&mut top, "homeassistant", &mut issues);
    let web: Option<crate::web::WebSettings> = part(&mut top, "web", &mut issues);
    let mut problems = Vec::new();
    if let Some(h) = &homeassistant {
        h.check(&mut problems);
    }
    if let Some(w) = &web {
        w.check(&mut problems);
    }
    issues.extend(problems.into_iter().map(|(p, m)| issue(p, m)));
    if let Some(u) = &updates {
        super::vision_checks::check_updates(u, &mut issues);
    }
    if let Some(o) = &outbox
        && (o.segment_kb < 16 || o.segment_kb * 1024 > o.max_mb * 1024 * 1024 || o.max_mb > 1 << 20)
    {
        issues.push(issue("outbox", "segment_kb at least 16 and at most max_mb (max_mb up to 1 TiB)"));
    }
    if let Some(o) = &outbox
        && !(10..=3_600_000).contains(&o.sync_interval_ms)
    {
        issues.push(issue("outbox.sync_interval_ms", "must be in [10, 3600000]"));
    }
    let mut pipelines = std::collections::BTreeMap::new();
    match top.remove("pipelines") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let path = format!("pipelines.{name}");
                if !valid_name(&name) {
                    issues.push(issue(&path, "pipeline names use only letters, digits, '_' and '-'"));
                }
                if let Some(p) = pipeline(&path, value, &mut issues) {
                    check_pipeline(&path, &name, &p, catalog, &mut issues);
                    pipelines.insert(name, p);
                }
            }
        }
        Some(_) => issues.push(issue("pipelines", "must be a table of named pipelines")),
    }
    super::object_checks::check_zone_names(&pipelines, &mut issues);
    if let Some(a) = &agent {
        check_agent(a, &mut issues);
    }
    if let Some(m) = &mqtt {
        check_mqtt(m, &mut issues);
    }
    match (agent, mqtt, outbox, updates, homeassistant, web, issues.is_empty()) {
        (Some(agent), Some(mqtt), Some(outbox), Some(updates), Some(homeassistant), Some(web), true) => {
            Ok(Config { agent, mqtt, outbox, updates, homeassistant, web, pipelines })
        }
        _ => Err(issues),
    }
}

pub(super) fn issue(path: impl Into<String>, message: impl Into<String>) -> Issue {
    Issue { path: path.into(), message: message.into() }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Deserializes `value` as `T`, recording the first error inside it with its full path.
fn typed<T: DeserializeOwned>(path: &str, value: Value, issues: &mut Vec<Issue>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let mut full = if inner == "." { path.to_string() } else { format!("{path}.{inner}") };
            let message = e.into_inner().to_string();
            // inside internally tagged enums serde loses the field's own name: put it back
            if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next())
                && !full.ends_with(field)
            {
                full = format!("{full}.{field}");
            }
            issues.push(issue(full.replace(".[", "["), message));
            None
        }
    }
}

fn part<T: DeserializeOwned + Default>(
    top: &mut serde_json::Map<String, Value>,
    key: &str,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    match top.remove(key) {
        None => Some(T::default()),
        Some(v) => typed(key, v, issues),
    }
}

/// Most threads one pipeline's inference may use.
const MAX_THREADS: u64 = 64;

const PIPELINE_KEYS: &[&str] = &["source", "stages", "sinks", "threads", "objects", "zones"];

/// A pipeline's source, stages and sinks are deserialized one by one so that a mistake in
/// one does not hide a mistake in another.
fn pipeline(path: &str, value: Value, issues: &mut Vec<Issue>) -> Option<PipelineConfig> {
    let Value::Object(mut map) = value else {
        issues.push(issue(path, "must be a table"));
        return None;
    };
    let before = issues.len();
    for key in map.keys().filter(|k| !PIPELINE_KEYS.contains(&k.as_str())) {
        issues.push(issue(format!("{path}.{key}"), format!("unknown field (expected one of {PIPELINE_KEYS:?})")));
    }
    let source = match map.remove("source") {
        Some(v) => typed(&format!("{path}.source"), v, issues),
        None => {
            issues.push(issue(format!("{path}.source"), "missing"));
            None
        }
    };
    let mut stages = Vec::new();
    match map.remove("stages") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, v) in items.into_iter().enumerate() {
                stages.extend(typed::<StageConfig>(&format!("{path}.stages[{i}]"), v, issues));
            }
        }
        _ => issues.push(issue(format!("{path}.stages"), "needs a list of at least one stage")),
    }
    let mut sinks = Vec::new();
    match map.remove("sinks") {
        None => sinks = super::types::default_sinks(),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, v) in items.into_iter().enumerate() {
                let at = format!("{path}.sinks[{i}]");
                if let Some(sink) = typed::<crate::sink::SinkConfig>(&at, v, issues) {
                    let mut problems = Vec::new();
                    sink.check(&at, &mut problems);
                    issues.extend(problems.into_iter().map(|(p, m)| issue(p, m)));
                    sinks.push(sink);
                }
            }
        }
        Some(Value::Array(_)) => issues.push(issue(
            format!("{path}.sinks"),
            "is empty: results would go nowhere (leave `sinks` out for MQTT, or name at least one sink)",
        )),
        Some(_) => issues.push(issue(format!("{path}.sinks"), "must be a list of sinks")),
    }
    let threads = match map.remove("threads") {
        None => Some(1),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_THREADS) => Some(n as usize),
            _ => {
                issues.push(issue(format!("{path}.threads"), format!("must be a whole number in [1, {MAX_THREADS}]")));
                None
            }
        },
    };
    let objects = match map.remove("objects") {
        None => Some(Default::default()),
        Some(v) => typed(&format!("{path}.objects"), v, issues),
    };
    let zones = match map.remove("zones") {
        None => Some(Default::default()),
        Some(v) => typed(&format!("{path}.zones"), v, issues),
    };
    if issues.len() != before {
        return None;
    }
    Some(PipelineConfig { source: source?, stages, sinks, threads: threads?, objects: objects?, zones: zones? })
}

fn check_pipeline(path: &str, name: &str, p: &PipelineConfig, catalog: &Catalog, issues: &mut Vec<Issue>) {
    use super::SourceConfig;
    match &p.source {
        SourceConfig::Images { path: pattern, fps, .. } => {
            if let Some(fps) = fps
                && !(fps.is_finite() && *fps > 0.0)
            {
                issues.push(issue(format!("{path}.source.fps"), "must be a positive number"));
            }
            if pattern.trim().is_empty() {
                issues.push(issue(format!("{path}.source.path"), "must not be empty"));
            }
        }
        SourceConfig::Camera { fps, width, height, .. } => {
            if *fps == 0 || *width == 0 || *height == 0 {
                issues.push(issue(format!("{path}.source"), "fps, width and height must be positive"));
            }
        }
        SourceConfig::Rtsp(_) | SourceConfig::Libcamera(_) | SourceConfig::Command(_) => {
            let mut problems = Vec::new();
            let at = format!("{path}.source");
            match &p.source {
                SourceConfig::Rtsp(r) => r.check(&at, &mut problems),
                SourceConfig::Libcamera(l) => l.check(&at, &mut problems),
                SourceConfig::Command(c) => c.check(&at, &mut problems),
                _ => {}
            }
            issues.extend(problems.into_iter().map(|(p, m)| issue(p, m)));
        }
        SourceConfig::Microphone { buffer_secs, sample_rate, channels, .. } => {
            if !(*buffer_secs > 0.0 && *buffer_secs <= 60.0) {
                issues.push(issue(format!("{path}.source.buffer_secs"), "must be in (0, 60]"));
            }
            if sample_rate.is_some_and(|r| !(8_000..=192_000).contains(&r)) {
                issues.push(issue(format!("{path}.source.sample_rate"), "must be in [8000, 192000]"));
            }
            if channels.is_some_and(|c| !(1..=8).contains(&c)) {
                issues.push(issue(format!("{path}.source.channels"), "must be in [1, 8]"));
            }
        }
        SourceConfig::Wav { path: pattern, .. } => {
            if pattern.trim().is_empty() {
                issues.push(issue(format!("{path}.source.path"), "must not be empty"));
            }
        }
    }
    if p.source.is_audio() {
        super::audio_checks::check_audio_stages(path, &p.stages, catalog, issues);
        super::object_checks::check_objects(path, p, catalog, issues);
        return;
    }
    super::vision_checks::check_chain(path, &p.stages, issues);
    super::object_checks::check_objects(path, p, catalog, issues);
    let mut upstream_labels: Option<Vec<String>> = None;
    for (i, stage) in p.stages.iter().enumerate() {
        let at = format!("{path}.stages[{i}]");
        match stage {
            StageConfig::Classify(c) => {
                super::vision_checks::check_classify(&at, name, c, upstream_labels.as_deref(), catalog, issues)
            }
            StageConfig::Vad(_) | StageConfig::Transcribe(_) => {
                issues.push(issue(format!("{at}.type"), "audio stages need an audio source (microphone or wav)"))
            }
            StageConfig::Detect(d) => {
                match catalog.get(&d.model) {
                    None => issues.push(issue(
                        format!("{at}.model"),
                        format!("no model named {:?} (available: {})", d.model, catalog.names().join(", ")),
                    )),
                    Some(m) => {
                        upstream_labels = Some(m.labels.clone());
                        if m.manifest.task != edge_core::model::Task::Detection {
                            issues.push(issue(format!("{at}.model"), format!("{:?} is not a detector", d.model)));
                        }
                        if !m.manifest.variants.contains_key(&d.precision) {
                            issues.push(issue(
                                format!("{at}.precision"),
                                format!("model {:?} has no {} variant", d.model, d.precision),
                            ));
                        }
                        for class in d.classes.iter().filter(|c| !m.labels.contains(c)) {
                            issues.push(issue(
                                format!("{at}.classes"),
                                format!("model {:?} has no label {class:?}", d.model),
                            ));
                        }
                    }
                }
                if let Some(t) = d.threshold
                    && !(t > 0.0 && t < 1.0)
                {
                    issues.push(issue(format!("{at}.threshold"), format!("must be in (0, 1), got {t}")));
                }
                if !(d.nms_iou > 0.0 && d.nms_iou <= 1.0) {
                    issues.push(issue(format!("{at}.nms_iou"), format!("must be in (0, 1], got {}", d.nms_iou)));
                }
                if d.max_detections == 0 {
                    issues.push(issue(format!("{at}.max_detections"), "must be at least 1"));
                }
                match d.tiling {
                    Tiling::Auto { max_downscale } if !(max_downscale >= 1.0) => {
                        issues.push(issue(format!("{at}.tiling.auto.max_downscale"), "must be at least 1"))
                    }
                    Tiling::Grid { cols, rows, overlap }
                        if cols == 0 || rows == 0 || cols * rows > 64 || !(0.0..0.5).contains(&overlap) =>
                    {
                        issues.push(issue(
                            format!("{at}.tiling.grid"),
                            "cols and rows from 1 (at most 64 tiles), overlap in [0, 0.5)",
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn check_agent(a: &AgentSettings, issues: &mut Vec<Issue>) {
    if !valid_name(&a.device_id) {
        issues.push(issue("agent.device_id", "use only letters, digits, '_' and '-' (it is a topic level)"));
    }
    if !(a.shutdown_timeout_secs > 0.0 && a.shutdown_timeout_secs <= 600.0) {
        issues.push(issue("agent.shutdown_timeout_secs", "must be in (0, 600]"));
    }
    if !(a.stats_interval_secs >= 0.1) {
        issues.push(issue("agent.stats_interval_secs", "must be at least 0.1"));
    }
}

fn check_mqtt(m: &MqttSettings, issues: &mut Vec<Issue>) {
    if m.host.trim().is_empty() {
        issues.push(issue("mqtt.host", "must not be empty"));
    }
    if m.prefix.is_empty() || m.prefix.contains(['+', '#']) || m.prefix.starts_with('/') {
        issues.push(issue("mqtt.prefix", "must be a non-empty topic without wildcards or a leading '/'"));
    }
    if m.password.is_some() && m.password_file.is_some() {
        issues.push(issue("mqtt.password_file", "set either password or password_file, not both"));
    }
    if let Some(tls) = &m.tls
        && tls.client_cert_file.is_some() != tls.client_key_file.is_some()
    {
        issues.push(issue("mqtt.tls", "client_cert_file and client_key_file go together"));
    }
    if !(m.max_backoff_secs >= 0.1) {
        issues.push(issue("mqtt.max_backoff_secs", "must be at least 0.1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
    }

    /// Checks `toml` and compares the issues' `path: message` lines with `expected`
    /// (each expected line must be the start of one reported line, in order).
    fn check_toml(toml: &str, expected: &[&str]) {
        let raw: Value = toml::from_str::<toml::Value>(toml).unwrap().try_into().unwrap();
        let got: Vec<String> = match check(raw, &catalog()) {
            Ok(_) => vec![],
            Err(issues) => issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect(),
        };
        assert_eq!(got.len(), expected.len(), "got {got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "expected {e:?}, got {g:?}");
        }
    }

    const SOURCE: &str = r#"source = { type = "images", path = "x" }"#;

    #[test]
    fn inference_threads_are_checked() {
        let stage = "stages = [{ type = \"detect\", model = \"nanodet\" }]";
        check_toml(&format!("[pipelines.a]\n{SOURCE}\n{stage}\nthreads = 2"), &[]);
        for bad in ["0", "65", "1.5", "\"two\""] {
            check_toml(
                &format!("[pipelines.a]\n{SOURCE}\n{stage}\nthreads = {bad}"),
                &["pipelines.a.threads: must be a whole number in [1, 64]"],
            );
        }
    }

    #[test]
    fn valid_configs() {
        check_toml("", &[]);
        check_toml(&format!("[pipelines.a]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"nanodet\" }}]"), &[]);
        check_toml(
            &format!(
                "[pipelines.a]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"blazeface\", precision = \"fp32\", \
                 tiling = \"none\", classes = [\"face\"] }}]\nsinks = [{{ type = \"mqtt\", skip_empty = true }}]"
            ),
            &[],
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        check_toml(
            &format!(
                "colour = 1\n[agent]\ndevice_id = \"a/b\"\n[mqtt]\nprefix = \"x/#\"\n\
                 [pipelines.a]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"nanodet\", classes = [\"unicorn\"], nms_iou = 0 }}]\n\
                 [pipelines.b]\nsource = {{ type = \"webcam\" }}\nstages = []\n\
                 [pipelines.c]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"nanodet\", treshold = 0.5 }}]\nextra = 1\n\
                 [pipelines.d]\nsource = {{ type = \"images\", path = \"x\", fps = -1 }}\n\
                 stages = [{{ type = \"detect\", model = \"nanodet\", tiling = {{ grid = {{ cols = 0, rows = 1, overlap = 0.1 }} }} }}]"
            ),
            &[
                "colour: unknown section",
                "pipelines.a.stages[0].classes: model \"nanodet\" has no label \"unicorn\"",
                "pipelines.a.stages[0].nms_iou: must be in (0, 1]",
                "pipelines.b.source.type: unknown variant `webcam`",
                "pipelines.b.stages: needs a list of at least one stage",
                "pipelines.c.extra: unknown field",
                "pipelines.c.stages[0].treshold: unknown field `treshold`",
                "pipelines.d.source.fps: must be a positive number",
                "pipelines.d.stages[0].tiling.grid: cols and rows from 1",
                "agent.device_id: use only letters",
                "mqtt.prefix: must be a non-empty topic",
            ],
        );
    }

    #[test]
    fn audio_pipelines_are_checked_like_the_others() {
        let stages = r#"stages = [{ type = "vad" }, { type = "transcribe" }]"#;
        check_toml(&format!("[pipelines.mic]\nsource = {{ type = \"microphone\" }}\n{stages}"), &[]);
        check_toml(
            &format!(
                "[pipelines.a]\nsource = {{ type = \"wav\", path = \"x.wav\", realtime = true }}\n\
                 stages = [{{ type = \"vad\", threshold = 2, pad_ms = 5000 }}, \
                 {{ type = \"transcribe\", model = \"nanodet\", language = \"de\" }}]\n\
                 [pipelines.b]\nsource = {{ type = \"microphone\", buffer_secs = 0, channels = 9 }}\n{stages}\n\
                 [pipelines.c]\nsource = {{ type = \"wav\", path = \"x.wav\" }}\n\
                 stages = [{{ type = \"transcribe\" }}, {{ type = \"vad\" }}]\n\
                 [pipelines.d]\n{SOURCE}\n{stages}\n\
                 [pipelines.e]\nsource = {{ type = \"microphone\", gain = 2 }}\n{stages}"
            ),
            &[
                "pipelines.a.stages[1].model: \"nanodet\" is a vision model, not a transcription model",
                "pipelines.a.stages[0].threshold: must be in (0.15, 1)",
                "pipelines.a.stages[0].pad_ms: must be at most 2000",
                "pipelines.a.stages[1].language: the shipped model is English-only",
                "pipelines.b.source.buffer_secs: must be in (0, 60]",
                "pipelines.b.source.channels: must be in [1, 8]",
                "pipelines.c.stages: an audio source needs exactly",
                "pipelines.d.stages[0].type: audio stages need an audio source",
                "pipelines.d.stages[1].type: audio stages need an audio source",
                "pipelines.e.source.gain: unknown field `gain`",
            ],
        );
    }

    #[test]
    fn classify_stages_and_updates_are_checked() {
        check_toml(
            &format!(
                "[pipelines.door]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"nanodet\" }}, {{ type = \"classify\", on = [\"cat\"] }}]"
            ),
            &[],
        );
        check_toml(
            &format!(
                "[updates]\ntrusted_keys = [\"bm90IGEga2V5\"]\nmax_bytes = 1\n\
                 [pipelines.a]\n{SOURCE}\nstages = [{{ type = \"classify\", model = \"nanodet\", top_k = 0 }}]\n\
                 [pipelines.b]\n{SOURCE}\nstages = [{{ type = \"classify\", head = \"birds\", slot = \"../x\", on = [\"cat\"] }}]\n\
                 [pipelines.c]\n{SOURCE}\nstages = [{{ type = \"classify\" }}, {{ type = \"detect\", model = \"nanodet\" }}]\n\
                 [pipelines.d]\n{SOURCE}\nstages = [{{ type = \"detect\", model = \"nanodet\" }}, {{ type = \"classify\", on = [\"unicorn\"] }}]"
            ),
            &[
                "updates.trusted_keys[0]: not a base64 ed25519 public key",
                "updates.max_bytes: must be in [1 KiB, 1 GiB]",
                "pipelines.a.stages[0].model: \"nanodet\" is not an embedding backbone",
                "pipelines.a.stages[0].top_k: must be in [1, 100]",
                "pipelines.b.stages[0].head: model \"efficientnet-lite0\" ships no head \"birds\"",
                "pipelines.b.stages[0].slot: use 1 to 64 of letters",
                "pipelines.b.stages[0].on: only applies after a detect stage",
                "pipelines.c.stages: a frame pipeline runs [detect], [classify] or [detect, classify]",
                "pipelines.d.stages[1].on: the detector has no label \"unicorn\"",
            ],
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        check_toml("[mqtt]\nport = \"high\"", &["mqtt.port: invalid type: string \"high\", expected u16"]);
        check_toml("[agent]\nshutdown_timeout_secs = 0", &["agent.shutdown_timeout_secs: must be in (0, 600]"]);
        check_toml("pipelines = 3", &["pipelines: must be a table"]);
    }
}
