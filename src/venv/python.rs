//! Finding a Python interpreter for engine venvs and asking it its version.
//!
//! The path is kept exactly as found (never canonicalised): `/usr/bin/python3.12` survives a patch upgrade of Python
//! while `/usr/lib/.../python3.12.1` would not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{CliError, ErrorKind};

/// The engine requires Python >= 3.10 (`requires-python` in engine/pyproject.toml).
pub(crate) const MIN_PYTHON: (u32, u32) = (3, 10);

const PATH_CANDIDATES: &[&str] = &[
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Interpreter {
    /// As found: not resolved through symlinks.
    pub path: PathBuf,
    pub version: String,
}

/// Where the interpreter request came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    Flag,
    Env,
    Config,
    Receipt,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "--python",
            Origin::Env => "BREADBOARD_PYTHON",
            Origin::Config => "[python] path in config.toml",
            Origin::Receipt => "the installed engine's receipt",
        })
    }
}

const HOW_TO_GET: &str = "install Python 3.10 or newer (e.g. `uv python install 3.12`, or your OS package manager), then \
                          pass it with `--python PATH` or BREADBOARD_PYTHON";

/// Runs `path` and asks its version; `Err` carries a one-line reason.
pub(crate) fn query(path: &Path) -> Result<Interpreter, String> {
    let output = Command::new(path)
        .args([
            "-I",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run it: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(format!(
            "it exited with {}{}",
            output.status,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        ));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(Interpreter {
        path: path.to_owned(),
        version,
    })
}

pub(crate) fn parse_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_min(interp: &Interpreter) -> Result<(), String> {
    match parse_minor(&interp.version) {
        Some(v) if v >= MIN_PYTHON => Ok(()),
        _ => Err(format!(
            "Python {} is too old (need >= {}.{})",
            interp.version, MIN_PYTHON.0, MIN_PYTHON.1
        )),
    }
}

/// Resolves a requested interpreter: a bare name is looked up on PATH, a relative path is made absolute (not resolved).
fn locate(request: &Path) -> Result<PathBuf, String> {
    if request.components().count() == 1 && !request.has_root() {
        return which::which(request).map_err(|_| "not found on PATH".to_owned());
    }
    let path = std::path::absolute(request).map_err(|e| e.to_string())?;
    if !path.exists() {
        return Err("no such file".to_owned());
    }
    Ok(path)
}

/// Uses an explicitly requested interpreter, or fails with a clear error.
pub(crate) fn from_request(request: &Path, origin: Origin) -> anyhow::Result<Interpreter> {
    let located = locate(request)
        .and_then(|p| query(&p))
        .and_then(|i| check_min(&i).map(|()| i));
    located.map_err(|why| {
        CliError::new(
            ErrorKind::Python,
            format!(
                "the Python interpreter from {origin} ({}) is not usable: {why}",
                request.display()
            ),
        )
        .hint(HOW_TO_GET)
        .into()
    })
}

/// Discovery when nothing was requested: uv's own discovery when uv is available (managed Pythons, then PATH), else
/// python3.13 ... python3.10 and python3 on PATH. Every candidate is run, because a PATH entry can be a pyenv shim that
/// only fails when executed.
pub(crate) fn discover(uv: Option<&Path>) -> anyhow::Result<Interpreter> {
    let mut tried = Vec::new();
    if let Some(uv) = uv {
        let spec = format!(">={}.{}", MIN_PYTHON.0, MIN_PYTHON.1);
        match Command::new(uv)
            .args(["python", "find", "--no-python-downloads", &spec])
            .output()
        {
            Ok(out) if out.status.success() => {
                let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                match query(&path).and_then(|i| check_min(&i).map(|()| i)) {
                    Ok(i) => return Ok(i),
                    Err(why) => {
                        tried.push(format!("{} (from `uv python find`): {why}", path.display()))
                    }
                }
            }
            Ok(_) => tried.push("`uv python find` found none".to_owned()),
            Err(e) => tried.push(format!("{}: {e}", uv.display())),
        }
    }
    for name in PATH_CANDIDATES {
        let Ok(path) = which::which(name) else {
            continue;
        };
        match query(&path).and_then(|i| check_min(&i).map(|()| i)) {
            Ok(i) => return Ok(i),
            Err(why) => tried.push(format!("{}: {why}", path.display())),
        }
    }
    let detail = if tried.is_empty() {
        "none of python3.13, python3.12, python3.11, python3.10 or python3 is on PATH".to_owned()
    } else {
        format!("tried: {}", tried.join("; "))
    };
    Err(CliError::new(
        ErrorKind::Python,
        format!("no Python >= 3.10 found ({detail})"),
    )
    .hint(HOW_TO_GET)
    .into())
}
