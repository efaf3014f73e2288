//! A WAV file (a `wav` source or `transcribe` input): 16 kHz mono samples or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // a header may claim any length: the reader must not allocate what it claims up front
    let _ = edge_core::audio::wav::read_16k_from(std::io::Cursor::new(data), "fuzz.wav");
});
