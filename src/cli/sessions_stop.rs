//! `breadboard sessions stop ID [--close]`: the engine's `stop` command (the turn in progress ends; the session stays
//! and takes the next input), or with `--close` its `close` command (the session ends for good, keeping its history:
//! status `stopped`). What happened is said on stderr: stdout carries results only.

use super::{ConnectArgs, Ctx};
use crate::client::{self, StartPolicy};
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The session
    pub id: String,
    /// End the session for good (it keeps its history; further input is refused), not only its turn
    #[arg(long)]
    pub close: bool,
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
        let id = &args.id;
        if !args.close {
            let detail = c.command(id, "stop", serde_json::json!({})).await?;
            ctx.printer.info(&if detail.stopped == Some(true) {
                format!("stopped the turn in progress in session {id}")
            } else {
                format!("no turn was in progress in session {id}")
            });
            return Ok(0);
        }
        let detail = match c.command(id, "close", serde_json::json!({})).await {
            Ok(d) => d,
            // An engine from before the close command answers 400 "Unsupported command".
            Err(e) if e.to_string().contains("Unsupported command") => {
                return Err(CliError::new(
                    ErrorKind::Usage,
                    format!("{} has no close command", c.endpoint.describe()),
                )
                .hint("upgrade the engine (breadboard engine upgrade), or stop the turn only: breadboard sessions stop ID")
                .into())
            }
            Err(e) => return Err(e),
        };
        let turn = if detail.stopped == Some(true) {
            " (its turn in progress was stopped)"
        } else {
            ""
        };
        ctx.printer.info(&match detail.closed {
            Some(false) => format!("session {id} was closed already"),
            _ => format!("closed session {id}{turn}: it keeps its history and takes no more input"),
        });
        Ok(0)
    })?
}
