//! The install flow `engine install` and `engine upgrade` share: choose the version, build its venv at
//! `engine/versions/<v>/`, validate it, commit it with `receipt.json`, then switch `current` to it. The commands only
//! say what they want (a [`Plan`]) and print the [`Outcome`].

use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use super::index::{self as package_index, EngineSource};
use super::installer::{self, Installer};
use super::python::{self, Interpreter, Origin};
use super::store::{InstallerKind, Receipt, Store, RECEIPT_SCHEMA};
use crate::compat::{self, ENGINE_DIST, SUPPORTED_ENGINE};
use crate::config::{self, Sourced};
use crate::context::Ctx;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::lock::ControlLock;
use crate::paths::Paths;
use crate::printer::{Printer, Steps};
use crate::settings::{self, Origin as From};

/// What to install; built by `install` and `upgrade`.
pub(crate) struct Plan {
    pub requested: Option<Version>,
    pub source: EngineSource,
    /// Remember `source` in config.toml after a successful install (it came from flags).
    pub remember_source: bool,
    pub python: Option<Sourced<PathBuf>>,
    pub installer: Option<InstallerKind>,
    pub force: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    /// `installed`, `reinstalled`, `switched` (already installed, now current) or `unchanged`.
    pub action: &'static str,
    pub version: String,
    pub path: PathBuf,
    pub previous: Option<String>,
    pub receipt: Receipt,
}

impl Outcome {
    /// `old` is what `current` pointed at before the switch (`None`: it already pointed here, or nowhere); the
    /// outcome's `previous` falls back to the `previous` link, so a report can still name where the user came from.
    fn new(
        store: &Store,
        action: &'static str,
        version: String,
        old: Option<String>,
        receipt: Receipt,
    ) -> Outcome {
        Outcome {
            action,
            path: store.dir(&version),
            version,
            previous: old.or_else(|| store.previous()),
            receipt,
        }
    }
}

/// `engine install`: under the control lock, installs `requested` (else the newest in range) from the resolved
/// source, with the resolved interpreter and installer.
pub(crate) fn install(
    ctx: &Ctx,
    requested: Option<Version>,
    force: bool,
) -> anyhow::Result<Outcome> {
    // The flags are in the settings (`--python`, `--installer`, the source flags).
    let settings = &ctx.settings;
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine install", ctx.printer)?;
    let store = Store::new(&ctx.paths);
    store.clean_leftovers(ctx.printer)?;
    let (source, origin) = source_or_receipt(ctx, &settings.source, &store);
    let plan = Plan {
        requested,
        source,
        remember_source: origin == "flags",
        python: config::sourced_python(&settings.python),
        installer: *settings.installer.get()?,
        force,
    };
    install_locked(ctx, &store, plan)
}

/// The resolved source (`ctx.settings.source`: flags > env > config), else (none set) the current engine's receipt's,
/// else PyPI; with how its origin is named (`flags` are remembered in config.toml).
pub(crate) fn source_or_receipt(
    ctx: &Ctx,
    source: &settings::Value<EngineSource>,
    store: &Store,
) -> (EngineSource, &'static str) {
    let origin = match source.origin {
        From::Flag(_) => "flags",
        From::Env(_) => "environment",
        From::Config { .. } => "config",
        From::Default => "default",
    };
    let source = source.get().cloned().unwrap_or_default();
    if origin == "default" {
        if let Some(receipt) = store
            .current()
            .and_then(|v| store.read_receipt(&v).ok().flatten())
        {
            return (EngineSource::from_record(&receipt.source), "receipt");
        }
    }
    ctx.printer
        .debug(&format!("engine source ({origin}): {}", source.describe()));
    (source, origin)
}

