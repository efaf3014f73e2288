//! The agent end to end: one pipeline going round copies of a bundled photo (each decoded
//! afresh), through the real stages and publisher to an in-process broker, timed by a
//! subscriber at the far side over `runs` results (at least [`MIN_FRAMES`], and enough for
//! [`MIN_SPAN_MS`] of results) after a warm-up.
//! Twice per round: from the JPEG, and from the same photo as raw RGB frames (PPM), as a camera
//! that delivers raw frames feeds the agent. Decoding a JPEG can cost more than a small
//! model's inference; the second figure is what the agent itself adds.
//! The interval between results, in steady state, is what a device delivers per frame; comparing
//! it with raw inference shows what everything around the model costs. The pipeline runs
//! [`ROUNDS`] times, with raw inference of the same model timed in the same process before
//! each round and after the last, so both are measured over the same stretch of time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};

use super::{Options, Target};
use crate::config::{
    AgentSettings, ClassifyStage, Config, DetectStage, MqttSettings, PipelineConfig, Precision, SinkConfig,
    SourceConfig, StageConfig, Tiling,
};
use edge_core::model::{Catalog, Task};

/// Pipeline runs in one measurement, each between two batches of raw inference.
pub const ROUNDS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndToEnd {
    /// Frames per round.
    pub frames: usize,
    pub rounds: usize,
    /// (last result - first result) / (frames - 1): steady state, model loading excluded; the
    /// median over the rounds.
    pub ms_per_frame: f64,
    /// Median inference time the pipeline itself reported for those frames.
    pub inference_ms: f64,
    /// `ms_per_frame` with raw RGB frames (PPM files) in place of the JPEGs.
    pub raw_frames_ms_per_frame: f64,
    /// Raw inference time of the same model and precision in the same process, timed in
    /// batches between the rounds: each batch's mean, the median over the batches. Measured
    /// the way `ms_per_frame` is (a mean per round, the median over the rounds), so that the
    /// ratio compares throughput with throughput: a median of single runs would leave out the
    /// slow runs that the pipeline's mean includes.
    pub raw_ms: f64,
    /// The median of the single raw runs, for reference.
    pub raw_median_ms: f64,
    pub photo: String,
    pub peak_rss_mb: f64,
}

fn stage(model: &str, task: &Task, precision: Precision) -> StageConfig {
    match task {
        Task::Detection => {
            StageConfig::Detect(DetectStage { tiling: Tiling::None, ..DetectStage::defaults(model, precision) })
        }
        Task::Embedding => StageConfig::Classify(ClassifyStage {
            model: model.into(),
            precision,
            head: "imagenet".into(),
            slot: None,
            top_k: 5,
            on: vec![],
        }),
    }
}

/// [`ROUNDS`] rounds, each a [`run`] on the JPEGs and one on PPM frames, between batches of
/// `opts.runs` raw inferences of the same graph in this process.
pub fn interleaved(catalog: &Catalog, target: &Target, precision: Precision, opts: &Options) -> Result<EndToEnd> {
    // as the agent's runtime: its threads in the background class
    let rt = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(crate::sched::background_thread)
        .enable_all()
        .build()?;
    let mean = |batch: &[f64]| batch.iter().sum::<f64>() / batch.len().max(1) as f64;
    let mut raw = vec![super::time_here(target, &precision, opts)?];
    let frames = frames_for(opts.runs, mean(&raw[0]));
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut raw_frames = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        rounds.push(rt.block_on(run(catalog, &target.name, precision.clone(), frames, opts.threads, Frames::Jpeg))?);
        raw_frames.push(
            rt.block_on(run(catalog, &target.name, precision.clone(), frames, opts.threads, Frames::Ppm))?.ms_per_frame,
        );
        raw.push(super::time_here(target, &precision, opts)?);
    }
    let mut batch_means: Vec<f64> = raw.iter().map(|b| mean(b)).collect();
    let mut single: Vec<f64> = raw.concat();
    let median = |f: fn(&EndToEnd) -> f64| super::median_p90(&mut rounds.iter().map(f).collect::<Vec<_>>()).0;
    let (ms_per_frame, inference_ms) = (median(|e| e.ms_per_frame), median(|e| e.inference_ms));
    let last = rounds.pop().context("no rounds")?;
    Ok(EndToEnd {
        rounds: ROUNDS,
        ms_per_frame,
        inference_ms,
        raw_frames_ms_per_frame: super::median_p90(&mut raw_frames).0,
        raw_ms: super::median_p90(&mut batch_means).0,
        raw_median_ms: super::median_p90(&mut single).0,
        peak_rss_mb: super::peak_rss_mb(),
        ..last
    })
}

/// The one field of a result the subscriber reads.
#[derive(Deserialize)]
struct Timed {
    inference_ms: Option<f64>,
}

/// What the pipeline's source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// copies of the JPEG
    Jpeg,
    /// the JPEG decoded once and written as PPM: raw RGB, as a camera's frames
    Ppm,
}

/// Frames to time per round: `runs`, at least [`MIN_FRAMES`], and enough at `raw_ms` each
/// to last [`MIN_SPAN_MS`].
fn frames_for(runs: usize, raw_ms: f64) -> usize {
    let span = if raw_ms > 0.0 { (MIN_SPAN_MS / raw_ms).ceil() as usize } else { 0 };
    runs.max(MIN_FRAMES).max(span.min(MAX_FRAMES))
}

