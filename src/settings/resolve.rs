//! How each setting is resolved: flag > env var > config > default, with the same messages (and exit codes) for
//! invalid values as when they were read where used.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    flag, var, ConfigSource, EngineCommand, Env, Flags, Origin, TlsPair, TokenSource, Value,
    DEFAULT_LOCK_TIMEOUT, DEFAULT_RESTART_BACKOFF, MAX_RESTART_BACKOFF,
};
use crate::config::Config;
use crate::engine::{PortSpec, ProtocolMode, DEFAULT_PORT};
use crate::env_vars as ev;
use crate::error::{CliError, ErrorKind};
use crate::venv::index::EngineSource;
use crate::venv::store::InstallerKind;

/// `user:password@` of a URL replaced by `***@`, wherever a URL appears in `text`.
pub(super) fn mask_credentials(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find('/').unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => format!("{scheme}://***{}", &rest[at..]),
                    None => word.to_owned(),
                }
            }
            None => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn from_env(env: &Env, name: &str) -> Value<Option<String>> {
    match env.get(name) {
        Some(v) => Value::ok(Some(v), var(name)),
        None => Value::ok(None, Origin::Default),
    }
}

pub(super) fn port(flags: &Flags, env: &Env, config: ConfigSource<'_>) -> Value<PortSpec> {
    if let Some(p) = &flags.port {
        return Value::ok(p.clone(), flag("--port"));
    }
    let name = ev::BREADBOARD_CLI_PORT;
    if let Some(v) = env.get(name) {
        let port = v
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .map(PortSpec::Fixed)
            .ok_or_else(|| {
                CliError::new(
                    ErrorKind::Config,
                    format!("{name}={v:?} is not a port number"),
                )
                .hint(format!("unset {name} or set it to a port such as 9099"))
            });
        return Value::from_result(port, var(name));
    }
    match config.config.engine.port {
        Some(0) => Value::invalid(
            CliError::new(ErrorKind::Config, "engine.port = 0 in config.toml is not a port").hint(
                "set [engine] port to a port such as 9099, or remove it; for a free port use `--port auto`",
            ),
            config.origin("engine.port"),
        ),
        Some(p) => Value::ok(PortSpec::Fixed(p), config.origin("engine.port")),
        None => Value::ok(PortSpec::Fixed(DEFAULT_PORT), Origin::Default),
    }
}

