//! `breadboard sessions follow ID [--from-seq N | --tail N] [--json] [--until-idle]`: read-only. Prints the
//! events after seq N (default 0: all) or the last N, then follows live, across disconnects and engine restarts,
//! each event exactly once. Ctrl-C detaches (exit 0) and cancels nothing.

use std::time::Duration;

use super::{ConnectArgs, Ctx};
use crate::client::render::Render;
use crate::client::{self, Ended, Flow, FollowOpts, OnInterrupt, Start, StartPolicy};
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct FollowArgs {
    /// The session
    pub id: String,
    /// Print the events after this seq (0: all of them; the default)
    #[arg(long, value_name = "N", conflicts_with = "tail")]
    pub from_seq: Option<u64>,
    /// Print only the last N events, then follow
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Print the engine's envelopes as JSON lines, exactly as sent
    #[arg(long)]
    pub json: bool,
    /// Exit once everything is printed and no turn is in progress
    #[arg(long)]
    pub until_idle: bool,
    /// Seconds to wait for an engine that went away to come back (default 60)
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &FollowArgs) -> anyhow::Result<u8> {
    let wait: Duration = super::ask::timeout(args.timeout)?.unwrap_or(super::ask::DEFAULT_WAIT);
    let start = match (args.from_seq, args.tail) {
        (_, Some(n)) => Start::Tail(n),
        (Some(n), None) => Start::After(n),
        (None, None) => Start::After(0),
    };
    client::block_on(async {
        let mut c = client::connect(ctx, args.connect.connect(StartPolicy::FailFast, wait)).await?;
        // Both need the session's end: `--tail 0` means none of the past (the engine reads a limit of 0 as no
        // limit), and a `--from-seq` past the end would wait for events that may never come.
        let start = match start {
            Start::Tail(0) => Start::After(c.summary(&args.id).await?.last_seq),
            Start::After(n) if n > 0 => {
                let last = c.summary(&args.id).await?.last_seq;
                if n > last {
                    return Err(CliError::new(
                        ErrorKind::Usage,
                        format!(
                            "--from-seq {n} is past the end of session {}: its last seq is {last}",
                            args.id
                        ),
                    )
                    .hint(format!(
                        "breadboard sessions follow {} --from-seq {last}",
                        args.id
                    ))
                    .into());
                }
                start
            }
            other => other,
        };
        let mut render = Render::new(args.json, true, *ctx.printer);
        let opts = FollowOpts {
            start,
            until_idle: args.until_idle,
            wait,
            on_interrupt: OnInterrupt::Detach,
        };
        let followed = client::follow(&mut c, &args.id, opts, |ev| {
            render.event(ev);
            Ok(if render.closed() {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })
        .await?;
        render.end_line();
        if followed.ended == Ended::Interrupted {
            ctx.printer.info(&format!(
                "detached from session {}{}",
                args.id,
                followed
                    .last_seq
                    .map_or_else(String::new, |s| format!(" after seq {s}"))
            ));
        }
        Ok(0)
    })?
}
