//! `breadboard engine status [--json]`: stopped, starting, running, unhealthy, incompatible, crashed or errored,
//! each with its own exit code. Fast: a lock probe, a file read and loopback HTTP requests (`/health`, and `/ready`
//! for Ray's state when the engine answers); no Python.

use std::time::Duration;

use serde::Serialize;

use super::Ctx;
use crate::engine::crash::{self, LastExit};
use crate::engine::registration::Registration;
use crate::engine::{self, Answer, Diagnosis, Live, Pending, State};
use crate::fsutil;
use crate::paths::Paths;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default)]
struct StatusJson {
    state: String,
    exit_code: u8,
    url: Option<String>,
    pid: Option<i32>,
    supervisor_pid: Option<i32>,
    instance_id: Option<String>,
    engine_version: Option<String>,
    pinned_version: Option<String>,
    protocol_version: Option<String>,
    uptime_s: Option<f64>,
    started_at: Option<String>,
    ray: Option<RayJson>,
    log_path: String,
    detail: Option<String>,
    last_exit: Option<LastExit>,
    /// The supervisor's restart policy (`no` | `on-failure`) and the automatic restarts it made so far.
    restart_policy: Option<String>,
    restarts: Option<u32>,
}

#[derive(Serialize)]
struct RayJson {
    /// `local`, `cluster` (joined an existing cluster) or `off`: the engine's own `/ready` values.
    mode: String,
    /// When a local Ray starts: `background` (right after the port opens) or `lazy` (at the first turn).
    start: Option<String>,
    address: Option<String>,
    /// As the engine reports it (`GET /ready`), when it answers: pending | starting | connected | failed | off.
    state: Option<String>,
    nodes: Option<u64>,
    error: Option<String>,
}

pub fn run(ctx: &Ctx, args: &StatusArgs) -> anyhow::Result<u8> {
    let paths = &ctx.paths;
    // Busy (connected, no answer in 500 ms): give it a little longer before judging.
    let diagnosis =
        engine::diagnose(paths, Some(ctx.printer), false)?.patiently(paths, Duration::from_secs(2));
    let state = diagnosis.state();
    let out = status_json(ctx, &diagnosis, state);
    if args.json {
        ctx.printer.json(&out);
    } else {
        // The crash report shown below (once) has its own log and next lines.
        let report_follows = diagnosis
            .crash()
            .is_some_and(|exit| !crash::acknowledged(paths, &exit.instance_id));
        print_human(ctx, &out, state, report_follows);
    }
    if let (Some(stale), Some(exit)) = (diagnosis.stale(), diagnosis.crash()) {
        if engine::report_crash_once(paths, ctx.printer, Some(stale), exit)
            && ctx.printer.interactive()
            && !args.json
        {
            if ctx.printer.confirm_default_yes("Restart the engine now?") {
                return restart_as_before(ctx, stale);
            }
            ctx.printer
                .info("not restarted; start it later with: breadboard engine start");
        }
    }
    Ok(state.exit_code())
}

/// What `--json` prints, and what the human output is made of.
fn status_json(ctx: &Ctx, diagnosis: &Diagnosis, state: State) -> StatusJson {
    let paths = &ctx.paths;
    let mut out = StatusJson {
        state: state.name().to_owned(),
        exit_code: state.exit_code(),
        log_path: paths.engine_log().display().to_string(),
        pinned_version: engine::pinned_version(paths),
        detail: detail(paths, diagnosis),
        ..Default::default()
    };
    match diagnosis {
        Diagnosis::Stopped | Diagnosis::Leftovers(_) | Diagnosis::Unregistered => {}
        Diagnosis::Crashed(dead) | Diagnosis::Errored(dead) => {
            fill(&mut out, &dead.reg);
            out.uptime_s = None;
            out.last_exit = Some(dead.exit.clone());
        }
        Diagnosis::Live(live) => {
            fill(&mut out, &live.reg);
            // How the engine last crashed (it was restarted since).
            out.last_exit = live.last_exit.clone().filter(|_| live.reg.restarts > 0);
            if let Answer::Ready(h) | Answer::Incompatible(h, _) = &live.answer {
                out.engine_version = Some(h.engine_version.clone());
                out.protocol_version = Some(h.protocol_version.clone());
                fill_ray_state(&mut out, &live.reg);
            }
        }
    }
    out
}

