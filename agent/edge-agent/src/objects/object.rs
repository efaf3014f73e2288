//! One tracked object's state between frames: the false-positive filter (Frigate's: the
//! median of its recent scores, a score under `min_score` counted as 0, must reach
//! `threshold`), its top score, whether it stands still, the zones it is and was in, and how
//! good its best picture is.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::kalman::{BoxXyxy, iou};
use super::zones::Zone;
use crate::event::TrackedObject;

/// Scores the median is taken over.
const HISTORY: usize = 10;
/// A box that overlaps where the object settled by at least this much has not moved.
const STATIONARY_IOU: f32 = 0.6;

/// The rules of [`crate::objects::ObjectsConfig`] an object needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub min_score: f32,
    pub threshold: f32,
    pub min_frames: u32,
    pub stationary_frames: u32,
    pub update_interval: Duration,
}

/// How good a picture of the object a frame gives: a box not cut by the frame's edge beats
/// any that is; then the higher score.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Quality {
    pub whole: bool,
    pub score: f32,
}

pub struct ObjectState {
    pub id: String,
    pub label: String,
    history: VecDeque<f32>,
    pub score: f32,
    pub top_score: f32,
    pub bbox: BoxXyxy,
    pub start_time: SystemTime,
    pub last_seen: SystemTime,
    pub confirmed: bool,
    anchor: BoxXyxy,
    motionless: u32,
    pub stationary: bool,
    pub current_zones: Vec<String>,
    pub entered_zones: Vec<String>,
    /// The best picture so far and how good it is.
    pub best: Option<(Quality, Arc<Vec<u8>>)>,
    /// Whether a better picture has come since the last event.
    pub snapshot_pending: bool,
    /// Whether a picture has been stored and published.
    pub has_snapshot: bool,
    /// The last event's time and state (the next event's `before`).
    pub last_event: Option<(SystemTime, TrackedObject)>,
}

impl ObjectState {
    pub fn new(key: u64, pipeline: &str, label: &str, bbox: BoxXyxy, time: SystemTime) -> ObjectState {
        let ms = time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        ObjectState {
            id: format!("{pipeline}-{ms}-{key}"),
            label: label.to_string(),
            history: VecDeque::with_capacity(HISTORY),
            score: 0.0,
            top_score: 0.0,
            bbox,
            start_time: time,
            last_seen: time,
            confirmed: false,
            anchor: bbox,
            motionless: 0,
            stationary: false,
            current_zones: Vec::new(),
            entered_zones: Vec::new(),
            best: None,
            snapshot_pending: false,
            has_snapshot: false,
            last_event: None,
        }
    }

