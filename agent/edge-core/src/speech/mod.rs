//! Speech: voice activity detection (Silero VAD) and transcription (Whisper tiny.en), both in
//! tract. Audio arrives as 16 kHz mono f32; everything here is blocking and runs on the
//! pipeline's inference thread.

pub mod attention;
pub mod offline;
pub mod segmenter;
pub mod tokenizer;
pub mod vad;
pub mod wer;
pub mod whisper;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TypedModelPatch;

use crate::Precision;
use crate::model::SpeechEntry;
use edge_int8::Int8Exec;

/// Whisper's and Silero's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("model {name} has no {role} file for {precision}")]
    NoFile { name: String, role: String, precision: Precision },
    #[error("model file {path} is missing{}", hint.as_ref().map(|h| format!(" (produce it with: {h})")).unwrap_or_default())]
    Missing { path: PathBuf, hint: Option<String> },
    #[error("{path}: sha256 {actual} does not match the manifest's {expected}; refusing to load")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("cannot load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Run(String),
}

pub type Plan = Arc<TypedRunnableModel>;

/// The checked path of one file of a speech model.
pub(crate) fn model_file(entry: &SpeechEntry, precision: &Precision, role: &str) -> Result<PathBuf, SpeechError> {
    let (path, f) = entry.file(precision, role).ok_or_else(|| SpeechError::NoFile {
        name: entry.manifest.name.clone(),
        role: role.into(),
        precision: precision.clone(),
    })?;
    if !path.is_file() {
        return Err(SpeechError::Missing { path, hint: entry.make_hint(precision) });
    }
    let actual = crate::model::sha256_file(&path)
        .map_err(|e| SpeechError::Load { path: path.clone(), message: e.to_string() })?;
    if !actual.eq_ignore_ascii_case(&f.sha256) {
        return Err(SpeechError::Checksum { path, expected: f.sha256.clone(), actual });
    }
    Ok(path)
}

/// Parses, optimises and makes runnable an ONNX graph whose inputs are fully declared in the
/// file (symbolic dims such as a cache length stay symbolic). Weights stored as int8 behind a
/// `DequantizeLinear` become integer matmuls (the `edge_int8` crate); any other
/// int8 weights are dequantized once, here (see [`fold_constants`]).
pub(crate) fn load_plan(path: &Path) -> Result<Plan, SpeechError> {
    load_plan_with(path, Int8Exec::Integer)
}

/// [`load_plan`], choosing how int8 weights run: `FakeQuant` folds them all back to float.
pub fn load_plan_with(path: &Path, exec: Int8Exec) -> Result<Plan, SpeechError> {
    let err = |e: TractError| SpeechError::Load { path: path.to_path_buf(), message: format!("{e:#}") };
    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(err)?;
    load_proto_plan(proto, path, exec)
}

/// [`load_plan_with`] from a parsed (and possibly rewritten) graph; `path` names it in errors.
pub(crate) fn load_proto_plan(
    proto: tract_onnx::pb::ModelProto,
    path: &Path,
    exec: Int8Exec,
) -> Result<Plan, SpeechError> {
    let err = |e: TractError| SpeechError::Load { path: path.to_path_buf(), message: format!("{e:#}") };
    // a graph that panics tract is an error like any other bad file (see `engine::unpanicked`)
    crate::model::engine::unpanicked(|| load_plan_unguarded(proto, exec))
        .unwrap_or_else(|panic| {
            Err(tract_onnx::tract_core::internal::format_err!("the graph trips a bug in tract: {panic}"))
        })
        .map_err(err)
}

fn load_plan_unguarded(proto: tract_onnx::pb::ModelProto, exec: Int8Exec) -> TractResult<Plan> {
    edge_int8::onnx_proto_model(proto, exec)
        .and_then(|(m, _)| m.into_typed())
        // before decluttering too: folding the transposed int8 embedding only afterwards left
        // the decoder step about 2x slower (measured), the transpose apparently absorbed into
        // the matmul instead of becoming a plain constant
        .and_then(fold_constants)
        .and_then(|m| m.into_decluttered())
        .and_then(fold_constants)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
}

/// Evaluates every stateless node whose inputs are all constants and replaces it by its value.
///
/// tract's own constant propagation refuses folds whose output is larger than their input, so
/// int8 weights behind a `DequantizeLinear` would be dequantized again on every run: measured on
/// Whisper's decoder step, 3x slower than fp32. Folding them at load keeps the files int8 (4x
/// smaller on disk and to download) and the compute as fast as fp32.
pub(crate) fn fold_constants(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::konst::Const;
    loop {
        let mut patch = None;
        for id in model.eval_order()? {
            let node = model.node(id);
            if node.inputs.is_empty() || node.op_is::<Const>() {
                continue;
            }
            let facts = model.node_input_facts(id)?;
            let Some(inputs) =
                facts.iter().map(|f| f.konst.clone().map(|k| k.into_tvalue())).collect::<Option<TVec<_>>>()
            else {
                continue;
            };
            // ops that need a plan (state, context, a symbol's value) are left alone
            let Ok(Some(outputs)) = node.op.eval_out_of_plan(inputs) else {
                continue;
            };
            let mut p = TypedModelPatch::default();
            for (slot, value) in outputs.into_iter().enumerate() {
                let wire = p.add_const(format!("{}.folded{slot}", node.name), value.into_arc_tensor())?;
                p.shunt_outside(&model, OutletId::new(id, slot), wire)?;
            }
            patch = Some(p);
            break;
        }
        let Some(patch) = patch else {
            return model.into_compact();
        };
        patch.apply(&mut model)?;
        model = model.into_compact()?;
    }
}

pub(crate) fn run_err(e: TractError) -> SpeechError {
    SpeechError::Run(format!("{e:#}"))
}
