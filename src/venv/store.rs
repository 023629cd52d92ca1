//! The engine venvs on disk: `engine/versions/<version>/` (one venv each, `receipt.json` written last as the commit
//! marker), and the `engine/current` / `engine/previous` symlinks, switched atomically.
//!
//! Venvs are built at their final path because they are not relocatable (absolute shebangs, `pyvenv.cfg` home). A
//! version dir without `receipt.json` is a leftover of an interrupted run and is deleted by the next command that
//! holds the control lock: the marker is written last, so its presence means the venv is complete.

use std::path::{Path, PathBuf};

use anyhow::Context;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::index::SourceRecord;
use super::python::Interpreter;
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;

pub(crate) const RECEIPT: &str = "receipt.json";
pub(crate) const RECEIPT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InstallerKind {
    Uv,
    Pip,
}

impl std::fmt::Display for InstallerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstallerKind::Uv => "uv",
            InstallerKind::Pip => "pip",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Receipt {
    pub schema: u32,
    pub engine_version: String,
    /// The pip requirement that was installed, e.g. `breadboard-engine==0.1.1` or a wheel path.
    pub requirement: String,
    pub source: SourceRecord,
    pub python: Interpreter,
    pub installer: InstallerKind,
    pub protocol_version: String,
    pub cli_version: String,
    pub installed_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Installed {
    pub version: String,
    pub path: PathBuf,
    pub current: bool,
    pub previous: bool,
    /// `false` for a leftover without `receipt.json`.
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

pub(crate) struct Store<'a> {
    paths: &'a Paths,
}

impl<'a> Store<'a> {
    pub(crate) fn paths(&self) -> &Paths {
        self.paths
    }

    pub(crate) fn new(paths: &'a Paths) -> Store<'a> {
        Store { paths }
    }

    pub(crate) fn dir(&self, version: &str) -> PathBuf {
        self.paths.version_dir(version)
    }

    pub(crate) fn read_receipt(&self, version: &str) -> anyhow::Result<Option<Receipt>> {
        let path = self.dir(version).join(RECEIPT);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("could not parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
        }
    }

    /// The commit point of an install: temp file, fsync, rename, fsync dir.
    pub(crate) fn write_receipt(&self, receipt: &Receipt) -> anyhow::Result<()> {
        let path = self.dir(&receipt.engine_version).join(RECEIPT);
        fsutil::write_atomic(&path, serde_json::to_string_pretty(receipt)?.as_bytes())
    }

    /// The version a link (`current` or `previous`) points at, if it exists.
    pub(crate) fn link_version(&self, link: &Path) -> Option<String> {
        let target = std::fs::read_link(link).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    pub(crate) fn current(&self) -> Option<String> {
        self.link_version(&self.paths.current_link())
    }

    pub(crate) fn previous(&self) -> Option<String> {
        self.link_version(&self.paths.previous_link())
    }

    /// Whether `version` has a committed receipt.
    pub(crate) fn is_complete(&self, version: &str) -> bool {
        self.dir(version).join(RECEIPT).is_file()
    }

    /// All version dirs, sorted by version (non-semver names last, by name).
    pub(crate) fn list(&self) -> anyhow::Result<Vec<Installed>> {
        let dir = self.paths.versions_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", dir.display())),
        };
        let current = self.current();
        let previous = self.previous();
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("could not read {}", dir.display()))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let version = entry.file_name().to_string_lossy().into_owned();
            let receipt = self.read_receipt(&version).unwrap_or(None);
            let complete = receipt.is_some();
            let broken = if complete {
                self.health(&version).err()
            } else {
                None
            };
            out.push(Installed {
                path: entry.path(),
                current: current.as_deref() == Some(version.as_str()),
                previous: previous.as_deref() == Some(version.as_str()),
                complete,
                broken,
                receipt,
                version,
            });
        }
        out.sort_by(
            |a, b| match (Version::parse(&a.version), Version::parse(&b.version)) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                (Ok(_), Err(_)) => std::cmp::Ordering::Less,
                (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
                (Err(_), Err(_)) => a.version.cmp(&b.version),
            },
        );
        Ok(out)
    }

    /// Cheap checks that need no Python run, so `engine list` stays fast: the venv interpreter resolves (a dangling
    /// symlink means its base interpreter was removed, uv's wording) and `pyvenv.cfg`'s `home` exists.
    pub(crate) fn health(&self, version: &str) -> Result<(), String> {
        let dir = self.dir(version);
        let python = dir.join("bin").join("python");
        if std::fs::symlink_metadata(&python).is_err() {
            return Err(format!("{} is missing", python.display()));
        }
        if std::fs::metadata(&python).is_err() {
            let target = std::fs::read_link(&python)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "{} is a broken symlink (to {target}); was the underlying Python interpreter removed?",
                python.display()
            ));
        }
        let cfg = dir.join("pyvenv.cfg");
        let text = std::fs::read_to_string(&cfg)
            .map_err(|e| format!("could not read {}: {e}", cfg.display()))?;
        let home = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "home")
            .map(|(_, v)| PathBuf::from(v.trim()));
        match home {
            Some(home) if home.is_dir() => Ok(()),
            Some(home) => Err(format!(
                "its base Python's directory {} (pyvenv.cfg home) is gone",
                home.display()
            )),
            None => Err(format!("{} has no `home` entry", cfg.display())),
        }
    }

    /// Deletes receipt-less version dirs and stray temp links. Call only while holding the control lock.
    pub(crate) fn clean_leftovers(&self, printer: &Printer) -> anyhow::Result<()> {
        for item in self.list()? {
            if !item.complete {
                // A link to a dir about to be deleted would dangle; unlink it first (normally never the case, since
                // links are only switched to committed versions).
                if item.current {
                    fsutil::remove_file_if_exists(&self.paths.current_link())?;
                }
                if item.previous {
                    fsutil::remove_file_if_exists(&self.paths.previous_link())?;
                }
                printer.warn(&format!(
                    "removing incomplete engine {} left by an interrupted install ({})",
                    item.version,
                    item.path.display()
                ));
                fsutil::remove_dir_if_exists(&item.path)?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.paths.engine_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("current.tmp.") || name.starts_with("previous.tmp.") {
                    fsutil::remove_file_if_exists(&entry.path())?;
                }
            }
        }
        Ok(())
    }

    fn link_target(version: &str) -> PathBuf {
        // Relative, so the links survive a moved BREADBOARD_HOME.
        Path::new("versions").join(version)
    }

    /// Makes `version` current; the old current becomes previous. `previous` is switched first so that a crash in
    /// between leaves `current` untouched.
    pub(crate) fn switch_to(&self, version: &str) -> anyhow::Result<Option<String>> {
        let old = self.current();
        if old.as_deref() == Some(version) {
            return Ok(None);
        }
        if let Some(old) = &old {
            if self.is_complete(old) {
                fsutil::replace_symlink(&Self::link_target(old), &self.paths.previous_link())?;
            }
        }
        fsutil::replace_symlink(&Self::link_target(version), &self.paths.current_link())?;
        Ok(old)
    }

    /// Swaps `current` and `previous`.
    pub(crate) fn swap(&self, to: &str, from: Option<&str>) -> anyhow::Result<()> {
        fsutil::replace_symlink(&Self::link_target(to), &self.paths.current_link())?;
        match from {
            Some(from) => {
                fsutil::replace_symlink(&Self::link_target(from), &self.paths.previous_link())
            }
            None => fsutil::remove_file_if_exists(&self.paths.previous_link()),
        }
    }

    pub(crate) fn unlink_current(&self) -> anyhow::Result<()> {
        fsutil::remove_file_if_exists(&self.paths.current_link())
    }

    /// `engine uninstall`, under the control lock with no engine running: removes every version and both links, and
    /// with `purge` the engine's data dir. Returns the versions removed and whether data was deleted.
    pub(crate) fn remove_all(&self, purge: bool) -> anyhow::Result<(Vec<String>, bool)> {
        let removed: Vec<String> = self.list()?.into_iter().map(|i| i.version).collect();
        // Links first: a crash midway then leaves no link to a half-deleted venv.
        self.unlink_current()?;
        fsutil::remove_file_if_exists(&self.paths.previous_link())?;
        fsutil::remove_dir_if_exists(&self.paths.versions_dir())?;
        let data = self.paths.data_dir();
        let purged = purge && data.exists();
        if purged {
            fsutil::remove_dir_if_exists(&data)?;
        }
        Ok((removed, purged))
    }
}
