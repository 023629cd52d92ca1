//! The two installer back ends. Both build the same venv: a venv from the chosen base interpreter with
//! `breadboard-engine==V` and its dependencies installed from the same source flags.
//!
//! - uv:  `uv venv --python <py> <dir>`, then `uv pip install --python <dir>/bin/python <req> <source flags>`
//! - pip: `<py> -m venv <dir>`, then `<dir>/bin/python -m pip install <req> <source flags>`
//!
//! Child output never reaches stdout: it goes to `logs/install-<version>.log` (shown on failure), or to stderr with
//! `-v`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;

use super::index::{EngineSource, PYPI_SIMPLE};
use super::store::InstallerKind;
use super::uv as pinned_uv;
use crate::compat;
use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;

/// The `uv` to use: `BREADBOARD_UV` (the `engine.uv` setting), else `uv` on PATH.
pub(crate) fn find_uv() -> Option<PathBuf> {
    match uv_setting() {
        Some(path) => Some(path).filter(|p| p.is_file()),
        None => which::which("uv").ok(),
    }
}

fn uv_setting() -> Option<PathBuf> {
    let settings = crate::settings::without_flags(&Default::default());
    settings.uv.get().ok().cloned().flatten()
}

/// The uv a check may run: [`find_uv`], else the one `engine install` set up under `home` (never fetched here).
pub(crate) fn installed_uv(home: &Path) -> Option<PathBuf> {
    find_uv().or_else(|| Some(pinned_uv::uv_path(home)).filter(|p| p.is_file()))
}

pub(crate) struct Installer {
    pub kind: InstallerKind,
    uv: Option<PathBuf>,
    /// No uv was found and pip was not asked for: [`Installer::bootstrap_uv`] fetches the pinned one.
    wants_bootstrap: bool,
    forced: Option<InstallerKind>,
    log: PathBuf,
    verbose: bool,
}

impl Installer {
    /// `forced` comes from `--installer`/`BREADBOARD_INSTALLER`/config; otherwise uv when found, else pip until
    /// [`Installer::bootstrap_uv`] sets up the pinned uv.
    pub(crate) fn choose(
        forced: Option<InstallerKind>,
        log: PathBuf,
        printer: &Printer,
    ) -> anyhow::Result<Installer> {
        let uv = find_uv();
        if let (None, Some(set)) = (&uv, uv_setting()) {
            printer.warn(&format!(
                "{}={} is not a file; ignoring it",
                env_vars::BREADBOARD_UV,
                set.display()
            ));
        }
        let kind = match (forced, &uv) {
            (Some(kind), _) => kind,
            (None, Some(_)) => InstallerKind::Uv,
            (None, None) => InstallerKind::Pip,
        };
        if let (InstallerKind::Uv, Some(uv)) = (kind, &uv) {
            printer.debug(&format!("installer: {}", uv.display()));
        }
        Ok(Installer {
            kind,
            wants_bootstrap: uv.is_none() && forced != Some(InstallerKind::Pip),
            uv,
            forced,
            log,
            verbose: printer.verbose(),
        })
    }

    /// With no uv in view, sets up the pinned uv under `home` from the engine's own package source (see
    /// [`uv_bootstrap`]). Called after the interpreter is chosen, so Python discovery is the same with or without
    /// it. When it cannot be set up, pip is used with a warning, unless uv itself was asked for.
    pub(crate) fn bootstrap_uv(
        &mut self,
        home: &Path,
        source: &EngineSource,
        printer: &Printer,
    ) -> anyhow::Result<()> {
        if !self.wants_bootstrap {
            return Ok(());
        }
        if !pinned_uv::uv_path(home).is_file() {
            printer.info(&format!(
                "no uv found: setting up uv {} from {} (once; --installer pip skips it)",
                pinned_uv::UV_VERSION,
                source.describe()
            ));
        }
        match pinned_uv::ensure(home, source) {
            Ok(path) => {
                printer.debug(&format!("installer: {}", path.display()));
                self.uv = Some(path);
                self.kind = InstallerKind::Uv;
                Ok(())
            }
            Err(e) if self.forced == Some(InstallerKind::Uv) => Err(CliError::new(
                ErrorKind::Failure,
                format!(
                    "the uv installer was requested but uv was not found, and uv {} could not be set up: {e:#}",
                    pinned_uv::UV_VERSION
                ),
            )
            .hint(format!(
                "install uv (https://docs.astral.sh/uv/), point {} at it, or use --installer pip",
                env_vars::BREADBOARD_UV
            ))
            .into()),
            Err(e) => {
                printer.warn(&format!(
                    "could not set up uv {}: {e:#}; installing with pip instead (slower)",
                    pinned_uv::UV_VERSION
                ));
                Ok(())
            }
        }
    }

    pub(crate) fn uv(&self) -> Option<&Path> {
        self.uv.as_deref()
    }

