//! `edge-agent detect`: detections of image files, one JSON line per image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edge_core::Precision;
use edge_core::model::{Catalog, ModelPool};
use edge_core::vision::detector::Detector;
use edge_core::vision::{DetectSettings, Tiling};

/// Prints one line per image (its detections, or its error); whether any image failed.
pub fn detect_files(
    catalog: &Catalog,
    model: &str,
    precision: &Precision,
    threshold: Option<f32>,
    tiling: Tiling,
    images: &[PathBuf],
) -> Result<bool> {
    let entry = catalog
        .get(model)
        .with_context(|| format!("no model named {model:?} (available: {})", catalog.names().join(", ")))?;
    let shared = ModelPool::default().get_or_load(entry, precision)?;
    let detector = Detector::new(shared, DetectSettings { threshold, tiling, ..DetectSettings::default() });
    let mut failed = false;
    for path in images {
        let result = edge_core::source::decode_image_file(path)
            .map_err(|e| e.to_string())
            .and_then(|img| detector.detect(&img).map(|out| (img, out)).map_err(|e| e.to_string()));
        let line = match result {
            Ok((img, out)) => serde_json::to_value(crate::sink::json::detect_line(
                &path.display().to_string(),
                img.width(),
                img.height(),
                &out,
            ))?,
            Err(e) => {
                failed = true;
                error_line(path, &e)
            }
        };
        println!("{line}");
    }
    Ok(failed)
}

/// The line of an input that could not be processed.
pub fn error_line(path: &Path, message: &str) -> serde_json::Value {
    serde_json::json!({ "source": path.display().to_string(), "error": message })
}
