//! Whisper tiny.en in three tract graphs: the log-mel frontend, the encoder (which also
//! computes every decoder layer's cross-attention keys and values once per utterance), and a
//! one-token decoder step with a growing self-attention cache.
//!
//! Decoding is greedy: prompt `<|startoftranscript|><|notimestamps|>`, then the arg-max token
//! with the model's suppressed ids masked, until `<|endoftext|>`, 224 tokens, or a run of the
//! same token (a hallucination loop). Whisper invents text on silence, so callers must only
//! hand it speech (the VAD stage does).
//!
//! The encoder runs on a window sized to the utterance ([`super::window`]): a 3 s utterance
//! pays for 5 s of encoder, not 30. An utterance whose short window did not end in
//! `<|endoftext|>` (a loop, more text than the speech can hold) or whose tokens the model was
//! unsure of (mean log-probability below [`MIN_AVG_LOGPROB`]) is redone on the full window,
//! which is what the model was trained on.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tract_onnx::prelude::*;

use super::tokenizer::{END_OF_TEXT, NO_TIMESTAMPS, START_OF_TRANSCRIPT, Tokenizer};
use super::window::{self, FULL_FRAMES, WINDOWS};
use super::{Plan, SAMPLE_RATE, SpeechError, load_plan, load_proto_plan, model_file, run_err};
use crate::Precision;
use crate::model::SpeechEntry;

/// Whisper's fixed window: 30 s of 16 kHz audio.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Greedy decoding stops here (half the text context, as Whisper does).
const MAX_TOKENS: usize = 224;
/// The same token this many times in a row ends decoding: a loop, not speech.
const MAX_REPEAT: usize = 8;
/// More tokens than this per second of speech (plus [`TOKENS_SLACK`]) is text the audio cannot
/// hold: fast English speech is about 4 tokens a second.
const MAX_TOKENS_PER_SEC: f32 = 8.0;
const TOKENS_SLACK: f32 = 8.0;
/// A shortened window's answer the model was less sure of than this (mean log-probability per
/// token) is redone on the full window. On the speech fixtures the answers a short window got
/// wrong (words repeated, invented) scored -0.82 to -0.96 where the 30 s window scored about
/// -0.53 on the same audio; every answer kept scored -0.67 or better.
const MIN_AVG_LOGPROB: f32 = -0.75;
/// Shortened windows an utterance may try before the full one: the one sized to it and the
/// next one up.
const SHORT_TRIES: usize = 2;

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
    /// per window of [`WINDOWS`], its encoder, loaded on first use (the shortest at load)
    encoders: Vec<OnceLock<Result<Plan, String>>>,
    encoder_path: PathBuf,
    /// how the encoder's int8 weights are multiplied (timed at load, [`arithmetic`])
    encoder_exec: edge_int8::Int8Exec,
    /// whether utterances get windows sized to them (`false`: always the full 30 s)
    sized: bool,
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
    /// seconds of audio the encoder ran on (the last attempt's)
    pub window_secs: f32,
    /// whether a shortened window's answer was refused and the full window redid it
    pub redone: bool,
    /// mean log-probability of the chosen tokens (end of text included): how sure the model was
    pub avg_logprob: f32,
}

