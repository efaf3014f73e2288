//! A microphone through cpal (ALSA on Linux): the device's own rate, channels and sample
//! format, converted here to 16 kHz mono.
//!
//! The device callback only copies samples into a bounded ring of blocks; when the pipeline
//! falls behind, new blocks are dropped and counted as overruns (in blocks) (the callback never blocks,
//! never allocates more than one block, and never panics).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use tokio_util::sync::CancellationToken;

use super::resample::To16k;
use super::{AudioError, AudioStream, downmix};

pub struct Microphone {
    // kept alive: dropping it stops capture
    _stream: cpal::Stream,
    blocks: Receiver<Result<Vec<f32>, String>>,
    channels: usize,
    resampler: To16k,
    mono: Vec<f32>,
}

/// A device that delivers nothing for this long is treated as gone (and reopened).
const STALL: Duration = Duration::from_secs(5);

/// Names of the capture devices cpal sees.
pub fn devices() -> Vec<String> {
    cpal::default_host().input_devices().map(|d| d.map(|d| d.to_string()).collect()).unwrap_or_default()
}

impl Microphone {
    /// Opens `device` (a name as listed by [`devices`], or the default input) with its default
    /// configuration; `buffer_secs` of audio may wait in the ring before blocks are dropped.
    pub fn open(device: Option<&str>, buffer_secs: f64, overruns: Arc<AtomicU64>) -> Result<Microphone, AudioError> {
        let host = cpal::default_host();
        let dev = match device {
            None => host.default_input_device().ok_or_else(|| AudioError::Device("no default input device".into()))?,
            Some(name) => host
                .input_devices()
                .map_err(|e| AudioError::Device(e.to_string()))?
                .find(|d| d.to_string() == name)
                .ok_or_else(|| AudioError::Device(format!("no input device {name:?} (found: {:?})", devices())))?,
        };
        let supported = dev.default_input_config().map_err(|e| AudioError::Device(e.to_string()))?;
        let config = supported.config();
        let channels = config.channels.max(1) as usize;
        let rate = config.sample_rate;
        // blocks of ~20 ms; capacity for buffer_secs of them
        let capacity = ((buffer_secs * 50.0).ceil() as usize).max(4);
        let (tx, rx) = bounded(capacity);
        let err_tx = tx.clone();
        let on_error = move |e: cpal::Error| {
            let _sent = err_tx.try_send(Err(e.to_string()));
        };
        use cpal::SampleFormat as F;
        let stream = match supported.sample_format() {
            F::F32 => dev.build_input_stream(config, callback(tx, overruns, |s: &f32| *s), on_error, None),
            F::I16 => dev.build_input_stream(config, callback(tx, overruns, |s: &i16| *s as f32 / 32768.0), on_error, None),
            F::I32 => dev.build_input_stream(
                config,
                callback(tx, overruns, |s: &i32| *s as f32 / 2_147_483_648.0),
                on_error,
                None,
            ),
            F::U16 => dev.build_input_stream(
                config,
                callback(tx, overruns, |s: &u16| (*s as f32 - 32768.0) / 32768.0),
                on_error,
                None,
            ),
            F::U8 => {
                dev.build_input_stream(config, callback(tx, overruns, |s: &u8| (*s as f32 - 128.0) / 128.0), on_error, None)
            }
            other => return Err(AudioError::Device(format!("unsupported sample format {other}"))),
        }
        .map_err(|e| AudioError::Device(e.to_string()))?;
        stream.play().map_err(|e| AudioError::Device(e.to_string()))?;
        tracing::info!(device = %dev, rate, channels, "microphone open");
        Ok(Microphone { _stream: stream, blocks: rx, channels, resampler: To16k::new(rate)?, mono: Vec::new() })
    }
}

fn callback<T: Copy + 'static>(
    tx: Sender<Result<Vec<f32>, String>>,
    overruns: Arc<AtomicU64>,
    convert: impl Fn(&T) -> f32 + Send + 'static,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static {
    move |data: &[T], _| {
        let block: Vec<f32> = data.iter().map(&convert).collect();
        match tx.try_send(Ok(block)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                overruns.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl AudioStream for Microphone {
    fn next_block(&mut self, cancel: &CancellationToken) -> Result<Option<Vec<f32>>, AudioError> {
        let mut waited = Duration::ZERO;
        let tick = Duration::from_millis(100);
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            match self.blocks.recv_timeout(tick) {
                Ok(Ok(block)) => {
                    self.mono.clear();
                    downmix(&block, self.channels, &mut self.mono);
                    let mut out = Vec::with_capacity(self.mono.len());
                    self.resampler.push(&self.mono, &mut out)?;
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
                Ok(Err(e)) => return Err(AudioError::Device(e)),
                Err(RecvTimeoutError::Timeout) => {
                    waited += tick;
                    if waited >= STALL {
                        return Err(AudioError::Device(format!("no audio for {} s", STALL.as_secs())));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(AudioError::Device("stream closed".into())),
            }
        }
    }
}
