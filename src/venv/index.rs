//! Where the engine comes from, and which engine versions that source offers.
//!
//! Sources: PyPI (default), another index (`--index-url`, PEP 503 HTML or PEP 691 JSON), a find-links directory or
//! URL (`--find-links`, air-gapped installs), or a local project dir / wheel (`--source`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::compat::{self, ENGINE_DIST};
use crate::error::{CliError, ErrorKind};
use crate::http::error_chain;

pub(crate) const PYPI_SIMPLE: &str = "https://pypi.org/simple/";

/// Short, so an unreachable index fails in seconds instead of a resolver's minutes-long retry loop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SourceKind {
    Pypi,
    Index,
    FindLinks,
    Path,
}

/// The engine's package source; remembered in config.toml and recorded in each receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EngineSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_index_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find_links: Option<String>,
    /// A local engine project dir or wheel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// The receipt's view of a source: `{kind, url | path, extra_index_urls, find_links}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceRecord {
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub extra_index_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find_links: Option<String>,
}

impl EngineSource {
    pub(crate) fn is_empty(&self) -> bool {
        *self == EngineSource::default()
    }

    pub(crate) fn kind(&self) -> SourceKind {
        if self.path.is_some() {
            SourceKind::Path
        } else if self.find_links.is_some() && self.index_url.is_none() {
            SourceKind::FindLinks
        } else if self.index_url.is_some() {
            SourceKind::Index
        } else {
            SourceKind::Pypi
        }
    }

    /// True when no index should be consulted at all (pip/uv `--no-index`): find-links or a local path only.
    pub(crate) fn offline(&self) -> bool {
        self.index_url.is_none()
            && self.extra_index_urls.is_empty()
            && (self.find_links.is_some()
                || self
                    .path
                    .as_deref()
                    .is_some_and(|p| is_wheel(p) && !super::wheel_url::is_url(p)))
    }

    /// The index URLs to consult (the primary one first); empty when offline.
    pub(crate) fn index_urls(&self) -> Vec<String> {
        if self.offline() {
            return Vec::new();
        }
        // Without --index-url the primary index is PyPI, as for pip and uv (also next to find-links or extra indexes).
        let primary = self
            .index_url
            .clone()
            .unwrap_or_else(|| PYPI_SIMPLE.to_owned());
        std::iter::once(primary)
            .chain(self.extra_index_urls.iter().cloned())
            .collect()
    }

    pub(crate) fn record(&self) -> SourceRecord {
        let kind = self.kind();
        SourceRecord {
            kind,
            url: if kind == SourceKind::Pypi {
                Some(PYPI_SIMPLE.to_owned())
            } else {
                self.index_url.clone()
            },
            path: self.path.as_ref().map(|p| p.display().to_string()),
            extra_index_urls: self.extra_index_urls.clone(),
            find_links: self.find_links.clone(),
        }
    }

