//! Frame-to-frame association: which detection is which object. Each track's box is predicted
//! one frame ahead by its Kalman filter, then detections are matched to predictions of the same
//! label by IoU, best pairs first. Two people crossing keep their ids because each prediction
//! carries its own velocity past the crossing.
//!
//! Tiling (and partial occlusion) can split one object into two boxes, one per tile: a
//! detection left over after matching that lies mostly inside a matched track's predicted box
//! is merged into that track's measurement instead of starting a second object.
//!
//! A track not matched for more than `max_disappeared` frames ends; a track its owner has not
//! confirmed yet ends after `tentative_misses` (it has to start over to become an object).

use super::kalman::{BoxFilter, BoxXyxy, area, intersection, iou, union};

/// One detection handed to the tracker.
#[derive(Debug, Clone)]
pub struct Observation {
    pub label: String,
    pub bbox: BoxXyxy,
    pub score: f32,
}

#[derive(Debug, Clone, Copy)]
pub struct TrackerSettings {
    /// Lowest IoU between a prediction and a detection that can be the same object.
    pub match_iou: f32,
    /// Frames a confirmed track survives without a detection.
    pub max_disappeared: u32,
    /// Frames an unconfirmed track survives without a detection.
    pub tentative_misses: u32,
}

/// Fraction of a leftover detection's area inside a matched track's box above which it is a
/// piece of that object (a tile's half of it), not a new one.
const PIECE_INSIDE: f32 = 0.6;

#[derive(Debug, Clone)]
pub struct Track {
    /// Unique within this tracker, counting from 1.
    pub key: u64,
    pub label: String,
    filter: BoxFilter,
    /// This frame's measured box (the merged detections), or the prediction when missed.
    pub bbox: BoxXyxy,
    /// This frame's detection score (0 when missed).
    pub score: f32,
    /// Frames since the last detection.
    pub missed: u32,
    /// Detections in a row up to this frame.
    pub streak: u32,
    /// Set by the owner once the track is a real object.
    pub confirmed: bool,
}

impl Track {
    pub fn seen(&self) -> bool {
        self.missed == 0
    }
}

#[derive(Debug, Default)]
pub struct Step {
    /// Tracks started this frame.
    pub born: Vec<u64>,
    /// Tracks that ended this frame.
    pub ended: Vec<Track>,
}

pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_key: u64,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Tracker {
        Tracker { settings, tracks: Vec::new(), next_key: 1 }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn confirm(&mut self, key: u64) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.key == key) {
            t.confirmed = true;
        }
    }

    /// One frame's detections in; tracks moved, started and ended.
    pub fn step(&mut self, observations: &[Observation]) -> Step {
        for t in &mut self.tracks {
            t.filter.predict();
        }
        let predicted: Vec<BoxXyxy> = self.tracks.iter().map(|t| t.filter.current()).collect();
        // every (track, detection) pair of one label that overlaps enough, best first
        let mut pairs = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (oi, o) in observations.iter().enumerate() {
                if o.label == t.label {
                    let overlap = iou(&predicted[ti], &o.bbox);
                    if overlap >= self.settings.match_iou {
                        pairs.push((overlap, ti, oi));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of = vec![None; observations.len()];
        let mut measured: Vec<Option<(BoxXyxy, f32)>> = vec![None; self.tracks.len()];
        for (_, ti, oi) in pairs {
            if measured[ti].is_none() && track_of[oi].is_none() {
                measured[ti] = Some((observations[oi].bbox, observations[oi].score));
                track_of[oi] = Some(ti);
            }
        }
        // leftovers that are pieces of a matched object join its measurement
        for (oi, o) in observations.iter().enumerate() {
            if track_of[oi].is_some() || area(&o.bbox) <= 0.0 {
                continue;
            }
            let host = (0..self.tracks.len()).find(|&ti| {
                self.tracks[ti].label == o.label
                    && measured[ti].is_some()
                    && intersection(&o.bbox, &predicted[ti]) / area(&o.bbox) >= PIECE_INSIDE
            });
            if let Some(ti) = host
                && let Some((b, s)) = measured[ti]
            {
                measured[ti] = Some((union(&b, &o.bbox), s.max(o.score)));
                track_of[oi] = Some(ti);
            }
        }
        for (t, m) in self.tracks.iter_mut().zip(&measured) {
            match m {
                Some((b, s)) => {
                    t.filter.update(*b);
                    (t.bbox, t.score, t.missed) = (*b, *s, 0);
                    t.streak += 1;
                }
                None => {
                    (t.bbox, t.score, t.streak) = (t.filter.current(), 0.0, 0);
                    t.missed += 1;
                }
            }
        }
        let mut step = Step::default();
        let (max, tentative) = (self.settings.max_disappeared, self.settings.tentative_misses);
        let (ended, kept): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| t.missed > if t.confirmed { max } else { tentative });
        self.tracks = kept;
        step.ended = ended;
        for (o, _) in observations.iter().zip(&track_of).filter(|(_, t)| t.is_none()) {
            let key = self.next_key;
            self.next_key += 1;
            self.tracks.push(Track {
                key,
                label: o.label.clone(),
                filter: BoxFilter::new(o.bbox),
                bbox: o.bbox,
                score: o.score,
                missed: 0,
                streak: 1,
                confirmed: false,
            });
            step.born.push(key);
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TrackerSettings {
        TrackerSettings { match_iou: 0.2, max_disappeared: 3, tentative_misses: 1 }
    }

    fn person(x: f32, y: f32) -> Observation {
        Observation { label: "person".into(), bbox: [x, y, x + 40.0, y + 100.0], score: 0.9 }
    }

    fn key_near(tr: &Tracker, x: f32) -> u64 {
        tr.tracks()
            .iter()
            .filter(|t| t.seen())
            .min_by(|a, b| (a.bbox[0] - x).abs().total_cmp(&(b.bbox[0] - x).abs()))
            .unwrap()
            .key
    }

    #[test]
    fn two_people_crossing_keep_their_ids() {
        let mut tr = Tracker::new(settings());
        // one walks right, the other left, a little lower in the frame; they cross at x = 200
        let (mut a, mut b) = (None, None);
        for i in 0..=40 {
            let (xa, xb) = (10.0 * i as f32, 400.0 - 10.0 * i as f32);
            tr.step(&[person(xa, 100.0), person(xb, 115.0)]);
            let (ka, kb) = (key_near(&tr, xa), key_near(&tr, xb));
            if i == 0 {
                (a, b) = (Some(ka), Some(kb));
            } else if i != 20 {
                // at i = 20 both stand on the same spot
                assert_eq!((Some(ka), Some(kb)), (a, b), "frame {i}: ids swapped or lost");
            }
        }
        assert_eq!(tr.tracks().len(), 2);
    }

    #[test]
    fn a_missed_frame_keeps_the_id_and_too_many_end_it() {
        let mut tr = Tracker::new(settings());
        tr.step(&[person(0.0, 0.0)]);
        let key = tr.tracks()[0].key;
        tr.confirm(key);
        tr.step(&[person(5.0, 0.0)]);
        tr.step(&[]);
        tr.step(&[]);
        tr.step(&[person(20.0, 0.0)]);
        assert_eq!(tr.tracks().len(), 1);
        assert_eq!(tr.tracks()[0].key, key, "two missed frames started a new object");
        for _ in 0..3 {
            assert!(tr.step(&[]).ended.is_empty());
        }
        let step = tr.step(&[]);
        assert_eq!(step.ended.iter().map(|t| t.key).collect::<Vec<_>>(), vec![key]);
        assert!(tr.tracks().is_empty());
    }

    #[test]
    fn unconfirmed_tracks_end_sooner() {
        let mut tr = Tracker::new(settings());
        tr.step(&[person(0.0, 0.0)]);
        assert!(tr.step(&[]).ended.is_empty());
        assert_eq!(tr.step(&[]).ended.len(), 1);
    }

    #[test]
    fn a_box_split_by_tiles_stays_one_object() {
        let mut tr = Tracker::new(settings());
        for i in 0..5 {
            tr.step(&[person(10.0 * i as f32, 0.0)]);
        }
        // the next frame the detector sees two halves, one per tile
        let x = 50.0;
        let halves = [
            Observation { label: "person".into(), bbox: [x, 0.0, x + 22.0, 100.0], score: 0.8 },
            Observation { label: "person".into(), bbox: [x + 18.0, 0.0, x + 40.0, 100.0], score: 0.7 },
        ];
        let step = tr.step(&halves);
        assert!(step.born.is_empty(), "a half became a new object");
        assert_eq!(tr.tracks().len(), 1);
        let b = tr.tracks()[0].bbox;
        assert!(b[0] <= x + 0.1 && b[2] >= x + 39.9, "merged box {b:?}");
    }

    #[test]
    fn labels_never_mix() {
        let mut tr = Tracker::new(settings());
        tr.step(&[person(0.0, 0.0)]);
        let car = Observation { label: "car".into(), bbox: [0.0, 0.0, 40.0, 100.0], score: 0.9 };
        let step = tr.step(&[car]);
        assert_eq!(step.born.len(), 1);
        assert_eq!(tr.tracks().iter().filter(|t| t.label == "car").count(), 1);
    }
}
