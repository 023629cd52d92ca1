//! After a stream ended or failed: whether that is the end (the session closed, a refusal that will not change), a
//! reconnect now, or a wait for the engine to answer again (remote: backoff 100 ms doubling to 5 s with jitter;
//! local: the registration and `/health` polled every 25 ms, the crash report once, and on a terminal the restart
//! prompt). The wait gives up after the follow's wait time.

use std::time::{Duration, Instant};

use super::stream::interrupted;
use super::{Ended, FollowOpts, State};
use crate::client::backoff::Backoff;
use crate::client::connect::{
    check_local_handshake, endpoint_of, local_state, not_running, start_local, LocalState,
};
use crate::client::{http_client, About, ApiError, Client};
use crate::engine::crash::LastExit;
use crate::engine::registration::Registration;
use crate::error::{CliError, ErrorKind};

/// What comes after a stream ended or failed.
pub(super) enum Next {
    End(Ended),
    Reconnect,
    WaitForEngine,
}

/// How reconnecting goes: the backoff, since when the engine is away, what was asked and said.
pub(super) struct Reconnect {
    backoff: Backoff,
    down_since: Option<Instant>,
    asked_restart: bool,
    /// The last waiting message printed (each is printed once).
    said: Option<String>,
}

impl Reconnect {
    pub(super) fn new() -> Reconnect {
        Reconnect {
            backoff: Backoff::new(),
            down_since: None,
            asked_restart: false,
            said: None,
        }
    }

    fn say(&mut self, client: &Client<'_>, what: String) {
        if self.said.as_deref() != Some(what.as_str()) {
            client.ctx.printer.info(&what);
            self.said = Some(what);
        }
    }
}

/// The stream ended by itself (`progressed`: it delivered something): the session closed (its stream ends after
/// the replay), or the engine shut down or dropped us as a slow follower. Only the first is the end.
pub(super) async fn after_lost(
    client: &mut Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
    rc: &mut Reconnect,
    progressed: bool,
) -> anyhow::Result<Next> {
    // The stream was open, so the engine answered: the wait for it (`--timeout`) starts anew.
    rc.down_since = None;
    if progressed {
        rc.backoff.reset();
    }
    match client.summary(id).await {
        Ok(s) if s.closed() && st.last.unwrap_or(0) >= s.last_seq => Ok(Next::End(Ended::Closed)),
        Ok(_) => {
            note_restart(client);
            // A stream that ended with nothing new while the engine still answers (one shutting down ends every
            // stream after its replay; a proxy may cut them): back off, never spin.
            if !progressed && st.pause(rc.backoff.next_wait()).await {
                if let Some(ended) = interrupted(client, id, opts, st).await {
                    return Ok(Next::End(ended));
                }
            }
            Ok(Next::Reconnect)
        }
        Err(e) if is_kind(&e, &[ErrorKind::TokenRefused]) => {
            if refresh_local_endpoint(client)? {
                return Ok(Next::Reconnect);
            }
            Err(e)
        }
        Err(e) if is_kind(&e, &[ErrorKind::SessionNotFound]) => Err(e),
        Err(_) => Ok(Next::WaitForEngine),
    }
}

/// The stream's request was refused or failed. 401 (after one look for a restarted local engine's new token), 404
/// and 409 end the follow, as does any other refusal that will be the same next time; only a timeout or a rate
/// limit may pass.
pub(super) async fn after_failure(
    client: &mut Client<'_>,
    id: &str,
    st: &mut State,
    rc: &mut Reconnect,
    failure: ApiError,
) -> anyhow::Result<Next> {
    match failure {
        ApiError::Status(401, _) if refresh_local_endpoint(client)? => Ok(Next::Reconnect),
        ApiError::Status(code, body)
            if (400..500).contains(&code) && code != 408 && code != 429 =>
        {
            Err(client.error(ApiError::Status(code, body), About::Session(id)))
        }
        _ => {
            // A local engine that answers /health but fails the stream (a 500, a 503) would otherwise be retried at
            // once, forever: the same backoff as a remote one, and the `--timeout` keeps running. A Ctrl-C here is
            // seen by the wait that follows, which ends any mode.
            if client.endpoint.is_local() {
                st.pause(rc.backoff.next_wait()).await;
            }
            Ok(Next::WaitForEngine)
        }
    }
}

/// Disconnected: waits for the engine to answer again. `Some` when the follow ends instead (Ctrl-C).
pub(super) async fn wait_for_engine(
    client: &mut Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
    rc: &mut Reconnect,
) -> anyhow::Result<Option<Ended>> {
    let since = *rc.down_since.get_or_insert_with(Instant::now);
    loop {
        // Ctrl-C while the engine is away: there is no turn to stop, so any mode ends here.
        if st.stop_deadline.is_some() || st.interrupts > 0 {
            return Ok(Some(Ended::Interrupted));
        }
        if since.elapsed() >= opts.wait {
            return Err(gone_too_long(client, id, opts, st));
        }
        if !client.endpoint.is_local() {
            if st.pause(rc.backoff.next_wait()).await {
                continue;
            }
            break;
        }
        match local_state(client.ctx)? {
            LocalState::Ready(reg, health) => {
                let endpoint = endpoint_of(&reg);
                if endpoint.instance_id != client.endpoint.instance_id {
                    check_local_handshake(client.ctx, &endpoint, &reg, &health, client.mode)?;
                }
                report_restart(client, &reg);
                adopt(client, endpoint)?;
                break;
            }
            LocalState::Refused(reg) => return Err(endpoint_of(&reg).token_refused()),
            LocalState::Down { stale, crash } => {
                match engine_down(client, id, st, rc, stale.as_deref(), crash.as_deref()).await? {
                    Down::Interrupted => return Ok(Some(Ended::Interrupted)),
                    Down::Restarted => continue,
                    Down::Waiting => {}
                }
            }
            LocalState::Waiting(why, crashed) => {
                if let Some(c) = crashed.as_deref() {
                    let ctx = client.ctx;
                    crate::engine::report_crash_once(&ctx.paths, ctx.printer, Some(&c.0), &c.1);
                }
                rc.say(client, format!("waiting for the engine: {why}"));
            }
        }
        st.pause(Duration::from_millis(25)).await;
    }
    if rc.said.take().is_some() {
        client
            .ctx
            .printer
            .info("the engine is back: resuming the stream");
    }
    Ok(None)
}

