//! The control lock `run/control.lock`: every command that changes engine state holds it, so two installs (or, in
//! later issues, an install and a start) serialise instead of corrupting each other.
//!
//! `flock(2)` through std `File::lock`/`try_lock`: the kernel releases it when the process dies, even on `kill -9`,
//! so there is no stale-lock cleanup. The lock file itself is never unlinked: unlinking a locked file lets a third
//! process lock a new inode while the second still waits on the old one. A sidecar `control.lock.holder` names the
//! holder so a waiter can say whom it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub since: String,
}

/// Held until dropped.
#[derive(Debug)]
pub struct ControlLock {
    _file: File,
    holder_path: PathBuf,
}

impl ControlLock {
    /// Acquires the lock for `command` (e.g. `breadboard engine install`), waiting up to `BREADBOARD_LOCK_TIMEOUT`
    /// seconds and telling the user whom it is waiting for.
    pub fn acquire(paths: &Paths, command: &str, printer: &Printer) -> anyhow::Result<ControlLock> {
        paths.ensure_run_dir()?;
        let lock_path = paths.control_lock();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("could not open {}", lock_path.display()))?;
        let timeout = lock_timeout()?;
        let deadline = Instant::now() + timeout;
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e)
                        .with_context(|| format!("could not lock {}", lock_path.display()));
                }
            }
            if !announced {
                printer.info(&format!(
                    "waiting for {} to release {}",
                    describe_holder(paths),
                    lock_path.display()
                ));
                announced = true;
            }
            if Instant::now() >= deadline {
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
            // Polling with a deadline: flock has no timed wait, and a blocking lock() could not time out.
            std::thread::sleep(POLL_INTERVAL);
        }
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_owned(),
            since: fsutil::now_rfc3339(),
        };
        let holder_path = paths.control_lock_holder();
        fsutil::write_private(&holder_path, serde_json::to_string(&holder)?.as_bytes())?;
        Ok(ControlLock {
            _file: file,
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

pub(crate) fn lock_timeout() -> anyhow::Result<Duration> {
    match env_vars::get(env_vars::BREADBOARD_LOCK_TIMEOUT) {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                CliError::new(
                    ErrorKind::Config,
                    format!(
                        "{}={v:?} is not a number of seconds",
                        env_vars::BREADBOARD_LOCK_TIMEOUT
                    ),
                )
                .hint(format!(
                    "unset {} or set it to e.g. 600",
                    env_vars::BREADBOARD_LOCK_TIMEOUT
                ))
                .into()
            }),
    }
}

/// "pid 123 (`breadboard engine install`)", or a neutral phrase when the sidecar is missing or being rewritten.
pub fn describe_holder(paths: &Paths) -> String {
    std::fs::read_to_string(paths.control_lock_holder())
        .ok()
        .and_then(|text| serde_json::from_str::<Holder>(&text).ok())
        .map_or_else(
            || "another breadboard process".to_owned(),
            |h| format!("pid {} (`{}`)", h.pid, h.command),
        )
}
