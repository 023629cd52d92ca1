//! Reading a session's events so that none is lost or repeated: every (re)connect resumes after the last seq
//! delivered (`Last-Event-ID`), events at or below it are dropped, and a disconnect is retried (remote: backoff
//! 100 ms doubling to 5 s with jitter; local: the registration and `/health` are polled, which is cheap, so the
//! stream resumes as soon as the engine answers again). A crashed local engine's report is shown once; on a
//! terminal the user is asked whether to restart it, otherwise the client waits for a restart (by the supervisor's
//! `on-failure` policy or anyone else) up to the wait time. 401, 404 and `409 resume_window_exceeded` end it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::connect::{
    check_local_handshake, endpoint_of, local_state, not_running, start_local, LocalState,
};
use super::wire::{Head, Incoming};
use super::{http_client, About, ApiError, Client};
use crate::error::{CliError, ErrorKind};

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

struct State {
    last: Option<u64>,
    /// The last event delivered ended a turn (`run_finished`).
    last_finished: bool,
    /// `until_idle`: the session's last seq when the follow began.
    idle_at: Option<u64>,
    interrupts: u32,
    /// When the first Ctrl-C asked the turn to stop: how long we still wait for its end.
    stop_deadline: Option<Instant>,
}

fn jitter(d: Duration) -> Duration {
    // Spread reconnects of many clients; the clock's nanoseconds are random enough for that.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let spread = d.as_millis() as u64 / 4 + 1;
    d + Duration::from_millis(u64::from(nanos) % spread)
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
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut st = State {
        last: None,
        last_finished: false,
        idle_at: None,
        interrupts: 0,
        stop_deadline: None,
    };
    if opts.until_idle {
        let summary = client.summary(id).await?;
        st.idle_at = Some(summary.last_seq);
        let first = match opts.start {
            Start::After(n) => n,
            Start::Tail(n) => summary.last_seq.saturating_sub(n),
        };
        if first >= summary.last_seq {
            // Nothing will be replayed: whether a turn is in progress is told by the last event's type.
            if summary.last_seq == 0
                || summary.closed()
                || last_kind(client, id).await?.as_deref() == Some("run_finished")
            {
                return Ok(Followed {
                    ended: Ended::Done,
                    last_seq: None,
                });
            }
        }
    }
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    let mut asked_restart = false;
    let mut said = None::<String>;
    loop {
        let before = st.last;
        let outcome = attempt(client, id, &opts, &mut st, &mut sigint, &mut on_event).await?;
        super::render::flush();
        match outcome {
            Ok(Attempt::Finished(ended)) => {
                return Ok(Followed {
                    ended,
                    last_seq: st.last,
                })
            }
            Ok(Attempt::Lost) => {
                // The stream was open, so the engine answered: the wait for it (`--timeout`) starts anew.
                down_since = None;
                let progressed = st.last != before;
                if progressed {
                    backoff = Duration::from_millis(100);
                }
                // A stream that ends by itself: the session closed (its stream ends after the replay), or the
                // engine shut down or dropped us as a slow follower. Only the first is the end.
                match client.summary(id).await {
                    Ok(s) if s.closed() && st.last.unwrap_or(0) >= s.last_seq => {
                        return Ok(Followed {
                            ended: Ended::Closed,
                            last_seq: st.last,
                        })
                    }
                    Ok(_) => {
                        if let Some(reg) = client
                            .endpoint
                            .is_local()
                            .then(|| crate::registration::peek(&client.ctx.paths))
                            .flatten()
                        {
                            report_restart(client, &reg);
                            client.endpoint.restarts = reg.restarts;
                        }
                        // A stream that ended with nothing new while the engine still answers (one shutting
                        // down ends every stream after its replay; a proxy may cut them): back off, never spin.
                        if !progressed {
                            if pause(jitter(backoff), &mut sigint, &mut st).await {
                                if let Some(ended) =
                                    interrupted(client, id, &opts, &mut st, &mut sigint).await
                                {
                                    return Ok(Followed {
                                        ended,
                                        last_seq: st.last,
                                    });
                                }
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        continue;
                    }
                    Err(e) if is_kind(&e, &[ErrorKind::TokenRefused]) => {
                        if refresh_local_endpoint(client)? {
                            continue;
                        }
                        return Err(e);
                    }
                    Err(e) if is_kind(&e, &[ErrorKind::SessionNotFound]) => return Err(e),
                    Err(_) => {}
                }
            }
            Err(ApiError::Status(code @ (401 | 404 | 409), body)) => {
                if code == 401 && refresh_local_endpoint(client)? {
                    continue;
                }
                return Err(client.error(ApiError::Status(code, body), About::Session(id)));
            }
            // Any other refusal (400, 403, ...) will be the same next time; only a timeout or a rate limit may pass.
            Err(ApiError::Status(code, body))
                if (400..500).contains(&code) && code != 408 && code != 429 =>
            {
                return Err(client.error(ApiError::Status(code, body), About::Session(id)));
            }
            Err(_) => {
                // A local engine that answers /health but fails the stream (a 500, a 503) would otherwise be
                // retried at once, forever: the same backoff as a remote one, and the `--timeout` keeps running.
                if client.endpoint.is_local() {
                    // A Ctrl-C here is seen by the wait below, which ends any mode.
                    pause(jitter(backoff), &mut sigint, &mut st).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Disconnected: wait for the engine to answer again.
        let since = *down_since.get_or_insert_with(Instant::now);
        loop {
            // Ctrl-C while the engine is away: there is no turn to stop, so any mode ends here.
            if st.stop_deadline.is_some() || st.interrupts > 0 {
                return Ok(Followed {
                    ended: Ended::Interrupted,
                    last_seq: st.last,
                });
            }
            if since.elapsed() >= opts.wait {
                return Err(CliError::new(
                    ErrorKind::EngineUnavailable,
                    format!(
                        "{} did not come back within {}s{}",
                        client.endpoint.describe(),
                        opts.wait.as_secs(),
                        st.last.map_or_else(String::new, |s| format!(" (the last event printed: seq {s})"))
                    ),
                )
                .hint(match st.last {
                    Some(s) => format!(
                        "once it runs again (breadboard engine status), resume with: breadboard sessions follow {id} --from-seq {s}"
                    ),
                    None => "breadboard engine status".to_owned(),
                })
                .into());
            }
            if !client.endpoint.is_local() {
                if pause(jitter(backoff), &mut sigint, &mut st).await {
                    continue;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                break;
            }
            match local_state(client.ctx)? {
                LocalState::Ready(reg, health) => {
                    let endpoint = endpoint_of(&reg);
                    if endpoint.instance_id != client.endpoint.instance_id {
                        check_local_handshake(client.ctx, &endpoint, &reg, &health, client.mode)?;
                    }
                    report_restart(client, &reg);
                    if (&endpoint.base, &endpoint.tls_pin)
                        != (&client.endpoint.base, &client.endpoint.tls_pin)
                    {
                        client.http = http_client(&endpoint)?;
                    }
                    client.endpoint = endpoint;
                    break;
                }
                LocalState::Refused(reg) => return Err(endpoint_of(&reg).token_refused()),
                LocalState::Down { stale, crash } => {
                    let ctx = client.ctx;
                    if let Some(exit) = &crash {
                        crate::engine::report_crash_once(
                            &ctx.paths,
                            ctx.printer,
                            stale.as_deref(),
                            exit,
                        );
                    }
                    if ctx.printer.interactive() && !asked_restart {
                        asked_restart = true;
                        let answer =
                            confirm_or_interrupt(ctx.printer, "restart the engine?", &mut sigint);
                        let Some(yes) = answer.await else {
                            st.interrupts += 1;
                            return Ok(Followed {
                                ended: Ended::Interrupted,
                                last_seq: st.last,
                            });
                        };
                        if yes {
                            start_local(ctx, "restarting the engine", stale.as_deref())?;
                            continue;
                        }
                        let mut e = not_running(ctx, crash.as_deref());
                        if let Some(s) = st.last {
                            e = e.context(format!(
                                "stopped following session {id} after seq {s}; resume with `breadboard sessions follow {id} --from-seq {s}`"
                            ));
                        }
                        return Err(e);
                    }
                    let why =
                        "the engine is not running: waiting for it to be started again".to_owned();
                    if said.as_deref() != Some(why.as_str()) {
                        ctx.printer.info(&why);
                        said = Some(why);
                    }
                }
                LocalState::Waiting(why, crashed) => {
                    if let Some(c) = crashed.as_deref() {
                        let ctx = client.ctx;
                        crate::engine::report_crash_once(&ctx.paths, ctx.printer, Some(&c.0), &c.1);
                    }
                    if said.as_deref() != Some(why.as_str()) {
                        client
                            .ctx
                            .printer
                            .info(&format!("waiting for the engine: {why}"));
                        said = Some(why);
                    }
                }
            }
            pause(Duration::from_millis(25), &mut sigint, &mut st).await;
        }
        if said.take().is_some() {
            client
                .ctx
                .printer
                .info("the engine is back: resuming the stream");
        }
    }
}

/// `engine restart` gives the new instance a new token (and maybe a new port), so a local follower refused after a
/// reconnect first takes the registration's current endpoint. `false` when that is the one just refused: the refusal
/// is then real, and it ends the follow instead of looping.
pub(crate) fn refresh_local_endpoint(client: &mut Client<'_>) -> anyhow::Result<bool> {
    if !client.endpoint.is_local() {
        return Ok(false);
    }
    let Some(reg) = crate::registration::peek(&client.ctx.paths) else {
        return Ok(false);
    };
    let fresh = endpoint_of(&reg);
    if fresh.token == client.endpoint.token
        && fresh.base == client.endpoint.base
        && fresh.tls_pin == client.endpoint.tls_pin
    {
        return Ok(false);
    }
    if fresh.instance_id != client.endpoint.instance_id {
        let health = crate::engine::client_for(&reg, Duration::from_millis(500))
            .and_then(|c| c.health().ok());
        if let Some(h) = health {
            check_local_handshake(client.ctx, &fresh, &reg, &h, client.mode)?;
        }
    }
    report_restart(client, &reg);
    if (&fresh.base, &fresh.tls_pin) != (&client.endpoint.base, &client.endpoint.tls_pin) {
        client.http = http_client(&fresh)?;
    }
    client.endpoint = fresh;
    Ok(true)
}

/// The supervisor restarted the engine after a crash (maybe before we saw it down): its crash report, once.
fn report_restart(client: &Client<'_>, reg: &crate::registration::Registration) {
    if Some(&reg.instance_id) != client.endpoint.instance_id.as_ref()
        || reg.restarts <= client.endpoint.restarts
    {
        return;
    }
    let ctx = client.ctx;
    if let Some(exit) = crate::crash::read(&ctx.paths).filter(|x| x.instance_id == reg.instance_id)
    {
        crate::engine::report_crash_once(&ctx.paths, ctx.printer, Some(reg), &exit);
    }
}

fn is_kind(e: &anyhow::Error, kinds: &[ErrorKind]) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<CliError>())
        .any(|c| kinds.contains(&c.kind))
}

/// Asks on the terminal; `None` when Ctrl-C comes first. The answer is read on a thread of its own: tokio's SIGINT
/// handler is installed (with SA_RESTART), so a read on this thread would not see Ctrl-C at all. That thread is
/// left blocked in its read when Ctrl-C wins; the process ends soon after.
async fn confirm_or_interrupt(
    printer: &crate::printer::Printer,
    question: &'static str,
    sigint: &mut Signal,
) -> Option<bool> {
    let printer = *printer;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(printer.confirm_default_yes(question));
    });
    tokio::select! {
        answer = rx => Some(answer.unwrap_or(false)),
        _ = sigint.recv() => {
            // The prompt's line is left open: end it before what comes next.
            printer.info_always("");
            None
        }
    }
}

/// Sleeps `d`, or less when Ctrl-C comes (counted in `st`); true when interrupted.
async fn pause(d: Duration, sigint: &mut Signal, st: &mut State) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = sigint.recv() => { st.interrupts += 1; true }
    }
}

