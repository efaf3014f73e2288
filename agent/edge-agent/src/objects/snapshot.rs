//! Snapshots: an object's best frame cropped around its box (with a margin), scaled to at
//! most `max_side`, as JPEG, stored under `<state_dir>/snapshots/<pipeline>/<object id>.jpg`.
//! The folder has a size cap: past it the oldest files are deleted, never the newest.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::kalman::BoxXyxy;
use super::settings::SnapshotSettings;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("encoding a snapshot: {0}")]
    Encode(#[from] image::ImageError),
}

pub struct SnapshotStore {
    dir: PathBuf,
    max_bytes: u64,
    margin: f32,
    max_side: u32,
    quality: u8,
}

/// Pixels from the frame's edge within which a box counts as cut by it.
const EDGE: f32 = 2.0;

/// Whether the box lies wholly inside a `width` x `height` frame (not cut by its edge).
pub fn whole(b: &BoxXyxy, width: u32, height: u32) -> bool {
    b[0] >= EDGE && b[1] >= EDGE && b[2] <= width as f32 - EDGE && b[3] <= height as f32 - EDGE
}

impl SnapshotStore {
    pub fn open(dir: &Path, s: &SnapshotSettings) -> Result<SnapshotStore, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io { path: dir.to_path_buf(), source })?;
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            max_bytes: s.max_mb << 20,
            margin: s.margin,
            max_side: s.max_side,
            quality: s.quality,
        })
    }

    /// For tests: a cap in bytes instead of megabytes.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> SnapshotStore {
        self.max_bytes = max_bytes;
        self
    }

    /// The box with its margin, cut from the frame, scaled down to `max_side`, as JPEG.
    pub fn encode(&self, image: &RgbImage, b: &BoxXyxy) -> Result<Vec<u8>, SnapshotError> {
        let (w, h) = (image.width() as f32, image.height() as f32);
        let (mx, my) = ((b[2] - b[0]) * self.margin, (b[3] - b[1]) * self.margin);
        let x0 = (b[0] - mx).clamp(0.0, w - 1.0) as u32;
        let y0 = (b[1] - my).clamp(0.0, h - 1.0) as u32;
        let x1 = ((b[2] + mx).clamp(0.0, w) as u32).max(x0 + 1);
        let y1 = ((b[3] + my).clamp(0.0, h) as u32).max(y0 + 1);
        let mut crop = image::imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image();
        let longest = crop.width().max(crop.height());
        if longest > self.max_side {
            let k = self.max_side as f32 / longest as f32;
            let (nw, nh) = (((crop.width() as f32 * k) as u32).max(1), ((crop.height() as f32 * k) as u32).max(1));
            crop = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::Triangle);
        }
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, self.quality).encode_image(&crop)?;
        Ok(out)
    }

    /// Writes `<id>.jpg` (atomically: a temporary file renamed over it), then deletes the
    /// oldest snapshots while the folder is over its cap.
    pub fn store(&self, id: &str, jpeg: &[u8]) -> Result<PathBuf, SnapshotError> {
        let io = |source| SnapshotError::Io { path: self.dir.clone(), source };
        let path = self.dir.join(format!("{id}.jpg"));
        let tmp = self.dir.join(format!(".{id}.jpg.tmp"));
        std::fs::write(&tmp, jpeg).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.enforce_cap(&path).map_err(io)?;
        Ok(path)
    }

    fn enforce_cap(&self, keep: &Path) -> std::io::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jpg") {
                let meta = entry.metadata()?;
                files.push((meta.modified()?, path, meta.len()));
            }
        }
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        files.sort();
        for (_, path, len) in files {
            if total <= self.max_bytes {
                break;
            }
            if path != keep {
                std::fs::remove_file(&path)?;
                total -= len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_deletes_the_oldest_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), &SnapshotSettings::default()).unwrap().with_max_bytes(2500);
        for i in 0..5 {
            store.store(&format!("obj-{i}"), &[i as u8; 1000]).unwrap();
            // distinct modification times
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["obj-3.jpg", "obj-4.jpg"]);
        // one file larger than the cap is still kept: it is the newest
        store.store("big", &[0; 4000]).unwrap();
        assert!(dir.path().join("big.jpg").exists());
    }

    #[test]
    fn a_crop_has_its_margin_and_size_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotSettings { margin: 0.5, max_side: 64, ..Default::default() };
        let store = SnapshotStore::open(dir.path(), &s).unwrap();
        let frame = RgbImage::from_pixel(400, 300, image::Rgb([200, 30, 30]));
        let jpeg = store.encode(&frame, &[100.0, 100.0, 140.0, 120.0]).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        // 40x20 plus half of each on both sides is 80x40, scaled to the 64 cap
        assert_eq!((img.width(), img.height()), (64, 32));
        let big = store.encode(&frame, &[0.0, 0.0, 400.0, 300.0]).unwrap();
        let img = image::load_from_memory(&big).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
        assert!(whole(&[10.0, 10.0, 20.0, 20.0], 100, 100));
        assert!(!whole(&[0.0, 10.0, 20.0, 20.0], 100, 100));
    }
}
