//! The Engine venv section: the installed engine's venv is complete, its engine answers with the pinned version and
//! a protocol this CLI speaks, and its dependencies are all there and consistent.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::compat;
use crate::paths::Paths;
use crate::venv::installer::{self, EngineIdentity};
use crate::venv::store::{Receipt, Store};

use super::{last_line, python, run_with_deadline, Finding, Repair, SLOW};

pub(super) const SECTION: &str = "Engine venv";

/// The checks that read files only: leftovers of interrupted installs, the current engine and its base Python.
pub(super) fn install_checks(paths: &Paths, store: &Store) -> Vec<Finding> {
    let mut out: Vec<Finding> = leftovers_check(paths, store).into_iter().collect();
    let Some(version) = store.current() else {
        out.push(
            Finding::error(
                SECTION,
                "venv.current",
                "no engine is installed",
                paths.current_link().display().to_string(),
            )
            .fix("breadboard engine install"),
        );
        return out;
    };
    match current_receipt(store, &version) {
        Err((title, detail)) => {
            out.push(Finding::error(SECTION, "venv.current", title, detail).rebuilds(&version))
        }
        Ok(receipt) => {
            out.push(Finding::ok(
                SECTION,
                "venv.current",
                format!("engine {version} is installed"),
                store.dir(&version).display().to_string(),
            ));
            out.extend(
                receipt.map(|r| {
                    python::base_python_check(&r.python.path, &r.python.version, &version)
                }),
            );
        }
    }
    out
}

fn leftovers_check(paths: &Paths, store: &Store) -> Option<Finding> {
    let leftovers: Vec<String> = store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.complete)
        .map(|v| v.version)
        .collect();
    (!leftovers.is_empty()).then(|| {
        Finding::warn(
            SECTION,
            "venv.leftovers",
            "half-installed engine versions are left over",
            format!(
                "{} under {} (an install was interrupted)",
                leftovers.join(", "),
                paths.versions_dir().display()
            ),
        )
        .fix("breadboard engine doctor --fix")
        .repair(Repair::CleanLeftovers)
    })
}

/// The receipt of the current engine when its venv is complete and healthy, else why not (a title and a detail).
fn current_receipt(store: &Store, version: &str) -> Result<Option<Receipt>, (String, String)> {
    if !store.is_complete(version) {
        return Err((
            format!("the current engine {version} has no receipt"),
            format!("{} is incomplete", store.dir(version).display()),
        ));
    }
    let receipt = store.read_receipt(version).map_err(|e| {
        (
            format!("the engine {version} receipt is corrupt"),
            format!("{e:#}"),
        )
    })?;
    store
        .health(version)
        .map_err(|why| (format!("the engine {version} venv is broken"), why))?;
    Ok(receipt)
}

pub(super) fn venv_python(store: &Store, version: &str) -> PathBuf {
    store.dir(version).join("bin").join("python")
}

/// The engine in the venv, asked its version: it starts, it is the pinned one, and speaks this CLI's protocol.
pub(super) fn engine_identity_check(store: &Store) -> Option<Finding> {
    let version = store.current()?;
    let python = venv_python(store, &version);
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "breadboard_engine", "version", "--json"]);
    let broken = |title: &str, detail: String| {
        Finding::error(SECTION, "venv.engine_version", title, detail).rebuilds(&version)
    };
    Some(match run_with_deadline(cmd, SLOW) {
        Ok(output) if output.status.success() => {
            match serde_json::from_slice::<EngineIdentity>(&output.stdout) {
                Ok(id) => identity_finding(&id, &version, &python),
                Err(e) => broken(
                    "the engine's version document does not parse",
                    e.to_string(),
                ),
            }
        }
        Ok(output) => broken(
            "the engine does not start in its venv",
            format!(
                "`python -m breadboard_engine version` exited with {}: {}",
                output.status,
                last_line(&output.stderr)
            ),
        ),
        Err(why) => broken("the engine's Python does not run", why),
    })
}

