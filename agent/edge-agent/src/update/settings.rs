//! Remote updates' settings (`[updates]` in the config file).

use serde::{Deserialize, Serialize};

/// Remote head updates (`.../models/<slot>/update`): who may sign them and how much is taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateSettings {
    /// Base64 ed25519 public keys (`edge-agent keygen` prints one); no key, no updates.
    pub trusted_keys: Vec<String>,
    /// Largest update accepted, in bytes.
    pub max_bytes: u64,
    /// A transfer with no chunk for this long is abandoned (its bytes are kept for a resume).
    pub transfer_timeout_secs: f64,
    /// A new head that fails in its first this-many inferences is rolled back.
    pub probation_inferences: u32,
    /// A signed update or rollback older than this (by its `issued_at_ms`) is refused: an
    /// abandoned push cannot be completed by a replay of its own messages after this.
    pub max_age_secs: f64,
    /// A signed order dated more than this in the future is refused (it would lock the slot
    /// against every later order). Needs a device clock set by NTP.
    pub max_clock_skew_secs: f64,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        UpdateSettings {
            trusted_keys: Vec::new(),
            max_bytes: 32 << 20,
            transfer_timeout_secs: 60.0,
            probation_inferences: 20,
            max_age_secs: 86_400.0,
            max_clock_skew_secs: 300.0,
        }
    }
}