/// Picks the version: the requested one (checked against the range and the source) or the newest in range.
fn select_version(plan: &Plan, printer: &Printer) -> anyhow::Result<Version> {
    if let Some(v) = &plan.requested {
        check_range(v, plan.force, printer)?;
    }
    let offered = package_index::available_versions(&plan.source)?;
    let listing = || {
        if offered.is_empty() {
            "none".to_owned()
        } else {
            offered
                .iter()
                .map(Version::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match &plan.requested {
        Some(v) if offered.contains(v) => Ok(v.clone()),
        Some(v) => Err(CliError::new(
            ErrorKind::Source,
            format!("engine {v} is not offered by {} (offered: {})", plan.source.describe(), listing()),
        )
        .hint("pick one of the offered versions, or point --index-url/--find-links/--source at a source that has it")
        .into()),
        None => offered.iter().rev().find(|v| compat::in_range(v)).cloned().ok_or_else(|| {
            CliError::new(
                ErrorKind::Source,
                format!(
                    "{} offers no {ENGINE_DIST} version in the supported range {SUPPORTED_ENGINE} (offered: {})",
                    plan.source.describe(),
                    listing()
                ),
            )
            .hint(
                "point --index-url/--find-links/--source at a source with a compatible engine (from a checkout of \
                 the breadboard repository: breadboard engine install --source ./engine), or upgrade breadboard",
            )
            .into()
        }),
    }
}

/// A requested version outside the supported range is refused, or installed with a warning under `--force`.
fn check_range(v: &Version, force: bool, printer: &Printer) -> anyhow::Result<()> {
    if compat::in_range(v) {
        return Ok(());
    }
    if !force {
        return Err(CliError::new(
            ErrorKind::Source,
            format!("engine {v} is outside the range this breadboard supports ({SUPPORTED_ENGINE})"),
        )
        .hint(format!(
            "install a version in range (omit --version for the newest), upgrade breadboard, or override with \
             breadboard engine install --version {v} --force"
        ))
        .into());
    }
    printer.warn(&format!("engine {v} is outside the supported range ({SUPPORTED_ENGINE}); installing it because of --force"));
    Ok(())
}

/// The install flow; the caller holds the control lock and has cleaned leftovers.
pub(crate) fn install_locked(ctx: &Ctx, store: &Store, mut plan: Plan) -> anyhow::Result<Outcome> {
    let steps = ctx.printer.steps(4);
    steps.step("resolving the engine version");
    // A pinned, installed version needs no network to be made current; a forced rebuild checks its source below.
    let version = match &plan.requested {
        Some(v) if store.is_complete(&v.to_string()) => v.clone(),
        _ => select_version(&plan, ctx.printer)?,
    };
    let existing = store.read_receipt(&version.to_string())?;
    if let Some(receipt) = &existing {
        if let Some(outcome) = keep_installed(store, &mut plan, &version, receipt)? {
            steps.finish();
            return Ok(outcome);
        }
    }
    let receipt = build(ctx, store, &plan, &version, existing.as_ref(), &steps)?;
    let v = receipt.engine_version.clone();
    let old = store.switch_to(&v)?;
    if plan.remember_source {
        config::remember_source(&ctx.paths.config_file(), &plan.source)?;
    }
    steps.finish();
    let action = if existing.is_some() {
        "reinstalled"
    } else {
        "installed"
    };
    Ok(Outcome::new(store, action, v, old, receipt))
}

/// An installed `version`: a healthy one is made current (the outcome); a broken one is refused without `--force`.
/// `None` means rebuild it, from its receipt's interpreter, installer and (unless given anew) source, which `plan`
/// now holds.
fn keep_installed(
    store: &Store,
    plan: &mut Plan,
    version: &Version,
    receipt: &Receipt,
) -> anyhow::Result<Option<Outcome>> {
    let v = version.to_string();
    match store.health(&v) {
        Ok(()) if !plan.force => {
            let old = store.switch_to(&v)?;
            let action = if old.is_some() {
                "switched"
            } else {
                "unchanged"
            };
            Ok(Some(Outcome::new(store, action, v, old, receipt.clone())))
        }
        Err(why) if !plan.force => {
            let broken = format!("the venv of engine {v} is broken: {why}");
            Err(CliError::new(ErrorKind::Validation, broken)
                .hint(format!(
                    "rebuild it from its receipt: breadboard engine install --version {v} --force   (add --python \
                     PATH if its interpreter {} is gone for good)",
                    receipt.python.path.display()
                ))
                .into())
        }
        _ => {
            if plan.installer.is_none() {
                plan.installer = Some(receipt.installer);
            }
            if !plan.remember_source && plan.source.is_empty() {
                plan.source = EngineSource::from_record(&receipt.source);
            }
            // Fail fast (unreachable index, version gone) before tearing the old venv down.
            if !package_index::available_versions(&plan.source)?.contains(version) {
                return Err(CliError::new(
                    ErrorKind::Source,
                    format!(
                        "cannot rebuild engine {v}: {} no longer offers it",
                        plan.source.describe()
                    ),
                )
                .hint("point --index-url/--find-links/--source at a source that has it")
                .into());
            }
            Ok(None)
        }
    }
}

/// Builds the venv of `version` at its final path and writes its receipt (the commit); `current` is not switched yet.
fn build(
    ctx: &Ctx,
    store: &Store,
    plan: &Plan,
    version: &Version,
    existing: Option<&Receipt>,
    steps: &Steps,
) -> anyhow::Result<Receipt> {
    let v = version.to_string();
    let (installer, interpreter) = tools(ctx, store, plan, &v, existing)?;
    let requirement = requirement(&ctx.paths, plan, &v, steps)?;

    // The dir is about to be torn down: never leave `current` pointing into it, so a crash leaves it absent.
    let dir = store.dir(&v);
    if store.current().as_deref() == Some(v.as_str()) {
        store.unlink_current()?;
    }
    fsutil::remove_dir_if_exists(&dir)?;
    Paths::ensure_dir(&ctx.paths.versions_dir())?;
    let venv = Venv {
        installer: &installer,
        interpreter: &interpreter,
        dir: &dir,
    };
    match venv.build(plan, &v, requirement, steps) {
        Ok(receipt) => {
            store.write_receipt(&receipt)?;
            Ok(receipt)
        }
        Err(e) => {
            steps.finish();
            // Best effort: the next run under the lock would delete it anyway (no receipt).
            let _ = fsutil::remove_dir_if_exists(&dir);
            Err(e)
        }
    }
}

/// The installer (its log `install-<v>.log` started afresh, uv set up if it must be) and the base interpreter: the
/// requested one, else the one the version or the current engine was built on, else one discovered.
fn tools(
    ctx: &Ctx,
    store: &Store,
    plan: &Plan,
    v: &str,
    existing: Option<&Receipt>,
) -> anyhow::Result<(Installer, Interpreter)> {
    let printer = ctx.printer;
    let log = ctx.paths.logs_dir().join(format!("install-{v}.log"));
    ctx.paths.ensure_logs_dir()?;
    let _ = std::fs::remove_file(&log);
    let mut installer = Installer::choose(plan.installer, log, printer)?;
    let fallback = existing
        .map(|r| r.python.path.clone())
        .or_else(|| current_receipt(store).map(|r| r.python.path));
    let interpreter = choose_python(
        plan.python.as_ref(),
        fallback.as_deref(),
        installer.uv(),
        printer,
    )?;
    printer.debug(&format!(
        "python: {} ({})",
        interpreter.path.display(),
        interpreter.version
    ));
    installer.bootstrap_uv(&ctx.paths.home, &plan.source, printer)?;
    Ok((installer, interpreter))
}

/// A venv being built at its final path.
struct Venv<'a> {
    installer: &'a Installer,
    interpreter: &'a Interpreter,
    dir: &'a Path,
}

impl Venv<'_> {
    /// Creates the venv, installs `requirement` into it and validates it; the receipt that commits it (not written).
    fn build(
        &self,
        plan: &Plan,
        v: &str,
        requirement: String,
        steps: &Steps,
    ) -> anyhow::Result<Receipt> {
        let Venv {
            installer,
            interpreter,
            dir,
        } = self;
        steps.step(&format!(
            "creating the venv ({}, python {})",
            installer.kind, interpreter.version
        ));
        installer.create_venv(&interpreter.path, dir)?;
        steps.step(&format!(
            "installing {ENGINE_DIST} {v} from {}",
            plan.source.describe()
        ));
        installer.install(dir, &requirement, &plan.source)?;
        steps.step("verifying the engine");
        let identity = installer::validate(dir, v)?;
        Ok(Receipt {
            schema: RECEIPT_SCHEMA,
            engine_version: v.to_owned(),
            requirement,
            source: plan.source.record(),
            python: (*interpreter).clone(),
            installer: installer.kind,
            protocol_version: identity.protocol_version,
            cli_version: crate::build_info::VERSION.to_owned(),
            installed_at: fsutil::now_rfc3339(),
        })
    }
}

fn current_receipt(store: &Store) -> Option<Receipt> {
    store
        .current()
        .and_then(|c| store.read_receipt(&c).ok().flatten())
}

/// What the installer is given: the pinned distribution, a local path, or a wheel URL downloaded and verified first
/// (before the old venv is torn down).
fn requirement(paths: &Paths, plan: &Plan, v: &str, steps: &Steps) -> anyhow::Result<String> {
    Ok(match &plan.source.path {
        Some(url) if super::wheel_url::is_url(url) => {
            let url = url.to_string_lossy();
            steps.step(&format!(
                "downloading {}",
                super::wheel_url::file_name(&url)
            ));
            super::wheel_url::fetch(&url, &paths.engine_dir().join("downloads"))?
                .display()
                .to_string()
        }
        Some(path) => path.display().to_string(),
        None => format!("{ENGINE_DIST}=={v}"),
    })
}

/// Requested interpreter, else the receipt's (if still usable), else discovery.
fn choose_python(
    request: Option<&Sourced<PathBuf>>,
    fallback: Option<&Path>,
    uv: Option<&Path>,
    printer: &Printer,
) -> anyhow::Result<Interpreter> {
    if let Some(req) = request {
        return python::from_request(&req.value, req.origin);
    }
    if let Some(path) = fallback {
        match python::from_request(path, Origin::Receipt) {
            Ok(i) => return Ok(i),
            Err(e) => printer.warn(&format!("{e}; looking for another Python")),
        }
    }
    python::discover(uv)
}
