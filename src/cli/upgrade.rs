//! `breadboard upgrade`: replace this binary with a newer release, then upgrade the engine with the new binary.
//!
//! 1. Before any network call, work out who owns this copy (`install_receipt::detect`): npm -> print its command;
//!    install.sh's receipt for this very file -> self-update; anything else -> refuse, naming both paths.
//! 2. Self-update: read the release `manifest.json`, download exactly this target's tarball into the binary's
//!    directory, check size and sha256, unpack, run the new binary's `--version`, keep the old binary as
//!    `<bin>.previous`, rename the new one over it, update the receipt (`self_replace`).
//! 3. Run the **new** binary's `engine upgrade` (its engine range applies, and so do the steps a new release adds),
//!    only when an engine is installed.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use semver::Version;
use serde::Serialize;

use super::GlobalArgs;
use crate::build_info::{TARGET, VERSION};
use crate::env_vars;
use crate::error::{CliError, ErrorKind, EXIT_UPGRADE_AVAILABLE};
use crate::install_receipt::{self, InstallMethod, InstallReceipt};
use crate::paths::Paths;
use crate::printer::Printer;
use crate::release::{self, ReleaseSource};
use crate::self_replace::{self, InstallLock, TempFile};
use crate::venv::store::Store;

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// Install exactly this release (a lower one downgrades) instead of the latest
    #[arg(long, value_name = "V", conflicts_with_all = ["rollback", "engine_only"])]
    pub version: Option<String>,
    /// Only report whether an upgrade is available (exit 0: up to date, 100: available)
    #[arg(long, conflicts_with = "rollback")]
    pub check: bool,
    /// Upgrade the breadboard binary only, not the engine
    #[arg(long, conflicts_with = "engine_only")]
    pub cli_only: bool,
    /// Upgrade the engine only (works for npm-managed copies too); as `breadboard engine upgrade`
    #[arg(long)]
    pub engine_only: bool,
    /// Switch back to the binary the last upgrade replaced (kept as <binary>.previous)
    #[arg(long, conflicts_with_all = ["engine_only", "cli_only"])]
    pub rollback: bool,
    /// Do not ask for confirmation (implied without a terminal, or when CI is set)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct UpgradeJson {
    cli: Option<CliJson>,
    /// `engine upgrade --json`'s document, when the engine step ran.
    engine: Option<serde_json::Value>,
    /// `ran`, `failed`, `no_engine` or `skipped` (`--cli-only`, or a rollback).
    engine_step: &'static str,
}

#[derive(Serialize)]
struct CliJson {
    /// `upgraded`, `downgraded`, `unchanged` or `rolled_back`.
    action: &'static str,
    from: String,
    to: String,
    path: String,
    previous_path: Option<String>,
}

#[derive(Serialize)]
struct CheckJson {
    cli: Option<CliCheckJson>,
    /// `engine upgrade --check --json`'s document, when the engine was checked.
    engine: Option<serde_json::Value>,
    upgrade_available: bool,
}

#[derive(Serialize)]
struct CliCheckJson {
    current: String,
    latest: String,
    upgrade_available: bool,
}

