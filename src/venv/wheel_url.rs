//! `engine install --source URL` of an engine wheel, such as the one each release tree carries next to the CLI
//! tarballs. The wheel is downloaded into the home and verified by sha256 before pip or uv sees it: against the
//! URL's `#sha256=<hex>` fragment (pip's convention), else the `SHA256SUMS` file next to it (as install.sh checks the
//! CLI's tarballs). Without either it is refused: an unverified download is never installed. Its dependencies come
//! from the index as for any install.

use std::path::{Path, PathBuf};

use crate::error::{CliError, ErrorKind};
use crate::http::error_chain;

/// True for an `http(s)://` source (a wheel to download) rather than a local path.
pub(crate) fn is_url(source: &Path) -> bool {
    let s = source.to_string_lossy();
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name a wheel URL names (its last path segment, without query or fragment).
pub(crate) fn file_name(url: &str) -> &str {
    let path = url.split(['#', '?']).next().unwrap_or("");
    path.rsplit('/').next().unwrap_or("")
}

/// Downloads the wheel at `url` into `dir` (kept under its own name, replacing an earlier copy only once the new one
/// is verified) and returns its path.
pub(crate) fn fetch(url: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = file_name(url);
    if !name.ends_with(".whl") || name.contains("..") {
        return Err(CliError::new(
            ErrorKind::Source,
            format!("{url} does not name a wheel (a .whl file)"),
        )
        .hint("pass the URL of a breadboard_engine-*.whl, e.g. from a release tree")
        .into());
    }
    let client = crate::selfupdate::release::client()?;
    let expected = match url.split_once("#sha256=") {
        Some((_, hex)) => hex.trim().to_ascii_lowercase(),
        None => sha_from_sums(&client, url, name)?,
    };
    std::fs::create_dir_all(dir)?;
    let dest = dir.join(name);
    let part = dir.join(format!(".{name}.{}", std::process::id()));
    let result = download(&client, url, &part, &expected);
    match result {
        Ok(()) => {
            std::fs::rename(&part, &dest)?;
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn unreachable(url: &str, why: String) -> anyhow::Error {
    CliError::new(
        ErrorKind::Source,
        format!("could not download {url}: {why}"),
    )
    .hint("check the URL and your network; nothing was changed")
    .into()
}

/// The sha256 `SHA256SUMS` (coreutils format, in the wheel's directory) lists for `name`.
fn sha_from_sums(
    client: &reqwest::blocking::Client,
    url: &str,
    name: &str,
) -> anyhow::Result<String> {
    let base = url.split(['#', '?']).next().unwrap_or(url);
    let sums_url = format!("{}SHA256SUMS", &base[..base.len() - name.len()]);
    let unverifiable = |why: String| -> anyhow::Error {
        CliError::new(
            ErrorKind::Integrity,
            format!("cannot verify {url}: {why}, and the URL has no #sha256=<hex>; nothing was installed"),
        )
        .hint(format!(
            "append the wheel's sha256 to the URL: --source '{base}#sha256=<hex>'"
        ))
        .into()
    };
    let response = client
        .get(&sums_url)
        .send()
        .map_err(|e| unreachable(&sums_url, error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(unverifiable(format!(
            "{sums_url} answered HTTP {}",
            response.status()
        )));
    }
    let text = response
        .text()
        .map_err(|e| unreachable(&sums_url, error_chain(&e)))?;
    text.lines()
        .find_map(|line| {
            let (hex, file) = line.split_once(char::is_whitespace)?;
            (file.trim_start().trim_start_matches('*') == name).then(|| hex.to_ascii_lowercase())
        })
        .ok_or_else(|| unverifiable(format!("{sums_url} does not list {name}")))
}

fn download(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    expected: &str,
) -> anyhow::Result<()> {
    let mut response = client
        .get(url)
        .send()
        .map_err(|e| unreachable(url, error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(unreachable(url, format!("HTTP {}", response.status())));
    }
    let mut out = std::fs::File::create(part)?;
    let (_, actual) = crate::fsutil::copy_hashing(&mut response, &mut out)
        .map_err(|e| unreachable(url, error_chain(&e)))?;
    if actual != expected {
        return Err(CliError::new(
            ErrorKind::Integrity,
            format!(
                "checksum mismatch for {url}: expected sha256 {expected}, the download has {actual}; nothing was installed"
            ),
        )
        .hint("the file or its checksum was changed on the way; fetch it again, or from another mirror")
        .into());
    }
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_of_a_url() {
        assert_eq!(
            file_name("https://h/r/v0.1.1/breadboard_engine-0.1.1-py3-none-any.whl#sha256=ab"),
            "breadboard_engine-0.1.1-py3-none-any.whl"
        );
        assert!(is_url(Path::new("http://127.0.0.1:1/x.whl")));
        assert!(!is_url(Path::new("/tmp/x.whl")));
    }
}
