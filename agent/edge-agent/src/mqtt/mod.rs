//! MQTT: topic layout, the connection's settings, and the client connection (status with last
//! will, reconnect with backoff, TLS and credentials). Results' JSON is the sinks'
//! (`crate::sink::json`), the stats message `crate::health`'s. Nothing here blocks: publishing is
//! async on the runtime, fed by pipeline threads through a bounded results channel.

mod client;
mod settings;
pub mod topics;

pub use client::{Channels, Connection, MqttError, connect, credential_path};
pub use settings::{MqttSettings, TlsSettings};
pub use topics::Topics;

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}
