//! The release-manifest client `breadboard upgrade` uses: where releases live (the same rules as install.sh), the
//! `manifest.json` scripts/dist writes (schema 1), and a download that is checked for size and sha256 as it streams.
//!
//! A static manifest instead of the GitHub API: no 60-requests-per-hour limit, works from any mirror, and the tests
//! serve it from 127.0.0.1. The HTTP client and the verified download serve the pinned uv and engine wheels too
//! (`venv/uv.rs`, `venv/wheel_url.rs`).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::printer::Printer;
use crate::settings::Settings;

/// This repository's GitHub releases (install.sh `BB_GITHUB_RELEASES`; the owner is a placeholder until the repository
/// has its public home).
pub(crate) const GITHUB_RELEASES: &str = "https://github.com/breadboard-dev/breadboard/releases";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// reqwest's blocking timeout applies to each phase (sending, then each read), not to the whole body: a slow but
/// moving download is never cut off, a stalled one is (rustup 1.28.1's lesson about total timeouts).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the release manifest and artifacts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReleaseSource {
    base: String,
    layout: Layout,
    /// Which setting chose it, for messages: an environment variable, `releases_url in <receipt>`, or `the default`.
    pub origin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `<base>/latest/download/manifest.json`, `<base>/download/v<V>/manifest.json` (GitHub releases).
    GitHub,
    /// `<base>/latest/manifest.json`, `<base>/<V>/manifest.json` (a scripts/dist tree).
    Tree,
    /// `<dir>/manifest.json`: one version's directory.
    Download,
}

impl ReleaseSource {
    /// `BREADBOARD_DOWNLOAD_URL`, else `BREADBOARD_RELEASES_URL` (both from `settings`), else the receipt's
    /// `releases_url` (what install.sh used; `receipt` is the receipt file), else GitHub. Each URL is checked before
    /// any request (https, or http for loopback only).
    pub(crate) fn resolve(
        settings: &Settings,
        receipt_url: Option<&str>,
        receipt: &Path,
    ) -> anyhow::Result<ReleaseSource> {
        Self::from_settings(
            settings.download_url.get()?.as_deref(),
            settings.releases_url.get()?.as_deref(),
            receipt_url.map(|url| (url, receipt)),
        )
    }

    fn from_settings(
        download: Option<&str>,
        releases: Option<&str>,
        receipt: Option<(&str, &Path)>,
    ) -> anyhow::Result<ReleaseSource> {
        // install.sh checks both env URLs, even the one that loses.
        if let Some(url) = releases {
            check_url(url, env_vars::BREADBOARD_RELEASES_URL)?;
        }
        if let Some(url) = download {
            check_url(url, env_vars::BREADBOARD_DOWNLOAD_URL)?;
            return Ok(ReleaseSource {
                base: url.trim_end_matches('/').to_owned(),
                layout: Layout::Download,
                origin: env_vars::BREADBOARD_DOWNLOAD_URL.to_owned(),
            });
        }
        let (url, origin) = match (releases, receipt) {
            (Some(url), _) => (url, env_vars::BREADBOARD_RELEASES_URL.to_owned()),
            (None, Some((url, path))) => {
                let origin = format!("releases_url in {}", path.display());
                if let Some(why) = url_refusal(url) {
                    return Err(CliError::new(
                        ErrorKind::Usage,
                        format!("refusing {url} ({origin}): {why}"),
                    )
                    .hint(format!(
                        "set releases_url in {} to an https:// URL, or override it for this run: {}=https://... \
                         breadboard upgrade",
                        path.display(),
                        env_vars::BREADBOARD_RELEASES_URL
                    ))
                    .into());
                }
                (url, origin)
            }
            (None, None) => (GITHUB_RELEASES, "the default".to_owned()),
        };
        let base = url.trim_end_matches('/').to_owned();
        // Only the default is read with GitHub's layout: install.sh treats every BREADBOARD_RELEASES_URL as a tree,
        // and records the default verbatim in the receipt.
        let layout = if base == GITHUB_RELEASES {
            Layout::GitHub
        } else {
            Layout::Tree
        };
        Ok(ReleaseSource {
            base,
            layout,
            origin,
        })
    }

