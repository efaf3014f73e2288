//! The agent's health as Prometheus metrics (`GET /metrics`, served by `web`). The exposition
//! is written by `prometheus-client` (the Prometheus project's Rust client) from a collector
//! that reads [`Health`] at each scrape; the sample names are the ones the agent always had
//! (`edge_agent_frames_in_total{pipeline="…"}`, …).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::health::Health;
use crate::stats::StatsSnapshot;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose one collector reads `health` at each scrape.
pub fn registry(health: Arc<Health>) -> Registry {
    let mut registry = Registry::with_prefix("edge_agent");
    registry.register_collector(Box::new(HealthCollector(health)));
    registry
}

/// The metrics in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

struct HealthCollector(Arc<Health>);

impl std::fmt::Debug for HealthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthCollector")
    }
}

type Fmt = Result<(), std::fmt::Error>;

/// One metric without labels.
fn single(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, kind: MetricType, v: f64) -> Fmt {
    let m = e.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(v).encode(m),
    }
}

/// One metric per pipeline (`pipeline="<name>"`); pipelines without a value are left out.
fn per_pipeline(
    e: &mut DescriptorEncoder<'_>,
    snapshots: &[(String, StatsSnapshot)],
    (name, help, kind): (&str, &str, MetricType),
    value: impl Fn(&StatsSnapshot) -> Option<f64>,
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (pipeline, s) in snapshots {
        let Some(v) = value(s) else { continue };
        let labels = [("pipeline", pipeline.as_str())];
        let family = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(family)?,
            _ => ConstGauge::new(v).encode(family)?,
        }
    }
    Ok(())
}

impl Collector for HealthCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Fmt {
        use MetricType::{Counter, Gauge};
        let m = self.0.message();
        single(&mut e, "uptime_seconds", "Seconds since the agent started.", Gauge, m.uptime_secs as f64)?;
        let connected = f64::from(u8::from(m.broker_connected));
        single(&mut e, "broker_connected", "1 when the MQTT broker is connected.", Gauge, connected)?;
        if let Some(rss) = m.rss_bytes {
            single(&mut e, "resident_memory_bytes", "Resident set size.", Gauge, rss as f64)?;
        }
        if let Some(t) = m.cpu_temp_c {
            single(&mut e, "cpu_temperature_celsius", "Hottest thermal zone.", Gauge, t)?;
        }
        let snaps: Vec<(String, StatsSnapshot)> = m.pipelines.into_iter().collect();
        let s = &snaps;
        per_pipeline(&mut e, s, ("frames_in", "Frames captured.", Counter), |s| Some(s.frames_in as f64))?;
        per_pipeline(&mut e, s, ("frames_done", "Frames through inference.", Counter), |s| Some(s.frames_done as f64))?;
        let dropped = ("frames_dropped", "Frames a live source replaced before inference took them.", Counter);
        per_pipeline(&mut e, s, dropped, |s| Some(s.dropped as f64))?;
        per_pipeline(&mut e, s, ("errors", "Frame and source errors.", Counter), |s| Some(s.errors as f64))?;
        let up = ("source_up", "1 while the source delivers.", Gauge);
        per_pipeline(&mut e, s, up, |s| Some(f64::from(u8::from(s.source_up))))?;
        let p50 = ("inference_ms_p50", "Median inference time over the recent window.", Gauge);
        per_pipeline(&mut e, s, p50, |s| s.inference_ms_p50.map(f64::from))?;
        let p95 = ("inference_ms_p95", "95th percentile inference time over the recent window.", Gauge);
        per_pipeline(&mut e, s, p95, |s| s.inference_ms_p95.map(f64::from))?;
        let decode = ("decode_ms", "Mean decoding time per frame on the source's thread.", Gauge);
        per_pipeline(&mut e, s, decode, |s| s.decode_ms)?;
        let o = m.outbox;
        single(&mut e, "outbox_messages", "Results waiting on disk.", Gauge, o.messages as f64)?;
        single(&mut e, "outbox_bytes", "Bytes waiting on disk.", Gauge, o.bytes as f64)?;
        let dropped = "Results dropped because the outbox was full.";
        single(&mut e, "outbox_dropped", dropped, Counter, o.dropped as f64)?;
        Ok(())
    }
}
