//! Which regions of a frame a detector looks at.
//!
//! A model with a 416×416 input sees a 1920×1080 frame shrunk 4.6×, and a 4000×1000 panorama
//! 9.6×: small objects vanish. So, deliberately: the whole frame is always looked at
//! (letterboxed, for large objects), and when the frame would be shrunk more than
//! `max_downscale` times, it is also cut into a grid of overlapping tiles, each shrunk at most
//! about that much. Detections from all passes are merged (see `nms::merge_passes`).
//! Cost grows with the number of tiles, so the default (3.2×) leaves VGA and 720p frames at one
//! inference and a 1080p frame at three.

use super::preprocess::Region;
use serde::{Deserialize, Serialize};

/// How a frame larger than the model's input is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Tiling {
    /// Letterbox the whole frame into the input (one inference).
    None,
    /// Whole frame, plus overlapping tiles when the frame would be shrunk more than
    /// `max_downscale` times (see ARCHITECTURE.md).
    Auto { max_downscale: f32 },
    /// Whole frame plus a fixed grid of overlapping tiles.
    Grid { cols: u32, rows: u32, overlap: f32 },
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling::Auto { max_downscale: 3.2 }
    }
}

/// Fraction of a tile shared with its neighbour, so an object on a seam is whole in one tile.
const AUTO_OVERLAP: f32 = 0.2;

/// The regions to run the model on: the whole frame first, then tiles (if any).
pub fn plan(width: u32, height: u32, input_w: u32, input_h: u32, tiling: Tiling) -> Vec<Region> {
    let whole = Region { x: 0, y: 0, w: width, h: height };
    let (cols, rows, overlap) = match tiling {
        Tiling::None => return vec![whole],
        Tiling::Grid { cols, rows, overlap } => (cols, rows, overlap),
        Tiling::Auto { max_downscale } => {
            let max_w = input_w as f32 * max_downscale;
            let max_h = input_h as f32 * max_downscale;
            let fit = width as f32 <= max_w && height as f32 <= max_h;
            if fit {
                return vec![whole];
            }
            // the shrink of a letterboxed tile is set by its larger side relative to the input,
            // so cut the frame until every tile fits within max_w × max_h
            let cols = tiles_needed(width as f32, max_w, AUTO_OVERLAP);
            let rows = tiles_needed(height as f32, max_h, AUTO_OVERLAP);
            (cols, rows, AUTO_OVERLAP)
        }
    };
    if cols * rows <= 1 {
        return vec![whole];
    }
    let mut regions = vec![whole];
    let (xs, tw) = spans(width, cols, overlap);
    let (ys, th) = spans(height, rows, overlap);
    for &y in &ys {
        for &x in &xs {
            regions.push(Region { x, y, w: tw, h: th });
        }
    }
    regions
}

/// How many tiles of at most `max` (overlapping by `overlap`) cover `len`.
fn tiles_needed(len: f32, max: f32, overlap: f32) -> u32 {
    if len <= max {
        return 1;
    }
    // n tiles of size t with overlap o cover t * (n - (n-1) * o)
    let mut n = 2;
    while max * (n as f32 - (n as f32 - 1.0) * overlap) < len && n < 16 {
        n += 1;
    }
    n
}

/// Start offsets and the common size of `n` tiles over `len` with the given overlap.
fn spans(len: u32, n: u32, overlap: f32) -> (Vec<u32>, u32) {
    if n <= 1 {
        return (vec![0], len);
    }
    let size = (len as f32 / (n as f32 - (n as f32 - 1.0) * overlap)).ceil() as u32;
    let size = size.min(len).max(1);
    let step = (len - size) as f32 / (n - 1) as f32;
    ((0..n).map(|i| (i as f32 * step).round() as u32).collect(), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Tiling {
        Tiling::Auto { max_downscale: 3.2 }
    }

    fn check(w: u32, h: u32, tiling: Tiling, expected_passes: usize) {
        let regions = plan(w, h, 416, 416, tiling);
        assert_eq!(regions.len(), expected_passes, "{w}x{h}: {regions:?}");
        assert_eq!(regions[0], Region { x: 0, y: 0, w, h });
        for r in &regions[1..] {
            assert!(r.x + r.w <= w && r.y + r.h <= h, "tile {r:?} leaves the {w}x{h} frame");
            let shrink = (r.w as f32 / 416.0).max(r.h as f32 / 416.0);
            if let Tiling::Auto { max_downscale } = tiling {
                assert!(shrink <= max_downscale + 0.01, "tile {r:?} shrinks {shrink}");
            }
        }
        if regions.len() > 1 {
            let right = regions.iter().map(|r| r.x + r.w).max().unwrap();
            let bottom = regions.iter().map(|r| r.y + r.h).max().unwrap();
            assert_eq!((right, bottom), (w, h), "tiles must cover the frame");
        }
    }

    #[test]
    fn plans_for_common_frames() {
        check(640, 480, auto(), 1);
        check(1280, 720, auto(), 1);
        check(1920, 1080, auto(), 3);
        check(4000, 1000, auto(), 5);
        check(3840, 2160, auto(), 1 + 4 * 2);
        check(1920, 1080, Tiling::None, 1);
        check(1000, 1000, Tiling::Grid { cols: 2, rows: 2, overlap: 0.25 }, 5);
    }

    #[test]
    fn neighbouring_tiles_overlap() {
        let r = plan(4000, 1000, 416, 416, auto());
        for pair in r[1..].windows(2) {
            assert!(pair[1].x < pair[0].x + pair[0].w, "{pair:?} do not overlap");
        }
    }
}
