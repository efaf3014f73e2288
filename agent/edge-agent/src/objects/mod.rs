//! Objects, not frames: a detect pipeline's detections become tracked objects with stable ids
//! (`tracker`, `kalman`), filtered for false positives and followed through zones (`object`,
//! `zones`), with a snapshot of each (`snapshot`). [`Tracking`] turns each frame's detections
//! into the few events that matter: `new` when an object becomes real, `update` when its zones,
//! stationary state or best picture change, `end` when it leaves, plus the count of objects per
//! label and zone whenever one changes. It runs on the pipeline's post thread.

mod kalman;
mod object;
mod settings;
pub mod snapshot;
mod tracker;
pub mod zones;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use settings::{ObjectsConfig, SnapshotSettings};
pub use zones::{Coordinates, ZoneConfig};

use crate::event::{Event, ObjectChange, ObjectCount, ObjectEvent, Snapshot, TrackedObject};
use edge_core::source::Frame;
use edge_core::vision::detector::DetectOutput;
use object::{ObjectState, Quality, Rules};
use snapshot::{SnapshotError, SnapshotStore};
use tracker::{Observation, Tracker, TrackerSettings};
use zones::Zone;

/// One detect pipeline's objects.
pub struct Tracking {
    pipeline: String,
    tracked: Vec<String>,
    zones: Vec<Zone>,
    rules: Rules,
    tracker: Tracker,
    objects: BTreeMap<u64, ObjectState>,
    snapshots: Option<SnapshotStore>,
    seq: u64,
    /// The counts last published, by (zone, label).
    counts: BTreeMap<(Option<String>, String), usize>,
}

impl Tracking {
    /// `tracked`: the labels that become objects ([`ObjectsConfig::tracked_labels`]);
    /// `snapshot_dir`: this pipeline's snapshot folder (none when snapshots are off).
    pub fn new(
        pipeline: &str,
        c: &ObjectsConfig,
        zones: &BTreeMap<String, ZoneConfig>,
        tracked: Vec<String>,
        snapshot_dir: Option<&Path>,
    ) -> Result<Tracking, SnapshotError> {
        let snapshots = match snapshot_dir {
            Some(dir) if c.snapshots.enabled => Some(SnapshotStore::open(dir, &c.snapshots)?),
            _ => None,
        };
        let zones: Vec<Zone> = zones.iter().map(|(name, z)| Zone::new(name, z)).collect();
        let mut counts = BTreeMap::new();
        for label in &tracked {
            counts.insert((None, label.clone()), usize::MAX);
            for z in zones.iter().filter(|z| z.counts(label)) {
                counts.insert((Some(z.name.clone()), label.clone()), usize::MAX);
            }
        }
        Ok(Tracking {
            pipeline: pipeline.to_string(),
            tracked,
            zones,
            rules: Rules {
                min_score: c.min_score,
                threshold: c.threshold,
                min_frames: c.min_frames,
                stationary_frames: c.stationary_frames,
                update_interval: Duration::from_secs_f64(c.update_interval_secs),
            },
            tracker: Tracker::new(TrackerSettings {
                match_iou: c.match_iou,
                max_disappeared: c.max_disappeared,
                tentative_misses: c.min_frames,
            }),
            objects: BTreeMap::new(),
            snapshots,
            seq: 0,
            counts,
        })
    }

    /// Every count, 0 at start (so retained counts of an earlier run are corrected).
    pub fn start(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.push_counts(&mut events);
        events
    }

    /// One frame's detections in; the events they cause out.
    pub fn frame(&mut self, frame: &Frame, out: &DetectOutput) -> Vec<Event> {
        let (time, size) = (frame.captured, (frame.image.width(), frame.image.height()));
        let observations: Vec<Observation> = out
            .detections
            .iter()
            .filter(|d| self.tracked.contains(&d.label))
            .map(|d| Observation { label: d.label.clone(), bbox: d.bbox.map(|v| v as f32), score: d.score as f32 })
            .collect();
        let step = self.tracker.step(&observations);
        let mut events = Vec::new();
        for ended in step.ended {
            if let Some(o) = self.objects.remove(&ended.key)
                && o.confirmed
            {
                self.end(o, &mut events);
            }
        }
        for key in step.born {
            let t = self.tracker.tracks().iter().find(|t| t.key == key).expect("a track born this step");
            self.objects.insert(key, ObjectState::new(key, &self.pipeline, &t.label, t.bbox, time));
        }
        let tracks: Vec<(u64, bool, f32, [f32; 4], u32)> =
            self.tracker.tracks().iter().map(|t| (t.key, t.seen(), t.score, t.bbox, t.streak)).collect();
        for (key, seen, score, bbox, streak) in tracks {
            let Some(mut o) = self.objects.remove(&key) else { continue };
            if seen {
                self.observe(&mut o, frame, score, bbox, size);
            } else {
                o.missed(&self.rules);
            }
            if o.ready(streak, &self.rules) {
                o.confirmed = true;
                self.tracker.confirm(key);
                self.announce(&mut o, ObjectChange::New, time, &mut events);
            } else if o.confirmed && seen {
                let last = o.last_event.as_ref().map(|(_, v)| v);
                let changed = last.is_some_and(|v| v.current_zones != o.current_zones || v.stationary != o.stationary);
                let due = o.snapshot_pending
                    && o.last_event.as_ref().is_none_or(|(at, _)| {
                        time.duration_since(*at).unwrap_or(Duration::ZERO) >= self.rules.update_interval
                    });
                if changed || due {
                    self.announce(&mut o, ObjectChange::Update, time, &mut events);
                }
            }
            self.objects.insert(key, o);
        }
        self.push_counts(&mut events);
        events
    }