/// Runs the pipeline for `model` at `precision`, with tract on `threads` threads, over
/// `frames` frames (at least 2) and times the results.
pub async fn run(
    catalog: &Catalog,
    model: &str,
    precision: Precision,
    frames: usize,
    threads: usize,
    kind: Frames,
) -> Result<EndToEnd> {
    let entry = catalog.get(model).with_context(|| format!("no image model {model:?}"))?;
    let frames = frames.max(2);
    // copying the photos is file work: off the runtime's workers
    let (dir, frames_dir, photo) = tokio::task::spawn_blocking(move || copy_photos(PHOTOS, kind)).await??;
    // the photos go round until `frames` results have been timed after the first WARM_UP:
    // the first results may arrive in a burst (queued while the agent was still connecting
    // to the broker), which would make the interval look shorter than any frame takes
    let wanted = WARM_UP + frames;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();

    let port = edge_broker::free_port()?;
    tokio::task::spawn_blocking(move || edge_broker::start(port)).await??;
    let mut opts = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client.subscribe("edge-agent/bench/+/bench", QoS::AtLeastOnce).await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let listener = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut seen: Vec<(Instant, f64)> = Vec::new();
        while seen.len() < wanted {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready.take() {
                        tx.send(()).ok();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    // only the one field: a fast model's results come thousands a second, and
                    // this subscriber shares the cores with the agent it times
                    let ms = serde_json::from_slice::<Timed>(&p.payload).ok().and_then(|t| t.inference_ms);
                    seen.push((at, ms.unwrap_or(f64::NAN)));
                }
                Ok(_) => {}
                Err(e) => bail!("bench subscriber lost the broker: {e}"),
            }
        }
        // enough: the agent may stop
        done_tx.send(()).ok();
        Ok(seen)
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await.context("subscribing")??;

    let pipeline = PipelineConfig {
        source: SourceConfig::Images { path: frames_dir.display().to_string(), fps: None, r#loop: true },
        stages: vec![stage(model, &entry.manifest.task, precision)],
        sinks: vec![SinkConfig::Mqtt(Default::default())],
        threads,
        objects: Default::default(),
        zones: Default::default(),
    };
    let config = Config {
        agent: AgentSettings {
            device_id: "bench".into(),
            models_dir: Some(catalog.dir.clone()),
            state_dir: dir.path().join("state"),
            shutdown_timeout_secs: 20.0,
            stats_interval_secs: 3600.0,
            metrics_listen: None,
        },
        mqtt: MqttSettings { port, ..Default::default() },
        outbox: Default::default(),
        updates: Default::default(),
        homeassistant: Default::default(),
        web: Default::default(),
        pipelines: BTreeMap::from([("bench".to_string(), pipeline)]),
    };
    let timeout = Duration::from_secs(60);
    let stop = async move {
        // the listener's signal, or its end (a lost broker) or the time limit: whichever first
        tokio::time::timeout(timeout, done_rx).await.ok();
    };
    crate::app::serve(config, stop).await?;
    let seen = tokio::time::timeout(Duration::from_secs(5), listener).await.context("waiting for the results")???;
    ensure!(seen.len() >= wanted, "{} results of {wanted} within {timeout:?}", seen.len());
    let seen = &seen[WARM_UP..];
    let span = seen[seen.len() - 1].0.duration_since(seen[0].0).as_secs_f64() * 1e3;
    let mut inference: Vec<f64> = seen.iter().map(|s| s.1).filter(|x| x.is_finite()).collect();
    Ok(EndToEnd {
        frames,
        rounds: 1,
        ms_per_frame: span / (frames - 1) as f64,
        inference_ms: super::median_p90(&mut inference).0,
        raw_frames_ms_per_frame: f64::NAN,
        raw_ms: f64::NAN,
        raw_median_ms: f64::NAN,
        photo: photo.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
        peak_rss_mb: super::peak_rss_mb(),
    })
}

/// Copies of the photo the pipeline goes round (each decoded afresh, as a camera's frames).
const PHOTOS: usize = 8;

/// Fewest results timed: a fast model's 20 frames last about 15 ms, too short a span to time.
const MIN_FRAMES: usize = 100;

/// Shortest span of timed results in a round. 100 of BlazeFace's frames last 55 ms: such
/// rounds read from 0.98 to 1.14 × raw inference in two runs of one build; rounds of 2000
/// frames read 1.064–1.074 in three.
const MIN_SPAN_MS: f64 = 1000.0;

/// The most frames a round is made to last [`MIN_SPAN_MS`] with.
const MAX_FRAMES: usize = 5000;

/// Results left out of the timing at the start.
const WARM_UP: usize = 20;

/// A temporary folder with `frames` copies of the first bundled photo (as JPEG or PPM), and
/// that photo's path.
fn copy_photos(frames: usize, kind: Frames) -> Result<(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf)> {
    let samples = crate::demo::samples_dir();
    let mut photos: Vec<_> = std::fs::read_dir(&samples)
        .with_context(|| format!("reading the bundled photos in {}", samples.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    let photo = photos.first().with_context(|| format!("no .jpg in {}", samples.display()))?.clone();
    let dir = tempfile::tempdir()?;
    let frames_dir = dir.path().join("frames");
    std::fs::create_dir(&frames_dir)?;
    match kind {
        Frames::Jpeg => {
            for i in 0..frames {
                std::fs::copy(&photo, frames_dir.join(format!("{i:05}.jpg")))?;
            }
        }
        Frames::Ppm => {
            let rgb = edge_core::source::decode_image_file(&photo)?;
            for i in 0..frames {
                edge_core::source::save_ppm(&rgb, &frames_dir.join(format!("{i:05}.ppm")))?;
            }
        }
    }
    Ok((dir, frames_dir, photo))
}