pub fn run(printer: &Printer, global: &GlobalArgs, args: &UpgradeArgs) -> anyhow::Result<u8> {
    let paths = Paths::from_env()?;
    // Read before anything can replace the file: afterwards Linux reports "<path> (deleted)".
    let exe =
        std::env::current_exe().context("could not find the path of the running breadboard")?;
    let started_as = self_replace::file_id(&exe);
    let requested = args.version.as_deref().map(parse_version).transpose()?;
    let engine = EngineStep::new(&paths, global, args.json);

    if args.engine_only {
        return engine_only(printer, &engine, &exe, args);
    }

    // 1. Who owns this copy: decided from the environment and the filesystem, before any request.
    let method = install_receipt::detect(&paths, &exe);
    let InstallMethod::SelfManaged { mut receipt, exe } = method else {
        let refusal = method
            .refusal(requested.as_deref())
            .expect("every method but SelfManaged is refused");
        if args.check && !args.rollback {
            // Checking replaces nothing, so it works for every copy (rustup `check`); what would upgrade this copy
            // is said alongside.
            printer.warn(&format!(
                "{} ({})",
                refusal.message,
                refusal.hint.as_deref().unwrap_or_default()
            ));
            // The receipt's release source, when there is one (another copy's install), as install.sh would use.
            let receipt_path = paths.home.join(install_receipt::RECEIPT_FILE);
            let receipt_url = install_receipt::InstallReceipt::read(&receipt_path)
                .ok()
                .flatten()
                .and_then(|r| r.releases_url);
            let source = ReleaseSource::resolve(receipt_url.as_deref(), &receipt_path)?;
            let manifest =
                release_manifest(printer, &release::client()?, &source, requested.as_deref())?;
            let action = plan(VERSION, &manifest.version, requested.is_some());
            return check(printer, &engine, &exe, args, &manifest.version, action);
        }
        return Err(refusal.into());
    };
    if args.rollback {
        return rollback(printer, &paths, &exe, started_as, &mut receipt, args);
    }

    let source = ReleaseSource::resolve(receipt.releases_url.as_deref(), &receipt.path)?;
    let dir = self_replace::dir_of(&exe).to_owned();
    if !args.check {
        // A read-only install dir fails here, before a byte is downloaded (rustup `self_update_permitted`).
        self_replace::preflight_writable(&dir)?;
    }

    // 2. The release to move to.
    let client = release::client()?;
    let manifest = release_manifest(printer, &client, &source, requested.as_deref())?;
    let action = plan(VERSION, &manifest.version, requested.is_some());

    if args.check {
        return check(printer, &engine, &exe, args, &manifest.version, action);
    }

    let mut cli = CliJson {
        action: "unchanged",
        from: VERSION.to_owned(),
        to: manifest.version.clone(),
        path: exe.display().to_string(),
        previous_path: None,
    };
    let engine_bin = match action {
        Action::Unchanged => {
            if !args.json {
                printer.result(&up_to_date_line(&manifest.version, requested.is_some()));
            }
            exe.clone()
        }
        Action::Upgrade | Action::Downgrade => {
            let verb = if action == Action::Upgrade {
                "upgrade"
            } else {
                "downgrade"
            };
            if !confirmed(
                printer,
                args.yes,
                &format!(
                    "{verb} breadboard {VERSION} -> {} at {}?",
                    manifest.version,
                    exe.display()
                ),
            ) {
                return Err(CliError::new(
                    ErrorKind::Usage,
                    format!("{verb} cancelled; nothing was changed"),
                )
                .hint("breadboard upgrade --yes")
                .into());
            }
            let lock = InstallLock::acquire(&paths.home, printer)?;
            ensure_unchanged(&exe, started_as)?;
            self_replace::clean_leftovers(&paths.home, &dir);
            install_release(printer, &client, &manifest, &exe)?;
            if let Err(e) = receipt.record_version(&manifest.version, TARGET) {
                // The binary is in place and works; only the receipt's version is stale (upgrade reads
                // binary_path, which did not change).
                printer.warn(&format!("{e:#}"));
            }
            drop(lock);
            warn_if_shadowed(printer, &exe);
            let previous = self_replace::previous_path(&exe);
            cli.action = if action == Action::Upgrade {
                "upgraded"
            } else {
                "downgraded"
            };
            cli.previous_path = Some(previous.display().to_string());
            if !args.json {
                printer.result(&format!(
                    "{} breadboard {VERSION} -> {} at {} (the old binary is kept as {}: breadboard upgrade --rollback)",
                    cli.action,
                    manifest.version,
                    exe.display(),
                    previous.display()
                ));
            }
            exe.clone()
        }
    };

    // 3. The engine, with the binary now installed at `exe`.
    if args.cli_only {
        return finish(printer, args.json, Some(cli), None, "skipped", 0);
    }
    match engine.run(printer, &engine_bin, false)? {
        EngineOutcome::NoEngine => {
            printer.info(
                "no engine is installed; skipping the engine step (breadboard engine install installs one)",
            );
            finish(printer, args.json, Some(cli), None, "no_engine", 0)
        }
        EngineOutcome::Ran { code: 0, json } => {
            finish(printer, args.json, Some(cli), json, "ran", 0)
        }
        EngineOutcome::Ran { code, json } => {
            let upgraded = cli.action != "unchanged";
            let code = finish(printer, args.json, Some(cli), json, "failed", code)?;
            let message = if upgraded {
                format!(
                    "breadboard was {} to {}, but the engine step (`breadboard engine upgrade`) failed with exit \
                     code {code}",
                    if action == Action::Upgrade { "upgraded" } else { "downgraded" },
                    manifest.version
                )
            } else {
                format!(
                    "the engine step (`breadboard engine upgrade`) failed with exit code {code}"
                )
            };
            printer.error(
                &anyhow::anyhow!(message),
                Some("fix the cause shown above, then run: breadboard upgrade --engine-only"),
            );
            Ok(code)
        }
    }
}

