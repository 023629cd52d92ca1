//! The Python section: the uv that installs (and checks) engines, and the base interpreter the engine's venv uses.

use std::path::Path;

use crate::venv::{installer, python};

use super::{rebuild_command, Finding, Setup};

pub(super) const SECTION: &str = "Python";

pub(super) fn uv_check(setup: &Setup) -> Finding {
    if let Some(uv) = installer::find_uv() {
        return Finding::ok(
            SECTION,
            "tools.uv",
            "uv is available",
            uv.display().to_string(),
        );
    }
    let pinned = crate::venv::uv::uv_path(&setup.paths.home);
    if pinned.is_file() {
        return Finding::ok(
            SECTION,
            "tools.uv",
            "uv is available (the pinned one engine install set up)",
            pinned.display().to_string(),
        );
    }
    // The next install sets up the pinned uv by itself; only a configured pip keeps installs slow.
    let installer = &setup.settings.installer;
    if let Ok(Some(crate::venv::store::InstallerKind::Pip)) = installer.get() {
        return Finding::warn(
            SECTION,
            "tools.uv",
            "installs use pip (configured), much slower than uv",
            format!("the installer is pip ({})", installer.origin),
        )
        .fix("breadboard engine install --installer uv   # sets up a pinned uv if none is found");
    }
    Finding::ok(
        SECTION,
        "tools.uv",
        format!(
            "no uv found: the next engine install sets up uv {}",
            crate::venv::uv::UV_VERSION
        ),
        "looked in BREADBOARD_UV, PATH and the home's tools/",
    )
}

/// The interpreter the venv of engine `version` was built on (`path`, at version `pinned` then): a venv runs on it,
/// so it must still be there and new enough; a patch upgrade of it keeps the venv working.
pub(super) fn base_python_check(path: &Path, pinned: &str, version: &str) -> Finding {
    let rebuild = rebuild_command(version);
    if std::fs::symlink_metadata(path).is_ok() && std::fs::metadata(path).is_err() {
        return Finding::error(
            SECTION,
            "python.interpreter",
            "the engine's base Python is a dangling link",
            format!(
                "{} points nowhere; was that Python removed?",
                path.display()
            ),
        )
        .fix(format!("{rebuild} --python /path/to/python3"));
    }
    let found = match python::query(path) {
        Ok(found) => found,
        Err(why) => {
            return Finding::error(
                SECTION,
                "python.interpreter",
                "the engine's base Python does not run",
                format!("{}: {why}", path.display()),
            )
            .fix(format!("{rebuild} --python /path/to/python3"))
        }
    };
    let in_range = python::parse_minor(&found.version).is_some_and(|v| v >= python::MIN_PYTHON);
    if !in_range {
        Finding::error(
            SECTION,
            "python.interpreter",
            format!("Python {} is too old", found.version),
            format!("{} (need 3.10 or newer)", path.display()),
        )
        .fix(format!("{rebuild} --python /path/to/python3.12"))
    } else if found.version != pinned {
        Finding::ok(
            SECTION,
            "python.interpreter",
            format!("Python {} (installed with {pinned})", found.version),
            format!(
                "{}: a patch upgrade, the venv keeps working",
                path.display()
            ),
        )
    } else {
        Finding::ok(
            SECTION,
            "python.interpreter",
            format!("Python {}", found.version),
            path.display().to_string(),
        )
    }
}
