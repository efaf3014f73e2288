//! Training a head on a device: a folder with one sub-folder per label is embedded by the
//! backbone, split into training and held-out examples (stratified, seeded), and a softmax
//! (multinomial logistic) regression with L2 is fitted by full-batch gradient descent with a
//! backtracking line search. Features are standardised for the fit and the standardisation is
//! folded back into the weights, so the head reads raw embeddings.
//!
//! The loss is convex, so the line search needs no tuning; the matrix products go through
//! ndarray (optimised even in debug builds).

use std::path::{Path, PathBuf};

use tract_onnx::prelude::tract_ndarray::{Array1, Array2, Axis};

/// Image files a dataset folder may hold.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("dataset {0}: {1}")]
    Dataset(PathBuf, String),
}

/// Labelled image files: `examples[i] = (path, label index)`, labels in folder-name order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub labels: Vec<String>,
    pub examples: Vec<(PathBuf, usize)>,
}

impl Dataset {
    /// Reads `dir/<label>/*.{png,jpg,jpeg,bmp}`; needs two labels with images each.
    pub fn open(dir: &Path) -> Result<Dataset, TrainError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| TrainError::Io(p, e)
        };
        let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        let mut labels = Vec::new();
        let mut examples = Vec::new();
        for folder in folders {
            let label = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(io(&folder))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            if files.is_empty() {
                continue;
            }
            files.sort();
            let index = labels.len();
            labels.push(label);
            examples.extend(files.into_iter().map(|f| (f, index)));
        }
        if labels.len() < 2 {
            return Err(TrainError::Dataset(
                dir.to_path_buf(),
                format!("needs at least two label folders with images, found {}", labels.len()),
            ));
        }
        Ok(Dataset { labels, examples })
    }

    /// Indices of training and held-out examples: per label, a seeded shuffle, then
    /// `holdout` of them (at least one when the label has two or more) held out.
    pub fn split(&self, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut rng = SplitMix(seed);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for label in 0..self.labels.len() {
            let mut idx: Vec<usize> =
                self.examples.iter().enumerate().filter(|(_, e)| e.1 == label).map(|(i, _)| i).collect();
            for i in (1..idx.len()).rev() {
                idx.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            let n_val = if idx.len() >= 2 && holdout > 0.0 {
                ((idx.len() as f64 * holdout).round() as usize).clamp(1, idx.len() - 1)
            } else {
                0
            };
            val.extend_from_slice(&idx[..n_val]);
            train.extend_from_slice(&idx[n_val..]);
        }
        (train, val)
    }
}

/// A small deterministic generator for the split (not for anything secret).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fitting settings.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// L2 penalty on the (standardised) weights.
    pub l2: f32,
    pub max_iters: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { l2: 1e-3, max_iters: 300 }
    }
}

/// Fitted parameters on raw features: `weight [classes, dim]`, `bias [classes]`.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
    pub iterations: usize,
    pub final_loss: f32,
}

/// Fits a softmax regression of `y` (class indices below `classes`) on the rows of `x`.
pub fn fit(x: &Array2<f32>, y: &[usize], classes: usize, opts: FitOptions) -> Fitted {
    let (n, d) = x.dim();
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let std = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-6 { s } else { 1.0 });
    let z = (x - &mean) / &std;
    let mut onehot = Array2::<f32>::zeros((n, classes));
    for (i, &c) in y.iter().enumerate() {
        onehot[[i, c]] = 1.0;
    }
    let mut w = Array2::<f32>::zeros((classes, d));
    let mut b = Array1::<f32>::zeros(classes);
    let (mut loss, mut gw, mut gb) = loss_grad(&z, &onehot, &w, &b, opts.l2);
    let mut step = 1.0f32;
    let mut iterations = 0;
    for _ in 0..opts.max_iters {
        iterations += 1;
        let g2 = gw.iter().chain(gb.iter()).map(|g| g * g).sum::<f32>();
        if g2.sqrt() < 1e-5 {
            break;
        }
        // backtracking (Armijo): halve the step until the loss drops enough
        loop {
            let w_try = &w - &(&gw * step);
            let b_try = &b - &(&gb * step);
            let (l_try, gw_try, gb_try) = loss_grad(&z, &onehot, &w_try, &b_try, opts.l2);
            if l_try <= loss - 0.5 * step * g2 || step < 1e-8 {
                (w, b, loss, gw, gb) = (w_try, b_try, l_try, gw_try, gb_try);
                step *= 1.5;
                break;
            }
            step *= 0.5;
        }
    }
    // fold the standardisation: w.((x - m)/s) + b = (w/s).x + (b - (w/s).m)
    let weight = &w / &std;
    let bias = &b - &weight.dot(&mean);
    Fitted { weight, bias, iterations, final_loss: loss }
}

/// Mean cross-entropy plus L2, and its gradients.
fn loss_grad(
    z: &Array2<f32>,
    onehot: &Array2<f32>,
    w: &Array2<f32>,
    b: &Array1<f32>,
    l2: f32,
) -> (f32, Array2<f32>, Array1<f32>) {
    let n = z.nrows() as f32;
    let mut p = z.dot(&w.t()) + b;
    let mut ce = 0.0f32;
    for (mut row, target) in p.axis_iter_mut(Axis(0)).zip(onehot.axis_iter(Axis(0))) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
        ce -= row.iter().zip(target).filter(|(_, t)| **t > 0.0).map(|(p, _)| p.max(1e-12).ln()).sum::<f32>();
    }
    let g = (p - onehot) / n;
    let gw = g.t().dot(z) + &(w * l2);
    let gb = g.sum_axis(Axis(0));
    let loss = ce / n + 0.5 * l2 * w.iter().map(|v| v * v).sum::<f32>();
    (loss, gw, gb)
}

/// Share of rows whose highest score is their label.
pub fn accuracy(weight: &Array2<f32>, bias: &Array1<f32>, x: &Array2<f32>, y: &[usize]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    let scores = x.dot(&weight.t()) + bias;
    let hits = scores
        .axis_iter(Axis(0))
        .zip(y)
        .filter(|(row, label)| {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
            best == Some(**label)
        })
        .count();
    hits as f64 / y.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian blobs in 5-d, well apart: the fit must separate them.
    #[test]
    fn separates_blobs_and_folds_standardisation() {
        let mut rng = SplitMix(7);
        let mut unit = || (rng.next() % 10_000) as f32 / 10_000.0 - 0.5;
        let centres = [[5.0, 0.0, 0.0, 100.0, 1.0], [0.0, 5.0, 0.0, 100.0, 1.0], [0.0, 0.0, 5.0, 100.0, 1.0]];
        let (mut rows, mut y) = (Vec::new(), Vec::new());
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..30 {
                rows.extend(centre.iter().map(|v| v + unit() * 2.0));
                y.push(c);
            }
        }
        let x = Array2::from_shape_vec((90, 5), rows).unwrap();
        let f = fit(&x, &y, 3, FitOptions::default());
        assert!(accuracy(&f.weight, &f.bias, &x, &y) > 0.97, "loss {}", f.final_loss);
        assert!(f.final_loss < 0.2);
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let ds = Dataset {
            labels: vec!["a".into(), "b".into()],
            examples: (0..20).map(|i| (PathBuf::from(format!("{i}")), i % 2)).collect(),
        };
        let (train, val) = ds.split(0.2, 1);
        assert_eq!((train.len(), val.len()), (16, 4));
        assert_eq!(val.iter().filter(|&&i| ds.examples[i].1 == 0).count(), 2);
        assert_eq!(ds.split(0.2, 1), (train, val));
    }
}