/// Downloads, verifies, stages and swaps in `manifest`'s build for this target. On any error before the final
/// rename the installed binary is untouched; after it, a binary that does not run is swapped back out.
fn install_release(
    printer: &Printer,
    client: &reqwest::blocking::Client,
    manifest: &release::Manifest,
    exe: &Path,
) -> anyhow::Result<()> {
    let dir = self_replace::dir_of(exe);
    let artifact = manifest.artifact_for(TARGET)?;
    let url = manifest.artifact_url(artifact)?;
    printer.info(&format!(
        "downloading breadboard {} for {TARGET} ({:.1} MB) from {url}",
        manifest.version,
        artifact.size as f64 / 1e6
    ));
    // In the install dir: the same filesystem as the final rename, so a full disk shows before anything is swapped.
    let tarball = TempFile::new(dir, ".breadboard-upgrade.", ".tar.gz");
    let mut file = self_replace::create_new(&tarball.path, 0o600)?;
    release::download_verified(client, &url, artifact, &mut file).map_err(|e| match e
        .downcast::<std::io::Error>()
    {
        Ok(io) => self_replace::write_error(&tarball.path, io),
        Err(e) => e,
    })?;
    drop(file);
    printer.debug(&format!(
        "verified size {} and sha256 {}",
        artifact.size, artifact.sha256
    ));
    let staged = TempFile::new(dir, ".breadboard.new.", "");
    self_replace::extract_binary(&tarball.path, &staged.path)?;
    drop(tarball);
    self_replace::verify_version(&staged.path, &manifest.version)?;
    // Past this call the new binary is in place: what fails after the rename is a warning, and the caller records the
    // new version in the receipt.
    let warnings = self_replace::replace(exe, staged)?;
    // The installed path itself must now answer with the new version (OpenCode#8422: "upgraded" but unchanged).
    if let Err(e) = self_replace::verify_version(exe, &manifest.version) {
        for w in self_replace::swap_with_previous(exe)? {
            printer.warn(&w);
        }
        return Err(e.context(format!("{} was put back", exe.display())));
    }
    for w in warnings {
        printer.warn(&w);
    }
    Ok(())
}

