//! `breadboard engine install`: build a venv for one engine version at `engine/versions/<v>/`, validate it, commit it
//! with `receipt.json`, then switch `current` to it. The same flow serves `engine upgrade` (see [`install_locked`]).

use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use super::{Ctx, SourceArgs};
use crate::compat::{self, ENGINE_DIST, SUPPORTED_ENGINE};
use crate::config::{self, Sourced};
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::lock::ControlLock;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::settings::{self, Origin as From};
use crate::venv::index::{self as package_index, EngineSource};
use crate::venv::installer::{self, Installer};
use crate::venv::python::{self, Interpreter, Origin};
use crate::venv::store::{InstallerKind, Receipt, Store, RECEIPT_SCHEMA};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Install exactly this engine version (default: the newest the source offers within the supported range)
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Base Python interpreter for the venv (also BREADBOARD_PYTHON, `[python] path`)
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Force the installer back end (default: uv when found, else python -m venv + pip)
    #[arg(long, value_enum)]
    pub installer: Option<InstallerKind>,
    /// Rebuild an installed version (e.g. a broken venv), and allow versions outside the supported range
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

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

pub fn run(ctx: &Ctx, args: &InstallArgs) -> anyhow::Result<u8> {
    // The flags are in the settings (`--python`, `--installer`, the source flags).
    let settings = &ctx.settings;
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine install", ctx.printer)?;
    let store = Store::new(&ctx.paths);
    store.clean_leftovers(ctx.printer)?;
    let (source, origin) = source_or_receipt(ctx, &settings.source, &store);
    let plan = Plan {
        requested: args.version.as_deref().map(parse_requested).transpose()?,
        source,
        remember_source: origin == "flags",
        python: config::sourced_python(&settings.python),
        installer: *settings.installer.get()?,
        force: args.force,
    };
    let outcome = install_locked(ctx, &store, plan)?;
    report(ctx.printer, &outcome, args.json);
    crate::engine::warn_if_running_another(&ctx.paths, ctx.printer, &outcome.version);
    Ok(0)
}

pub(crate) fn report(printer: &Printer, outcome: &Outcome, json: bool) {
    if json {
        printer.json(outcome);
        return;
    }
    let what = match outcome.action {
        "installed" => "installed",
        "reinstalled" => "rebuilt",
        "switched" => "switched to",
        _ => "already current:",
    };
    let from = match &outcome.previous {
        Some(p) if p != &outcome.version => format!(" (previous: {p})"),
        _ => String::new(),
    };
    printer.result(&format!(
        "{what} {ENGINE_DIST} {} (protocol {}, python {}, {}){from}",
        outcome.version,
        outcome.receipt.protocol_version,
        outcome.receipt.python.version,
        outcome.receipt.installer
    ));
}

/// Flags as a source; local paths are made absolute so the remembered source works from any directory.
pub(crate) fn source_from_flags(args: &SourceArgs) -> anyhow::Result<EngineSource> {
    let local = |s: &str| -> anyhow::Result<String> {
        if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:") {
            Ok(s.to_owned())
        } else {
            Ok(crate::paths::absolute(Path::new(s))?.display().to_string())
        }
    };
    Ok(EngineSource {
        index_url: args.index_url.clone(),
        extra_index_urls: args.extra_index_url.clone(),
        find_links: args.find_links.as_deref().map(local).transpose()?,
        // A wheel URL stays a URL; a local path is made absolute.
        path: args
            .source
            .as_deref()
            .map(|p| {
                if crate::venv::wheel_url::is_url(p) {
                    Ok(p.to_owned())
                } else {
                    crate::paths::absolute(p)
                }
            })
            .transpose()?,
    })
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

fn parse_requested(v: &str) -> anyhow::Result<Version> {
    compat::parse_engine_version(v).ok_or_else(|| {
        CliError::new(
            ErrorKind::Usage,
            format!("--version {v:?} is not a release version like 0.1.1"),
        )
        .hint("pass a version as X.Y.Z, e.g. breadboard engine install --version 0.1.1")
        .into()
    })
}

