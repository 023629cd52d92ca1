//! A session as `sessions show` presents it: the summary, the conversation so far (user, assistant and error
//! messages) and the engine's derived state. From the state route (one request, whatever the session's length);
//! an engine without that route gets its events replayed up to the summary's last seq instead.

use std::time::Duration;

use serde::Serialize;

use super::follow::{follow, Flow, FollowOpts, OnInterrupt, Start};
use super::wire::{Event, Summary};
use super::{About, ApiError, Client};

#[derive(Debug, Serialize)]
pub struct Message {
    pub turn: Option<u64>,
    /// `user`, `assistant` or `error`.
    pub role: &'static str,
    pub text: String,
}

pub struct Shown {
    /// The summary as the engine sent it (`--json` prints it whole).
    pub raw: serde_json::Value,
    pub summary: Summary,
    pub conversation: Vec<Message>,
    /// The engine's derived state; `None` when it has no state route.
    pub state: Option<serde_json::Value>,
}

/// Reads session `id`; `wait`: how long a replay waits for an engine that goes away meanwhile.
pub async fn show(client: &mut Client<'_>, id: &str, wait: Duration) -> anyhow::Result<Shown> {
    let raw = client.get_raw(id).await?;
    let summary: Summary = serde_json::from_value(raw.clone())?;
    let state = state_of(client, id).await?;
    let conversation = match &state {
        Some(state) => from_state(state),
        None if summary.last_seq > 0 => replayed(client, id, summary.last_seq, wait).await?,
        None => Vec::new(),
    };
    Ok(Shown {
        raw,
        summary,
        conversation,
        state,
    })
}

/// The session's derived state; `None` when the engine has no state route (the session itself was found just before,
/// so a 404 here is the route's).
async fn state_of(client: &Client<'_>, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let req = client.request(reqwest::Method::GET, &format!("/v1/sessions/{id}/state"));
    match client.send(req).await {
        Ok(resp) => Ok(Some(resp.json().await?)),
        Err(ApiError::Status(404, _)) => Ok(None),
        Err(e) => Err(client.error(e, About::Session(id))),
    }
}

fn from_state(state: &serde_json::Value) -> Vec<Message> {
    state["conversation"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Message {
            turn: m["turn"].as_u64(),
            role: if m["role"] == "user" {
                "user"
            } else {
                "assistant"
            },
            text: m["text"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The messages among the events up to `last` (a live session's stream stays open after them).
async fn replayed(
    client: &mut Client<'_>,
    id: &str,
    last: u64,
    wait: Duration,
) -> anyhow::Result<Vec<Message>> {
    let opts = FollowOpts {
        start: Start::After(0),
        until_idle: false,
        wait,
        on_interrupt: OnInterrupt::Detach,
    };
    let mut conversation = Vec::new();
    follow(client, id, opts, |ev| {
        let turn = ev.envelope().and_then(|env| env.turn);
        let message = match ev.event() {
            Event::UserMessage { text } => Some(("user", text)),
            Event::AssistantMessage { text } => Some(("assistant", text)),
            Event::Error { message } => Some(("error", message)),
            _ => None,
        };
        if let Some((role, text)) = message {
            conversation.push(Message { turn, role, text });
        }
        Ok(if ev.seq.unwrap_or(0) >= last {
            Flow::Stop
        } else {
            Flow::Continue
        })
    })
    .await?;
    Ok(conversation)
}
