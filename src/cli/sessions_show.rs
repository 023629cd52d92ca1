//! `breadboard sessions show ID [--json]`: the summary and the conversation so far (user and assistant text).

use serde::Serialize;

use super::{ConnectArgs, Ctx};
use crate::client::wire::{Event, Summary};
use crate::client::{self, Flow, FollowOpts, OnInterrupt, Start, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The session
    pub id: String,
    /// Print {"session": <summary as the engine sent it>, "conversation": [{"turn","role","text"}]}
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
        if summary.last_seq > 0 {
            let opts = FollowOpts {
                start: Start::After(0),
                until_idle: false,
                wait: super::ask::DEFAULT_WAIT,
                on_interrupt: OnInterrupt::Detach,
            };
            // The events up to the summary's last seq: a live session's stream stays open after them.
            let last = summary.last_seq;
            client::follow(&mut c, &args.id, opts, |env, _| {
                let turn = env.turn;
                match env.event() {
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
                Ok(if env.seq.unwrap_or(0) >= last {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            })
            .await?;
        }
        if args.json {
            ctx.printer
                .json(&serde_json::json!({ "session": raw, "conversation": conversation }));
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
        for m in &conversation {
            p.result("");
            p.result(&format!("{}:", m.role));
            p.result(&m.text);
        }
        Ok(0)
    })?
}
