//! The changes to the installed binary, each under the install lock shared with install.sh: moving to a release
//! (download, stage, verify, swap, verify again, record) and rolling back to `<bin>.previous`.

use std::path::{Path, PathBuf};

use super::install_lock::InstallLock;
use super::install_receipt::InstallReceipt;
use super::plan::Action;
use super::release::{self, Manifest};
use super::replace::{self, previous_path};
use super::stage::{self, dir_of, TempFile};
use super::Change;
use crate::build_info::{TARGET, VERSION};
use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;

/// The copy of breadboard being changed: the running executable, which install.sh's receipt names.
pub(super) struct ThisCopy {
    pub exe: PathBuf,
    /// `(device, inode)` of `exe` when this process looked first: another install may replace it meanwhile.
    pub started_as: Option<(u64, u64)>,
    pub receipt: InstallReceipt,
}

impl ThisCopy {
    /// Moves to `manifest`'s release (an upgrade or a downgrade, per `action`), after asking unless `yes`.
    pub(super) fn install(
        &mut self,
        printer: &Printer,
        home: &Path,
        client: &reqwest::blocking::Client,
        manifest: &Manifest,
        action: Action,
        yes: bool,
    ) -> anyhow::Result<Change> {
        let verb = if action == Action::Downgrade {
            "downgrade"
        } else {
            "upgrade"
        };
        let question = format!(
            "{verb} breadboard {VERSION} -> {} at {}?",
            manifest.version,
            self.exe.display()
        );
        if !confirmed(printer, yes, &question) {
            return Err(CliError::new(
                ErrorKind::Usage,
                format!("{verb} cancelled; nothing was changed"),
            )
            .hint("breadboard upgrade --yes")
            .into());
        }
        let lock = self.lock(printer, home)?;
        lock.clean_leftovers(dir_of(&self.exe));
        install_release(printer, client, manifest, &self.exe)?;
        if let Err(e) = self.receipt.record_version(&manifest.version, TARGET) {
            // The binary is in place and works; only the receipt's version is stale (upgrade reads binary_path,
            // which did not change).
            printer.warn(&format!("{e:#}"));
        }
        drop(lock);
        warn_if_shadowed(printer, &self.exe);
        Ok(Change::Moved {
            action,
            to: manifest.version.clone(),
            previous: previous_path(&self.exe),
        })
    }

    /// Switches `exe` and `<exe>.previous`, after asking unless `yes`: a second rollback undoes the first.
    pub(super) fn roll_back(
        &mut self,
        printer: &Printer,
        home: &Path,
        yes: bool,
    ) -> anyhow::Result<Change> {
        let previous = previous_path(&self.exe);
        if !previous.is_file() {
            return Err(CliError::new(
                ErrorKind::Failure,
                format!(
                    "there is no previous breadboard at {} to roll back to",
                    previous.display()
                ),
            )
            .hint("install a given release instead: breadboard upgrade --version V")
            .into());
        }
        let to = match stage::reported_version(&previous) {
            Ok(line) => match line.strip_prefix("breadboard ") {
                Some(v) => v.to_owned(),
                None => return Err(not_runnable(&previous, &format!("it reports {line:?}"))),
            },
            Err(why) => return Err(not_runnable(&previous, &why)),
        };
        let question = format!(
            "roll breadboard back {VERSION} -> {to} at {}?",
            self.exe.display()
        );
        if !confirmed(printer, yes, &question) {
            return Err(
                CliError::new(ErrorKind::Usage, "rollback cancelled; nothing was changed")
                    .hint("breadboard upgrade --rollback --yes")
                    .into(),
            );
        }
        stage::preflight_writable(dir_of(&self.exe))?;
        let lock = self.lock(printer, home)?;
        lock.clean_leftovers(dir_of(&self.exe));
        for w in replace::swap_in(&self.exe, &previous)? {
            printer.warn(&w);
        }
        if let Err(e) = self.receipt.record_version(&to, TARGET) {
            printer.warn(&format!("{e:#}"));
        }
        drop(lock);
        Ok(Change::RolledBack { to, previous })
    }