/// The type of the session's last event (one replayed event: `replay=true&limit=1`).
async fn last_kind(client: &Client<'_>, id: &str) -> anyhow::Result<Option<String>> {
    let req = client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/events?replay=true&limit=1"),
        )
        .header("Accept", "text/event-stream");
    let resp = client
        .send(req)
        .await
        .map_err(|e| client.error(e, About::Session(id)))?;
    let mut events = std::pin::pin!(sse_events(resp));
    while let Some(Ok(ev)) = events.next().await {
        if let Some(Ok(head)) = ev.data.as_deref().map(serde_json::from_str::<Head>) {
            return Ok(Some(head.kind.into_owned()));
        }
    }
    Ok(None)
}

/// The body's SSE events. sse-stream parses each socket read in place (memchr for line ends, no copy of what
/// follows), so a read holding thousands of replayed events costs linear time.
fn sse_events(
    resp: reqwest::Response,
) -> sse_stream::SseByteStream<
    impl futures_util::TryStream<Ok = bytes::Bytes, Error = reqwest::Error>,
> {
    sse_stream::SseByteStream::new(resp.bytes_stream())
}

/// One connection: replays from the resume point, then reads live events until it ends.
async fn attempt<F>(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
    sigint: &mut Signal,
    on_event: &mut F,
) -> anyhow::Result<Result<Attempt, ApiError>>
where
    F: FnMut(&Incoming<'_>) -> anyhow::Result<Flow>,
{
    let path = match (st.last, opts.start) {
        (None, Start::Tail(n)) => format!("/v1/sessions/{id}/events?replay=true&limit={n}"),
        _ => format!("/v1/sessions/{id}/events"),
    };
    let mut req = client
        .request(reqwest::Method::GET, &path)
        .header("Accept", "text/event-stream");
    let resume = match (st.last, opts.start) {
        (Some(s), _) => Some(s),
        (None, Start::After(n)) => Some(n),
        (None, Start::Tail(_)) => None,
    };
    if let Some(s) = resume {
        req = req.header("Last-Event-ID", s.to_string());
    }
    let resp = tokio::select! {
        r = client.send(req) => r,
        _ = sigint.recv() => {
            st.interrupts += 1;
            if let Some(ended) = interrupted(client, id, opts, st, sigint).await { return Ok(Ok(Attempt::Finished(ended))); }
            return Ok(Ok(Attempt::Lost));
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut events = std::pin::pin!(sse_events(resp));
    loop {
        let stop_wait = st
            .stop_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        // Whatever is ready is handled first; printed lines are written out before waiting for more.
        let ready = futures_util::FutureExt::now_or_never(events.next());
        if ready.is_none() {
            super::render::flush();
        }
        let item = if let Some(item) = ready {
            item
        } else {
            tokio::select! {
                item = events.next() => item,
                _ = sigint.recv() => {
                    st.interrupts += 1;
                    if let Some(ended) = interrupted(client, id, opts, st, sigint).await { return Ok(Ok(Attempt::Finished(ended))); }
                    continue;
                }
                _ = tokio::time::sleep(stop_wait) => return Ok(Ok(Attempt::Finished(Ended::Interrupted))),
            }
        };
        let ev = match item {
            Some(Ok(ev)) => ev,
            Some(Err(_)) | None => return Ok(Ok(Attempt::Lost)),
        };
        // A block without data (a comment, a keep-alive, a lone `retry:`) is no event.
        let Some(data) = ev.data.as_deref().filter(|d| !d.is_empty()) else {
            continue;
        };
        // The SSE id is the seq too: an event the client cannot read still moves the resume point past it, or a
        // closed session's stream would be resumed before it, forever.
        let sse_seq = ev.id.as_deref().and_then(|id| id.parse::<u64>().ok());
        let Ok(head) = serde_json::from_str::<Head>(data) else {
            client.ctx.printer.warn(&format!(
                "skipped an event that is not a protocol 1.0 envelope: {}",
                data.chars().take(200).collect::<String>()
            ));
            if let Some(seq) = sse_seq.filter(|s| st.last.is_none_or(|l| *s > l)) {
                st.last = Some(seq);
            }
            continue;
        };
        let seq = head.seq.or(sse_seq);
        if let Some(seq) = seq {
            if st.last.is_some_and(|l| seq <= l) {
                continue;
            }
        }
        let finished = head.kind == "run_finished";
        let flow = on_event(&Incoming {
            seq,
            kind: head.kind,
            raw: data,
        })?;
        if let Some(seq) = seq {
            st.last = Some(seq);
        }
        st.last_finished = finished;
        if flow == Flow::Stop {
            return Ok(Ok(Attempt::Finished(if st.stop_deadline.is_some() {
                Ended::Interrupted
            } else {
                Ended::Done
            })));
        }
        if finished && st.stop_deadline.is_some() {
            return Ok(Ok(Attempt::Finished(Ended::Interrupted)));
        }
        if let Some(target) = st.idle_at {
            if st.last.unwrap_or(0) >= target && st.last_finished {
                return Ok(Ok(Attempt::Finished(Ended::Done)));
            }
        }
    }
}

/// A Ctrl-C: `Some` when the follow ends now.
async fn interrupted(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
    sigint: &mut Signal,
) -> Option<Ended> {
    if opts.on_interrupt == OnInterrupt::Detach || st.interrupts > 1 {
        return Some(Ended::Interrupted);
    }
    client
        .ctx
        .printer
        .info("stopping the turn (Ctrl-C again to quit at once)");
    // Only a turn the engine says it stopped is waited for; print what arrives until it ends.
    // A second Ctrl-C while the stop request is out quits at once, whatever the engine does with it.
    let answer = tokio::select! {
        answer = client.command(id, "stop", serde_json::json!({})) => answer,
        _ = sigint.recv() => {
            st.interrupts += 1;
            return Some(Ended::Interrupted);
        }
    };
    match answer {
        Ok(detail) if detail.stopped == Some(true) => {
            st.stop_deadline = Some(Instant::now() + Duration::from_secs(5));
            None
        }
        _ => Some(Ended::Interrupted),
    }
}
