//! WAV files as an audio source: one file, a folder (its `*.wav` in name order) or a glob;
//! delivered as fast as the pipeline takes them or paced in real time, once or looped.
//! A second of silence follows each file so utterances never run across files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::resample::To16k;
use super::{AudioError, AudioStream, downmix};
use crate::speech::SAMPLE_RATE;

/// Samples per delivered block: 100 ms.
const BLOCK: usize = SAMPLE_RATE as usize / 10;

/// The WAV files a path names, sorted.
pub fn list(path: &str) -> Result<Vec<PathBuf>, AudioError> {
    let p = Path::new(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| AudioError::File { path: path.into(), message: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")))
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        glob::glob(path)
            .map_err(|e| AudioError::File { path: path.into(), message: e.to_string() })?
            .filter_map(Result::ok)
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(AudioError::NoFiles(path.into()));
    }
    Ok(files)
}

/// Reads a whole WAV file (PCM 8/16/24/32-bit or float) as 16 kHz mono.
pub fn read_16k(path: &Path) -> Result<Vec<f32>, AudioError> {
    let file = std::fs::File::open(path)
        .map_err(|e| AudioError::File { path: path.display().to_string(), message: e.to_string() })?;
    read_16k_from(std::io::BufReader::new(file), &path.display().to_string())
}

/// Reads a whole WAV stream (`name` for errors) as 16 kHz mono, like [`read_16k`].
pub fn read_16k_from<R: std::io::Read>(reader: R, name: &str) -> Result<Vec<f32>, AudioError> {
    let err = |m: String| AudioError::File { path: name.to_string(), message: m };
    let mut reader = hound::WavReader::new(reader).map_err(|e| err(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(err("no channels or no sample rate".into()));
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>()
        }
    }
    .map_err(|e| err(e.to_string()))?;
    let mut mono = Vec::with_capacity(samples.len() / spec.channels as usize);
    downmix(&samples, spec.channels as usize, &mut mono);
    let mut r = To16k::new(spec.sample_rate)?;
    let mut out = Vec::with_capacity(mono.len() * SAMPLE_RATE as usize / spec.sample_rate as usize + 1);
    r.push(&mono, &mut out)?;
    r.flush(&mut out)?;
    Ok(out)
}

pub struct WavStream {
    files: Vec<PathBuf>,
    next_file: usize,
    realtime: bool,
    looped: bool,
    current: Vec<f32>,
    pos: usize,
    started: Option<Instant>,
    delivered: u64,
}

impl WavStream {
    pub fn new(files: Vec<PathBuf>, realtime: bool, looped: bool) -> WavStream {
        WavStream { files, next_file: 0, realtime, looped, current: Vec::new(), pos: 0, started: None, delivered: 0 }
    }
}

impl AudioStream for WavStream {
    fn next_block(&mut self, cancel: &CancellationToken) -> Result<Option<Vec<f32>>, AudioError> {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        if self.pos >= self.current.len() {
            if self.next_file >= self.files.len() {
                if !self.looped || self.files.is_empty() {
                    return Ok(None);
                }
                self.next_file = 0;
            }
            let mut samples = read_16k(&self.files[self.next_file])?;
            samples.extend(std::iter::repeat_n(0.0, SAMPLE_RATE as usize));
            self.current = samples;
            self.pos = 0;
            self.next_file += 1;
        }
        let end = (self.pos + BLOCK).min(self.current.len());
        let block = self.current[self.pos..end].to_vec();
        self.pos = end;
        if self.realtime {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = started + Duration::from_secs_f64(self.delivered as f64 / SAMPLE_RATE as f64);
            crate::source::sleep_until(due, cancel);
        }
        self.delivered += block.len() as u64;
        Ok(Some(block))
    }
}
