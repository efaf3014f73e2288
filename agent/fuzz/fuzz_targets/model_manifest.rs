//! A model's `manifest.toml` (pushed models carry one): parsed as vision or speech manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = toml::from_str::<edge_core::model::Manifest>(text) {
            let _ = m.decoder.output_names();
        }
        let _ = toml::from_str::<edge_core::model::SpeechManifest>(text);
    }
});
