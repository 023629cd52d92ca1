//! The Home section: BREADBOARD_HOME exists and is writable, its run directory is private, the session index is
//! readable; who can reach its files (`privacy`) and the filesystem under it (`filesystem`) are checked beside.

use std::path::Path;

use crate::paths::Paths;

use super::{filesystem, privacy, Finding, Repair};

pub(super) const SECTION: &str = "Home";

/// Without a home (or with a file in its place) nothing below it can be checked.
pub(super) fn checks(paths: &Paths) -> Vec<Finding> {
    let home = &paths.home;
    if !home.exists() {
        return vec![Finding::warn(
            SECTION,
            "home.dirs",
            "BREADBOARD_HOME does not exist yet",
            home.display().to_string(),
        )
        .fix("breadboard engine install")];
    }
    if !home.is_dir() {
        return vec![not_a_dir(home)];
    }
    let mut out = vec![writable_check(home)];
    out.extend(run_dir_check(paths));
    out.push(privacy::check(paths));
    out.push(index_check(paths));
    out.push(filesystem::local_check(home));
    out.push(filesystem::disk_check(home));
    out
}

fn not_a_dir(home: &Path) -> Finding {
    let e = crate::paths::home_not_a_dir(home);
    let f = Finding::error(
        SECTION,
        "home.dirs",
        e.message.clone(),
        home.display().to_string(),
    );
    match e.hint {
        Some(h) => f.fix(h),
        None => f,
    }
}

/// Writes (and removes) a probe file: permission bits alone miss read-only mounts and ACLs.
fn writable_check(home: &Path) -> Finding {
    let probe = home.join(format!(".doctor-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Finding::ok(
                SECTION,
                "home.dirs",
                "BREADBOARD_HOME is writable",
                home.display().to_string(),
            )
        }
        Err(e) => Finding::error(
            SECTION,
            "home.dirs",
            "BREADBOARD_HOME is not writable",
            format!("{}: {e}", home.display()),
        )
        .fix(crate::error::io_hint(&e).map_or_else(
            || format!("chown -R \"$(id -un)\" {}", home.display()),
            str::to_owned,
        )),
    }
}

/// The run directory holds the engine's token and locks: ours alone, or nothing in it can be trusted.
fn run_dir_check(paths: &Paths) -> Option<Finding> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let run = paths.run_dir();
    let meta = std::fs::metadata(&run).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let me = crate::os::sys::getuid();
    Some(if meta.uid() != me {
        // Another user's run dir: its locks and token are not ours to trust (e.g. a home made by `sudo`).
        Finding::error(
            SECTION,
            "home.run_dir",
            "the run directory belongs to another user",
            format!(
                "{} is owned by uid {}, and you are uid {me}",
                run.display(),
                meta.uid()
            ),
        )
        .fix(format!(
            "sudo chown -R \"$(id -un)\" {}",
            paths.home.display()
        ))
    } else if mode & 0o077 != 0 {
        Finding::error(
            SECTION,
            "home.run_dir",
            "the run directory is readable by others",
            format!(
                "{} has mode {mode:o}; it holds the engine's token (want 700)",
                run.display()
            ),
        )
        .fix(format!("chmod 700 {}", run.display()))
        .repair(Repair::ChmodPrivate(run.clone()))
    } else {
        Finding::ok(
            SECTION,
            "home.run_dir",
            "the run directory is private",
            format!("{} (700)", run.display()),
        )
    })
}

/// The session index is a cache of the event logs: the engine sets an unreadable one aside and rebuilds it when it
/// starts, so what doctor finds here is a warning, never data loss.
fn index_check(paths: &Paths) -> Finding {
    let data = paths.data_dir();
    let state = crate::session_index::inspect(&data);
    let index = data.join(crate::session_index::INDEX_FILE);
    if let Some(why) = state.unreadable {
        return Finding::warn(
            SECTION,
            "data.index",
            "the session index is unreadable",
            format!(
                "{} {why}; the engine sets it aside and rebuilds it from the session logs when it starts (no \
                 session is lost, but rebuilt ones come back without their metadata)",
                index.display()
            ),
        )
        .fix("breadboard engine restart");
    }
    if let Some(newest) = state.set_aside.last() {
        return Finding::warn(
            SECTION,
            "data.index",
            "the engine rebuilt an unreadable session index",
            format!(
                "{} earlier index(es) kept, the newest at {}; the sessions were rebuilt from their logs",
                state.set_aside.len(),
                newest.display()
            ),
        )
        .fix(format!(
            "rm {}/{}.corrupt-*   # once you no longer need them",
            data.display(),
            crate::session_index::INDEX_FILE
        ));
    }
    Finding::ok(
        SECTION,
        "data.index",
        "the session index is readable",
        index.display().to_string(),
    )
}