pub(super) fn restart_policy(config: ConfigSource<'_>) -> Value<&'static str> {
    let origin = config.origin("engine.restart");
    match &config.config.engine.restart {
        None => Value::ok("no", Origin::Default),
        Some(toml::Value::String(s)) if s == "on-failure" => Value::ok("on-failure", origin),
        Some(toml::Value::String(s)) if s == "no" || s == "never" => Value::ok("no", origin),
        Some(other) => Value::invalid(
            CliError::new(
                ErrorKind::Config,
                format!(
                    "engine.restart = {other} in config.toml: expected \"no\" or \"on-failure\""
                ),
            )
            .hint("set [engine] restart = \"no\" or \"on-failure\""),
            origin,
        ),
    }
}

pub(super) fn protocol_mode(
    flags: &Flags,
    env: &Env,
    config: ConfigSource<'_>,
) -> Value<ProtocolMode> {
    if let Some(m) = flags.protocol {
        return Value::ok(m, flag("--protocol"));
    }
    let name = ev::BREADBOARD_PROTOCOL_STRICT;
    if let Some(v) = env.get(name) {
        let mode = match v.as_str() {
            "1" | "true" => Ok(ProtocolMode::Strict),
            "0" | "false" => Ok(ProtocolMode::Soft),
            _ => Err(CliError::new(
                ErrorKind::Config,
                format!("{name}={v:?}: expected 0 or 1"),
            )),
        };
        return Value::from_result(mode, var(name));
    }
    let origin = config.origin("protocol.mode");
    match config.config.protocol.mode.as_deref() {
        None => Value::ok(ProtocolMode::Strict, Origin::Default),
        Some("strict") => Value::ok(ProtocolMode::Strict, origin),
        Some("soft") => Value::ok(ProtocolMode::Soft, origin),
        Some(other) => Value::invalid(
            CliError::new(
                ErrorKind::Config,
                format!(
                    "protocol.mode = {other:?} in config.toml: expected \"strict\" or \"soft\""
                ),
            )
            .hint("set [protocol] mode = \"strict\" or \"soft\""),
            origin,
        ),
    }
}

/// Flags > env > config, the pair from one place.
pub(crate) fn tls_pair(flags: &Flags, env: &Env, config: ConfigSource<'_>) -> TlsPair {
    let (cert, key) = (ev::BREADBOARD_SSL_CERTFILE, ev::BREADBOARD_SSL_KEYFILE);
    if flags.ssl_certfile.is_some() || flags.ssl_keyfile.is_some() {
        TlsPair {
            certfile: Value::ok(flags.ssl_certfile.clone(), flag("--ssl-certfile")),
            keyfile: Value::ok(flags.ssl_keyfile.clone(), flag("--ssl-keyfile")),
            from: "--ssl-certfile and --ssl-keyfile",
        }
    } else if env.get(cert).is_some() || env.get(key).is_some() {
        TlsPair {
            certfile: Value::ok(env.get(cert).map(PathBuf::from), var(cert)),
            keyfile: Value::ok(env.get(key).map(PathBuf::from), var(key)),
            from: "BREADBOARD_SSL_CERTFILE and BREADBOARD_SSL_KEYFILE",
        }
    } else {
        let engine = &config.config.engine;
        let (c, k) = (
            config.path(&engine.ssl_certfile),
            config.path(&engine.ssl_keyfile),
        );
        let origin = |key: &str, set: bool| {
            if set {
                config.origin(key)
            } else {
                Origin::Default
            }
        };
        TlsPair {
            certfile: Value::ok(c.clone(), origin("engine.ssl_certfile", c.is_some())),
            keyfile: Value::ok(k.clone(), origin("engine.ssl_keyfile", k.is_some())),
            from: "engine.ssl_certfile and engine.ssl_keyfile in config.toml",
        }
    }
}

pub(super) fn engine_command(env: &Env, config: ConfigSource<'_>) -> Value<Option<EngineCommand>> {
    if let Some(cmd) = env.get(ev::BREADBOARD_ENGINE_CMD) {
        return Value::ok(
            Some(EngineCommand::Shell(cmd)),
            var(ev::BREADBOARD_ENGINE_CMD),
        );
    }
    let origin = config.origin("engine.command");
    let bad = || {
        CliError::new(
            ErrorKind::Config,
            "engine.command in config.toml must be a string or a list of strings",
        )
    };
    match &config.config.engine.command {
        None => Value::ok(None, Origin::Default),
        Some(toml::Value::String(s)) => Value::ok(Some(EngineCommand::Shell(s.clone())), origin),
        Some(toml::Value::Array(a)) => {
            let argv = a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())
                .map(|argv| Some(EngineCommand::Argv(argv)))
                .ok_or_else(bad);
            Value::from_result(argv, origin)
        }
        Some(_) => Value::invalid(bad(), origin),
    }
}

pub(super) fn python(flags: &Flags, env: &Env, config: ConfigSource<'_>) -> Value<Option<PathBuf>> {
    if let Some(p) = &flags.python {
        return Value::ok(Some(p.clone()), flag("--python"));
    }
    if let Some(p) = env.get(ev::BREADBOARD_PYTHON) {
        return Value::ok(Some(PathBuf::from(p)), var(ev::BREADBOARD_PYTHON));
    }
    match &config.config.python.path {
        Some(p) => Value::ok(Some(p.clone()), config.origin("python.path")),
        None => Value::ok(None, Origin::Default),
    }
}

