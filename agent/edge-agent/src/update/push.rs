//! The sending side: `edge-agent push` signs a head's (or a whole model's) manifest, announces it and sends the
//! file in chunks, each after the device's `received` status says where to continue (so a
//! restarted push resumes); `edge-agent rollback` sends a signed rollback order. Both print
//! every status as a JSON line and end on the final one.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::protocol::{CHUNK_BYTES, Kind, Request, RollbackOrder, State, Status, UpdateManifest};
use super::{sha256_hex, sign, unix_now_ms};
use crate::mqtt::Topics;
use edge_core::Precision;
use edge_core::head::Head;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Head(#[from] edge_core::head::HeadError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("no answer from device {device} within {secs} s (is it online and subscribed?)")]
    Timeout { device: String, secs: u64 },
    #[error("{state:?}: {reason}")]
    Refused { state: State, reason: String },
    #[error("serialising the request: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Where and to whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub device: String,
    /// Seconds to wait for each answer.
    pub timeout: Duration,
    /// The device's public key (`edge-agent device-key` on it): statuses not signed with it are
    /// ignored. Without it every status is believed, as anyone allowed to publish on the
    /// status topic could forge one.
    pub device_key: Option<ed25519_dalek::VerifyingKey>,
}

/// Signs and sends `head_bytes` to `slot`; returns the final status (`active`).
pub async fn push_head(
    target: &Target,
    key: &SigningKey,
    slot: &str,
    head_bytes: &[u8],
    on_status: impl FnMut(&Status),
) -> Result<Status, PushError> {
    let head = Head::from_bytes(head_bytes)?;
    let manifest = UpdateManifest {
        kind: Kind::Head,
        slot: slot.to_string(),
        version: head.manifest.version.clone(),
        sha256: sha256_hex(head_bytes),
        size: head_bytes.len() as u64,
        backbone_sha256: Some(head.manifest.backbone_sha256.clone()),
        precision: None,
        device: target.device.clone(),
        issued_at_ms: unix_now_ms(),
        chunk_bytes: None,
        chunk_sha256: Vec::new(),
    }
    .with_chunks(head_bytes, CHUNK_BYTES);
    let text = serde_json::to_string(&manifest)?;
    let id = format!("push-{}-{}", manifest.version, crate::update::protocol::now_ms());
    let begin = Request::Begin { id: id.clone(), signature: sign::sign(key, text.as_bytes()), manifest: text };
    exchange(target, slot, &id, begin, Some(head_bytes), on_status).await
}

/// Signs and sends a whole detection model (ONNX) replacing `name` at `precision`.
pub async fn push_model(
    target: &Target,
    key: &SigningKey,
    name: &str,
    precision: Precision,
    version: &str,
    onnx: &[u8],
    on_status: impl FnMut(&Status),
) -> Result<Status, PushError> {
    let manifest = UpdateManifest {
        kind: Kind::Model,
        slot: name.to_string(),
        version: version.to_string(),
        sha256: sha256_hex(onnx),
        size: onnx.len() as u64,
        backbone_sha256: None,
        precision: Some(precision),
        device: target.device.clone(),
        issued_at_ms: unix_now_ms(),
        chunk_bytes: None,
        chunk_sha256: Vec::new(),
    }
    .with_chunks(onnx, CHUNK_BYTES);
    let text = serde_json::to_string(&manifest)?;
    let id = format!("push-{name}-{version}-{}", crate::update::protocol::now_ms());
    let begin = Request::Begin { id: id.clone(), signature: sign::sign(key, text.as_bytes()), manifest: text };
    exchange(target, name, &id, begin, Some(onnx), on_status).await
}

/// Sends a signed rollback order for head slot `slot`, or with `precision` for that model.
pub async fn rollback(
    target: &Target,
    key: &SigningKey,
    slot: &str,
    precision: Option<Precision>,
    on_status: impl FnMut(&Status),
) -> Result<Status, PushError> {
    let order =
        RollbackOrder { slot: slot.into(), precision, device: target.device.clone(), issued_at_ms: unix_now_ms() };
    let text = serde_json::to_string(&order)?;
    let id = format!("rollback-{}", crate::update::protocol::now_ms());
    let req = Request::Rollback { id: id.clone(), signature: sign::sign(key, text.as_bytes()), order: text };
    exchange(target, slot, &id, req, None, on_status).await
}

