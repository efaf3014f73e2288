//! The broker connection. A driver task polls rumqttc's event loop: on every (re)connect it
//! publishes the retained `online` status (the last will says `offline`), on errors it waits
//! with exponential backoff and tries again. Publishing waits when rumqttc's request queue is
//! full, which is how a slow or absent broker pushes back on the pipelines.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing as RumqttOutgoing, Packet, QoS, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::MqttSettings;
use super::{Outgoing, Topics};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot read {path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("publish failed: {0}")]
    Publish(String),
}

/// Requests rumqttc queues before `publish` waits.
const REQUEST_QUEUE: usize = 256;

/// Incoming messages queued for the command handler; more are dropped and logged.
const INCOMING_QUEUE: usize = 32;

pub struct Connection {
    client: AsyncClient,
    topics: Topics,
    driver: JoinHandle<()>,
    connected: watch::Receiver<bool>,
}

/// Builds the client from settings and starts its driver task on the current runtime. The
/// driver subscribes to `subscriptions` after every connect (sessions are clean) and forwards
/// what arrives on them to the returned receiver.
pub fn connect(
    settings: &MqttSettings,
    device_id: &str,
    topics: Topics,
    subscriptions: Vec<String>,
) -> Result<(Connection, mpsc::Receiver<rumqttc::Publish>), MqttError> {
    let client_id = settings.client_id.clone().unwrap_or_else(|| format!("edge-agent-{device_id}"));
    let mut opts = MqttOptions::new(client_id, settings.host.clone(), settings.port);
    opts.set_keep_alive(Duration::from_secs(settings.keep_alive_secs.max(5)));
    // incoming: the largest message the agent takes (an update chunk is 400 KiB) with room to
    // spare; anything bigger is refused before it is buffered. Outgoing: snapshots.
    opts.set_max_packet_size(MAX_INCOMING_BYTES, 4 << 20);
    opts.set_last_will(LastWill::new(topics.status(), "offline", QoS::AtLeastOnce, true));
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| MqttError::File { path: path.to_path_buf(), source })
    };
    let password = match (&settings.password, &settings.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => {
            let f = credential_path(f);
            Some(String::from_utf8_lossy(&read(&f)?).trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => None,
    };
    if let Some(user) = &settings.username {
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if let Some(tls) = &settings.tls {
        install_crypto_provider();
        let ca = read(&tls.ca_file)?;
        let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        opts.set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
    let (tx, connected) = watch::channel(false);
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let max_backoff = Duration::from_secs_f64(settings.max_backoff_secs);
    let link =
        DriverLink { client: client.clone(), status_topic: topics.status(), subscriptions, incoming: incoming_tx };
    let driver = tokio::spawn(drive(eventloop, link, tx, max_backoff));
    Ok((Connection { client, topics, driver, connected }, incoming))
}

/// A relative secret path is looked up in systemd's `$CREDENTIALS_DIRECTORY` when set
/// (`LoadCredential=mqtt-password:/etc/...` in the unit, `password_file = "mqtt-password"`).
pub fn credential_path(p: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if p.is_relative() => std::path::Path::new(&dir).join(p),
        _ => p.to_path_buf(),
    }
}

fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want either way.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        tracing::debug!("rustls crypto provider already installed");
    }
}

struct DriverLink {
    client: AsyncClient,
    status_topic: String,
    subscriptions: Vec<String>,
    incoming: mpsc::Sender<rumqttc::Publish>,
}

async fn drive(mut eventloop: EventLoop, link: DriverLink, connected: watch::Sender<bool>, max_backoff: Duration) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(code = ?ack.code, "connected to MQTT broker");
                backoff = Duration::from_millis(250);
                connected.send_replace(true);
                let (client, topic) = (link.client.clone(), link.status_topic.clone());
                let subscriptions = link.subscriptions.clone();
                // Not awaited here: the driver must keep polling for the queue to move.
                tokio::spawn(async move {
                    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, true, "online").await {
                        tracing::warn!(error = %e, "could not queue the online status");
                    }
                    for filter in subscriptions {
                        if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                            tracing::warn!(error = %e, %filter, "could not subscribe");
                        }
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Err(e) = link.incoming.try_send(p) {
                    tracing::warn!(error = %e, "incoming message dropped: the command queue is full");
                }
            }
            Ok(Event::Outgoing(RumqttOutgoing::Disconnect)) => {
                // let the DISCONNECT reach the socket, then stop
                let flush =
                    tokio::time::timeout(Duration::from_secs(2), async { while eventloop.poll().await.is_ok() {} });
                if flush.await.is_err() {
                    tracing::debug!("broker did not close the connection after DISCONNECT");
                }
                connected.send_replace(false);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(bytes) = oversized(&e) {
                    // the client cannot skip a packet it will not read: it drops the connection
                    tracing::warn!(
                        bytes,
                        limit = MAX_INCOMING_BYTES,
                        "a message larger than the agent accepts arrived; the connection is reset. \
                         Make the broker refuse such messages (mosquitto: max_packet_size)"
                    );
                }
                if connected.send_replace(false) {
                    tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                } else {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT broker unreachable");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// The largest MQTT packet the agent reads.
pub const MAX_INCOMING_BYTES: usize = 1 << 20;

/// The size of an incoming packet over [`MAX_INCOMING_BYTES`], when that is what `e` is.
fn oversized(e: &rumqttc::ConnectionError) -> Option<usize> {
    use rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded;
    match e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(PayloadSizeLimitExceeded(n))) => {
            Some(*n)
        }
        _ => None,
    }
}

impl Connection {
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the broker connection is up now.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Hands a message (QoS 1) to the client without waiting; fails when its queue is full.
    pub fn try_publish(&self, msg: &Outgoing) -> Result<(), MqttError> {
        self.client
            .try_publish(msg.topic.clone(), QoS::AtLeastOnce, msg.retain, msg.payload.clone())
            .map_err(|e| MqttError::Publish(e.to_string()))
    }

    /// Clean stop: retained `offline`, DISCONNECT after everything queued, driver ended.
    /// When the broker is unreachable there is nobody to tell: the driver is stopped and the
    /// broker publishes the last will (`offline`) once it notices.
    pub async fn close(self) -> Result<(), MqttError> {
        if !*self.connected.borrow() {
            self.driver.abort();
            return Ok(());
        }
        let status = self.topics.status();
        self.client
            .publish(status, QoS::AtLeastOnce, true, "offline")
            .await
            .map_err(|e| MqttError::Publish(e.to_string()))?;
        self.client.disconnect().await.map_err(|e| MqttError::Publish(e.to_string()))?;
        if let Err(e) = self.driver.await {
            tracing::warn!(error = %e, "MQTT driver task failed");
        }
        Ok(())
    }
}