/// Picks the version: the requested one (checked against the range and the source) or the newest in range.
fn select_version(plan: &Plan, printer: &Printer) -> anyhow::Result<Version> {
    if let Some(v) = &plan.requested {
        if !compat::in_range(v) {
            if !plan.force {
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
        }
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

/// The install flow; the caller holds the control lock and has cleaned leftovers.
pub(crate) fn install_locked(ctx: &Ctx, store: &Store, mut plan: Plan) -> anyhow::Result<Outcome> {
    let printer = ctx.printer;
    let steps = printer.steps(4);
    steps.step("resolving the engine version");

    // A pinned, installed version needs no network to be made current; a forced rebuild checks its source below.
    let version = match &plan.requested {
        Some(v) if store.is_complete(&v.to_string()) => v.clone(),
        _ => select_version(&plan, printer)?,
    };
    let v = version.to_string();
    let dir = store.dir(&v);
    let existing = store.read_receipt(&v)?;
    let mut rebuild = false;
    if let Some(receipt) = &existing {
        match store.health(&v) {
            Ok(()) if !plan.force => {
                let old = store.switch_to(&v)?;
                steps.finish();
                return Ok(Outcome {
                    action: if old.is_some() {
                        "switched"
                    } else {
                        "unchanged"
                    },
                    version: v,
                    path: dir,
                    previous: old.or_else(|| store.previous()),
                    receipt: receipt.clone(),
                });
            }
            Err(why) if !plan.force => {
                return Err(CliError::new(ErrorKind::Validation, format!("the venv of engine {v} is broken: {why}"))
                    .hint(format!(
                        "rebuild it from its receipt: breadboard engine install --version {v} --force   (add --python PATH \
                         if its interpreter {} is gone for good)",
                        receipt.python.path.display()
                    ))
                    .into());
            }
            _ => {
                rebuild = true;
                // Rebuild from the receipt: its interpreter, installer and (unless given anew) source.
                if plan.installer.is_none() {
                    plan.installer = Some(receipt.installer);
                }
                if !plan.remember_source && plan.source.is_empty() {
                    plan.source = EngineSource::from_record(&receipt.source);
                }
                // Fail fast (unreachable index, version gone) before tearing the old venv down.
                let offered = package_index::available_versions(&plan.source)?;
                if !offered.contains(&version) {
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
            }
        }
    }

    let log = ctx.paths.logs_dir().join(format!("install-{v}.log"));
    ctx.paths.ensure_logs_dir()?;
    let _ = std::fs::remove_file(&log);
    let mut installer = Installer::choose(plan.installer, log, printer)?;
    let fallback = existing
        .as_ref()
        .map(|r| r.python.path.clone())
        .or_else(|| {
            store
                .current()
                .and_then(|c| store.read_receipt(&c).ok().flatten())
                .map(|r| r.python.path)
        });
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
    // A wheel URL is downloaded and verified before the old venv is torn down.
    let requirement = match &plan.source.path {
        Some(url) if crate::venv::wheel_url::is_url(url) => {
            let url = url.to_string_lossy();
            steps.step(&format!(
                "downloading {}",
                crate::venv::wheel_url::file_name(&url)
            ));
            crate::venv::wheel_url::fetch(&url, &ctx.paths.engine_dir().join("downloads"))?
                .display()
                .to_string()
        }
        Some(path) => path.display().to_string(),
        None => format!("{ENGINE_DIST}=={v}"),
    };

    // The dir is about to be torn down: never leave `current` pointing into it, so a crash leaves it absent.
    if store.current().as_deref() == Some(v.as_str()) {
        store.unlink_current()?;
    }
    fsutil::remove_dir_if_exists(&dir)?;
    Paths::ensure_dir(&ctx.paths.versions_dir())?;

    let result = (|| -> anyhow::Result<Receipt> {
        steps.step(&format!(
            "creating the venv ({}, python {})",
            installer.kind, interpreter.version
        ));
        installer.create_venv(&interpreter.path, &dir)?;
        steps.step(&format!(
            "installing {ENGINE_DIST} {v} from {}",
            plan.source.describe()
        ));
        installer.install(&dir, &requirement, &plan.source)?;
        steps.step("verifying the engine");
        let identity = installer::validate(&dir, &v)?;
        Ok(Receipt {
            schema: RECEIPT_SCHEMA,
            engine_version: v.clone(),
            requirement,
            source: plan.source.record(),
            python: interpreter.clone(),
            installer: installer.kind,
            protocol_version: identity.protocol_version,
            cli_version: crate::build_info::VERSION.to_owned(),
            installed_at: fsutil::now_rfc3339(),
        })
    })();
    let receipt = match result {
        Ok(r) => r,
        Err(e) => {
            steps.finish();
            // Best effort: the next run under the lock would delete it anyway (no receipt).
            let _ = fsutil::remove_dir_if_exists(&dir);
            return Err(e);
        }
    };
    store.write_receipt(&receipt)?;
    let old = store.switch_to(&v)?;
    if plan.remember_source {
        config::remember_source(&ctx.paths.config_file(), &plan.source)?;
    }
    steps.finish();
    Ok(Outcome {
        action: if rebuild { "reinstalled" } else { "installed" },
        version: v,
        path: dir,
        previous: old.or_else(|| store.previous()),
        receipt,
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
