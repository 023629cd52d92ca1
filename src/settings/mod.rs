//! Every setting the CLI reads, resolved once per command from its flags, the environment and `config.toml`
//! (precedence: flag > env var > config > default), each value with the place it came from ([`Origin`]), so `-v`
//! and `engine doctor` can say where a value came from.
//!
//! Resolving never fails: an invalid value is kept as its error (same message and exit code as when it was read
//! where used) and returned when the setting is read, so a bad value only stops the commands that use it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::engine::{PortSpec, ProtocolMode};
use crate::env_vars as ev;
use crate::error::{CliError, ErrorKind};
use crate::venv::index::EngineSource;
use crate::venv::store::InstallerKind;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A command-line flag (`--port`; a source set from several flags names them all).
    Flag(String),
    /// An environment variable.
    Env(String),
    /// `key` (`engine.port`) of the config file `file`.
    Config { file: PathBuf, key: String },
    /// Nothing set it.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "flag {name}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Config { file, key } => write!(f, "config {}:{key}", file.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

fn flag(name: &str) -> Origin {
    Origin::Flag(name.to_owned())
}

fn var(name: &str) -> Origin {
    Origin::Env(name.to_owned())
}

/// A setting's value (or why it is invalid) and its origin.
#[derive(Debug, Clone)]
pub(crate) struct Value<T> {
    value: Result<T, Invalid>,
    pub origin: Origin,
}

/// An invalid value's error, kept to be returned each time the setting is read.
#[derive(Debug, Clone)]
struct Invalid {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
}

impl From<CliError> for Invalid {
    fn from(e: CliError) -> Invalid {
        Invalid {
            kind: e.kind,
            message: e.message,
            hint: e.hint,
        }
    }
}

impl<T> Value<T> {
    fn ok(value: T, origin: Origin) -> Value<T> {
        Value {
            value: Ok(value),
            origin,
        }
    }

    fn invalid(error: CliError, origin: Origin) -> Value<T> {
        Value {
            value: Err(error.into()),
            origin,
        }
    }

    fn from_result(value: Result<T, CliError>, origin: Origin) -> Value<T> {
        Value {
            value: value.map_err(Invalid::from),
            origin,
        }
    }

    /// The value, or the error that makes it invalid (exit code as the error kind says).
    pub(crate) fn get(&self) -> Result<&T, CliError> {
        self.value.as_ref().map_err(|e| {
            let err = CliError::new(e.kind, e.message.clone());
            match &e.hint {
                Some(h) => err.hint(h.clone()),
                None => err,
            }
        })
    }

    fn shown(&self, show: impl Fn(&T) -> String) -> String {
        match &self.value {
            Ok(v) => show(v),
            Err(e) => format!("invalid: {}", e.message),
        }
    }
}

/// What the command line said; `None`/empty means the flag was not given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    pub port: Option<PortSpec>,
    pub host: Option<String>,
    pub ray_address: Option<String>,
    pub protocol: Option<ProtocolMode>,
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub installer: Option<InstallerKind>,
    /// The source flags, local paths already absolute.
    pub source: EngineSource,
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// Where environment variables are read from: the process, or (in tests) a fixed set. An empty value is unset.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    fixed: Option<Vec<(String, String)>>,
}

impl Env {
    pub(crate) fn process() -> Env {
        Env { fixed: None }
    }

    #[cfg(test)]
    pub(crate) fn fixed(vars: &[(&str, &str)]) -> Env {
        Env {
            fixed: Some(
                vars.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        match &self.fixed {
            None => ev::get(name),
            Some(vars) => vars
                .iter()
                .rev()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone()),
        }
    }
}

/// The config file as a source: its values and its path (relative paths in it are taken from its folder).
#[derive(Clone, Copy)]
pub(crate) struct ConfigSource<'a> {
    pub config: &'a Config,
    pub file: &'a Path,
}

impl<'a> ConfigSource<'a> {
    /// `config` as the callers that know no file name see it (`config.toml`).
    pub(crate) fn unnamed(config: &'a Config) -> ConfigSource<'a> {
        ConfigSource {
            config,
            file: Path::new("config.toml"),
        }
    }

    fn origin(&self, key: &str) -> Origin {
        Origin::Config {
            file: self.file.to_owned(),
            key: key.to_owned(),
        }
    }

    /// A path from the file, relative to its folder; `None` when unset or empty.
    pub(crate) fn path(&self, p: &Option<PathBuf>) -> Option<PathBuf> {
        let p = p.as_ref().filter(|p| !p.as_os_str().is_empty())?;
        Some(match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.clone(),
        })
    }
}

