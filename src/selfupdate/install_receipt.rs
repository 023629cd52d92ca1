//! The install receipt install.sh writes (`$BREADBOARD_HOME/install-receipt.json`, docs/distribution.md) and the
//! question `breadboard upgrade` must answer before any network call: may this copy replace itself?
//!
//! Order (the first that applies decides, so a copy another tool owns is never replaced):
//! 1. the npm launcher's marker (`BREADBOARD_MANAGED_BY`) -> the package manager owns this copy: print its command;
//! 2. a receipt whose `binary_path`, canonicalised, is this executable, canonicalised -> self-update;
//! 3. anything else (cargo install, Homebrew, a distro package, a second copy) -> refuse, naming both paths.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::release::GITHUB_RELEASES;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::settings::Settings;

pub(crate) const RECEIPT_FILE: &str = "install-receipt.json";

/// The npm package that owns npm-managed copies (npm-wrapper/breadboard-cli).
pub(crate) const NPM_PACKAGE: &str = "breadboard-cli";

pub(crate) fn path(paths: &Paths) -> PathBuf {
    paths.home.join(RECEIPT_FILE)
}

/// The fields `breadboard upgrade` reads. The whole document is kept in `raw`, so a rewrite keeps fields a newer
/// install.sh may add.
#[derive(Debug, Clone)]
pub(crate) struct InstallReceipt {
    pub path: PathBuf,
    pub method: String,
    pub version: String,
    pub binary_path: PathBuf,
    pub releases_url: Option<String>,
    raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ReceiptFields {
    schema: u32,
    method: String,
    version: String,
    binary_path: PathBuf,
    #[serde(default)]
    releases_url: Option<String>,
}

impl InstallReceipt {
    /// `Ok(None)` when there is no receipt; an error names the file when it exists but cannot be used.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Option<InstallReceipt>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        let raw: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("could not parse {}", path.display()))?;
        let fields: ReceiptFields = serde_json::from_value(serde_json::Value::Object(raw.clone()))
            .with_context(|| format!("{} lacks a field breadboard needs", path.display()))?;
        if fields.schema != 1 {
            anyhow::bail!(
                "{} has schema {}, and this breadboard reads schema 1",
                path.display(),
                fields.schema
            );
        }
        Ok(Some(InstallReceipt {
            path: path.to_owned(),
            method: fields.method,
            version: fields.version,
            binary_path: fields.binary_path,
            releases_url: fields.releases_url.filter(|u| !u.is_empty()),
            raw,
        }))
    }

    /// Records the version now installed at `binary_path` (after an upgrade or a rollback), atomically.
    pub(crate) fn record_version(&mut self, version: &str, target: &str) -> anyhow::Result<()> {
        use serde_json::Value;
        self.version = version.to_owned();
        self.raw
            .insert("version".into(), Value::String(version.to_owned()));
        self.raw
            .insert("target".into(), Value::String(target.to_owned()));
        self.raw
            .insert("installed_at".into(), Value::String(fsutil::now_rfc3339()));
        self.raw.insert(
            "updated_by".into(),
            Value::String("breadboard upgrade".to_owned()),
        );
        let mut text = serde_json::to_string_pretty(&self.raw)?;
        text.push('\n');
        fsutil::write_atomic(&self.path, text.as_bytes())
    }
}

/// How this copy of breadboard was installed, as far as `breadboard upgrade` is concerned.
#[derive(Debug)]
pub(crate) enum InstallMethod {
    /// A package manager's launcher runs this binary (`BREADBOARD_MANAGED_BY`).
    PackageManager { manager: String, exe: PathBuf },
    /// install.sh put this very file here: it may replace itself.
    SelfManaged {
        receipt: InstallReceipt,
        exe: PathBuf,
    },
    /// Anything else: refused, with the reason and the command that upgrades it.
    Foreign { exe: PathBuf, why: Foreign },
}

#[derive(Debug)]
pub(crate) enum Foreign {
    /// The receipt belongs to another file (two installs, or a moved binary).
    OtherCopy {
        receipt_path: PathBuf,
        installed: PathBuf,
    },
    /// No receipt at all.
    NoReceipt { receipt_path: PathBuf },
    /// A receipt that cannot be read, or was not written by install.sh.
    BadReceipt { receipt_path: PathBuf, why: String },
}

/// Works out the install method from the settings (`BREADBOARD_MANAGED_BY`) and the filesystem only (no network).
pub(crate) fn detect_with(settings: &Settings, paths: &Paths, exe: &Path) -> InstallMethod {
    let manager = settings.managed_by.get().ok().and_then(Option::as_deref);
    let receipt_path = path(paths);
    let receipt = InstallReceipt::read(&receipt_path).map_err(|e| format!("{e:#}"));
    classify(manager, exe, receipt_path, receipt)
}

