//! File locks. [`FileLock`] is the one lock type: the control lock `run/control.lock` (every command that changes
//! engine state holds it, so two installs, or an install and a start, serialise instead of corrupting each other)
//! and the instance lock `run/engine.lock` (held by the supervisor for the engine's whole life) are both one.
//!
//! `flock(2)` through std `File::lock`/`try_lock` (stable since Rust 1.89, our minimum): the same call on Linux and
//! macOS that the fs4 crate makes, so no crate is added for it. The kernel releases it when the process dies, even on
//! `kill -9`, so there is no stale-lock cleanup. A lock file is never unlinked: unlinking a locked file lets a third
//! process lock a new inode while the second still waits on the old one. A sidecar `control.lock.holder` names the
//! control lock's holder so a waiter can say whom it waits for.
//!
//! The install lock (`selfupdate::install_lock::InstallLock`) is not a [`FileLock`]: it is install.sh's directory
//! lock, which a POSIX shell can take (macOS has no `flock(1)`), and both must agree on it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub pid: u32,
    pub command: String,
    pub since: String,
}

/// An exclusive `flock` on a file, held until dropped (or until the process ends).
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

/// Why [`FileLock::acquire_within`] gave up.
#[derive(Debug)]
pub(crate) enum LockFailure {
    /// Another process still held it at the deadline.
    Busy,
    /// The file could not be opened.
    Open(std::io::Error),
    /// The file could not be locked (not merely busy).
    Lock(std::io::Error),
}

impl FileLock {
    /// Opens (creating, 0600) `path` for locking. For writing: NFS emulates flock with fcntl locks, whose exclusive
    /// kind needs a writable fd.
    fn open(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
    }

    /// One non-blocking attempt: `Ok(None)` when another process holds it.
    #[cfg(test)]
    pub(crate) fn try_acquire(path: &Path) -> std::io::Result<Option<FileLock>> {
        Self::try_file(Self::open(path)?)
    }

    fn try_file(file: File) -> std::io::Result<Option<FileLock>> {
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Tries until `timeout` has passed, every `poll`; `on_wait` runs once, when the first try finds it held (to say
    /// whom we wait for). Polling: flock has no timed wait, and a blocking `lock()` could not time out.
    pub(crate) fn acquire_within(
        path: &Path,
        timeout: Duration,
        poll: Duration,
        mut on_wait: impl FnMut(),
    ) -> Result<FileLock, LockFailure> {
        let file = Self::open(path).map_err(LockFailure::Open)?;
        let deadline = Instant::now() + timeout;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(LockFailure::Lock(e)),
            }
            if !waited {
                on_wait();
                waited = true;
            }
            if Instant::now() >= deadline {
                return Err(LockFailure::Busy);
            }
            std::thread::sleep(poll);
        }
    }

    /// The locked file, for a caller that hands the descriptor on (the supervisor inherits the instance lock).
    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

/// Whether another process holds the lock on `path`, without waiting and without creating it. Opened read-only where
/// the home is not writable: flock itself needs no write access, and a read-only home must still see its running
/// engine.
pub(crate) fn is_held(path: &Path) -> bool {
    let file = match OpenOptions::new().write(true).open(path) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            ) =>
        {
            OpenOptions::new().read(true).open(path)
        }
        other => other,
    };
    // Not there, or not openable: nobody can hold it. Acquired here: released at once when it drops.
    file.is_ok_and(|f| matches!(FileLock::try_file(f), Ok(None)))
}

/// The control lock, held until dropped.
#[derive(Debug)]
pub(crate) struct ControlLock {
    _lock: FileLock,
    holder_path: PathBuf,
}