/// The engine stayed away for the whole wait: exit 21, naming where to resume from.
fn gone_too_long(client: &Client<'_>, id: &str, opts: &FollowOpts, st: &State) -> anyhow::Error {
    CliError::new(
        ErrorKind::EngineUnavailable,
        format!(
            "{} did not come back within {}s{}",
            client.endpoint.describe(),
            opts.wait.as_secs(),
            st.last
                .map_or_else(String::new, |s| format!(" (the last event printed: seq {s})"))
        ),
    )
    .hint(match st.last {
        Some(s) => format!(
            "once it runs again (breadboard engine status), resume with: breadboard sessions follow {id} --from-seq {s}"
        ),
        None => "breadboard engine status".to_owned(),
    })
    .into()
}

/// What the wait does about a local engine that is not running.
enum Down {
    /// Ctrl-C at the prompt.
    Interrupted,
    /// The user said yes and it was started again: look at once.
    Restarted,
    /// Keep waiting for someone (the supervisor's `on-failure`, anyone's `engine start`) to start it.
    Waiting,
}

/// The local engine is down: its crash report, once; on a terminal the restart prompt, once (no: the follow ends
/// with the error that says so and where to resume).
async fn engine_down(
    client: &Client<'_>,
    id: &str,
    st: &mut State,
    rc: &mut Reconnect,
    stale: Option<&Registration>,
    crash: Option<&LastExit>,
) -> anyhow::Result<Down> {
    let ctx = client.ctx;
    if let Some(exit) = crash {
        crate::engine::report_crash_once(&ctx.paths, ctx.printer, stale, exit);
    }
    if !ctx.printer.interactive() || rc.asked_restart {
        rc.say(
            client,
            "the engine is not running: waiting for it to be started again".to_owned(),
        );
        return Ok(Down::Waiting);
    }
    rc.asked_restart = true;
    let Some(yes) = confirm_or_interrupt(ctx.printer, "restart the engine?", &mut st.sigint).await
    else {
        st.interrupts += 1;
        return Ok(Down::Interrupted);
    };
    if yes {
        start_local(ctx, "restarting the engine", stale)?;
        return Ok(Down::Restarted);
    }
    let mut e = not_running(ctx, crash);
    if let Some(s) = st.last {
        e = e.context(format!(
            "stopped following session {id} after seq {s}; resume with `breadboard sessions follow {id} --from-seq {s}`"
        ));
    }
    Err(e)
}

/// Takes `endpoint` (a restarted engine's address, token, certificate), with a new connection pool when its address
/// or certificate changed.
fn adopt(client: &mut Client<'_>, endpoint: crate::client::Endpoint) -> anyhow::Result<()> {
    if (&endpoint.base, &endpoint.tls_pin) != (&client.endpoint.base, &client.endpoint.tls_pin) {
        client.http = http_client(&endpoint)?;
    }
    client.endpoint = endpoint;
    Ok(())
}

/// A local engine that still answers may have been restarted by its supervisor since the stream began: its crash
/// report, once, and the restart count that makes it once.
fn note_restart(client: &mut Client<'_>) {
    if let Some(reg) = client
        .endpoint
        .is_local()
        .then(|| crate::engine::registration::peek(&client.ctx.paths))
        .flatten()
    {
        report_restart(client, &reg);
        client.endpoint.restarts = reg.restarts;
    }
}

/// `engine restart` gives the new instance a new token (and maybe a new port), so a local follower refused after a
/// reconnect first takes the registration's current endpoint. `false` when that is the one just refused: the refusal
/// is then real, and it ends the follow instead of looping.
pub(crate) fn refresh_local_endpoint(client: &mut Client<'_>) -> anyhow::Result<bool> {
    if !client.endpoint.is_local() {
        return Ok(false);
    }
    let Some(reg) = crate::engine::registration::peek(&client.ctx.paths) else {
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
fn report_restart(client: &Client<'_>, reg: &crate::engine::registration::Registration) {
    if Some(&reg.instance_id) != client.endpoint.instance_id.as_ref()
        || reg.restarts <= client.endpoint.restarts
    {
        return;
    }
    let ctx = client.ctx;
    if let Some(exit) =
        crate::engine::crash::read(&ctx.paths).filter(|x| x.instance_id == reg.instance_id)
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
    sigint: &mut tokio::signal::unix::Signal,
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
