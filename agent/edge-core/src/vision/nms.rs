//! Non-maximum suppression within one pass (per class, IoU) and merging several passes over
//! one frame (per class, intersection over the smaller box, so that a tile's view of an object
//! and the whole-frame view of it count once).

use super::{BBox, Candidate};

pub fn area(b: &BBox) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

pub fn intersection(a: &BBox, b: &BBox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    w * h
}

pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let i = intersection(a, b);
    let u = area(a) + area(b) - i;
    if u <= 0.0 { 0.0 } else { i / u }
}

/// Intersection over the smaller of the two areas.
pub fn ios(a: &BBox, b: &BBox) -> f32 {
    let smaller = area(a).min(area(b));
    if smaller <= 0.0 { 0.0 } else { intersection(a, b) / smaller }
}

/// Greedy per-class suppression: best score first; a box is dropped when `overlap` with a
/// kept box of its class exceeds `limit`. Returns at most `max` boxes, best first.
fn suppress(mut c: Vec<Candidate>, limit: f32, max: usize, overlap: fn(&BBox, &BBox) -> f32) -> Vec<Candidate> {
    c.retain(|x| x.score.is_finite() && area(&x.bbox) > 0.0);
    c.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for cand in c {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| k.class_id != cand.class_id || overlap(&k.bbox, &cand.bbox) <= limit) {
            kept.push(cand);
        }
    }
    kept
}

/// Per-class NMS by IoU.
pub fn nms(c: Vec<Candidate>, iou_limit: f32, max: usize) -> Vec<Candidate> {
    suppress(c, iou_limit, max, iou)
}

/// Merges the (already NMS-ed) results of several passes over one frame.
pub fn merge_passes(c: Vec<Candidate>, iou_limit: f32, max: usize) -> Vec<Candidate> {
    let by_iou = suppress(c, iou_limit, usize::MAX, iou);
    suppress(by_iou, 0.7, max, ios)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(class_id: u32, score: f32, bbox: BBox) -> Candidate {
        Candidate { class_id, score, bbox }
    }

    #[test]
    fn overlap_measures() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 10.0, 20.0, 20.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(ios(&a, &[2.0, 2.0, 4.0, 4.0]), 1.0);
    }

    #[test]
    fn suppresses_within_a_class_only() {
        let out = nms(
            vec![
                c(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
                c(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
                c(1, 0.4, [1.0, 1.0, 11.0, 11.0]),
                c(0, 0.3, [50.0, 50.0, 60.0, 60.0]),
                c(0, f32::NAN, [0.0, 0.0, 5.0, 5.0]),
            ],
            0.5,
            10,
        );
        let scores: Vec<f32> = out.iter().map(|x| x.score).collect();
        assert_eq!(scores, vec![0.9, 0.4, 0.3]);
        assert_eq!(nms(out, 0.5, 2).len(), 2);
    }

    #[test]
    fn merging_drops_a_tile_fragment_inside_a_whole_frame_box() {
        let out = merge_passes(vec![c(0, 0.8, [0.0, 0.0, 100.0, 200.0]), c(0, 0.6, [0.0, 0.0, 100.0, 90.0])], 0.5, 10);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].score, 0.8);
    }
}
