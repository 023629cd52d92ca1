//! `breadboard engine doctor`: every way the setup can be broken, found and explained, each with the command that
//! fixes it. Anchors: flutter doctor (sections, [✓] [!] [✗], a summary), brew doctor (the fix on every finding),
//! rustup check (exit codes scripts rely on). Checks never change anything; repairs are separate and opt-in (`--fix`).
//!
//! Cheap checks run first and every probe that runs a process has a deadline, so a hung interpreter or engine can
//! never hang doctor. A broken setup (corrupt config, dangling venv) is a finding, never a crash of doctor itself.
//!
//! One file per section of the report, in its order: `cli` (this binary), `home` with `privacy` and `filesystem`
//! (BREADBOARD_HOME), `config`, `python` (uv, the base interpreter), `venv` (the installed engine), `ray`, and
//! `runtime` with `leftover_processes` (the running or dead engine). This file holds what they share and the order
//! they run in.

mod cli;
mod config;
mod filesystem;
mod home;
mod leftover_processes;
mod privacy;
mod python;
mod ray;
mod repair;
mod runtime;
mod venv;

pub(crate) use repair::repair;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::paths::Paths;
use crate::venv::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Warn,
    Error,
}

/// A safe repair `--fix` may perform for a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Repair {
    /// chmod 700 a directory, 600 a file.
    ChmodPrivate(PathBuf),
    /// chmod go-rwx each path (owner bits kept: Ray's executables stay executable).
    MakePrivate(Vec<PathBuf>),
    CleanLeftovers,
    /// Clean up after a dead engine: its registration (`instance_id`), or a registration that does not parse
    /// (`None`). Re-checked under the control lock before anything is removed: an engine may have started since.
    RemoveStale {
        instance_id: Option<String>,
    },
    RebuildVenv {
        version: String,
    },
    /// SIGKILL the processes of an earlier engine of this home (found by their engine mark again, under the lock).
    EndLeftovers,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub id: &'static str,
    pub status: Status,
    pub title: String,
    pub detail: String,
    pub fix: Option<String>,
    #[serde(skip)]
    pub section: &'static str,
    #[serde(skip)]
    pub repair: Option<Repair>,
}

impl Finding {
    pub(crate) fn ok(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            id,
            status: Status::Ok,
            title: title.into(),
            detail: detail.into(),
            fix: None,
            section,
            repair: None,
        }
    }

    pub(crate) fn warn(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Warn,
            ..Finding::ok(section, id, title, detail)
        }
    }

    pub(crate) fn error(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Error,
            ..Finding::ok(section, id, title, detail)
        }
    }

    pub(crate) fn fix(mut self, command: impl Into<String>) -> Self {
        self.fix = Some(command.into());
        self
    }

    pub(crate) fn repair(mut self, repair: Repair) -> Self {
        self.repair = Some(repair);
        self
    }

    /// Every way an installed engine's venv goes wrong has the same cure: rebuild it from its receipt, by hand or
    /// with `--fix`.
    pub(crate) fn rebuilds(self, version: &str) -> Self {
        self.fix(rebuild_command(version))
            .repair(Repair::RebuildVenv {
                version: version.to_owned(),
            })
    }
}

fn rebuild_command(version: &str) -> String {
    format!("breadboard engine install --force --version {version}")
}

/// Deadlines for the probes that run processes.
pub(crate) const QUICK: Duration = Duration::from_secs(5);
pub(crate) const SLOW: Duration = Duration::from_secs(30);

/// Runs `cmd` with stdin closed and output captured, killing it at the deadline.
pub(crate) fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run it: {e}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe while we wait.
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it did not finish within {} s", deadline.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("could not wait for it: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// The last non-empty line of a process's output: where Python puts the error that ended it.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Everything the checks look at, gathered once.
pub(crate) struct Setup<'a> {
    pub paths: &'a Paths,
    /// `Err` carries the parse error (with file, line and column).
    pub config: Result<Config, String>,
    /// Every setting as the commands resolve it (no flags; the defaults where the config does not parse).
    pub settings: crate::settings::Settings,
}

/// The report's sections, in the order they are printed; each file names its own.
const SECTIONS: [&str; 7] = [
    cli::SECTION,
    home::SECTION,
    config::SECTION,
    python::SECTION,
    venv::SECTION,
    ray::SECTION,
    runtime::SECTION,
];

/// Every check, grouped by section. The instance is probed first (milliseconds): when the engine runs and reports
/// its Ray, that answer replaces importing Ray in a second process. The slow probes (each a Python process with a
/// deadline) run in parallel, so a healthy setup with its engine running is checked in well under a second; with the
/// engine stopped, importing Ray (most of a second by itself) sets the pace.
pub(crate) fn all_checks(setup: &Setup) -> Vec<Finding> {
    let runtime = runtime::runtime_checks(setup);
    let engine_has_ray = runtime
        .iter()
        .any(|f| f.id == "ray.engine" && f.status == Status::Ok);
    let mut out = vec![cli::version_check(setup.paths)];
    out.extend(home::checks(setup.paths));
    out.push(config::check(setup));
    out.push(config::origins(setup));
    out.push(python::uv_check(setup));
    let store = Store::new(setup.paths);
    let installed = venv::install_checks(setup.paths, &store);
    let usable = installed
        .iter()
        .any(|f| f.id == "venv.current" && f.status == Status::Ok);
    out.extend(installed);
    if usable {
        out.extend(venv_probes(setup, &store, !engine_has_ray));
    }
    out.extend(runtime);
    let rank = |f: &Finding| {
        SECTIONS
            .iter()
            .position(|s| *s == f.section)
            .unwrap_or(SECTIONS.len())
    };
    out.sort_by_key(rank); // stable: keeps each section's own order
    out
}

/// The checks that run the venv's Python, each a process of its own: side by side, they take as long as the slowest.
fn venv_probes(setup: &Setup, store: &Store, import_ray: bool) -> Vec<Finding> {
    std::thread::scope(|scope| {
        let identity = scope.spawn(|| venv::engine_identity_check(store));
        let deps = scope.spawn(|| store.current().map(|v| venv::dependency_check(store, &v)));
        let ray = scope.spawn(|| ray::venv_checks(setup, store, import_ray));
        let mut out: Vec<Finding> = identity.join().ok().flatten().into_iter().collect();
        out.extend(deps.join().ok().flatten());
        out.extend(ray.join().unwrap_or_default());
        out
    })
}