    /// Fetches the manifest of the release to move to (the newest, or `requested`), checked to be the one asked for.
    pub(crate) fn fetch(
        &self,
        printer: &Printer,
        client: &reqwest::blocking::Client,
        requested: Option<&str>,
    ) -> anyhow::Result<Manifest> {
        let manifest_url = self.manifest_url(requested);
        printer.debug(&format!(
            "release manifest: {manifest_url} (from {})",
            self.origin
        ));
        let manifest = fetch_manifest(client, &manifest_url, requested)?;
        match requested {
            Some(want) if manifest.version != want => {
                let hint = if self.origin == env_vars::BREADBOARD_DOWNLOAD_URL {
                    format!(
                        "{} points at one version's directory: unset it, or point it at {want}'s",
                        env_vars::BREADBOARD_DOWNLOAD_URL
                    )
                } else {
                    "the release tree is mislabelled; report it, or pick another version".to_owned()
                };
                Err(CliError::new(
                    ErrorKind::Source,
                    format!(
                        "{manifest_url} (from {}) is the manifest of breadboard {}, not of the requested {want}",
                        self.origin, manifest.version
                    ),
                )
                .hint(hint)
                .into())
            }
            _ => Ok(manifest),
        }
    }

    /// The manifest of `version`, or of the latest release.
    fn manifest_url(&self, version: Option<&str>) -> String {
        match (self.layout, version) {
            (Layout::GitHub, None) => format!("{}/latest/download/manifest.json", self.base),
            (Layout::GitHub, Some(v)) => format!("{}/download/v{v}/manifest.json", self.base),
            (Layout::Tree, None) => format!("{}/latest/manifest.json", self.base),
            (Layout::Tree, Some(v)) => format!("{}/{v}/manifest.json", self.base),
            (Layout::Download, _) => format!("{}/manifest.json", self.base),
        }
    }
}

/// install.sh's `url_refusal`, case for case: why `url` is refused, or `None`. https anywhere; plain http only to
/// 127.0.0.1, localhost or [::1], and never with credentials (`user@` could hide the real host).
pub(crate) fn url_refusal(url: &str) -> Option<&'static str> {
    if url.starts_with("https://") {
        return None;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("unsupported URL (need https:// or a loopback http://)");
    };
    if rest.contains('@') {
        return Some("plain http with credentials in the URL (they could hide the host)");
    }
    let loopback = ["127.0.0.1", "localhost", "[::1]"].iter().any(|host| {
        rest == *host
            || rest
                .strip_prefix(host)
                .is_some_and(|r| r.starts_with(':') || r.starts_with('/'))
    });
    if loopback {
        None
    } else {
        Some("plain http is accepted only for loopback hosts (127.0.0.1, localhost, [::1]); use https")
    }
}

/// A URL from the environment variable `var`, refused (exit 2) before any request, as install.sh's `check_url`.
pub(crate) fn check_url(url: &str, var: &str) -> anyhow::Result<()> {
    match url_refusal(url) {
        None => Ok(()),
        Some(why) => Err(CliError::new(
            ErrorKind::Usage,
            format!("refusing {url} (from {var}): {why}"),
        )
        .hint(format!("use an https:// URL, or unset {var}"))
        .into()),
    }
}

/// `manifest.json` as scripts/dist writes it (schema 1).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    pub schema: u32,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    /// Where it was read from: relative artifact URLs resolve against it.
    #[serde(skip)]
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Artifact {
    pub target: String,
    pub name: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    /// The artifact built for exactly `target`: no "same arch and OS" fallback, which can hand a musl build the gnu
    /// tarball.
    pub(crate) fn artifact_for(&self, target: &str) -> anyhow::Result<&Artifact> {
        self.artifacts.iter().find(|a| a.target == target).ok_or_else(|| {
            let ships: Vec<&str> = self.artifacts.iter().map(|a| a.target.as_str()).collect();
            CliError::new(
                ErrorKind::Source,
                format!(
                    "release {} has no build for {target} (it ships: {}); see {}",
                    self.version,
                    if ships.is_empty() { "nothing".to_owned() } else { ships.join(", ") },
                    self.url
                ),
            )
            .hint("wait for that build to be published, or pick a release that has it: breadboard upgrade --version V")
            .into()
        })
    }

    /// The artifact's absolute URL (relative URLs are relative to the manifest), checked like the source URL: a refused
    /// one is the release's fault (exit 6), not the user's.
    pub(crate) fn artifact_url(&self, artifact: &Artifact) -> anyhow::Result<String> {
        let base = reqwest::Url::parse(&self.url)
            .with_context(|| format!("bad manifest URL {}", self.url))?;
        let url = base
            .join(&artifact.url)
            .with_context(|| {
                format!(
                    "{} lists a bad URL for {}: {:?}",
                    self.url, artifact.name, artifact.url
                )
            })?
            .to_string();
        if let Some(why) = url_refusal(&url) {
            return Err(CliError::new(
                ErrorKind::Source,
                format!(
                    "refusing the artifact URL {url}, which {} lists for {}: {why}",
                    self.url, artifact.name
                ),
            )
            .hint(format!(
                "the release manifest must list https:// artifact URLs (or relative ones); report it, or point {} at \
                 a release tree that does",
                env_vars::BREADBOARD_RELEASES_URL
            ))
            .into());
        }
        Ok(url)
    }
}