    fn push(&mut self, score: f32, rules: &Rules) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(if score < rules.min_score { 0.0 } else { score });
    }

    /// The median of the recent scores (the mean of the middle two for an even count).
    pub fn computed_score(&self) -> f32 {
        let mut v: Vec<f32> = self.history.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f32::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }

    /// A frame in which the object was detected: its score history, top score, stationary
    /// state and zones.
    pub fn seen(
        &mut self,
        score: f32,
        bbox: BoxXyxy,
        time: SystemTime,
        frame: (u32, u32),
        zones: &[Zone],
        rules: &Rules,
    ) {
        self.push(score, rules);
        (self.score, self.bbox, self.last_seen) = (score, bbox, time);
        let computed = self.computed_score();
        if self.confirmed || computed >= rules.threshold {
            self.top_score = self.top_score.max(computed);
        }
        if iou(&bbox, &self.anchor) >= STATIONARY_IOU {
            self.motionless += 1;
        } else {
            (self.anchor, self.motionless) = (bbox, 0);
        }
        self.stationary = self.motionless >= rules.stationary_frames;
        self.current_zones =
            zones.iter().filter(|z| z.contains(&self.label, &bbox, frame.0, frame.1)).map(|z| z.name.clone()).collect();
        for z in &self.current_zones {
            if !self.entered_zones.contains(z) {
                self.entered_zones.push(z.clone());
            }
        }
    }

    /// A frame without it. An object not yet real counts the miss as a score of 0; a real one
    /// keeps its state (a missed frame or two does not end standing still).
    pub fn missed(&mut self, rules: &Rules) {
        self.score = 0.0;
        if !self.confirmed {
            self.push(0.0, rules);
        }
    }

    /// Whether the object has earned being announced.
    pub fn ready(&self, streak: u32, rules: &Rules) -> bool {
        !self.confirmed && streak >= rules.min_frames && self.computed_score() >= rules.threshold
    }

    /// Whether this frame's picture would beat the best one.
    pub fn better(&self, q: Quality) -> bool {
        self.best.as_ref().is_none_or(|(best, _)| q > *best)
    }

    pub fn view(&self, frame_time: SystemTime) -> TrackedObject {
        TrackedObject {
            id: self.id.clone(),
            label: self.label.clone(),
            score: self.score,
            top_score: self.top_score,
            bbox: self.bbox,
            start_time: self.start_time,
            end_time: None,
            stationary: self.stationary,
            current_zones: self.current_zones.clone(),
            entered_zones: self.entered_zones.clone(),
            has_snapshot: self.has_snapshot,
            frame_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { min_score: 0.5, threshold: 0.7, min_frames: 3, stationary_frames: 5, update_interval: Duration::ZERO }
    }

    fn at(i: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(100 * i)
    }

    #[test]
    fn a_flickering_detection_never_becomes_an_object() {
        let r = rules();
        let mut o = ObjectState::new(1, "p", "person", [0.0; 4], at(0));
        // a strong spike every third frame, below min_score in between
        let mut streak = 0;
        for i in 0..40 {
            let s = if i % 3 == 0 { 0.9 } else { 0.4 };
            o.seen(s, [0.0, 0.0, 10.0, 10.0], at(i), (100, 100), &[], &r);
            streak += 1;
            assert!(!o.ready(streak, &r), "frame {i}: median {}", o.computed_score());
        }
        // detected one frame in two: never min_frames in a row
        let mut o = ObjectState::new(2, "p", "person", [0.0; 4], at(0));
        for i in 0..40 {
            let seen = i % 2 == 0;
            if seen {
                o.seen(0.95, [0.0, 0.0, 10.0, 10.0], at(i), (100, 100), &[], &r);
            } else {
                o.missed(&r);
            }
            assert!(!o.ready(u32::from(seen), &r));
        }
    }

    #[test]
    fn a_steady_detection_becomes_real_after_min_frames() {
        let r = rules();
        let mut o = ObjectState::new(1, "door", "person", [0.0; 4], at(0));
        assert!(o.id.starts_with("door-0-1"));
        for streak in 1..=3 {
            o.seen(0.8, [0.0, 0.0, 10.0, 10.0], at(u64::from(streak)), (100, 100), &[], &r);
            assert_eq!(o.ready(streak, &r), streak == 3);
        }
        assert!((o.top_score - 0.8).abs() < 1e-6);
    }

    #[test]
    fn stationary_after_n_still_frames_and_not_ended_by_misses() {
        let r = rules();
        let mut o = ObjectState::new(1, "p", "car", [0.0; 4], at(0));
        o.confirmed = true;
        for i in 0..5 {
            o.seen(0.9, [10.0, 10.0, 50.0, 50.0], at(i), (100, 100), &[], &r);
            assert!(!o.stationary, "stationary after {} frames", i + 1);
        }
        // small jitter does not count as moving
        o.seen(0.9, [11.0, 10.0, 51.0, 51.0], at(6), (100, 100), &[], &r);
        assert!(o.stationary);
        o.missed(&r);
        o.missed(&r);
        o.seen(0.9, [10.0, 10.0, 50.0, 50.0], at(9), (100, 100), &[], &r);
        assert!(o.stationary, "two missed frames ended stationary");
        o.seen(0.9, [40.0, 10.0, 80.0, 50.0], at(10), (100, 100), &[], &r);
        assert!(!o.stationary, "it moved");
    }

    #[test]
    fn snapshot_quality_prefers_whole_boxes() {
        let cut = Quality { whole: false, score: 0.99 };
        let whole = Quality { whole: true, score: 0.6 };
        assert!(whole > cut);
        assert!(Quality { whole: true, score: 0.7 } > whole);
    }
}