fn identity_finding(id: &EngineIdentity, version: &str, python: &Path) -> Finding {
    if compat::parse_engine_version(&id.engine_version) != compat::parse_engine_version(version) {
        return Finding::error(
            SECTION,
            "venv.engine_version",
            "the installed engine is not the pinned version",
            format!(
                "the venv holds {} but its receipt pins {version}",
                id.engine_version
            ),
        )
        .rebuilds(version);
    }
    if !compat::protocol_compatible(&id.protocol_version) {
        return Finding::error(
            SECTION,
            "venv.protocol",
            format!("engine {version} speaks protocol {}", id.protocol_version),
            format!("this CLI speaks {}", compat::PROTOCOL_VERSION),
        )
        .fix("breadboard engine install   # the newest engine this CLI supports");
    }
    Finding::ok(
        SECTION,
        "venv.engine_version",
        format!(
            "breadboard-engine {} runs, protocol {}",
            id.engine_version, id.protocol_version
        ),
        python.display().to_string(),
    )
}

/// The venv's dependencies: the engine's modules are there, and `pip check` finds no broken requirement.
pub(super) fn dependency_check(store: &Store, version: &str) -> Finding {
    let python = venv_python(store, version);
    // pip check reads only metadata: a package deleted with its dist-info left behind passes it, and then the
    // engine fails to import. Looking the engine's modules up (without importing them) costs one Python start.
    if let Some(missing) = missing_modules(&python) {
        return Finding::error(
            SECTION,
            "venv.pip_check",
            format!("the venv is missing modules the engine imports: {missing}"),
            "their package metadata may still be there, so `pip check` alone would not see it",
        )
        .rebuilds(version);
    }
    let Some(cmd) = requirements_check_command(store, version, &python) else {
        return Finding::warn(
            SECTION,
            "venv.pip_check",
            "dependency check skipped (its modules are present)",
            "the venv has no pip and uv is not available to check its requirements",
        );
    };
    match run_with_deadline(cmd, SLOW) {
        Ok(out) if out.status.success() => Finding::ok(
            SECTION,
            "venv.pip_check",
            "dependencies are consistent",
            "pip check: no broken requirements",
        ),
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Finding::error(
                SECTION,
                "venv.pip_check",
                "the venv has broken requirements",
                text.trim().lines().take(5).collect::<Vec<_>>().join("; "),
            )
            .rebuilds(version)
        }
        Err(why) => Finding::warn(
            SECTION,
            "venv.pip_check",
            "dependency check did not finish",
            why,
        ),
    }
}

/// uv's check takes milliseconds where pip's takes over a second; uv-built venvs have no pip at all.
fn requirements_check_command(store: &Store, version: &str, python: &Path) -> Option<Command> {
    if let Some(uv) = installer::installed_uv(&store.paths().home) {
        let mut c = Command::new(uv);
        c.args(["pip", "check", "--python"]).arg(python);
        return Some(c);
    }
    store
        .dir(version)
        .join("bin")
        .join("pip")
        .exists()
        .then(|| {
            let mut c = Command::new(python);
            c.args(["-m", "pip", "check", "--disable-pip-version-check"]);
            c
        })
}

/// The top-level modules the engine imports that its venv cannot find, space-separated; `None` when all are there
/// (or the probe itself could not run: the engine-version check reports a Python that does not run).
fn missing_modules(python: &Path) -> Option<String> {
    const MODULES: [&str; 6] = [
        "breadboard_engine",
        "fastapi",
        "uvicorn",
        "pydantic",
        "ray",
        "httpx",
    ];
    let mut cmd = Command::new(python);
    cmd.args([
        "-I",
        "-c",
        "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))",
    ])
    .args(MODULES);
    let out = run_with_deadline(cmd, SLOW)
        .ok()
        .filter(|o| o.status.success())?;
    let missing = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!missing.is_empty()).then_some(missing)
}
