//! `breadboard sessions show ID [--json]`: the summary and the conversation so far (user and assistant text), from
//! the engine's derived state (`GET /v1/sessions/{id}/state`: one request, whatever the session's length); an
//! engine without that route gets its events replayed instead.

use super::{ConnectArgs, Ctx};
use crate::client::conversation::Shown;
use crate::client::{self, StartPolicy};
use crate::printer::Printer;

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

pub fn run(ctx: &Ctx, args: &ShowArgs) -> anyhow::Result<u8> {
    let wait = super::ask::DEFAULT_WAIT;
    let shown = client::block_on(async {
        let mut c = client::connect(ctx, args.connect.connect(StartPolicy::FailFast, wait)).await?;
        client::conversation::show(&mut c, &args.id, wait).await
    })??;
    if args.json {
        ctx.printer.json(&serde_json::json!({
            "session": shown.raw,
            "conversation": shown.conversation,
            "state": shown.state,
        }));
    } else {
        print_human(ctx.printer, &shown);
    }
    Ok(0)
}

fn print_human(p: &Printer, shown: &Shown) {
    let summary = &shown.summary;
    let state = &shown.state;
    p.result(&format!("session {}", summary.session_id));
    p.result(&format!("  status:         {}", summary.status));
    p.result(&format!(
        "  provider/model: {}",
        super::sessions_list::provider_model(summary)
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
    for m in &shown.conversation {
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
}
