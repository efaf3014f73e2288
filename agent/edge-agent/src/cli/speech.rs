//! The `transcribe` command: WAV files in, one JSON line per file out.

use std::path::PathBuf;

use crate::config::{Precision, VadStage};
use edge_core::model::Catalog;
use edge_core::speech::vad::SileroVad;
use edge_core::speech::whisper::Whisper;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no speech model named {name:?} (available: {available})")]
    NoModel { name: String, available: String },
    #[error(transparent)]
    Speech(#[from] edge_core::speech::SpeechError),
}

/// Prints one JSON line per file; returns whether any file failed.
pub fn transcribe_files(
    catalog: &Catalog,
    model: &str,
    precision: Precision,
    full_window: bool,
    wavs: &[PathBuf],
) -> Result<bool, CliError> {
    let vad_stage = VadStage::default();
    let no_model = |name: &str| CliError::NoModel { name: name.into(), available: catalog.names().join(", ") };
    let asr = catalog.get_speech(model).ok_or_else(|| no_model(model))?;
    let vad_entry = catalog.get_speech(&vad_stage.model).ok_or_else(|| no_model(&vad_stage.model))?;
    let mut whisper = Whisper::load(asr, precision)?;
    whisper.set_sized_windows(!full_window);
    let vad_plan = SileroVad::load(vad_entry)?.plan();
    let mut failed = false;
    for path in wavs {
        let source = path.display().to_string();
        let started = std::time::Instant::now();
        let result = edge_core::audio::wav::read_16k(path).map_err(|e| e.to_string()).and_then(|samples| {
            let mut vad = SileroVad::with_plan(vad_plan.clone()).map_err(|e| e.to_string())?;
            edge_core::speech::offline::transcribe(&samples, &mut vad, &whisper, vad_stage.segmenter())
                .map_err(|e| e.to_string())
        });
        let line = match result {
            Ok(t) => serde_json::json!({
                "source": source,
                "text": t.text,
                "segments": t.segments,
                "duration": t.duration,
                "real_time_factor": t.real_time_factor,
                // the whole file: decoding, resampling, the VAD and every segment
                "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                "model": { "name": whisper.name, "version": whisper.version, "precision": whisper.precision.as_str() },
            }),
            Err(e) => {
                failed = true;
                serde_json::json!({ "source": source, "error": e })
            }
        };
        println!("{line}");
    }
    Ok(failed)
}
