//! Vision: turning frames into detections. Preprocessing (letterbox into the model's input),
//! tiling plans for large frames, output decoders, NMS, and the detector that ties them.

pub mod classify;
pub mod decode;
pub mod detector;
pub mod embed;
pub mod nms;
pub mod preprocess;
pub mod resize;
pub mod tiling;

pub use detector::DetectSettings;
pub use tiling::Tiling;

use serde::{Deserialize, Serialize};

/// A fixed synthetic picture (colour ramps, 224×224) that new heads and models are trial-run
/// on before they are swapped in.
pub fn probe_image() -> image::RgbImage {
    image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([x as u8, y as u8, ((x + y) / 2) as u8]))
}

/// An axis-aligned box in source-image pixels: `[x1, y1, x2, y2]`.
pub type BBox = [f32; 4];

/// One detected object, as published (f64 so that rounded values print as written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub class_id: u32,
    /// Rounded to 4 decimals.
    pub score: f64,
    /// `[x1, y1, x2, y2]` in source-image pixels, rounded to 0.1.
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    /// Labels of the box's crop, best first, when a classify stage follows the detector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Vec<crate::head::Scored>>,
}

/// A candidate box before labels are attached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class_id: u32,
    pub score: f32,
    pub bbox: BBox,
}
