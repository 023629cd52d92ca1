//! Reading a session's events so that none is lost or repeated: every (re)connect resumes after the last seq
//! delivered (`Last-Event-ID`), events at or below it are dropped, and a disconnect is retried (remote: backoff
//! 100 ms doubling to 5 s with jitter; local: the registration and `/health` are polled, which is cheap, so the
//! stream resumes as soon as the engine answers again). A crashed local engine's report is shown once; on a
//! terminal the user is asked whether to restart it, otherwise the client waits for a restart (by the supervisor's
//! `on-failure` policy or anyone else) up to the wait time. 401, 404 and `409 resume_window_exceeded` end it.

use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::wire::Incoming;
use super::Client;

mod reconnect;
mod stream;

pub(crate) use reconnect::refresh_local_endpoint;
use reconnect::{Next, Reconnect};

/// Where the stream starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The events after this seq (`0`: all of them).
    After(u64),
    /// The last N events.
    Tail(u64),
}

/// What Ctrl-C does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Stop reading and return (`sessions follow`: detach, cancel nothing).
    Detach,
    /// The first sends the engine's `stop` for the turn and keeps reading until the turn ends; a second returns at
    /// once (`ask`, `send --wait`, `attach`).
    StopTurn,
}

#[derive(Debug, Clone, Copy)]
pub struct FollowOpts {
    pub start: Start,
    /// Return once everything up to the session's last seq is delivered and no turn is in progress.
    pub until_idle: bool,
    /// How long the engine may stay unreachable before giving up.
    pub wait: Duration,
    pub on_interrupt: OnInterrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How a follow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The callback said stop, or `until_idle` was reached.
    Done,
    /// The session is closed and every event was delivered.
    Closed,
    /// Ctrl-C (once with [`OnInterrupt::Detach`]; after the turn stopped, or twice, with [`OnInterrupt::StopTurn`]).
    Interrupted,
}

#[derive(Debug, Clone, Copy)]
pub struct Followed {
    pub ended: Ended,
    /// The last seq delivered (`None`: none was).
    pub last_seq: Option<u64>,
}

enum Attempt {
    /// The stream ended or broke: reconnect.
    Lost,
    Finished(Ended),
}

/// What a follow has delivered and how Ctrl-C stands.
struct State {
    /// The last seq delivered: every (re)connect resumes after it.
    last: Option<u64>,
    /// The last event delivered ended a turn (`run_finished`).
    last_finished: bool,
    /// `until_idle`: the session's last seq when the follow began.
    idle_at: Option<u64>,
    interrupts: u32,
    /// When the first Ctrl-C asked the turn to stop: how long we still wait for its end.
    stop_deadline: Option<Instant>,
    sigint: Signal,
}

impl State {
    fn new() -> anyhow::Result<State> {
        Ok(State {
            last: None,
            last_finished: false,
            idle_at: None,
            interrupts: 0,
            stop_deadline: None,
            sigint: signal(SignalKind::interrupt())?,
        })
    }

    fn followed(&self, ended: Ended) -> Followed {
        Followed {
            ended,
            last_seq: self.last,
        }
    }

    /// Sleeps `d`, or less when Ctrl-C comes (counted); true when interrupted.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.sigint.recv() => { self.interrupts += 1; true }
        }
    }
}

pub async fn follow<F>(
    client: &mut Client<'_>,
    id: &str,
    opts: FollowOpts,
    on_event: F,
) -> anyhow::Result<Followed>
where
    F: FnMut(&Incoming<'_>) -> anyhow::Result<Flow>,
{
    let result = follow_all(client, id, opts, on_event).await;
    // Whatever way it ends, nothing printed stays unwritten (an error's message comes after it).
    super::render::flush();
    result
}

async fn follow_all<F>(
    client: &mut Client<'_>,
    id: &str,
    opts: FollowOpts,
    mut on_event: F,
) -> anyhow::Result<Followed>
where
    F: FnMut(&Incoming<'_>) -> anyhow::Result<Flow>,
{
    let mut st = State::new()?;
    if opts.until_idle && idle_already(client, id, &opts, &mut st).await? {
        return Ok(st.followed(Ended::Done));
    }
    let mut rc = Reconnect::new();
    loop {
        let before = st.last;
        let outcome = stream::attempt(client, id, &opts, &mut st, &mut on_event).await?;
        super::render::flush();
        let next = match outcome {
            Ok(Attempt::Finished(ended)) => Next::End(ended),
            Ok(Attempt::Lost) => {
                let progressed = st.last != before;
                reconnect::after_lost(client, id, &opts, &mut st, &mut rc, progressed).await?
            }
            Err(failure) => reconnect::after_failure(client, id, &mut st, &mut rc, failure).await?,
        };
        match next {
            Next::End(ended) => return Ok(st.followed(ended)),
            Next::Reconnect => continue,
            Next::WaitForEngine => {}
        }
        if let Some(ended) = reconnect::wait_for_engine(client, id, &opts, &mut st, &mut rc).await?
        {
            return Ok(st.followed(ended));
        }
    }
}

/// `until_idle`: records the session's last seq, and tells whether there is nothing to wait for at all (nothing
/// will be replayed and no turn is in progress, which the last event's type tells).
async fn idle_already(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
) -> anyhow::Result<bool> {
    let summary = client.summary(id).await?;
    st.idle_at = Some(summary.last_seq);
    let first = match opts.start {
        Start::After(n) => n,
        Start::Tail(n) => summary.last_seq.saturating_sub(n),
    };
    Ok(first >= summary.last_seq
        && (summary.last_seq == 0
            || summary.closed()
            || stream::last_kind(client, id).await?.as_deref() == Some("run_finished")))
}
