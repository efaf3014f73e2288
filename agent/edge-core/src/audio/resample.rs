//! Streaming conversion of any sample rate to 16 kHz (mono in, mono out) with rubato's
//! synchronous FFT resampler; the resampler's own delay is trimmed so sample offsets keep
//! meaning time.

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler};

use super::AudioError;
use crate::speech::SAMPLE_RATE;

const CHUNK: usize = 1024;

pub struct To16k {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    /// Input samples taken, to know how much output a flush owes.
    taken: u64,
    given: u64,
    rate: u32,
}

impl To16k {
    pub fn new(rate: u32) -> Result<To16k, AudioError> {
        if rate == 0 {
            return Err(AudioError::Resample("sample rate 0".into()));
        }
        let inner = if rate == SAMPLE_RATE {
            None
        } else {
            let fft = Fft::<f32>::new(rate as usize, SAMPLE_RATE as usize, CHUNK, 1, FixedSync::Input)
                .map_err(|e| AudioError::Resample(e.to_string()))?;
            Some(fft)
        };
        let skip = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        let out = vec![0.0; inner.as_ref().map(|r| r.output_frames_max()).unwrap_or(0)];
        Ok(To16k { inner, pending: Vec::new(), out, skip, taken: 0, given: 0, rate })
    }

    /// Converts `input` (mono, at the source rate), appending 16 kHz samples to `output`.
    pub fn push(&mut self, input: &[f32], output: &mut Vec<f32>) -> Result<(), AudioError> {
        self.taken += input.len() as u64;
        let Some(r) = &mut self.inner else {
            output.extend_from_slice(input);
            self.given += input.len() as u64;
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
        let mut used = 0;
        while self.pending.len() - used >= r.input_frames_next() {
            let need = r.input_frames_next();
            let inp = SequentialSlice::new(&self.pending[used..used + need], 1, need).map_err(|e| err(&e))?;
            let max = self.out.len();
            let mut out = SequentialSlice::new_mut(&mut self.out[..], 1, max).map_err(|e| err(&e))?;
            let (_, produced) = r.process_into_buffer(&inp, &mut out, None).map_err(|e| err(&e))?;
            used += need;
            let drop = self.skip.min(produced);
            self.skip -= drop;
            output.extend_from_slice(&self.out[drop..produced]);
            self.given += (produced - drop) as u64;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Pushes out what the resampler still holds, so the output matches the input's length.
    pub fn flush(&mut self, output: &mut Vec<f32>) -> Result<(), AudioError> {
        if self.inner.is_none() {
            return Ok(());
        }
        let owed = (self.taken * SAMPLE_RATE as u64).div_ceil(self.rate as u64);
        let mut tail = Vec::new();
        // the delay is a few chunks at most; bounded so a bug cannot spin forever
        for _ in 0..64 {
            if self.given >= owed {
                break;
            }
            self.push(&[0.0; CHUNK], &mut tail)?;
            self.taken -= CHUNK as u64;
        }
        let excess = self.given.saturating_sub(owed) as usize;
        tail.truncate(tail.len().saturating_sub(excess));
        output.extend(tail);
        self.given = owed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin())
            .collect()
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        for rate in [8_000, 22_050, 44_100, 48_000] {
            let mut r = To16k::new(rate).unwrap();
            let input = tone(rate, 440.0, 1.0);
            let mut out = Vec::new();
            for block in input.chunks(777) {
                r.push(block, &mut out).unwrap();
            }
            r.flush(&mut out).unwrap();
            assert_eq!(out.len(), 16_000, "rate {rate}");
            // 440 Hz: count zero crossings in the middle (away from edge effects)
            let mid = &out[2000..14000];
            let crossings = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
            assert!((325..=335).contains(&crossings), "rate {rate}: {crossings} rising crossings in 0.75 s");
            // and the phase is aligned: the delay was trimmed
            let expected = tone(16_000, 440.0, 1.0);
            let err: f32 = mid.iter().zip(&expected[2000..14000]).map(|(a, b)| (a - b).abs()).sum::<f32>() / 12000.0;
            assert!(err < 0.05, "rate {rate}: mean error {err}");
        }
    }
}
