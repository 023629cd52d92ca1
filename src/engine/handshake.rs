//! The handshake: the protocol an engine speaks and its version against the pinned one, in strict or soft mode.

use crate::compat;
use crate::engine_client::Health;
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;
use crate::venv::store::Store;

/// Handshake problems (empty when compatible): protocol must be one the CLI speaks; the engine version must be the
/// pinned one (no pin for a command override).
pub(crate) fn handshake_problems(h: &Health, pinned: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if !compat::protocol_compatible(&h.protocol_version) {
        out.push(format!(
            "the engine speaks protocol {:?}, this CLI speaks {}",
            h.protocol_version,
            compat::PROTOCOL_VERSION
        ));
    }
    if let Some(pin) = pinned {
        if h.engine_version != pin {
            out.push(format!(
                "the engine is version {}, but the pinned (current) version is {pin}",
                h.engine_version
            ));
        }
    }
    out
}

/// A remote engine has no pinned version: its version must be in the range this CLI supports.
pub(crate) fn unsupported_version(h: &Health) -> Option<String> {
    let supported =
        compat::parse_engine_version(&h.engine_version).is_some_and(|v| compat::in_range(&v));
    (!supported).then(|| {
        format!(
            "the engine is version {:?}, outside the versions this CLI supports ({})",
            h.engine_version,
            compat::SUPPORTED_ENGINE
        )
    })
}

/// The version `engine/current` pins, from its receipt.
pub(crate) fn pinned_version(paths: &Paths) -> Option<String> {
    let store = Store::new(paths);
    let cur = store.current()?;
    store
        .read_receipt(&cur)
        .ok()
        .flatten()
        .map(|r| r.engine_version)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolMode {
    Strict,
    Soft,
}

/// The error of a failed strict handshake (the engine has been, or is being, stopped).
/// `stop_failed`: why the engine that failed its handshake could not be stopped (else it was).
pub(super) fn handshake_error(
    problems: &[String],
    pinned: Option<&str>,
    stop_failed: Option<anyhow::Error>,
) -> anyhow::Error {
    let stopped = match &stop_failed {
        None => "the engine was stopped".to_owned(),
        Some(e) => {
            format!("stopping the engine failed too ({e:#}): run `breadboard engine stop --force`")
        }
    };
    CliError::new(
        ErrorKind::Failure,
        format!(
            "handshake failed: {} (strict protocol mode); {stopped}",
            problems.join("; ")
        ),
    )
    .hint(match pinned {
        Some(p) => format!("reinstall the pinned engine: breadboard engine install --version {p} --force, or allow it with --protocol soft (BREADBOARD_PROTOCOL_STRICT=0)"),
        None => "use an engine that speaks protocol 1.x, or allow it with --protocol soft (BREADBOARD_PROTOCOL_STRICT=0)".to_owned(),
    })
    .into()
}
