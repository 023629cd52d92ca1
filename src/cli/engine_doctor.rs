//! `breadboard engine doctor [--json] [--strict] [--fix] [-v]`: find what is broken and say the command that fixes it.
//! Exit codes (docs/cli.md): 0 no errors (warnings allowed), 1 errors found (with `--strict`, warnings count too).

use serde::Serialize;

use anyhow::Context;

use crate::config::Config;
use crate::doctor::{self, Finding, Repair, Setup, Status};
use crate::engine;
use crate::lock::ControlLock;
use crate::paths::Paths;
use crate::printer::{Printer, Style};
use crate::venv::store::Store;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print `{summary, checks}` as JSON on stdout (nothing else goes there)
    #[arg(long)]
    pub json: bool,
    /// Count warnings as errors for the exit code
    #[arg(long)]
    pub strict: bool,
    /// Perform the safe repairs doctor knows (each is reported), then check again
    #[arg(long)]
    pub fix: bool,
}

#[derive(Serialize)]
struct Summary {
    errors: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    summary: Summary,
    checks: &'a [Finding],
    /// Every setting with its value and where it came from (no secret is ever in a value).
    settings: Vec<crate::settings::Entry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    repairs: Vec<String>,
}

/// Doctor loads the config itself: a config that does not parse is a finding here, not a fatal error.
pub fn run(paths: &Paths, printer: &Printer, args: &DoctorArgs) -> anyhow::Result<u8> {
    let mut findings = check(paths);
    let mut repairs = Vec::new();
    if args.fix {
        repairs = repair(paths, printer, &findings)?;
        if !repairs.is_empty() {
            findings = check(paths);
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.status == Status::Error)
        .count();
    let warnings = findings.iter().filter(|f| f.status == Status::Warn).count();
    if args.json {
        let config = Config::load_quiet(&paths.config_file()).ok();
        printer.json(&Report {
            summary: Summary { errors, warnings },
            checks: &findings,
            settings: crate::settings::Settings::report(paths, config.as_ref()),
            repairs,
        });
    } else {
        print_human(printer, &findings, errors, warnings);
    }
    let failed = errors > 0 || (args.strict && warnings > 0);
    Ok(if failed { 1 } else { 0 })
}

fn check(paths: &Paths) -> Vec<Finding> {
    let config = Config::load_quiet(&paths.config_file()).map_err(|e| format!("{e:#}"));
    let settings = crate::settings::Settings::without_command(paths, config.as_ref().ok());
    let setup = Setup {
        paths,
        config,
        settings,
    };
    doctor::all_checks(&setup)
}

fn print_human(printer: &Printer, findings: &[Finding], errors: usize, warnings: usize) {
    let mut section = "";
    for f in findings {
        if f.section != section {
            section = f.section;
            printer.info(&printer.style(Style::Bold, section));
        }
        let mark = match f.status {
            Status::Ok => printer.style(Style::Green, "[✓]"),
            Status::Warn => printer.style(Style::Yellow, "[!]"),
            Status::Error => printer.style(Style::Red, "[✗]"),
        };
        printer.info(&format!("  {mark} {}", f.title));
        // Passing checks are one line; their details only with -v (flutter doctor style).
        if (f.status != Status::Ok || printer.verbose()) && !f.detail.is_empty() {
            printer.info(&format!("      {}", f.detail));
        }
        if let Some(fix) = &f.fix {
            let lead = if is_command(fix) {
                "You can solve this by running:"
            } else {
                "To solve this:"
            };
            printer.info(&format!("      {lead} {}", printer.style(Style::Bold, fix)));
        }
    }
    let summary = match (errors, warnings) {
        (0, 0) => "No issues found.".to_owned(),
        (e, w) => format!("Doctor found {e} error(s) and {w} warning(s)."),
    };
    printer.info("");
    printer.info(&summary);
}

/// The safe repairs, each reported. File repairs run under the control lock; a venv rebuild runs this binary's own
/// `engine install --force` afterwards, which takes the lock itself.
fn repair(paths: &Paths, printer: &Printer, findings: &[Finding]) -> anyhow::Result<Vec<String>> {
    let mut repairs: Vec<Repair> = Vec::new();
    for repair in findings
        .iter()
        .filter(|f| f.status != Status::Ok)
        .filter_map(|f| f.repair.clone())
    {
        if !repairs.contains(&repair) {
            repairs.push(repair);
        }
    }
    if repairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    let mut report = |result: anyhow::Result<Option<String>>| match result {
        Ok(Some(what)) => {
            printer.info(&format!("fixed: {what}"));
            done.push(what);
        }
        Ok(None) => {}
        // One repair failing must not hide the others or the report: say it and go on.
        Err(e) => printer.warn(&format!("could not repair: {e:#}")),
    };
    {
        let _lock = ControlLock::acquire(paths, "breadboard engine doctor --fix", printer)?;
        for repair in &repairs {
            report(file_repair(paths, printer, repair));
        }
    }
    for repair in &repairs {
        if let Repair::RebuildVenv { version } = repair {
            report(rebuild(printer, version).map(Some));
        }
    }
    Ok(done)
}

/// A repair of files under `run/` or `engine/`, with the control lock held.
fn file_repair(
    paths: &Paths,
    printer: &Printer,
    repair: &Repair,
) -> anyhow::Result<Option<String>> {
    Ok(Some(match repair {
        Repair::ChmodPrivate(path) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = if path.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
            format!("chmod {mode:o} {}", path.display())
        }
        Repair::MakePrivate(list) => {
            let mut done = 0;
            for path in list {
                // The home only loses others' write bit: an open but read-only home is fine, and may be on purpose.
                let strip = if *path == paths.home { 0o022 } else { 0o077 };
                if make_private(path, strip)
                    .with_context(|| format!("chmod go-rwx {}", path.display()))?
                {
                    done += 1;
                }
            }
            if done == 0 {
                return Ok(None);
            }
            format!("made {done} path(s) private to you (chmod go-rwx)")
        }
        Repair::CleanLeftovers => {
            Store::new(paths).clean_leftovers(printer)?;
            "removed half-installed engine versions".to_owned()
        }
        Repair::RemoveStale { instance_id } => {
            // The findings were made before the lock was ours (slow checks ran in between): an `engine start` may
            // have registered a live engine since. Look again, and clean only the same dead instance.
            match engine::diagnose(paths, Some(printer), true)? {
                d if !d.is_live() && d.stale().map(|r| &r.instance_id) == instance_id.as_ref() => {
                    engine::clean_stale(paths, d.stale(), printer);
                    match instance_id {
                        Some(id) => {
                            format!("removed the stale registration of engine instance {id}")
                        }
                        None => "moved the corrupt engine registration aside".to_owned(),
                    }
                }
                _ => {
                    printer.info(
                        "skipped the stale registration: an engine registered since doctor looked",
                    );
                    return Ok(None);
                }
            }
        }
        Repair::RebuildVenv { .. } => return Ok(None),
        Repair::EndLeftovers => {
            // Looked at again under the lock: the running instance (if any) may have changed since.
            let live = match engine::diagnose(paths, None, false)? {
                engine::Diagnosis::Live(l) => Some(l.reg.instance_id),
                engine::Diagnosis::Unregistered => return Ok(None),
                _ => None,
            };
            let left = engine::marked_leftovers(paths, live.as_deref());
            engine::end_marked_leftovers(paths, printer, live.as_deref());
            format!(
                "ended {} leftover process(es) of an earlier engine",
                left.len()
            )
        }
    }))
}

