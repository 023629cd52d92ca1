//! A private, pinned uv for machines that have none: without it every install takes pip's path, an order of
//! magnitude slower (docs/benchmarks.md). uv is published on PyPI as a wheel that carries the static binary, so it is
//! fetched from the same package source as the engine (PyPI, `--index-url`, `--find-links`: an air-gapped wheelhouse
//! only needs the uv wheel next to the engine's), checked against the size and sha256 pinned here, and unpacked into
//! `BREADBOARD_HOME/tools/uv-<version>/uv`. Nothing here is fatal: the caller falls back to pip with a warning.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::index::EngineSource;
use crate::selfupdate::release::{self, Artifact};

pub(crate) const UV_VERSION: &str = "0.13.9";

/// One wheel per platform the release ships, taken from PyPI's listing of uv 0.13.9. The Linux binaries are
/// statically linked, so the musl wheel serves glibc systems too.
const WHEELS: &[(&str, &str, &str, u64)] = &[
    (
        "linux-x86_64",
        "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
        "2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25",
        19_295_638,
    ),
    (
        "linux-aarch64",
        "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
        18_026_789,
    ),
    (
        "macos-x86_64",
        "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl",
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
        17_529_974,
    ),
    (
        "macos-aarch64",
        "uv-0.13.9-py3-none-macosx_11_0_arm64.whl",
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
        14_660_755,
    ),
];

/// Where the bootstrapped uv lives (whether or not it is there yet).
pub(crate) fn uv_path(home: &Path) -> PathBuf {
    home.join("tools")
        .join(format!("uv-{UV_VERSION}"))
        .join("uv")
}

/// The pinned wheel for this machine, if the release ships one for it.
fn wheel_for_this_platform() -> Option<Artifact> {
    let platform = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    WHEELS
        .iter()
        .find(|(p, ..)| *p == platform)
        .map(|(p, name, sha256, size)| Artifact {
            target: (*p).to_owned(),
            name: (*name).to_owned(),
            url: String::new(),
            sha256: (*sha256).to_owned(),
            size: *size,
        })
}

