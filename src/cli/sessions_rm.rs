//! `breadboard sessions rm ID [--yes]`: deletes a session and its events. Asks on a terminal; without one it needs
//! `--yes`.

use super::{ConnectArgs, Ctx};
use crate::client::{self, StartPolicy};
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The session
    pub id: String,
    /// Delete without asking
    #[arg(short, long)]
    pub yes: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &RmArgs) -> anyhow::Result<u8> {
    client::block_on(async {
        let c = client::connect(
            ctx,
            args.connect
                .connect(StartPolicy::FailFast, super::ask::DEFAULT_WAIT),
        )
        .await?;
        let summary = c.summary(&args.id).await?;
        if !args.yes {
            if !ctx.printer.interactive() {
                return Err(CliError::new(
                    ErrorKind::Usage,
                    format!(
                        "refusing to delete session {} without confirmation (not a terminal)",
                        args.id
                    ),
                )
                .hint(format!("breadboard sessions rm {} --yes", args.id))
                .into());
            }
            let question = format!(
                "Delete session {} ({}, {} events)? This cannot be undone.",
                args.id, summary.status, summary.last_seq
            );
            if !ctx.printer.confirm(&question) {
                ctx.printer.info("nothing was deleted");
                return Ok(ErrorKind::Usage.exit_code());
            }
        }
        c.delete(&args.id).await?;
        ctx.printer.info(&format!("deleted session {}", args.id));
        Ok(0)
    })?
}
