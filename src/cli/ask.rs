//! `breadboard ask [PROMPT | -]`: one turn, its answer streamed to stdout. Without `--session`/`--continue` it runs
//! in a new one-shot session (`metadata.cli_session_kind = "oneshot"`), which ends with its turn.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use super::{ConnectArgs, Ctx};
use crate::client::render::{stream_turn, Input, Render};
use crate::client::{self, state, StartPolicy};
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The prompt; `-` (or nothing, with stdin not a terminal) reads it from stdin
    pub prompt: Option<String>,
    /// Ask in this existing interactive session instead of a new one-shot session
    #[arg(long, value_name = "ID", conflicts_with = "continue_")]
    pub session: Option<String>,
    /// Ask in the last interactive session used from this CLI
    #[arg(short = 'c', long = "continue")]
    pub continue_: bool,
    /// Provider of the new session (echo, openai, replay; the engine's default otherwise)
    #[arg(long, value_name = "P")]
    pub provider: Option<String>,
    /// Model of the session (metadata.model)
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// Print the turn's events as JSON lines (the engine's envelopes, one per line)
    #[arg(long)]
    pub json: bool,
    /// Fail instead of starting the local engine when it is not running
    #[arg(long)]
    pub no_start: bool,
    /// Seconds the turn may take (then it is stopped, exit 124); also how long to wait for a restarting engine
    #[arg(long, value_name = "S")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// An input from the argument, or from stdin for `-` (or no argument, when stdin is not a terminal). With an
/// argument stdin is never read, so an inherited stdin that stays open cannot hang the command.
pub fn read_input(arg: Option<&str>, what: &str) -> anyhow::Result<String> {
    let text = match arg {
        Some("-") => read_stdin()?,
        Some(text) => text.to_owned(),
        None if !std::io::stdin().is_terminal() => read_stdin()?,
        None => {
            return Err(CliError::new(ErrorKind::Usage, format!("no {what} given"))
                .hint(format!(
                    "give the {what} as an argument, or pipe it on stdin with `-`"
                ))
                .into())
        }
    };
    if text.trim().is_empty() {
        return Err(
            CliError::new(ErrorKind::Usage, format!("the {what} is empty"))
                .hint(format!("give a non-empty {what}"))
                .into(),
        );
    }
    Ok(text)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::new(ErrorKind::Usage, format!("could not read stdin: {e}")))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// `--timeout` in seconds, checked.
pub fn timeout(value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s > 0.0 && s.is_finite() => Ok(Some(Duration::from_secs_f64(s))),
        Some(_) => Err(CliError::new(
            ErrorKind::Usage,
            "--timeout must be a positive number of seconds",
        )
        .into()),
    }
}

/// How long a client waits for a local engine that is restarting, when no `--timeout` says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

pub fn run(ctx: &Ctx, args: &AskArgs) -> anyhow::Result<u8> {
    let turn_timeout = timeout(args.timeout)?;
    if args.provider.is_some() && (args.session.is_some() || args.continue_) {
        return Err(CliError::new(
            ErrorKind::Usage,
            "--provider applies to a new session; an existing session keeps its provider",
        )
        .into());
    }
    let prompt = read_input(args.prompt.as_deref(), "prompt")?;
    let start = StartPolicy::unless(args.no_start);
    let wait = turn_timeout.unwrap_or(DEFAULT_WAIT);
    client::block_on(async {
        let mut c = client::connect(ctx, args.connect.connect(start, wait)).await?;
        let existing = match (&args.session, args.continue_) {
            (Some(id), _) => Some(id.clone()),
            (None, true) => Some(state::recall(&ctx.paths, &c.endpoint)?),
            (None, false) => None,
        };
        let (id, after, input_id) = match existing {
            Some(id) => {
                let summary = c.summary(&id).await?;
                if summary.closed() {
                    return Err(closed_error(&summary));
                }
                if let Some(m) = &args.model {
                    c.set_model(&id, m).await?;
                }
                let input_id = c.input(&id, &prompt).await?;
                state::remember(&ctx.paths, &c.endpoint, &id);
                (id, summary.last_seq, input_id)
            }
            None => {
                let mut meta = serde_json::json!({ "cli_session_kind": "oneshot" });
                if let Some(m) = &args.model {
                    meta["model"] = m.clone().into();
                }
                let created = c.create(&prompt, args.provider.as_deref(), meta).await?;
                ctx.printer
                    .debug(&format!("session {}", created.session_id));
                (created.session_id, 0, None)
            }
        };
        let mut render = Render::new(args.json, false, *ctx.printer);
        let outcome = stream_turn(
            &mut c,
            &id,
            after,
            Some(Input {
                text: &prompt,
                input_id: input_id.as_deref(),
            }),
            &mut render,
            turn_timeout,
            wait,
        )
        .await?;
        outcome.into_exit()
    })?
}

/// A closed session takes no input: say why, and what to do instead.
pub fn closed_error(summary: &client::wire::Summary) -> anyhow::Error {
    let id = &summary.session_id;
    if summary.oneshot() {
        CliError::new(
            ErrorKind::SessionClosed,
            format!("session {id} was a one-shot session (`breadboard ask` without --session): it ended with its turn and is not continued"),
        )
        .hint("start an interactive session: breadboard sessions new (then ask --session ID, or attach ID)")
        .into()
    } else {
        CliError::new(
            ErrorKind::SessionClosed,
            format!("session {id} is {} and takes no more input", summary.status),
        )
        .hint("start a new session: breadboard sessions new")
        .into()
    }
}
