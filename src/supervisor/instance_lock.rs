//! `run/engine.lock`: held by the supervisor for exactly as long as it lives, so "is an instance alive" is one
//! non-blocking lock attempt, whatever the registration says.

use std::fs::File;
use std::time::Duration;

use crate::lock::{FileLock, LockFailure};
use crate::paths::Paths;

/// Takes `run/engine.lock` (retrying briefly: `engine status` probes it with a non-blocking try_lock). The error
/// says why it could not.
pub(crate) fn take_instance_lock(paths: &Paths) -> Result<File, String> {
    let path = paths.engine_lock();
    paths
        .ensure_run_dir()
        .map_err(|e| format!("could not create {}: {e:#}", paths.run_dir().display()))?;
    let lock = FileLock::acquire_within(
        &path,
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {},
    );
    match lock {
        Ok(lock) => Ok(lock.into_file()),
        Err(LockFailure::Open(e)) => Err(format!(
            "could not open the instance lock {}: {e}",
            path.display()
        )),
        Err(LockFailure::Lock(e)) => Err(format!(
            "could not lock the instance lock {}: {e}",
            path.display()
        )),
        Err(LockFailure::Busy) => Err(format!(
            "the instance lock {} is held by another supervisor",
            path.display()
        )),
    }
}
