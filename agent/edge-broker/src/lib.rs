//! An in-process MQTT broker (rumqttd) on loopback, for the built-in demo and the tests.
//! rumqttd cannot report the port it bound, so a free port is picked first.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("broker config: {0}")]
    Config(String),
    #[error("broker did not accept connections on {0} within 10 s")]
    NotReady(SocketAddr),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
}

/// Asks the OS for a free loopback port (released again before the broker binds it).
pub fn free_port() -> Result<u16, BrokerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Port)?;
    Ok(l.local_addr().map_err(BrokerError::Port)?.port())
}

/// Starts rumqttd on `127.0.0.1:<port>` in a background thread and waits until it accepts
/// connections. The broker lives until the process ends.
pub fn start(port: u16) -> Result<SocketAddr, BrokerError> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let toml = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 64
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 500
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&toml).map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(BrokerError::NotReady(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}
