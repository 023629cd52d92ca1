//! `breadboard sessions send ID TEXT|- [--wait]`: posts one input; `--wait` streams its turn as `ask` does.

use super::{ConnectArgs, Ctx};
use crate::client::render::{stream_turn, Input, Render};
use crate::client::{self, state, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The session
    pub id: String,
    /// The input; `-` (or nothing, with stdin not a terminal) reads it from stdin
    pub text: Option<String>,
    /// Stream the turn's answer and exit when it ends (exit code as `ask`)
    #[arg(long)]
    pub wait: bool,
    /// With --wait: print the turn's events as JSON lines
    #[arg(long, requires = "wait")]
    pub json: bool,
    /// With --wait: seconds the turn may take (then it is stopped, exit 124)
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    /// Fail instead of starting the local engine when it is not running
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &SendArgs) -> anyhow::Result<u8> {
    let turn_timeout = super::ask::timeout(args.timeout)?;
    let text = super::ask::read_input(args.text.as_deref(), "input")?;
    let start = StartPolicy::unless(args.no_start);
    let wait = turn_timeout.unwrap_or(super::ask::DEFAULT_WAIT);
    client::block_on(async {
        let mut c = client::connect(ctx, args.connect.connect(start, wait)).await?;
        let summary = c.summary(&args.id).await?;
        if summary.closed() {
            return Err(super::ask::closed_error(&summary));
        }
        let input_id = c.input(&args.id, &text).await?;
        state::remember(&ctx.paths, &c.endpoint, &args.id);
        if !args.wait {
            ctx.printer.info(&format!("sent to session {}", args.id));
            return Ok(0);
        }
        let mut render = Render::new(args.json, false, *ctx.printer);
        stream_turn(
            &mut c,
            &args.id,
            summary.last_seq,
            Some(Input {
                text: &text,
                input_id: input_id.as_deref(),
            }),
            &mut render,
            turn_timeout,
            wait,
        )
        .await?
        .into_exit()
    })?
}
