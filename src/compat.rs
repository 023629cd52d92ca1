//! What this CLI is compatible with: the engine versions it supports and the protocol it speaks.

use semver::{Version, VersionReq};

/// Engine versions this CLI drives. Bumped together with the CLI when the engine's minor changes.
pub const SUPPORTED_ENGINE: &str = ">=0.1.0, <0.2.0";

/// The protocol this CLI speaks; an engine is compatible when its protocol has the same major version.
pub const PROTOCOL_VERSION: &str = "1.0";

/// The PyPI distribution name of the engine.
pub const ENGINE_DIST: &str = "breadboard-engine";

pub fn engine_req() -> VersionReq {
    VersionReq::parse(SUPPORTED_ENGINE).expect("SUPPORTED_ENGINE is a valid requirement")
}

pub fn in_range(version: &Version) -> bool {
    engine_req().matches(version)
}

/// Same major version: minors only add (see docs/protocol.md).
pub fn protocol_compatible(engine_protocol: &str) -> bool {
    let major = |v: &str| v.split('.').next().map(str::to_owned);
    major(engine_protocol).is_some() && major(engine_protocol) == major(PROTOCOL_VERSION)
}

/// Parses an engine version as published (PEP 440). Only the plain `X.Y.Z` releases map onto semver; pre-releases
/// and post-releases are skipped when picking a version, because the CLI only pins releases.
pub fn parse_engine_version(v: &str) -> Option<Version> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        Version::parse(v).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_protocol() {
        assert!(in_range(&Version::new(0, 1, 1)));
        assert!(!in_range(&Version::new(0, 2, 0)));
        assert!(protocol_compatible("1.3"));
        assert!(!protocol_compatible("2.0"));
        assert_eq!(parse_engine_version("0.1.1"), Some(Version::new(0, 1, 1)));
        assert_eq!(parse_engine_version("0.1.1rc1"), None);
        assert_eq!(parse_engine_version("0.1"), None);
    }
}
