//! `breadboard engine logs [-f] [-n N]`: the engine log; `-f` follows it across rotation (reopens when the file
//! is replaced or truncated).

use std::io::Write;

use super::Ctx;
use crate::engine;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    pub lines: usize,
}

pub fn run(ctx: &Ctx, args: &LogsArgs) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    // A reader that went away (`| head`) ends the command quietly.
    let mut show = |lines: &[String]| {
        lines.iter().all(|line| writeln!(out, "{line}").is_ok()) && out.flush().is_ok()
    };
    if args.follow {
        engine::follow_log(&ctx.paths, args.lines, show);
    } else {
        show(&engine::read_log(&ctx.paths, args.lines)?);
    }
    Ok(0)
}
