//! The manifest of an audio model (Whisper, Silero VAD): the same header as a vision model's
//! (name, version, task, provenance) but variants made of several graphs, each checked by sha256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Precision;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechManifest {
    pub name: String,
    pub version: String,
    pub task: SpeechTask,
    pub description: String,
    pub license: String,
    pub source: String,
    pub conversion: String,
    /// Sample rate the model expects, in Hz.
    pub sample_rate: u32,
    /// Files every variant shares (Whisper's log-mel frontend, vocabulary), by role.
    #[serde(default)]
    pub shared: BTreeMap<String, ModelFile>,
    pub variants: BTreeMap<Precision, SpeechVariant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeechTask {
    /// Speech to text (Whisper: roles `frontend`, `vocabulary`, `generation` shared; `encoder`,
    /// `decoder` per variant).
    Transcription,
    /// Voice activity (Silero: role `model`).
    Vad,
}

/// One file of a model, relative to the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechVariant {
    /// The graphs of this precision, by role.
    pub files: BTreeMap<String, ModelFile>,
    /// How to produce the files when they are not in the checkout.
    #[serde(default)]
    pub make: Option<String>,
}
