//! The install lock, shared with install.sh: while it is held, nothing else installs, upgrades or rolls back the
//! binary, and what killed installs left behind can be removed ([`InstallLock::clean_leftovers`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::stage::{REPLACE_TEMP_PREFIX, STAGE_PREFIXES};
use crate::error::{CliError, ErrorKind};

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
    home: PathBuf,
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
    !matches!(crate::os::sys::kill(pid, 0), Ok(false))
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
                return Ok(InstallLock {
                    home: home.to_owned(),
                    dir,
                });
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
        let me = crate::os::sys::getpid();
        for _ in 0..300 {
            if pid_in(&self.dir.join("pid")) == Some(me) {
                remove_claimed(&self.home, &self.dir);
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

impl InstallLock {
    /// Removes what a killed upgrade or install left behind: staged files in the install dir `dir`, the lock's temp
    /// and aside directories in its home. Each name carries the pid that made it; only a dead pid's are removed (as
    /// install.sh's `clean_leftovers`). The self-replace crate's temp copy carries none: it only ever exists while an
    /// upgrade holds this lock, so any found now is a killed one's.
    pub(crate) fn clean_leftovers(&self, dir: &Path) {
        let places = [
            (
                self.home.as_path(),
                &[LOCK_TMP_PREFIX, LOCK_ASIDE_PREFIX][..],
            ),
            (dir, &STAGE_PREFIXES[..]),
        ];
        for (place, prefixes) in places {
            let Ok(entries) = std::fs::read_dir(place) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let dead = |pid: i32| pid != crate::os::sys::getpid() && !alive(pid);
                let leftover = prefixes
                    .iter()
                    .find_map(|p| name.strip_prefix(p))
                    .and_then(|rest| parse_pid(rest.split('.').next().unwrap_or("")))
                    .is_some_and(dead)
                    || (place == dir && name.starts_with(REPLACE_TEMP_PREFIX));
                if leftover {
                    let _ = remove_any(&entry.path());
                }
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

#[cfg(test)]
mod tests {
    use super::super::stage::tests::names;
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

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
        assert_eq!(pid_in(&lock.join("pid")), Some(crate::os::sys::getpid()));
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
            ".breadboard.__temp__Xy3kQz".into(),
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
        let lock = InstallLock::acquire_within(home.path(), &quiet(), Duration::ZERO).unwrap();
        lock.clean_leftovers(&dir);
        drop(lock);
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
}
