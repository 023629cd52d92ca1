//! The Home section's filesystem checks: the home is on a local filesystem (for its locks) with room to install.

use std::path::Path;
use std::process::Command;

use super::home::SECTION;
use super::{run_with_deadline, Finding, QUICK};

/// Network filesystems, by the names `/proc/mounts` and `statfs` give them.
const NETWORK_FILESYSTEMS: [&str; 8] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "9p",
    "webdav",
];

/// Locks need a local filesystem: flock over NFS or SMB is unreliable.
pub(super) fn local_check(path: &Path) -> Finding {
    let Some((fstype, point)) = filesystem_of(path) else {
        return Finding::ok(
            SECTION,
            "home.local_fs",
            "filesystem not identified",
            "neither the mount table nor statfs named it",
        );
    };
    let at = point
        .as_ref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    if NETWORK_FILESYSTEMS.contains(&fstype.as_str()) {
        return Finding::warn(
            SECTION,
            "home.local_fs",
            "BREADBOARD_HOME is on a network filesystem",
            format!(
                "{} is on {fstype}{at}; locks may not work there",
                path.display()
            ),
        )
        .fix("export BREADBOARD_HOME=/a/local/dir   # e.g. under /var/tmp or a local disk");
    }
    Finding::ok(
        SECTION,
        "home.local_fs",
        "on a local filesystem",
        match &point {
            Some(p) => format!("{fstype} at {p}"),
            None => fstype,
        },
    )
}

/// The filesystem type holding `path` and, from Linux's mount table, its mount point; elsewhere (macOS, the
/// portable build) `statfs` gives the type alone.
fn filesystem_of(path: &Path) -> Option<(String, Option<String>)> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    #[cfg(linux_extras)]
    {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mount = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
                Some((point.replace("\\040", " "), fstype.to_owned()))
            })
            .filter(|(point, _)| canonical.starts_with(point))
            .max_by_key(|(point, _)| point.len());
        if let Some((point, fstype)) = mount {
            return Some((fstype, Some(point)));
        }
    }
    crate::os::sys::filesystem_type(&canonical).map(|t| (t, None))
}

pub(super) fn disk_check(path: &Path) -> Finding {
    let Some(kib) = free_kib(path) else {
        return Finding::ok(
            SECTION,
            "home.disk",
            "free disk space unknown",
            "`df` gave no answer",
        );
    };
    let mib = kib / 1024;
    let detail = format!("{mib} MiB free on the filesystem of {}", path.display());
    // An engine venv with Ray is about 400 MB; an upgrade builds a second one beside the first.
    if mib < 200 {
        Finding::error(SECTION, "home.disk", "almost no free disk space", detail)
            .fix("free some space, then: breadboard engine doctor")
    } else if mib < 1024 {
        Finding::warn(
            SECTION,
            "home.disk",
            "low free disk space",
            format!("{detail}; an engine upgrade needs about 500 MiB"),
        )
        .fix("free some space before `breadboard engine upgrade`")
    } else {
        Finding::ok(SECTION, "home.disk", "enough free disk space", detail)
    }
}

/// The space available to us on `path`'s filesystem, as POSIX `df -P` reports it on every Unix.
fn free_kib(path: &Path) -> Option<u64> {
    let mut cmd = Command::new("df");
    cmd.args(["-Pk"]).arg(path);
    let out = run_with_deadline(cmd, QUICK).ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}