pub(super) fn installer(
    flags: &Flags,
    env: &Env,
    config: ConfigSource<'_>,
) -> Value<Option<InstallerKind>> {
    if let Some(kind) = flags.installer {
        return Value::ok(Some(kind), flag("--installer"));
    }
    let parse = |v: &str, named: &str| match v {
        "uv" => Ok(Some(InstallerKind::Uv)),
        "pip" => Ok(Some(InstallerKind::Pip)),
        "auto" | "" => Ok(None),
        other => Err(CliError::new(
            ErrorKind::Config,
            format!("{named} is {other:?}; expected \"uv\", \"pip\" or \"auto\""),
        )
        .hint(format!("set {named} to \"uv\", \"pip\" or \"auto\""))),
    };
    let name = ev::BREADBOARD_INSTALLER;
    if let Some(v) = env.get(name) {
        return Value::from_result(parse(&v, name), var(name));
    }
    match &config.config.engine.installer {
        Some(v) => Value::from_result(
            parse(v, "[engine] installer in config.toml"),
            config.origin("engine.installer"),
        ),
        None => Value::ok(None, Origin::Default),
    }
}

/// The engine source: flags as a set, else env vars as a set, else config, else PyPI. A source is resolved as a unit
/// (not key by key) so `--find-links DIR` alone means offline even when config remembers an index.
pub(super) fn engine_source(
    flags: &EngineSource,
    env: &Env,
    config: ConfigSource<'_>,
) -> Value<EngineSource> {
    let names = |set: [(bool, &str); 4]| {
        set.iter()
            .filter(|(given, _)| *given)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let given = |s: &EngineSource| {
        [
            s.index_url.is_some(),
            !s.extra_index_urls.is_empty(),
            s.find_links.is_some(),
            s.path.is_some(),
        ]
    };
    let named = |s: &EngineSource, as_named: [&'static str; 4]| {
        let g = given(s);
        names([
            (g[0], as_named[0]),
            (g[1], as_named[1]),
            (g[2], as_named[2]),
            (g[3], as_named[3]),
        ])
    };
    if !flags.is_empty() {
        let names = named(
            flags,
            [
                "--index-url",
                "--extra-index-url",
                "--find-links",
                "--source",
            ],
        );
        return Value::ok(flags.clone(), Origin::Flag(names));
    }
    let from_env = EngineSource {
        index_url: env.get(ev::BREADBOARD_INDEX_URL),
        extra_index_urls: env
            .get(ev::BREADBOARD_EXTRA_INDEX_URL)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        find_links: env.get(ev::BREADBOARD_FIND_LINKS),
        path: env.get(ev::BREADBOARD_ENGINE_SOURCE).map(PathBuf::from),
    };
    if !from_env.is_empty() {
        let names = named(
            &from_env,
            [
                ev::BREADBOARD_INDEX_URL,
                ev::BREADBOARD_EXTRA_INDEX_URL,
                ev::BREADBOARD_FIND_LINKS,
                ev::BREADBOARD_ENGINE_SOURCE,
            ],
        );
        return Value::ok(from_env, Origin::Env(names));
    }
    let engine = &config.config.engine;
    let from_config = EngineSource {
        index_url: engine.index_url.clone(),
        extra_index_urls: engine.extra_index_urls.clone(),
        find_links: engine.find_links.clone(),
        path: engine.source.clone(),
    };
    if !from_config.is_empty() {
        let keys = named(
            &from_config,
            [
                "engine.index_url",
                "engine.extra_index_urls",
                "engine.find_links",
                "engine.source",
            ],
        );
        return Value::ok(from_config, config.origin(&keys));
    }
    Value::ok(EngineSource::default(), Origin::Default)
}

pub(super) fn lock_timeout(env: &Env) -> Value<Duration> {
    let name = ev::BREADBOARD_LOCK_TIMEOUT;
    let Some(v) = env.get(name) else {
        return Value::ok(DEFAULT_LOCK_TIMEOUT, Origin::Default);
    };
    let timeout = v
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            CliError::new(
                ErrorKind::Config,
                format!("{name}={v:?} is not a number of seconds"),
            )
            .hint(format!("unset {name} or set it to e.g. 600"))
        });
    Value::from_result(timeout, var(name))
}