/// The engine's TLS files, taken as a pair from one place (both or neither is checked when read).
#[derive(Debug, Clone)]
pub(crate) struct TlsPair {
    pub certfile: Value<Option<PathBuf>>,
    pub keyfile: Value<Option<PathBuf>>,
    /// How the pair's place is named in messages (`--ssl-certfile and --ssl-keyfile`, ...).
    pub from: &'static str,
}

/// Where a remote engine's token comes from. The token itself is never kept here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// No token set: the local engine's is `run/engine.token`; a remote engine gets none.
    None,
    /// A file holding it.
    File(PathBuf),
    /// The variable `BREADBOARD_API_TOKEN` (read when used, never shown).
    Variable,
}

impl TlsPair {
    /// The TLS files when both are set, `None` when neither; one without the other is a usage error.
    pub(crate) fn files(&self) -> Result<Option<(PathBuf, PathBuf)>, CliError> {
        match (self.certfile.get()?, self.keyfile.get()?) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            _ => Err(CliError::new(
                ErrorKind::Usage,
                format!(
                    "serving TLS needs both the certificate and its private key: {}",
                    self.from
                ),
            )),
        }
    }
}

/// The command to run instead of the installed engine, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineCommand {
    /// A shell snippet (`BREADBOARD_ENGINE_CMD`, or a string in config).
    Shell(String),
    /// An argv run as is (a list in config).
    Argv(Vec<String>),
}

/// Every setting the CLI reads, resolved once per command.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `BREADBOARD_HOME` (made canonical by `Paths`).
    pub home: Value<PathBuf>,
    /// `engine start`'s port (`--port`, `BREADBOARD_CLI_PORT`, `engine.port`, 9099).
    pub port: Value<PortSpec>,
    /// The address `engine start` binds (`--host`, 127.0.0.1).
    pub host: Value<String>,
    /// The supervisor's restart policy, `no` or `on-failure` (`engine.restart`).
    pub restart: Value<&'static str>,
    /// The handshake mode (`--protocol`, `BREADBOARD_PROTOCOL_STRICT`, `protocol.mode`, strict).
    pub protocol: Value<ProtocolMode>,
    pub tls: TlsPair,
    /// An engine command override (`BREADBOARD_ENGINE_CMD`, `engine.command`).
    pub engine_command: Value<Option<EngineCommand>>,
    /// A Ray cluster to join (`--ray-address`, `ray.address`).
    pub ray_address: Value<Option<String>>,
    /// `BREADBOARD_RAY_START`, passed through to the engine.
    pub ray_start: Value<Option<String>>,
    /// The interpreter for engine venvs; `None`: discover (`--python`, `BREADBOARD_PYTHON`, `python.path`).
    pub python: Value<Option<PathBuf>>,
    /// The forced installer; `None`: uv when found, else pip (`--installer`, `BREADBOARD_INSTALLER`,
    /// `engine.installer`).
    pub installer: Value<Option<InstallerKind>>,
    /// The `uv` binary; `None`: `uv` on PATH (`BREADBOARD_UV`).
    pub uv: Value<Option<PathBuf>>,
    /// The engine package source, taken as a unit (flags, env vars, config, PyPI).
    pub source: Value<EngineSource>,
    /// How long to wait for the control lock (`BREADBOARD_LOCK_TIMEOUT`, 600 s).
    pub lock_timeout: Value<Duration>,
    /// A remote engine for the client commands; `None`: the local one (`--url`, `BREADBOARD_URL`, `client.url`).
    pub client_url: Value<Option<String>>,
    /// The remote engine's token (`--token-file`, `BREADBOARD_API_TOKEN_FILE`, `BREADBOARD_API_TOKEN`,
    /// `client.token_file`).
    pub client_token: Value<TokenSource>,
    /// `BREADBOARD_API_TOKEN` is set but blank, so it is no token source: the client warns when it would have been.
    pub api_token_blank: bool,
    /// The supervisor's first restart delay (`BREADBOARD_RESTART_BACKOFF_MS`, 1 s).
    pub restart_backoff: Value<Duration>,
    /// Size at which the supervisor rotates the engine log (`BREADBOARD_LOG_MAX_BYTES`, 50 MB).
    pub log_max_bytes: Value<u64>,
    /// `upgrade`: one release version's directory (`BREADBOARD_DOWNLOAD_URL`; checked by `release.rs`).
    pub download_url: Value<Option<String>>,
    /// `upgrade`: a release tree (`BREADBOARD_RELEASES_URL`; else the install receipt's, else GitHub).
    pub releases_url: Value<Option<String>>,
    /// The package manager that owns this copy (`BREADBOARD_MANAGED_BY`, set by the npm launcher).
    pub managed_by: Value<Option<String>>,
}

