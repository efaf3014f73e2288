//! The wire format of updates. Requests arrive on `<prefix>/<device>/models/<slot>/update`;
//! statuses leave on `.../models/<slot>/update/status`, each with the request's `id`.
//!
//! ```json
//! {"op":"begin","id":"a1","manifest":"{\"kind\":\"head\",...}","signature":"<base64>"}
//! {"op":"chunk","id":"a1","offset":0,"total":81234,"data":"<base64>"}
//! {"op":"rollback","id":"a2","order":"{\"slot\":\"door\",...}","signature":"<base64>"}
//! ```
//!
//! What is signed is the manifest (or order) *text* exactly as sent, so no canonical JSON is
//! needed; the payload's bytes are bound to it by `sha256` and `size`. `issued_at_ms` must grow
//! per slot (milliseconds), so a captured message cannot be replayed.

use serde::{Deserialize, Serialize};

/// Largest request message (a 256 KiB chunk in base64 plus JSON).
pub const MAX_REQUEST_BYTES: usize = 400 * 1024;
/// Chunk size the push client uses.
pub const CHUNK_BYTES: usize = 192 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Announces a signed update; answered with `received` and the offset to send from.
    Begin { id: String, manifest: String, signature: String },
    /// Bytes `[offset, offset + len)` of the payload.
    Chunk { id: String, offset: u64, total: u64, data: String },
    /// Reactivates the slot's previous head.
    Rollback { id: String, order: String, signature: String },
}

impl Request {
    pub fn id(&self) -> &str {
        match self {
            Request::Begin { id, .. } | Request::Chunk { id, .. } | Request::Rollback { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A classification head for a slot.
    Head,
    /// A whole detection model (ONNX) for one precision.
    Model,
}

/// The signed description of an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateManifest {
    pub kind: Kind,
    /// The slot to update (a head), or the model's name.
    pub slot: String,
    pub version: String,
    /// Hex sha256 and byte size of the payload.
    pub sha256: String,
    pub size: u64,
    /// A head: the backbone file it was trained on (its sha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_sha256: Option<String>,
    /// A model: the precision variant it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<edge_core::Precision>,
    /// The device this is for, or `*` for any.
    pub device: String,
    /// Milliseconds since the epoch when signed; must exceed the slot's last accepted order.
    pub issued_at_ms: u64,
    /// Bytes per chunk, and each chunk's hex sha256 (`chunk_sha256`), signed with the rest:
    /// every chunk is checked as it arrives, so a forged one is refused on its own and the
    /// transfer goes on. The push client always sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_sha256: Vec<String>,
}

impl UpdateManifest {
    /// Sets `chunk_bytes` and `chunk_sha256` for `payload` cut into `chunk` bytes.
    pub fn with_chunks(mut self, payload: &[u8], chunk: usize) -> UpdateManifest {
        self.chunk_bytes = Some(chunk as u64);
        self.chunk_sha256 = payload.chunks(chunk).map(crate::update::sha256_hex).collect();
        self
    }

    /// Whether the chunk hashes (if any) describe a payload of `size` bytes.
    pub fn check_chunks(&self) -> Result<(), String> {
        match (self.chunk_bytes, self.chunk_sha256.is_empty()) {
            (None, true) => Ok(()),
            (None, false) => Err("chunk_sha256 without chunk_bytes".into()),
            (Some(c), _) => {
                if !(4096..=MAX_CHUNK_BYTES).contains(&c) {
                    return Err(format!("chunk_bytes {c} is not in 4096..={MAX_CHUNK_BYTES}"));
                }
                let expected = self.size.div_ceil(c);
                if self.chunk_sha256.len() as u64 != expected {
                    return Err(format!("{} chunk hashes for {expected} chunks", self.chunk_sha256.len()));
                }
                if !self.chunk_sha256.iter().all(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) {
                    return Err("a chunk hash is not 64 hex digits".into());
                }
                Ok(())
            }
        }
    }
}

/// The largest signed chunk (its base64 must fit a request).
pub const MAX_CHUNK_BYTES: u64 = 256 * 1024;

/// The signed rollback order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackOrder {
    pub slot: String,
    /// Set: roll back the model `slot` at this precision; unset: the head slot `slot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<edge_core::Precision>,
    pub device: String,
    pub issued_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Bytes up to `offset` are stored; send from there.
    Received,
    /// sha256, signature, shapes, backbone and a trial inference passed.
    Verified,
    /// The new head is serving.
    Active,
    Rejected,
    RolledBack,
}

/// One status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub schema: String,
    pub id: Option<String>,
    pub slot: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds since the epoch.
    pub ts: u64,
    /// The device's ed25519 signature (base64) of [`Status::signed_text`], made with its own
    /// key (`<state_dir>/device.secret`): `push --device-key` believes only signed statuses, so a
    /// forged `active` cannot tell an operator that an update worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

pub const STATUS_SCHEMA: &str = "edge-agent.update-status.v1";

impl Status {
    pub fn new(id: Option<&str>, slot: &str, state: State) -> Status {
        Status {
            schema: STATUS_SCHEMA.into(),
            id: id.map(|s| s.chars().take(128).collect()),
            slot: slot.into(),
            state,
            version: None,
            offset: None,
            total: None,
            reason: None,
            ts: now_ms(),
            signature: None,
        }
    }