    /// The source ended or the agent is stopping: every object ends, every count goes to 0.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        for (_, o) in std::mem::take(&mut self.objects) {
            if o.confirmed {
                self.end(o, &mut events);
            }
        }
        self.push_counts(&mut events);
        events
    }

    /// A frame with the object in it: its state, and its picture when this frame's is better.
    fn observe(&mut self, o: &mut ObjectState, frame: &Frame, score: f32, bbox: [f32; 4], size: (u32, u32)) {
        o.seen(score, bbox, frame.captured, size, &self.zones, &self.rules);
        let Some(store) = &self.snapshots else { return };
        let q = Quality { whole: snapshot::whole(&bbox, size.0, size.1), score };
        if score < self.rules.min_score || !o.better(q) {
            return;
        }
        match store.encode(&frame.image, &bbox) {
            Ok(jpeg) => {
                o.best = Some((q, Arc::new(jpeg)));
                o.snapshot_pending = true;
            }
            Err(e) => tracing::warn!(pipeline = %self.pipeline, object = %o.id, error = %e, "snapshot failed"),
        }
    }

    /// A `new` or `update` event (the snapshot first, when a better one waits).
    fn announce(&mut self, o: &mut ObjectState, change: ObjectChange, time: SystemTime, events: &mut Vec<Event>) {
        if o.snapshot_pending
            && let (Some(store), Some((_, jpeg))) = (&self.snapshots, &o.best)
        {
            match store.store(&o.id, jpeg) {
                Ok(path) => {
                    o.has_snapshot = true;
                    events.push(Event::Snapshot(Snapshot {
                        pipeline: self.pipeline.clone(),
                        label: o.label.clone(),
                        object_id: o.id.clone(),
                        jpeg: jpeg.clone(),
                        path,
                    }));
                }
                Err(e) => tracing::warn!(pipeline = %self.pipeline, object = %o.id, error = %e, "snapshot not stored"),
            }
        }
        o.snapshot_pending = false;
        let after = o.view(time);
        let before = o.last_event.take().map(|(_, v)| v).unwrap_or_else(|| after.clone());
        o.last_event = Some((time, after.clone()));
        self.push_object(change, before, after, events);
    }

    fn end(&mut self, o: ObjectState, events: &mut Vec<Event>) {
        let mut after = o.view(o.last_seen);
        after.end_time = Some(o.last_seen);
        after.current_zones.clear();
        let before = o.last_event.map(|(_, v)| v).unwrap_or_else(|| after.clone());
        self.push_object(ObjectChange::End, before, after, events);
    }

    fn push_object(
        &mut self,
        change: ObjectChange,
        before: TrackedObject,
        after: TrackedObject,
        events: &mut Vec<Event>,
    ) {
        events.push(Event::Object(ObjectEvent {
            pipeline: self.pipeline.clone(),
            seq: self.seq,
            change,
            before,
            after,
        }));
        self.seq += 1;
    }

    /// The counts that changed since they were last published.
    fn push_counts(&mut self, events: &mut Vec<Event>) {
        let real: Vec<&ObjectState> = self.objects.values().filter(|o| o.confirmed).collect();
        for ((zone, label), last) in self.counts.iter_mut() {
            let now = real
                .iter()
                .filter(|o| &o.label == label && zone.as_ref().is_none_or(|z| o.current_zones.contains(z)))
                .count();
            if now != *last {
                *last = now;
                events.push(Event::Count(ObjectCount {
                    pipeline: self.pipeline.clone(),
                    zone: zone.clone(),
                    label: label.clone(),
                    count: now,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