/// One line of the settings report: `key = value (origin)`. Secrets are never in `value`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Entry {
    pub key: &'static str,
    pub value: String,
    pub origin: String,
}

impl Settings {
    /// Resolves every setting from `flags`, `env` and the config file (`home`: the home as resolved by `Paths`).
    pub(crate) fn resolve(
        flags: &Flags,
        env: &Env,
        config: ConfigSource<'_>,
        home: &Path,
    ) -> Settings {
        Settings {
            home: Value::ok(
                home.to_owned(),
                requested_home(env).map_or(Origin::Default, |(_, origin)| origin),
            ),
            port: port(flags, env, config),
            host: match &flags.host {
                Some(h) => Value::ok(h.clone(), flag("--host")),
                None => Value::ok(DEFAULT_HOST.to_owned(), Origin::Default),
            },
            restart: restart_policy(config),
            protocol: protocol_mode(flags, env, config),
            tls: tls_pair(flags, env, config),
            engine_command: engine_command(env, config),
            ray_address: match (&flags.ray_address, &config.config.ray.address) {
                (Some(a), _) => Value::ok(
                    Some(a.clone()).filter(|a| !a.is_empty()),
                    flag("--ray-address"),
                ),
                (None, Some(a)) if !a.is_empty() => {
                    Value::ok(Some(a.clone()), config.origin("ray.address"))
                }
                _ => Value::ok(None, Origin::Default),
            },
            ray_start: from_env(env, ev::BREADBOARD_RAY_START),
            python: python(flags, env, config),
            installer: installer(flags, env, config),
            uv: match env.get(ev::BREADBOARD_UV) {
                Some(p) => Value::ok(Some(PathBuf::from(p)), var(ev::BREADBOARD_UV)),
                None => Value::ok(None, Origin::Default),
            },
            source: engine_source(&flags.source, env, config),
            lock_timeout: lock_timeout(env),
            client_url: client_url(flags, env, config),
            client_token: client_token(flags, env, config),
            api_token_blank: env
                .get(ev::BREADBOARD_API_TOKEN)
                .is_some_and(|t| t.trim().is_empty()),
            restart_backoff: restart_backoff(env),
            log_max_bytes: match env.get(ev::BREADBOARD_LOG_MAX_BYTES) {
                Some(v) => match v.trim().parse() {
                    Ok(n) => Value::ok(n, var(ev::BREADBOARD_LOG_MAX_BYTES)),
                    // Ignored, as it always was: the supervisor has nobody to tell.
                    Err(_) => Value::ok(DEFAULT_LOG_MAX_BYTES, Origin::Default),
                },
                None => Value::ok(DEFAULT_LOG_MAX_BYTES, Origin::Default),
            },
            download_url: from_env(env, ev::BREADBOARD_DOWNLOAD_URL),
            releases_url: from_env(env, ev::BREADBOARD_RELEASES_URL),
            managed_by: from_env(env, ev::BREADBOARD_MANAGED_BY),
        }
    }

    /// The settings of a command that loads no config itself (`engine doctor`, `upgrade`): no flags, this process's
    /// environment, `config` (or the defaults when the config does not parse) from `paths`.
    pub(crate) fn without_command(
        paths: &crate::paths::Paths,
        config: Option<&Config>,
    ) -> Settings {
        let default = Config::default();
        let file = paths.config_file();
        let source = ConfigSource {
            config: config.unwrap_or(&default),
            file: &file,
        };
        Settings::resolve(&Flags::default(), &Env::process(), source, &paths.home)
    }

    /// The settings as `engine doctor` shows them (see [`Settings::without_command`]).
    pub(crate) fn report(paths: &crate::paths::Paths, config: Option<&Config>) -> Vec<Entry> {
        Settings::without_command(paths, config).entries()
    }

