//! V4L2 cameras through nokhwa, behind the `camera` cargo feature. Opening probes the device
//! and fails with a clear error when there is none; frames (MJPEG or YUYV) are decoded by
//! nokhwa's own decoder into RGB. Without the feature, opening a camera is a clear error.

use tokio_util::sync::CancellationToken;

use super::{Frame, FrameSource, SourceError};

#[cfg(feature = "camera")]
pub use imp::{CameraFrameFormat, CameraSource, decode_camera_frame};

/// Checks, before anything starts, that the build can use cameras and the device exists.
pub fn probe(index: u32) -> Result<(), SourceError> {
    if !cfg!(feature = "camera") {
        return Err(SourceError::Camera("this build has no camera support; rebuild with `--features camera`".into()));
    }
    let dev = format!("/dev/video{index}");
    if !std::path::Path::new(&dev).exists() {
        return Err(SourceError::Camera(format!("no camera at {dev}")));
    }
    Ok(())
}

/// A V4L2 video device, as `edge-agent devices` lists it.
#[derive(Debug, Clone)]
pub struct VideoDevice {
    pub index: u32,
    pub name: String,
    /// `WIDTHxHEIGHT@FPS FORMAT` per mode (a build with `--features camera` only; empty when the
    /// device gave none, as metadata nodes do).
    pub modes: Vec<String>,
}

/// The V4L2 devices of this machine (`/sys/class/video4linux`), with their capture modes when
/// the build has camera support.
pub fn video_devices() -> Vec<VideoDevice> {
    let Ok(entries) = std::fs::read_dir("/sys/class/video4linux") else { return Vec::new() };
    let mut devices: Vec<VideoDevice> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let index = e.file_name().to_str()?.strip_prefix("video")?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default().trim().to_string();
            Some(VideoDevice { index, name, modes: modes(index) })
        })
        .collect();
    devices.sort_by_key(|d| d.index);
    devices
}

#[cfg(not(feature = "camera"))]
fn modes(_index: u32) -> Vec<String> {
    Vec::new()
}

#[cfg(feature = "camera")]
fn modes(index: u32) -> Vec<String> {
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{CameraIndex, RequestedFormat, RequestedFormatType};
    let wanted = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
    let Ok(mut camera) = nokhwa::Camera::new(CameraIndex::Index(index), wanted) else { return Vec::new() };
    let mut modes: Vec<String> = camera
        .compatible_camera_formats()
        .unwrap_or_default()
        .iter()
        .map(|f| format!("{}x{}@{} {}", f.width(), f.height(), f.frame_rate(), f.format()))
        .collect();
    modes.sort();
    modes.dedup();
    modes
}

#[cfg(not(feature = "camera"))]
pub struct CameraSource(std::convert::Infallible);

#[cfg(not(feature = "camera"))]
impl CameraSource {
    pub fn open(_index: u32, _width: u32, _height: u32, _fps: u32) -> Result<CameraSource, SourceError> {
        Err(SourceError::Camera("this build has no camera support; rebuild with `--features camera`".into()))
    }
}

#[cfg(not(feature = "camera"))]
impl FrameSource for CameraSource {
    fn next_frame(&mut self, _cancel: &CancellationToken) -> Result<Option<Frame>, SourceError> {
        match self.0 {}
    }
}

#[cfg(feature = "camera")]
mod imp {
    use std::sync::Arc;
    use std::time::SystemTime;

    use image::RgbImage;
    use nokhwa::Camera;
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

    use super::*;

