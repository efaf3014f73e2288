//! Remote updates of heads and whole detection models: signing keys, the wire protocol, the
//! versions on disk, the device-side manager that verifies and swaps, and the `push` /
//! `rollback` client.

pub mod manager;
pub mod models;
pub mod protocol;
pub mod push;
mod settings;
pub mod sign;

pub use settings::UpdateSettings;

use sha2::{Digest, Sha256};

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Milliseconds since the epoch (what `issued_at_ms` holds).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
