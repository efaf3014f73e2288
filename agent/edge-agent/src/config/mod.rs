//! The agent's configuration: its types, and loading them from a TOML file plus
//! `EDGE_AGENT__SECTION__KEY` environment overrides.
//!
//! Loading is in two phases so that a user sees *every* mistake at once: [`load`] merges the
//! sources into one untyped tree, then [`validate::check`] deserializes each component
//! separately (collecting every error with its path) and checks references to models.

mod audio_checks;
mod object_checks;
pub mod stream_sources;
mod types;
pub mod validate;
mod vision_checks;

use std::path::{Path, PathBuf};

pub use types::*;

/// Every problem found in a configuration, each with its path (`pipelines.x.stages[0].model`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {file}: {message}")]
    Read { file: PathBuf, message: String },
    #[error("invalid config {file}:\n{}", format_issues(.issues))]
    Invalid { file: PathBuf, issues: Vec<Issue> },
}

/// One problem at one place in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

fn format_issues(issues: &[Issue]) -> String {
    issues.iter().map(|i| format!("  {}: {}", i.path, i.message)).collect::<Vec<_>>().join("\n")
}

/// Reads `file` (TOML) and applies `EDGE_AGENT__...` overrides from the environment, giving the
/// merged but not yet typed tree.
pub fn load_raw(file: &Path) -> Result<serde_json::Value, ConfigError> {
    let read_err = |message: String| ConfigError::Read { file: file.to_path_buf(), message };
    if !file.is_file() {
        return Err(read_err("no such file".into()));
    }
    let built = config::Config::builder()
        .add_source(config::File::from(file).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("EDGE_AGENT").prefix_separator("__").separator("__").try_parsing(true),
        )
        .build()
        .map_err(|e| read_err(e.to_string()))?;
    built.try_deserialize::<serde_json::Value>().map_err(|e| read_err(e.to_string()))
}

/// Validates configuration text (TOML, without environment overrides) as if read from `file`.
pub fn from_toml(text: &str, file: &Path, catalog: &edge_core::model::Catalog) -> Result<Config, ConfigError> {
    let read_err = |message: String| ConfigError::Read { file: file.to_path_buf(), message };
    let raw = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Value>())
        .map_err(|e| read_err(e.to_string()))?;
    validate::check(raw, catalog).map_err(|issues| ConfigError::Invalid { file: file.to_path_buf(), issues })
}

/// Loads and fully validates a configuration file against the models in `catalog`.
pub fn load(file: &Path, catalog: &edge_core::model::Catalog) -> Result<Config, ConfigError> {
    let raw = load_raw(file)?;
    validate::check(raw, catalog).map_err(|issues| ConfigError::Invalid { file: file.to_path_buf(), issues })
}