    /// The wire formats a camera frame may arrive in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CameraFrameFormat {
        Mjpeg,
        Yuyv,
    }

    /// Decodes one raw camera frame with nokhwa's decoder.
    pub fn decode_camera_frame(
        width: u32,
        height: u32,
        bytes: &[u8],
        format: CameraFrameFormat,
    ) -> Result<RgbImage, SourceError> {
        let ff = match format {
            CameraFrameFormat::Mjpeg => FrameFormat::MJPEG,
            CameraFrameFormat::Yuyv => FrameFormat::YUYV,
        };
        let buffer = nokhwa::Buffer::new(Resolution::new(width, height), bytes, ff);
        to_rgb(&buffer)
    }

    fn to_rgb(buffer: &nokhwa::Buffer) -> Result<RgbImage, SourceError> {
        let res = buffer.resolution();
        // decode_image can panic on short buffers in some versions: check the size first
        if buffer.source_frame_format() == FrameFormat::YUYV
            && buffer.buffer().len() < (res.width() * res.height() * 2) as usize
        {
            return Err(SourceError::Camera(format!(
                "short YUYV frame: {} bytes for {}x{}",
                buffer.buffer().len(),
                res.width(),
                res.height()
            )));
        }
        // nokhwa's MJPEG path (mozjpeg) reports a corrupt JPEG by unwinding; a bad frame from
        // a flaky USB camera must be an error, not the end of the process (this is also why
        // the release profile keeps panic = "unwind")
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buffer.decode_image::<RgbFormat>()))
            .map_err(|_| SourceError::Camera("corrupt frame (decoder gave up)".into()))?;
        let img = decoded.map_err(|e| SourceError::Camera(e.to_string()))?;
        let (w, h) = (img.width(), img.height());
        RgbImage::from_raw(w, h, img.into_raw())
            .ok_or_else(|| SourceError::Camera("decoded frame has the wrong size".into()))
    }

    pub struct CameraSource {
        camera: Camera,
        name: String,
        next_id: u64,
    }

    impl CameraSource {
        /// Opens `/dev/video<index>` asking for the closest format to `width`×`height`@`fps`.
        pub fn open(index: u32, width: u32, height: u32, fps: u32) -> Result<CameraSource, SourceError> {
            let wanted = CameraFormat::new(Resolution::new(width, height), FrameFormat::MJPEG, fps);
            let format = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
            let name = format!("/dev/video{index}");
            let mut camera = Camera::new(CameraIndex::Index(index), format)
                .map_err(|e| SourceError::Camera(format!("cannot open {name}: {e}")))?;
            camera.open_stream().map_err(|e| SourceError::Camera(format!("cannot start {name}: {e}")))?;
            Ok(CameraSource { camera, name, next_id: 0 })
        }
    }

    impl FrameSource for CameraSource {
        fn next_frame(&mut self, cancel: &CancellationToken) -> Result<Option<Frame>, SourceError> {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let buffer = self.camera.frame().map_err(|e| SourceError::Camera(e.to_string()))?;
            let captured = SystemTime::now();
            let started = std::time::Instant::now();
            let image = to_rgb(&buffer)?;
            let frame = Frame {
                id: self.next_id,
                source: self.name.clone(),
                captured,
                image: Arc::new(image),
                decode: started.elapsed(),
            };
            self.next_id += 1;
            Ok(Some(frame))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn mjpeg_and_yuyv_frames_decode_through_nokhwa() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images/chelsea.jpg");
            let jpeg = std::fs::read(&path).unwrap();
            let rgb = decode_camera_frame(451, 300, &jpeg, CameraFrameFormat::Mjpeg).unwrap();
            assert_eq!((rgb.width(), rgb.height()), (451, 300));
            // a YUYV frame of mid grey: Y=128, U=V=128 everywhere
            let yuyv = vec![128u8; 64 * 48 * 2];
            let rgb = decode_camera_frame(64, 48, &yuyv, CameraFrameFormat::Yuyv).unwrap();
            assert_eq!((rgb.width(), rgb.height()), (64, 48));
            let p = rgb.get_pixel(10, 10).0;
            assert!(p.iter().all(|&c| (120..=136).contains(&c)), "{p:?}");
            assert!(decode_camera_frame(64, 48, &yuyv[..100], CameraFrameFormat::Yuyv).is_err());
            assert!(decode_camera_frame(64, 48, b"garbage", CameraFrameFormat::Mjpeg).is_err());
        }

        #[test]
        fn no_camera_is_a_clear_error() {
            let index = 63; // no machine here has 64 cameras
            let err = probe(index).unwrap_err();
            assert!(err.to_string().contains("no camera at /dev/video63"), "{err}");
            let err = CameraSource::open(index, 640, 480, 15).err().unwrap();
            assert!(err.to_string().contains("/dev/video63"), "{err}");
        }
    }
}
