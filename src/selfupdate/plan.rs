//! What `breadboard upgrade` does with a release: which versions it accepts, and whether moving to one is an upgrade,
//! a downgrade or nothing.

use semver::Version;

use crate::error::{CliError, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Unchanged,
    Upgrade,
    Downgrade,
}

impl Action {
    /// `upgraded`, `downgraded` or `unchanged`, as the result line and `--json` say it.
    pub(crate) fn done(self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Upgrade => "upgraded",
            Action::Downgrade => "downgraded",
        }
    }
}

/// Semver order. Without `--version` only a newer release moves (a build newer than the latest release stays); an
/// explicit version moves either way, reported as a downgrade when lower (as `uv self update` does).
pub(crate) fn plan(current: &str, target: &str, explicit: bool) -> Action {
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

/// `V` or `vV`, a full semver version (uv accepts only exact versions for a pinned self-update).
pub(crate) fn parse_version(v: &str) -> anyhow::Result<String> {
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
