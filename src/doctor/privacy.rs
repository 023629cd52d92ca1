//! The Home section's privacy check: which of the home's files other local users can reach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::paths::Paths;

use super::home::SECTION;
use super::{Finding, Repair};

/// At most this many entries are looked at under `data/` (Ray's temp dir can hold many): enough for every file a
/// home normally holds, and a bound on doctor's time.
const PRIVACY_SCAN_LIMIT: usize = 20_000;

/// Paths under the home that hold user data or runtime sockets and that other users can actually reach and read,
/// write or traverse: `data/` with everything in it (the session index and its `-wal`/`-shm`, each session's
/// `events.jsonl`, Ray's temp dir and sockets), `logs/` and its files, `run/`'s files (the run directory itself, the
/// token and the registration have their own findings), and config.toml when an index URL in it carries credentials.
/// A directory others cannot traverse closes everything below it, so the walk stops there: Ray makes its own session
/// directories 0777 inside the engine's private `data/ray`, and an old 0644 file in a 0700 `data/` is unreachable.
/// The home itself counts only when others can write to it (they could swap `data/` or `run/`): an open but
/// read-only home shows names, nothing private. Symlinks are not followed. Returns the too-open paths with their
/// modes, and how many entries were looked at.
pub(crate) fn too_open(paths: &Paths) -> (Vec<(PathBuf, u32)>, usize) {
    let mut scan = Scan::default();
    if !scan.home(&paths.home) {
        return (scan.open, scan.seen);
    }
    if config_has_credentials(&paths.config_file()) {
        scan.look(&paths.config_file());
    }
    let skip = [paths.token_file(), paths.registration()];
    for (dir, recurse) in [
        (paths.data_dir(), true),
        (paths.logs_dir(), false),
        (paths.run_dir(), false),
    ] {
        // The run directory's own mode is `home.run_dir`'s finding; only whether others can enter it counts here.
        let reachable = if dir == paths.run_dir() {
            std::fs::symlink_metadata(&dir).is_ok_and(|m| {
                m.is_dir() && !m.file_type().is_symlink() && m.permissions().mode() & 0o011 != 0
            })
        } else {
            scan.look(&dir)
        };
        if reachable && !scan.walk(dir, recurse, &skip) {
            break;
        }
    }
    (scan.open, scan.seen)
}

/// What the walk has found so far: the too-open paths with their modes, and how many entries it looked at.
#[derive(Default)]
struct Scan {
    open: Vec<(PathBuf, u32)>,
    seen: usize,
}

impl Scan {
    /// Records the home when others can write to it; true when they can traverse it (so anything below is reachable).
    fn home(&mut self, home: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(home) else {
            return false;
        };
        self.seen += 1;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            self.open.push((home.to_owned(), mode));
        }
        mode & 0o011 != 0
    }

    /// Records `path` when others have any access to it; true when it is a directory others can traverse.
    fn look(&mut self, path: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        self.seen += 1;
        if meta.file_type().is_symlink() {
            return false;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            self.open.push((path.to_owned(), mode));
        }
        meta.is_dir() && mode & 0o011 != 0
    }

    /// Looks at `dir`'s entries, and with `recurse` below every directory others can traverse. False when the scan
    /// limit stopped it (nothing more is looked at then).
    fn walk(&mut self, dir: PathBuf, recurse: bool, skip: &[PathBuf]) -> bool {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                if self.seen >= PRIVACY_SCAN_LIMIT {
                    return false;
                }
                let path = entry.path();
                if skip.contains(&path) {
                    continue;
                }
                if self.look(&path) && recurse {
                    stack.push(path);
                }
            }
        }
        true
    }
}

/// A URL with a user part (`https://user:token@host/...`): config.toml then holds a secret.
fn config_has_credentials(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.split("://").skip(1).any(|rest| {
            let authority = rest.split(['/', '"', '\'', ' ']).next().unwrap_or_default();
            authority.contains('@')
        })
    })
}

pub(super) fn check(paths: &Paths) -> Finding {
    let (open, seen) = too_open(paths);
    if open.is_empty() {
        return Finding::ok(
            SECTION,
            "home.private",
            "session data, logs and runtime files are private",
            format!(
                "{} entries under {} checked{}",
                seen,
                paths.home.display(),
                if seen >= PRIVACY_SCAN_LIMIT {
                    " (the first ones only)"
                } else {
                    ""
                }
            ),
        );
    }
    Finding::error(
        SECTION,
        "home.private",
        "session data or runtime files are open to other users",
        format!(
            "other local users can read or change them (prompts, session history, Ray's sockets): {}",
            listed(&open)
        ),
    )
    .fix(format!(
        "breadboard engine doctor --fix   # or: chmod go-w {} && chmod -R go-rwx {} {} {}",
        paths.home.display(),
        paths.data_dir().display(),
        paths.logs_dir().display(),
        paths.run_dir().display()
    ))
    .repair(Repair::MakePrivate(open.into_iter().map(|(p, _)| p).collect()))
}

/// The first few paths with their modes: enough to see what is wrong, short enough to read.
fn listed(open: &[(PathBuf, u32)]) -> String {
    const SHOWN: usize = 8;
    let mut listed: Vec<String> = open
        .iter()
        .take(SHOWN)
        .map(|(p, mode)| format!("{} ({mode:o})", p.display()))
        .collect();
    if open.len() > SHOWN {
        listed.push(format!("and {} more", open.len() - SHOWN));
    }
    listed.join(", ")
}