fn rollback(
    printer: &Printer,
    paths: &Paths,
    exe: &Path,
    started_as: Option<(u64, u64)>,
    receipt: &mut InstallReceipt,
    args: &UpgradeArgs,
) -> anyhow::Result<u8> {
    let previous = self_replace::previous_path(exe);
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
    let prev_version = match self_replace::reported_version(&previous) {
        Ok(line) => match line.strip_prefix("breadboard ") {
            Some(v) => v.to_owned(),
            None => return Err(not_runnable(&previous, &format!("it reports {line:?}"))),
        },
        Err(why) => return Err(not_runnable(&previous, &why)),
    };
    if !confirmed(
        printer,
        args.yes,
        &format!(
            "roll breadboard back {VERSION} -> {prev_version} at {}?",
            exe.display()
        ),
    ) {
        return Err(
            CliError::new(ErrorKind::Usage, "rollback cancelled; nothing was changed")
                .hint("breadboard upgrade --rollback --yes")
                .into(),
        );
    }
    self_replace::preflight_writable(self_replace::dir_of(exe))?;
    let lock = InstallLock::acquire(&paths.home, printer)?;
    ensure_unchanged(exe, started_as)?;
    for w in self_replace::swap_with_previous(exe)? {
        printer.warn(&w);
    }
    if let Err(e) = receipt.record_version(&prev_version, TARGET) {
        printer.warn(&format!("{e:#}"));
    }
    drop(lock);
    let cli = CliJson {
        action: "rolled_back",
        from: VERSION.to_owned(),
        to: prev_version.clone(),
        path: exe.display().to_string(),
        previous_path: Some(previous.display().to_string()),
    };
    if !args.json {
        printer.result(&format!(
            "rolled breadboard back {VERSION} -> {prev_version} at {} ({VERSION} is kept as {}; the engine is \
             unchanged: breadboard engine rollback switches it)",
            exe.display(),
            previous.display()
        ));
    }
    finish(printer, args.json, Some(cli), None, "skipped", 0)
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

/// The manifest of the release to move to (the newest, or `requested`), checked to be the one asked for.
fn release_manifest(
    printer: &Printer,
    client: &reqwest::blocking::Client,
    source: &ReleaseSource,
    requested: Option<&str>,
) -> anyhow::Result<release::Manifest> {
    let manifest_url = source.manifest_url(requested);
    printer.debug(&format!(
        "release manifest: {manifest_url} (from {})",
        source.origin
    ));
    let manifest = release::fetch_manifest(client, &manifest_url, requested)?;
    if let Some(want) = requested {
        if manifest.version != want {
            let hint = if source.origin == env_vars::BREADBOARD_DOWNLOAD_URL {
                format!(
                    "{} points at one version's directory: unset it, or point it at {want}'s",
                    env_vars::BREADBOARD_DOWNLOAD_URL
                )
            } else {
                "the release tree is mislabelled; report it, or pick another version".to_owned()
            };
            return Err(CliError::new(
                ErrorKind::Source,
                format!(
                    "{manifest_url} (from {}) is the manifest of breadboard {}, not of the requested {want}",
                    source.origin, manifest.version
                ),
            )
            .hint(hint)
            .into());
        }
    }
    Ok(manifest)
}

fn check(
    printer: &Printer,
    engine: &EngineStep,
    exe: &Path,
    args: &UpgradeArgs,
    latest: &str,
    action: Action,
) -> anyhow::Result<u8> {
    let cli_available = action != Action::Unchanged;
    if !args.json {
        printer.result(&match action {
            Action::Unchanged => up_to_date_line(latest, args.version.is_some()),
            Action::Upgrade => format!("breadboard upgrade available: {VERSION} -> {latest}"),
            Action::Downgrade => format!("breadboard {VERSION} would be downgraded to {latest}"),
        });
    }
    // The engine's newest version depends on the new binary's range: it can only be checked when this binary is
    // the one that stays. Then `upgrade --check` answers for everything `upgrade` would do.
    let engine_json = if cli_available || args.cli_only {
        None
    } else {
        match engine.run(printer, exe, true)? {
            EngineOutcome::NoEngine => None,
            EngineOutcome::Ran { code, json } if code == 0 || code == EXIT_UPGRADE_AVAILABLE => {
                // Without --json the child printed its own line.
                return emit_check(
                    printer,
                    args.json,
                    latest,
                    cli_available,
                    json,
                    code == EXIT_UPGRADE_AVAILABLE,
                );
            }
            EngineOutcome::Ran { code, .. } => {
                printer.error(
                    &anyhow::anyhow!("checking the engine (`breadboard engine upgrade --check`) failed with exit code {code}"),
                    Some("breadboard upgrade --check --cli-only checks the binary alone"),
                );
                return Ok(code);
            }
        }
    };
    emit_check(
        printer,
        args.json,
        latest,
        cli_available,
        engine_json,
        false,
    )
}

fn emit_check(
    printer: &Printer,
    json: bool,
    latest: &str,
    cli_available: bool,
    engine: Option<serde_json::Value>,
    engine_available: bool,
) -> anyhow::Result<u8> {
    let available = cli_available || engine_available;
    if json {
        printer.json(&CheckJson {
            cli: Some(CliCheckJson {
                current: VERSION.to_owned(),
                latest: latest.to_owned(),
                upgrade_available: cli_available,
            }),
            engine,
            upgrade_available: available,
        });
    }
    Ok(if available { EXIT_UPGRADE_AVAILABLE } else { 0 })
}

/// `--engine-only`: `engine upgrade` (or `--check`) through this binary; no install-method check, because the engine
/// venv belongs to breadboard whoever installed the binary.
fn engine_only(
    printer: &Printer,
    engine: &EngineStep,
    exe: &Path,
    args: &UpgradeArgs,
) -> anyhow::Result<u8> {
    match engine.run(printer, exe, args.check)? {
        EngineOutcome::NoEngine => Err(CliError::new(
            ErrorKind::Failure,
            "no engine is installed, so there is nothing to upgrade",
        )
        .hint("breadboard engine install")
        .into()),
        EngineOutcome::Ran { code, json } => {
            if args.json {
                if args.check {
                    printer.json(&CheckJson {
                        cli: None,
                        upgrade_available: code == EXIT_UPGRADE_AVAILABLE,
                        engine: json,
                    });
                } else {
                    let step = if code == 0 { "ran" } else { "failed" };
                    printer.json(&UpgradeJson {
                        cli: None,
                        engine: json,
                        engine_step: step,
                    });
                }
            }
            Ok(code)
        }
    }
}

fn finish(
    printer: &Printer,
    json: bool,
    cli: Option<CliJson>,
    engine: Option<serde_json::Value>,
    engine_step: &'static str,
    code: u8,
) -> anyhow::Result<u8> {
    if json {
        printer.json(&UpgradeJson {
            cli,
            engine,
            engine_step,
        });
    }
    Ok(code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Unchanged,
    Upgrade,
    Downgrade,
}

/// Semver order. Without `--version` only a newer release moves (a build newer than the latest release stays); an
/// explicit version moves either way, reported as a downgrade when lower (as `uv self update` does).
fn plan(current: &str, target: &str, explicit: bool) -> Action {
    if current == target {
        return Action::Unchanged;
    }
    match (Version::parse(current), Version::parse(target)) {
        (Ok(c), Ok(t)) if t > c => Action::Upgrade,
        (Ok(c), Ok(t)) if t == c => Action::Unchanged, // equal up to build metadata
        (Ok(_), Ok(_)) if explicit => Action::Downgrade,
        (Ok(_), Ok(_)) => Action::Unchanged,
        // A current version that is not semver (a local build): any different release is a move.
        _ => Action::Upgrade,
    }
}

fn up_to_date_line(latest: &str, explicit: bool) -> String {
    if explicit || latest == VERSION {
        format!("breadboard {VERSION} is up to date")
    } else {
        format!("breadboard {VERSION} is up to date (newer than the latest release, {latest})")
    }
}

/// `V` or `vV`, a full semver version (uv accepts only exact versions for a pinned self-update).
fn parse_version(v: &str) -> anyhow::Result<String> {
    let v = v.strip_prefix('v').unwrap_or(v);
    Version::parse(v).map(|_| v.to_owned()).map_err(|_| {
        CliError::new(
            ErrorKind::Usage,
            format!("--version {v:?} is not a release version like 0.1.1"),
        )
        .hint("breadboard upgrade --version 0.1.1")
        .into()
    })
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

/// Another install or upgrade may have replaced the file while this one waited for the lock: replacing it again
/// would keep the wrong `.previous`.
fn ensure_unchanged(exe: &Path, started_as: Option<(u64, u64)>) -> anyhow::Result<()> {
    if self_replace::file_id(exe) == started_as {
        return Ok(());
    }
    Err(CliError::new(
        ErrorKind::Failure,
        format!(
            "{} was replaced by another install or upgrade while this one waited; nothing was changed",
            exe.display()
        ),
    )
    .hint("breadboard upgrade   (to check what is installed now)")
    .into())
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
            self_replace::dir_of(exe).display()
        ));
    }
}

