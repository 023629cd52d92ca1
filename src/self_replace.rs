//! Replacing the breadboard binary in place, safely: everything is staged in the binary's own directory (same
//! filesystem, so the final step is one `rename(2)`, atomic, and a running process keeps its old inode: no
//! ETXTBSY, installers.md §3.8), the staged binary must run and report the expected version first, and the replaced
//! file is kept as `<name>.previous` (the name install.sh uses) for `breadboard upgrade --rollback`.
//!
//! Until that rename, any failure (bad checksum, cut-off download, full disk, read-only directory) leaves the old
//! binary byte-identical: it is never opened for writing. Hand-written instead of the self-replace crate: on Unix that
//! crate does the same temp-file-plus-rename, and we need the staged file anyway to verify it before the swap.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{CliError, ErrorKind};
use crate::fsutil;

/// Staged files start with these prefixes (the first is install.sh's); only the lock holder creates them, so any
/// found while holding the lock are leftovers of a killed run.
const STAGE_PREFIXES: [&str; 3] = [
    ".breadboard.new.",
    ".breadboard-upgrade.",
    ".breadboard.previous.",
];

pub fn previous_path(exe: &Path) -> PathBuf {
    let name = exe
        .file_name()
        .map_or_else(|| "breadboard".into(), |n| n.to_string_lossy().into_owned());
    exe.with_file_name(format!("{name}.previous"))
}

pub fn dir_of(exe: &Path) -> &Path {
    exe.parent().unwrap_or(Path::new("/"))
}