/// How long `push` waits for the device's first answer before it sends its request again.
const RESEND_FIRST: Duration = Duration::from_secs(10);

/// Publishes `first`, then answers `received` statuses with chunks of `payload` until a final
/// state arrives.
async fn exchange(
    target: &Target,
    slot: &str,
    id: &str,
    first: Request,
    payload: Option<&[u8]>,
    mut on_status: impl FnMut(&Status),
) -> Result<Status, PushError> {
    let topics = Topics::new(&target.prefix, &target.device);
    let mut opts = MqttOptions::new(format!("edge-agent-push-{}", std::process::id()), &target.host, target.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let broker = |e: rumqttc::ClientError| PushError::Broker(e.to_string());
    let status_topic = topics.update_status(slot);
    client.subscribe(&status_topic, QoS::AtLeastOnce).await.map_err(broker)?;
    let request_topic = topics.model_update(slot);
    let send = |req: Request| {
        let client = client.clone();
        let topic = request_topic.clone();
        async move {
            let body = serde_json::to_vec(&req)?;
            client.publish(topic, QoS::AtLeastOnce, false, body).await.map_err(broker)
        }
    };
    let total = payload.map(|p| p.len() as u64).unwrap_or(0);
    // the wait is for the device's answers: other traffic (pings, ignored statuses) must not
    // stretch it
    let mut deadline = tokio::time::Instant::now() + target.timeout;
    // the first request is sent again until the device answers: a device that has just
    // (re)connected may not have subscribed yet, and the broker drops what nobody takes. The
    // same signed request twice is harmless (the device resumes its own transfer).
    let (mut resend_at, mut answered) = (None::<tokio::time::Instant>, false);
    loop {
        let wake = resend_at.filter(|_| !answered).map_or(deadline, |r| r.min(deadline));
        let event = match tokio::time::timeout_at(wake, events.poll()).await {
            Ok(event) => event.map_err(|e| PushError::Broker(e.to_string()))?,
            Err(_) if tokio::time::Instant::now() < deadline => {
                send(first.clone()).await?;
                resend_at = Some(tokio::time::Instant::now() + RESEND_FIRST);
                continue;
            }
            Err(_) => return Err(PushError::Timeout { device: target.device.clone(), secs: target.timeout.as_secs() }),
        };
        let publish = match event {
            Event::Incoming(Packet::SubAck(_)) => {
                if resend_at.is_none() {
                    send(first.clone()).await?;
                    resend_at = Some(tokio::time::Instant::now() + RESEND_FIRST);
                }
                continue;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == status_topic => p,
            _ => continue,
        };
        let Ok(status) = serde_json::from_slice::<Status>(&publish.payload) else { continue };
        if status.id.as_deref() != Some(id) {
            continue;
        }
        if let Some(key) = &target.device_key
            && !status.verify(key, &target.device)
        {
            tracing::warn!(state = ?status.state, "a status not signed by the device was ignored (forged, or another device's)");
            continue;
        }
        deadline = tokio::time::Instant::now() + target.timeout;
        answered = true;
        on_status(&status);
        match status.state {
            State::Received => {
                let (Some(bytes), Some(offset)) = (payload, status.offset) else { continue };
                if offset >= total {
                    continue;
                }
                let end = (offset as usize + CHUNK_BYTES).min(bytes.len());
                let data = B64.encode(&bytes[offset as usize..end]);
                send(Request::Chunk { id: id.into(), offset, total, data }).await?;
            }
            State::Verified => {}
            State::Active | State::RolledBack => {
                let _ = client.disconnect().await;
                return Ok(status);
            }
            State::Rejected => {
                let _ = client.disconnect().await;
                return Err(PushError::Refused { state: status.state, reason: status.reason.unwrap_or_default() });
            }
        }
    }
}
