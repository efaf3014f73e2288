//! An outbox segment file as found on disk after a crash or a bad card: records up to the
//! first damaged one, each re-encoding to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, _clean) = edge_agent::outbox::decode_all(data);
    let mut used = 0;
    for r in &records {
        used += edge_agent::outbox::encode(r).len();
    }
    assert!(used <= data.len());
});
