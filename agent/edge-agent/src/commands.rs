//! Commands from the network, on `<prefix>/<device>/commands`: parsed strictly (size limit,
//! unknown fields refused), answered on `<prefix>/<device>/commands/ack` with the request's
//! `id`. A payload that is not a valid command is answered with an error ack and logged; it
//! never stops anything.
//!
//! ```json
//! {"id": "42", "command": "ping"}
//! {"id": "43", "command": "publish_stats"}
//! ```

use serde::{Deserialize, Serialize};

/// Largest command payload accepted.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Echoed in the ack so the sender can correlate.
    pub id: Option<String>,
    pub kind: CommandKind,
}

/// The wire form (serde cannot combine `flatten` with `deny_unknown_fields`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    id: Option<String>,
    command: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Answered with an ack; proves the device listens.
    Ping,
    /// Publishes the retained stats message now.
    PublishStats,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("payload of {0} bytes is over the {MAX_COMMAND_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a command: {0}")]
    Invalid(String),
}

/// The answer on `.../commands/ack`.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    pub id: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn parse(payload: &[u8]) -> Result<Command, CommandError> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLarge(payload.len()));
    }
    let wire: Wire = serde_json::from_slice(payload).map_err(|e| CommandError::Invalid(e.to_string()))?;
    Ok(Command { id: wire.id, kind: wire.command })
}

/// The id of a payload that failed to parse, when one can still be read, for the error ack.
pub fn salvage_id(payload: &[u8]) -> Option<String> {
    if payload.len() > MAX_COMMAND_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.get("id")?.as_str().map(|s| s.chars().take(128).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commands_parse_strictly() {
        assert_eq!(
            parse(br#"{"id":"1","command":"ping"}"#).unwrap(),
            Command { id: Some("1".into()), kind: CommandKind::Ping }
        );
        assert_eq!(parse(br#"{"command":"publish_stats"}"#).unwrap().kind, CommandKind::PublishStats);
        for bad in [
            &br#"{"command":"reboot"}"#[..],
            br#"{"command":"ping","x":1}"#,
            b"",
            b"\xff\xfe",
            br#"[1,2]"#,
            br#"{"id":7,"command":"ping"}"#,
        ] {
            assert!(matches!(parse(bad), Err(CommandError::Invalid(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&vec![b' '; MAX_COMMAND_BYTES + 1]), Err(CommandError::TooLarge(MAX_COMMAND_BYTES + 1)));
        assert_eq!(salvage_id(br#"{"id":"9","command":"nope"}"#).as_deref(), Some("9"));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            drop(parse(&bytes));
            drop(salvage_id(&bytes));
        }

        #[test]
        fn json_like_payloads_never_panic(s in r#"\{("(id|command|x)":("[a-z_]{0,12}"|-?[0-9]{1,30}|null|\[\]|\{\}),?){0,4}\}"#) {
            drop(parse(s.as_bytes()));
            drop(salvage_id(s.as_bytes()));
        }
    }
}
