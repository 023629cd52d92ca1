//! `breadboard engine install`: build, validate and commit a venv for one engine version, then make it current
//! (the flow is `venv::install`, shared with `engine upgrade`); this file parses the flags and prints the outcome.

use std::path::{Path, PathBuf};

use semver::Version;

use super::{Ctx, SourceArgs};
use crate::compat::{self, ENGINE_DIST};
use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;
use crate::venv::index::EngineSource;
use crate::venv::install::{self, Outcome};
use crate::venv::store::InstallerKind;

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

pub fn run(ctx: &Ctx, args: &InstallArgs) -> anyhow::Result<u8> {
    let requested = args.version.as_deref().map(parse_requested).transpose()?;
    let outcome = install::install(ctx, requested, args.force)?;
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
