//! Whisper tiny.en in three tract graphs: the log-mel frontend, the encoder (which also
//! computes every decoder layer's cross-attention keys and values once per utterance), and a
//! one-token decoder step with a growing self-attention cache.
//!
//! Decoding is greedy: prompt `<|startoftranscript|><|notimestamps|>`, then the arg-max token
//! with the model's suppressed ids masked, until `<|endoftext|>`, 224 tokens, or a run of the
//! same token (a hallucination loop). Whisper invents text on silence, so callers must only
//! hand it speech (the VAD stage does).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tract_onnx::prelude::*;

use super::tokenizer::{END_OF_TEXT, NO_TIMESTAMPS, START_OF_TRANSCRIPT, Tokenizer};
use super::{Plan, SAMPLE_RATE, SpeechError, load_plan, model_file, run_err};
use crate::Precision;
use crate::model::SpeechEntry;

/// Whisper's fixed window: 30 s of 16 kHz audio.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Greedy decoding stops here (half the text context, as Whisper does).
const MAX_TOKENS: usize = 224;
/// The same token this many times in a row ends decoding: a loop, not speech.
const MAX_REPEAT: usize = 8;

#[derive(Debug, Deserialize)]
struct Generation {
    suppress_ids: Vec<u32>,
    suppress_ids_begin: Vec<u32>,
}

/// A loaded Whisper model.
pub struct Whisper {
    pub name: String,
    pub version: String,
    pub precision: Precision,
    frontend: Plan,
    encoder: Plan,
    decoder: Plan,
    tokenizer: Tokenizer,
    /// Per vocabulary id: never emitted / not emitted as the first token.
    suppress: Vec<bool>,
    suppress_begin: Vec<bool>,
    layers: usize,
    heads: usize,
    head_dim: usize,
    pub load_time: Duration,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper").field("name", &self.name).field("precision", &self.precision).finish()
    }
}

/// The text of one utterance and where the time went.
#[derive(Debug, Clone)]
pub struct Transcription {
    pub text: String,
    pub tokens: Vec<u32>,
    pub encode: Duration,
    pub decode: Duration,
}

impl Transcription {
    pub fn processing(&self) -> Duration {
        self.encode + self.decode
    }
}

impl Whisper {
    pub fn load(entry: &SpeechEntry, precision: Precision) -> Result<Whisper, SpeechError> {
        let started = Instant::now();
        let frontend = load_plan(&model_file(entry, &precision, "frontend")?)?;
        let encoder = load_plan(&model_file(entry, &precision, "encoder")?)?;
        let decoder = load_plan(&model_file(entry, &precision, "decoder")?)?;
        let vocab = model_file(entry, &precision, "vocabulary")?;
        let tokenizer = Tokenizer::from_file(&vocab)
            .map_err(|e| SpeechError::Load { path: vocab.clone(), message: e.to_string() })?;
        let gen_path = model_file(entry, &precision, "generation")?;
        let generation: Generation = std::fs::read_to_string(&gen_path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|message| SpeechError::Load { path: gen_path.clone(), message })?;
        // the cache layout comes from the decoder's declared inputs: self_k_0 is [1, H, P, D]
        let model = decoder.model();
        let inputs = model.input_outlets().map_err(run_err)?;
        let layers = (inputs.len() - 1) / 4;
        let fact = model.outlet_fact(inputs[1]).map_err(run_err)?;
        let dims: Vec<usize> =
            fact.shape.iter().filter_map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok())).collect();
        let (heads, head_dim) = match dims[..] {
            [1, h, d] => (h, d),
            _ => {
                return Err(SpeechError::Load {
                    path: entry.dir.clone(),
                    message: format!("unexpected decoder cache shape {:?}", fact.shape),
                });
            }
        };
        let w = Whisper {
            name: entry.manifest.name.clone(),
            version: entry.manifest.version.clone(),
            precision,
            frontend,
            encoder,
            decoder,
            suppress: mask(tokenizer.len(), &generation.suppress_ids),
            suppress_begin: mask(tokenizer.len(), &generation.suppress_ids_begin),
            tokenizer,
            layers,
            heads,
            head_dim,
            load_time: Duration::ZERO,
        };
        Ok(Whisper { load_time: started.elapsed(), ..w })
    }

    /// Transcribes up to 30 s of 16 kHz mono audio (longer input is cut at 30 s; the VAD
    /// stage splits long speech at pauses before it gets here).
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcription, SpeechError> {
        let started = Instant::now();
        let mut audio = vec![0f32; WINDOW_SAMPLES];
        let n = samples.len().min(WINDOW_SAMPLES);
        audio[..n].copy_from_slice(&samples[..n]);
        let audio = Tensor::from_shape(&[1, WINDOW_SAMPLES], &audio).map_err(run_err)?;
        let mel = self.frontend.run(tvec!(audio.into())).map_err(run_err)?;
        let cross = self.encoder.run(mel).map_err(run_err)?;
        let encode = started.elapsed();
        let started = Instant::now();
        let tokens = self.decode(&cross)?;
        let text = self.tokenizer.decode(&tokens).trim().to_string();
        Ok(Transcription { text, tokens, encode, decode: started.elapsed() })
    }

    fn decode(&self, cross: &TVec<TValue>) -> Result<Vec<u32>, SpeechError> {
        let empty = Tensor::zero::<f32>(&[1, self.heads, 0, self.head_dim]).map_err(run_err)?.into_tvalue();
        let mut cache: Vec<TValue> = vec![empty; 2 * self.layers];
        let prompt = [START_OF_TRANSCRIPT, NO_TIMESTAMPS];
        let mut out: Vec<u32> = Vec::new();
        for step in 0..prompt.len() + MAX_TOKENS {
            let token = match prompt.get(step) {
                Some(t) => *t,
                None => match out.last() {
                    Some(t) => *t,
                    None => break,
                },
            };
            let mut inputs: TVec<TValue> = tvec![tensor2(&[[token as i64]]).into_tvalue()];
            inputs.extend(cache.drain(..));
            inputs.extend(cross.iter().cloned());
            let mut outputs = self.decoder.run(inputs).map_err(run_err)?;
            cache = outputs.drain(1..).collect();
            if step + 1 < prompt.len() {
                continue;
            }
            let logits = outputs[0].to_plain_array_view::<f32>().map_err(run_err)?;
            let next = self.pick(logits.as_slice().unwrap_or(&[]), out.is_empty());
            match next {
                Some(t) if t != END_OF_TEXT => out.push(t),
                _ => break,
            }
            if out.len() >= MAX_REPEAT && out[out.len() - MAX_REPEAT..].iter().all(|&t| t == out[out.len() - 1]) {
                out.truncate(out.len() - MAX_REPEAT + 1);
                break;
            }
        }
        Ok(out)
    }

    /// Arg-max over the logits with the suppressed ids (and at the start, the begin-suppressed
    /// ones: a leading space and end of text) masked out.
    fn pick(&self, logits: &[f32], first: bool) -> Option<u32> {
        let masked = |i: usize| {
            i > END_OF_TEXT as usize
                || self.suppress.get(i).copied().unwrap_or(true)
                || (first && self.suppress_begin.get(i).copied().unwrap_or(true))
        };
        logits
            .iter()
            .enumerate()
            .filter(|(i, v)| v.is_finite() && !masked(*i))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

fn mask(len: usize, ids: &[u32]) -> Vec<bool> {
    let mut m = vec![false; len];
    for &i in ids {
        if let Some(slot) = m.get_mut(i as usize) {
            *slot = true;
        }
    }
    m
}
