//! Typed configuration. Every struct denies unknown fields: a typo is an error, not a default.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::mqtt::{MqttSettings, TlsSettings};
pub use crate::objects::{ObjectsConfig, ZoneConfig};
pub use crate::sink::SinkConfig;
pub use crate::update::UpdateSettings;
pub use edge_core::Precision;
use edge_core::speech::SAMPLE_RATE;
use edge_core::speech::segmenter::SegmenterConfig;
use edge_core::vision::DetectSettings;
pub use edge_core::vision::Tiling;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentSettings,
    #[serde(default)]
    pub mqtt: MqttSettings,
    #[serde(default)]
    pub outbox: OutboxSettings,
    #[serde(default)]
    pub updates: UpdateSettings,
    #[serde(default)]
    pub homeassistant: HomeAssistantSettings,
    #[serde(default)]
    pub web: crate::web::WebSettings,
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

/// Home Assistant MQTT discovery (see `crate::homeassistant`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantSettings {
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// The device's name in Home Assistant (default: the device id).
    pub name: Option<String>,
    /// Longest random wait before answering Home Assistant's birth message, so that a
    /// restart of Home Assistant is not met by every device at once.
    pub birth_delay_secs: f64,
}

impl Default for HomeAssistantSettings {
    fn default() -> Self {
        HomeAssistantSettings {
            enabled: false,
            discovery_prefix: "homeassistant".into(),
            name: None,
            birth_delay_secs: 5.0,
        }
    }
}

impl HomeAssistantSettings {
    pub fn config_topic(&self, device: &str) -> String {
        format!("{}/device/{device}/config", self.discovery_prefix)
    }

    /// Where Home Assistant says `online` when it starts.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    pub fn check(&self, problems: &mut Vec<(String, String)>) {
        let p = &self.discovery_prefix;
        if p.is_empty() || p.contains(['+', '#']) || p.starts_with('/') || p.ends_with('/') {
            problems.push((
                "homeassistant.discovery_prefix".into(),
                "must be a topic without wildcards or outer '/'".into(),
            ));
        }
        if !(0.0..=600.0).contains(&self.birth_delay_secs) {
            problems.push(("homeassistant.birth_delay_secs".into(), "must be in [0, 600]".into()));
        }
    }
}

/// The disk buffer for results the broker cannot take (under `<state_dir>/outbox`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// Cap of the whole outbox; when reached the oldest segment is dropped (and counted).
    pub max_mb: u64,
    /// Size of one segment file.
    pub segment_kb: u64,
    /// When spilled results are forced to the disk: `never`, `interval` or `always`. What
    /// each loses on a power cut and writes to the flash is in the README.
    pub sync: OutboxSync,
    /// For `sync = "interval"`: the longest a spilled result waits for its sync.
    pub sync_interval_ms: u64,
}

/// `outbox.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxSync {
    Never,
    Interval,
    Always,
}

impl OutboxSettings {
    pub fn durability(&self) -> crate::outbox::Durability {
        use crate::outbox::Durability;
        match self.sync {
            OutboxSync::Never => Durability::Never,
            OutboxSync::Interval => Durability::Interval(std::time::Duration::from_millis(self.sync_interval_ms)),
            OutboxSync::Always => Durability::Always,
        }
    }
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings { max_mb: 64, segment_kb: 1024, sync: OutboxSync::Interval, sync_interval_ms: 1000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Names this device in every MQTT topic. Defaults to the host name.
    pub device_id: String,
    /// Where model folders (each with a `manifest.toml`) are found.
    pub models_dir: Option<PathBuf>,
    /// Writable state (model updates, outbox).
    pub state_dir: PathBuf,
    /// Hard deadline for a graceful stop, in seconds; keep it below systemd's `TimeoutStopSec`.
    pub shutdown_timeout_secs: f64,
    /// How often per-pipeline statistics are published, in seconds.
    pub stats_interval_secs: f64,
    /// Serve Prometheus metrics on this address (e.g. `127.0.0.1:9898`); off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            device_id: default_device_id(),
            models_dir: None,
            state_dir: PathBuf::from("/var/lib/edge-agent"),
            shutdown_timeout_secs: 20.0,
            stats_interval_secs: 30.0,
            metrics_listen: None,
        }
    }
}

fn default_device_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "edge-agent".into())
}

/// One pipeline: a source, a chain of stages, and sinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub stages: Vec<StageConfig>,
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkConfig>,
    /// Threads for one inference (tract splits its matrix products across them). Pipelines
    /// already run in parallel, one inference thread each; raise this on a board with idle
    /// cores and one heavy pipeline.
    #[serde(default = "one_thread")]
    pub threads: usize,
    /// How a detect pipeline's detections become tracked objects and events.
    #[serde(default)]
    pub objects: ObjectsConfig,
    /// Named areas of the frame whose objects are counted.
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneConfig>,
}

