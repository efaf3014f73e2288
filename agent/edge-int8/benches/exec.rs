//! The int8 engine against tract running the same QDQ graph as written, side by side in one
//! run: median milliseconds per inference of each shipped int8 vision model, and the ratio.
//! `cargo bench -p edge-int8`

use std::path::Path;
use std::time::Instant;

use edge_int8::{Int8Exec, onnx_model};
use tract_onnx::prelude::*;

/// (model folder, int8 file, input shape)
const MODELS: &[(&str, &str, [usize; 4])] = &[
    ("blazeface", "blazeface.int8.onnx", [1, 3, 128, 128]),
    ("efficientnet-lite0", "backbone.int8.onnx", [1, 3, 224, 224]),
    ("nanodet", "nanodet.int8.onnx", [1, 3, 416, 416]),
];

fn plan(path: &Path, shape: &[usize], exec: Int8Exec) -> TypedRunnableModel {
    let (model, _) = onnx_model(path, exec).expect("parse");
    let model = model.with_input_fact(0, f32::fact(shape).into()).expect("input").into_optimized().expect("optimise");
    model.into_runnable().expect("plan")
}

fn median_ms(plan: &TypedRunnableModel, input: &Tensor, runs: usize) -> f64 {
    plan.run(tvec!(input.clone().into())).expect("warm-up");
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            plan.run(tvec!(input.clone().into())).expect("run");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    println!("{:<20} {:>12} {:>12} {:>8}", "model", "integer ms", "as QDQ ms", "ratio");
    for (dir, file, shape) in MODELS {
        let path = models.join(dir).join(file);
        let input = Tensor::from(tract_ndarray::Array4::<f32>::from_shape_fn(
            (shape[0], shape[1], shape[2], shape[3]),
            |(_, c, y, x)| ((x * 7 + y * 3 + c * 11) % 255) as f32 / 128.0 - 1.0,
        ));
        let integer = plan(&path, shape, Int8Exec::Integer);
        let fake = plan(&path, shape, Int8Exec::FakeQuant);
        // interleaved rounds, so a slow spell of the machine slows both columns alike
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            a.push(median_ms(&integer, &input, 10));
            b.push(median_ms(&fake, &input, 10));
        }
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (a, b) = (a[1], b[1]);
        println!("{dir:<20} {a:>12.2} {b:>12.2} {:>8.2}", a / b);
    }
}
