//! Models on disk: manifests, the catalog of a models folder, checksum verification, and
//! loading a variant into tract (shared by every pipeline that uses it).

mod catalog;
pub mod engine;
mod manifest;
mod speech_manifest;

pub use catalog::{
    Catalog, CatalogError, ModelEntry, ModelSummary, SpeechEntry, VerifyReport, default_models_dir, sha256_file,
};
/// How an int8 model's quantized layers run (the `edge_int8` crate's).
pub use edge_int8::Int8Exec;
pub use engine::{
    EngineError, Layer, LoadedModel, ModelPool, SharedModel, input_shape as input_shape_of, with_threads,
};
pub use manifest::{ColorOrder, DecoderSpec, InputSpec, Layout, Manifest, Resize, Task, Variant};
pub use speech_manifest::{ModelFile, SpeechManifest, SpeechTask, SpeechVariant};
