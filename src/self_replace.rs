//! Replacing the breadboard binary in place, safely: everything is staged in the binary's own directory (same
//! filesystem, so the final step is one `rename(2)`, atomic, and a running process keeps its old inode: no
//! ETXTBSY), the staged binary must run and report the expected version first, and the replaced
//! file is kept as `<name>.previous` (the name install.sh uses) for `breadboard upgrade --rollback`.
//!
//! Until that rename, any failure (bad checksum, cut-off download, full disk, read-only directory) leaves the old
//! binary byte-identical: it is never opened for writing. After it (the commit point) the new binary is in place, so
//! what fails then (flushing the directory to disk, keeping the replaced file) comes back as a warning, never as an
//! error saying nothing changed.
//!
//! The crates do the parts they do well: reqwest downloads, flate2 + tar unpack (one entry, see [`extract_binary`]),
//! ring checks the sha256. The swap itself stays here, two renames, because neither crate for it fits:
//! - `self-replace` (`self_replace(new)`) always targets `current_exe()` (not the resolved path upgrade checked, and
//!   never `<name>.previous` for a rollback), copies the verified file again instead of renaming it (a second write
//!   after the check, with no fsync of the file or the directory), keeps nothing of the old binary, and leaves
//!   `.<name>.__temp__*` files that neither our leftover cleanup nor install.sh knows. On Unix it is the same
//!   temp-file-plus-rename as [`replace`], without the parts above.
//! - `self_update` brings its own download and archive layers (a second reqwest feature set, progress bars) around
//!   the same rename; the manifest, size, sha256 and `--version` checks would still be ours.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{CliError, ErrorKind};
use crate::fsutil;

/// Staged files in the install dir start with these prefixes (the first two are install.sh's too), followed by the pid
/// of the process that made them.
const STAGE_PREFIXES: [&str; 3] = [
    ".breadboard.new.",
    ".breadboard.previous.",
    ".breadboard-upgrade.",
];

pub(crate) fn previous_path(exe: &Path) -> PathBuf {
    let name = exe
        .file_name()
        .map_or_else(|| "breadboard".into(), |n| n.to_string_lossy().into_owned());
    exe.with_file_name(format!("{name}.previous"))
}

pub(crate) fn dir_of(exe: &Path) -> &Path {
    exe.parent().unwrap_or(Path::new("/"))
}

/// A file in the install dir that is deleted on drop unless [`TempFile::keep`] is called.
pub(crate) struct TempFile {
    pub path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(crate) fn new(dir: &Path, prefix: &str, suffix: &str) -> TempFile {
        TempFile {
            path: dir.join(format!("{prefix}{}{suffix}", std::process::id())),
            keep: false,
        }
    }