impl PipelineConfig {
    /// The detect stage, when the pipeline has one.
    pub fn detect_stage(&self) -> Option<&DetectStage> {
        self.stages.iter().find_map(|s| if let StageConfig::Detect(d) = s { Some(d) } else { None })
    }

    /// Whether this pipeline tracks objects: a frame pipeline with a detect stage whose
    /// `objects.enabled` is on (by default for cameras).
    pub fn tracks_objects(&self) -> bool {
        self.detect_stage().is_some() && self.objects.enabled_for(self.source.is_camera())
    }
}

fn one_thread() -> usize {
    1
}

/// The sinks a pipeline gets when it names none: MQTT.
pub(crate) fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Mqtt(Default::default())]
}

/// Where frames come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Still images: one file, a folder, or a glob pattern, in name order.
    Images {
        path: String,
        /// Frames per second. Unset: as fast as the pipeline takes them, losing none.
        /// Set: a paced, live-like source whose link keeps the latest frame.
        fps: Option<f64>,
        /// Start again at the first image after the last one.
        #[serde(default)]
        r#loop: bool,
    },
    /// A V4L2 camera (build with `--features camera`).
    Camera {
        /// `/dev/videoN` index.
        #[serde(default)]
        index: u32,
        #[serde(default = "default_cam_width")]
        width: u32,
        #[serde(default = "default_cam_height")]
        height: u32,
        #[serde(default = "default_cam_fps")]
        fps: u32,
    },
    /// An IP camera over RTSP, decoded by an ffmpeg (or GStreamer) child.
    Rtsp(super::stream_sources::RtspSource),
    /// A Raspberry Pi CSI camera through libcamera's `rpicam-vid`.
    Libcamera(super::stream_sources::LibcameraSource),
    /// Any program writing raw video or MJPEG to its stdout.
    Command(super::stream_sources::CommandSource),
    /// A microphone (cpal): any rate and channel count, converted to 16 kHz mono.
    Microphone {
        /// Device name as `edge-agent devices` lists it; the default input when unset.
        device: Option<String>,
        /// Audio that may wait for the pipeline before blocks are dropped (and counted).
        #[serde(default = "default_mic_buffer")]
        buffer_secs: f64,
        /// Capture at this rate (Hz) instead of the device's default, when it offers it.
        sample_rate: Option<u32>,
        /// Capture this many channels instead of the device's default, when it offers it.
        channels: Option<u16>,
    },
    /// WAV files: one file, a folder (its `*.wav` in name order) or a glob pattern.
    Wav {
        path: String,
        /// Deliver at the speed of sound (like a microphone) instead of as fast as possible.
        #[serde(default)]
        realtime: bool,
        #[serde(default)]
        r#loop: bool,
    },
}

impl SourceConfig {
    /// A camera's frame size, when the config says it.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        match self {
            SourceConfig::Camera { width, height, .. } => Some((*width, *height)),
            SourceConfig::Rtsp(r) => Some((r.width, r.height)),
            SourceConfig::Libcamera(l) => Some((l.width, l.height)),
            SourceConfig::Command(c) => match c.format {
                edge_core::source::stream::StreamFormat::Rawvideo { width, height, .. } => Some((width, height)),
                edge_core::source::stream::StreamFormat::Mjpeg => None,
            },
            _ => None,
        }
    }

    /// Whether the source is a live camera (V4L2, RTSP, CSI, or a program's stream): its
    /// detections are tracked as objects by default, and per-frame results are not published.
    pub fn is_camera(&self) -> bool {
        matches!(
            self,
            SourceConfig::Camera { .. } | SourceConfig::Rtsp(_) | SourceConfig::Libcamera(_) | SourceConfig::Command(_)
        )
    }

    /// Whether the source delivers audio (and needs audio stages).
    pub fn is_audio(&self) -> bool {
        matches!(self, SourceConfig::Microphone { .. } | SourceConfig::Wav { .. })
    }
}

fn default_mic_buffer() -> f64 {
    2.0
}

fn default_cam_width() -> u32 {
    1280
}
fn default_cam_height() -> u32 {
    720
}
fn default_cam_fps() -> u32 {
    15
}

/// A processing stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    Detect(DetectStage),
    Classify(ClassifyStage),
    Vad(VadStage),
    Transcribe(TranscribeStage),
}

