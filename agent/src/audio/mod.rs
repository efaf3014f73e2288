//! Audio sources: WAV files and microphones (cpal), each delivering 16 kHz mono f32 samples
//! however the device or file is recorded (any rate, any channel count: downmixed, then
//! resampled with rubato).
//!
//! Like cameras, a microphone stream is opened on its capture thread (cpal's `Stream` is not
//! `Send`), so sources are described by an [`AudioSourceSpec`] whose opener runs there.

pub mod microphone;
pub mod resample;
pub mod wav;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("no audio files match {0}")]
    NoFiles(String),
    #[error("microphone: {0}")]
    Device(String),
    #[error("resampler: {0}")]
    Resample(String),
}

/// A running audio stream.
pub trait AudioStream {
    /// The next block of 16 kHz mono samples; `None` when the stream ended or `cancel` fired.
    fn next_block(&mut self, cancel: &CancellationToken) -> Result<Option<Vec<f32>>, AudioError>;
}

type Opener = dyn Fn() -> Result<Box<dyn AudioStream>, AudioError> + Send + Sync;

/// How to open an audio source, and whether it is live (a microphone) or a batch (files).
#[derive(Clone)]
pub struct AudioSourceSpec {
    pub live: bool,
    pub describe: String,
    /// Samples lost because the pipeline fell behind the device (live sources).
    pub overruns: Arc<AtomicU64>,
    open: Arc<Opener>,
}

impl AudioSourceSpec {
    pub fn open(&self) -> Result<Box<dyn AudioStream>, AudioError> {
        (self.open)()
    }
}

/// Builds the spec of an audio source from its config; `None` for image sources.
pub fn build(config: &SourceConfig) -> Option<Result<AudioSourceSpec, AudioError>> {
    let overruns = Arc::new(AtomicU64::new(0));
    match config.clone() {
        SourceConfig::Wav { path, realtime, r#loop } => {
            let files = match wav::list(&path) {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            let open: Arc<Opener> = Arc::new(move || {
                Ok(Box::new(wav::WavStream::new(files.clone(), realtime, r#loop)) as Box<dyn AudioStream>)
            });
            Some(Ok(AudioSourceSpec { live: false, describe: format!("wav {path}"), overruns, open }))
        }
        SourceConfig::Microphone { device, buffer_secs, sample_rate, channels } => {
            let counter = overruns.clone();
            let name = device.clone();
            let open: Arc<Opener> = Arc::new(move || {
                let mic = microphone::Microphone::open(
                    name.as_deref(),
                    (sample_rate, channels),
                    buffer_secs,
                    counter.clone(),
                )?;
                Ok(Box::new(mic) as Box<dyn AudioStream>)
            });
            let describe = format!("microphone {}", device.as_deref().unwrap_or("(default)"));
            Some(Ok(AudioSourceSpec { live: true, describe, overruns, open }))
        }
        SourceConfig::Images { .. } | SourceConfig::Camera { .. } => None,
    }
}

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels <= 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
}
