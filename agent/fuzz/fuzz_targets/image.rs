//! An image (JPEG, PNG, PPM) decoded into a frame, with the size limits the sources use.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = edge_core::source::decode_image_bytes(data, "fuzz") {
        assert!(img.width() > 0 && img.height() > 0);
        assert!(img.width() <= edge_core::source::MAX_IMAGE_SIDE);
    }
});
