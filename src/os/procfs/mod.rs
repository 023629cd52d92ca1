//! Process inspection: start times (for identity checks that survive pid reuse), command lines and environments,
//! session and process tree enumeration (to end everything an engine spawned), and the owner of a listening port.
//!
//! Two backends behind one API. With `cfg(linux_extras)` (Linux, unless built with `portable-fallbacks`),
//! [`linux`] reads `/proc` for what needs it; otherwise [`portable`] answers from sysinfo, POSIX calls and a TCP
//! probe (what macOS runs, and what the `portable-fallbacks` build tests here). Command lines and environments come
//! from sysinfo on both, refreshed for the one process asked about, never the whole table.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

use crate::os::sys::Pid;

#[cfg(linux_extras)]
mod linux;
#[cfg(linux_extras)]
use linux as backend;
#[cfg(not(linux_extras))]
mod portable;
#[cfg(not(linux_extras))]
use portable as backend;

pub use backend::{all, boot_id, flock_holder, port_listening, port_owner, stat, UNNAMED_HOLDER};

/// What we know of a process.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub pid: Pid,
    /// `/proc`'s state letter ('R', 'S', 'T' stopped, 'Z' zombie, ...), mapped from sysinfo's status elsewhere.
    pub state: char,
    pub ppid: Pid,
    pub pgid: Pid,
    pub sid: Pid,
    /// An opaque start stamp: with the pid, it identifies a process per boot. Clock ticks since boot with the Linux
    /// extras, seconds since the epoch elsewhere; registrations compare it only with the same build's stamps.
    pub start_ticks: u64,
}

/// Alive and not a zombie.
pub fn alive(pid: Pid) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// The process `pid` exists, is not a zombie, and started at `ticks` (so it is the same process, not a reused pid).
pub fn same_process(pid: Pid, ticks: u64) -> bool {
    pid > 0 && stat(pid).is_some_and(|s| s.start_ticks == ticks && s.state != 'Z' && s.state != 'X')
}

pub fn start_ticks(pid: Pid) -> Option<u64> {
    stat(pid).map(|s| s.start_ticks)
}

/// Refreshes only `pid`, with only what `kind` asks for, and hands the process to `f`.
fn with_process<T>(
    pid: Pid,
    kind: ProcessRefreshKind,
    f: impl FnOnce(&sysinfo::Process) -> T,
) -> Option<T> {
    let pid = sysinfo::Pid::from_u32(u32::try_from(pid).ok().filter(|p| *p > 0)?);
    let mut system = System::new();
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind.without_tasks());
    system.process(pid).map(f)
}

/// The command line, arguments joined by spaces.
pub fn cmdline(pid: Pid) -> Option<String> {
    let kind = ProcessRefreshKind::nothing().with_cmd(UpdateKind::Always);
    let parts = with_process(pid, kind, |p| {
        p.cmd()
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    })?;
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The value of `name` in the environment `pid` was started with.
pub fn environ_var(pid: Pid, name: &str) -> Option<String> {
    let kind = ProcessRefreshKind::nothing().with_environ(UpdateKind::Always);
    with_process(pid, kind, |p| env_value(p.environ(), name)).flatten()
}

fn env_value(environ: &[OsString], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    environ
        .iter()
        .find_map(|entry| entry.to_str()?.strip_prefix(&prefix).map(str::to_owned))
}

/// A process carrying the engine mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pid: Pid,
    /// Read before its environment, so [`same_process`] with it later proves the pid still names the process
    /// whose mark was read.
    pub start_ticks: u64,
    pub instance: String,
}

/// Live processes of our uid whose environment holds `name=<something> <home>` (the engine mark), with the something
/// (the instance id).
pub fn marked_processes(name: &str, home: &Path) -> Vec<Marked> {
    let uid = crate::os::sys::getuid();
    let me = crate::os::sys::getpid();
    let home = home.to_string_lossy();
    all()
        .into_iter()
        .filter(|s| s.pid != me && backend::uid_of(s.pid) == Some(uid))
        .filter_map(|s| {
            let value = environ_var(s.pid, name)?;
            let (instance, of) = value.split_once(' ')?;
            // The stat read by all() came first; a pid reused since then has another start stamp.
            (of == home && same_process(s.pid, s.start_ticks)).then(|| Marked {
                pid: s.pid,
                start_ticks: s.start_ticks,
                instance: instance.to_owned(),
            })
        })
        .collect()
}

/// Every live process of our uid.
pub fn own_processes() -> Vec<Pid> {
    let uid = crate::os::sys::getuid();
    all()
        .into_iter()
        .filter(|s| backend::uid_of(s.pid) == Some(uid))
        .map(|s| s.pid)
        .collect()
}

/// Processes of process group `pgid` owned by our uid.
pub fn group_members(pgid: Pid) -> Vec<Pid> {
    if pgid <= 1 {
        return Vec::new();
    }
    let uid = crate::os::sys::getuid();
    all()
        .into_iter()
        .filter(|s| s.pgid == pgid && backend::uid_of(s.pid) == Some(uid))
        .map(|s| s.pid)
        .collect()
}

/// Processes of session `sid` owned by our uid, except `exclude`.
pub fn session_members(sid: Pid, exclude: &[Pid]) -> Vec<Pid> {
    if sid <= 1 {
        return Vec::new();
    }
    let uid = crate::os::sys::getuid();
    all()
        .into_iter()
        .filter(|s| {
            s.sid == sid && !exclude.contains(&s.pid) && backend::uid_of(s.pid) == Some(uid)
        })
        .map(|s| s.pid)
        .collect()
}

/// All descendants of `root` (children, grandchildren, ...), from the ppid tree.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let procs = all();
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for s in &procs {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                if k != root && !out.contains(&k) {
                    out.push(k);
                    stack.push(k);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_with_its_identity() {
        let me = crate::os::sys::getpid();
        let ticks = start_ticks(me).unwrap();
        assert!(same_process(me, ticks));
        assert!(!same_process(me, ticks + 1));
        let s = stat(me).unwrap();
        assert_eq!(s.sid, crate::os::sys::getsid());
        assert_eq!(Some(s.pgid), crate::os::sys::pgid_of(me));
        assert_eq!(s.ppid, std::os::unix::process::parent_id() as Pid);
        assert!(cmdline(me).is_some());
    }

    #[test]
    fn children_command_line_and_environment_are_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("BREADBOARD_PROCFS_TEST", "marked here")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        // Polled: right after fork the child still runs our image until its exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cmdline(pid).as_deref() != Some("sleep 30") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let seen = (
            descendants(crate::os::sys::getpid()).contains(&pid),
            cmdline(pid),
            environ_var(pid, "BREADBOARD_PROCFS_TEST"),
            alive(pid),
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            seen,
            (
                true,
                Some("sleep 30".to_owned()),
                Some("marked here".to_owned()),
                true
            )
        );
        assert!(!alive(pid));
        assert_eq!(cmdline(-1), None);
    }
}
