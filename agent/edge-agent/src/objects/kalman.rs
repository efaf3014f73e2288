//! A constant-velocity Kalman filter on a box: centre x, centre y, width and height, each with
//! its own velocity (four independent position/velocity filters, as SORT's matrices are when
//! their noises are uncoupled). Noise scales with the box's height, so a near, large person and
//! a far, small one are followed equally well. Time is counted in frames.

/// `[x1, y1, x2, y2]` in pixels.
pub type BoxXyxy = edge_core::vision::BBox;

/// One coordinate and its velocity, with their 2x2 covariance.
#[derive(Debug, Clone, Copy)]
struct Axis {
    p: f32,
    v: f32,
    /// covariance `[[pp, pv], [pv, vv]]`
    pp: f32,
    pv: f32,
    vv: f32,
}

impl Axis {
    fn new(p: f32, pos_std: f32, vel_std: f32) -> Axis {
        Axis { p, v: 0.0, pp: pos_std * pos_std, pv: 0.0, vv: vel_std * vel_std }
    }

    /// One frame ahead: `p += v`, covariance grown by the process noise.
    fn predict(&mut self, q_pos: f32, q_vel: f32) {
        self.p += self.v;
        // F P F^T with F = [[1, 1], [0, 1]]
        let pp = self.pp + 2.0 * self.pv + self.vv;
        let pv = self.pv + self.vv;
        self.pp = pp + q_pos;
        self.pv = pv;
        self.vv += q_vel;
    }

    /// Folds in a measurement of the position with variance `r`.
    fn update(&mut self, z: f32, r: f32) {
        let s = self.pp + r;
        let (kp, kv) = (self.pp / s, self.pv / s);
        let y = z - self.p;
        self.p += kp * y;
        self.v += kv * y;
        // (I - K H) P
        let (pp, pv, vv) = (self.pp, self.pv, self.vv);
        self.pp = (1.0 - kp) * pp;
        self.pv = (1.0 - kp) * pv;
        self.vv = vv - kv * pv;
    }
}

/// The filter of one tracked box.
#[derive(Debug, Clone)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

/// Position noise per frame, as a fraction of the box height (DeepSORT's 1/20 and 1/160).
const POS_NOISE: f32 = 1.0 / 20.0;
const VEL_NOISE: f32 = 1.0 / 160.0;

impl BoxFilter {
    pub fn new(b: BoxXyxy) -> BoxFilter {
        let h = (b[3] - b[1]).max(1.0);
        let (cx, cy, w) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, (b[2] - b[0]).max(1.0));
        let pos = 2.0 * POS_NOISE * h;
        let vel = 10.0 * VEL_NOISE * h;
        BoxFilter {
            axes: [Axis::new(cx, pos, vel), Axis::new(cy, pos, vel), Axis::new(w, pos, vel), Axis::new(h, pos, vel)],
        }
    }

    fn height(&self) -> f32 {
        self.axes[3].p.max(1.0)
    }

    /// Moves the box one frame along its velocity.
    pub fn predict(&mut self) {
        let h = self.height();
        let (q_pos, q_vel) = ((POS_NOISE * h).powi(2), (VEL_NOISE * h).powi(2));
        for a in &mut self.axes {
            a.predict(q_pos, q_vel);
        }
        // a shrinking box never turns inside out
        for a in &mut self.axes[2..] {
            a.p = a.p.max(1.0);
        }
    }

    /// Corrects the prediction with a detected box.
    pub fn update(&mut self, b: BoxXyxy) {
        let r = (POS_NOISE * self.height()).powi(2);
        let z = [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, (b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0)];
        for (a, z) in self.axes.iter_mut().zip(z) {
            a.update(z, r);
        }
    }

    /// The box the filter believes in now.
    pub fn current(&self) -> BoxXyxy {
        let [cx, cy, w, h] = self.axes.map(|a| a.p);
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Velocity of the centre, pixels per frame.
    #[cfg(test)]
    pub fn velocity(&self) -> (f32, f32) {
        (self.axes[0].v, self.axes[1].v)
    }
}

pub use edge_core::vision::nms::{area, intersection, iou};

pub fn union(a: &BoxXyxy, b: &BoxXyxy) -> BoxXyxy {
    [a[0].min(b[0]), a[1].min(b[1]), a[2].max(b[2]), a[3].max(b[3])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_mover_is_predicted_ahead() {
        let mut f = BoxFilter::new([0.0, 0.0, 40.0, 80.0]);
        for i in 1..=10 {
            f.predict();
            let x = 8.0 * i as f32;
            f.update([x, 0.0, x + 40.0, 80.0]);
        }
        let (vx, vy) = f.velocity();
        assert!((vx - 8.0).abs() < 1.5 && vy.abs() < 0.5, "velocity {vx} {vy}");
        f.predict();
        let b = f.current();
        assert!((b[0] - 88.0).abs() < 4.0, "predicted {b:?}");
    }

    #[test]
    fn box_geometry() {
        let (a, b) = ([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]);
        assert_eq!(intersection(&a, &b), 50.0);
        assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(union(&a, &b), [0.0, 0.0, 15.0, 10.0]);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
    }
}
