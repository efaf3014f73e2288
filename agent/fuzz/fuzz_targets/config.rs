//! A configuration file: validated against the shipped models' catalog, errors with paths.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn catalog() -> &'static edge_core::model::Catalog {
    static C: OnceLock<edge_core::model::Catalog> = OnceLock::new();
    C.get_or_init(|| {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        edge_core::model::Catalog::open(&models).expect("the models folder")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = edge_agent::config::from_toml(text, std::path::Path::new("fuzz.toml"), catalog())
    {
        assert!(!e.to_string().is_empty());
    }
});
