//! Sinks: where a pipeline's events go. A sink owns serialisation and transport; pipelines
//! hand every event to their [`Sinks`] and know nothing of topics, files or JSON.
//!
//! The set of sinks is closed: a sink is one variant of [`SinkConfig`] (its settings, with
//! `#[serde(tag = "type")]`), one arm in [`SinkConfig::build`] and [`SinkConfig::check`], and one file
//! here that implements [`Sink`]. Nothing else changes to add one (`jsonl.rs` was added that
//! way). Sinks are called on the pipeline's own threads (the post thread of a frame pipeline,
//! the VAD and ASR threads of an audio one), so [`Sink::send`] may block, which is the
//! backpressure: the MQTT sink blocks when the results channel is full.

pub mod json;
mod jsonl;
mod mqtt;
pub mod objects_json;
mod page;
mod stdout;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::event::Event;
use crate::mqtt::{Outgoing, Topics};
use crate::stats::PipelineStats;
use edge_core::source::Frame;

/// Where results go: `sinks = [{ type = "mqtt" }, { type = "jsonl", path = "..." }]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// The broker, on `<prefix>/<device>/<kind>/<pipeline>` (QoS 1, spilled to the disk outbox
    /// while the broker is away).
    Mqtt(mqtt::MqttSinkConfig),
    /// One JSON line per event on standard output.
    Stdout(stdout::StdoutSinkConfig),
    /// One JSON line per event appended to a file, rotated by size.
    Jsonl(jsonl::JsonlSinkConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The event could not be serialised: counted and logged, the pipeline goes on.
    #[error("serialising a {kind} event: {source}")]
    Serialize { kind: &'static str, source: serde_json::Error },
    /// Writing failed: counted and logged, the pipeline goes on.
    #[error("{sink}: {source}")]
    Io { sink: String, source: std::io::Error },
    /// The sink's consumer is gone (the agent is stopping): the pipeline stops.
    #[error("{0} closed")]
    Closed(&'static str),
}

/// What sinks are built with: the device's identity and the agent's shared outputs.
#[derive(Clone)]
pub struct SinkContext {
    pub device: String,
    pub topics: Topics,
    /// The publisher's input (bounded; it spills to the outbox when the broker is away).
    pub results: mpsc::Sender<Outgoing>,
    /// Relative file paths of sinks are resolved against this folder (the state folder).
    pub base_dir: PathBuf,
    /// Whether the pipeline being built reads a camera (whose per-frame results the MQTT
    /// sink leaves out unless `per_frame = true`: its tracked objects say what matters).
    pub camera: bool,
    /// The status page's state, when `[web]` is on: every pipeline also gets a page sink.
    pub view: Option<Arc<crate::view::Hub>>,
}

/// One sink of one pipeline. `send` is called from the pipeline's threads.
pub trait Sink: Send + Sync {
    fn send(&self, event: &Event) -> Result<(), SinkError>;

    /// What the pipeline sees besides its events; only sinks that show it live (the status
    /// page) look. Called on the pipeline's threads: it must be cheap and never block.
    fn observe(&self, _seen: &Observation<'_>) {}
}

/// What a pipeline sees besides its events.
pub enum Observation<'a> {
    /// A frame and the result made from it (before the result is sent).
    Frame(&'a Frame, &'a Event),
    /// The voice probability of the latest chunk of audio (32 ms).
    VoiceLevel(f32),
    /// Speech began (true) or ended (false), whether or not the pipeline sends speech events.
    Speaking(bool),
}

impl SinkConfig {
    /// Checks the settings, collecting every problem with its path (`pipelines.x.sinks[1].path`).
    pub fn check(&self, path: &str, problems: &mut Vec<(String, String)>) {
        match self {
            SinkConfig::Mqtt(_) | SinkConfig::Stdout(_) => {}
            SinkConfig::Jsonl(c) => c.check(path, problems),
        }
    }

    /// Opens the sink.
    pub fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Mqtt(c) => Box::new(mqtt::MqttSink::new(c, ctx)),
            SinkConfig::Stdout(c) => Box::new(stdout::StdoutSink::new(c, ctx)),
            SinkConfig::Jsonl(c) => Box::new(jsonl::JsonlSink::open(c, ctx)?),
        })
    }
}

/// A pipeline's sinks: every event goes to each in turn.
pub struct Sinks {
    pipeline: String,
    sinks: Vec<Box<dyn Sink>>,
}

impl Sinks {
    pub fn build(pipeline: &str, configs: &[SinkConfig], ctx: &SinkContext) -> Result<Sinks, SinkError> {
        let mut sinks: Vec<Box<dyn Sink>> = configs.iter().map(|c| c.build(ctx)).collect::<Result<_, _>>()?;
        if let Some(view) = &ctx.view
            && let Some(page) = page::PageSink::new(view.clone(), pipeline, &ctx.device)
        {
            sinks.push(Box::new(page));
        }
        Ok(Sinks { pipeline: pipeline.to_string(), sinks })
    }

    /// Shows `seen` to the sinks that look (the status page).
    pub fn observe(&self, seen: &Observation<'_>) {
        for sink in &self.sinks {
            sink.observe(seen);
        }
    }

    /// Hands `event` to every sink. A failed serialisation or write is counted in the
    /// pipeline's `errors` and logged; the other sinks still get the event. Returns false when
    /// a sink's consumer is gone, which stops the pipeline.
    pub fn send(&self, event: &Event, stats: &PipelineStats) -> bool {
        let mut open = true;
        for sink in &self.sinks {
            match sink.send(event) {
                Ok(()) => {}
                Err(SinkError::Closed(what)) => {
                    tracing::warn!(pipeline = %self.pipeline, "{what} closed; stopping");
                    open = false;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(pipeline = %self.pipeline, seq = event.seq(), error = %e, "sink failed");
                }
            }
        }
        open
    }
}

/// The kind of an event, as error messages name it.
pub(crate) fn kind(event: &Event) -> &'static str {
    match event {
        Event::Detections(_) => "detections",
        Event::Classification(_) => "classification",
        Event::Transcript(_) => "transcript",
        Event::Speech(_) => "speech",
        Event::Object(_) => "object",
        Event::Count(_) => "count",
        Event::Snapshot(_) => "snapshot",
    }
}

/// The event's JSON line (the schema of [`json`], a newline after it).
pub(crate) fn json_line(device: &str, event: &Event) -> Result<Vec<u8>, SinkError> {
    let mut line = json::to_vec(device, event).map_err(|source| SinkError::Serialize { kind: kind(event), source })?;
    line.push(b'\n');
    Ok(line)
}

/// `path` resolved against `base` when relative.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}
