//! The disk outbox: results that could not be handed to the broker wait here, in order, in
//! checksummed segment files under `<state_dir>/outbox/`, until they can be replayed.
//!
//! * A record is `0xEA | len: u32 | crc32: u32 | body`, the body `retain: u8 | topic_len: u16 |
//!   topic | payload` (little endian).
//! * Records are appended to the newest segment; a segment is closed at `segment_bytes`.
//! * The total is capped at `max_bytes`: when a push would exceed it, the **oldest** segment is
//!   deleted and its messages are counted in `dropped`.
//! * Replay takes the oldest segment whole; it is deleted only when the caller confirms
//!   (`ack`), so a crash in between replays it again (at-least-once; consumers dedupe by the
//!   per-pipeline `seq`).
//! * A segment with a bad record is renamed `*.corrupt` (quarantined): the records before the
//!   damage are still replayed, the rest is counted in `quarantined`.
//! * Durability ([`Durability`]): what reaches the disk before a power cut. `always` syncs the
//!   segment after each record; `interval` at most once per interval while records are
//!   waiting to be synced (the publisher calls [`Outbox::flush_due`] on a timer); `never`
//!   leaves it to the kernel's writeback. A new segment's directory entry is synced with its
//!   first sync. Deletes are never synced: a delete lost to a power cut replays a segment twice.

mod segment;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mqtt::Outgoing;
use segment::Segment;
pub use segment::{decode_all, encode};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("message too large for the outbox ({0} bytes)")]
    TooLarge(usize),
}

/// When appended records are forced to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Left to the kernel (ext4 writes back within about 5–30 s).
    Never,
    /// At most once per interval while unsynced records wait.
    Interval(Duration),
    /// After every record.
    Always,
}

/// Counters a health report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    /// Messages waiting on disk.
    pub messages: u64,
    pub bytes: u64,
    /// Messages deleted because the cap was reached (oldest first).
    pub dropped: u64,
    /// Messages lost to corrupt segments.
    pub quarantined: u64,
    /// Messages written since start.
    pub spilled: u64,
    /// Messages handed back for replay since start.
    pub replayed: u64,
    /// Syncs to the disk since start (each is a flash write; see `outbox.sync`).
    pub syncs: u64,
}

pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is open for appending.
    segments: VecDeque<Segment>,
    next_id: u64,
    /// The segment handed out by `take_oldest` and not yet acked.
    taken: Option<u64>,
    dropped: u64,
    quarantined: u64,
    spilled: u64,
    replayed: u64,
    durability: Durability,
    /// Records appended since the last sync.
    unsynced: bool,
    /// A segment was created since the last sync: the directory needs one too.
    dir_unsynced: bool,
    last_sync: Instant,
    syncs: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.to_path_buf(), source }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, picking up segments a previous run left.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        for id in &ids {
            segments.push_back(Segment::scan(dir, *id)?);
        }
        let next_id = ids.last().map_or(0, |i| i + 1);
        Ok(Outbox {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(segment_bytes),
            segment_bytes,
            segments,
            next_id,
            taken: None,
            dropped: 0,
            quarantined: 0,
            spilled: 0,
            replayed: 0,
            durability: Durability::Never,
            unsynced: false,
            dir_unsynced: false,
            last_sync: Instant::now(),
            syncs: 0,
        })
    }

    /// Sets when records are forced to the disk (default: never).
    pub fn with_durability(mut self, durability: Durability) -> Outbox {
        self.durability = durability;
        self
    }

    /// Syncs unsynced records now (and the directory after a new segment).
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Some(head) = self.segments.back() {
            head.sync()?;
        }
        if self.dir_unsynced {
            std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
            self.dir_unsynced = false;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        self.syncs += 1;
        Ok(())
    }

    /// For `interval`: syncs when records wait and the interval has passed since the last sync.
    pub fn flush_due(&mut self) -> Result<(), OutboxError> {
        match self.durability {
            Durability::Interval(every) if self.unsynced && self.last_sync.elapsed() >= every => self.sync(),
            _ => Ok(()),
        }
    }

    /// At a clean stop: everything waiting reaches the disk, unless the policy is `never`.
    pub fn close(&mut self) -> Result<(), OutboxError> {
        match self.durability {
            Durability::Never => Ok(()),
            _ => self.sync(),
        }
    }

    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            messages: self.segments.iter().map(|s| s.count).sum(),
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            dropped: self.dropped,
            quarantined: self.quarantined,
            spilled: self.spilled,
            replayed: self.replayed,
            syncs: self.syncs,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.count == 0)
    }

    /// Appends a message, making room by deleting the oldest segments when over the cap.
    pub fn push(&mut self, msg: &Outgoing) -> Result<(), OutboxError> {
        let record = segment::encode(msg);
        let len = record.len() as u64;
        if len > self.segment_bytes {
            return Err(OutboxError::TooLarge(record.len()));
        }
        let head_full =
            self.segments.back().is_none_or(|s| s.bytes + len > self.segment_bytes || Some(s.id) == self.taken);
        if head_full {
            // the records of the segment being closed reach the disk before the next one starts
            if self.durability != Durability::Never {
                self.sync()?;
            }
            self.segments.push_back(Segment::create(&self.dir, self.next_id)?);
            self.next_id += 1;
            self.dir_unsynced = true;
        }
        while self.stats().bytes + len > self.max_bytes && self.segments.len() > 1 {
            let Some(oldest) = self.segments.pop_front() else { break };
            if Some(oldest.id) == self.taken {
                self.taken = None;
            }
            self.dropped += oldest.count;
            tracing::warn!(messages = oldest.count, "outbox full: dropped its oldest segment");
            oldest.delete()?;
        }
        let head = self.segments.back_mut().expect("a head segment exists");
        head.append(&record)?;
        self.spilled += 1;
        self.unsynced = true;
        match self.durability {
            Durability::Always => self.sync(),
            _ => self.flush_due(),
        }
    }

    /// The oldest segment's messages, to replay; `None` when empty. The same segment is
    /// returned until it is acked.
    pub fn take_oldest(&mut self) -> Result<Option<(u64, Vec<Outgoing>)>, OutboxError> {
        loop {
            let Some(seg) = self.segments.front() else { return Ok(None) };
            if seg.count == 0 {
                if self.segments.len() == 1 {
                    return Ok(None); // the empty head stays open for appending
                }
                let seg = self.segments.pop_front().expect("front exists");
                seg.delete()?;
                continue;
            }
            let id = seg.id;
            let (messages, clean) = decode_all(&seg.read()?);
            if clean {
                if self.taken != Some(id) {
                    self.replayed += messages.len() as u64;
                }
                self.taken = Some(id);
                return Ok(Some((id, messages)));
            }
            // Damaged: keep the file aside as *.corrupt, replay what was readable before the
            // damage (from memory; acking it is then a no-op), count the rest.
            let mut seg = self.segments.pop_front().expect("front exists");
            let lost = seg.count.saturating_sub(messages.len() as u64);
            self.quarantined += lost;
            tracing::warn!(segment = id, kept = messages.len(), lost, "corrupt outbox segment quarantined");
            seg.quarantine()?;
            if !messages.is_empty() {
                return Ok(Some((id, messages)));
            }
        }
    }

    /// The segment `id` was fully handed on: delete it.
    pub fn ack(&mut self, id: u64) -> Result<(), OutboxError> {
        if let Some(pos) = self.segments.iter().position(|s| s.id == id) {
            let seg = self.segments.remove(pos).expect("position is valid");
            seg.delete()?;
        }
        if self.taken == Some(id) {
            self.taken = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
