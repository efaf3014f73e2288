//! Frame sources: where a pipeline's frames come from. Each source runs on its own named
//! thread and blocks; a [`FrameSource`] is the seam in front of real devices so that the
//! code around capture is tested on files.

mod camera;
pub mod command;
mod images;
pub mod programs;
pub mod stream;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use image::RgbImage;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "camera")]
pub use camera::{CameraFrameFormat, decode_camera_frame};
pub use camera::{CameraSource, VideoDevice, video_devices};
pub use images::ImagesSource;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {message}")]
    Image { path: String, message: String },
    #[error("no images match {0:?}")]
    NoImages(String),
    #[error("none of the images of {0:?} could be decoded")]
    NothingDecodable(String),
    #[error("camera: {0}")]
    Camera(String),
    /// A program feeding frames (ffmpeg, GStreamer, rpicam-vid) failed, stalled or wrote nonsense.
    #[error("{0}")]
    Command(String),
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Counts up from 0 per source.
    pub id: u64,
    /// The file or device it came from.
    pub source: String,
    pub captured: SystemTime,
    pub image: Arc<RgbImage>,
    /// Time spent decoding it on the source's thread (JPEG, PNG, MJPEG; zero for raw frames
    /// and frames decoded elsewhere).
    pub decode: std::time::Duration,
}

/// A blocking producer of frames. It need not be `Send`: device handles (nokhwa's camera)
/// often are not, so a source is opened on the thread that reads it.
pub trait FrameSource {
    /// The next frame; `Ok(None)` when a finite source is done or `cancel` fired.
    fn next_frame(&mut self, cancel: &CancellationToken) -> Result<Option<Frame>, SourceError>;
}

type Opener = Box<dyn Fn() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A checked source, ready to be opened on its capture thread.
pub struct SourceSpec {
    /// A live source (a camera, a paced replay) produces frames whether or not they are
    /// taken: its link keeps the latest and counts what it drops. A batch source waits.
    pub live: bool,
    open: Opener,
}

impl SourceSpec {
    /// Opens the source; call it on the thread that will read it. A live source that fails
    /// is opened again (a camera unplugged and plugged back, a folder refilled).
    pub fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        (self.open)()
    }
}

impl SourceSpec {
    /// Image files (a file, a folder or a glob), checked now: nothing matching is an error.
    /// With `fps` the replay is paced, hence live.
    pub fn images(path: &str, fps: Option<f64>, looped: bool) -> Result<SourceSpec, SourceError> {
        ImagesSource::new(path, fps, looped)?; // fail now if nothing matches
        let path = path.to_string();
        Ok(SourceSpec {
            live: fps.is_some(),
            open: Box::new(move || Ok(Box::new(ImagesSource::new(&path, fps, looped)?))),
        })
    }

    /// A V4L2 camera, probed now (the device exists, or the build has no camera support).
    pub fn camera(index: u32, width: u32, height: u32, fps: u32) -> Result<SourceSpec, SourceError> {
        camera::probe(index)?;
        Ok(SourceSpec {
            live: true,
            open: Box::new(move || Ok(Box::new(CameraSource::open(index, width, height, fps)?))),
        })
    }
}

impl SourceSpec {
    /// A program writing frames to its stdout, checked now (the program is on `PATH`).
    pub fn command(spec: command::CommandSpec) -> Result<SourceSpec, SourceError> {
        spec.probe()?;
        Ok(SourceSpec { live: true, open: Box::new(move || Ok(Box::new(command::CommandSource::open(&spec)?))) })
    }
}

/// Largest image side accepted from a file; larger ones are refused, not allocated.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Decodes an image file to RGB, refusing absurd sizes before allocating.
pub fn decode_image_file(path: &Path) -> Result<RgbImage, SourceError> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| SourceError::Image { path: path.display().to_string(), message: e.to_string() })?;
    decode_image(reader, &path.display().to_string())
}

/// Decodes an image held in memory (`name` for errors), like [`decode_image_file`].
pub fn decode_image_bytes(bytes: &[u8], name: &str) -> Result<RgbImage, SourceError> {
    decode_image(image::ImageReader::new(std::io::Cursor::new(bytes)), name)
}

fn decode_image<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
    name: &str,
) -> Result<RgbImage, SourceError> {
    let err = |message: String| SourceError::Image { path: name.to_string(), message };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let img = reader.with_guessed_format().map_err(|e| err(e.to_string()))?.decode().map_err(|e| err(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err("image has no pixels".into()));
    }
    // `into_rgb8` hands over an RGB decode as it is; `to_rgb8` would copy it pixel by pixel
    // (0.6 ms for a 512x512 photo, as long as the decode itself)
    Ok(img.into_rgb8())
}

/// Writes `image` as a binary PPM (P6): the raw frames the images source reads without
/// decoding.
pub fn save_ppm(image: &RgbImage, path: &Path) -> Result<(), SourceError> {
    use image::ImageEncoder;
    use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
    let err = |message: String| SourceError::Image { path: path.display().to_string(), message };
    let file = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
    PnmEncoder::new(std::io::BufWriter::new(file))
        .with_subtype(PnmSubtype::Pixmap(SampleEncoding::Binary))
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| err(e.to_string()))
}

/// Sleeps until `deadline` in short steps, returning false early if `cancel` fires.
pub fn sleep_until(deadline: std::time::Instant, cancel: &CancellationToken) -> bool {
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(20)));
    }
}
