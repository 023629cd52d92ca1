//! Every environment variable breadboard reads, in one place (uv pattern: `crates/uv-static/src/env_vars.rs`).
//! Precedence everywhere: command-line flag > environment variable > `config.toml` > built-in default.

/// Root of everything breadboard owns (config, engine venvs, locks, logs, engine data). Default `~/.breadboard`.
pub(crate) const BREADBOARD_HOME: &str = "BREADBOARD_HOME";
/// Python interpreter used to create engine venvs (same as `--python`).
pub(crate) const BREADBOARD_PYTHON: &str = "BREADBOARD_PYTHON";
/// Path to the `uv` binary to use; otherwise `uv` is looked up on `PATH`.
pub(crate) const BREADBOARD_UV: &str = "BREADBOARD_UV";
/// Force the installer back end: `uv` or `pip` (same as `--installer`).
pub(crate) const BREADBOARD_INSTALLER: &str = "BREADBOARD_INSTALLER";
/// Package index for the engine (same as `--index-url`).
pub(crate) const BREADBOARD_INDEX_URL: &str = "BREADBOARD_INDEX_URL";
/// Extra package indexes, separated by whitespace (same as repeated `--extra-index-url`).
pub(crate) const BREADBOARD_EXTRA_INDEX_URL: &str = "BREADBOARD_EXTRA_INDEX_URL";
/// A directory (or URL) of wheels for offline installs (same as `--find-links`).
pub(crate) const BREADBOARD_FIND_LINKS: &str = "BREADBOARD_FIND_LINKS";
/// A local engine project directory or wheel (same as `--source`).
pub(crate) const BREADBOARD_ENGINE_SOURCE: &str = "BREADBOARD_ENGINE_SOURCE";
/// Seconds to wait for the control lock before giving up (default 600).
pub(crate) const BREADBOARD_LOCK_TIMEOUT: &str = "BREADBOARD_LOCK_TIMEOUT";
/// Any non-empty value disables colour (<https://no-color.org>).
pub(crate) const NO_COLOR: &str = "NO_COLOR";
/// Used to find the default `BREADBOARD_HOME`.
pub(crate) const HOME: &str = "HOME";

/// The engine's port (upstream BreadBoard's variable): `engine start` serves there, doctor checks it.
pub(crate) const BREADBOARD_CLI_PORT: &str = "BREADBOARD_CLI_PORT";

/// The value of an env var, treating an empty value as unset (so `FOO= breadboard ...` clears an override).
/// Settings are read through `crate::settings` (resolved once per command, with their origin), not with this.
pub(crate) fn get(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `0` or `1`: soft or strict engine handshake (same as `--protocol soft|strict`; config `protocol.mode`).
pub(crate) const BREADBOARD_PROTOCOL_STRICT: &str = "BREADBOARD_PROTOCOL_STRICT";
/// Run this command instead of the installed engine (a development checkout or the upstream `cli_bridge` server);
/// it gets its address and token by env (`BREADBOARD_CLI_HOST`, `BREADBOARD_CLI_PORT`, `BREADBOARD_API_TOKEN`).
pub(crate) const BREADBOARD_ENGINE_CMD: &str = "BREADBOARD_ENGINE_CMD";

/// The first delay before an automatic restart (`engine.restart = "on-failure"`), in milliseconds (default 1000).
/// Each crash doubles it, up to 30 s; it resets after 30 s of stable uptime. Meant for tests and impatient
/// development loops.
pub(crate) const BREADBOARD_RESTART_BACKOFF_MS: &str = "BREADBOARD_RESTART_BACKOFF_MS";
/// The size in bytes at which the supervisor rotates `engine.log` while running (default 50 MB).
pub(crate) const BREADBOARD_LOG_MAX_BYTES: &str = "BREADBOARD_LOG_MAX_BYTES";
/// Passed through to the engine: when it starts its local Ray (`background`, `lazy`, `off`).
pub(crate) const BREADBOARD_RAY_START: &str = "BREADBOARD_RAY_START";
/// Set by the npm launcher (`npm`, `pnpm`, `yarn` or `bun`): this copy belongs to that package manager, so
/// `breadboard upgrade` prints its command instead of replacing the binary.
pub(crate) const BREADBOARD_MANAGED_BY: &str = "BREADBOARD_MANAGED_BY";
/// Base of a release tree (`<base>/latest/manifest.json`, `<base>/<version>/...`), as for install.sh.
pub(crate) const BREADBOARD_RELEASES_URL: &str = "BREADBOARD_RELEASES_URL";
/// One release version's directory (`<dir>/manifest.json`); wins over `BREADBOARD_RELEASES_URL`, as for install.sh.
pub(crate) const BREADBOARD_DOWNLOAD_URL: &str = "BREADBOARD_DOWNLOAD_URL";
/// Set by CI systems; `breadboard upgrade` then never asks for confirmation (as without a terminal).
pub(crate) const CI: &str = "CI";

/// `engine start` serves HTTPS with this certificate and key (as `--ssl-certfile`/`--ssl-keyfile`); the engine reads
/// the same names.
pub(crate) const BREADBOARD_SSL_CERTFILE: &str = "BREADBOARD_SSL_CERTFILE";
pub(crate) const BREADBOARD_SSL_KEYFILE: &str = "BREADBOARD_SSL_KEYFILE";

/// A remote engine for `ask` and `sessions` (same as `--url`; config `[client] url`).
pub(crate) const BREADBOARD_URL: &str = "BREADBOARD_URL";
/// A file holding the remote engine's token (same as `--token-file`; config `[client] token_file`).
pub(crate) const BREADBOARD_API_TOKEN_FILE: &str = "BREADBOARD_API_TOKEN_FILE";
/// The remote engine's token itself. Prefer the file: a variable is inherited by every child process. (The
/// supervisor also hands the local engine its token under this name.)
pub(crate) const BREADBOARD_API_TOKEN: &str = "BREADBOARD_API_TOKEN";

/// Set by the supervisor on the engine it spawns (never on the CLI or the supervisor): `<instance id> <home>`.
/// Inherited by everything the engine starts, Ray's daemons and workers included, so whatever an instance left
/// behind is found by it (`/proc/<pid>/environ`), whoever its parent is now: the engine's reaper ends this
/// instance's at its end, and `engine start|stop|doctor` find any of this home's once no engine runs.
pub(crate) const BREADBOARD_ENGINE_MARK: &str = "BREADBOARD_ENGINE_MARK";
