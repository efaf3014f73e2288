//! Zones: named polygons on a pipeline's frame. An object is in a zone when the bottom centre
//! of its box (where a person stands, where a car touches the road) is inside the polygon and
//! its label is one the zone counts. Points are fractions of the frame (`[0.5, 1.0]` is the
//! middle of the bottom edge) or, with `coordinates = "pixels"`, pixels of the frame.

use serde::{Deserialize, Serialize};

use super::kalman::BoxXyxy;

/// `[pipelines.<name>.zones.<zone>]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The polygon's corners in order, at least three.
    pub points: Vec<[f64; 2]>,
    #[serde(default)]
    pub coordinates: Coordinates,
    /// Labels this zone counts (empty: every tracked label).
    #[serde(default)]
    pub objects: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordinates {
    /// Fractions of the frame's width and height, in [0, 1].
    #[default]
    Normalized,
    /// Pixels of the frame.
    Pixels,
}

/// A zone ready to test boxes against.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    points: Vec<[f64; 2]>,
    coordinates: Coordinates,
    objects: Vec<String>,
}

impl Zone {
    pub fn new(name: &str, c: &ZoneConfig) -> Zone {
        Zone {
            name: name.to_string(),
            points: c.points.clone(),
            coordinates: c.coordinates,
            objects: c.objects.clone(),
        }
    }

    /// Whether the zone counts objects of `label`.
    pub fn counts(&self, label: &str) -> bool {
        self.objects.is_empty() || self.objects.iter().any(|o| o == label)
    }

    /// Whether an object of `label` with box `b` (pixels of a `width` x `height` frame) is in
    /// the zone.
    pub fn contains(&self, label: &str, b: &BoxXyxy, width: u32, height: u32) -> bool {
        if !self.counts(label) {
            return false;
        }
        let (x, y) = (f64::from(b[0] + b[2]) / 2.0, f64::from(b[3]));
        let (x, y) = match self.coordinates {
            Coordinates::Pixels => (x, y),
            Coordinates::Normalized => (x / f64::from(width.max(1)), y / f64::from(height.max(1))),
        };
        inside(&self.points, x, y)
    }
}

/// Even-odd rule: a point on the bottom or right edge of the frame still counts when the
/// polygon reaches the edge (the test is inclusive on those edges).
fn inside(poly: &[[f64; 2]], x: f64, y: f64) -> bool {
    let mut inside = false;
    let n = poly.len();
    for i in 0..n {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[(i + n - 1) % n]);
        if on_segment([xi, yi], [xj, yj], x, y) {
            return true;
        }
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
    }
    inside
}

fn on_segment(a: [f64; 2], b: [f64; 2], x: f64, y: f64) -> bool {
    let cross = (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]);
    let within = x >= a[0].min(b[0]) - 1e-9
        && x <= a[0].max(b[0]) + 1e-9
        && y >= a[1].min(b[1]) - 1e-9
        && y <= a[1].max(b[1]) + 1e-9;
    cross.abs() < 1e-9 && within
}

/// Twice the signed area (shoelace).
fn area2(poly: &[[f64; 2]]) -> f64 {
    let n = poly.len();
    (0..n).map(|i| poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1]).sum()
}

