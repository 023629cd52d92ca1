//! `breadboard engine doctor [--json] [--strict] [--fix] [-v]`: find what is broken and say the command that fixes it.
//! Exit codes (docs/cli.md): 0 no errors (warnings allowed), 1 errors found (with `--strict`, warnings count too).

use serde::Serialize;

use crate::config::Config;
use crate::doctor::{self, Finding, Setup, Status};
use crate::paths::Paths;
use crate::printer::{Printer, Style};

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
        repairs = doctor::repair(paths, printer, &findings)?;
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