/// [`detect_with`] this process's environment, for doctor, which has no settings of its own.
pub(crate) fn detect(paths: &Paths, exe: &Path) -> InstallMethod {
    detect_with(
        &crate::settings::without_flags(&Default::default()),
        paths,
        exe,
    )
}

/// The decision itself, separate from the environment so it can be tested as a table.
pub(crate) fn classify(
    manager: Option<&str>,
    exe: &Path,
    receipt_path: PathBuf,
    receipt: Result<Option<InstallReceipt>, String>,
) -> InstallMethod {
    let exe = exe.to_owned();
    if let Some(manager) = manager {
        return InstallMethod::PackageManager {
            manager: manager.to_owned(),
            exe,
        };
    }
    let why = match receipt {
        Err(why) => Foreign::BadReceipt { receipt_path, why },
        Ok(None) => Foreign::NoReceipt { receipt_path },
        Ok(Some(r)) if r.method != "install.sh" => Foreign::BadReceipt {
            why: format!("it was written by {:?}, not install.sh", r.method),
            receipt_path,
        },
        Ok(Some(r)) => {
            if same_file(&r.binary_path, &exe) {
                return InstallMethod::SelfManaged { receipt: r, exe };
            }
            Foreign::OtherCopy {
                receipt_path,
                installed: r.binary_path,
            }
        }
    };
    InstallMethod::Foreign { exe, why }
}

/// Canonical paths compared (symlinks and `..` resolved); a path that no longer exists is compared as written.
fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canon(a) == canon(b)
}

/// The command a package manager upgrades its global `breadboard-cli` with (`version` None: the latest).
pub(crate) fn package_manager_command(manager: &str, version: Option<&str>) -> String {
    let spec = format!("{NPM_PACKAGE}@{}", version.unwrap_or("latest"));
    match manager {
        "pnpm" => format!("pnpm add -g {spec}"),
        "yarn" => format!("yarn global add {spec}"),
        "bun" => format!("bun add -g {spec}"),
        _ => format!("npm install -g {spec}"),
    }
}

impl InstallMethod {
    /// The error `breadboard upgrade` exits with (code 8) when it may not replace this copy; `None` for a
    /// self-managed copy.
    pub(crate) fn refusal(&self, version: Option<&str>) -> Option<CliError> {
        let (message, hint) = match self {
            InstallMethod::SelfManaged { .. } => return None,
            InstallMethod::PackageManager { manager, exe } => (
                format!(
                    "breadboard at {} is managed by {manager}, so breadboard upgrade leaves it alone; upgrade it \
                     with {manager} (the engine can still be upgraded here: breadboard upgrade --engine-only)",
                    exe.display()
                ),
                package_manager_command(manager, version),
            ),
            InstallMethod::Foreign { exe, why } => foreign_message(exe, why),
        };
        Some(CliError::new(ErrorKind::NotSelfUpdatable, message).hint(hint))
    }
}

fn foreign_message(exe: &Path, why: &Foreign) -> (String, String) {
    let install_sh = format!("curl -fsSL {GITHUB_RELEASES}/latest/download/install.sh | sh");
    match why {
        Foreign::OtherCopy {
            receipt_path,
            installed,
        } => (
            format!(
                "breadboard at {} is not the copy install.sh installed, which is {} (per {}); are several copies \
                 installed?",
                exe.display(),
                installed.display(),
                receipt_path.display()
            ),
            format!(
                "upgrade that copy with `{} upgrade` and remove {} if you do not need it (or put {} first on PATH)",
                installed.display(),
                exe.display(),
                installed.parent().unwrap_or(Path::new("/")).display()
            ),
        ),
        Foreign::NoReceipt { receipt_path } => {
            let (how, command) = guess_channel(exe, &install_sh);
            (
                format!(
                    "breadboard at {} was not installed by install.sh (no install receipt at {}){how}, so it cannot \
                     replace itself",
                    exe.display(),
                    receipt_path.display()
                ),
                command,
            )
        }
        Foreign::BadReceipt { receipt_path, why } => (
            format!(
                "cannot tell whether breadboard at {} may replace itself: the install receipt {} is unusable ({why})",
                exe.display(),
                receipt_path.display()
            ),
            format!("reinstall with install.sh, which rewrites the receipt: {install_sh}"),
        ),
    }
}

