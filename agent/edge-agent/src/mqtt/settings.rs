//! The broker connection's settings (`[mqtt]` in the config file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// Defaults to `edge-agent-<device_id>`.
    pub client_id: Option<String>,
    /// Topics are `<prefix>/<device_id>/...`.
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file instead (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsSettings>,
    pub keep_alive_secs: u64,
    /// Upper bound of the reconnect backoff, in seconds.
    pub max_backoff_secs: f64,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            prefix: "edge-agent".into(),
            username: None,
            password: None,
            password_file: None,
            tls: None,
            keep_alive_secs: 30,
            max_backoff_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that require client authentication.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}
