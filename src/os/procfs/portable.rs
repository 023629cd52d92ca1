//! The portable backend (macOS, and Linux built with `portable-fallbacks`): sysinfo for the process table, status
//! and start time, POSIX `getpgid`/`getsid` for groups and sessions, a TCP connect for "is the port taken". What
//! has no portable source is reported as unknown, and callers say so instead of guessing.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

use super::Stat;
use crate::os::sys::Pid;

fn state_letter(status: ProcessStatus) -> char {
    match status {
        ProcessStatus::Run => 'R',
        ProcessStatus::Sleep | ProcessStatus::Idle => 'S',
        ProcessStatus::UninterruptibleDiskSleep => 'D',
        ProcessStatus::Stop => 'T',
        ProcessStatus::Tracing => 't',
        ProcessStatus::Zombie => 'Z',
        ProcessStatus::Dead => 'X',
        _ => '?',
    }
}

fn to_stat(pid: Pid, p: &sysinfo::Process) -> Stat {
    Stat {
        pid,
        state: state_letter(p.status()),
        ppid: p.parent().map_or(0, |pp| pp.as_u32() as Pid),
        pgid: crate::os::sys::pgid_of(pid).unwrap_or(0),
        sid: crate::os::sys::sid_of(pid).unwrap_or(0),
        // Whole seconds: a pid reused within the second it was freed would pass for the old process. Accepted
        // here: pids cycle slowly on macOS, and the Linux extras keep clock ticks.
        start_ticks: p.start_time(),
    }
}

pub fn stat(pid: Pid) -> Option<Stat> {
    super::with_process(pid, ProcessRefreshKind::nothing(), |p| to_stat(pid, p))
}

pub(super) fn uid_of(pid: Pid) -> Option<u32> {
    let kind = ProcessRefreshKind::nothing().with_user(UpdateKind::Always);
    super::with_process(pid, kind, |p| p.user_id().map(|u| **u)).flatten()
}

/// Every live process (zombies excluded).
pub fn all() -> Vec<Stat> {
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().without_tasks(),
    );
    system
        .processes()
        .iter()
        .filter_map(|(pid, p)| {
            let pid = Pid::try_from(pid.as_u32()).ok()?;
            let s = to_stat(pid, p);
            (s.state != 'Z' && s.state != 'X').then_some(s)
        })
        .collect()
}

/// No portable way to name a `flock` holder: unknown. Callers then describe the holder generically.
pub fn flock_holder(_path: &Path) -> Option<Pid> {
    None
}

/// The boot time (seconds since the epoch, from sysinfo: `kern.boottime` on macOS): start stamps are only
/// comparable within one boot, and a boot time names one.
pub fn boot_id() -> String {
    format!("boot-{}", System::boot_time())
}

/// Why [`port_owner`] named nobody.
pub const UNNAMED_HOLDER: &str = "this platform does not say which process it is";

/// Which process listens has no portable source without root: unknown.
pub fn port_owner(_port: u16) -> Option<(Pid, String)> {
    None
}

/// Whether something accepts TCP connections on `port` on the loopback (v4 or v6): what the engine binds. A listener
/// on another address only is not seen.
pub fn port_listening(port: u16) -> bool {
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
    .iter()
    .any(|addr| {
        // A connect to a free port in the ephemeral range can pick that same port as its source and connect to
        // itself (TCP simultaneous open): that is nobody listening.
        TcpStream::connect_timeout(addr, Duration::from_millis(200))
            .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_seen_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_listening(port));
        drop(listener);
        // Many tries: each may self-connect (see port_listening), which must not count.
        assert!((0..200).all(|_| !port_listening(port)));
    }

    #[test]
    fn boot_id_is_stable_and_not_empty() {
        assert_eq!(boot_id(), boot_id());
        assert_ne!(boot_id(), "boot-0");
    }
}