/// The bootstrapped uv, fetched from `source` first if it is not there yet. An error says why (the caller warns
/// and uses pip).
pub(crate) fn ensure(home: &Path, source: &EngineSource) -> anyhow::Result<PathBuf> {
    let dest = uv_path(home);
    if dest.is_file() {
        return Ok(dest);
    }
    let mut wheel = wheel_for_this_platform().with_context(|| {
        format!(
            "no uv wheel is pinned for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    })?;
    let dir = dest.parent().expect("uv_path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    // Unique per process: two installs at once each unpack their own copy, and the renames agree.
    let part = dir.join(format!(".uv.whl.{}", std::process::id()));
    let result = fetch(source, &mut wheel, &part).and_then(|()| unpack(&part, &dest));
    let _ = std::fs::remove_file(&part);
    result.map(|()| dest)
}

/// Copies the wheel from a find-links directory or downloads it from an index or find-links page into `part`,
/// verified against the pin.
fn fetch(source: &EngineSource, wheel: &mut Artifact, part: &Path) -> anyhow::Result<()> {
    let mut out = std::fs::File::create(part)
        .with_context(|| format!("could not create {}", part.display()))?;
    if let Some(links) = source.find_links.as_deref().filter(|l| !is_url(l)) {
        let local = Path::new(links).join(&wheel.name);
        if local.is_file() {
            let mut file = std::fs::File::open(&local)
                .with_context(|| format!("could not open {}", local.display()))?;
            copy_verified(&mut file, wheel, &local.display().to_string(), &mut out)?;
            return Ok(());
        }
    }
    let client = release::client()?;
    let mut pages: Vec<String> = source
        .find_links
        .iter()
        .filter(|l| is_url(l))
        .cloned()
        .collect();
    pages.extend(
        source
            .index_urls()
            .iter()
            .map(|u| format!("{}/uv/", u.trim_end_matches('/'))),
    );
    for page in &pages {
        if let Some(url) = find_on_page(&client, page, &wheel.name)? {
            wheel.url = url.clone();
            return release::download_verified(&client, &url, wheel, &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"));
        }
    }
    bail!(
        "{} is not in {}",
        wheel.name,
        if pages.is_empty() {
            source.describe()
        } else {
            pages.join(", ")
        }
    )
}

/// Reads `from` into `out`, failing unless it has exactly the pinned size and sha256.
fn copy_verified(
    from: &mut impl Read,
    wheel: &Artifact,
    origin: &str,
    out: &mut std::fs::File,
) -> anyhow::Result<()> {
    let (size, actual) = crate::fsutil::copy_hashing(from, out)?;
    if size != wheel.size || actual != wheel.sha256 {
        bail!(
            "checksum mismatch for {origin}: expected {} bytes with sha256 {}, found {size} bytes with sha256 {actual}",
            wheel.size,
            wheel.sha256
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct Page {
    files: Vec<PageFile>,
}

#[derive(Deserialize)]
struct PageFile {
    filename: String,
    url: String,
}

/// The absolute URL of `name` on an index project page (PEP 691 JSON or PEP 503 HTML) or a find-links page.
fn find_on_page(
    client: &reqwest::blocking::Client,
    page: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let response = client
        .get(page)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
        )
        .send()
        .map_err(|e| {
            anyhow::anyhow!(
                "could not reach {page}: {}",
                crate::http::error_chain(&e)
            )
        })?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        bail!("{page} answered HTTP {}", response.status());
    }
    let base = response.url().clone();
    let body = response.text()?;
    let target = if body.trim_start().starts_with('{') {
        let page: Page =
            serde_json::from_str(&body).with_context(|| format!("could not parse {page}"))?;
        page.files
            .into_iter()
            .find(|f| f.filename == name)
            .map(|f| f.url)
    } else {
        super::index::hrefs(&body).into_iter().find(|href| {
            let path = href.split(['#', '?']).next().unwrap_or("");
            super::index::percent_decode(path.rsplit('/').next().unwrap_or("")) == name
        })
    };
    match target {
        Some(t) => Ok(Some(
            base.join(&t)
                .with_context(|| format!("{page} links {name} to a bad URL: {t}"))?
                .to_string(),
        )),
        None => Ok(None),
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Takes the `uv` binary out of the wheel (its `*.data/scripts/uv`) and moves it into place, runnable, only once it
/// answers `--version` with the pinned version.
fn unpack(wheel: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(wheel)?;
    let mut archive = zip::ZipArchive::new(file).context("the uv wheel is not a zip archive")?;
    let inner = format!("uv-{UV_VERSION}.data/scripts/uv");
    let mut entry = archive
        .by_name(&inner)
        .with_context(|| format!("the uv wheel has no {inner}"))?;
    let staged = dest.with_extension(format!("part.{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        {
            // Closed before it runs: exec of a file open for writing fails with ETXTBSY.
            let mut out = std::fs::File::create(&staged)?;
            std::io::copy(&mut entry, &mut out)?;
            out.sync_all()?;
        }
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
        let version = std::process::Command::new(&staged)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .context("the unpacked uv does not run")?;
        let text = String::from_utf8_lossy(&version.stdout);
        if !version.status.success() || !text.starts_with(&format!("uv {UV_VERSION}")) {
            bail!("the unpacked uv answered {:?} to --version", text.trim());
        }
        std::fs::rename(&staged, dest)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_platform_has_a_pinned_wheel_of_the_pinned_version() {
        for (_, name, sha256, _) in WHEELS {
            assert!(name.starts_with(&format!("uv-{UV_VERSION}-")), "{name}");
            assert_eq!(sha256.len(), 64, "{name}");
        }
        for platform in [
            "linux-x86_64",
            "linux-aarch64",
            "macos-x86_64",
            "macos-aarch64",
        ] {
            assert!(WHEELS.iter().any(|(p, ..)| *p == platform), "{platform}");
        }
    }
}
