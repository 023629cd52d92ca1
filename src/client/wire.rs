//! The engine's wire format (protocol 1.0, docs/protocol.md) as the client reads it: kept in this one module so that
//! the types can be generated from, or checked against, the engine's published JSON Schema.
//!
//! The envelope is decoded first and the payload only for the event types the client acts on; any other type passes
//! through untouched (an engine within protocol 1.x may add types), and `--json` prints the engine's own bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /health`.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub protocol_version: String,
    #[serde(default)]
    pub engine_version: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub instance_id: String,
}

/// The error body of every non-2xx answer: `{"error", "detail", "path"}` (`last_seq` on a 409 of the event stream).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub detail: Value,
    #[serde(default)]
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

/// `POST /v1/sessions` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub session_id: String,
    #[serde(default)]
    pub status: String,
}

/// A session summary (`GET /v1/sessions[/{id}]`); the client reads these fields, `--json` prints the whole object.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Summary {
    pub session_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub last_activity_at: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
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

/// The envelope of every event: `{"id","seq","type","session_id","turn","timestamp","timestamp_ms",
/// "protocol_version","payload"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// Per session, from 1, by one. Upstream sends `null` for a synthetic event, which is not stored.
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub turn: Option<u64>,
    #[serde(default)]
    pub payload: Value,
}

/// What the client does something with; every other type is [`Event::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    UserMessage { text: &'a str },
    AssistantDelta { text: &'a str },
    AssistantMessage { text: &'a str },
    Error { message: &'a str },
    RunFinished { completed: bool, reason: &'a str },
    Other,
}

impl Envelope {
    pub fn event(&self) -> Event<'_> {
        let text = |key: &str| self.payload.get(key).and_then(Value::as_str).unwrap_or("");
        match self.kind.as_str() {
            "user_message" => Event::UserMessage { text: text("text") },
            "assistant_delta" => Event::AssistantDelta { text: text("text") },
            "assistant_message" => Event::AssistantMessage { text: text("text") },
            "error" => Event::Error {
                message: text("message"),
            },
            "run_finished" => Event::RunFinished {
                completed: self
                    .payload
                    .get("completed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                reason: text("reason"),
            },
            _ => Event::Other,
        }
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
                reason: "completed"
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