    pub(crate) fn from_record(record: &SourceRecord) -> EngineSource {
        EngineSource {
            index_url: match record.kind {
                SourceKind::Pypi => None,
                _ => record.url.clone(),
            },
            extra_index_urls: record.extra_index_urls.clone(),
            find_links: record.find_links.clone(),
            path: record.path.as_ref().map(PathBuf::from),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.kind() {
            SourceKind::Pypi => format!("PyPI ({PYPI_SIMPLE})"),
            SourceKind::Index => format!("index {}", self.index_url.as_deref().unwrap_or_default()),
            SourceKind::FindLinks => format!(
                "find-links {}",
                self.find_links.as_deref().unwrap_or_default()
            ),
            SourceKind::Path => {
                let path = self.path.as_deref().unwrap_or(Path::new(""));
                if super::wheel_url::is_url(path) {
                    format!("wheel {}", path.display())
                } else {
                    format!("local source {}", path.display())
                }
            }
        }
    }
}

fn is_wheel(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "whl")
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The engine versions `source` offers (releases only, sorted ascending, deduplicated). A local `--source` offers
/// exactly its own version. An index that cannot be reached is a [`ErrorKind::Source`] error.
pub(crate) fn available_versions(source: &EngineSource) -> anyhow::Result<Vec<Version>> {
    let mut names: Vec<String> = Vec::new();
    if let Some(path) = &source.path {
        return Ok(vec![local_source_version(path)?]);
    }
    if let Some(links) = &source.find_links {
        if is_url(links) {
            let body = http_get(links, false)?.unwrap_or_default();
            names.extend(hrefs_and_texts(&body));
        } else {
            let dir = Path::new(links);
            let entries = std::fs::read_dir(dir).map_err(|e| {
                CliError::new(ErrorKind::Source, format!("could not read the find-links directory {}: {e}", dir.display()))
                    .hint("pass an existing directory of wheels: breadboard engine install --find-links DIR")
            })?;
            for entry in entries.flatten() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let mut client = None;
    for url in source.index_urls() {
        let client = match &client {
            Some(c) => c,
            None => client.insert(http_client()?),
        };
        let page = format!("{}/{}/", url.trim_end_matches('/'), ENGINE_DIST);
        if let Some(body) = http_get_with(client, &page, true)? {
            if body.trim_start().starts_with('{') {
                names.extend(
                    json_filenames(&body).with_context(|| format!("could not parse {page}"))?,
                );
            } else {
                names.extend(hrefs_and_texts(&body));
            }
        }
    }
    let mut versions: Vec<Version> = names
        .iter()
        .filter_map(|n| filename_version(n))
        .filter_map(|v| compat::parse_engine_version(&v))
        .collect();
    versions.sort();
    versions.dedup();
    Ok(versions)
}

fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(format!("breadboard/{}", crate::build_info::VERSION))
        .build()
        .context("could not set up the HTTP client")
}

fn http_get(url: &str, index: bool) -> anyhow::Result<Option<String>> {
    http_get_with(&http_client()?, url, index)
}

/// GET `url`; `Ok(None)` on 404 (the index does not carry the engine). Unreachable hosts and other HTTP errors are
/// [`ErrorKind::Source`] errors with the offline hint.
fn http_get_with(
    client: &reqwest::blocking::Client,
    url: &str,
    index: bool,
) -> anyhow::Result<Option<String>> {
    let unreachable = |why: String| -> anyhow::Error {
        CliError::new(
            ErrorKind::Source,
            format!("could not reach {url}: {why}; check the URL or use --find-links DIR for an offline install"),
        )
        .hint("breadboard engine install --find-links DIR   (a directory of wheels)")
        .into()
    };
    let mut request = client.get(url);
    if index {
        // PEP 691 content negotiation: JSON preferred, HTML accepted.
        request = request.header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
        );
    }
    let response = request.send().map_err(|e| unreachable(error_chain(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    response
        .text()
        .map(Some)
        .map_err(|e| unreachable(error_chain(&e)))
}

#[derive(Deserialize)]
struct Pep691Page {
    files: Vec<Pep691File>,
}

#[derive(Deserialize)]
struct Pep691File {
    filename: String,
}

fn json_filenames(body: &str) -> anyhow::Result<Vec<String>> {
    let page: Pep691Page = serde_json::from_str(body)?;
    Ok(page.files.into_iter().map(|f| f.filename).collect())
}

/// File names from an HTML page: each `href` target's last path segment. Tolerant on purpose: PEP 503 pages,
/// `python -m http.server` listings and find-links pages all fit.
fn hrefs_and_texts(body: &str) -> Vec<String> {
    hrefs(body)
        .iter()
        .filter_map(|target| {
            let target = target.split(['#', '?']).next().unwrap_or("");
            target.rsplit('/').next().map(percent_decode)
        })
        .collect()
}

/// Every `href` target on an HTML page as written (relative or absolute, with its `#sha256=` fragment).
pub(crate) fn hrefs(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in body.split("href=").skip(1) {
        let quote = piece.chars().next().unwrap_or('"');
        let rest = piece.trim_start_matches(['"', '\'']);
        out.push(
            rest.split([quote, '>', ' '])
                .next()
                .unwrap_or("")
                .to_owned(),
        );
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Ok(b) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn normalize(name: &str) -> String {
    // PEP 503 normalisation: runs of -, _ and . become one -.
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The version in an engine wheel or sdist file name, if the file is the engine's.
pub(crate) fn filename_version(name: &str) -> Option<String> {
    if let Some(stem) = name.strip_suffix(".whl") {
        let mut parts = stem.split('-');
        let dist = parts.next()?;
        let version = parts.next()?;
        return (normalize(dist) == ENGINE_DIST).then(|| version.to_owned());
    }
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".zip"))?;
    let (dist, version) = stem.rsplit_once('-')?;
    (normalize(dist) == ENGINE_DIST).then(|| version.to_owned())
}

/// The version a local `--source` (project dir or wheel) would install.
pub(crate) fn local_source_version(path: &Path) -> anyhow::Result<Version> {
    let bad = |why: String| -> anyhow::Error {
        CliError::new(ErrorKind::Source, format!("{} is not a usable engine source: {why}", path.display()))
            .hint("pass the engine project directory (the one with pyproject.toml) or a breadboard_engine-*.whl file")
            .into()
    };
    if super::wheel_url::is_url(path) {
        let url = path.to_string_lossy();
        let name = super::wheel_url::file_name(&url);
        let v = filename_version(name)
            .ok_or_else(|| bad("its file name is not a breadboard-engine wheel".into()))?;
        return compat::parse_engine_version(&v)
            .ok_or_else(|| bad(format!("version {v} is not a release")));
    }
    if is_wheel(path) {
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let v =
            filename_version(&name).ok_or_else(|| bad("not a breadboard-engine wheel".into()))?;
        return compat::parse_engine_version(&v)
            .ok_or_else(|| bad(format!("version {v} is not a release")));
    }
    let pyproject = path.join("pyproject.toml");
    let text = std::fs::read_to_string(&pyproject)
        .map_err(|e| bad(format!("could not read {}: {e}", pyproject.display())))?;
    let doc: toml::Table = toml::from_str(&text)
        .map_err(|e| bad(format!("{} does not parse: {e}", pyproject.display())))?;
    let project = doc.get("project").and_then(|p| p.as_table());
    let name = project
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("");
    if normalize(name) != ENGINE_DIST {
        return Err(bad(format!(
            "its project name is {name:?}, not {ENGINE_DIST:?}"
        )));
    }
    let version = project
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("pyproject.toml has no static [project] version".into()))?;
    compat::parse_engine_version(version)
        .ok_or_else(|| bad(format!("version {version} is not a release")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(
            filename_version("breadboard_engine-0.1.1-py3-none-any.whl").as_deref(),
            Some("0.1.1")
        );
        assert_eq!(
            filename_version("breadboard-engine-0.2.0.tar.gz").as_deref(),
            Some("0.2.0")
        );
        assert_eq!(
            filename_version("ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl"),
            None
        );
        let html = r#"<a href="../../wheelhouse/breadboard_engine-0.1.0-py3-none-any.whl#sha256=ab">x</a>"#;
        assert_eq!(
            hrefs_and_texts(html),
            vec!["breadboard_engine-0.1.0-py3-none-any.whl"]
        );
        let json = r#"{"meta":{"api-version":"1.0"},"name":"breadboard-engine","files":[{"filename":"breadboard_engine-0.1.0-py3-none-any.whl","url":"x","hashes":{}}]}"#;
        assert_eq!(
            json_filenames(json).unwrap(),
            vec!["breadboard_engine-0.1.0-py3-none-any.whl"]
        );
    }
}
