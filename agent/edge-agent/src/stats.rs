//! Per-pipeline counters, shared between a pipeline's threads and the stats publisher.
//! Counters are atomics; the latency window is a small `std::sync::Mutex` (never held
//! across an await or a blocking call, only to push or copy a few floats).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// How many recent inference times the percentiles are computed over.
const WINDOW: usize = 256;

#[derive(Debug)]
pub struct PipelineStats {
    pub frames_in: AtomicU64,
    pub frames_done: AtomicU64,
    pub results: AtomicU64,
    pub errors: AtomicU64,
    /// Whether the source is open and delivering (false while a camera is being reopened).
    pub source_up: AtomicBool,
    /// Frames the capture link dropped to keep the latest.
    pub dropped: Arc<AtomicU64>,
    /// Audio samples a microphone's ring dropped because the pipeline fell behind.
    pub overrun_samples: Option<Arc<AtomicU64>>,
    latencies_ms: Mutex<VecDeque<f32>>,
    /// Frames through the object tracker, and the nanoseconds it took over them.
    tracked_frames: AtomicU64,
    tracking_ns: AtomicU64,
    /// Frames decoded on the source's thread, and the nanoseconds it took.
    decoded_frames: AtomicU64,
    decode_ns: AtomicU64,
    started: Instant,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsSnapshot {
    pub source_up: bool,
    pub frames_in: u64,
    pub frames_done: u64,
    pub results: u64,
    pub dropped: u64,
    /// Microphone pipelines only: samples lost because the pipeline fell behind the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrun_samples: Option<u64>,
    pub errors: u64,
    pub fps: f64,
    pub inference_ms_p50: Option<f32>,
    pub inference_ms_p95: Option<f32>,
    /// Detect pipelines with objects on: mean tracker time per frame (events and snapshots
    /// included), microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_us: Option<f64>,
    /// Frame sources that decode (JPEG files, MJPEG cameras and streams): mean decoding time
    /// per frame on the source's thread, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f64>,
}

impl PipelineStats {
    pub fn new(dropped: Arc<AtomicU64>) -> PipelineStats {
        PipelineStats {
            frames_in: AtomicU64::new(0),
            frames_done: AtomicU64::new(0),
            results: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            source_up: AtomicBool::new(false),
            dropped,
            overrun_samples: None,
            latencies_ms: Mutex::new(VecDeque::with_capacity(WINDOW)),
            tracked_frames: AtomicU64::new(0),
            tracking_ns: AtomicU64::new(0),
            decoded_frames: AtomicU64::new(0),
            decode_ns: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn record_inference(&self, ms: f32) {
        self.frames_done.fetch_add(1, Ordering::Relaxed);
        self.record_latency(ms);
    }

    /// One frame's time in the object tracker.
    pub fn record_tracking(&self, took: std::time::Duration) {
        self.tracked_frames.fetch_add(1, Ordering::Relaxed);
        self.tracking_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// One frame's decoding time on the source's thread (nothing for frames that needed none).
    pub fn record_decode(&self, took: std::time::Duration) {
        if !took.is_zero() {
            self.decoded_frames.fetch_add(1, Ordering::Relaxed);
            self.decode_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// A model run's time, without a frame finishing (audio: one utterance of many blocks).
    pub fn record_latency(&self, ms: f32) {
        let mut w = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() == WINDOW {
            w.pop_front();
        }
        w.push_back(ms);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut lat: Vec<f32> = self.latencies_ms.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        lat.sort_by(f32::total_cmp);
        let pct = |p: f32| {
            (!lat.is_empty()).then(|| (lat[((lat.len() - 1) as f32 * p).round() as usize] * 100.0).round() / 100.0)
        };
        let done = self.frames_done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        StatsSnapshot {
            source_up: self.source_up.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_done: done,
            results: self.results.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            overrun_samples: self.overrun_samples.as_ref().map(|o| o.load(Ordering::Relaxed)),
            errors: self.errors.load(Ordering::Relaxed),
            fps: (done as f64 / secs * 100.0).round() / 100.0,
            inference_ms_p50: pct(0.5),
            inference_ms_p95: pct(0.95),
            tracking_us: match self.tracked_frames.load(Ordering::Relaxed) {
                0 => None,
                n => Some((self.tracking_ns.load(Ordering::Relaxed) as f64 / n as f64 / 10.0).round() / 100.0),
            },
            decode_ms: match self.decoded_frames.load(Ordering::Relaxed) {
                0 => None,
                n => Some((self.decode_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e4).round() / 100.0),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_window() {
        let s = PipelineStats::new(Arc::new(AtomicU64::new(2)));
        assert_eq!(s.snapshot().inference_ms_p50, None);
        for i in 1..=100 {
            s.record_inference(i as f32);
        }
        let snap = s.snapshot();
        assert_eq!(snap.frames_done, 100);
        assert_eq!(snap.dropped, 2);
        assert_eq!(snap.inference_ms_p50, Some(51.0));
        assert_eq!(snap.inference_ms_p95, Some(95.0));
    }
}
