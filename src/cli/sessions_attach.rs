//! `breadboard sessions attach ID | --new`: a line editor (rustyline: editing, history) on a session. Each line is
//! an input whose answer streams below it; Ctrl-C during a turn stops it (the engine's `stop`) and keeps the
//! session; Ctrl-D detaches, leaving the session as it is.

use rustyline::error::ReadlineError;

use super::{ConnectArgs, Ctx};
use crate::client::render::{stream_turn, Input, Outcome, Render};
use crate::client::{self, state, StartPolicy};
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The session
    #[arg(required_unless_present = "new", conflicts_with = "new")]
    pub id: Option<String>,
    /// Attach to a new interactive session
    #[arg(long)]
    pub new: bool,
    /// With --new: the session's provider
    #[arg(long, value_name = "P", requires = "new")]
    pub provider: Option<String>,
    /// With --new: the session's model
    #[arg(long, value_name = "M", requires = "new")]
    pub model: Option<String>,
    /// Fail instead of starting the local engine when it is not running
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &AttachArgs) -> anyhow::Result<u8> {
    let start = StartPolicy::unless(args.no_start);
    let wait = super::ask::DEFAULT_WAIT;
    client::block_on(async {
        let mut c = client::connect(ctx, args.connect.connect(start, wait)).await?;
        let id = session_id(&c, args).await?;
        let summary = c.summary(&id).await?;
        if summary.closed() {
            return Err(super::ask::closed_error(&summary));
        }
        state::remember(&ctx.paths, &c.endpoint, &id);
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| {
            CliError::new(
                ErrorKind::Failure,
                format!("could not open the line editor: {e}"),
            )
        })?;
        let history = ctx.paths.home.join("state").join("attach-history");
        let _ = editor.load_history(&history);
        ctx.printer.info(&format!(
            "attached to session {id} ({}): type a message and Enter; Ctrl-C stops a turn, Ctrl-D detaches",
            summary.status
        ));
        loop {
            match editor.readline("> ") {
                Ok(line) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let _ = editor.add_history_entry(line.as_str());
                    one_turn(ctx, &mut c, &id, &line, wait).await?;
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    return Err(CliError::new(
                        ErrorKind::Failure,
                        format!("the line editor failed: {e}"),
                    )
                    .into())
                }
            }
        }
        if let Some(dir) = history.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(&history);
        ctx.printer.info(&format!("detached from session {id} (it stays; attach again with `breadboard sessions attach {id}`)"));
        Ok(0)
    })?
}

/// The session to attach to: the one named, or a new idle one (`--new`).
async fn session_id(c: &client::Client<'_>, args: &AttachArgs) -> anyhow::Result<String> {
    match &args.id {
        Some(id) => Ok(id.clone()),
        None => Ok(super::sessions_new::create_idle(
            c,
            args.provider.as_deref(),
            args.model.as_deref(),
        )
        .await?
        .session_id),
    }
}

/// One line typed: posted as an input, its turn streamed below it; a failed or stopped turn keeps the session.
async fn one_turn(
    ctx: &Ctx<'_>,
    c: &mut client::Client<'_>,
    id: &str,
    line: &str,
    wait: std::time::Duration,
) -> anyhow::Result<()> {
    let after = c.summary(id).await?.last_seq;
    let input_id = c.input(id, line).await?;
    let mut render = Render::new(false, false, *ctx.printer);
    let input = Input {
        text: line,
        input_id: input_id.as_deref(),
    };
    match stream_turn(c, id, after, Some(input), &mut render, None, wait).await? {
        Outcome::Completed => {}
        Outcome::Interrupted => ctx.printer.info("(turn stopped)"),
        Outcome::Failed(why) => ctx.printer.warn(&format!("the turn failed: {why}")),
    }
    Ok(())
}