/// Checks a pipeline's zones: names usable as topic levels, polygons of at least three points
/// inside the frame (`frame`, when the source's size is known), labels the pipeline tracks.
/// Every problem is reported with its path (`pipelines.door.zones.porch.points[3]`).
pub fn check(
    path: &str,
    zones: &std::collections::BTreeMap<String, ZoneConfig>,
    frame: Option<(u32, u32)>,
    tracked: &[String],
    problems: &mut Vec<(String, String)>,
) {
    for (name, z) in zones {
        let at = format!("{path}.zones.{name}");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            problems
                .push((at.clone(), "zone names use only letters, digits, '_' and '-' (they are topic levels)".into()));
        }
        if z.points.len() < 3 {
            problems.push((format!("{at}.points"), format!("a zone needs at least 3 points, got {}", z.points.len())));
        }
        for (i, [x, y]) in z.points.iter().enumerate() {
            let (w, h) = match (z.coordinates, frame) {
                (Coordinates::Normalized, _) => (1.0, 1.0),
                (Coordinates::Pixels, Some((w, h))) => (f64::from(w), f64::from(h)),
                (Coordinates::Pixels, None) => (f64::INFINITY, f64::INFINITY),
            };
            if !(x.is_finite() && y.is_finite() && (0.0..=w).contains(x) && (0.0..=h).contains(y)) {
                let frame = match z.coordinates {
                    Coordinates::Normalized => {
                        "in [0, 1] (fractions of the frame; set coordinates = \"pixels\" for pixels)".to_string()
                    }
                    Coordinates::Pixels => match frame {
                        Some((w, h)) => format!("inside the {w}x{h} frame"),
                        None => "not negative".to_string(),
                    },
                };
                problems.push((format!("{at}.points[{i}]"), format!("[{x}, {y}] must be {frame}")));
            }
        }
        if z.points.len() >= 3 && area2(&z.points).abs() < 1e-12 {
            problems.push((format!("{at}.points"), "the points enclose no area".into()));
        }
        for label in z.objects.iter().filter(|l| !tracked.contains(l)) {
            problems.push((
                format!("{at}.objects"),
                format!("{label:?} is not a tracked label (tracked: {})", tracked.join(", ")),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(points: Vec<[f64; 2]>, coordinates: Coordinates, objects: &[&str]) -> Zone {
        Zone::new("z", &ZoneConfig { points, coordinates, objects: objects.iter().map(|s| s.to_string()).collect() })
    }

    #[test]
    fn membership_is_the_bottom_centre() {
        // the right half of a 200x100 frame
        let z = zone(vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]], Coordinates::Normalized, &[]);
        // a box mostly on the left whose feet are on the right
        assert!(z.contains("person", &[80.0, 10.0, 130.0, 90.0], 200, 100));
        assert!(!z.contains("person", &[20.0, 10.0, 90.0, 90.0], 200, 100));
        // standing on the frame's bottom edge, at the right edge
        assert!(z.contains("person", &[180.0, 10.0, 200.0, 100.0], 200, 100));
        let px = zone(vec![[100.0, 0.0], [200.0, 0.0], [200.0, 100.0], [100.0, 100.0]], Coordinates::Pixels, &["car"]);
        assert!(px.contains("car", &[120.0, 10.0, 160.0, 50.0], 200, 100));
        assert!(!px.contains("person", &[120.0, 10.0, 160.0, 50.0], 200, 100), "a zone for cars counted a person");
    }

    #[test]
    fn a_concave_zone() {
        // an L: the bottom row and the left column of a 3x3 grid
        let z = zone(
            vec![[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [3.0, 2.0], [3.0, 3.0], [0.0, 3.0]],
            Coordinates::Pixels,
            &[],
        );
        assert!(z.contains("x", &[0.0, 0.0, 1.0, 2.5], 3, 3));
        assert!(!z.contains("x", &[2.0, 0.0, 3.0, 1.5], 3, 3));
    }

    #[test]
    fn bad_zones_are_reported_with_paths() {
        let mut zones = std::collections::BTreeMap::new();
        let z = |points: Vec<[f64; 2]>, coordinates, objects: &[&str]| ZoneConfig {
            points,
            coordinates,
            objects: objects.iter().map(|s| s.to_string()).collect(),
        };
        zones
            .insert("porch".into(), z(vec![[0.0, 0.0], [1.5, 0.0], [1.0, 1.0]], Coordinates::Normalized, &["unicorn"]));
        zones.insert("two".into(), z(vec![[0.0, 0.0], [1.0, 1.0]], Coordinates::Normalized, &[]));
        zones.insert("px".into(), z(vec![[0.0, 0.0], [700.0, 0.0], [0.0, 10.0]], Coordinates::Pixels, &[]));
        zones.insert("line".into(), z(vec![[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]], Coordinates::Normalized, &[]));
        zones.insert("a/b".into(), z(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], Coordinates::Normalized, &[]));
        let mut problems = Vec::new();
        check("pipelines.door", &zones, Some((640, 480)), &["person".into()], &mut problems);
        let got: Vec<String> = problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        let expected = [
            "pipelines.door.zones.a/b: zone names use only",
            "pipelines.door.zones.line.points: the points enclose no area",
            "pipelines.door.zones.porch.points[1]: [1.5, 0] must be in [0, 1]",
            "pipelines.door.zones.porch.objects: \"unicorn\" is not a tracked label",
            "pipelines.door.zones.px.points[1]: [700, 0] must be inside the 640x480 frame",
            "pipelines.door.zones.two.points: a zone needs at least 3 points, got 2",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "expected {e:?}, got {g:?}");
        }
    }
}