/// Takes the `strip` bits off `path` when it has any; true when it changed. Opened with O_NOFOLLOW and changed through
/// that descriptor, so a symlink swapped in since doctor looked is never followed. A socket (which cannot be opened)
/// is changed by path after a fresh lstat.
fn make_private(path: &std::path::Path, strip: u32) -> anyhow::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => {
            let mode = file.metadata()?.permissions().mode() & 0o7777;
            if mode & strip == 0 {
                return Ok(false);
            }
            file.set_permissions(std::fs::Permissions::from_mode(mode & !strip))?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(_) => {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return Ok(false);
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() || mode & strip == 0 {
                return Ok(false);
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !strip))?;
            Ok(true)
        }
    }
}

/// Rebuilds a venv from its receipt (same Python, installer and source) with this binary's own install.
fn rebuild(printer: &Printer, version: &str) -> anyhow::Result<String> {
    printer.info(&format!("rebuilding engine {version} from its receipt..."));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["engine", "install", "--force", "--version", version])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        anyhow::bail!(
            "rebuilding engine {version} failed ({status}); run `breadboard engine install --force --version {version} -v`"
        );
    }
    Ok(format!(
        "rebuilt engine {version} (breadboard engine install --force --version {version})"
    ))
}

/// Whether a fix is a command to run, or advice (edit a file, free some space) that "running" would misdescribe.
fn is_command(fix: &str) -> bool {
    const PROGRAMS: [&str; 12] = [
        "breadboard",
        "chmod",
        "chown",
        "sudo",
        "pip",
        "export",
        "mv",
        "rm",
        "kill",
        "curl",
        "uv",
        "unset",
    ];
    let first = fix.split_whitespace().next().unwrap_or_default();
    PROGRAMS.contains(&first) || first.starts_with('/') || first.starts_with("BREADBOARD_")
}

#[cfg(test)]
mod tests {
    use super::is_command;

    #[test]
    fn commands_are_told_from_advice() {
        assert!(is_command(
            "breadboard engine install --force --version 0.1.1"
        ));
        assert!(is_command("chmod 700 /home/me/.breadboard/run"));
        assert!(!is_command(
            "fix the file, or move it aside to start from defaults: mv a a.bak"
        ));
        assert!(!is_command(
            "free some space before `breadboard engine upgrade`"
        ));
    }
}
