//! Printing events: `--json` writes each envelope exactly as the engine sent it, one per line, flushed per line;
//! the human form streams the assistant's text to stdout as the deltas arrive (a transcript adds the user's
//! inputs), with errors on stderr. No ANSI codes: the text is the model's, printed as is.

use std::io::Write;
use std::time::Duration;

use super::follow::{follow, Ended, Flow, FollowOpts, OnInterrupt, Start};
use super::wire::{Event, Incoming};
use super::Client;
use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;

pub struct Render {
    json: bool,
    /// Also print the user's inputs and errors as they happen (`sessions follow`).
    transcript: bool,
    /// The last text written did not end with a newline.
    open_line: bool,
    /// Deltas of the current assistant message were printed (its final `assistant_message` is then not).
    streamed: bool,
    printer: Printer,
}

/// What was printed but not yet written to stdout. It is written out whenever the stream has nothing more ready,
/// before the client waits (see [`flush`]): a line is never held back while nothing happens, and a burst of replayed
/// events costs one write(2) rather than one each.
static PENDING: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
/// stdout is gone (a closed pipe): print nothing more.
static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const PENDING_MAX: usize = 64 * 1024;

/// Writes out what was printed.
pub fn flush() {
    let mut buf = PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if buf.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
        CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    buf.clear();
}

impl Render {
    pub fn new(json: bool, transcript: bool, printer: Printer) -> Render {
        Render {
            json,
            transcript,
            open_line: false,
            streamed: false,
            printer,
        }
    }

    /// stdout is gone (a closed pipe).
    pub fn closed(&self) -> bool {
        CLOSED.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.write_parts(bytes, b"");
    }

    /// Two pieces at once (an event and its newline): one lock of the buffer per event.
    fn write_parts(&mut self, first: &[u8], second: &[u8]) {
        if self.closed() {
            return;
        }
        let full = {
            let mut buf = PENDING
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            buf.extend_from_slice(first);
            buf.extend_from_slice(second);
            buf.len() >= PENDING_MAX
        };
        if full {
            flush();
        }
    }

    pub fn event(&mut self, ev: &Incoming<'_>) {
        if self.json {
            self.write_parts(ev.raw.as_bytes(), b"\n");
            return;
        }
        match ev.event() {
            Event::UserMessage { text } if self.transcript => {
                self.end_line();
                self.write(format!("> {text}\n").as_bytes());
            }
            Event::AssistantDelta { text } => {
                self.streamed = true;
                self.open_line = !text.ends_with('\n');
                self.write(text.as_bytes());
            }
            Event::AssistantMessage { text } => {
                if !self.streamed {
                    self.write(text.as_bytes());
                    self.open_line = !text.ends_with('\n');
                }
                self.streamed = false;
                self.end_line();
            }
            Event::Error { message } if self.transcript => {
                self.end_line();
                flush();
                self.printer.info_always(&format!("[error] {message}"));
            }
            Event::RunFinished { .. } => {
                self.streamed = false;
                self.end_line();
            }
            _ => {}
        }
    }

    /// Ends a line of streamed text (so the shell prompt, or the next message, starts on its own line).
    pub fn end_line(&mut self) {
        if self.open_line {
            self.open_line = false;
            self.write(b"\n");
        }
        flush();
    }
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// An `error` event (its message), or a turn that ended without completing (its reason).
    Failed(String),
    /// Ctrl-C: the turn was stopped (or the user quit at once).
    Interrupted,
}

impl Outcome {
    /// The exit code of a command that ran this turn: 0, or the error with its code.
    pub fn into_exit(self) -> anyhow::Result<u8> {
        match self {
            Outcome::Completed => Ok(0),
            Outcome::Failed(why) => {
                Err(CliError::new(ErrorKind::TurnFailed, format!("the turn failed: {why}")).into())
            }
            Outcome::Interrupted => Ok(ErrorKind::Interrupted.exit_code()),
        }
    }
}

/// The input whose turn to stream: its text, and the `input_id` the engine echoed for it (if it knows them).
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    pub input_id: Option<&'a str>,
}

impl Input<'_> {
    /// Whether a `user_message` starts this input's turn: by its `input_id` when the engine echoes them (another
    /// client's identical text is then not ours), else by its text.
    fn starts(&self, text: &str, raw: &str) -> bool {
        match self.input_id {
            Some(mine) => {
                serde_json::from_str::<serde_json::Value>(raw)
                    .ok()
                    .and_then(|v| v["payload"]["input_id"].as_str().map(|t| t == mine))
                    == Some(true)
            }
            None => text == self.text,
        }
    }
}

/// Streams the turn of `input` posted after seq `after`: prints its events until its `run_finished`. Events of an
/// earlier turn still running are skipped until our input's `user_message`. `timeout` stops the turn and fails
/// with exit 124.
pub async fn stream_turn(
    client: &mut Client<'_>,
    id: &str,
    after: u64,
    prompt: Option<Input<'_>>,
    render: &mut Render,
    timeout: Option<Duration>,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    let mut ours = prompt.is_none();
    let mut failure: Option<String> = None;
    let mut outcome = None;
    let opts = FollowOpts {
        start: Start::After(after),
        until_idle: false,
        wait,
        on_interrupt: OnInterrupt::StopTurn,
    };
    let run = follow(client, id, opts, |ev| {
        let event = ev.event();
        if !ours {
            if let (Event::UserMessage { text }, Some(p)) = (&event, prompt) {
                ours = p.starts(text, ev.raw);
            }
            if !ours {
                return Ok(Flow::Continue);
            }
        }
        render.event(ev);
        match event {
            Event::Error { message } => failure = Some(message.to_owned()),
            Event::RunFinished { completed, reason } => {
                outcome = Some(turn_outcome(completed, &reason, failure.take()));
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        Ok(if render.closed() {
            Flow::Stop
        } else {
            Flow::Continue
        })
    });
    let followed = match timeout {
        Some(t) => match tokio::time::timeout(t, run).await {
            Ok(r) => r?,
            Err(_) => {
                render.end_line();
                return Err(stop_timed_out_turn(client, id, t).await);
            }
        },
        None => run.await?,
    };
    render.end_line();
    if followed.ended == Ended::Interrupted {
        return Ok(Outcome::Interrupted);
    }
    Ok(match outcome {
        Some(o) => o,
        // The session closed without our turn's end (it was deleted or closed by someone else).
        None if render.closed() => Outcome::Completed,
        None => Outcome::Failed("the session closed before the turn finished".to_owned()),
    })
}

/// How a turn ended, from its `run_finished` and the last `error` event before it.
fn turn_outcome(completed: bool, reason: &str, failure: Option<String>) -> Outcome {
    if completed {
        Outcome::Completed
    } else if reason == "stopped" {
        Outcome::Failed("it was stopped (the engine's stop command)".to_owned())
    } else {
        Outcome::Failed(failure.unwrap_or_else(|| format!("it ended: {reason}")))
    }
}

/// `--timeout` ran out: the turn is stopped rather than left running behind the user's back, and the error says
/// whether the engine took the stop.
async fn stop_timed_out_turn(client: &mut Client<'_>, id: &str, limit: Duration) -> anyhow::Error {
    let stopped = match client.command(id, "stop", serde_json::json!({})).await {
        Ok(_) => "it was stopped".to_owned(),
        Err(e) => format!("stopping it failed too ({e:#}): breadboard sessions stop {id}"),
    };
    CliError::new(
        ErrorKind::Timeout,
        format!(
            "the turn did not finish within {}s; {stopped}",
            limit.as_secs_f64()
        ),
    )
    .hint("raise --timeout")
    .into()
}
