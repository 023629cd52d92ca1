//! The engine's wire format (protocol 1.0, docs/protocol.md) as the client reads it: kept in this one module so that
//! the types can be generated from, or checked against, the engine's published JSON Schema.
//!
//! The envelope is decoded first and the payload only for the event types the client acts on; any other type passes
//! through untouched (an engine within protocol 1.x may add types), and `--json` prints the engine's own bytes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// `GET /health`: the same type the supervisor's probe reads.
pub use crate::engine_client::Health;

/// The error body of every non-2xx answer: `{"error", "detail", "path"}` (`last_seq` on a 409 of the event stream).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub detail: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

impl ErrorBody {
    /// The detail as one line (a string, or the JSON of an object).
    pub fn detail_text(&self) -> String {
        match &self.detail {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// `POST /v1/sessions` body.
#[derive(Debug, Clone, Serialize)]
pub struct CreateSession<'a> {
    pub task: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    pub metadata: Value,
}

/// `POST /v1/sessions/{id}/input` body.
#[derive(Debug, Clone, Serialize)]
pub struct Input<'a> {
    pub content: &'a str,
    /// Ours, chosen per input: an engine with `sessions.input_id` echoes it in the answer and in the turn's
    /// `user_message`, so the client finds its own turn; others ignore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_id: Option<&'a str>,
}

/// `POST /v1/sessions/{id}/input` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InputAnswer {
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_id: Option<String>,
}

/// `POST /v1/sessions/{id}/command` body: `stop`, `set_model {model}`, `set_mode {mode}`.
#[derive(Debug, Clone, Serialize)]
pub struct Command<'a> {
    pub command: &'a str,
    pub payload: Value,
}

/// `POST /v1/sessions/{id}/command` answer.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct CommandAnswer {
    #[serde(default)]
    pub detail: CommandDetail,
}

/// What a command did, as far as the client reads it.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct CommandDetail {
    /// `stop`: whether a turn was running (and is stopped now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<bool>,
    /// `close`: whether this closed the session (false: it was closed already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
}

/// `POST /v1/sessions` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Created {
    pub session_id: String,
    #[serde(default)]
    pub status: String,
}

/// A session summary (`GET /v1/sessions[/{id}]`); the client reads these fields, `--json` prints the whole object.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Summary {
    pub session_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub last_seq: u64,
    #[serde(default)]
    pub metadata: Value,
}

/// Statuses after which a session never runs again.
pub const CLOSED: [&str; 3] = ["completed", "failed", "stopped"];

impl Summary {
    pub fn closed(&self) -> bool {
        CLOSED.contains(&self.status.as_str())
    }

    pub fn oneshot(&self) -> bool {
        self.metadata
            .get("cli_session_kind")
            .and_then(Value::as_str)
            == Some("oneshot")
            || self
                .metadata
                .get("non_interactive_cli_session")
                .is_some_and(|v| v.as_bool().unwrap_or(!v.is_null()))
    }
}

/// The envelope of every event, its fields in the engine's order: encoding a decoded event gives back the engine's
/// bytes (checked against the golden corpus), and an event of a type the client does not know passes through whole.
/// It borrows from the event's text (strings are copied only when they hold escapes) and the payload stays raw JSON
/// until an event's fields are asked for: following a long stream with `--json` allocates nothing per event for it.
/// Fields that upstream may leave out stay out when encoded.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope<'a> {
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    /// Per session, from 1, by one. Upstream sends `null` for a synthetic event, which is not stored.
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub turn: Option<u64>,
    /// Milliseconds since the epoch; kept as the number that was sent (upstream has sent floats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<serde_json::Number>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub payload: Option<&'a RawValue>,
}

/// The two fields every event of a stream is triaged by (deduplication, the resume point, the end of a turn), read
/// without decoding the rest: following with `--json` needs nothing more, and decodes nothing more.
#[derive(Debug, Clone, Deserialize)]
pub struct Head<'a> {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
}

/// One event as it came: its [`Head`] and the engine's own text, which `--json` prints as is and a reader that
/// needs more fields decodes ([`Incoming::envelope`]).
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    pub seq: Option<u64>,
    pub kind: Cow<'a, str>,
    pub raw: &'a str,
}

