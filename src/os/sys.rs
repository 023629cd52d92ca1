//! The few raw Unix calls the supervisor needs (signals, sessions, waitpid, fd flags, and on Linux prctl). The only
//! module allowed `unsafe`: every call is a plain libc syscall wrapper with no pointers kept past the call.
//! `prctl` (child subreaper, parent-death signal) exists only with `cfg(linux_extras)` (Linux without the
//! `portable-fallbacks` feature); elsewhere the supervisor finds what an engine left through its session instead.
#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

pub type Pid = i32;

/// `kill(pid, sig)`; `Ok(false)` when the process does not exist.
pub fn kill(pid: Pid, sig: i32) -> io::Result<bool> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid <= 0",
        ));
    }
    // SAFETY: kill(2) takes plain integers.
    signal_result(unsafe { libc::kill(pid, sig) })
}

/// `killpg(pgid, sig)`; `Ok(false)` when the group is empty.
pub fn killpg(pgid: Pid, sig: i32) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    }
    // SAFETY: killpg(3) takes plain integers.
    signal_result(unsafe { libc::killpg(pgid, sig) })
}

/// ESRCH (no such process or group) is an answer, not an error: the target is already gone.
fn signal_result(rc: i32) -> io::Result<bool> {
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Makes this process a child subreaper: orphaned descendants (double-forked Ray daemons) re-parent to it.
#[cfg(linux_extras)]
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No subreaper here (macOS has none): orphans re-parent to launchd/init, and the supervisor still finds them as
/// members of the session it leads (`procfs::session_members`). The error says so, once, in the supervisor log.
#[cfg(not(linux_extras))]
pub fn set_child_subreaper() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "not available on this platform; leftovers are found through the supervisor's session instead",
    ))
}

pub fn getpid() -> Pid {
    std::process::id() as Pid
}

pub fn getsid() -> Pid {
    // SAFETY: getsid(0) has no arguments to get wrong.
    unsafe { libc::getsid(0) }
}

/// The session of any process (POSIX: Linux and macOS alike); `None` when it is gone (or, on macOS, not ours).
pub fn sid_of(pid: Pid) -> Option<Pid> {
    // SAFETY: getsid takes an integer.
    let sid = unsafe { libc::getsid(pid) };
    (pid > 0 && sid > 0).then_some(sid)
}

/// The process group of any process; `None` when it is gone.
pub fn pgid_of(pid: Pid) -> Option<Pid> {
    // SAFETY: getpgid takes an integer.
    let pgid = unsafe { libc::getpgid(pid) };
    (pid > 0 && pgid > 0).then_some(pgid)
}

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct WaitStatus {
    pub pid: Pid,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

/// `waitpid(-1, WNOHANG)`: one reaped child, or `None` when no child has changed state (or there are no children).
pub fn reap_any() -> Option<WaitStatus> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int into `status`, which lives on this stack frame.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let (code, signal, core) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None, false)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)), libc::WCOREDUMP(status))
    } else {
        (None, None, false)
    };
    Some(WaitStatus {
        pid,
        code,
        signal,
        core_dumped: core,
    })
}

/// Clears `FD_CLOEXEC` so the descriptor survives `exec` into a child.
pub fn clear_cloexec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `setsid()` in the child between fork and exec: a new session, so a terminal hangup never reaches it.
pub fn pre_exec_setsid(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Between fork and exec: own process group (so the whole engine group can be signalled) and, with
/// `cfg(linux_extras)`, SIGKILL when the parent (the supervisor's spawning thread, which is its main thread) dies.
/// Without it (macOS) an engine outlives a killed supervisor until the next `engine start`/`stop` ends the dead
/// supervisor's session. The umask is the user's: the engine's `serve`
/// sets its own private one, and an `engine.command` override (another engine, an agent writing into the user's
/// project) must create files as the user's shell would.
pub fn pre_exec_engine(cmd: &mut std::process::Command, parent: Pid) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setpgid, prctl, getppid and _exit are async-signal-safe and take integers only.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            #[cfg(linux_extras)]
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would ever deliver the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_signal(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs a handler that only records SIGTERM, SIGINT and SIGHUP (read with [`take_signal`]).
pub fn catch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, record_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The last stop signal received since the previous call, if any.
pub fn take_signal() -> Option<i32> {
    match LAST_SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

pub fn getuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::getuid() }
}

/// The type of the filesystem holding `path`, from `statfs(2)`: its name on macOS (`apfs`, `nfs`, `smbfs`, ...);
/// elsewhere the name of a known network filesystem's magic number (`nfs`, `cifs`, `smb3`, `smbfs`, `9p`, `fuse`),
/// else the number in hex. `None` when `statfs` fails.
pub fn filesystem_type(path: &std::path::Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated and outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    Some(statfs_type_name(&st))
}

#[cfg(target_os = "macos")]
fn statfs_type_name(st: &libc::statfs) -> String {
    let name: Vec<u8> = st
        .f_fstypename
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&name).into_owned()
}

#[cfg(not(target_os = "macos"))]
fn statfs_type_name(st: &libc::statfs) -> String {
    // The magic numbers of statfs(2)'s f_type; only the network filesystems matter to the callers.
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 Linux, i32 or u32 elsewhere
    let magic = (st.f_type as i64) & 0xFFFF_FFFF;
    match magic {
        0x6969 => "nfs".to_owned(),
        0xFF53_4D42 => "cifs".to_owned(),
        0xFE53_4D42 => "smb3".to_owned(),
        0x517B => "smbfs".to_owned(),
        0x0102_1997 => "9p".to_owned(),
        0x6573_5546 => "fuse".to_owned(),
        other => format!("0x{other:x}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statfs_names_the_filesystem_of_a_path_and_fails_on_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = super::filesystem_type(dir.path()).expect("statfs of a temp dir");
        assert!(!t.is_empty());
        assert!(super::filesystem_type(&dir.path().join("missing")).is_none());
    }
}
