//! A head file (safetensors with its manifest) from the network: an error or a consistent head.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = edge_core::head::Head::from_bytes(data) {
        let dim = head.manifest.input_dim.min(4096);
        let logits = head.logits(&vec![0.5; dim]);
        assert_eq!(logits.len(), head.manifest.labels.len());
    }
});