impl<'a> Incoming<'a> {
    /// The whole envelope; `None` when a field other than the head's does not fit it.
    pub fn envelope(&self) -> Option<Envelope<'a>> {
        serde_json::from_str(self.raw).ok()
    }

    /// What the client acts on ([`Event::Other`] for every other type, and for an envelope it cannot read).
    pub fn event(&self) -> Event {
        if !ACTED_ON.contains(&self.kind.as_ref()) {
            return Event::Other;
        }
        self.envelope().map_or(Event::Other, |env| env.event())
    }
}

/// What the client does something with; every other type is [`Event::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    UserMessage { text: String },
    AssistantDelta { text: String },
    AssistantMessage { text: String },
    Error { message: String },
    RunFinished { completed: bool, reason: String },
    Other,
}

/// The event types the client decodes a payload of; any other passes through as [`Event::Other`].
pub const ACTED_ON: [&str; 5] = [
    "user_message",
    "assistant_delta",
    "assistant_message",
    "error",
    "run_finished",
];

/// The payload of `user_message`, `assistant_delta` and `assistant_message`, as far as the client reads it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TextPayload {
    pub text: String,
}

/// The payload of `error`, as far as the client reads it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ErrorPayload {
    pub message: String,
}

/// The payload of `run_finished`, as far as the client reads it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RunFinishedPayload {
    pub completed: bool,
    pub reason: String,
}

/// A payload decoded leniently: one that does not fit is the type's default (an engine within 1.x stays readable).
fn decode<T: serde::de::DeserializeOwned + Default>(payload: Option<&RawValue>) -> T {
    payload
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default()
}

impl Envelope<'_> {
    pub fn event(&self) -> Event {
        let payload = self.payload;
        match self.kind.as_ref() {
            "user_message" => Event::UserMessage {
                text: decode::<TextPayload>(payload).text,
            },
            "assistant_delta" => Event::AssistantDelta {
                text: decode::<TextPayload>(payload).text,
            },
            "assistant_message" => Event::AssistantMessage {
                text: decode::<TextPayload>(payload).text,
            },
            "error" => Event::Error {
                message: decode::<ErrorPayload>(payload).message,
            },
            "run_finished" => {
                let p: RunFinishedPayload = decode(payload);
                Event::RunFinished {
                    completed: p.completed,
                    reason: p.reason,
                }
            }
            _ => Event::Other,
        }
    }

    /// The payload of an [`ACTED_ON`] type as the client reads it, encoded again (`None` for other types): what the
    /// schema test compares with the engine's definition of that payload.
    pub fn read_payload(&self) -> Option<Value> {
        let payload = self.payload;
        let value = match self.kind.as_ref() {
            "user_message" | "assistant_delta" | "assistant_message" => {
                serde_json::to_value(decode::<TextPayload>(payload))
            }
            "error" => serde_json::to_value(decode::<ErrorPayload>(payload)),
            "run_finished" => serde_json::to_value(decode::<RunFinishedPayload>(payload)),
            _ => return None,
        };
        value.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_envelope_and_passes_unknown_types_through() {
        let raw = r#"{"id":"u","seq":7,"type":"run_finished","session_id":"s","turn":1,"timestamp":1,
            "timestamp_ms":1,"protocol_version":"1.0","payload":{"eventCount":6,"completed":true,"reason":"completed"}}"#;
        let env: Envelope = serde_json::from_str(raw).unwrap();
        assert_eq!(env.seq, Some(7));
        assert_eq!(
            env.event(),
            Event::RunFinished {
                completed: true,
                reason: "completed".into()
            }
        );
        let other: Envelope =
            serde_json::from_str(r#"{"seq":null,"type":"ctree_node","payload":{"x":[1]}}"#)
                .unwrap();
        assert_eq!((other.seq, other.event()), (None, Event::Other));
    }

    #[test]
    fn oneshot_sessions_are_recognised_by_either_marker() {
        let s = |m: Value| Summary {
            metadata: m,
            ..Default::default()
        };
        assert!(s(serde_json::json!({"cli_session_kind": "oneshot"})).oneshot());
        assert!(s(serde_json::json!({"non_interactive_cli_session": true})).oneshot());
        assert!(!s(serde_json::json!({})).oneshot());
    }
}
