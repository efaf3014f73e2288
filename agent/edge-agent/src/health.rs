//! The agent's health: per-pipeline counters, the outbox, the broker link, and the process
//! (uptime, resident memory, CPU temperature where `/sys/class/thermal` has it). Published as
//! the retained stats message, as Prometheus metrics (`metrics.rs`) and on the status page.

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
