//! A pipeline's source: the config mapped onto edge-core's frame and audio sources, and the
//! supervision loop every source thread runs (reopen a live source with backoff, end the
//! pipeline when a batch source fails).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::link::LinkSender;
use crate::stats::PipelineStats;
use edge_core::audio::{AudioError, AudioSourceSpec};
use edge_core::source::{Frame, SourceError, SourceSpec};

use super::PipelineError;

/// What a configured source delivers.
pub enum Source {
    Frames(SourceSpec),
    Audio(AudioSourceSpec),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Frames(#[from] SourceError),
    #[error(transparent)]
    Audio(#[from] AudioError),
}

/// Checks the source a config describes (files exist, the camera is there) and returns how
/// to open it on its thread.
pub fn build(config: &SourceConfig) -> Result<Source, BuildError> {
    Ok(match config {
        SourceConfig::Images { path, fps, r#loop } => Source::Frames(SourceSpec::images(path, *fps, *r#loop)?),
        &SourceConfig::Camera { index, width, height, fps } => {
            Source::Frames(SourceSpec::camera(index, width, height, fps)?)
        }
        SourceConfig::Rtsp(r) => {
            let spec = r.spec().map_err(|e| SourceError::Command(format!("rtsp {}: {e}", r.url)))?;
            Source::Frames(SourceSpec::command(spec)?)
        }
        SourceConfig::Libcamera(l) => Source::Frames(SourceSpec::command(l.spec())?),
        SourceConfig::Command(c) => Source::Frames(SourceSpec::command(c.spec())?),
        SourceConfig::Wav { path, realtime, r#loop } => Source::Audio(AudioSourceSpec::wav(path, *realtime, *r#loop)?),
        SourceConfig::Microphone { device, buffer_secs, sample_rate, channels } => {
            Source::Audio(AudioSourceSpec::microphone(device.clone(), *buffer_secs, *sample_rate, *channels))
        }
    })
}

/// Longest wait between attempts to reopen a failed live source.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(30);

/// The source thread's loop, for frames and audio alike: opens the source, forwards what it
/// yields until it ends, `forward` reports the pipeline gone, or `cancel` fires. A source is up
/// from its first frame (or block) on. A failing live source is reopened with exponential
/// backoff and reported down in the stats meanwhile; a failing batch source ends the pipeline
/// with its error.
pub fn supervise<S, T, E: std::fmt::Display>(
    pipeline: &str,
    live: bool,
    cancel: &CancellationToken,
    stats: &PipelineStats,
    open: impl Fn() -> Result<S, E>,
    next: impl Fn(&mut S, &CancellationToken) -> Result<Option<T>, E>,
    mut forward: impl FnMut(T) -> bool,
) -> Result<(), E> {
    let mut backoff = Duration::from_millis(500);
    let mut source = None;
    // counts the failure; a batch source's failure ends the pipeline
    let failed = |e: E, what: &str, backoff: Duration| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.source_up.store(false, Ordering::Relaxed);
        if !live {
            return Err(e);
        }
        tracing::warn!(%pipeline, error = %e, retry_in_ms = backoff.as_millis() as u64, "{what}");
        Ok(())
    };
    while !cancel.is_cancelled() {
        let current = match &mut source {
            Some(s) => s,
            None => match open() {
                Ok(s) => source.insert(s),
                Err(e) => {
                    failed(e, "source unavailable", backoff)?;
                    edge_core::source::sleep_until(Instant::now() + backoff, cancel);
                    backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
                    continue;
                }
            },
        };
        match next(current, cancel) {
            Ok(Some(item)) => {
                // up once it delivers: a program that starts but never connects is not up
                backoff = Duration::from_millis(500);
                stats.source_up.store(true, Ordering::Relaxed);
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                if !forward(item) {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                failed(e, "source failed; reopening", backoff)?;
                source = None;
            }
        }
    }
    Ok(())
}

/// A frame source's thread: frames are numbered here, so ids keep counting across reopenings.
pub fn frames_loop(
    pipeline: &str,
    spec: &SourceSpec,
    cancel: &CancellationToken,
    tx: &LinkSender<Frame>,
    stats: &PipelineStats,
) -> Result<(), PipelineError> {
    let mut next_id = 0u64;
    supervise(
        pipeline,
        spec.live,
        cancel,
        stats,
        || spec.open(),
        |s, cancel| s.next_frame(cancel),
        |mut frame| {
            stats.record_decode(frame.decode);
            frame.id = next_id;
            next_id += 1;
            tx.send(frame).is_ok()
        },
    )
    .map_err(|source| PipelineError::Source { pipeline: pipeline.to_string(), source: source.into() })
}
