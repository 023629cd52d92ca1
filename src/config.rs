//! `config.toml` under `BREADBOARD_HOME`. Read with serde into typed sections; written back with `toml_edit` so the
//! user's comments and ordering survive when breadboard remembers an install source.
//!
//! Precedence for every value: flag > env var > config > default. Unknown keys are warned about, never fatal, so an
//! older CLI can read a newer config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub engine: EngineConfig,
    pub python: PythonConfig,
    pub protocol: ProtocolConfig,
    pub ray: RayConfig,
    pub client: ClientConfig,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub find_links: Option<String>,
    pub source: Option<PathBuf>,
    /// `uv` or `pip`.
    pub installer: Option<String>,
    /// Supervisor issue: the command that runs the engine.
    pub command: Option<toml::Value>,
    /// Supervisor issue: restart policy.
    pub restart: Option<toml::Value>,
    /// The port `engine start` serves on (as `--port`; env `BREADBOARD_CLI_PORT`).
    pub port: Option<u16>,
    /// `engine start` serves HTTPS with these (as `--ssl-certfile`/`--ssl-keyfile`); relative to config.toml's folder.
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PythonConfig {
    pub path: Option<PathBuf>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProtocolConfig {
    /// `strict` or `soft`.
    pub mode: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RayConfig {
    pub address: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// `[client]`: the engine that `ask` and `sessions` talk to when it is not the local one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// A remote engine (as `--url`; env `BREADBOARD_URL`).
    pub url: Option<String>,
    /// A file holding that engine's token (as `--token-file`; env `BREADBOARD_API_TOKEN_FILE`). A relative path is
    /// relative to the directory of config.toml.
    pub token_file: Option<PathBuf>,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

impl Config {
    /// Loads `path`; a missing file is an empty config. Warns once per unknown key.
    pub fn load(path: &Path, printer: &Printer) -> anyhow::Result<Config> {
        let Some(text) = read_text(path)? else {
            return Ok(Config::default());
        };
        let config: Config = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        for key in config.unknown_keys() {
            printer.warn(&format!(
                "unknown key `{key}` in {} (ignored)",
                path.display()
            ));
        }
        Ok(config)
    }

    /// Parses without printing warnings (for doctor, which reports unknown keys as a finding).
    pub fn load_quiet(path: &Path) -> anyhow::Result<Config> {
        match read_text(path)? {
            Some(text) => toml::from_str(&text).map_err(|e| parse_error(path, &text, &e)),
            None => Ok(Config::default()),
        }
    }

    pub fn unknown_keys(&self) -> Vec<String> {
        let sections: [(&str, &BTreeMap<String, toml::Value>); 5] = [
            ("engine.", &self.engine.unknown),
            ("python.", &self.python.unknown),
            ("protocol.", &self.protocol.unknown),
            ("ray.", &self.ray.unknown),
            ("client.", &self.client.unknown),
        ];
        let mut keys: Vec<String> = self.unknown.keys().cloned().collect();
        for (prefix, map) in sections {
            keys.extend(map.keys().map(|k| format!("{prefix}{k}")));
        }
        keys
    }
}

/// The config file's text; `None` when there is none. Bytes that are not UTF-8 are a config error (exit 3) like any
/// other that keeps the file from parsing.
fn read_text(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(CliError::new(
            ErrorKind::Config,
            format!("could not parse {}: it is not UTF-8 text", path.display()),
        )
        .hint(move_aside_hint(path))
        .into()),
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

fn move_aside_hint(path: &Path) -> String {
    format!(
        "fix the file, or move it aside to start from defaults: mv {0} {0}.bak",
        path.display()
    )
}

fn parse_error(path: &Path, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let location = match err.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    let detail = in_config_terms(err.message().trim());
    CliError::new(
        ErrorKind::Config,
        format!("could not parse {}{location}: {detail}", path.display()),
    )
    .hint(move_aside_hint(path))
    .into()
}

/// serde's words for our types are Rust's ("expected struct EngineConfig"); say them as the file's terms.
fn in_config_terms(message: &str) -> String {
    [
        (
            "expected struct EngineConfig",
            "expected the table [engine]",
        ),
        (
            "expected struct PythonConfig",
            "expected the table [python]",
        ),
        (
            "expected struct ProtocolConfig",
            "expected the table [protocol]",
        ),
        ("expected struct RayConfig", "expected the table [ray]"),
        (
            "expected struct ClientConfig",
            "expected the table [client]",
        ),
        ("expected u16", "expected a port number (1-65535)"),
    ]
    .iter()
    .fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Sets (or, with `None`, removes) `[section] key` in the config file, preserving everything else.
pub(crate) fn write_keys(
    path: &Path,
    section: &str,
    values: &[(&str, Option<toml_edit::Value>)],
) -> anyhow::Result<()> {
    let text = read_text(path)?.unwrap_or_default();
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        CliError::new(
            ErrorKind::Config,
            format!("could not parse {}: {e}", path.display()),
        )
    })?;
    let table = doc
        .entry(section)
        .or_insert_with(toml_edit::table)
        .as_table_mut()
        .with_context(|| format!("`{section}` in {} is not a table", path.display()))?;
    for (key, value) in values {
        match value {
            Some(v) => {
                table.insert(key, toml_edit::Item::Value(v.clone()));
            }
            None => {
                table.remove(key);
            }
        }
    }
    // Private: an index URL in it can carry credentials.
    crate::fsutil::write_private(path, doc.to_string().as_bytes())
}

/// An interpreter request together with where it came from, as the installer's messages name it.
#[derive(Debug, Clone)]
pub(crate) struct Sourced<T> {
    pub value: T,
    pub origin: crate::venv::python::Origin,
}

/// Remembers `source` in `[engine]` so a later `engine upgrade` uses the same one.
pub(crate) fn remember_source(
    path: &Path,
    source: &crate::venv::index::EngineSource,
) -> anyhow::Result<()> {
    let s = |v: &Option<String>| v.as_ref().map(|v| toml_edit::Value::from(v.as_str()));
    let extra = (!source.extra_index_urls.is_empty()).then(|| {
        toml_edit::Value::Array(source.extra_index_urls.iter().map(String::as_str).collect())
    });
    write_keys(
        path,
        "engine",
        &[
            ("index_url", s(&source.index_url)),
            ("extra_index_urls", extra),
            ("find_links", s(&source.find_links)),
            (
                "source",
                source
                    .path
                    .as_ref()
                    .map(|p| toml_edit::Value::from(p.display().to_string())),
            ),
        ],
    )
}

/// A resolved interpreter setting as the installer's messages name it.
pub(crate) fn sourced_python(
    python: &crate::settings::Value<Option<PathBuf>>,
) -> Option<Sourced<PathBuf>> {
    use crate::settings::Origin as From;
    use crate::venv::python::Origin;
    let value = python.get().ok()?.clone()?;
    let origin = match python.origin {
        From::Flag(_) => Origin::Flag,
        From::Env(_) => Origin::Env,
        From::Config { .. } | From::Default => Origin::Config,
    };
    Some(Sourced { value, origin })
}

/// A remote engine's base URL: `http://HOST:PORT` or `https://HOST:PORT` (a path prefix allowed, no query), without
/// the trailing `/`. `origin` names where the value came from (`--url`, `BREADBOARD_URL`, `[client] url ...`).
pub(crate) fn check_engine_url(url: &str, origin: &str) -> Result<String, CliError> {
    let base = url.trim_end_matches('/');
    let host = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    // Credentials in the URL would be printed in every message that names the engine, and end up in shell history:
    // refused without repeating them.
    if host.is_some_and(|rest| rest.split('/').next().unwrap_or("").contains('@')) {
        return Err(CliError::new(
            ErrorKind::Usage,
            format!("{origin} holds credentials (user:password@host); a token never goes in a URL"),
        )
        .hint("give the URL as https://HOST:PORT and the token with --token-file FILE or BREADBOARD_API_TOKEN_FILE"));
    }
    match host {
        Some(rest)
            if !rest.is_empty()
                && !base.contains(['?', '#'])
                && !base.contains(char::is_whitespace) =>
        {
            Ok(base.to_owned())
        }
        _ => Err(CliError::new(
            ErrorKind::Usage,
            format!("{origin} is {url:?}: expected http://HOST:PORT or https://HOST:PORT"),
        )),
    }
}

/// How `[client] url` is named in messages.
pub(crate) const CLIENT_URL_ORIGIN: &str = "[client] url in config.toml";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_are_said_in_the_file_s_terms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let printer = Printer::new(crate::printer::Verbosity::Quiet, Default::default(), true);
        for (text, want) in [
            ("engine = 5\n", "expected the table [engine]"),
            (
                "[engine]\nport = 70000\n",
                "expected a port number (1-65535)",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Config::load(&path, &printer).unwrap_err());
            assert!(err.contains(want) && !err.contains("struct"), "{err}");
        }
    }

    #[test]
    fn the_client_table_is_known_and_checked() {
        let config: Config = toml::from_str(
            "[client]\nurl = \"https://engine.example:8443/\"\ntoken_file = \"tok\"\n",
        )
        .unwrap();
        assert!(config.unknown_keys().is_empty());
        // Resolving `[client]` (with the environment and flags) is the settings' (settings/tests.rs).
        assert_eq!(
            check_engine_url("https://engine.example:8443/", "--url").unwrap(),
            "https://engine.example:8443"
        );
        for bad in ["engine:8443", "http://", "http://h:1/?t=x", "ftp://h"] {
            assert!(check_engine_url(bad, "--url").is_err(), "{bad}");
        }
        // Credentials in a URL are refused without being repeated.
        let err = check_engine_url("https://me:hunter2@h:1", "--url").unwrap_err();
        assert!(
            !err.message.contains("hunter2") && err.message.contains("credentials"),
            "{}",
            err.message
        );
        assert!(check_engine_url("https://h:1/path@x", "--url").is_ok());
        let bad: Config = toml::from_str("[client]\nurl = \"h:1\"\nuser = 1\n").unwrap();
        assert_eq!(bad.unknown_keys(), ["client.user"]);
    }

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nb = [x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 11), (2, 6));
    }

    #[test]
    fn write_keys_preserves_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# mine\n[python]\npath = \"/usr/bin/python3\" # keep\n",
        )
        .unwrap();
        write_keys(
            &path,
            "engine",
            &[
                ("index_url", Some("http://x/simple/".into())),
                ("find_links", None),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# mine") && text.contains("# keep"), "{text}");
        assert!(
            text.contains("[engine]\nindex_url = \"http://x/simple/\""),
            "{text}"
        );
    }
}
