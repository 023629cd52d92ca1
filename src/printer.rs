//! All output goes through [`Printer`] (uv pattern: `crates/uv/src/printer.rs`): stdout carries only results and
//! `--json`; messages, warnings and progress go to stderr. Colour only on a terminal and never with `NO_COLOR`;
//! progress bars only when stderr is a terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::env_vars;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    verbosity: Verbosity,
    color: bool,
    progress: bool,
    stdin_tty: bool,
}

#[derive(Clone, Copy)]
pub enum Style {
    Bold,
    Red,
    Green,
    Yellow,
    Dim,
}

impl Printer {
    pub fn new(verbosity: Verbosity, color: ColorChoice, no_progress: bool) -> Printer {
        let stderr_tty = std::io::stderr().is_terminal();
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stderr_tty && env_vars::get(env_vars::NO_COLOR).is_none(),
        };
        Printer {
            verbosity,
            color,
            progress: stderr_tty && !no_progress && verbosity == Verbosity::Normal,
            stdin_tty: std::io::stdin().is_terminal(),
        }
    }

    pub fn verbose(&self) -> bool {
        self.verbosity >= Verbosity::Verbose
    }

    /// True when a human can answer a prompt (both ends are terminals).
    pub fn interactive(&self) -> bool {
        self.stdin_tty && std::io::stderr().is_terminal()
    }

    pub fn style(&self, style: Style, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match style {
            Style::Bold => "1",
            Style::Red => "1;31",
            Style::Green => "32",
            Style::Yellow => "1;33",
            Style::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// A result line on stdout. Results are printed even with `-q`: quiet silences chatter, not answers.
    pub fn result(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    /// A `--json` document on stdout, pretty-printed and newline-terminated.
    pub fn json<T: serde::Serialize>(&self, value: &T) {
        let text = serde_json::to_string_pretty(value).expect("JSON output types always serialise");
        self.result(&text);
    }

    /// A status message on stderr (silenced by `-q`).
    pub fn info(&self, msg: &str) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{msg}");
        }
    }

    /// A message on stderr shown even with `-q` (crash reports: the user must see them).
    pub fn info_always(&self, msg: &str) {
        eprintln!("{msg}");
    }

    /// Asks a yes/no question on stderr whose default is yes; only call when [`Printer::interactive`].
    pub fn confirm_default_yes(&self, question: &str) -> bool {
        eprint!("{question} [Y/n] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "" | "y" | "yes"
        )
    }

    /// Detail shown with `-v` only.
    pub fn debug(&self, msg: &str) {
        if self.verbose() {
            eprintln!("{}", self.style(Style::Dim, msg));
        }
    }

    /// Warnings are shown even with `-q`: they point at something the user should fix.
    pub fn warn(&self, msg: &str) {
        eprintln!("{} {msg}", self.style(Style::Yellow, "warning:"));
    }

    pub fn error(&self, err: &anyhow::Error, hint: Option<&str>) {
        let mut text = format!("{} {err}", self.style(Style::Red, "error:"));
        for cause in err.chain().skip(1) {
            text.push_str(&format!(
                "\n  {} {cause}",
                self.style(Style::Dim, "caused by:")
            ));
        }
        if let Some(hint) = hint {
            text.push_str(&format!("\n{} {hint}", self.style(Style::Green, "hint:")));
        }
        eprintln!("{text}");
    }

    /// Asks a yes/no question on stderr; only call when [`Printer::interactive`]. Default is no.
    pub fn confirm(&self, question: &str) -> bool {
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    }

    /// A step-by-step progress display: a spinner on a terminal, plain `info` lines with `-v`, nothing otherwise.
    pub fn steps(&self, total: u64) -> Steps {
        let bar = if self.progress {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed:>3} {wide_msg}")
                    .expect("static template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            None
        };
        Steps {
            bar,
            printer: *self,
        }
    }
}

pub struct Steps {
    bar: Option<ProgressBar>,
    printer: Printer,
}

impl Steps {
    pub fn step(&self, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(msg.to_owned());
            }
            None => self.printer.debug(msg),
        }
    }

    /// Prints a message above the bar without garbling it.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| self.printer.info(msg)),
            None => self.printer.info(msg),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.finish();
    }
}