/// A file in the install dir that is deleted on drop unless [`TempFile::keep`] is called.
pub struct TempFile {
    pub path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub fn new(dir: &Path, prefix: &str, suffix: &str) -> TempFile {
        TempFile {
            path: dir.join(format!("{prefix}{}{suffix}", std::process::id())),
            keep: false,
        }
    }

    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` exclusively, with `mode`; the error says which directory refused and why.
pub fn create_new(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| write_error(path, e))
}

/// An I/O error while writing into the install dir, explained: read-only and full disks get their own fix.
pub fn write_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    let dir = dir_of(path);
    let (what, hint) = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => (
            format!("the install directory {} is not writable ({e})", dir.display()),
            format!(
                "run breadboard upgrade as the user that owns {}, or reinstall into a directory you own: \
                 curl -fsSL <releases>/install.sh | env BREADBOARD_INSTALL_DIR=~/.breadboard/bin sh",
                dir.display()
            ),
        ),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => (
            format!("no space left to write {} ({e})", path.display()),
            format!("free some space on the filesystem of {}, then run breadboard upgrade again", dir.display()),
        ),
        _ => (
            format!("could not write {} ({e})", path.display()),
            "fix the cause above, then run breadboard upgrade again".to_owned(),
        ),
    };
    CliError::new(
        ErrorKind::Failure,
        format!("{what}; the installed breadboard was not changed"),
    )
    .hint(hint)
    .into()
}

/// Fails early, before any download, when the install dir cannot take new files (rustup `self_update_permitted`).
pub fn preflight_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = TempFile::new(dir, ".breadboard-upgrade.", ".probe");
    create_new(&probe.path, 0o600)?;
    Ok(())
}

/// Removes staged files a killed upgrade or install left behind. Call only while holding the [`InstallLock`].
pub fn clean_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if STAGE_PREFIXES.iter().any(|p| name.starts_with(p)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Extracts the `breadboard` file at the root of `tarball` into `dest` (created 0755). Nothing else in the archive
/// is written anywhere, so paths or links in it cannot escape.
pub fn extract_binary(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(tarball)
        .with_context(|| format!("could not open {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |why: String| -> anyhow::Error {
        CliError::new(ErrorKind::Integrity, format!("cannot unpack {}: {why}; nothing was changed", tarball.display()))
            .hint("the release artifact is malformed; pick another version: breadboard upgrade --version V")
            .into()
    };
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let name = path.to_string_lossy();
        if name != "breadboard" && name != "./breadboard" {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(bad("its breadboard entry is not a regular file".into()));
        }
        let mut out = create_new(dest, 0o755)?;
        // The umask filters the creation mode; a binary must be 0755 whatever it is (install.sh chmods too).
        out.set_permissions(perms_755())
            .map_err(|e| write_error(dest, e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(|e| write_error(dest, e))?;
        }
        out.sync_all().map_err(|e| write_error(dest, e))?;
        // Closed here, before anyone runs it: exec of a file still open for writing fails with ETXTBSY.
        drop(out);
        return Ok(());
    }
    Err(bad("it has no breadboard binary at its root".into()))
}

fn perms_755() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o755)
}

/// Runs `bin --version` (with a deadline) and returns what it printed, or why it did not run.
pub fn reported_version(bin: &Path) -> Result<String, String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not answer --version within 30 s".into());
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(format!("--version failed ({status}): {}", err.trim()));
    }
    Ok(out.trim().to_owned())
}

/// The staged binary must run here and say `breadboard <expected>` (catches a wrong-platform or mislabelled build).
pub fn verify_version(bin: &Path, expected: &str) -> anyhow::Result<()> {
    let want = format!("breadboard {expected}");
    match reported_version(bin) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(CliError::new(
            ErrorKind::Validation,
            format!("the downloaded binary reports {got:?}, expected {want:?}; nothing was changed"),
        )
        .hint("the release is mislabelled; report it, or pick another version: breadboard upgrade --version V")
        .into()),
        Err(why) => Err(CliError::new(
            ErrorKind::Validation,
            format!("the downloaded binary does not run here ({why}); nothing was changed"),
        )
        .hint("check that the release has a build for this platform, or pick another version: breadboard upgrade --version V")
        .into()),
    }
}

/// Swaps `staged` in at `exe`, keeping the replaced file at [`previous_path`]. Each step leaves a working `exe`:
/// 1. hard-link `exe` to a temp name, rename that over `<exe>.previous` (a copy if hard links are not possible);
/// 2. rename `staged` over `exe` (the commit point).
pub fn replace(exe: &Path, staged: TempFile) -> anyhow::Result<()> {
    let dir = dir_of(exe);
    let previous = previous_path(exe);
    let keep = TempFile::new(dir, ".breadboard.previous.", "");
    let _ = std::fs::remove_file(&keep.path);
    if std::fs::hard_link(exe, &keep.path).is_err() {
        copy_preserving_mode(exe, &keep.path)?;
    }
    std::fs::rename(&keep.path, &previous).map_err(|e| write_error(&previous, e))?;
    keep.keep();
    std::fs::rename(&staged.path, exe).map_err(|e| write_error(exe, e))?;
    staged.keep();
    fsutil::sync_dir(dir).map_err(|e| write_error(exe, e))?;
    Ok(())
}

/// Swaps `exe` and `<exe>.previous`: the previous binary comes back, the current one becomes previous (so a second
/// rollback undoes the first).
pub fn swap_with_previous(exe: &Path) -> anyhow::Result<()> {
    let dir = dir_of(exe);
    let previous = previous_path(exe);
    let hold = TempFile::new(dir, ".breadboard.previous.", "");
    let _ = std::fs::remove_file(&hold.path);
    if std::fs::hard_link(exe, &hold.path).is_err() {
        copy_preserving_mode(exe, &hold.path)?;
    }
    // Commit point: `exe` is now the previous binary.
    std::fs::rename(&previous, exe).map_err(|e| write_error(exe, e))?;
    std::fs::rename(&hold.path, &previous).map_err(|e| write_error(&previous, e))?;
    hold.keep();
    fsutil::sync_dir(dir).map_err(|e| write_error(exe, e))?;
    Ok(())
}

fn copy_preserving_mode(from: &Path, to: &Path) -> anyhow::Result<()> {
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

/// `(device, inode)` of a path: tells whether the file at the exe path is still the one this process started from.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// install.sh's lock, shared with it: a directory `$BREADBOARD_HOME/install.lock` holding the holder's `pid`. A lock
/// whose holder is gone is taken over, as install.sh does. Removed on drop.
pub struct InstallLock {
    dir: PathBuf,
}

impl InstallLock {
    pub fn acquire(home: &Path, printer: &crate::printer::Printer) -> anyhow::Result<InstallLock> {
        std::fs::create_dir_all(home)
            .with_context(|| format!("could not create {}", home.display()))?;
        let dir = home.join("install.lock");
        let timeout = crate::lock::lock_timeout()?;
        let deadline = Instant::now() + timeout;
        let mut announced = false;
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("could not create {}", dir.display()))
                }
            }
            let holder = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = holder {
                // Ok(false): no such process. EPERM means it exists (another user's): still held.
                if matches!(crate::sys::kill(pid, 0), Ok(false)) {
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
            }
            if !announced {
                let who = holder.map_or_else(String::new, |p| format!(" (pid {p})"));
                printer.info(&format!(
                    "waiting for another breadboard install or upgrade{who} to release {}",
                    dir.display()
                ));
                announced = true;
            }
            if Instant::now() >= deadline {
                let who =
                    holder.map_or_else(|| "another install".to_owned(), |p| format!("pid {p}"));
                return Err(CliError::new(
                    ErrorKind::Lock,
                    format!(
                        "timed out after {}s waiting for {who} to release {}",
                        timeout.as_secs(),
                        dir.display()
                    ),
                )
                .hint(format!(
                    "wait for it to finish; if no install is running, remove {}",
                    dir.display()
                ))
                .into());
            }
            // mkdir has no timed wait: poll until the deadline.
            std::thread::sleep(Duration::from_millis(100));
        }
        let lock = InstallLock { dir };
        std::fs::write(lock.dir.join("pid"), format!("{}\n", std::process::id()))
            .with_context(|| format!("could not write {}", lock.dir.join("pid").display()))?;
        Ok(lock)
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(path: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn replace_keeps_previous_and_swap_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("breadboard");
        script(&exe, "echo 'breadboard 1.0.0'");
        let old = std::fs::read(&exe).unwrap();
        let staged = TempFile::new(dir.path(), ".breadboard.new.", "");
        script(&staged.path, "echo 'breadboard 2.0.0'");
        verify_version(&staged.path, "2.0.0").unwrap();
        assert!(verify_version(&staged.path, "3.0.0").is_err());
        replace(&exe, staged).unwrap();
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 2.0.0");
        assert_eq!(std::fs::read(previous_path(&exe)).unwrap(), old);
        swap_with_previous(&exe).unwrap();
        assert_eq!(std::fs::read(&exe).unwrap(), old);
        assert_eq!(
            reported_version(&previous_path(&exe)).unwrap(),
            "breadboard 2.0.0"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
    }

    #[test]
    fn extract_takes_only_the_root_binary() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("a.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        ));
        for (name, body) in [("../evil", &b"no"[..]), ("breadboard", &b"#!/bin/sh\n"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, body)
                .unwrap_or_else(|_| {
                    // tar refuses to *write* `..`; append the raw name instead.
                    let mut h = tar::Header::new_old();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_size(body.len() as u64);
                    h.set_cksum();
                    builder.append(&h, body).unwrap();
                });
        }
        builder.into_inner().unwrap().finish().unwrap();
        let dest = dir.path().join("out");
        extract_binary(&tarball, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        assert!(!dir.path().parent().unwrap().join("evil").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );

        let empty = dir.path().join("empty.tar.gz");
        let b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&empty).unwrap(),
            flate2::Compression::fast(),
        ));
        b.into_inner().unwrap().finish().unwrap();
        let err = extract_binary(&empty, &dir.path().join("out2")).unwrap_err();
        assert!(err.to_string().contains("no breadboard binary"), "{err}");
    }
}
