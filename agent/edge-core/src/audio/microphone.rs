//! A microphone through cpal (ALSA on Linux): the device's own rate, channels and sample
//! format, converted here to 16 kHz mono.
//!
//! The device callback only converts samples to f32 into a lock-free ring (rtrb) sized for
//! `buffer_secs` of audio; when the pipeline falls behind, the samples that do not fit are
//! dropped and counted as overruns (in samples). The callback never blocks, never allocates
//! and never panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use crossbeam_channel::{Receiver, bounded};
use tokio_util::sync::CancellationToken;

use super::resample::To16k;
use super::{AudioError, AudioStream, downmix};

/// A device that delivers nothing for this long is treated as gone (and reopened).
const STALL: Duration = Duration::from_secs(5);
/// Sample rates a capture configuration may have.
const MIN_RATE: u32 = 8_000;
const MAX_RATE: u32 = 192_000;
/// Most interleaved samples taken from the ring per block.
const MAX_BLOCK: usize = 8192;

pub struct Microphone {
    // kept alive: dropping it stops capture
    _stream: cpal::Stream,
    ring: rtrb::Consumer<f32>,
    errors: Receiver<String>,
    channels: usize,
    resampler: To16k,
    interleaved: Vec<f32>,
    mono: Vec<f32>,
}

/// Names of the capture devices cpal sees.
pub fn devices() -> Vec<String> {
    cpal::default_host().input_devices().map(|d| d.map(|d| d.to_string()).collect()).unwrap_or_default()
}

