//! The JSON-lines sink: one JSON line per event (the MQTT payload's bytes) appended to a
//! file, rotated by size like a log: when the next line would take the file past `max_mb`,
//! `events.jsonl` becomes `events.jsonl.1` (`.1` becomes `.2`, …, the oldest beyond `keep`
//! is deleted) and a new file starts. A relative path is under the state folder.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Sink, SinkContext, SinkError};
use crate::event::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// The file; relative paths are under `agent.state_dir`.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many MiB.
    #[serde(default = "default_max_mb")]
    pub max_mb: f64,
    /// Rotated files kept (`<path>.1` newest … `<path>.<keep>`); 0 keeps none.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Write only frames with at least one detection (or label, or word).
    #[serde(default)]
    pub skip_empty: bool,
}

fn default_max_mb() -> f64 {
    16.0
}
fn default_keep() -> u32 {
    3
}

impl JsonlSinkConfig {
    pub fn check(&self, path: &str, problems: &mut Vec<(String, String)>) {
        if !(self.max_mb > 0.0 && self.max_mb <= 1_048_576.0) {
            problems.push((format!("{path}.max_mb"), format!("must be in (0, 1048576], got {}", self.max_mb)));
        }
        if self.path.as_os_str().is_empty() || self.path.file_name().is_none() {
            problems.push((format!("{path}.path"), "must name a file".into()));
        }
        if self.keep > 1000 {
            problems.push((format!("{path}.keep"), format!("must be at most 1000, got {}", self.keep)));
        }
    }
}

struct Open {
    file: File,
    size: u64,
}

pub struct JsonlSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    skip_empty: bool,
    device: String,
    /// Held only while one line is written (and the file maybe rotated); nothing awaits under it.
    file: Mutex<Open>,
}

impl JsonlSink {
    pub fn open(c: &JsonlSinkConfig, ctx: &SinkContext) -> Result<JsonlSink, SinkError> {
        let path = super::resolve(&ctx.base_dir, &c.path);
        let io = |source| SinkError::Io { sink: format!("jsonl {}", path.display()), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = append(&path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(JsonlSink {
            max_bytes: (c.max_mb * 1024.0 * 1024.0) as u64,
            keep: c.keep,
            skip_empty: c.skip_empty,
            device: ctx.device.clone(),
            file: Mutex::new(Open { file, size }),
            path,
        })
    }

    /// Shifts `<path>.N` up by one (dropping the oldest), moves the live file to `.1` and
    /// starts an empty one.
    fn rotate(&self, open: &mut Open) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            match std::fs::remove_file(numbered(self.keep)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            for n in (1..self.keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        *open = Open { file: append(&self.path)?, size: 0 };
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Sink for JsonlSink {
    fn send(&self, event: &Event) -> Result<(), SinkError> {
        if self.skip_empty && event.is_empty() {
            return Ok(());
        }
        let line = super::json_line(&self.device, event)?;
        let io = |source| SinkError::Io { sink: format!("jsonl {}", self.path.display()), source };
        // a poisoned lock only means another thread panicked mid-write: the file is still usable
        let mut open = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if open.size > 0 && open.size + line.len() as u64 > self.max_bytes {
            self.rotate(&mut open).map_err(io)?;
        }
        open.file.write_all(&line).map_err(io)?;
        open.size += line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{SpeechEdge, SpeechEvent};

    fn event(seq: u64) -> Event {
        Event::Speech(SpeechEvent {
            pipeline: "p".into(),
            seq,
            edge: SpeechEdge::Start,
            utterance_id: seq,
            at: std::time::UNIX_EPOCH,
            offset: seq as f64,
            model: "silero-vad".into(),
        })
    }

    fn ctx(dir: &Path) -> SinkContext {
        let (results, _) = tokio::sync::mpsc::channel(1);
        SinkContext {
            device: "d".into(),
            topics: crate::mqtt::Topics::new("edge-agent", "d"),
            results,
            base_dir: dir.to_path_buf(),
            camera: false,
            view: None,
        }
    }

    #[test]
    fn rotates_by_size_keeping_the_newest_files_and_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = crate::sink::json_line("d", &event(0)).unwrap().len() as f64;
        // room for three lines per file, two rotated files kept
        let c = JsonlSinkConfig {
            path: "logs/e.jsonl".into(),
            max_mb: 3.5 * line_len / 1024.0 / 1024.0,
            keep: 2,
            skip_empty: false,
        };
        let sink = JsonlSink::open(&c, &ctx(dir.path())).unwrap();
        for seq in 0..10 {
            sink.send(&event(seq)).unwrap();
        }
        let seqs = |name: &str| -> Vec<u64> {
            std::fs::read_to_string(dir.path().join("logs").join(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["utterance_id"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(seqs("e.jsonl"), [9]);
        assert_eq!(seqs("e.jsonl.1"), [6, 7, 8]);
        assert_eq!(seqs("e.jsonl.2"), [3, 4, 5]);
        assert!(!dir.path().join("logs/e.jsonl.3").exists(), "the oldest beyond `keep` is deleted");

        // reopening appends after what is there
        drop(sink);
        let sink = JsonlSink::open(&c, &ctx(dir.path())).unwrap();
        sink.send(&event(10)).unwrap();
        assert_eq!(seqs("e.jsonl"), [9, 10]);
    }

    #[test]
    fn checks_name_the_field() {
        let c = JsonlSinkConfig { path: "".into(), max_mb: -1.0, keep: 5000, skip_empty: false };
        let mut problems = Vec::new();
        c.check("pipelines.x.sinks[0]", &mut problems);
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["pipelines.x.sinks[0].max_mb", "pipelines.x.sinks[0].path", "pipelines.x.sinks[0].keep"]);
    }
}