/// A best guess at who installed a copy without a receipt, from where it lives (uv `install_source.rs`).
fn guess_channel(exe: &Path, install_sh: &str) -> (String, String) {
    let text = exe.to_string_lossy();
    if text.contains("/Cellar/") || text.contains("/homebrew/") {
        return (
            " (it looks like Homebrew's)".into(),
            "brew upgrade breadboard".into(),
        );
    }
    if text.starts_with("/nix/store/") {
        return (
            " (it is in the Nix store)".into(),
            "upgrade it through Nix (nix profile upgrade, or your configuration)".into(),
        );
    }
    if text.contains("/.cargo/bin/")
        || text.contains("/target/release/")
        || text.contains("/target/debug/")
    {
        return (
            " (it looks like a cargo build)".into(),
            "rebuild it from the new source: cargo install --locked --force --path <breadboard checkout>".into(),
        );
    }
    if text.starts_with("/usr/bin/") || text.starts_with("/bin/") {
        return (
            " (it looks like a system package)".into(),
            "upgrade it with your system's package manager".into(),
        );
    }
    (
        String::new(),
        format!("upgrade it the way it was installed, or install a copy that can upgrade itself: {install_sh}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(dir: &Path, method: &str, binary: &Path) -> InstallReceipt {
        let path = dir.join(RECEIPT_FILE);
        let doc = serde_json::json!({
            "schema": 1, "method": method, "version": "0.1.0", "target": "x", "binary_path": binary,
            "releases_url": "http://127.0.0.1:1/rel", "extra": "kept"
        });
        std::fs::write(&path, doc.to_string()).unwrap();
        InstallReceipt::read(&path).unwrap().unwrap()
    }

    /// Table: (marker, receipt, exe) -> decision. Nothing here touches the network by construction: `classify`
    /// takes no client.
    #[test]
    fn install_method_table() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let exe = bin.join("breadboard");
        std::fs::write(&exe, b"x").unwrap();
        let other = dir.path().join("other-breadboard");
        std::fs::write(&other, b"y").unwrap();
        // A symlinked path to the same file counts as the same copy.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let rp = dir.path().join(RECEIPT_FILE);

        let m = classify(
            Some("npm"),
            &exe,
            rp.clone(),
            Ok(Some(receipt(dir.path(), "install.sh", &exe))),
        );
        assert!(matches!(m, InstallMethod::PackageManager { ref manager, .. } if manager == "npm"));
        let e = m.refusal(None).unwrap();
        assert_eq!(e.kind, ErrorKind::NotSelfUpdatable);
        assert_eq!(
            e.hint.as_deref(),
            Some("npm install -g breadboard-cli@latest")
        );
        let m = classify(Some("pnpm"), &exe, rp.clone(), Ok(None));
        assert_eq!(
            m.refusal(Some("0.1.0")).unwrap().hint.as_deref(),
            Some("pnpm add -g breadboard-cli@0.1.0")
        );

        let m = classify(
            None,
            &exe,
            rp.clone(),
            Ok(Some(receipt(
                dir.path(),
                "install.sh",
                &link.join("breadboard"),
            ))),
        );
        assert!(matches!(m, InstallMethod::SelfManaged { .. }), "{m:?}");
        assert!(m.refusal(None).is_none());

        let m = classify(
            None,
            &other,
            rp.clone(),
            Ok(Some(receipt(dir.path(), "install.sh", &exe))),
        );
        let e = m.refusal(None).unwrap();
        assert!(
            e.message.contains(&other.display().to_string()),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(&exe.display().to_string()),
            "{}",
            e.message
        );

        let m = classify(
            None,
            &exe,
            rp.clone(),
            Ok(Some(receipt(dir.path(), "homebrew", &exe))),
        );
        assert!(matches!(
            m,
            InstallMethod::Foreign {
                why: Foreign::BadReceipt { .. },
                ..
            }
        ));

        let m = classify(
            None,
            Path::new("/home/u/.cargo/bin/breadboard"),
            rp.clone(),
            Ok(None),
        );
        let e = m.refusal(None).unwrap();
        assert!(e
            .hint
            .unwrap()
            .starts_with("rebuild it from the new source: cargo install"));
        assert!(e.message.contains(&rp.display().to_string()));

        let m = classify(None, &exe, rp, Err("could not parse".into()));
        assert!(m.refusal(None).unwrap().message.contains("could not parse"));
    }

    #[test]
    fn rewrite_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = receipt(dir.path(), "install.sh", Path::new("/x/breadboard"));
        r.record_version("0.2.0", "t").unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(RECEIPT_FILE)).unwrap())
                .unwrap();
        assert_eq!(doc["version"], "0.2.0");
        assert_eq!(doc["extra"], "kept");
        assert_eq!(doc["method"], "install.sh");
        assert_eq!(doc["updated_by"], "breadboard upgrade");
    }
}
