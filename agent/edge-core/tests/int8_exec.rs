//! Integer execution of the shipped int8 models: the rewrite takes every quantized
//! convolution, and on the fixture photos its outputs stay as close to the fp32 model's as
//! the quantized graph run as written (float convolutions between quantize/dequantize).
#![allow(clippy::unwrap_used)]

mod common;

use edge_core::model::{Catalog, ModelEntry};
use edge_core::vision::preprocess::{Region, letterbox};
use edge_int8::{Int8Exec, Rewritten, onnx_model};
use tract_onnx::prelude::*;

use common::{fixture, models};

fn entry(name: &str) -> ModelEntry {
    Catalog::open(&models()).unwrap().get(name).unwrap().clone()
}

fn file(entry: &ModelEntry, precision: &str) -> std::path::PathBuf {
    let v = entry.manifest.variants.iter().find(|(p, _)| p.to_string() == precision).unwrap().1;
    entry.dir.join(&v.file)
}

/// The model's outputs on a photo, run the given way.
fn outputs(entry: &ModelEntry, precision: &str, exec: Int8Exec, photos: &[Tensor]) -> (Vec<Vec<Vec<f32>>>, Rewritten) {
    let (model, done) = onnx_model(&file(entry, precision), exec).unwrap();
    let plan = model.with_input_fact(0, f32::fact(photos[0].shape()).into()).unwrap().into_optimized().unwrap();
    let plan = plan.into_runnable().unwrap();
    let all = photos
        .iter()
        .map(|x| {
            let out = plan.run(tvec!(x.clone().into())).unwrap();
            out.iter()
                .map(|t| t.cast_to::<f32>().unwrap().try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec())
                .collect()
        })
        .collect();
    (all, done)
}

fn photos(entry: &ModelEntry) -> Vec<Tensor> {
    ["chelsea", "astronaut", "motorcycle"]
        .iter()
        .map(|p| {
            let img = edge_core::source::decode_image_file(&fixture(&format!("{p}.jpg"))).unwrap();
            let region = Region { x: 0, y: 0, w: img.width(), h: img.height() };
            letterbox(&img, region, &entry.manifest.input).0
        })
        .collect()
}

/// Root-mean-square difference of two runs over every output, relative to the reference's RMS.
fn rel_rms(a: &[Vec<Vec<f32>>], reference: &[Vec<Vec<f32>>]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (pa, pr) in a.iter().zip(reference) {
        for (oa, or) in pa.iter().zip(pr) {
            assert_eq!(oa.len(), or.len());
            for (x, y) in oa.iter().zip(or) {
                d += ((x - y) as f64).powi(2);
                r += (*y as f64).powi(2);
            }
        }
    }
    (d / r).sqrt()
}

/// Runs one model three ways and checks the rewrite and the answers' closeness.
fn check(name: &str, convs: usize, depthwise: usize, folded: usize) -> Rewritten {
    let e = entry(name);
    let x = photos(&e);
    let (fp32, none) = outputs(&e, "fp32", Int8Exec::Integer, &x);
    assert_eq!(none.convs, 0, "{name}: the float model has nothing to rewrite");
    let (fake, untouched) = outputs(&e, "int8", Int8Exec::FakeQuant, &x);
    assert_eq!(untouched, Rewritten::default());
    let (int, done) = outputs(&e, "int8", Int8Exec::Integer, &x);
    assert_eq!((done.convs, done.depthwise, done.folded_activations), (convs, depthwise, folded), "{name}: {done:?}");
    assert!(done.left.is_empty(), "{name}: quantized convolutions left in float: {:?}", done.left);
    let (err_int, err_fake) = (rel_rms(&int, &fp32), rel_rms(&fake, &fp32));
    let between = rel_rms(&int, &fake);
    eprintln!("{name}: vs fp32, integer {err_int:.4}, as written {err_fake:.4}; between them {between:.4}; {done:?}");
    // quantization error is the same order either way; integers must not add to it
    assert!(err_int <= err_fake * 1.25 + 0.005, "{name}: integer {err_int} vs as written {err_fake}");
    assert!(err_fake < 0.2, "{name}: the int8 model itself is off by {err_fake}");
    done
}