pub(crate) fn client() -> anyhow::Result<reqwest::blocking::Client> {
    // Redirects (GitHub sends release downloads to its CDN) must not downgrade to plain http off loopback.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if let Some(why) = url_refusal(attempt.url().as_str()) {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect to {to}: {why}"))
        } else {
            attempt.follow()
        }
    });
    reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(IO_TIMEOUT)
        .redirect(policy)
        .user_agent(format!("breadboard/{}", crate::build_info::VERSION))
        .build()
        .context("could not set up the HTTP client")
}

/// Fetches and parses a manifest. A 404 means that version (or any release, for `latest`) does not exist there.
fn fetch_manifest(
    client: &reqwest::blocking::Client,
    url: &str,
    version: Option<&str>,
) -> anyhow::Result<Manifest> {
    let response = client.get(url).send().map_err(|e| unreachable(url, &e))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        let what = match version {
            Some(v) => {
                format!("breadboard version {v} does not exist: {url} returned 404 Not Found")
            }
            None => format!("no release manifest at {url} (404 Not Found)"),
        };
        return Err(CliError::new(ErrorKind::Source, what)
            .hint("check the version, or where releases come from (BREADBOARD_RELEASES_URL)")
            .into());
    }
    if !status.is_success() {
        return Err(CliError::new(
            ErrorKind::Source,
            format!("could not fetch {url}: HTTP {status}"),
        )
        .hint("try again later, or point BREADBOARD_RELEASES_URL at a mirror")
        .into());
    }
    let body = response.text().map_err(|e| unreachable(url, &e))?;
    let mut manifest: Manifest = serde_json::from_str(&body).map_err(|e| {
        CliError::new(
            ErrorKind::Source,
            format!("{url} is not a breadboard release manifest: {e}"),
        )
    })?;
    if manifest.schema != 1 {
        return Err(CliError::new(
            ErrorKind::Source,
            format!(
                "{url} has manifest schema {}, and this breadboard reads schema 1",
                manifest.schema
            ),
        )
        .hint(format!(
            "install the new version with install.sh: curl -fsSL {GITHUB_RELEASES}/latest/download/install.sh | sh"
        ))
        .into());
    }
    manifest.url = url.to_owned();
    Ok(manifest)
}

fn unreachable(url: &str, e: &reqwest::Error) -> anyhow::Error {
    CliError::new(
        ErrorKind::Source,
        format!("could not reach {url}: {}", crate::http::error_chain(e)),
    )
    .hint("check your network or proxy (https_proxy), or point BREADBOARD_RELEASES_URL at a mirror")
    .into()
}

/// Downloads `url` into `out`, hashing as it streams, and fails unless exactly `artifact.size` bytes with
/// `artifact.sha256` arrived. Errors writing `out` come back as a bare `std::io::Error`; the caller deletes the file.
pub(crate) fn download_verified(
    client: &reqwest::blocking::Client,
    url: &str,
    artifact: &Artifact,
    out: &mut std::fs::File,
) -> anyhow::Result<()> {
    let mut response = client.get(url).send().map_err(|e| unreachable(url, &e))?;
    refuse_status(url, artifact, response.status())?;
    let (received, actual) = copy_hashed(&mut response, out, url, artifact)?;
    if received != artifact.size {
        return Err(integrity(format!(
            "incomplete download of {}: got {received} of {} bytes from {url}",
            artifact.name, artifact.size
        )));
    }
    if !actual.eq_ignore_ascii_case(artifact.sha256.trim()) {
        return Err(integrity(format!(
            "checksum mismatch for {}: the manifest says sha256 {}, the download has {actual}",
            artifact.name, artifact.sha256
        )));
    }
    out.sync_all()?;
    Ok(())
}

