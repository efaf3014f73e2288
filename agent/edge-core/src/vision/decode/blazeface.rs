//! MediaPipe BlazeFace (short range). Anchors sit at cell centres of each layer's grid,
//! `anchors` per cell, in row-major order; a regressor row is `(dx, dy, w, h, 6 × (kx, ky))` in
//! input pixels relative to the anchor centre. Scores are logits.

use tract_onnx::prelude::*;

use super::{DecodeError, rows};
use crate::vision::Candidate;

pub fn decode(
    grids: &[u32],
    anchors: &[u32],
    outputs: &[TValue],
    (iw, ih): (u32, u32),
    threshold: f32,
) -> Result<Vec<Candidate>, DecodeError> {
    let mut out = Vec::new();
    for (level, (&grid, &per_cell)) in grids.iter().zip(anchors).enumerate() {
        let n = (grid * grid * per_cell) as usize;
        let scores = rows(outputs, level, n, 1)?;
        let boxes = rows(outputs, grids.len() + level, n, 16)?;
        for i in 0..n {
            let score = sigmoid(scores[[i, 0]]);
            if !(score >= threshold) {
                continue;
            }
            let cell = i / per_cell as usize;
            let ax = ((cell % grid as usize) as f32 + 0.5) / grid as f32 * iw as f32;
            let ay = ((cell / grid as usize) as f32 + 0.5) / grid as f32 * ih as f32;
            let r = boxes.row(i);
            let (cx, cy, w, h) = (ax + r[0], ay + r[1], r[2], r[3]);
            out.push(Candidate { class_id: 0, score, bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0] });
        }
    }
    Ok(out)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_of_the_last_cell_decodes_near_the_corner() {
        // one 2x2 grid with 1 anchor per cell on a 128x128 input
        let mut scores = vec![-10.0f32; 4];
        scores[3] = 10.0;
        let mut reg = vec![0.0f32; 4 * 16];
        reg[3 * 16..3 * 16 + 4].copy_from_slice(&[2.0, -2.0, 20.0, 10.0]);
        let outputs: Vec<TValue> = vec![
            Tensor::from_shape(&[1, 4, 1], &scores).unwrap().into(),
            Tensor::from_shape(&[1, 4, 16], &reg).unwrap().into(),
        ];
        let c = decode(&[2], &[1], &outputs, (128, 128), 0.5).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].bbox, [96.0 + 2.0 - 10.0, 96.0 - 2.0 - 5.0, 96.0 + 2.0 + 10.0, 96.0 - 2.0 + 5.0]);
        assert!(c[0].score > 0.99);
    }
}
