//! The error type every command returns to `main`: a message, an optional hint naming the command that fixes it, and
//! a stable exit code. Inside modules `anyhow` carries context; at the boundary `main` downcasts to [`CliError`]
//! (uv pattern: `crates/uv/src/commands/mod.rs` `ExitStatus` plus hints on errors).

use std::fmt;

/// Exit codes are part of the CLI's contract and documented in `docs/cli.md`. Never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 1: anything not covered below.
    Failure,
    /// 2: bad usage (also what clap exits with on a parse error), including a refused confirmation.
    Usage,
    /// 3: `config.toml` does not parse or holds an invalid value.
    Config,
    /// 4: the control lock stayed busy past the deadline.
    Lock,
    /// 5: no usable Python interpreter.
    Python,
    /// 6: the engine's package source or the release server is unreachable (or a download broke off), or does not
    /// offer the (compatible) version, or a build for this platform; or a release artifact that passed its checksum
    /// is not a usable tarball, or a release URL is refused.
    Source,
    /// 7: an engine venv failed validation or is broken; or a downloaded breadboard binary does not run here or
    /// reports the wrong version.
    Validation,
    /// 8: `breadboard upgrade` will not replace this copy: a package manager owns it (npm), or it is not the copy
    /// install.sh installed. The message names the command that upgrades it.
    NotSelfUpdatable,
    /// 9: a download failed its integrity check (sha256 or size differs from the release manifest).
    Integrity,
    /// 20: the turn ran and failed (the engine sent an `error` event).
    TurnFailed,
    /// 21: the engine is not installed, not running (with `--no-start`, or for a read-only command), not reachable,
    /// or it went away and did not come back in time.
    EngineUnavailable,
    /// 22: the engine has no such session (or there is no session to `--continue`).
    SessionNotFound,
    /// 23: the engine refused our token (401).
    TokenRefused,
    /// 24: the engine's protocol or version does not match (strict handshake).
    ProtocolMismatch,
    /// 25: the session is closed (completed, failed or stopped) and takes no more input.
    SessionClosed,
    /// 26: the engine no longer has the events after the point the stream would resume from.
    ResumeWindowExceeded,
    /// 124: a `--timeout` passed (the `timeout(1)` convention).
    Timeout,
    /// 130: interrupted by Ctrl-C (128 + SIGINT).
    Interrupted,
}

impl ErrorKind {
    pub fn exit_status(self) -> ExitStatus {
        match self {
            ErrorKind::Failure => ExitStatus::Failure,
            ErrorKind::Usage => ExitStatus::Usage,
            ErrorKind::Config => ExitStatus::Config,
            ErrorKind::Lock => ExitStatus::Lock,
            ErrorKind::Python => ExitStatus::Python,
            ErrorKind::Source => ExitStatus::Source,
            ErrorKind::Validation => ExitStatus::Validation,
            ErrorKind::NotSelfUpdatable => ExitStatus::NotSelfUpdatable,
            ErrorKind::Integrity => ExitStatus::Integrity,
            ErrorKind::TurnFailed => ExitStatus::TurnFailed,
            ErrorKind::EngineUnavailable => ExitStatus::EngineUnavailable,
            ErrorKind::SessionNotFound => ExitStatus::SessionNotFound,
            ErrorKind::TokenRefused => ExitStatus::TokenRefused,
            ErrorKind::ProtocolMismatch => ExitStatus::ProtocolMismatch,
            ErrorKind::SessionClosed => ExitStatus::SessionClosed,
            ErrorKind::ResumeWindowExceeded => ExitStatus::ResumeWindowExceeded,
            ErrorKind::Timeout => ExitStatus::Timeout,
            ErrorKind::Interrupted => ExitStatus::Interrupted,
        }
    }

    pub fn exit_code(self) -> u8 {
        self.exit_status().code()
    }
}

/// Every exit code the CLI documents (docs/cli.md, "Exit codes"), in one place: errors map here through
/// [`ErrorKind`], `engine status` through the engine's state, `--check` through [`ExitStatus::UpgradeAvailable`].
/// Part of the contract: never renumber (a test checks each is documented).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Config = 3,
    Lock = 4,
    Python = 5,
    Source = 6,
    Validation = 7,
    NotSelfUpdatable = 8,
    Integrity = 9,
    /// 10-15: `engine status`, the engine's state.
    Stopped = 10,
    Starting = 11,
    Unhealthy = 12,
    Incompatible = 13,
    Crashed = 14,
    /// `restart = "on-failure"` gave up.
    Errored = 15,
    TurnFailed = 20,
    EngineUnavailable = 21,
    SessionNotFound = 22,
    TokenRefused = 23,
    ProtocolMismatch = 24,
    SessionClosed = 25,
    ResumeWindowExceeded = 26,
    /// `engine upgrade --check`, `upgrade --check`: an upgrade is available (rustup's `check` convention).
    UpgradeAvailable = 100,
    Timeout = 124,
    Interrupted = 130,
}

