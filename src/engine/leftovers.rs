//! What outlives a dead instance: its session, its process group and the processes carrying its mark; and the
//! crash report, shown once.

use std::time::Duration;

use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{self, Registration};
use crate::env_vars;
use crate::fsutil;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;

use super::*;

/// Kills what is left of a dead instance (its supervisor is gone: lock free): its session and its engine's process
/// group, then the processes carrying this home's mark; records how it ended if nothing did, and removes its token
/// and registration.
pub(crate) fn clean_stale(paths: &Paths, stale: Option<&Registration>, printer: &Printer) {
    if let Some(r) = stale {
        let mut members = session_leftovers(r);
        for p in group_leftovers(r) {
            if !members.contains(&p) {
                members.push(p);
            }
        }
        end_leftovers(printer, &members);
        if !registration::stop_requested(paths, &r.instance_id)
            && crash::read(paths).is_none_or(|e| e.instance_id != r.instance_id)
        {
            // Keep a record of how it ended, so the crash is not shown again.
            let _ = crash::write(
                paths,
                &LastExit {
                    instance_id: r.instance_id.clone(),
                    pid: r.pid,
                    supervisor_lost: true,
                    ended_at: fsutil::now_rfc3339(),
                    ended_at_unix: fsutil::unix_now(),
                    ..Default::default()
                },
            );
        }
        registration::clear_stop_request(paths, &r.instance_id);
    }
    end_marked_leftovers(paths, printer, None);
    // The dead instance's token opens nothing any more; with the lock free no engine can be using ours, even one
    // whose registration was lost (only ever our own file, whatever a record says).
    let _ = fsutil::remove_file_if_exists(&paths.token_file());
    let _ = registration::remove(paths);
}

/// What is left of a dead instance's session: only processes of our uid, in the recorded session, started after the
/// supervisor, on this boot — and only if the session leader itself is gone (a live process with that pid is someone
/// else, so that session is not ours).
pub(crate) fn session_leftovers(r: &Registration) -> Vec<sys::Pid> {
    let Some(sid) = r.sid else {
        return Vec::new();
    };
    if r.boot_id != procfs::boot_id() || procfs::alive(sid) || sid != r.supervisor_pid {
        return Vec::new();
    }
    procfs::session_members(sid, &[])
        .into_iter()
        .filter(|p| procfs::start_ticks(*p).is_some_and(|t| t >= r.supervisor_start_ticks))
        .collect()
}

/// The engine's own process group, led by the engine: what a foreground engine (whose session is the terminal's)
/// left, or what escaped the session without a child subreaper to catch it (macOS). Its leader is the registered
/// engine itself (outliving its supervisor where there is no parent-death signal) or gone: a group id is not reused
/// while the group has members. Only processes started after the engine count.
fn group_leftovers(r: &Registration) -> Vec<sys::Pid> {
    let leader_ours = !procfs::alive(r.pgid) || procfs::same_process(r.pid, r.pid_start_ticks);
    if r.boot_id != procfs::boot_id() || r.pgid <= 1 || r.pgid != r.pid || !leader_ours {
        return Vec::new();
    }
    procfs::group_members(r.pgid)
        .into_iter()
        .filter(|p| procfs::start_ticks(*p).is_some_and(|t| t >= r.pid_start_ticks))
        .collect()
}

/// SIGKILL to `members`, saying so, and a short wait for them to go.
fn end_leftovers(printer: &Printer, members: &[sys::Pid]) {
    if members.is_empty() {
        return;
    }
    printer.info(&format!(
        "ending {} leftover process(es) of the dead engine: {members:?}",
        members.len()
    ));
    for p in members {
        let _ = sys::kill(*p, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(3), || {
        members.iter().all(|p| !procfs::alive(*p))
    });
}

/// Processes an engine of this home started that outlived it, found by the mark the supervisor gives every engine
/// (inherited by Ray's daemons and workers, whoever re-parented them): any instance's but `live`'s.
pub(crate) fn marked_leftovers(paths: &Paths, live: Option<&str>) -> Vec<procfs::Marked> {
    procfs::marked_processes(env_vars::BREADBOARD_ENGINE_MARK, &paths.home)
        .into_iter()
        .filter(|m| Some(m.instance.as_str()) != live)
        .collect()
}

/// Ends [`marked_leftovers`] (SIGKILL: their engine is gone, nothing of theirs needs a graceful end), saying so.
pub(crate) fn end_marked_leftovers(paths: &Paths, printer: &Printer, live: Option<&str>) {
    let left = marked_leftovers(paths, live);
    if left.is_empty() {
        return;
    }
    let pids: Vec<sys::Pid> = left.iter().map(|m| m.pid).collect();
    printer.info(&format!(
        "ending {} leftover process(es) of an earlier engine of this home: {pids:?}",
        left.len()
    ));
    for m in &left {
        // Checked again right before the kill: the pid may have been reused since the scan.
        if procfs::same_process(m.pid, m.start_ticks) {
            let _ = sys::kill(m.pid, libc::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(3), || {
        left.iter()
            .all(|m| !procfs::same_process(m.pid, m.start_ticks))
    });
}

/// Shows a crash report once per crash.
pub(crate) fn report_crash_once(
    paths: &Paths,
    printer: &Printer,
    reg: Option<&Registration>,
    exit: &LastExit,
) -> bool {
    if crash::acknowledged(paths, &exit.instance_id) {
        return false;
    }
    crash::report(printer, paths, reg, exit);
    crash::acknowledge(paths, &exit.instance_id);
    true
}
