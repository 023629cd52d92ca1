//! Putting a verified binary in place of the running one, and keeping the file it replaces as `<name>.previous` (the
//! name install.sh uses) for `breadboard upgrade --rollback`.
//!
//! The swap is the `self-replace` crate's: on Unix it copies the new file next to the running executable and renames
//! it over it (one rename(2) in one directory: atomic, and the running process keeps its old inode, so no ETXTBSY).
//! Around it, here:
//! - the running file is hard-linked aside first and that link renamed over `<name>.previous` after the swap (the
//!   crate keeps nothing of the old binary);
//! - the new file and the directory are flushed to disk after the swap (the crate does neither);
//! - [`put_back`] is two hand-written renames: self-replace always targets `current_exe()`, and once the running file
//!   has been renamed over, Linux reports it as `<path> (deleted)`, even with a hard link of it left, so the crate
//!   cannot undo its own swap from the same process (docs/distribution.md).
//!
//! Until the crate's rename, a failure leaves the installed binary byte-identical; after it (the commit point), what
//! fails comes back as a warning, never as an error saying nothing changed.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::stage::{create_new, dir_of, write_error, TempFile};
use crate::error::{CliError, ErrorKind};
use crate::fsutil;

pub(crate) fn previous_path(exe: &Path) -> PathBuf {
    let name = exe
        .file_name()
        .map_or_else(|| "breadboard".into(), |n| n.to_string_lossy().into_owned());
    exe.with_file_name(format!("{name}.previous"))
}

/// Puts a copy of `new` in place of `exe`, the running executable (canonical path), and keeps the file it replaces as
/// [`previous_path`]. `new` may be `<exe>.previous` itself: a rollback swaps the two. Call only while holding the
/// install lock. Returns warnings about what failed after the commit point (the caller goes on and records the new
/// version).
pub(crate) fn swap_in(exe: &Path, new: &Path) -> anyhow::Result<Vec<String>> {
    ensure_running(exe)?;
    let hold = TempFile::new(dir_of(exe), ".breadboard.previous.", "");
    link_or_copy(exe, &hold.path)?;
    self_replace::self_replace(new).map_err(|e| write_error(exe, e))?;
    // Committed: from here on the installed breadboard is the new one.
    let previous = previous_path(exe);
    let mut warnings = Vec::new();
    match std::fs::rename(&hold.path, &previous) {
        Ok(()) => {
            hold.keep();
        }
        // `hold` is removed on drop: the replaced binary is not kept anywhere.
        Err(e) => warnings.push(format!(
            "{} is replaced, but the binary it replaced could not be kept as {} ({e}); breadboard upgrade --rollback \
             will not be possible",
            exe.display(),
            previous.display()
        )),
    }
    warnings.extend(sync_warning(exe));
    Ok(warnings)
}

/// Undoes [`swap_in`] when the new binary, now at `exe`, does not answer: `<exe>.previous`, the binary it replaced,
/// is renamed back over `exe` and the new one is gone. Returns warnings, as [`swap_in`] does.
pub(crate) fn put_back(exe: &Path) -> anyhow::Result<Vec<String>> {
    let previous = previous_path(exe);
    std::fs::rename(&previous, exe).map_err(|e| {
        CliError::new(
            ErrorKind::Failure,
            format!(
                "the new binary at {} does not run, and the one it replaced could not be put back from {} ({e})",
                exe.display(),
                previous.display()
            ),
        )
        .hint(format!(
            "reinstall: curl -fsSL {}/latest/download/install.sh | sh",
            super::release::GITHUB_RELEASES
        ))
    })?;
    Ok(sync_warning(exe).into_iter().collect())
}

/// self-replace replaces `current_exe()`: that must be the file the caller checked (the one the receipt names).
fn ensure_running(exe: &Path) -> anyhow::Result<()> {
    let running = std::env::current_exe().and_then(std::fs::canonicalize);
    match running {
        Ok(path) if path == exe => Ok(()),
        Ok(path) => anyhow::bail!(
            "refusing to replace {}: the running breadboard is {}; nothing was changed",
            exe.display(),
            path.display()
        ),
        Err(e) => Err(e).context(format!(
            "could not find the running breadboard to replace {}; nothing was changed",
            exe.display()
        )),
    }
}

/// A second name for `from` (a copy when hard links are not possible, e.g. on some FUSE filesystems).
fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(from)
        .with_context(|| format!("could not read {}", from.display()))?
        .permissions()
        .mode();
    let mut out = create_new(to, mode & 0o7777)?;
    let mut src =
        std::fs::File::open(from).with_context(|| format!("could not read {}", from.display()))?;
    std::io::copy(&mut src, &mut out).map_err(|e| write_error(to, e))?;
    out.sync_all().map_err(|e| write_error(to, e))?;
    Ok(())
}

/// Flushes the new `exe` and its directory to disk. After the commit point a failure here is a warning: the new binary
/// is in place and runs; only a crash in the next moments could undo the rename.
fn sync_warning(exe: &Path) -> Option<String> {
    let dir = dir_of(exe);
    let synced = std::fs::File::open(exe)
        .and_then(|file| file.sync_all())
        .and_then(|()| sync_dir(dir));
    synced.err().map(|e| {
        format!(
            "{} is replaced, but flushing {} to disk failed ({e}); a power loss now could bring the old binary back \
             (check with: {} --version)",
            exe.display(),
            dir.display(),
            exe.display()
        )
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::FAIL_SYNC.with(std::cell::Cell::get) {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    fsutil::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::super::stage::reported_version;
    use super::super::stage::tests::{names, script};
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes [`sync_dir`] fail on this thread: what happens after the commit point when the disk acts up.
        pub(super) static FAIL_SYNC: Cell<bool> = const { Cell::new(false) };
    }

    /// The swap itself replaces the running executable (here: the test binary), so it is tested end to end by
    /// tests/dist/test_upgrade.py; what a unit test can check is that it never touches another file.
    #[test]
    fn only_the_running_executable_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("breadboard");
        script(&exe, "echo 'breadboard 1.0.0'");
        let new = dir.path().join("new");
        script(&new, "echo 'breadboard 2.0.0'");
        let err = swap_in(&exe, &new).unwrap_err();
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 1.0.0");
        assert_eq!(names(dir.path()), ["breadboard", "new"]);
        assert_eq!(previous_path(&exe), dir.path().join("breadboard.previous"));
    }

    #[test]
    fn put_back_restores_the_previous_binary_and_a_failed_sync_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("breadboard");
        script(&exe, "exit 1");
        script(&previous_path(&exe), "echo 'breadboard 1.0.0'");
        FAIL_SYNC.with(|f| f.set(true));
        let warnings = put_back(&exe).unwrap();
        FAIL_SYNC.with(|f| f.set(false));
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 1.0.0");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("is replaced, but flushing"),
            "{}",
            warnings[0]
        );
        assert_eq!(names(dir.path()), ["breadboard"]);
        // Nothing to put back: an error that says the binary in place does not run, and how to reinstall.
        let err = put_back(&exe).unwrap_err();
        assert!(err.to_string().contains("could not be put back"), "{err}");
    }
}
