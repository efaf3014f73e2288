//! MQTT: topic layout, JSON payload schemas, and the client connection (status with last
//! will, reconnect with backoff, TLS and credentials). Nothing here blocks: publishing is
//! async on the runtime, fed by pipeline threads through a bounded results channel.

mod client;
pub mod payload;
mod topics;

pub use client::{Connection, MqttError, connect};
pub use topics::Topics;

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}