/// The line under the state that says why.
fn detail(paths: &Paths, diagnosis: &Diagnosis) -> Option<String> {
    match diagnosis {
        Diagnosis::Stopped | Diagnosis::Leftovers(_) => None,
        Diagnosis::Crashed(dead) => {
            Some(format!("died without a stop request: {}", dead.exit.how()))
        }
        Diagnosis::Errored(dead) => dead.exit.crash_loop.as_ref().map(|cl| {
            format!(
                "{}; the last one: {}",
                cl.summary(dead.exit.restarts),
                dead.exit.how()
            )
        }),
        Diagnosis::Unregistered => {
            // Normally for an instant while a supervisor starts; if it lasts, the registration was lost or
            // corrupted under a running engine, and `stop` ends that supervisor by signal.
            let who = engine::unregistered_supervisor(paths).map_or_else(
                || "the supervisor".to_owned(),
                |p| format!("supervisor pid {p}"),
            );
            Some(format!(
                "{who} holds the instance lock but {} is missing or unreadable (it is still starting, or its \
                 registration was lost: `breadboard engine stop` stops it)",
                paths.registration().display()
            ))
        }
        Diagnosis::Live(live) => live_detail(live),
    }
}

fn live_detail(live: &Live) -> Option<String> {
    let reg = &live.reg;
    let error = || {
        live.answer
            .error()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    match (&live.answer, &live.pending) {
        (Answer::Ready(_), _) => {
            (reg.restarts > 0).then(|| restarted_detail(reg, live.last_exit.as_ref()))
        }
        (Answer::Incompatible(_, problems), _) => Some(problems.join("; ")),
        (_, Some(Pending::Restart(p))) => {
            let wait = (p.at_unix - fsutil::unix_now()).max(0.0);
            Some(format!(
                "the engine crashed ({}); the supervisor restarts it in {wait:.1}s (restart = \"on-failure\", {} restart{} so far; {})",
                p.after,
                reg.restarts,
                if reg.restarts == 1 { "" } else { "s" },
                error()
            ))
        }
        (_, Some(Pending::Handshake)) => Some(format!("waiting for the handshake ({})", error())),
        (Answer::Stranger(h), None) => Some(format!(
            "{} answers as pid {} instance {}, not the registered engine",
            reg.url, h.pid, h.instance_id
        )),
        // Our token is what it refuses: say which file, since that is what changed.
        (Answer::TokenRefused(_), None) => Some(match crate::engine::registration::token(reg) {
            None => format!(
                "it refuses requests without its token, and {} is missing or empty; \
                 `breadboard engine restart` issues a new one",
                reg.token_file.display()
            ),
            Some(_) => format!(
                "it refuses the token in {} (was the file replaced?); \
                 `breadboard engine restart` issues a new one",
                reg.token_file.display()
            ),
        }),
        (Answer::Busy(e), None) => Some(format!("alive but busy: {e}")),
        (Answer::NotAnswering(e), None) => Some(format!("alive but not answering: {e}")),
        (Answer::NoAddress, None) => None,
    }
}

/// `engine start` where and how the engine that crashed served.
fn restart_as_before(ctx: &Ctx, stale: &Registration) -> anyhow::Result<u8> {
    let tls = stale.tls.as_ref();
    let start = super::engine_start::StartArgs {
        port: Some(engine::PortSpec::Fixed(stale.port)),
        host: stale.host.clone(),
        ray_address: stale.ray_address.clone(),
        foreground: false,
        timeout: 60.0,
        protocol: None,
        allow_remote: !engine::is_loopback(&stale.host),
        ssl_certfile: tls.map(|t| t.certfile.clone()),
        ssl_keyfile: tls.map(|t| t.keyfile.clone()),
        json: false,
    };
    super::engine_start::run(ctx, &start)
}

fn fill(out: &mut StatusJson, r: &Registration) {
    out.url = Some(r.url.clone());
    out.pid = Some(r.pid);
    out.supervisor_pid = Some(r.supervisor_pid);
    out.instance_id = Some(r.instance_id.clone());
    out.engine_version = r.engine_version.clone();
    out.protocol_version = Some(r.protocol_version.clone());
    out.uptime_s = Some((fsutil::unix_now() - r.started_at_unix).max(0.0));
    out.restart_policy = r.restart_policy.clone();
    out.restarts = r.restart_policy.as_ref().map(|_| r.restarts);
    out.started_at = Some(r.started_at.clone());
    out.log_path = r.log_path.display().to_string();
    let (mode, start) = match (&r.ray_address, r.ray_start.as_deref()) {
        (Some(_), _) => ("cluster", None),
        (None, Some("off")) => ("off", None),
        (None, start) => ("local", start.map(str::to_owned)),
    };
    out.ray = Some(RayJson {
        mode: mode.into(),
        start,
        address: r.ray_address.clone(),
        state: None,
        nodes: None,
        error: None,
    });
}

/// Ray as the engine reports it (`GET /ready`: mode, address, state, nodes). One more loopback request, made only
/// when the engine answered `/health`; an engine without `/ready` (a command override) keeps the registration's view.
fn fill_ray_state(out: &mut StatusJson, reg: &Registration) {
    let Some(client) = engine::client_for(reg, std::time::Duration::from_millis(300)) else {
        return;
    };
    let Ok(doc) = client.get_json::<serde_json::Value>("/ready") else {
        return;
    };
    let Some(ray) = doc.get("ray").filter(|r| r.is_object()) else {
        return;
    };
    let Some(r) = out.ray.as_mut() else {
        return;
    };
    let text = |k: &str| ray.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(mode) = text("mode") {
        r.start = text("start").filter(|_| mode == "local");
        r.mode = mode;
    }
    if let Some(addr) = text("address") {
        r.address = Some(addr);
    }
    r.state = text("state");
    r.nodes = ray.get("nodes").and_then(serde_json::Value::as_u64);
    r.error = text("error");
}

fn restarted_detail(reg: &Registration, last: Option<&LastExit>) -> String {
    let n = reg.restarts;
    let mut d = format!(
        "restarted {n} time{} after crashes (restart = \"on-failure\")",
        if n == 1 { "" } else { "s" }
    );
    if let Some(e) = last {
        d.push_str(&format!(
            "; the last crash: {} at {} (breadboard engine logs -n 200)",
            e.how(),
            e.ended_at
        ));
    }
    d
}

/// `report_follows`: the crash report is printed right after, with the log and the next steps.
fn print_human(ctx: &Ctx, s: &StatusJson, state: State, report_follows: bool) {
    let nothing_installed =
        state == State::Stopped && s.pinned_version.is_none() && !engine::has_command_override(ctx);
    let dead = matches!(state, State::Crashed | State::Errored);
    let mut line = format!("engine: {}", state.name());
    if nothing_installed {
        line.push_str(" (no engine is installed)");
    }
    if let (Some(url), Some(pid), false) = (&s.url, s.pid, dead) {
        line.push_str(&format!(
            " at {url} (pid {pid}, supervisor {})",
            s.supervisor_pid.unwrap_or(0)
        ));
    }
    ctx.printer.result(&line);
    let mut details = Vec::new();
    if let Some(v) = &s.engine_version {
        details.push(format!(
            "  engine {v} · protocol {}",
            s.protocol_version.as_deref().unwrap_or("?")
        ));
    }
    if let (Some(u), false) = (s.uptime_s, dead) {
        details.push(format!("  uptime {}", crash::human_duration(u)));
    }
    details.extend(s.ray.as_ref().map(ray_line));
    if let Some(d) = &s.detail {
        details.push(format!("  {d}"));
    }
    if report_follows {
        ctx.printer.info(&details.join("\n"));
        return;
    }
    // A log that does not exist (nothing ever started here) is not worth a line.
    if std::path::Path::new(&s.log_path).exists() {
        details.push(format!("  log: {}", s.log_path));
    }
    details.extend(next_step(state, nothing_installed).map(|n| format!("  next: {n}")));
    if !details.is_empty() {
        ctx.printer.info(&details.join("\n"));
    }
}

/// Ray's mode, how it starts, its cluster, and what the engine says of it.
fn ray_line(r: &RayJson) -> String {
    let mut live = Vec::new();
    // `/ready`'s state, unless it only repeats the mode ("off").
    if let Some(st) = r.state.as_ref().filter(|st| **st != r.mode) {
        live.push(st.clone());
    }
    if let Some(n) = r.nodes.filter(|_| r.state.as_deref() == Some("connected")) {
        live.push(format!("{n} node{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(e) = &r.error {
        live.push(e.clone());
    }
    format!(
        "  ray: {}{}{}{}",
        r.mode,
        r.start
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        r.address
            .as_ref()
            .map(|a| format!(" {a}"))
            .unwrap_or_default(),
        if live.is_empty() {
            String::new()
        } else {
            format!(" ({})", live.join(", "))
        }
    )
}

fn next_step(state: State, nothing_installed: bool) -> Option<&'static str> {
    match state {
        State::Errored => {
            Some("breadboard engine logs -n 200, then breadboard engine start (starts afresh)")
        }
        State::Crashed => {
            Some("breadboard engine start (breadboard engine logs -n 200 shows why it ended)")
        }
        State::Stopped if nothing_installed => Some("breadboard engine install"),
        State::Stopped => Some("breadboard engine start"),
        _ => None,
    }
}
