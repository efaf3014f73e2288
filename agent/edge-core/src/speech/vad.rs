//! Silero VAD in tract: a speech probability for every 32 ms (512 samples at 16 kHz).
//!
//! The graph takes 64 samples of context (the tail of the previous chunk) plus 512 new ones,
//! and carries an LSTM state `[2, 1, 128]` from chunk to chunk; both live here, one
//! [`SileroVad`] per audio stream.

use tract_onnx::prelude::*;

use super::{Plan, SpeechError, load_plan, model_file, run_err};
use crate::Precision;
use crate::model::SpeechEntry;

/// New samples per call.
pub const CHUNK: usize = 512;
const CONTEXT: usize = 64;
const STATE: [usize; 3] = [2, 1, 128];

pub struct SileroVad {
    plan: Plan,
    state: TValue,
    context: [f32; CONTEXT],
    input: Vec<f32>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SileroVad")
    }
}

impl SileroVad {
    pub fn load(entry: &SpeechEntry) -> Result<SileroVad, SpeechError> {
        let plan = load_plan(&model_file(entry, &Precision::Fp32, "model")?)?;
        SileroVad::with_plan(plan)
    }

    /// A fresh stream on an already loaded graph.
    pub fn with_plan(plan: Plan) -> Result<SileroVad, SpeechError> {
        let state = Tensor::zero::<f32>(&STATE).map_err(run_err)?.into_tvalue();
        Ok(SileroVad { plan, state, context: [0.0; CONTEXT], input: Vec::with_capacity(CONTEXT + CHUNK) })
    }

    pub fn plan(&self) -> Plan {
        self.plan.clone()
    }

    /// The probability that `chunk` (exactly [`CHUNK`] samples, 16 kHz, -1..1) is speech.
    pub fn probability(&mut self, chunk: &[f32]) -> Result<f32, SpeechError> {
        if chunk.len() != CHUNK {
            return Err(SpeechError::Run(format!("VAD chunk of {} samples, expected {CHUNK}", chunk.len())));
        }
        self.input.clear();
        self.input.extend_from_slice(&self.context);
        self.input.extend_from_slice(chunk);
        self.context.copy_from_slice(&chunk[CHUNK - CONTEXT..]);
        let input = Tensor::from_shape(&[1, CONTEXT + CHUNK], &self.input).map_err(run_err)?;
        let mut out = self.plan.run(tvec![input.into_tvalue(), self.state.clone()]).map_err(run_err)?;
        let p = out[0].to_plain_array_view::<f32>().map_err(run_err)?.iter().next().copied().unwrap_or(0.0);
        self.state = out.remove(1);
        Ok(if p.is_finite() { p } else { 0.0 })
    }
}
