//! `breadboard sessions show ID [--json]`: the summary and the conversation so far (user and assistant text), from
//! the engine's derived state (`GET /v1/sessions/{id}/state`: one request, whatever the session's length); an
//! engine without that route gets its events replayed instead.

use serde::Serialize;

use super::{ConnectArgs, Ctx};
use crate::client::wire::{Event, Summary};
use crate::client::{self, Flow, FollowOpts, OnInterrupt, Start, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The session
    pub id: String,
    /// Print {"session": <summary as the engine sent it>, "conversation": [{"turn","role","text"}], "state": <the
    /// engine's state, or null when it has no state route>}
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Serialize)]
struct Message {
    turn: Option<u64>,
    role: &'static str,
    text: String,
}

pub fn run(ctx: &Ctx, args: &ShowArgs) -> anyhow::Result<u8> {
    client::block_on(async {
        let mut c = client::connect(
            ctx,
            args.connect
                .connect(StartPolicy::FailFast, super::ask::DEFAULT_WAIT),
        )
        .await?;
        let raw = c.get_raw(&args.id).await?;
        let summary: Summary = serde_json::from_value(raw.clone())?;
        let mut conversation = Vec::new();
        let state = state_of(&c, &args.id).await?;
        if let Some(state) = &state {
            for m in state["conversation"].as_array().into_iter().flatten() {
                conversation.push(Message {
                    turn: m["turn"].as_u64(),
                    role: if m["role"] == "user" {
                        "user"
                    } else {
                        "assistant"
                    },
                    text: m["text"].as_str().unwrap_or_default().to_owned(),
                });
            }
        } else if summary.last_seq > 0 {
            let opts = FollowOpts {
                start: Start::After(0),
                until_idle: false,
                wait: super::ask::DEFAULT_WAIT,
                on_interrupt: OnInterrupt::Detach,
            };
            // The events up to the summary's last seq: a live session's stream stays open after them.
            let last = summary.last_seq;
            client::follow(&mut c, &args.id, opts, |ev| {
                let turn = ev.envelope().and_then(|env| env.turn);
                match ev.event() {
                    Event::UserMessage { text } => conversation.push(Message {
                        turn,
                        role: "user",
                        text: text.to_owned(),
                    }),
                    Event::AssistantMessage { text } => conversation.push(Message {
                        turn,
                        role: "assistant",
                        text: text.to_owned(),
                    }),
                    Event::Error { message } => conversation.push(Message {
                        turn,
                        role: "error",
                        text: message.to_owned(),
                    }),
                    _ => {}
                }
                Ok(if ev.seq.unwrap_or(0) >= last {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })
            .await?;
        }
        if args.json {
            ctx.printer.json(
                &serde_json::json!({ "session": raw, "conversation": conversation, "state": state }),
            );
            return Ok(0);
        }
        let p = ctx.printer;
        p.result(&format!("session {}", summary.session_id));
        p.result(&format!("  status:         {}", summary.status));
        p.result(&format!(
            "  provider/model: {}",
            super::sessions_list::provider_model(&summary)
        ));
        p.result(&format!(
            "  created:        {}",
            super::sessions_list::short_time(&summary.created_at)
        ));
        p.result(&format!(
            "  last activity:  {}",
            super::sessions_list::short_time(summary.last_activity_at.as_deref().unwrap_or(""))
        ));
        p.result(&format!("  last seq:       {}", summary.last_seq));
        if summary.oneshot() {
            p.result("  kind:           one-shot");
        }
        if let Some(usage) = state.as_ref().and_then(|s| s["usage"].as_object()) {
            let counts: Vec<String> = usage.iter().map(|(k, v)| format!("{k} {v}")).collect();
            p.result(&format!("  usage:          {}", counts.join(", ")));
        }
        for m in &conversation {
            p.result("");
            p.result(&format!("{}:", m.role));
            p.result(&m.text);
        }
        if let Some(turn) = state
            .as_ref()
            .map(|s| &s["turn_in_progress"])
            .filter(|t| t.is_object())
        {
            p.result("");
            p.result(&format!(
                "assistant (turn {} in progress):",
                turn["turn"].as_u64().unwrap_or(0)
            ));
            p.result(turn["partial_text"].as_str().unwrap_or_default());
        }
        Ok(0)
    })?
}

/// The session's derived state; `None` when the engine has no state route (the session itself was found just before,
/// so a 404 here is the route's).
async fn state_of(c: &client::Client<'_>, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let req = c.request(reqwest::Method::GET, &format!("/v1/sessions/{id}/state"));
    match c.send(req).await {
        Ok(resp) => Ok(Some(resp.json().await?)),
        Err(client::ApiError::Status(404, _)) => Ok(None),
        Err(e) => Err(c.error(e, client::About::Session(id))),
    }
}
