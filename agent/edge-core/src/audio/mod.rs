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

impl AudioSourceSpec {
    /// WAV files (a file, a folder or a glob), listed now; `realtime` paces them.
    pub fn wav(path: &str, realtime: bool, looped: bool) -> Result<AudioSourceSpec, AudioError> {
        let files = wav::list(path)?;
        let open: Arc<Opener> =
            Arc::new(
                move || Ok(Box::new(wav::WavStream::new(files.clone(), realtime, looped)) as Box<dyn AudioStream>),
            );
        let overruns = Arc::new(AtomicU64::new(0));
        Ok(AudioSourceSpec { live: false, describe: format!("wav {path}"), overruns, open })
    }

    /// A cpal input device (`None`: the default), opened on the capture thread; a ring of
    /// `buffer_secs` absorbs the pipeline's hiccups and counts what overflows.
    pub fn microphone(
        device: Option<String>,
        buffer_secs: f64,
        sample_rate: Option<u32>,
        channels: Option<u16>,
    ) -> AudioSourceSpec {
        let overruns = Arc::new(AtomicU64::new(0));
        let counter = overruns.clone();
        let describe = format!("microphone {}", device.as_deref().unwrap_or("(default)"));
        let open: Arc<Opener> = Arc::new(move || {
            let mic =
                microphone::Microphone::open(device.as_deref(), (sample_rate, channels), buffer_secs, counter.clone())?;
            Ok(Box::new(mic) as Box<dyn AudioStream>)
        });
        AudioSourceSpec { live: true, describe, overruns, open }
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
