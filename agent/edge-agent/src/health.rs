//! The agent's health: per-pipeline counters, the outbox, the broker link, and the process
//! (uptime, resident memory, CPU temperature where `/sys/class/thermal` has it). Published as
//! the retained stats message and, optionally, as Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use serde::Serialize;

use crate::event::timestamp;
use crate::outbox::OutboxStats;
use crate::stats::PipelineStats;
use crate::stats::StatsSnapshot;

pub struct Health {
    pub device: String,
    pub started: Instant,
    pub pipelines: BTreeMap<String, Arc<PipelineStats>>,
    pub outbox: Arc<Mutex<OutboxStats>>,
    pub connected: watch::Receiver<bool>,
}

impl Health {
    pub fn message(&self) -> StatsMessage {
        StatsMessage {
            schema: STATS_SCHEMA,
            timestamp: timestamp(SystemTime::now()),
            device: self.device.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            broker_connected: *self.connected.borrow(),
            rss_bytes: rss_bytes(),
            cpu_temp_c: cpu_temp_c(),
            pipelines: self.pipelines.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect(),
            // a plain mutex held only to copy a small struct
            outbox: *self.outbox.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// The same figures in Prometheus' text format.
    pub fn prometheus(&self) -> String {
        let m = self.message();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
            // appending to a String cannot fail
            out.push_str(&format!("# HELP edge_agent_{name} {help}\n# TYPE edge_agent_{name} {kind}\n"));
            for (labels, v) in samples {
                out.push_str(&format!("edge_agent_{name}{labels} {v}\n"));
            }
        };
        let per = |f: &dyn Fn(&crate::stats::StatsSnapshot) -> Option<f64>| -> Vec<(String, f64)> {
            m.pipelines.iter().filter_map(|(k, s)| Some((format!("{{pipeline=\"{k}\"}}"), f(s)?))).collect()
        };
        gauge(
            "uptime_seconds",
            "Seconds since the agent started.",
            "gauge",
            vec![(String::new(), m.uptime_secs as f64)],
        );
        gauge(
            "broker_connected",
            "1 when the MQTT broker is connected.",
            "gauge",
            vec![(String::new(), f64::from(u8::from(m.broker_connected)))],
        );
        if let Some(rss) = m.rss_bytes {
            gauge("resident_memory_bytes", "Resident set size.", "gauge", vec![(String::new(), rss as f64)]);
        }
        if let Some(t) = m.cpu_temp_c {
            gauge("cpu_temperature_celsius", "Hottest thermal zone.", "gauge", vec![(String::new(), t)]);
        }
        gauge("frames_in_total", "Frames captured.", "counter", per(&|s| Some(s.frames_in as f64)));
        gauge("frames_done_total", "Frames through inference.", "counter", per(&|s| Some(s.frames_done as f64)));
        gauge(
            "frames_dropped_total",
            "Frames a live source replaced before inference took them.",
            "counter",
            per(&|s| Some(s.dropped as f64)),
        );
        gauge("errors_total", "Frame and source errors.", "counter", per(&|s| Some(s.errors as f64)));
        gauge("source_up", "1 while the source delivers.", "gauge", per(&|s| Some(f64::from(u8::from(s.source_up)))));
        gauge(
            "inference_ms_p50",
            "Median inference time over the recent window.",
            "gauge",
            per(&|s| s.inference_ms_p50.map(f64::from)),
        );
        gauge(
            "inference_ms_p95",
            "95th percentile inference time over the recent window.",
            "gauge",
            per(&|s| s.inference_ms_p95.map(f64::from)),
        );
        let o = m.outbox;
        gauge("outbox_messages", "Results waiting on disk.", "gauge", vec![(String::new(), o.messages as f64)]);
        gauge("outbox_bytes", "Bytes waiting on disk.", "gauge", vec![(String::new(), o.bytes as f64)]);
        gauge(
            "outbox_dropped_total",
            "Results dropped because the outbox was full.",
            "counter",
            vec![(String::new(), o.dropped as f64)],
        );
        out
    }
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The hottest thermal zone in °C, where the kernel exposes one.
pub fn cpu_temp_c() -> Option<f64> {
    let zones = std::fs::read_dir("/sys/class/thermal").ok()?;
    zones
        .filter_map(|z| z.ok())
        .filter(|z| z.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|z| std::fs::read_to_string(z.path().join("temp")).ok()?.trim().parse::<f64>().ok())
        .map(|milli| milli / 1000.0)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_read() {
        let rss = super::rss_bytes().unwrap();
        assert!(rss > 1 << 20 && rss < 64 << 30, "{rss}");
    }
}

pub const STATS_SCHEMA: &str = "edge-agent.stats.v1";

/// `<prefix>/<device>/stats` (retained)
#[derive(Debug, Clone, Serialize)]
pub struct StatsMessage {
    pub schema: &'static str,
    pub timestamp: String,
    pub device: String,
    pub uptime_secs: u64,
    pub broker_connected: bool,
    pub rss_bytes: Option<u64>,
    pub cpu_temp_c: Option<f64>,
    pub pipelines: BTreeMap<String, StatsSnapshot>,
    pub outbox: crate::outbox::OutboxStats,
}
