//! The stdout sink: one JSON line per event (the MQTT payload's bytes) on standard output,
//! for a shell pipe or a container's log collector.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Sink, SinkContext, SinkError};
use crate::event::Event;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Write only frames with at least one detection (or label, or word).
    #[serde(default)]
    pub skip_empty: bool,
}

pub struct StdoutSink {
    skip_empty: bool,
    device: String,
}

impl StdoutSink {
    pub fn new(c: &StdoutSinkConfig, ctx: &SinkContext) -> StdoutSink {
        StdoutSink { skip_empty: c.skip_empty, device: ctx.device.clone() }
    }
}

impl Sink for StdoutSink {
    fn send(&self, event: &Event) -> Result<(), SinkError> {
        if self.skip_empty && event.is_empty() {
            return Ok(());
        }
        let line = super::json_line(&self.device, event)?;
        // one write of the whole line under the lock: lines of several pipelines never interleave
        let mut out = std::io::stdout().lock();
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|source| SinkError::Io { sink: "stdout".into(), source })
    }
}
