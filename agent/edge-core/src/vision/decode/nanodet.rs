//! NanoDet's GFL head. Per stride `s` the grid is `W/s × H/s`; cell `i` (row-major) has
//! sigmoid class scores and, per box side (left, top, right, bottom), a distribution over
//! `bins` distances: the side's distance is the distribution's expectation × `s`, measured from
//! the cell centre `((x + 0.5)·s, (y + 0.5)·s)`.

use tract_onnx::prelude::*;

use super::{DecodeError, rows};
use crate::vision::Candidate;

pub fn decode(
    strides: &[u32],
    bins: usize,
    outputs: &[TValue],
    (iw, ih): (u32, u32),
    classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>, DecodeError> {
    let mut out = Vec::new();
    for (level, &stride) in strides.iter().enumerate() {
        let (gw, gh) = (iw.div_ceil(stride) as usize, ih.div_ceil(stride) as usize);
        let scores = rows(outputs, level, gw * gh, classes)?;
        let boxes = rows(outputs, strides.len() + level, gw * gh, 4 * bins)?;
        for cell in 0..gw * gh {
            let cell_scores = scores.row(cell);
            let mut sides: Option<[f32; 4]> = None;
            for (class_id, &score) in cell_scores.iter().enumerate() {
                if score < threshold {
                    continue;
                }
                let d = *sides.get_or_insert_with(|| {
                    let reg = boxes.row(cell);
                    let mut d = [0f32; 4];
                    for (k, side) in d.iter_mut().enumerate() {
                        let row: Vec<f32> = (0..bins).map(|b| reg[k * bins + b]).collect();
                        *side = expectation(&row) * stride as f32;
                    }
                    d
                });
                let cx = ((cell % gw) as f32 + 0.5) * stride as f32;
                let cy = ((cell / gw) as f32 + 0.5) * stride as f32;
                out.push(Candidate {
                    class_id: class_id as u32,
                    score,
                    bbox: [cx - d[0], cy - d[1], cx + d[2], cy + d[3]],
                });
            }
        }
    }
    Ok(out)
}

/// Σ b · softmax(logits)_b
fn expectation(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().enumerate().map(|(b, e)| b as f32 * e).sum::<f32>() / sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], data: Vec<f32>) -> TValue {
        Tensor::from_shape(shape, &data).unwrap().into()
    }

    #[test]
    fn expectation_of_a_peaked_distribution_is_its_bin() {
        let mut l = vec![-50.0; 11];
        l[3] = 50.0;
        assert!((expectation(&l) - 3.0).abs() < 1e-4);
        assert!((expectation(&[0.0; 11]) - 5.0).abs() < 1e-4);
    }

    #[test]
    fn one_cell_one_class_decodes_to_a_box_around_its_centre() {
        // a 16x16 input with stride 8: 2x2 cells, 2 classes, 3 bins
        let mut scores = vec![0.0; 4 * 2];
        scores[3 * 2 + 1] = 0.9; // cell 3 (x=1, y=1), class 1
        let mut reg = vec![-50.0; 4 * 12];
        for side in 0..4 {
            reg[3 * 12 + side * 3 + 1] = 50.0; // every side: 1 bin = 8 px
        }
        let outputs = vec![tensor(&[1, 4, 2], scores), tensor(&[1, 4, 12], reg)];
        let c = decode(&[8], 3, &outputs, (16, 16), 2, 0.5).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 1);
        let b = c[0].bbox;
        for (got, want) in b.iter().zip([4.0, 4.0, 20.0, 20.0]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let outputs = vec![tensor(&[1, 3, 2], vec![0.0; 6]), tensor(&[1, 4, 12], vec![0.0; 48])];
        assert!(matches!(decode(&[8], 3, &outputs, (16, 16), 2, 0.5), Err(DecodeError::Shape { .. })));
        assert!(decode(&[8], 3, &outputs[..1], (16, 16), 2, 0.5).is_err());
    }
}