pub(super) fn client_url(
    flags: &Flags,
    env: &Env,
    config: ConfigSource<'_>,
) -> Value<Option<String>> {
    use crate::config::check_engine_url;
    if let Some(u) = &flags.url {
        return Value::from_result(check_engine_url(u, "--url").map(Some), flag("--url"));
    }
    if let Some(u) = env.get(ev::BREADBOARD_URL) {
        return Value::from_result(
            check_engine_url(&u, ev::BREADBOARD_URL).map(Some),
            var(ev::BREADBOARD_URL),
        );
    }
    let url = configured_client_url(config.config);
    match url {
        Ok(None) => Value::ok(None, Origin::Default),
        url => Value::from_result(url, config.origin("client.url")),
    }
}

/// The remote engine of `[client] url`, checked; `None` when unset or empty. An invalid one is a config error (the
/// same check `--url` gets, exit 3 here since the file is at fault).
fn configured_client_url(config: &Config) -> Result<Option<String>, CliError> {
    match config.client.url.as_deref() {
        None | Some("") => Ok(None),
        Some(url) => crate::config::check_engine_url(url, crate::config::CLIENT_URL_ORIGIN)
            .map(Some)
            .map_err(|e| {
                CliError::new(ErrorKind::Config, e.message).hint(
                    "set [client] url in config.toml to http://HOST:PORT or https://HOST:PORT, or remove it",
                )
            }),
    }
}

/// `--token-file` > BREADBOARD_API_TOKEN_FILE > BREADBOARD_API_TOKEN > `[client] token_file`.
pub(super) fn client_token(
    flags: &Flags,
    env: &Env,
    config: ConfigSource<'_>,
) -> Value<TokenSource> {
    if let Some(p) = &flags.token_file {
        return Value::ok(TokenSource::File(p.clone()), flag("--token-file"));
    }
    if let Some(p) = env.get(ev::BREADBOARD_API_TOKEN_FILE) {
        return Value::ok(
            TokenSource::File(PathBuf::from(p)),
            var(ev::BREADBOARD_API_TOKEN_FILE),
        );
    }
    // Blank counts as unset: an empty bearer token would only earn a 401.
    if env
        .get(ev::BREADBOARD_API_TOKEN)
        .is_some_and(|t| !t.trim().is_empty())
    {
        return Value::ok(TokenSource::Variable, var(ev::BREADBOARD_API_TOKEN));
    }
    match config.path(&config.config.client.token_file) {
        Some(p) => Value::ok(TokenSource::File(p), config.origin("client.token_file")),
        None => Value::ok(TokenSource::None, Origin::Default),
    }
}

pub(super) fn restart_backoff(env: &Env) -> Value<Duration> {
    let name = ev::BREADBOARD_RESTART_BACKOFF_MS;
    match env.get(name) {
        None => Value::ok(DEFAULT_RESTART_BACKOFF, Origin::Default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) => Value::ok(
                Duration::from_millis(ms).min(MAX_RESTART_BACKOFF),
                var(name),
            ),
            Err(_) => Value::invalid(
                CliError::new(
                    ErrorKind::Config,
                    format!("ignoring {name}={v:?} (expected milliseconds); using 1000"),
                ),
                var(name),
            ),
        },
    }
}

/// The home as asked for, before `Paths` makes it canonical: `BREADBOARD_HOME`, else `~/.breadboard` (the default);
/// `None` when neither that nor `HOME` is set.
pub(crate) fn requested_home(env: &Env) -> Option<(PathBuf, Origin)> {
    if let Some(home) = env.get(ev::BREADBOARD_HOME) {
        return Some((PathBuf::from(home), var(ev::BREADBOARD_HOME)));
    }
    let user_home = env.get(ev::HOME)?;
    Some((
        PathBuf::from(user_home).join(".breadboard"),
        Origin::Default,
    ))
}