/// A download that did not start: the artifact is missing from the release (404), or the server failed.
fn refuse_status(
    url: &str,
    artifact: &Artifact,
    status: reqwest::StatusCode,
) -> anyhow::Result<()> {
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(CliError::new(
            ErrorKind::Source,
            format!("the artifact {} does not exist: {url} returned 404 Not Found", artifact.name),
        )
        .hint("the release is incomplete; try again later or pick another version: breadboard upgrade --version V")
        .into());
    }
    if !status.is_success() {
        return Err(CliError::new(
            ErrorKind::Source,
            format!("could not download {url}: HTTP {status}"),
        )
        .hint("try again later: breadboard upgrade")
        .into());
    }
    Ok(())
}

/// Copies the body into `out` as it arrives, hashing it and refusing more than `artifact.size` bytes; returns the
/// bytes received and their sha256 (hex).
fn copy_hashed(
    response: &mut reqwest::blocking::Response,
    out: &mut std::fs::File,
    url: &str,
    artifact: &Artifact,
) -> anyhow::Result<(u64, String)> {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(CliError::new(
                    ErrorKind::Source,
                    format!(
                        "the download of {url} broke off after {received} of {} bytes: {}",
                        artifact.size,
                        crate::http::error_chain(&e)
                    ),
                )
                .hint("nothing was changed; run breadboard upgrade again")
                .into())
            }
        };
        received += n as u64;
        if received > artifact.size {
            return Err(integrity(format!(
                "{url} sent more than the {} bytes the manifest lists for {}",
                artifact.size, artifact.name
            )));
        }
        hasher.update(&buf[..n]);
        // A bare io::Error: the caller explains write failures (full disk, read-only dir) with the fix.
        out.write_all(&buf[..n])?;
    }
    let hex = hasher
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((received, hex))
}

fn integrity(message: String) -> anyhow::Error {
    CliError::new(ErrorKind::Integrity, format!("{message}; nothing was changed"))
        .hint("run breadboard upgrade again; if it keeps failing, the release or a proxy in between is corrupting it")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_install_sh() {
        for ok in [
            "https://example.com/x",
            "http://127.0.0.1",
            "http://127.0.0.1:8080/rel",
            "http://localhost/rel",
            "http://[::1]:9/x",
        ] {
            assert!(check_url(ok, "t").is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "http://127.0.0.1.evil.com/x",
            "http://localhost@evil.com/",
            "http://user@127.0.0.1/",
            "ftp://127.0.0.1/",
            "file:///tmp/x",
        ] {
            assert!(check_url(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn source_precedence_and_layouts() {
        let s = ReleaseSource::from_settings(None, None, None).unwrap();
        assert_eq!(
            s.manifest_url(None),
            format!("{GITHUB_RELEASES}/latest/download/manifest.json")
        );
        assert_eq!(
            s.manifest_url(Some("0.2.0")),
            format!("{GITHUB_RELEASES}/download/v0.2.0/manifest.json")
        );
        // The receipt records the default verbatim: still GitHub's layout.
        let receipt = Path::new("/home/me/.breadboard/install-receipt.json");
        let s = ReleaseSource::from_settings(None, None, Some((GITHUB_RELEASES, receipt))).unwrap();
        assert_eq!(s.layout, Layout::GitHub);
        let s =
            ReleaseSource::from_settings(None, None, Some(("http://127.0.0.1:1/rel/", receipt)))
                .unwrap();
        assert_eq!(
            s.manifest_url(None),
            "http://127.0.0.1:1/rel/latest/manifest.json"
        );
        assert_eq!(
            s.manifest_url(Some("1.0.0")),
            "http://127.0.0.1:1/rel/1.0.0/manifest.json"
        );
        // Env beats the receipt; the download dir beats both.
        let s = ReleaseSource::from_settings(
            None,
            Some("https://m/r"),
            Some(("http://127.0.0.1:1/rel", receipt)),
        )
        .unwrap();
        assert_eq!(s.manifest_url(None), "https://m/r/latest/manifest.json");
        let s = ReleaseSource::from_settings(Some("https://d/0.3.0/"), Some("https://m/r"), None)
            .unwrap();
        assert_eq!(
            s.manifest_url(Some("9.9.9")),
            "https://d/0.3.0/manifest.json"
        );
        // A refused losing URL still fails, as in install.sh.
        assert!(
            ReleaseSource::from_settings(Some("https://d/"), Some("http://evil/"), None).is_err()
        );
    }
}