    /// What the device signs: every field but the signature, with the device's id and the
    /// schema, as a JSON array (one fixed order, so no canonical JSON is needed). The request's
    /// `id` is in it, and `push` makes a new id for every push: an old signed status cannot
    /// answer a new push.
    pub fn signed_text(&self, device: &str) -> Vec<u8> {
        let fields = (
            &self.schema,
            device,
            &self.id,
            &self.slot,
            self.state,
            &self.version,
            self.offset,
            self.total,
            &self.reason,
            self.ts,
        );
        serde_json::to_vec(&fields).unwrap_or_default()
    }

    /// Signed by `device` with `key`.
    pub fn signed(mut self, key: &ed25519_dalek::SigningKey, device: &str) -> Status {
        self.signature = Some(super::sign::sign(key, &self.signed_text(device)));
        self
    }

    /// Whether the status carries `device`'s valid signature.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey, device: &str) -> bool {
        let Some(signature) = &self.signature else { return false };
        super::sign::verify(std::slice::from_ref(key), &self.signed_text(device), signature).is_ok()
    }

    pub fn version(mut self, v: &str) -> Status {
        self.version = Some(v.into());
        self
    }

    pub fn reason(mut self, r: impl Into<String>) -> Status {
        self.reason = Some(r.into());
        self
    }

    pub fn progress(mut self, offset: u64, total: u64) -> Status {
        (self.offset, self.total) = (Some(offset), Some(total));
        self
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Parses a request (size-limited, unknown fields refused).
pub fn parse(payload: &[u8]) -> Result<Request, String> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(format!("message of {} bytes is over the {MAX_REQUEST_BYTES}-byte limit", payload.len()));
    }
    serde_json::from_slice(payload).map_err(|e| format!("not an update request: {e}"))
}

/// The slot named by an update topic `<base>/models/<slot>/update`.
pub fn slot_of_topic<'a>(base: &str, topic: &'a str) -> Option<&'a str> {
    topic.strip_prefix(base)?.strip_prefix("/models/")?.strip_suffix("/update")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let r = parse(br#"{"op":"chunk","id":"x","offset":3,"total":9,"data":"AAAA"}"#).unwrap();
        assert_eq!(r.id(), "x");
        assert!(parse(br#"{"op":"chunk","id":"x","offset":3,"total":9,"data":"","extra":1}"#).is_err());
        assert!(parse(br#"{"op":"format_disk"}"#).is_err());
        assert!(parse(&vec![b' '; MAX_REQUEST_BYTES + 1]).is_err());
    }

    #[test]
    fn chunk_hashes_must_describe_the_payload() {
        let payload = vec![7u8; 10_000];
        let m = UpdateManifest {
            kind: Kind::Head,
            slot: "s".into(),
            version: "1".into(),
            sha256: crate::update::sha256_hex(&payload),
            size: payload.len() as u64,
            backbone_sha256: None,
            precision: None,
            device: "*".into(),
            issued_at_ms: 1,
            chunk_bytes: None,
            chunk_sha256: Vec::new(),
        };
        assert!(m.check_chunks().is_ok(), "no chunk hashes is allowed");
        let chunked = m.clone().with_chunks(&payload, 4096);
        assert_eq!(chunked.chunk_sha256.len(), 3);
        assert!(chunked.check_chunks().is_ok());
        let short = UpdateManifest { chunk_sha256: chunked.chunk_sha256[..2].to_vec(), ..chunked.clone() };
        assert!(short.check_chunks().is_err());
        assert!(m.clone().with_chunks(&payload, 100).check_chunks().is_err(), "chunks too small");
        let orphan = UpdateManifest { chunk_bytes: None, ..chunked };
        assert!(orphan.check_chunks().is_err());
    }

    #[test]
    fn statuses_verify_only_unchanged_and_from_their_device() {
        let device = crate::update::sign::generate().unwrap();
        let other = crate::update::sign::generate().unwrap();
        let public = device.verifying_key();
        let s = Status::new(Some("push-1"), "door", State::Active).version("7").signed(&device, "pi");
        assert!(s.verify(&public, "pi"));
        let back: Status = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(back.verify(&public, "pi"), "survives the wire");
        assert!(!s.verify(&public, "pi2"), "another device's id");
        assert!(!Status { version: Some("8".into()), ..s.clone() }.verify(&public, "pi"));
        assert!(!Status { state: State::Rejected, ..s.clone() }.verify(&public, "pi"));
        assert!(!Status { id: Some("push-2".into()), ..s.clone() }.verify(&public, "pi"), "another push");
        assert!(!Status { signature: None, ..s.clone() }.verify(&public, "pi"), "unsigned");
        let forged = Status::new(Some("push-1"), "door", State::Active).version("7").signed(&other, "pi");
        assert!(!forged.verify(&public, "pi"), "another key");
    }

    #[test]
    fn slot_comes_from_the_topic() {
        assert_eq!(slot_of_topic("ea/pi", "ea/pi/models/door/update"), Some("door"));
        assert_eq!(slot_of_topic("ea/pi", "ea/pi/models/door/update/status"), None);
        assert_eq!(slot_of_topic("ea/pi", "ea/other/models/door/update"), None);
    }
}
