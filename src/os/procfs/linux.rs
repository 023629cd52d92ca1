//! The Linux extras (`cfg(linux_extras)`): `/proc` readers for what sysinfo cannot give. Start times stay in clock
//! ticks from `/proc/<pid>/stat` (sysinfo rounds them to whole seconds, and a pid reused within the same second would
//! then pass an identity check), and so does the process table they are compared with; the holder of a `flock`
//! (`/proc/locks`), the boot id, and the owner of a listening port (`/proc/net/tcp*`) have no portable source at all.

use std::path::Path;

use super::Stat;
use crate::os::sys::Pid;

pub fn stat(pid: Pid) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: Pid, text: &str) -> Option<Stat> {
    // comm (field 2) may contain spaces and parens: everything after the last ')' is space-separated.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = field 3 (state), so field N is f[N - 3].
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// The process holding a `flock` on `path`: candidates from `/proc/locks` by inode number (waiters, shown as `->`,
/// skipped), kept only if the process has `path` itself open (same device and inode through `/proc/<pid>/fd`), since
/// another file system can reuse the inode number and `/proc/locks`' device field does not match `stat` on every file
/// system.
pub fn flock_holder(path: &Path) -> Option<Pid> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    flock_candidates(&locks, meta.ino())
        .into_iter()
        .find(|pid| has_open(*pid, meta.dev(), meta.ino()))
}

fn flock_candidates(locks: &str, ino: u64) -> Vec<Pid> {
    locks
        .lines()
        .filter_map(|line| {
            // "1: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF"
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let file_ino: u64 = f.get(5)?.rsplit(':').next()?.parse().ok()?;
            (file_ino == ino).then(|| f.get(4)?.parse().ok()).flatten()
        })
        .collect()
}

fn has_open(pid: Pid, dev: u64, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

pub(super) fn uid_of(pid: Pid) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// Every live process (zombies excluded).
pub fn all() -> Vec<Stat> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in rd.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<Pid>() else {
            continue;
        };
        if let Some(s) = stat(pid) {
            if s.state != 'Z' && s.state != 'X' {
                out.push(s);
            }
        }
    }
    out
}

/// This boot's id: start ticks are only comparable within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Who listens on TCP `port` (any address): `(pid, command line)` when `/proc` tells (our own processes, or all
/// of them as root).
/// Why [`port_owner`] named nobody: the socket is not ours to see (another user's process).
pub const UNNAMED_HOLDER: &str = "its pid is not visible to this user";

pub fn port_owner(port: u16) -> Option<(Pid, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // 0A = LISTEN
            }
            let Some(p) = f[1].rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let rd = std::fs::read_dir("/proc").ok()?;
    for entry in rd.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<Pid>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    return Some((pid, super::cmdline(pid).unwrap_or_else(|| "?".to_owned())));
                }
            }
        }
    }
    None
}

/// Whether anything listens on TCP `port`.
pub fn port_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 3
                    && f[3] == "0A"
                    && f[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_holder_reads_proc_locks_and_skips_waiters() {
        let locks = "1: POSIX  ADVISORY  WRITE 11 00:2a:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 00:2a:1234 0 EOF\n";
        assert_eq!(flock_candidates(locks, 1234), [4242]);
        assert!(flock_candidates(locks, 77).is_empty());
        assert!(flock_candidates(locks, 9).is_empty());
    }

    #[test]
    fn flock_holder_is_the_process_that_has_the_file_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.lock");
        let file = std::fs::File::create(&path).unwrap();
        file.lock().unwrap();
        assert_eq!(flock_holder(&path), Some(crate::os::sys::getpid()));
        // A file nobody holds a lock on.
        let other = dir.path().join("other.lock");
        std::fs::File::create(&other).unwrap();
        assert_eq!(flock_holder(&other), None);
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let text = "123 (a (b) c) S 1 123 123 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(123, text).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgid, s.sid, s.start_ticks),
            ('S', 1, 123, 123, 987654)
        );
    }
}