    /// Takes the install lock, then checks that no other install or upgrade replaced the file while this one waited:
    /// replacing it again would keep the wrong `.previous`.
    fn lock(&self, printer: &Printer, home: &Path) -> anyhow::Result<InstallLock> {
        let lock = InstallLock::acquire(home, printer)?;
        if file_id(&self.exe) == self.started_as {
            return Ok(lock);
        }
        Err(CliError::new(
            ErrorKind::Failure,
            format!(
                "{} was replaced by another install or upgrade while this one waited; nothing was changed",
                self.exe.display()
            ),
        )
        .hint("breadboard upgrade   (to check what is installed now)")
        .into())
    }
}

/// Downloads, verifies, stages and swaps in `manifest`'s build for this target. On any error before the swap the
/// installed binary is untouched; after it, a binary that does not run is put back out.
fn install_release(
    printer: &Printer,
    client: &reqwest::blocking::Client,
    manifest: &Manifest,
    exe: &Path,
) -> anyhow::Result<()> {
    let dir = dir_of(exe);
    let artifact = manifest.artifact_for(TARGET)?;
    let url = manifest.artifact_url(artifact)?;
    printer.info(&format!(
        "downloading breadboard {} for {TARGET} ({:.1} MB) from {url}",
        manifest.version,
        artifact.size as f64 / 1e6
    ));
    // In the install dir: the same filesystem as the final rename, so a full disk shows before anything is swapped.
    let tarball = TempFile::new(dir, ".breadboard-upgrade.", ".tar.gz");
    let mut file = stage::create_new(&tarball.path, 0o600)?;
    release::download_verified(client, &url, artifact, &mut file).map_err(|e| match e
        .downcast::<std::io::Error>()
    {
        Ok(io) => stage::write_error(&tarball.path, io),
        Err(e) => e,
    })?;
    drop(file);
    printer.debug(&format!(
        "verified size {} and sha256 {}",
        artifact.size, artifact.sha256
    ));
    let staged = TempFile::new(dir, ".breadboard.new.", "");
    stage::extract_binary(&tarball.path, &staged.path)?;
    drop(tarball);
    stage::verify_version(&staged.path, &manifest.version)?;
    // Past this call the new binary is in place: what fails after the swap is a warning, and the caller records the
    // new version in the receipt.
    let warnings = replace::swap_in(exe, &staged.path)?;
    drop(staged);
    // The installed path itself must now answer with the new version (OpenCode#8422: "upgraded" but unchanged).
    if let Err(e) = stage::verify_version(exe, &manifest.version) {
        for w in replace::put_back(exe)? {
            printer.warn(&w);
        }
        return Err(e.context(format!("{} was put back", exe.display())));
    }
    for w in warnings {
        printer.warn(&w);
    }
    Ok(())
}

fn not_runnable(previous: &Path, why: &str) -> anyhow::Error {
    CliError::new(
        ErrorKind::Validation,
        format!(
            "the previous breadboard at {} does not run ({why}); nothing was changed",
            previous.display()
        ),
    )
    .hint("install a given release instead: breadboard upgrade --version V")
    .into()
}

/// Confirmation only when a human can answer: never without a terminal or under CI (a prompt there would hang;
/// docs/distribution.md).
fn confirmed(printer: &Printer, yes: bool, question: &str) -> bool {
    let ci =
        env_vars::get(env_vars::CI).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
    if yes || ci || !printer.interactive() {
        return true;
    }
    printer.confirm_default_yes(question)
}

/// `(device, inode)` of a path: tells whether the file at the exe path is still the one this process started from.
pub(super) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// After an upgrade, a different `breadboard` earlier on PATH would keep running the old version.
fn warn_if_shadowed(printer: &Printer, exe: &Path) {
    let Ok(found) = which::which("breadboard") else {
        return;
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    if canon(&found) != canon(exe) {
        printer.warn(&format!(
            "`breadboard` on PATH is {}, not the upgraded {}; put {} first on PATH or remove the other copy",
            found.display(),
            exe.display(),
            dir_of(exe).display()
        ));
    }
}
