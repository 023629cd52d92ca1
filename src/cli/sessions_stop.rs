//! `breadboard sessions stop ID`: the engine's `stop` command; the session stays and takes the next input.

use super::{ConnectArgs, Ctx};
use crate::client::{self, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The session
    pub id: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &StopArgs) -> anyhow::Result<u8> {
    client::block_on(async {
        let c = client::connect(
            ctx,
            args.connect
                .connect(StartPolicy::FailFast, super::ask::DEFAULT_WAIT),
        )
        .await?;
        let detail = c.command(&args.id, "stop", serde_json::json!({})).await?;
        if detail.stopped == Some(true) {
            ctx.printer.result(&format!(
                "stopped the turn in progress in session {}",
                args.id
            ));
        } else {
            ctx.printer
                .result(&format!("no turn was in progress in session {}", args.id));
        }
        Ok(0)
    })?
}
