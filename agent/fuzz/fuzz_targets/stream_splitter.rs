//! A decoder child's stdout (RTSP, libcamera and command sources): split into frames, MJPEG
//! and raw video, then each frame decoded. The first byte picks the format.
#![no_main]

use edge_core::source::stream::{PixelFormat, Splitter, StreamFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = data.split_first() else { return };
    let format = match pick % 3 {
        0 => StreamFormat::Mjpeg,
        1 => StreamFormat::Rawvideo { width: 4, height: 3, pix_fmt: PixelFormat::Rgb24 },
        _ => StreamFormat::Rawvideo { width: 5, height: 2, pix_fmt: PixelFormat::Gray },
    };
    let mut split = Splitter::new(std::io::Cursor::new(rest), format.clone());
    for _ in 0..64 {
        match split.next_frame() {
            Ok(Some(frame)) => {
                let _ = format.decode(frame);
            }
            _ => break,
        }
    }
});
