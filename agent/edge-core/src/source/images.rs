//! Still images as a frame source: a file, a folder (its images in name order) or a glob.
//! JPEG, PNG, and binary PPM (`.ppm`/`.pnm`: raw RGB frames, as a camera delivers them, e.g.
//! extracted from a recording with `ffmpeg -i clip.mp4 frames/%05d.ppm`).
//! Without `fps` frames are produced as fast as they are taken (a batch; nothing dropped);
//! with `fps` they are paced like a camera. An undecodable file is logged and skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Frame, FrameSource, SourceError, decode_image_file, sleep_until};

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "pnm"];

pub struct ImagesSource {
    pattern: String,
    files: Vec<PathBuf>,
    period: Option<Duration>,
    looped: bool,
    next_index: usize,
    next_id: u64,
    next_due: Option<Instant>,
    decoded_this_pass: usize,
}

impl ImagesSource {
    pub fn new(pattern: &str, fps: Option<f64>, looped: bool) -> Result<ImagesSource, SourceError> {
        let files = list(pattern)?;
        Ok(ImagesSource {
            pattern: pattern.to_string(),
            files,
            period: fps.map(|f| Duration::from_secs_f64(1.0 / f)),
            looped,
            next_index: 0,
            next_id: 0,
            next_due: None,
            decoded_this_pass: 0,
        })
    }
}

/// The files a pattern names, sorted.
fn list(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let path = PathBuf::from(pattern);
    let mut files: Vec<PathBuf> = if path.is_file() {
        vec![path]
    } else if path.is_dir() {
        std::fs::read_dir(&path)
            .map_err(|e| SourceError::Image { path: pattern.into(), message: e.to_string() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect()
    } else {
        glob::glob(pattern)
            .map_err(|e| SourceError::Image { path: pattern.into(), message: e.to_string() })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(SourceError::NoImages(pattern.into()));
    }
    Ok(files)
}

impl FrameSource for ImagesSource {
    fn next_frame(&mut self, cancel: &CancellationToken) -> Result<Option<Frame>, SourceError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            if self.next_index >= self.files.len() {
                if self.decoded_this_pass == 0 {
                    return Err(SourceError::NothingDecodable(self.pattern.clone()));
                }
                if !self.looped {
                    return Ok(None);
                }
                self.next_index = 0;
                self.decoded_this_pass = 0;
            }
            let path = &self.files[self.next_index];
            self.next_index += 1;
            if let Some(due) = self.next_due
                && !sleep_until(due, cancel)
            {
                return Ok(None);
            }
            let started = Instant::now();
            match decode_image_file(path) {
                Ok(image) => {
                    let decode = started.elapsed();
                    self.decoded_this_pass += 1;
                    if let Some(p) = self.period {
                        // keep a steady cadence; after falling behind by more than a period,
                        // start counting again from now rather than bursting to catch up
                        let now = Instant::now();
                        let base = self.next_due.filter(|d| *d + p > now).unwrap_or(now);
                        self.next_due = Some(base + p);
                    }
                    let frame = Frame {
                        id: self.next_id,
                        source: path.display().to_string(),
                        captured: SystemTime::now(),
                        image: Arc::new(image),
                        decode,
                    };
                    self.next_id += 1;
                    return Ok(Some(frame));
                }
                Err(e) => tracing::warn!(error = %e, "skipping image"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images")
    }

    #[test]
    fn a_folder_is_read_in_name_order_once() {
        let dir = fixtures();
        let mut s = ImagesSource::new(dir.to_str().unwrap(), None, false).unwrap();
        let cancel = CancellationToken::new();
        let mut names = vec![];
        while let Some(f) = s.next_frame(&cancel).unwrap() {
            assert_eq!(f.id, names.len() as u64);
            names.push(PathBuf::from(&f.source).file_stem().unwrap().to_string_lossy().to_string());
        }
        assert_eq!(names, ["astronaut", "camera", "chelsea", "coffee", "grace_hopper", "motorcycle", "rocket"]);
    }

    #[test]
    fn a_glob_loops_and_is_paced() {
        let pattern = format!("{}/c*.jpg", fixtures().display());
        let mut s = ImagesSource::new(&pattern, Some(50.0), true).unwrap();
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let ids: Vec<u64> = (0..7).map(|_| s.next_frame(&cancel).unwrap().unwrap().id).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6]);
        // 7 frames at 50 fps: at least 6 periods of 20 ms between the first and the last
        assert!(started.elapsed() >= Duration::from_millis(120));
        cancel.cancel();
        assert!(s.next_frame(&cancel).unwrap().is_none());
    }

    #[test]
    fn bad_files_are_skipped_and_all_bad_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"not a jpeg").unwrap();
        std::fs::write(dir.path().join("b.png"), b"").unwrap();
        let mut s = ImagesSource::new(dir.path().to_str().unwrap(), None, true).unwrap();
        let err = s.next_frame(&CancellationToken::new()).unwrap_err();
        assert!(matches!(err, SourceError::NothingDecodable(_)), "{err}");
        std::fs::copy(fixtures().join("chelsea.jpg"), dir.path().join("c.jpg")).unwrap();
        let mut s = ImagesSource::new(dir.path().to_str().unwrap(), None, false).unwrap();
        let f = s.next_frame(&CancellationToken::new()).unwrap().unwrap();
        assert!(f.source.ends_with("c.jpg"));
        assert_eq!((f.image.width(), f.image.height()), (451, 300));
    }

    #[test]
    fn a_ppm_frame_holds_the_pixels_it_was_written_with() {
        let photo = decode_image_file(&fixtures().join("chelsea.jpg")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        crate::source::save_ppm(&photo, &dir.path().join("chelsea.ppm")).unwrap();
        assert!(std::fs::read(dir.path().join("chelsea.ppm")).unwrap().starts_with(b"P6"));
        let mut s = ImagesSource::new(dir.path().to_str().unwrap(), None, false).unwrap();
        let f = s.next_frame(&CancellationToken::new()).unwrap().unwrap();
        assert_eq!(*f.image, photo);
    }

    #[test]
    fn nothing_matching_is_an_error() {
        assert!(matches!(ImagesSource::new("/nonexistent/*.jpg", None, false), Err(SourceError::NoImages(_))));
    }
}
