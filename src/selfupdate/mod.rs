//! `breadboard upgrade`: replacing this binary with another release. The command (`cli/upgrade.rs`) parses, calls
//! [`update_binary`] and then [`EngineStep`], and prints; nothing here imports from `cli/`.
//!
//! 1. Who owns this copy, before any network call ([`install_receipt`]): npm -> print its command; install.sh's
//!    receipt for this very file -> self-update; anything else -> refuse, naming both paths.
//! 2. The release to move to ([`release`]): `manifest.json` from where install.sh got this copy, the artifact for
//!    exactly this build target, whether that is an upgrade ([`plan`]).
//! 3. The change, under the install lock shared with install.sh ([`install_lock`]; `apply`): download into the
//!    binary's directory checking size and sha256 as it streams, unpack the binary and run its `--version`
//!    (`stage`), swap it in with the self-replace crate keeping `<bin>.previous` (`replace`), check the installed
//!    path answers, record the version in the receipt.
//! 4. The engine ([`EngineStep`]): the **new** binary runs `engine upgrade`, so its engine range applies.

mod apply;
mod engine_step;
pub(crate) mod install_lock;
pub(crate) mod install_receipt;
mod plan;
pub(crate) mod release;
mod replace;
mod stage;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub(crate) use engine_step::{EngineOutcome, EngineStep};
use install_receipt::{InstallMethod, InstallReceipt};
pub(crate) use plan::{parse_version, Action};
use release::ReleaseSource;

use crate::build_info::VERSION;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::settings::Settings;

/// What `breadboard upgrade` was asked to do with the binary.
pub(crate) struct Request {
    /// An exact version (see [`parse_version`]), or the latest release.
    pub version: Option<String>,
    pub check: bool,
    pub rollback: bool,
    /// Do not ask for confirmation.
    pub yes: bool,
}

/// What [`update_binary`] found or did.
pub(crate) enum Change {
    /// `--check`: the release `upgrade` would move to, and what that would be.
    Checked { latest: String, action: Action },
    /// Nothing to do: this binary is `latest` already (or newer, when no version was asked for).
    UpToDate { latest: String },
    /// Upgraded or downgraded to `to`; the replaced binary is kept at `previous`.
    Moved {
        action: Action,
        to: String,
        previous: PathBuf,
    },
    /// Back to `to`, the binary that was at `previous`, which now holds the one it replaced.
    RolledBack { to: String, previous: PathBuf },
}

/// The running executable, canonical. Read before anything can replace the file: afterwards Linux reports
/// `<path> (deleted)`.
pub(crate) fn running_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("could not find the path of the running breadboard")
}

/// Checks for, moves to, or rolls back to another release of the running binary `exe`, when this copy is
/// install.sh's; otherwise refuses (exit 8), except `--check`, which replaces nothing and answers for any copy.
pub(crate) fn update_binary(
    printer: &Printer,
    paths: &Paths,
    settings: &Settings,
    exe: &Path,
    request: &Request,
) -> anyhow::Result<Change> {
    let started_as = apply::file_id(exe);
    let mut copy = match install_receipt::detect_with(settings, paths, exe) {
        InstallMethod::SelfManaged { receipt, exe } => apply::ThisCopy {
            exe,
            started_as,
            receipt,
        },
        other => {
            let refusal = other
                .refusal(request.version.as_deref())
                .expect("every method but SelfManaged is refused");
            if !request.check || request.rollback {
                return Err(refusal.into());
            }
            // What would upgrade this copy is said alongside (rustup `check`).
            printer.warn(&format!(
                "{} ({})",
                refusal.message,
                refusal.hint.as_deref().unwrap_or_default()
            ));
            return check_only(printer, paths, settings, request);
        }
    };
    if request.rollback {
        return copy.roll_back(printer, &paths.home, request.yes);
    }
    let source = ReleaseSource::resolve(
        settings,
        copy.receipt.releases_url.as_deref(),
        &copy.receipt.path,
    )?;
    if !request.check {
        // A read-only install dir fails here, before a byte is downloaded (rustup `self_update_permitted`).
        stage::preflight_writable(stage::dir_of(&copy.exe))?;
    }
    let client = release::client()?;
    let manifest = source.fetch(printer, &client, request.version.as_deref())?;
    let latest = manifest.version.clone();
    match plan::plan(VERSION, &latest, request.version.is_some()) {
        action if request.check => Ok(Change::Checked { latest, action }),
        Action::Unchanged => Ok(Change::UpToDate { latest }),
        action => copy.install(
            printer,
            &paths.home,
            &client,
            &manifest,
            action,
            request.yes,
        ),
    }
}

/// `--check` for a copy this binary may not replace: from the receipt's release source when there is one (another
/// copy's install), as install.sh would use it.
fn check_only(
    printer: &Printer,
    paths: &Paths,
    settings: &Settings,
    request: &Request,
) -> anyhow::Result<Change> {
    let receipt_path = install_receipt::path(paths);
    let receipt_url = InstallReceipt::read(&receipt_path)
        .ok()
        .flatten()
        .and_then(|r| r.releases_url);
    let source = ReleaseSource::resolve(settings, receipt_url.as_deref(), &receipt_path)?;
    let manifest = source.fetch(printer, &release::client()?, request.version.as_deref())?;
    let action = plan::plan(VERSION, &manifest.version, request.version.is_some());
    Ok(Change::Checked {
        latest: manifest.version,
        action,
    })
}
