//! The broker connection. A driver task polls rumqttc's event loop: on every (re)connect it
//! publishes the retained `online` status (the last will says `offline`), on errors it waits
//! with exponential backoff and tries again. Publishing waits when rumqttc's request queue is
//! full, which is how a slow or absent broker pushes back on the pipelines.
//!
//! Nothing handed to the client is lost with the connection. Sessions are clean, and rumqttc
//! drops what it had not delivered (published but not acknowledged, or still queued) when it
//! reconnects to a session the broker does not have. So after every connection error the driver
//! takes those messages back out of the event loop and returns them to the publisher (the
//! `returned` channel), which puts them in the outbox; at stop, [`Connection::close`] returns
//! what the broker has not acknowledged, for the outbox too. A message the broker got but whose
//! acknowledgement was lost is sent twice: consumers dedupe by the per-pipeline `seq`.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing as RumqttOutgoing, Packet, QoS, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// How long a clean stop waits to queue its `offline` status and DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub struct Connection {
    client: AsyncClient,
    topics: Topics,
    /// Ends with the messages the broker has not acknowledged.
    driver: JoinHandle<Vec<Outgoing>>,
    stop: CancellationToken,
    connected: watch::Receiver<bool>,
}

/// What [`connect`] gives besides the connection.
pub struct Channels {
    /// Messages arriving on the subscriptions.
    pub incoming: mpsc::Receiver<rumqttc::Publish>,
    /// Messages the client held when a connection failed, given back (results to spill,
    /// retained state to send again). Unbounded, but bounded in fact: each failure gives back at
    /// most the client's request queue and its in-flight window, and the publisher takes them
    /// as they come.
    pub returned: mpsc::UnboundedReceiver<Outgoing>,
}

/// Builds the client from settings and starts its driver task on the current runtime. The
/// driver subscribes to `subscriptions` after every connect (sessions are clean) and forwards
/// what arrives on them to `incoming`.
pub fn connect(
    settings: &MqttSettings,
    device_id: &str,
    topics: Topics,
    subscriptions: Vec<String>,
) -> Result<(Connection, Channels), MqttError> {
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
    let (returned_tx, returned) = mpsc::unbounded_channel();
    let max_backoff = Duration::from_secs_f64(settings.max_backoff_secs);
    let stop = CancellationToken::new();
    let link = DriverLink {
        client: client.clone(),
        status_topic: topics.status(),
        subscriptions,
        incoming: incoming_tx,
        returned: returned_tx,
        stop: stop.clone(),
    };
    let driver = tokio::spawn(drive(eventloop, link, tx, max_backoff));
    Ok((Connection { client, topics, driver, stop, connected }, Channels { incoming, returned }))
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
    returned: mpsc::UnboundedSender<Outgoing>,
    stop: CancellationToken,
}

/// Takes the publishes out of what rumqttc would send again (`pending`, filled by its
/// `clean()`), except the `online`/`offline` status, which is sent anew on each connect.
fn take_back(eventloop: &mut EventLoop, status_topic: &str) -> Vec<Outgoing> {
    eventloop
        .pending
        .drain(..)
        .filter_map(|request| match request {
            rumqttc::Request::Publish(p) if p.topic != status_topic => {
                Some(Outgoing { topic: p.topic, payload: p.payload.to_vec(), retain: p.retain })
            }
            _ => None, // subscriptions are made again on connect; acks and pings are per connection
        })
        .collect()
}

/// Polls the event loop until stopped; returns what the broker has not acknowledged.
async fn drive(
    mut eventloop: EventLoop,
    link: DriverLink,
    connected: watch::Sender<bool>,
    max_backoff: Duration,
) -> Vec<Outgoing> {
    let mut backoff = Duration::from_millis(250);
    loop {
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            _ = link.stop.cancelled() => break,
        };
        match polled {
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
                let flush = tokio::time::timeout(CLOSE_WAIT, async { while eventloop.poll().await.is_ok() {} });
                tokio::select! {
                    r = flush => {
                        if r.is_err() {
                            tracing::debug!("broker did not close the connection after DISCONNECT");
                        }
                    }
                    _ = link.stop.cancelled() => {}
                }
                break;
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
                // rumqttc would drop these on reconnecting to a clean session: give them back
                let back = take_back(&mut eventloop, &link.status_topic);
                if !back.is_empty() {
                    tracing::info!(
                        messages = back.len(),
                        "messages not acknowledged before the connection failed go to the outbox"
                    );
                }
                for msg in back {
                    if link.returned.send(msg).is_err() {
                        tracing::error!("the publisher is gone; an unacknowledged message is lost");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = link.stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    connected.send_replace(false);
    // in flight without an acknowledgement, or still queued: the caller keeps them
    eventloop.clean();
    take_back(&mut eventloop, &link.status_topic)
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

    /// Stops the connection and returns the messages the broker has not acknowledged (handed
    /// to the client but not delivered, or delivered without an acknowledgement yet), so the
    /// caller can keep them.
    ///
    /// Connected: retained `offline` and DISCONNECT after everything queued, waiting at most
    /// [`CLOSE_WAIT`] for each. When the broker is unreachable (or too slow) there is nobody to
    /// tell: the driver is stopped and the broker publishes the last will (`offline`) once it
    /// notices.
    pub async fn close(self) -> Result<Vec<Outgoing>, MqttError> {
        let up = *self.connected.borrow();
        let said = up && {
            let status = self.topics.status();
            let polite = async {
                self.client.publish(status, QoS::AtLeastOnce, true, "offline").await?;
                self.client.disconnect().await
            };
            match tokio::time::timeout(CLOSE_WAIT, polite).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not say offline");
                    false
                }
                Err(_) => {
                    tracing::warn!("the broker did not take the offline status in time");
                    false
                }
            }
        };
        if !said {
            self.stop.cancel();
        }
        // the driver ends after DISCONNECT is flushed (bounded by CLOSE_WAIT), or at once
        let mut driver = self.driver;
        let left = match tokio::time::timeout(CLOSE_WAIT * 2, &mut driver).await {
            Ok(r) => r,
            Err(_) => {
                self.stop.cancel();
                driver.await
            }
        };
        left.map_err(|e| MqttError::Publish(format!("the MQTT driver task failed: {e}")))
    }
}
