use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // clap prints usage errors and help before our `--color` is parsed: hand it the choice up front.
    let command = breadboard::cli::Cli::command().color(color_from_args());
    let cli =
        breadboard::cli::Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    let printer = cli.printer();
    match breadboard::cli::run(cli, &printer) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let (code, hint) = breadboard::error::classify(&err);
            printer.error(&err, hint);
            ExitCode::from(code)
        }
    }
}

/// `--color WHEN` / `--color=WHEN` from the raw arguments (before a `--`); clap's `auto` already honours NO_COLOR.
fn color_from_args() -> clap::ColorChoice {
    let mut args = std::env::args_os().skip(1);
    let mut when = None;
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if let Some(v) = arg.strip_prefix("--color=") {
            when = Some(v.to_owned());
        } else if arg == "--color" {
            when = args.next().map(|v| v.to_string_lossy().into_owned());
        }
    }
    match when.as_deref() {
        Some("never") => clap::ColorChoice::Never,
        Some("always") => clap::ColorChoice::Always,
        _ => clap::ColorChoice::Auto,
    }
}
