//! edge-core: what the agent does with models, independent of how it is configured or where
//! its results go. Models on disk (catalog, manifests, checksums, the shared pool), vision
//! (preprocessing, detectors, backbones and classifiers), heads, speech (VAD, Whisper), frame
//! and audio sources, and versioned files on disk. It knows nothing of config files, MQTT or
//! remote updates: the agent crate maps its config onto the settings types here.

pub mod audio;
pub mod head;
pub mod heap;
pub mod model;
pub mod source;
pub mod speech;
pub mod store;
pub mod vision;

use serde::{Deserialize, Serialize};

/// A model variant's numeric precision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Int8,
    Fp32,
}

impl Precision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Fp32 => "fp32",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision name that is neither `int8` nor `fp32`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?} (int8 or fp32)")]
pub struct UnknownPrecision(pub String);

impl std::str::FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, UnknownPrecision> {
        match s {
            "int8" => Ok(Precision::Int8),
            "fp32" => Ok(Precision::Fp32),
            other => Err(UnknownPrecision(other.to_string())),
        }
    }
}
