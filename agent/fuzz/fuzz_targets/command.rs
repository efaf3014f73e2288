//! A message on the commands topic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edge_agent::commands::parse(data);
});