/// One greedy decoding.
struct Decoded {
    tokens: Vec<u32>,
    /// ended in `<|endoftext|>`, not the token limit or a loop
    ended: bool,
    avg_logprob: f32,
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
        let encoder_path = model_file(entry, &precision, "encoder")?;
        // the shortest window's encoder is loaded now (a bad file fails here); the others,
        // the full 30 s one included, when an utterance first needs them: most speech never
        // does, and each costs its weights and working memory again
        let (encoder_exec, shortest) = arithmetic(&encoder_path, &precision)?;
        let decoder_path = model_file(entry, &precision, "decoder")?;
        let load_err = |e: TractError| SpeechError::Load { path: decoder_path.clone(), message: format!("{e:#}") };
        let proto = tract_onnx::onnx().proto_model_for_path(&decoder_path).map_err(load_err)?;
        let proto = window::decoder_for_any_window(proto).map_err(load_err)?;
        let decoder = load_proto_plan(proto, &decoder_path, edge_int8::Int8Exec::Integer)?;
        let encoders: Vec<OnceLock<Result<Plan, String>>> =
            std::iter::once(OnceLock::from(Ok(shortest))).chain(WINDOWS[1..].iter().map(|_| OnceLock::new())).collect();
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
            encoders,
            encoder_path,
            encoder_exec,
            sized: true,
            decoder,
            suppress: mask(tokenizer.len(), &generation.suppress_ids),
            suppress_begin: mask(tokenizer.len(), &generation.suppress_ids_begin),
            tokenizer,
            layers,
            heads,
            head_dim,
            load_time: Duration::ZERO,
        };
        // the protos, unoptimised graphs and the encoder plan not chosen are not needed again
        crate::heap::release_free();
        Ok(Whisper { load_time: started.elapsed(), ..w })
    }

    /// Whether utterances get encoder windows sized to them (the default) or always 30 s.
    /// Always 30 s loads that window's encoder now rather than at the first utterance.
    pub fn set_sized_windows(&mut self, sized: bool) {
        self.sized = sized;
        if !sized && let Err(message) = self.encoder(FULL_FRAMES) {
            tracing::warn!(model = %self.name, %message, "the 30 s encoder did not load");
        }
    }

    /// See [`Whisper::set_sized_windows`].
    pub fn sized_windows(&self) -> bool {
        self.sized
    }

    /// Transcribes up to 30 s of 16 kHz mono audio (longer input is cut at 30 s; the VAD
    /// stage splits long speech at pauses before it gets here).
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcription, SpeechError> {
        let started = Instant::now();
        let mut audio = vec![0f32; WINDOW_SAMPLES];
        let n = samples.len().min(WINDOW_SAMPLES);
        audio[..n].copy_from_slice(&samples[..n]);
        let audio = Tensor::from_shape(&[1, WINDOW_SAMPLES], &audio).map_err(run_err)?;
        let mut mel = self.frontend.run(tvec!(audio.into())).map_err(run_err)?;
        let mel = mel.pop().ok_or_else(|| SpeechError::Run("the frontend gave no log-mel".into()))?.into_tensor();
        let frames = if self.sized { window::frames_for(n) } else { FULL_FRAMES };
        // the frontend's time counts as encoding
        let (mut encode, mut decode) = (started.elapsed(), Duration::ZERO);
        let mut redone = false;
        // the window sized to the speech first; a refused answer is redone on the next window
        // up (the model is surer of itself with more padding), then on the full 30 s
        let shortened = WINDOWS.iter().copied().filter(|&w| w >= frames && w < FULL_FRAMES).take(SHORT_TRIES);
        for frames in shortened {
            let plan = match self.encoder(frames) {
                Ok(plan) => plan,
                Err(message) => {
                    tracing::warn!(frames, %message, "no encoder for a short window; trying a longer one");
                    continue;
                }
            };
            let started = Instant::now();
            let cut = window::cut_mel(&mel, frames).map_err(run_err)?;
            let cross = plan.run(tvec!(cut.into_tvalue())).map_err(run_err)?;
            encode += started.elapsed();
            let started = Instant::now();
            // more tokens than the speech can hold is a loop or invented text: stop there
            // rather than decode up to the limit
            let d = self.decode(&cross, most_tokens(n))?;
            decode += started.elapsed();
            if d.ended && d.avg_logprob >= MIN_AVG_LOGPROB {
                let window_secs = frames as f32 / 100.0;
                return Ok(self.transcription(d, encode, decode, window_secs, redone));
            }
            tracing::debug!(
                frames,
                tokens = d.tokens.len(),
                ended = d.ended,
                avg_logprob = d.avg_logprob,
                text = %self.tokenizer.decode(&d.tokens),
                "short window refused; redone on a longer one"
            );
            redone = true;
        }
        let started = Instant::now();
        let plan = self.encoder(FULL_FRAMES).map_err(SpeechError::Run)?;
        let cross = plan.run(tvec!(mel.into_tvalue())).map_err(run_err)?;
        encode += started.elapsed();
        let started = Instant::now();
        let d = self.decode(&cross, MAX_TOKENS)?;
        decode += started.elapsed();
        Ok(self.transcription(d, encode, decode, 30.0, redone))
    }

    fn transcription(
        &self,
        Decoded { tokens, avg_logprob, .. }: Decoded,
        encode: Duration,
        decode: Duration,
        window_secs: f32,
        redone: bool,
    ) -> Transcription {
        let text = self.tokenizer.decode(&tokens).trim().to_string();
        Transcription { text, tokens, encode, decode, window_secs, redone, avg_logprob }
    }

    /// The encoder of a window of `frames` mel frames, loaded the first time it is asked for.
    fn encoder(&self, frames: usize) -> Result<Plan, String> {
        let i = WINDOWS.iter().position(|&w| w == frames).ok_or_else(|| format!("no window of {frames} frames"))?;
        self.encoders[i]
            .get_or_init(|| {
                let started = Instant::now();
                let loaded = encoder_plan(&self.encoder_path, frames, self.encoder_exec).map_err(|e| e.to_string());
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(model = %self.name, window_secs = frames / 100, load_ms = ms, "encoder window loaded");
                crate::heap::release_free();
                loaded
            })
            .clone()
    }

    /// The tokens of one utterance (at most `limit`), and whether they ended in
    /// `<|endoftext|>` (not the limit or a loop).
    fn decode(&self, cross: &TVec<TValue>, limit: usize) -> Result<Decoded, SpeechError> {
        let empty = Tensor::zero::<f32>(&[1, self.heads, 0, self.head_dim]).map_err(run_err)?.into_tvalue();
        let mut cache: Vec<TValue> = vec![empty; 2 * self.layers];
        let prompt = [START_OF_TRANSCRIPT, NO_TIMESTAMPS];
        let mut out: Vec<u32> = Vec::new();
        let mut ended = false;
        let mut sum_logprob = 0f32;
        for step in 0..prompt.len() + limit {
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
                Some((t, logprob)) if t != END_OF_TEXT => {
                    out.push(t);
                    sum_logprob += logprob;
                }
                Some((_, logprob)) => {
                    sum_logprob += logprob;
                    ended = true;
                    break;
                }
                None => break,
            }
            if out.len() >= MAX_REPEAT && out[out.len() - MAX_REPEAT..].iter().all(|&t| t == out[out.len() - 1]) {
                out.truncate(out.len() - MAX_REPEAT + 1);
                break;
            }
        }
        let avg_logprob = sum_logprob / (out.len() + usize::from(ended)).max(1) as f32;
        Ok(Decoded { tokens: out, ended, avg_logprob })
    }

    /// Arg-max over the logits with the suppressed ids (and at the start, the begin-suppressed
    /// ones: a leading space and end of text) masked out.
    fn pick(&self, logits: &[f32], first: bool) -> Option<(u32, f32)> {
        let masked = |i: usize| {
            i > END_OF_TEXT as usize
                || self.suppress.get(i).copied().unwrap_or(true)
                || (first && self.suppress_begin.get(i).copied().unwrap_or(true))
        };
        let open = || logits.iter().enumerate().filter(|(i, v)| v.is_finite() && !masked(*i)).map(|(_, v)| *v);
        let (best, top) = logits
            .iter()
            .enumerate()
            .filter(|(i, v)| v.is_finite() && !masked(*i))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, v)| (i as u32, *v))?;
        // log-softmax of the pick over the tokens it could have been
        let sum: f32 = open().map(|v| (v - top).exp()).sum();
        Some((best, -sum.ln()))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// The most tokens `samples` of speech can be the text of (more is invented text).