    pub(crate) fn keep(mut self) -> PathBuf {
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
pub(crate) fn create_new(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
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
pub(crate) fn write_error(path: &Path, e: std::io::Error) -> anyhow::Error {
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
pub(crate) fn preflight_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = TempFile::new(dir, ".breadboard-upgrade.", ".probe");
    create_new(&probe.path, 0o600)?;
    Ok(())
}

/// Removes what a killed upgrade or install left behind: staged files in the install dir `dir`, the install lock's
/// temp and aside directories in `home`. Each name carries the pid that made it; only a dead pid's are removed (as
/// install.sh's `clean_leftovers`). Call only while holding the [`InstallLock`].
pub(crate) fn clean_leftovers(home: &Path, dir: &Path) {
    let places = [
        (home, &[LOCK_TMP_PREFIX, LOCK_ASIDE_PREFIX][..]),
        (dir, &STAGE_PREFIXES[..]),
    ];
    for (place, prefixes) in places {
        let Ok(entries) = std::fs::read_dir(place) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(pid) = prefixes
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .and_then(|rest| parse_pid(rest.split('.').next().unwrap_or("")))
            else {
                continue;
            };
            if pid != crate::sys::getpid() && !alive(pid) {
                let _ = remove_any(&entry.path());
            }
        }
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// Extracts the `breadboard` file at the root of `tarball` into `dest` (created 0755). Nothing else in the archive
/// is written anywhere, so paths or links in it cannot escape.
pub(crate) fn extract_binary(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(tarball)
        .with_context(|| format!("could not open {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Its size and sha256 matched the manifest: the release was published broken, a source problem (exit 6), not a
    // corrupted download (9).
    let bad = |why: String| -> anyhow::Error {
        CliError::new(
            ErrorKind::Source,
            format!(
                "cannot unpack {}: {why}; nothing was changed",
                tarball.display()
            ),
        )
        .hint(
            "the release artifact is malformed as published (it matches the manifest's sha256); report it, or pick \
             another version: breadboard upgrade --version V",
        )
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
pub(crate) fn reported_version(bin: &Path) -> Result<String, String> {
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
pub(crate) fn verify_version(bin: &Path, expected: &str) -> anyhow::Result<()> {
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
///
/// Returns warnings about what failed after the commit point (the new binary is in place then, so they are not
/// errors: the caller goes on and records the new version).
pub(crate) fn replace(exe: &Path, staged: TempFile) -> anyhow::Result<Vec<String>> {
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
    // Committed: from here on the installed breadboard is the new one.
    Ok(sync_warning(dir, exe).into_iter().collect())
}

/// Swaps `exe` and `<exe>.previous`: the previous binary comes back, the current one becomes previous (so a second
/// rollback undoes the first). Returns warnings about what failed after the commit point, as [`replace`] does.
pub(crate) fn swap_with_previous(exe: &Path) -> anyhow::Result<Vec<String>> {
    let dir = dir_of(exe);
    let previous = previous_path(exe);
    let hold = TempFile::new(dir, ".breadboard.previous.", "");
    let _ = std::fs::remove_file(&hold.path);
    if std::fs::hard_link(exe, &hold.path).is_err() {
        copy_preserving_mode(exe, &hold.path)?;
    }
    // Commit point: `exe` is now the previous binary.
    std::fs::rename(&previous, exe).map_err(|e| write_error(exe, e))?;
    let mut warnings = Vec::new();
    match std::fs::rename(&hold.path, &previous) {
        // `hold` is dropped (removed) below: the binary it held is gone, not kept anywhere.
        Err(e) => warnings.push(format!(
            "{} is back, but the binary it replaced could not be kept as {} ({e}); a second rollback is not possible",
            exe.display(),
            previous.display()
        )),
        Ok(()) => {
            hold.keep();
        }
    }
    warnings.extend(sync_warning(dir, exe));
    Ok(warnings)
}

/// Flushes the renames in `dir` to disk. After the commit point a failure here is a warning: the new binary is in
/// place and runs; only a crash in the next moments could undo the rename.
fn sync_warning(dir: &Path, exe: &Path) -> Option<String> {
    sync_dir(dir).err().map(|e| {
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
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// install.sh's lock, shared with it: `$BREADBOARD_HOME/install.lock`, a directory holding its holder's pid in `pid`.
/// The protocol is install.sh's (described above its `BB_LOCK_STALE_AFTER`), step for step:
/// - taken by renaming a complete lock (`install.lock.tmp.<pid>.<n>`, pid file inside) into place: rename(2) replaces
///   no non-empty directory, so this fails while another lock is there, and a lock never exists without its pid;
/// - released, on drop, only if its pid is still ours: renamed aside (`install.lock.old.<pid>.<n>`), then removed;
/// - a stale lock (its holder is gone) is claimed by renaming its `pid` to `pid.taken.<pid>`: only one waiter's
///   rename of that file succeeds, and one whose claimed file names a live holder (the lock changed after it looked)
///   puts it back. The claimant then renames the lock aside and removes it. A lock without a pid file is stale once it
///   is [`LOCK_STALE_AFTER`] old: a dead claimant's claim is taken over the same way, an empty one is removed with
///   rmdir (which fails once anything is in it), anything else is renamed aside and checked.
///
/// Nothing is removed by name and then recreated, so two waiters that both find a stale lock never both hold it.
pub(crate) struct InstallLock {
    dir: PathBuf,
}

pub(crate) const LOCK_NAME: &str = "install.lock";
const LOCK_TMP_PREFIX: &str = "install.lock.tmp.";
const LOCK_ASIDE_PREFIX: &str = "install.lock.old.";
const CLAIM_PREFIX: &str = "pid.taken.";
/// A lock without a pid file younger than this may be mid-claim (its pid file renamed for a moment); older, it was
/// made outside the protocol, or its claimant was killed.
pub(crate) const LOCK_STALE_AFTER: Duration = Duration::from_secs(5);

/// Unique per process and call: the pid alone is not (threads, and a process that takes the lock twice).
fn unique_name(home: &Path, prefix: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    home.join(format!("{prefix}{}.{n}", std::process::id()))
}

/// A pid as install.sh reads one: digits, no leading zero (a pid file holding "0" must not mean our process group).
fn parse_pid(text: &str) -> Option<i32> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn pid_in(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| parse_pid(&t))
}

/// Whether a process with this pid exists. EPERM (another user's process) counts as alive.
fn alive(pid: i32) -> bool {
    !matches!(crate::sys::kill(pid, 0), Ok(false))
}

/// The pid of the waiter whose claim (`pid.taken.<pid>`) is in `lock`.
fn lock_taker(lock: &Path) -> Option<i32> {
    std::fs::read_dir(lock).ok()?.flatten().find_map(|e| {
        e.file_name()
            .to_string_lossy()
            .strip_prefix(CLAIM_PREFIX)
            .and_then(parse_pid)
    })
}

/// Single-quoted for a POSIX shell, for the commands printed in hints.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl InstallLock {
    pub(crate) fn acquire(
        home: &Path,
        printer: &crate::printer::Printer,
    ) -> anyhow::Result<InstallLock> {
        let timeout = crate::lock::lock_timeout()?;
        Self::acquire_within(home, printer, timeout)
    }

    fn acquire_within(
        home: &Path,
        printer: &crate::printer::Printer,
        timeout: Duration,
    ) -> anyhow::Result<InstallLock> {
        crate::paths::ensure_private_home(home)?;
        let dir = home.join(LOCK_NAME);
        let deadline = Instant::now() + timeout;
        let mut announced = false;
        loop {
            if try_lock(home, &dir)? {
                return Ok(InstallLock { dir });
            }
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {
                    if let Some(how) = take_over(home, &dir) {
                        printer.info(&format!("removed a stale install lock: {how}"));
                        continue;
                    }
                }
                Ok(_) => {
                    return Err(CliError::new(
                        ErrorKind::Failure,
                        format!("{} is not a lock directory", dir.display()),
                    )
                    .hint(format!(
                        "if no breadboard install or upgrade is running, remove it: rm -f {}",
                        sh_quote(&dir)
                    ))
                    .into())
                }
                // Released in between: try again at once.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("could not read {}", dir.display()))
                }
            }
            let holder = pid_in(&dir.join("pid"));
            if !announced {
                let who = holder.map_or_else(String::new, |p| format!(" (pid {p})"));
                printer.info(&format!(
                    "waiting for another breadboard install or upgrade{who} to release {}",
                    dir.display()
                ));
                announced = true;
            }
            if Instant::now() >= deadline {
                return Err(timed_out(&dir, holder, timeout).into());
            }
            // rename(2) has no timed wait: poll until the deadline.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn timed_out(dir: &Path, holder: Option<i32>, timeout: Duration) -> CliError {
    let secs = timeout.as_secs_f64();
    match holder {
        Some(pid) => CliError::new(
            ErrorKind::Lock,
            format!(
                "another breadboard install or upgrade (pid {pid}) still holds {} after {secs}s",
                dir.display()
            ),
        )
        .hint(format!(
            "wait for it to finish (or set BREADBOARD_LOCK_TIMEOUT); if pid {pid} is not a breadboard install or \
             upgrade (check: ps -p {pid}), remove the lock: rm -rf {}",
            sh_quote(dir)
        )),
        None => CliError::new(
            ErrorKind::Lock,
            format!("{} (no pid in it) is still there after {secs}s", dir.display()),
        )
        .hint(format!(
            "if no breadboard install or upgrade is running, remove it: rm -rf {}",
            sh_quote(dir)
        )),
    }
}

/// One attempt: a complete lock under a temp name, renamed into place. `Ok(false)`: another lock (or something else)
/// is in the way.
fn try_lock(home: &Path, lock: &Path) -> anyhow::Result<bool> {
    let tmp = unique_name(home, LOCK_TMP_PREFIX);
    let _ = std::fs::remove_dir_all(&tmp);
    let made = std::fs::create_dir(&tmp)
        .and_then(|()| std::fs::write(tmp.join("pid"), format!("{}\n", std::process::id())));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("could not create {}", tmp.display()));
    }
    // An empty directory would be replaced: no lock is ever empty (see above), so it was not one.
    match std::fs::rename(&tmp, lock) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            match e.raw_os_error() {
                Some(libc::EEXIST)
                | Some(libc::ENOTEMPTY)
                | Some(libc::ENOTDIR)
                | Some(libc::EISDIR) => Ok(false),
                _ => Err(e).with_context(|| format!("could not create {}", lock.display())),
            }
        }
    }
}

/// Takes the stale `lock` away, saying why it was stale; `None` when it is not stale, another waiter got there first,
/// or it changed meanwhile.
fn take_over(home: &Path, lock: &Path) -> Option<String> {
    let claim = lock.join(format!("{CLAIM_PREFIX}{}", std::process::id()));
    let pid_file = lock.join("pid");
    if let Some(holder) = pid_in(&pid_file) {
        if alive(holder) {
            return None;
        }
        std::fs::rename(&pid_file, &claim).ok()?;
        if pid_in(&claim) != Some(holder) {
            // A live lock taken in between: its pid goes back.
            let _ = std::fs::rename(&claim, &pid_file);
            return None;
        }
        remove_claimed(home, lock);
        return Some(format!(
            "pid {holder}, which held {}, is no longer running",
            lock.display()
        ));
    }
    if let Some(taker) = lock_taker(lock) {
        if alive(taker) {
            return None;
        }
        std::fs::rename(lock.join(format!("{CLAIM_PREFIX}{taker}")), &claim).ok()?;
        remove_claimed(home, lock);
        return Some(format!(
            "pid {taker} was killed while taking over {}",
            lock.display()
        ));
    }
    let age = std::fs::symlink_metadata(lock)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())?;
    if age < LOCK_STALE_AFTER {
        return None;
    }
    let how = format!(
        "{} had no pid file and was {} s old",
        lock.display(),
        age.as_secs()
    );
    if std::fs::remove_dir(lock).is_ok() {
        return Some(how);
    }
    let aside = unique_name(home, LOCK_ASIDE_PREFIX);
    std::fs::rename(lock, &aside).ok()?;
    if pid_in(&aside.join("pid")).is_none() && lock_taker(&aside).is_none() {
        let _ = std::fs::remove_dir_all(&aside);
        return Some(how);
    }
    // A live lock taken in between: put it back.
    if lock.exists() || std::fs::rename(&aside, lock).is_err() {
        let _ = std::fs::remove_dir_all(&aside);
    }
    None
}

/// Removes a lock this process has claimed or holds (nobody else changes it now): renamed aside, then removed. Twice
/// if need be: install.sh's mv may have just put its temp lock inside (see its try_lock).
fn remove_claimed(home: &Path, lock: &Path) {
    let aside = unique_name(home, LOCK_ASIDE_PREFIX);
    if std::fs::rename(lock, &aside).is_ok() && std::fs::remove_dir_all(&aside).is_err() {
        let _ = std::fs::remove_dir_all(&aside);
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let me = crate::sys::getpid();
        let home = dir_of(&self.dir).to_owned();
        for _ in 0..300 {
            if pid_in(&self.dir.join("pid")) == Some(me) {
                remove_claimed(&home, &self.dir);
                return;
            }
            // Not ours for the moment? A waiter that took this lock for a stale one holds its pid file, then puts it
            // back (maybe already: then the next look finds it).
            let claimed_ours = lock_taker(&self.dir)
                .is_some_and(|t| pid_in(&self.dir.join(format!("{CLAIM_PREFIX}{t}"))) == Some(me));
            if claimed_ours {
                std::thread::sleep(Duration::from_millis(10));
            } else if pid_in(&self.dir.join("pid")) != Some(me) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    thread_local! {
        /// Makes [`sync_dir`] fail on this thread: what happens after the commit point when the disk acts up.
        pub static FAIL_SYNC: Cell<bool> = const { Cell::new(false) };
    }

    fn quiet() -> crate::printer::Printer {
        crate::printer::Printer::new(
            crate::printer::Verbosity::Quiet,
            crate::printer::ColorChoice::Never,
            true,
        )
    }

    /// A pid that is certainly not running: a child that has exited and been reaped.
    fn dead_pid() -> i32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        pid
    }

    fn set_age(path: &Path, age: Duration) {
        let when = std::time::SystemTime::now() - age;
        std::fs::File::open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stale_locks_are_taken_over_at_once() {
        let printer = quiet();
        let no_wait = Duration::ZERO;
        let home = tempfile::tempdir().unwrap();
        let lock = home.path().join(LOCK_NAME);
        // A dead holder.
        std::fs::create_dir(&lock).unwrap();
        std::fs::write(lock.join("pid"), format!("{}\n", dead_pid())).unwrap();
        drop(InstallLock::acquire_within(home.path(), &printer, no_wait).unwrap());
        // No pid file (a killed installer of another protocol, or by hand), older than LOCK_STALE_AFTER: empty, or not.
        for content in [None, Some("junk")] {
            std::fs::create_dir(&lock).unwrap();
            if let Some(name) = content {
                std::fs::write(lock.join(name), "x").unwrap();
            }
            set_age(&lock, LOCK_STALE_AFTER + Duration::from_secs(1));
            drop(InstallLock::acquire_within(home.path(), &printer, no_wait).unwrap());
        }
        // A claimant killed mid-takeover: no pid file, its claim left inside.
        std::fs::create_dir(&lock).unwrap();
        std::fs::write(lock.join(format!("{CLAIM_PREFIX}{}", dead_pid())), "1\n").unwrap();
        set_age(&lock, LOCK_STALE_AFTER + Duration::from_secs(1));
        let held = InstallLock::acquire_within(home.path(), &printer, no_wait).unwrap();
        assert_eq!(pid_in(&lock.join("pid")), Some(crate::sys::getpid()));
        drop(held);
        assert_eq!(
            names(home.path()),
            Vec::<String>::new(),
            "nothing left behind"
        );
    }

    #[test]
    fn live_and_young_locks_are_waited_for_with_the_fix_in_the_hint() {
        let printer = quiet();
        let home = tempfile::tempdir().unwrap();
        let lock = home.path().join(LOCK_NAME);
        std::fs::create_dir(&lock).unwrap();
        // pid 1 is always alive.
        std::fs::write(lock.join("pid"), "1\n").unwrap();
        let err = InstallLock::acquire_within(home.path(), &printer, Duration::from_millis(150))
            .err()
            .unwrap();
        let err = err.downcast::<CliError>().unwrap();
        assert_eq!(err.kind, ErrorKind::Lock);
        assert!(
            err.message.contains("(pid 1) still holds"),
            "{}",
            err.message
        );
        let hint = err.hint.unwrap();
        assert!(
            hint.contains(&format!(
                "check: ps -p 1), remove the lock: rm -rf '{}'",
                lock.display()
            )),
            "{hint}"
        );
        // Mid-claim (a live waiter has renamed its pid file for a moment), and a young lock without a pid file.
        std::fs::rename(lock.join("pid"), lock.join(format!("{CLAIM_PREFIX}1"))).unwrap();
        let err = InstallLock::acquire_within(home.path(), &printer, Duration::from_millis(150))
            .err()
            .unwrap();
        assert_eq!(err.downcast::<CliError>().unwrap().kind, ErrorKind::Lock);
        std::fs::rename(lock.join(format!("{CLAIM_PREFIX}1")), lock.join("junk")).unwrap();
        let err = InstallLock::acquire_within(home.path(), &printer, Duration::from_millis(150))
            .err()
            .unwrap();
        let err = err.downcast::<CliError>().unwrap();
        assert_eq!(err.kind, ErrorKind::Lock);
        assert!(err.hint.unwrap().contains("rm -rf '"));
        assert!(lock.is_dir());
    }

    #[test]
    fn drop_removes_only_a_lock_that_is_still_ours() {
        let home = tempfile::tempdir().unwrap();
        let lock = home.path().join(LOCK_NAME);
        let held = InstallLock::acquire_within(home.path(), &quiet(), Duration::ZERO).unwrap();
        // Someone else's lock by now (e.g. removed by hand and taken by another install).
        std::fs::write(lock.join("pid"), "1\n").unwrap();
        drop(held);
        assert_eq!(pid_in(&lock.join("pid")), Some(1));
    }

    /// Many waiters find one stale lock at once: exactly one holds the lock at any time. (The former "remove it, then
    /// mkdir" let a slow waiter remove the lock a fast one had just made, and both went ahead.)
    #[test]
    fn concurrent_takeovers_never_both_hold_the_lock() {
        let home = tempfile::tempdir().unwrap();
        let lock = home.path().join(LOCK_NAME);
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        const WAITERS: usize = 6;
        const ROUNDS: usize = 1000; // the former protocol failed about one round in a hundred
        let dead = dead_pid();
        for _ in 0..ROUNDS {
            std::fs::create_dir(&lock).unwrap();
            std::fs::write(lock.join("pid"), format!("{dead}\n")).unwrap();
            let start = Arc::new(Barrier::new(WAITERS));
            let threads: Vec<_> = (0..WAITERS)
                .map(|_| {
                    let (home, start) = (home.path().to_owned(), start.clone());
                    let (inside, overlaps, held) = (inside.clone(), overlaps.clone(), held.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        // The threads share this process's pid, alive: a waiter that loses gives up at once.
                        if let Ok(lock) =
                            InstallLock::acquire_within(&home, &quiet(), Duration::ZERO)
                        {
                            if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            held.fetch_add(1, Ordering::SeqCst);
                            // Some work inside, as an install does: the slower waiters get to act meanwhile.
                            let scratch =
                                home.join(format!("work.{:?}", std::thread::current().id()));
                            for _ in 0..20 {
                                std::fs::write(&scratch, "x").unwrap();
                                std::fs::remove_file(&scratch).unwrap();
                            }
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(!lock.exists());
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        assert!(held.load(Ordering::SeqCst) >= ROUNDS);
        assert_eq!(
            names(home.path()),
            Vec::<String>::new(),
            "nothing left behind"
        );
    }

    #[test]
    fn leftovers_of_dead_pids_only_are_removed() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("bin");
        std::fs::create_dir(&dir).unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        for name in [
            format!(".breadboard.new.{dead}"),
            format!(".breadboard-upgrade.{dead}.tar.gz"),
            format!(".breadboard.previous.{dead}"),
            format!(".breadboard.new.{me}"),
            ".breadboard.new.1".into(),
            "breadboard.previous".into(),
        ] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        for name in [
            format!("install.lock.tmp.{dead}"),
            format!("install.lock.old.{dead}.3"),
            "install.lock.tmp.1".into(),
        ] {
            std::fs::create_dir(home.path().join(&name)).unwrap();
            std::fs::write(home.path().join(name).join("pid"), "1").unwrap();
        }
        clean_leftovers(home.path(), &dir);
        assert_eq!(
            names(&dir),
            [
                ".breadboard.new.1",
                &format!(".breadboard.new.{me}"),
                "breadboard.previous"
            ]
        );
        assert_eq!(names(home.path()), ["bin", "install.lock.tmp.1"]);
    }

    #[test]
    fn a_failed_sync_after_the_rename_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("breadboard");
        script(&exe, "echo 'breadboard 1.0.0'");
        let staged = TempFile::new(dir.path(), ".breadboard.new.", "");
        script(&staged.path, "echo 'breadboard 2.0.0'");
        FAIL_SYNC.with(|f| f.set(true));
        let warnings = replace(&exe, staged).unwrap();
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 2.0.0");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("is replaced, but flushing"),
            "{}",
            warnings[0]
        );
        assert!(!warnings[0].contains("not changed"));
        let warnings = swap_with_previous(&exe).unwrap();
        FAIL_SYNC.with(|f| f.set(false));
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 1.0.0");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(names(dir.path()), ["breadboard", "breadboard.previous"]);
    }

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
        assert!(replace(&exe, staged).unwrap().is_empty());
        assert_eq!(reported_version(&exe).unwrap(), "breadboard 2.0.0");
        assert_eq!(std::fs::read(previous_path(&exe)).unwrap(), old);
        assert!(swap_with_previous(&exe).unwrap().is_empty());
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
        // A malformed artifact whose checksum matched: the release's fault (exit 6), not a corrupted download (9).
        assert_eq!(err.downcast::<CliError>().unwrap().kind, ErrorKind::Source);
        let garbage = dir.path().join("garbage.tar.gz");
        std::fs::write(&garbage, b"not a gzip stream").unwrap();
        let err = extract_binary(&garbage, &dir.path().join("out3")).unwrap_err();
        assert_eq!(err.downcast::<CliError>().unwrap().kind, ErrorKind::Source);
        assert!(!dir.path().join("out3").exists());
    }
}