/// The engine step, run by a given breadboard binary (the new one after an upgrade).
struct EngineStep {
    installed: bool,
    flags: Vec<String>,
    json: bool,
}

enum EngineOutcome {
    NoEngine,
    Ran {
        code: u8,
        json: Option<serde_json::Value>,
    },
}

impl EngineStep {
    fn new(paths: &Paths, global: &GlobalArgs, json: bool) -> EngineStep {
        let store = Store::new(paths);
        let installed = store.current().is_some_and(|c| store.is_complete(&c));
        // The child gets the same output settings as this command.
        let mut flags = Vec::new();
        if global.quiet {
            flags.push("--quiet".to_owned());
        }
        for _ in 0..global.verbose {
            flags.push("--verbose".to_owned());
        }
        if let Some(color) = clap::ValueEnum::to_possible_value(&global.color) {
            flags.push(format!("--color={}", color.get_name()));
        }
        if global.no_progress {
            flags.push("--no-progress".to_owned());
        }
        EngineStep {
            installed,
            flags,
            json,
        }
    }

    fn run(&self, printer: &Printer, bin: &Path, check: bool) -> anyhow::Result<EngineOutcome> {
        if !self.installed {
            return Ok(EngineOutcome::NoEngine);
        }
        let mut cmd = Command::new(bin);
        cmd.args(&self.flags).args(["engine", "upgrade"]);
        if check {
            cmd.arg("--check");
        }
        if self.json {
            cmd.arg("--json").stdout(Stdio::piped());
        }
        printer.debug(&format!(
            "running {} {} engine upgrade",
            bin.display(),
            self.flags.join(" ")
        ));
        let child = cmd
            .spawn()
            .with_context(|| format!("could not run {} engine upgrade", bin.display()))?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("could not wait for {} engine upgrade", bin.display()))?;
        // Killed by a signal: no exit code; report a plain failure.
        let code = out
            .status
            .code()
            .map_or(1, |c| u8::try_from(c).unwrap_or(1));
        // The first JSON document on its stdout (a restart of a running engine adds a plain line after it).
        let json = if self.json {
            serde_json::Deserializer::from_slice(&out.stdout)
                .into_iter::<serde_json::Value>()
                .next()
                .and_then(Result::ok)
        } else {
            None
        };
        Ok(EngineOutcome::Ran { code, json })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_semver() {
        assert_eq!(plan("0.1.0", "0.1.0", false), Action::Unchanged);
        assert_eq!(plan("0.1.0-test.1", "0.1.1-test.1", false), Action::Upgrade);
        assert_eq!(plan("0.1.0-test.1", "0.1.0", false), Action::Upgrade); // a pre-release precedes its release
        assert_eq!(plan("0.2.0", "0.1.9", false), Action::Unchanged);
        assert_eq!(plan("0.2.0", "0.1.9", true), Action::Downgrade);
        assert_eq!(plan("0.10.0", "0.9.0", true), Action::Downgrade); // numeric, not string, order
        assert_eq!(plan("dev", "0.1.0", false), Action::Upgrade);
    }

    #[test]
    fn versions_must_be_exact() {
        assert_eq!(parse_version("v0.1.1").unwrap(), "0.1.1");
        assert_eq!(parse_version("0.1.1-test.1").unwrap(), "0.1.1-test.1");
        assert!(parse_version("0.1").is_err());
        assert!(parse_version("latest").is_err());
    }
}