/// Classification: a backbone's embedding scored by a replaceable head, on the whole frame or,
/// after a `detect` stage, on each detected box.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyStage {
    /// The backbone (a model with `task = "embedding"`).
    #[serde(default = "default_backbone")]
    pub model: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// The head the slot starts with, one of the backbone's shipped heads.
    #[serde(default = "default_head")]
    pub head: String,
    /// The name updates address (`.../models/<slot>/update`); defaults to the pipeline's name.
    pub slot: Option<String>,
    /// Labels published per classification, best first.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// After `detect`: classify only boxes with these labels (empty: every box).
    #[serde(default)]
    pub on: Vec<String>,
}

fn default_backbone() -> String {
    "efficientnet-lite0".into()
}
fn default_head() -> String {
    "imagenet".into()
}
fn default_top_k() -> usize {
    5
}

impl ClassifyStage {
    pub fn slot_name(&self, pipeline: &str) -> String {
        self.slot.clone().unwrap_or_else(|| pipeline.to_string())
    }
}

/// Cuts audio into utterances with a voice activity model; only speech reaches `transcribe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadStage {
    pub model: String,
    /// Speech probability that starts speech, in (0, 1).
    pub threshold: f32,
    /// Less voiced audio than this is not an utterance (clicks, coughs), in ms.
    pub min_speech_ms: u32,
    /// Silence that ends an utterance (the hangover), in ms.
    pub min_silence_ms: u32,
    /// Audio kept before and after the speech, in ms.
    pub pad_ms: u32,
    /// Longer speech is cut at its quietest point; at most 30 s (Whisper's window).
    pub max_utterance_secs: f32,
    /// Also publish `speech_start` events when speech begins.
    pub events: bool,
}

impl Default for VadStage {
    fn default() -> Self {
        VadStage {
            model: "silero-vad".into(),
            threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 600,
            pad_ms: 400,
            max_utterance_secs: 30.0,
            events: false,
        }
    }
}

/// Speech to text on each utterance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscribeStage {
    #[serde(default = "default_asr_model")]
    pub model: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Fixed to English: the shipped model is English-only (tiny.en).
    #[serde(default = "default_language")]
    pub language: String,
    /// What the encoder runs on: a window `sized` to the utterance (5, 10, 20 or 30 s; an
    /// answer that does not end cleanly is redone on 30 s) or always the `full` 30 s.
    #[serde(default)]
    pub window: EncoderWindow,
}

/// See [`TranscribeStage::window`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderWindow {
    #[default]
    Sized,
    Full,
}

fn default_asr_model() -> String {
    "whisper-tiny-en".into()
}
fn default_language() -> String {
    "en".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectStage {
    pub model: String,
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Minimum score of a detection, in (0, 1). Defaults to the model's own.
    pub threshold: Option<f32>,
    /// IoU above which the lower-scoring box of one class is suppressed.
    #[serde(default = "default_nms_iou")]
    pub nms_iou: f32,
    /// Keep only these labels (empty: all).
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
    #[serde(default)]
    pub tiling: Tiling,
}

fn default_precision() -> Precision {
    Precision::Int8
}
fn default_nms_iou() -> f32 {
    DetectSettings::default().nms_iou
}
fn default_max_detections() -> usize {
    DetectSettings::default().max_detections
}

impl DetectStage {
    /// What the detector does with the model's outputs.
    pub fn settings(&self) -> DetectSettings {
        DetectSettings {
            threshold: self.threshold,
            nms_iou: self.nms_iou,
            classes: self.classes.clone(),
            max_detections: self.max_detections,
            tiling: self.tiling,
        }
    }

    /// A stage of `model` with every default (what `detect` and the demo start from).
    pub fn defaults(model: &str, precision: Precision) -> DetectStage {
        let d = DetectSettings::default();
        DetectStage {
            model: model.to_string(),
            precision,
            threshold: d.threshold,
            nms_iou: d.nms_iou,
            classes: d.classes,
            max_detections: d.max_detections,
            tiling: d.tiling,
        }
    }
}

impl VadStage {
    /// The segmenter's settings in samples (from milliseconds and seconds).
    pub fn segmenter(&self) -> SegmenterConfig {
        let ms = |m: u32| (m as usize) * SAMPLE_RATE as usize / 1000;
        SegmenterConfig {
            threshold: self.threshold,
            min_speech: ms(self.min_speech_ms),
            min_silence: ms(self.min_silence_ms),
            pad: ms(self.pad_ms),
            max_utterance: (self.max_utterance_secs.clamp(1.0, 30.0) * SAMPLE_RATE as f32) as usize,
        }
    }
}
