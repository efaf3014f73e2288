//! Checks of audio pipelines: an audio source feeds exactly `vad` then `transcribe`, with
//! settings in range and models that exist and do the right task.

use super::validate::issue;
use super::{Issue, StageConfig};
use edge_core::model::{Catalog, SpeechTask};

pub(super) fn check_audio_stages(path: &str, stages: &[StageConfig], catalog: &Catalog, issues: &mut Vec<Issue>) {
    let (vad, asr) = match stages {
        [StageConfig::Vad(v), StageConfig::Transcribe(t)] => (v, t),
        _ => {
            issues.push(issue(
                format!("{path}.stages"),
                "an audio source needs exactly [{ type = \"vad\" }, { type = \"transcribe\" }]",
            ));
            return;
        }
    };
    let mut model = |at: String, name: &str, task: SpeechTask| match catalog.get_speech(name) {
        Some(m) if m.manifest.task == task => Some(m),
        Some(_) => {
            issues.push(issue(at, format!("{name:?} is not a {task:?} model").to_lowercase()));
            None
        }
        None if catalog.get(name).is_some() => {
            issues.push(issue(at, format!("{name:?} is a vision model, not a {task:?} model").to_lowercase()));
            None
        }
        None => {
            issues.push(issue(at, format!("no model named {name:?} (available: {})", catalog.names().join(", "))));
            None
        }
    };
    model(format!("{path}.stages[0].model"), &vad.model, SpeechTask::Vad);
    if let Some(m) = model(format!("{path}.stages[1].model"), &asr.model, SpeechTask::Transcription)
        && !m.manifest.variants.contains_key(&asr.precision)
    {
        issues.push(issue(
            format!("{path}.stages[1].precision"),
            format!("model {:?} has no {} variant", asr.model, asr.precision),
        ));
    }
    let at = |field: &str| format!("{path}.stages[0].{field}");
    if !(vad.threshold > 0.15 && vad.threshold < 1.0) {
        issues.push(issue(at("threshold"), format!("must be in (0.15, 1), got {}", vad.threshold)));
    }
    if vad.min_silence_ms < 32 || vad.min_silence_ms > 10_000 {
        issues.push(issue(at("min_silence_ms"), "must be in [32, 10000]"));
    }
    if vad.min_speech_ms > 10_000 {
        issues.push(issue(at("min_speech_ms"), "must be at most 10000"));
    }
    if vad.pad_ms > 2_000 {
        issues.push(issue(at("pad_ms"), "must be at most 2000"));
    }
    if !(vad.max_utterance_secs >= 1.0 && vad.max_utterance_secs <= 30.0) {
        issues.push(issue(at("max_utterance_secs"), "must be in [1, 30] (Whisper hears 30 s at most)"));
    }
    if asr.language != "en" {
        issues.push(issue(
            format!("{path}.stages[1].language"),
            format!("the shipped model is English-only (tiny.en); got {:?}", asr.language),
        ));
    }
}