    /// Every setting as `key`, its value (`invalid: why` for an invalid one) and where it came from. A token is
    /// never shown, only where it comes from; credentials in an index URL are masked.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        fn entry<T>(key: &'static str, v: &Value<T>, show: impl Fn(&T) -> String) -> Entry {
            Entry {
                key,
                value: v.shown(show),
                origin: v.origin.to_string(),
            }
        }
        let path = |p: &PathBuf| p.display().to_string();
        let opt_path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
        };
        vec![
            entry("home", &self.home, path),
            entry("engine.port", &self.port, PortSpec::to_string),
            entry("engine.host", &self.host, String::clone),
            entry("engine.restart", &self.restart, |r| (*r).to_owned()),
            entry("protocol.mode", &self.protocol, |m| {
                match m {
                    ProtocolMode::Strict => "strict",
                    ProtocolMode::Soft => "soft",
                }
                .to_owned()
            }),
            entry("engine.ssl_certfile", &self.tls.certfile, opt_path),
            entry("engine.ssl_keyfile", &self.tls.keyfile, opt_path),
            entry("engine.command", &self.engine_command, |c| match c {
                None => "none (the installed engine)".to_owned(),
                Some(EngineCommand::Shell(s)) => s.clone(),
                Some(EngineCommand::Argv(a)) => format!("{a:?}"),
            }),
            entry("ray.address", &self.ray_address, |a| {
                a.clone().unwrap_or_else(|| "none (a local Ray)".to_owned())
            }),
            entry("engine.ray_start", &self.ray_start, |s| {
                s.clone()
                    .unwrap_or_else(|| "none (the engine starts Ray in the background)".to_owned())
            }),
            entry("python.path", &self.python, |p| {
                p.as_ref()
                    .map_or_else(|| "none (discover)".to_owned(), |p| p.display().to_string())
            }),
            entry("engine.installer", &self.installer, |k| {
                k.map_or_else(|| "auto".to_owned(), |k| k.to_string())
            }),
            entry("engine.uv", &self.uv, |p| {
                p.as_ref()
                    .map_or_else(|| "uv on PATH".to_owned(), |p| p.display().to_string())
            }),
            entry("engine.source", &self.source, |s| {
                mask_credentials(&s.describe())
            }),
            entry("lock.timeout", &self.lock_timeout, |d| {
                format!("{}s", d.as_secs_f64())
            }),
            entry("client.url", &self.client_url, |u| {
                u.clone()
                    .unwrap_or_else(|| "none (the local engine)".to_owned())
            }),
            entry("client.token", &self.client_token, |t| match t {
                TokenSource::None => "none".to_owned(),
                TokenSource::File(p) => format!("the file {}", p.display()),
                TokenSource::Variable => "(not shown)".to_owned(),
            }),
            entry("supervisor.restart_backoff", &self.restart_backoff, |d| {
                format!("{}ms", d.as_millis())
            }),
            entry(
                "supervisor.log_max_bytes",
                &self.log_max_bytes,
                u64::to_string,
            ),
            entry("upgrade.download_url", &self.download_url, |u| {
                u.as_deref()
                    .map_or_else(|| "none".to_owned(), mask_credentials)
            }),
            entry("upgrade.releases_url", &self.releases_url, |u| {
                u.as_deref().map_or_else(
                    || "none (install.sh's, else GitHub)".to_owned(),
                    mask_credentials,
                )
            }),
            entry("upgrade.managed_by", &self.managed_by, |m| {
                m.clone().unwrap_or_else(|| "none".to_owned())
            }),
        ]
    }

    /// Prints the settings to stderr, one per line, when `-v` was given.
    pub(crate) fn print_verbose(&self, printer: &crate::printer::Printer) {
        if printer.verbose() {
            print_entries(printer, &self.entries());
        }
    }
}

/// `setting KEY = VALUE (ORIGIN)` on stderr for each, shown with `-v` only.
pub(crate) fn print_entries(printer: &crate::printer::Printer, entries: &[Entry]) {
    for e in entries {
        printer.debug(&format!("setting {} = {} ({})", e.key, e.value, e.origin));
    }
}

pub(crate) const DEFAULT_HOST: &str = "127.0.0.1";
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_LOG_MAX_BYTES: u64 = 50 * 1024 * 1024;
const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest first restart delay (the backoff's cap).
pub(crate) const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// The settings of a command given no flags, from this process's environment and `config` (for the callers that
/// are handed only the config).
pub(crate) fn without_flags(config: &Config) -> Settings {
    Settings::resolve(
        &Flags::default(),
        &Env::process(),
        ConfigSource::unnamed(config),
        Path::new(""),
    )
}

mod resolve;
#[cfg(test)]
mod tests;

use resolve::*;
pub(crate) use resolve::{requested_home, tls_pair};