impl ControlLock {
    /// Acquires the lock for `command` (e.g. `breadboard engine install`), waiting up to `BREADBOARD_LOCK_TIMEOUT`
    /// seconds and telling the user whom it is waiting for.
    pub(crate) fn acquire(
        paths: &Paths,
        command: &str,
        printer: &Printer,
    ) -> anyhow::Result<ControlLock> {
        paths.ensure_run_dir()?;
        let lock_path = paths.control_lock();
        let timeout = lock_timeout()?;
        let announce = || {
            printer.info(&format!(
                "waiting for {} to release {}",
                describe_holder(paths),
                lock_path.display()
            ));
        };
        let lock = match FileLock::acquire_within(&lock_path, timeout, POLL_INTERVAL, announce) {
            Ok(lock) => lock,
            Err(LockFailure::Open(e)) => {
                return Err(e).with_context(|| format!("could not open {}", lock_path.display()));
            }
            Err(LockFailure::Lock(e)) => {
                return Err(e).with_context(|| format!("could not lock {}", lock_path.display()));
            }
            Err(LockFailure::Busy) => {
                return Err(CliError::new(
                    ErrorKind::Lock,
                    format!(
                        "timed out after {}s waiting for {} to release {}",
                        timeout.as_secs(),
                        describe_holder(paths),
                        lock_path.display()
                    ),
                )
                .hint(format!(
                    "wait for it to finish, or raise the deadline: {}=1800 {command}",
                    env_vars::BREADBOARD_LOCK_TIMEOUT
                ))
                .into());
            }
        };
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_owned(),
            since: fsutil::now_rfc3339(),
        };
        let holder_path = paths.control_lock_holder();
        fsutil::write_private(&holder_path, serde_json::to_string(&holder)?.as_bytes())?;
        Ok(ControlLock {
            _lock: lock,
            holder_path,
        })
    }
}

impl Drop for ControlLock {
    fn drop(&mut self) {
        // Removed while still locked, so it never describes the next holder. After kill -9 it stays behind, and the
        // next holder overwrites it.
        let _ = std::fs::remove_file(&self.holder_path);
    }
}

/// `BREADBOARD_LOCK_TIMEOUT` (see `crate::settings`), else 600 s.
pub(crate) fn lock_timeout() -> anyhow::Result<Duration> {
    let settings = crate::settings::without_flags(&Default::default());
    Ok(*settings.lock_timeout.get()?)
}

/// "pid 123 (`breadboard engine install`)", or a neutral phrase when the sidecar is missing or being rewritten.
pub(crate) fn describe_holder(paths: &Paths) -> String {
    std::fs::read_to_string(paths.control_lock_holder())
        .ok()
        .and_then(|text| serde_json::from_str::<Holder>(&text).ok())
        .map_or_else(
            || "another breadboard process".to_owned(),
            |h| format!("pid {} (`{}`)", h.pid, h.command),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_waited_for_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!is_held(&path), "a missing file is not held");
        assert!(!path.exists(), "probing creates nothing");
        let held = FileLock::try_acquire(&path).unwrap().unwrap();
        // flock is per open file description: a second open in this process contends like another process.
        assert!(is_held(&path));
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        let mut waits = 0;
        let start = Instant::now();
        let busy = FileLock::acquire_within(
            &path,
            Duration::from_millis(100),
            Duration::from_millis(10),
            || waits += 1,
        );
        assert!(matches!(busy, Err(LockFailure::Busy)), "{busy:?}");
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(waits, 1, "told once");
        drop(held);
        assert!(released(&path));
        let again = FileLock::acquire_within(&path, Duration::ZERO, Duration::ZERO, || {
            panic!("free: no wait")
        });
        assert!(again.is_ok());
    }

    #[test]
    fn a_read_only_lock_file_is_still_probed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.lock");
        let held = FileLock::try_acquire(&path).unwrap().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        // As root the write open succeeds anyway; either way the holder must be seen.
        assert!(is_held(&path));
        drop(held);
        assert!(released(&path));
    }

    /// A lock is released when every copy of its open file is closed: a child another test forks in this process
    /// holds a copy until it execs (close-on-exec), so the release is awaited with a deadline, not assumed at once.
    fn released(path: &std::path::Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_held(path) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}