fn most_tokens(samples: usize) -> usize {
    let most = samples as f32 / SAMPLE_RATE as f32 * MAX_TOKENS_PER_SEC + TOKENS_SLACK;
    (most as usize).min(MAX_TOKENS)
}

/// How an int8 encoder's matmuls run here, timed once at load on the shortest window's
/// encoder loaded both ways: in integers (the weights stay int8 in memory) or in float from
/// weights dequantized at load (4x their memory: about 24 MB more for tiny.en). Which is
/// faster depends on the core: with a dot-product instruction (VNNI, AMX, ARM's `sdot`) the
/// integer products win; on an AVX2-only Zen 3 tract's widening i8 kernels lost to its f32
/// ones by 2.3x on this encoder (measured). Every answer is computed from the same int8
/// weights either way. Also the winner's plan for the shortest window, to keep. An fp32
/// encoder has no int8 weights: nothing to choose, its plan is loaded as written.
fn arithmetic(path: &std::path::Path, precision: &Precision) -> Result<(edge_int8::Int8Exec, Plan), SpeechError> {
    use edge_int8::Int8Exec::{FloatWeights, Integer};
    let frames = WINDOWS[0];
    if *precision != Precision::Int8 {
        return Ok((Integer, encoder_plan(path, frames, Integer)?));
    }
    let err = |e: TractError| SpeechError::Load { path: path.to_path_buf(), message: format!("{e:#}") };
    let mel = Tensor::zero::<f32>(&[1, 80, frames]).map_err(err)?;
    let mut best: Option<(Duration, edge_int8::Int8Exec, Plan)> = None;
    for exec in [Integer, FloatWeights] {
        let plan = encoder_plan(path, frames, exec)?;
        let mut fastest = Duration::MAX;
        // the first run allocates; the second counts (the two differ by 2-3x, not by noise)
        for run in 0..2 {
            let started = Instant::now();
            plan.run(tvec!(mel.clone().into_tvalue())).map_err(run_err)?;
            if run > 0 {
                fastest = fastest.min(started.elapsed());
            }
        }
        tracing::debug!(?exec, ms = fastest.as_secs_f64() * 1e3, "encoder arithmetic timed");
        if best.as_ref().is_none_or(|(t, ..)| fastest < *t) {
            best = Some((fastest, exec, plan));
        }
    }
    let (ms, exec, plan) = best
        .map(|(t, e, p)| (t.as_secs_f64() * 1e3, e, p))
        .ok_or_else(|| err(tract_onnx::tract_core::internal::format_err!("no encoder timed")))?;
    tracing::info!(?exec, window_ms = ms, "Whisper encoder arithmetic chosen by timing");
    Ok((exec, plan))
}

/// The encoder file at `path` rewritten for a window of `frames` mel frames, loaded.
fn encoder_plan(path: &std::path::Path, frames: usize, exec: edge_int8::Int8Exec) -> Result<Plan, SpeechError> {
    let err = |e: TractError| SpeechError::Load { path: path.to_path_buf(), message: format!("{e:#}") };
    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(err)?;
    load_proto_plan(window::encoder_for(proto, frames).map_err(err)?, path, exec)
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
