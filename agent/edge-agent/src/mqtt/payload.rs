//! The agent's own state published over MQTT: the retained stats message. Results' schemas
//! are the sinks' (`crate::sink::json`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::StatsSnapshot;

pub use crate::event::timestamp;

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