#[test]
fn nanodet_runs_in_integers_with_the_answers_of_the_quantized_graph() {
    let done = check("nanodet", 34, 0, 28);
    // its max pooling and its 4 resizes (2 up, 2 down), its 12 concatenations and 4
    // additions run on the u8 values
    assert_eq!((done.spatial, done.joins), (5, 16), "{done:?}");
}

#[test]
fn efficientnet_depthwise_convolutions_run_in_integers() {
    let done = check("efficientnet-lite0", 49, 16, 0);
    // the residual additions
    assert_eq!(done.joins, 9, "{done:?}");
}

#[test]
fn blazeface_runs_in_integers() {
    let done = check("blazeface", 33, 16, 0);
    // max poolings, residual additions and the head's concatenations
    assert_eq!((done.spatial, done.joins), (3, 27), "{done:?}");
}

#[test]
fn a_graph_the_rewrite_cannot_take_still_loads_in_float() {
    // the float model's convolutions are not quantized: nothing is rewritten, nothing is lost
    let e = entry("nanodet");
    let (model, done) = onnx_model(&file(&e, "fp32"), Int8Exec::Integer).unwrap();
    assert_eq!(done, Rewritten::default());
    let names: Vec<String> = model.nodes().iter().map(|n| n.op.name().to_string()).collect();
    assert!(names.iter().any(|n| n.contains("Conv")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("Edge")), "{names:?}");
}

/// Whisper's encoder outputs (the cross-attention keys and values) on a spoken sentence.
fn encoder_outputs(dir: &std::path::Path, file: &str, exec: Int8Exec, mel: &Tensor) -> (Vec<Vec<Vec<f32>>>, Rewritten) {
    let (model, done) = onnx_model(&dir.join(file), exec).unwrap();
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let out = plan.run(tvec!(mel.clone().into())).unwrap();
    let all = out.iter().map(|t| t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()).collect();
    (vec![all], done)
}

#[test]
fn whisper_projections_run_in_integers_close_to_float() {
    let dir = models().join("whisper-tiny-en");
    // the decoder step: 4 layers × (query/key/value, output, 2 feed-forward, cross query and
    // output) = 24 projections, plus the output embedding reached through a Transpose
    let (step, decoder) = onnx_model(&dir.join("decoder.int8.onnx"), Int8Exec::Integer).unwrap();
    assert_eq!(decoder.matmuls, 25, "{decoder:?}");
    // and its token embedding stays int8, gathered a row at a time
    assert_eq!(decoder.gathers, 1, "{decoder:?}");
    // its one-token attention products (4 layers × self and cross × scores and values) are
    // streamed row updates, nothing packed per step
    let step = step.into_typed().unwrap();
    let rows = step.nodes().iter().filter(|n| n.op.name() == edge_int8::ROW_MATMUL_OP).count();
    assert_eq!(rows, 16);
    let mut samples =
        edge_core::audio::wav::read_16k(&common::root().join("tests/fixtures/audio/sentences/01-en-us+f3.wav"))
            .unwrap();
    samples.resize(480_000, 0.0);
    let (frontend, _) = onnx_model(&dir.join("frontend.onnx"), Int8Exec::Integer).unwrap();
    let frontend = frontend.into_optimized().unwrap().into_runnable().unwrap();
    let audio = Tensor::from_shape(&[1, 480_000], &samples).unwrap();
    let mel = frontend.run(tvec!(audio.into())).unwrap().remove(0).into_tensor();
    let (fp32, none) = encoder_outputs(&dir, "encoder.fp32.onnx", Int8Exec::Integer, &mel);
    assert_eq!(none, Rewritten::default());
    let (weights_only, _) = encoder_outputs(&dir, "encoder.int8.onnx", Int8Exec::FakeQuant, &mel);
    let (int, done) = encoder_outputs(&dir, "encoder.int8.onnx", Int8Exec::Integer, &mel);
    // 4 layers × (query/key/value, output, 2 feed-forward)
    assert_eq!(done.matmuls, 24, "{done:?}");
    let (err_int, err_w) = (rel_rms(&int, &fp32), rel_rms(&weights_only, &fp32));
    eprintln!("whisper encoder: vs fp32, integer {err_int:.4}, int8 weights in float {err_w:.4}");
    // quantizing the activations too adds error of its own; it must stay of the same order
    assert!(err_int <= err_w * 2.0 + 0.01, "integer {err_int} vs weights-only {err_w}");
}