impl ExitStatus {
    pub const ALL: [ExitStatus; 26] = [
        ExitStatus::Success,
        ExitStatus::Failure,
        ExitStatus::Usage,
        ExitStatus::Config,
        ExitStatus::Lock,
        ExitStatus::Python,
        ExitStatus::Source,
        ExitStatus::Validation,
        ExitStatus::NotSelfUpdatable,
        ExitStatus::Integrity,
        ExitStatus::Stopped,
        ExitStatus::Starting,
        ExitStatus::Unhealthy,
        ExitStatus::Incompatible,
        ExitStatus::Crashed,
        ExitStatus::Errored,
        ExitStatus::TurnFailed,
        ExitStatus::EngineUnavailable,
        ExitStatus::SessionNotFound,
        ExitStatus::TokenRefused,
        ExitStatus::ProtocolMismatch,
        ExitStatus::SessionClosed,
        ExitStatus::ResumeWindowExceeded,
        ExitStatus::UpgradeAvailable,
        ExitStatus::Timeout,
        ExitStatus::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for u8 {
    fn from(s: ExitStatus) -> u8 {
        s.code()
    }
}

/// Exit code of `engine upgrade --check` and `upgrade --check` when an upgrade is available (rustup `check` convention).
pub const EXIT_UPGRADE_AVAILABLE: u8 = ExitStatus::UpgradeAvailable as u8;

#[derive(Debug)]
pub struct CliError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Shorthand for returning a [`CliError`] through an `anyhow::Result`.
pub fn fail<T>(
    kind: ErrorKind,
    message: impl Into<String>,
    hint: Option<String>,
) -> anyhow::Result<T> {
    let mut e = CliError::new(kind, message);
    e.hint = hint;
    Err(e.into())
}

/// The exit code and hint for any error: the outermost [`CliError`] in the chain decides, else 1, with a hint for
/// the file-system errors whose cause is not this program (read-only, permissions, a full disk).
pub fn classify(err: &anyhow::Error) -> (u8, Option<&str>) {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return (e.kind.exit_code(), e.hint.as_deref());
        }
    }
    let hint = err
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(io_hint);
    (ErrorKind::Failure.exit_code(), hint)
}

/// What to do about an I/O error that comes from the machine rather than from breadboard.
pub fn io_hint(err: &std::io::Error) -> Option<&'static str> {
    match err.raw_os_error()? {
        libc::EROFS => Some(
            "that file system is mounted read-only: make it writable, or point BREADBOARD_HOME at a writable directory",
        ),
        libc::EACCES | libc::EPERM => Some(
            "permission denied on the path above: check its owner and mode (`ls -ld`), and run breadboard as that user or fix them",
        ),
        libc::ENOSPC | libc::EDQUOT => Some("the disk (or your quota) is full: free some space and retry"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in docs/cli.md names every code (10-15 as one row).
    #[test]
    fn every_exit_status_is_documented_and_distinct() {
        let doc = include_str!("../docs/cli.md");
        let section = doc
            .split("## Exit codes")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/cli.md has an Exit codes section");
        let mut documented = std::collections::BTreeSet::new();
        for row in section.lines().filter(|l| l.starts_with("| ")) {
            let cell = row
                .trim_start_matches("| ")
                .split(" |")
                .next()
                .unwrap_or("");
            match cell.split_once('-') {
                Some((a, b)) => {
                    if let (Ok(a), Ok(b)) = (a.parse::<u8>(), b.parse::<u8>()) {
                        documented.extend(a..=b);
                    }
                }
                None => {
                    if let Ok(n) = cell.parse::<u8>() {
                        documented.insert(n);
                    }
                }
            }
        }
        for status in ExitStatus::ALL {
            assert!(
                documented.contains(&status.code()),
                "exit code {} ({status:?}) is not in docs/cli.md",
                status.code()
            );
        }
    }
}
