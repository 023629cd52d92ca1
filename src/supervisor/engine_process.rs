//! One engine process under the supervisor: spawned with its output piped into the log, waited for (reaping the
//! orphans that re-parent to us, forwarding stop signals, noticing readiness after an automatic restart), and
//! everything it left ended afterwards.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{write_registration, ReadyHook, Sink, SPEC_ENV};
use crate::engine::registration::Registration;
use crate::fsutil;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;

pub(super) fn spawn_engine(
    command: &[String],
    _listen_fd: Option<i32>,
    mark: &str,
    sink: &Sink,
) -> std::io::Result<(sys::Pid, Option<std::thread::JoinHandle<()>>)> {
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_remove(SPEC_ENV)
        .env(crate::env_vars::BREADBOARD_ENGINE_MARK, mark)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    sys::pre_exec_engine(&mut cmd, sys::getpid());
    let child = cmd.spawn()?;
    drop(cmd); // closes our copy of the pipe's write end
    let pid = child.id() as sys::Pid;
    // The Child handle is dropped without waiting: the loop reaps with waitpid(-1), which also reaps orphans.
    drop(child);
    let sink = sink.clone();
    let copier = std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.write(&buf[..n]),
            }
        }
    });
    Ok((pid, Some(copier)))
}

/// Waits for the engine to exit, reaping every other child (orphans re-parented to us) on the way. Forwards a stop
/// signal to the engine's process group (a second one escalates to SIGKILL). After an automatic restart nobody else
/// waits for the handshake, so the supervisor records `ready_at` itself once `/health` answers with our identity.
pub(super) fn wait_engine(
    paths: &Paths,
    reg: &mut Registration,
    sink: &Sink,
    ready_hook: &mut Option<ReadyHook>,
) -> (sys::WaitStatus, bool) {
    let mut stop_requested = false;
    let mut signals = 0;
    let mut ready_done = ready_hook.is_none();
    let mut self_ready_done = reg.restarts == 0 || ready_hook.is_some();
    let mut next_health = Instant::now();
    loop {
        if let Some(sig) = sys::take_signal() {
            stop_requested = true;
            signals += 1;
            let fwd = if signals > 1 {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            sink.line(&format!(
                "received {}: stopping the engine ({})",
                sys::signal_name(sig),
                sys::signal_name(fwd)
            ));
            let _ = sys::killpg(reg.pgid, fwd);
        }
        while let Some(ws) = sys::reap_any() {
            if ws.pid == reg.pid {
                return (ws, stop_requested);
            }
        }
        if !ready_done {
            if let Some(hook) = ready_hook.as_mut() {
                let ok = hook(reg);
                if ok {
                    ready_done = true;
                }
            }
        }
        if !self_ready_done && Instant::now() >= next_health {
            next_health = Instant::now() + Duration::from_millis(100);
            let answered = crate::engine::client_for(reg, Duration::from_millis(300))
                .and_then(|c| c.health().ok())
                .is_some_and(|h| crate::engine::identity_ok(&h, reg));
            if answered {
                self_ready_done = true;
                reg.ready_at = Some(fsutil::now_rfc3339());
                write_registration(paths, reg, sink);
                sink.line(&format!(
                    "engine pid {} is ready again (automatic restart {})",
                    reg.pid, reg.restarts
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends every process left over from the engine: our descendants (including re-parented orphans) and, when we lead
/// a session, every member of it. SIGTERM, up to 3 s, then SIGKILL; reaps as it goes.
///
/// Without a child subreaper (macOS, the portable build) an orphan that left our session re-parents to init, out
/// of reach of both; it still carries this instance's mark, so the marked processes of this instance are ended too.
pub(crate) fn end_everything(paths: &Paths, reg: &Registration, sink: &Sink) {
    let me = sys::getpid();
    let leftovers = || {
        let mut v = procfs::descendants(me);
        if let Some(sid) = reg.sid {
            for p in procfs::session_members(sid, &[me]) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        #[cfg(not(linux_extras))]
        for m in crate::engine::marked_leftovers(paths, None) {
            if m.instance == reg.instance_id && m.pid != me && !v.contains(&m.pid) {
                v.push(m.pid);
            }
        }
        #[cfg(linux_extras)]
        let _ = paths;
        v
    };
    let first = leftovers();
    if first.is_empty() {
        while sys::reap_any().is_some() {}
        return;
    }
    sink.line(&format!(
        "ending {} leftover process(es): {first:?}",
        first.len()
    ));
    for &p in &first {
        let _ = sys::kill(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        while sys::reap_any().is_some() {}
        let left = leftovers();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            sink.line(&format!("SIGKILL to {left:?}"));
            for &p in &left {
                let _ = sys::kill(p, libc::SIGKILL);
            }
            let kill_deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < kill_deadline && !leftovers().is_empty() {
                while sys::reap_any().is_some() {}
                std::thread::sleep(Duration::from_millis(10));
            }
            while sys::reap_any().is_some() {}
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most a second) for the thread copying the engine's output: its pipe reaches EOF once every holder of
/// the write end is gone, which they all are once [`end_everything`] returned.
pub(super) fn drain_output(copier: Option<std::thread::JoinHandle<()>>) {
    if let Some(c) = copier {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !c.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