impl Microphone {
    /// Opens `device` (a name as listed by [`devices`], or the default input) with its default
    /// configuration; `buffer_secs` of audio may wait in the ring before samples are dropped.
    /// `want` pins a sample rate and/or channel count (tried first, e.g. a device's native
    /// format when its default configuration is wrong).
    pub fn open(
        device: Option<&str>,
        want: (Option<u32>, Option<u16>),
        buffer_secs: f64,
        overruns: Arc<AtomicU64>,
    ) -> Result<Microphone, AudioError> {
        let host = cpal::default_host();
        let dev = match device {
            None => host.default_input_device().ok_or_else(|| AudioError::Device("no default input device".into()))?,
            Some(name) => host
                .input_devices()
                .map_err(|e| AudioError::Device(e.to_string()))?
                .find(|d| d.to_string() == name)
                .ok_or_else(|| AudioError::Device(format!("no input device {name:?} (found: {:?})", devices())))?,
        };
        // the default configuration first; devices that refuse it (some USB microphones, ALSA
        // plug chains) get every other configuration they advertise, 16 kHz first
        let mut candidates: Vec<cpal::SupportedStreamConfig> = Vec::new();
        if let Ok(ranges) = dev.supported_input_configs() {
            for range in ranges.filter(|r| r.channels() <= 8 && format_rank(r.sample_format()).is_some()) {
                let (lo, hi) = (range.min_sample_rate().max(MIN_RATE), range.max_sample_rate().min(MAX_RATE));
                for rate in [want.0.unwrap_or(16_000), 16_000, 48_000, 44_100, lo, hi] {
                    if let Some(c) = range.try_with_sample_rate(rate) {
                        candidates.push(c);
                    }
                }
            }
        }
        // 16-bit (what capture hardware delivers) or float, mono or stereo, 16 kHz (no resampling) first
        let rate_rank = |r: u32| [16_000, 48_000, 44_100].iter().position(|x| *x == r).unwrap_or(3);
        let pinned = |c: &cpal::SupportedStreamConfig| {
            want.0.is_none_or(|r| r == c.sample_rate()) && want.1.is_none_or(|n| n == c.channels())
        };
        candidates.sort_by_key(|c| (format_rank(c.sample_format()), c.channels().min(3), rate_rank(c.sample_rate())));
        candidates.dedup();
        if let Ok(default) = dev.default_input_config() {
            candidates.insert(0, default);
        }
        // what the config pins comes first, in the order above (the default when it fits)
        candidates.sort_by_key(|c| !pinned(c));
        let mut last = AudioError::Device(format!("{dev} advertises no capture configuration"));
        for supported in candidates {
            match Self::start(&dev, &supported, buffer_secs, overruns.clone()) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::debug!(device = %dev, error = %e, "capture configuration refused");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn start(
        dev: &cpal::Device,
        supported: &cpal::SupportedStreamConfig,
        buffer_secs: f64,
        overruns: Arc<AtomicU64>,
    ) -> Result<Microphone, AudioError> {
        let config = supported.config();
        let channels = config.channels.max(1) as usize;
        let rate = config.sample_rate;
        // plug devices advertise up to u32::MAX Hz: never size a buffer from such a value
        if !(MIN_RATE..=MAX_RATE).contains(&rate) || channels > 32 {
            return Err(AudioError::Device(format!("unusable configuration: {rate} Hz, {channels} channels")));
        }
        let capacity = ((buffer_secs.clamp(0.1, 60.0) * rate as f64) as usize * channels).max(MAX_BLOCK);
        let (producer, ring) = rtrb::RingBuffer::<f32>::new(capacity);
        let (err_tx, errors) = bounded(4);
        let on_error = move |e: cpal::Error| {
            // a full error queue means the reader already has errors to report
            if err_tx.try_send(e.to_string()).is_err() {}
        };
        use cpal::SampleFormat as F;
        let stream = match supported.sample_format() {
            F::F32 => dev.build_input_stream(config, callback(producer, overruns, |s: &f32| *s), on_error, None),
            F::I16 => dev.build_input_stream(
                config,
                callback(producer, overruns, |s: &i16| *s as f32 / 32768.0),
                on_error,
                None,
            ),
            F::I32 => dev.build_input_stream(
                config,
                callback(producer, overruns, |s: &i32| *s as f32 / 2_147_483_648.0),
                on_error,
                None,
            ),
            F::U16 => dev.build_input_stream(
                config,
                callback(producer, overruns, |s: &u16| (*s as f32 - 32768.0) / 32768.0),
                on_error,
                None,
            ),
            F::U8 => dev.build_input_stream(
                config,
                callback(producer, overruns, |s: &u8| (*s as f32 - 128.0) / 128.0),
                on_error,
                None,
            ),
            other => return Err(AudioError::Device(format!("unsupported sample format {other}"))),
        }
        .map_err(|e| {
            AudioError::Device(format!("{e} ({rate} Hz, {channels} channels, {})", supported.sample_format()))
        })?;
        stream.play().map_err(|e| AudioError::Device(e.to_string()))?;
        tracing::info!(device = %dev, rate, channels, format = %supported.sample_format(), "microphone open");
        Ok(Microphone {
            _stream: stream,
            ring,
            errors,
            channels,
            resampler: To16k::new(rate)?,
            interleaved: Vec::with_capacity(MAX_BLOCK),
            mono: Vec::with_capacity(MAX_BLOCK),
        })
    }
}

/// Preference among the sample formats the callback converts; `None` for the others.
fn format_rank(f: cpal::SampleFormat) -> Option<u8> {
    use cpal::SampleFormat as F;
    [F::I16, F::F32, F::I32, F::U16, F::U8].iter().position(|x| *x == f).map(|p| p as u8)
}

fn callback<T: Copy + 'static>(
    mut ring: rtrb::Producer<f32>,
    overruns: Arc<AtomicU64>,
    convert: impl Fn(&T) -> f32 + Send + 'static,
) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static {
    move |data: &[T], _| {
        let fits = ring.slots().min(data.len());
        if let Ok(chunk) = ring.write_chunk_uninit(fits) {
            chunk.fill_from_iter(data.iter().map(&convert));
        }
        if fits < data.len() {
            overruns.fetch_add((data.len() - fits) as u64, Ordering::Relaxed);
        }
    }
}

impl AudioStream for Microphone {
    fn next_block(&mut self, cancel: &CancellationToken) -> Result<Option<Vec<f32>>, AudioError> {
        let tick = Duration::from_millis(10);
        let mut waited = Duration::ZERO;
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            if let Ok(e) = self.errors.try_recv() {
                return Err(AudioError::Device(e));
            }
            // whole frames only, so channels stay aligned
            let n = (self.ring.slots().min(MAX_BLOCK) / self.channels) * self.channels;
            if n == 0 {
                waited += tick;
                if waited >= STALL {
                    return Err(AudioError::Device(format!("no audio for {} s", STALL.as_secs())));
                }
                std::thread::sleep(tick);
                continue;
            }
            let chunk = self.ring.read_chunk(n).map_err(|e| AudioError::Device(e.to_string()))?;
            let (a, b) = chunk.as_slices();
            self.interleaved.clear();
            self.interleaved.extend_from_slice(a);
            self.interleaved.extend_from_slice(b);
            chunk.commit_all();
            self.mono.clear();
            downmix(&self.interleaved, self.channels, &mut self.mono);
            let mut out = Vec::with_capacity(self.mono.len());
            self.resampler.push(&self.mono, &mut out)?;
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }
}
