//! `edge-agent run` without a config: the whole product in one command. An in-process broker
//! on a free loopback port, three pipelines over the bundled photos (objects with the int8
//! NanoDet, faces with the int8 BlazeFace, labels with the int8 EfficientNet-Lite0 and its
//! ImageNet head), one over a bundled recording (Silero VAD, then the int8 Whisper tiny.en),
//! and a subscriber that prints every message the agent publishes. It ends when every
//! pipeline has gone through its samples once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{
    AgentSettings, ClassifyStage, Config, DetectStage, MqttSettings, PipelineConfig, Precision, SinkConfig,
    SourceConfig, StageConfig, TranscribeStage, VadStage,
};
use edge_core::model::{Catalog, default_models_dir};

/// A bundled sample: the path in `env` if set, else the installed copy if present, else this
/// source tree's.
fn sample(env: &str, installed: &str, tree: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let installed = PathBuf::from(installed);
    if installed.exists() {
        return installed;
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(tree);
    tree.canonicalize().unwrap_or(tree)
}

/// The bundled photos: `$EDGE_AGENT_SAMPLES`, the installed copy, or this source tree's.
pub fn samples_dir() -> PathBuf {
    sample("EDGE_AGENT_SAMPLES", "/usr/share/edge-agent/samples", "../../tests/fixtures/images")
}

/// The bundled recording: `$EDGE_AGENT_SPEECH_SAMPLE`, the installed copy, or this source tree's.
pub fn speech_sample() -> PathBuf {
    sample(
        "EDGE_AGENT_SPEECH_SAMPLE",
        "/usr/share/edge-agent/samples/speech.wav",
        "../../tests/fixtures/audio/silence-speech-silence.wav",
    )
}

/// The demo's configuration, pointed at a broker on `port`.
pub fn config(port: u16, models_dir: PathBuf, samples: &Path, speech: &Path) -> Config {
    let detect = |model: &str| {
        StageConfig::Detect(DetectStage { max_detections: 20, ..DetectStage::defaults(model, Precision::Int8) })
    };
    let source = SourceConfig::Images { path: samples.display().to_string(), fps: Some(2.0), r#loop: false };
    let pipeline = |model: &str| PipelineConfig {
        source: source.clone(),
        stages: vec![detect(model)],
        sinks: vec![SinkConfig::Mqtt(Default::default())],
        threads: 1,
        objects: Default::default(),
        zones: BTreeMap::new(),
    };
    Config {
        agent: AgentSettings {
            device_id: "demo".into(),
            models_dir: Some(models_dir),
            state_dir: std::env::temp_dir().join(format!("edge-agent-demo-{}", std::process::id())),
            shutdown_timeout_secs: 20.0,
            stats_interval_secs: 1.0,
            metrics_listen: None,
        },
        mqtt: MqttSettings { port, ..Default::default() },
        outbox: Default::default(),
        updates: Default::default(),
        homeassistant: Default::default(),
        web: Default::default(),
        pipelines: BTreeMap::from([
            ("objects".into(), pipeline("nanodet")),
            (
                "labels".into(),
                PipelineConfig {
                    source: source.clone(),
                    stages: vec![StageConfig::Classify(ClassifyStage {
                        model: "efficientnet-lite0".into(),
                        precision: Precision::Int8,
                        head: "imagenet".into(),
                        slot: None,
                        top_k: 3,
                        on: vec![],
                    })],
                    sinks: vec![SinkConfig::Mqtt(Default::default())],
                    threads: 1,
                    objects: Default::default(),
                    zones: BTreeMap::new(),
                },
            ),
            ("faces".into(), pipeline("blazeface")),
            ("speech".into(), speech_pipeline(speech)),
        ]),
    }
}

fn speech_pipeline(wav: &Path) -> PipelineConfig {
    PipelineConfig {
        source: SourceConfig::Wav { path: wav.display().to_string(), realtime: false, r#loop: false },
        stages: vec![
            StageConfig::Vad(VadStage { events: true, ..Default::default() }),
            StageConfig::Transcribe(TranscribeStage {
                model: "whisper-tiny-en".into(),
                precision: Precision::Int8,
                language: "en".into(),
                window: Default::default(),
            }),
        ],
        sinks: vec![SinkConfig::Mqtt(Default::default())],
        threads: 1,
        objects: Default::default(),
        zones: BTreeMap::new(),
    }
}

pub async fn run(models_dir: Option<&Path>) -> Result<ExitCode> {
    let models_dir = models_dir.map(Path::to_path_buf).unwrap_or_else(default_models_dir);
    Catalog::open(&models_dir).with_context(|| format!("reading models in {}", models_dir.display()))?;
    let samples = samples_dir();
    if !samples.is_dir() {
        bail!("demo photos not found at {} (set EDGE_AGENT_SAMPLES)", samples.display());
    }
    let speech = speech_sample();
    if !speech.is_file() {
        bail!("demo recording not found at {} (set EDGE_AGENT_SPEECH_SAMPLE)", speech.display());
    }
    let port = edge_broker::free_port()?;
    let addr = tokio::task::spawn_blocking(move || edge_broker::start(port)).await??;
    eprintln!("demo: MQTT broker on {addr}; printing every message under edge-agent/demo/#");

    let mut opts = MqttOptions::new("edge-agent-demo-printer", "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client.subscribe("edge-agent/demo/#", QoS::AtLeastOnce).await?;
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let printer = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        let mut count = 0usize;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        // the receiver only waits for this once; it may be gone
                        tx.send(()).ok();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    count += 1;
                    println!("{} {}", p.topic, String::from_utf8_lossy(&p.payload));
                    if let Some(line) = summary(&p.payload) {
                        eprintln!("{line}");
                    }
                    if p.topic.ends_with("/status") && &p.payload[..] == b"offline" {
                        return count;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("demo: subscriber lost the broker: {e}");
                    return count;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await.context("subscribing to the demo broker")??;
    let mut config = config(port, models_dir, &samples, &speech);
    let web_port = edge_broker::free_port()?;
    config.web.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], web_port)));
    eprintln!("demo: status page on http://127.0.0.1:{web_port}/ while the demo runs");
    let state_dir = config.agent.state_dir.clone();
    let served = crate::app::serve(config, crate::app::shutdown_signal()).await;
    if let Err(e) = std::fs::remove_dir_all(&state_dir) {
        tracing::debug!(error = %e, "demo state folder not removed");
    }
    served?;
    let count =
        tokio::time::timeout(Duration::from_secs(10), printer).await.context("waiting for the last messages")??;
    eprintln!("demo: done, {count} messages received");
    Ok(ExitCode::SUCCESS)
}

/// A one-line human reading of a detections or transcript message, for the demo's stderr.
fn summary(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if let Some(text) = v.get("text").and_then(|t| t.as_str()) {
        return Some(format!(
            "demo: {:<8} {:>5.1}-{:<5.1} s     {:>7.1} ms  {text:?} (real-time factor {:.2})",
            v.get("pipeline")?.as_str()?,
            v.get("start")?.as_f64()?,
            v.get("end")?.as_f64()?,
            v.get("processing_ms")?.as_f64()?,
            v.get("real_time_factor")?.as_f64()?,
        ));
    }
    let file = Path::new(v.get("source")?.as_str()?).file_name()?.to_string_lossy().to_string();
    let dets = v.get("detections").or_else(|| v.get("labels"))?.as_array()?;
    let found: Vec<String> = dets
        .iter()
        .filter_map(|d| Some(format!("{} {:.2}", d.get("label")?.as_str()?, d.get("score")?.as_f64()?)))
        .collect();
    Some(format!(
        "demo: {:<8} {:<17} {:>7.1} ms  {}",
        v.get("pipeline")?.as_str()?,
        file,
        v.get("inference_ms")?.as_f64()?,
        if found.is_empty() { "-".to_string() } else { found.join(", ") }
    ))
}
