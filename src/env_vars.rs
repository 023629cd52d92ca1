//! Every environment variable breadboard reads, in one place (uv pattern: `crates/uv-static/src/env_vars.rs`).
//! Precedence everywhere: command-line flag > environment variable > `config.toml` > built-in default.

/// Root of everything breadboard owns (config, engine venvs, locks, logs, engine data). Default `~/.breadboard`.
pub const BREADBOARD_HOME: &str = "BREADBOARD_HOME";
/// Python interpreter used to create engine venvs (same as `--python`).
pub const BREADBOARD_PYTHON: &str = "BREADBOARD_PYTHON";
/// Path to the `uv` binary to use; otherwise `uv` is looked up on `PATH`.
pub const BREADBOARD_UV: &str = "BREADBOARD_UV";
/// Force the installer back end: `uv` or `pip` (same as `--installer`).
pub const BREADBOARD_INSTALLER: &str = "BREADBOARD_INSTALLER";
/// Package index for the engine (same as `--index-url`).
pub const BREADBOARD_INDEX_URL: &str = "BREADBOARD_INDEX_URL";
/// Extra package indexes, separated by whitespace (same as repeated `--extra-index-url`).
pub const BREADBOARD_EXTRA_INDEX_URL: &str = "BREADBOARD_EXTRA_INDEX_URL";
/// A directory (or URL) of wheels for offline installs (same as `--find-links`).
pub const BREADBOARD_FIND_LINKS: &str = "BREADBOARD_FIND_LINKS";
/// A local engine project directory or wheel (same as `--source`).
pub const BREADBOARD_ENGINE_SOURCE: &str = "BREADBOARD_ENGINE_SOURCE";
/// Seconds to wait for the control lock before giving up (default 600).
pub const BREADBOARD_LOCK_TIMEOUT: &str = "BREADBOARD_LOCK_TIMEOUT";
/// Any non-empty value disables colour (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";
/// Used to find the default `BREADBOARD_HOME`.
pub const HOME: &str = "HOME";

/// The value of an env var, treating an empty value as unset (so `FOO= breadboard ...` clears an override).
pub fn get(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