    pub(crate) fn create_venv(&self, python: &Path, dir: &Path) -> anyhow::Result<()> {
        let mut cmd = match self.kind {
            InstallerKind::Uv => {
                let mut c = Command::new(self.uv.as_deref().context("uv not found")?);
                c.arg("venv").arg("--python").arg(python).arg(dir);
                c
            }
            InstallerKind::Pip => {
                let mut c = Command::new(python);
                c.args(["-m", "venv"]).arg(dir);
                c
            }
        };
        self.run(&mut cmd, "create the venv")
    }

    /// Installs `requirement` (`breadboard-engine==V`, or a local path) into the venv at `dir`.
    pub(crate) fn install(
        &self,
        dir: &Path,
        requirement: &str,
        source: &EngineSource,
    ) -> anyhow::Result<()> {
        let venv_python = dir.join("bin").join("python");
        let mut cmd = match self.kind {
            InstallerKind::Uv => {
                let mut c = Command::new(self.uv.as_deref().context("uv not found")?);
                c.args(["pip", "install", "--python"]).arg(&venv_python);
                c
            }
            InstallerKind::Pip => {
                let mut c = Command::new(&venv_python);
                c.args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ]);
                c
            }
        };
        cmd.arg(requirement);
        if source.offline() {
            cmd.arg("--no-index");
        } else {
            // Always explicit, so the receipt's source is what was really used, whatever PIP_INDEX_URL/UV_INDEX_URL say.
            cmd.arg("--index-url")
                .arg(source.index_url.as_deref().unwrap_or(PYPI_SIMPLE));
            for url in &source.extra_index_urls {
                cmd.arg("--extra-index-url").arg(url);
            }
        }
        if let Some(links) = &source.find_links {
            cmd.arg("--find-links").arg(links);
        }
        self.run(&mut cmd, "install the engine")
    }

    fn run(&self, cmd: &mut Command, what: &str) -> anyhow::Result<()> {
        cmd.stdin(Stdio::null());
        let log = if self.verbose {
            // Child stdout would mix with our results: send both streams to our stderr.
            let err = std::io::stderr();
            let fd = std::os::fd::AsFd::as_fd(&err).try_clone_to_owned()?;
            cmd.stdout(Stdio::from(fd)).stderr(Stdio::inherit());
            None
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .mode(0o600)
                .open(&self.log)
                .with_context(|| format!("could not open {}", self.log.display()))?;
            let _ = writeln!(file, "$ {}", display_cmd(cmd));
            let start = file.stream_position().unwrap_or(0);
            cmd.stdout(file.try_clone()?).stderr(file.try_clone()?);
            Some((file, start))
        };
        die_with_parent(cmd);
        let status = cmd
            .status()
            .with_context(|| format!("could not run {:?}", cmd.get_program()))?;
        if status.success() {
            return Ok(());
        }
        let tail = match log {
            Some((mut file, start)) => tail_of(&mut file, start),
            None => String::new(),
        };
        let mut message = format!(
            "could not {what}: `{}` exited with {status}",
            display_cmd(cmd)
        );
        if !tail.is_empty() {
            message.push_str(&format!("; its last output:\n{tail}"));
        }
        Err(CliError::new(ErrorKind::Failure, message)
            .hint(if self.verbose {
                "the installer's output is above".to_owned()
            } else {
                format!("full log: {}", self.log.display())
            })
            .into())
    }
}

fn display_cmd(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail_of(file: &mut File, start: u64) -> String {
    let mut text = String::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(15);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Children die with the CLI: after `kill -9` of breadboard an orphaned uv/pip would keep writing into a version dir
/// that the next run deletes as a leftover.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; this is the documented use of
        // pre_exec. PR_SET_PDEATHSIG fires when the forking thread exits, and commands run on the main thread.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EngineIdentity {
    pub engine_version: String,
    pub protocol_version: String,
}

/// Runs `<venv>/bin/python -m breadboard_engine version --json` and checks version and protocol before the install is
/// committed.
pub(crate) fn validate(dir: &Path, expected: &str) -> anyhow::Result<EngineIdentity> {
    let python = dir.join("bin").join("python");
    let invalid = |why: String| -> anyhow::Error {
        CliError::new(ErrorKind::Validation, format!("the new engine venv {} failed validation: {why}", dir.display()))
            .hint("re-run the install; if it keeps failing, report it with the output of `breadboard engine install -v`")
            .into()
    };
    let output = Command::new(&python)
        .args(["-m", "breadboard_engine", "version", "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| invalid(format!("could not run {}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(invalid(format!(
            "`python -m breadboard_engine version --json` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let identity: EngineIdentity = serde_json::from_slice(&output.stdout)
        .map_err(|e| invalid(format!("its version document does not parse: {e}")))?;
    if compat::parse_engine_version(&identity.engine_version)
        != compat::parse_engine_version(expected)
    {
        return Err(invalid(format!(
            "it reports engine {}, expected {expected}",
            identity.engine_version
        )));
    }
    if !compat::protocol_compatible(&identity.protocol_version) {
        return Err(invalid(format!(
            "it speaks protocol {}, this CLI speaks {}",
            identity.protocol_version,
            compat::PROTOCOL_VERSION
        )));
    }
    Ok(identity)
}
