//! Staging a release in the install dir: every file `breadboard upgrade` writes goes next to the binary (the same
//! filesystem as the final rename, so a full disk or a read-only dir shows before anything is swapped), under a name
//! that carries the pid of the process that made it, and is removed on drop unless kept. The staged binary is
//! unpacked from the verified tarball ([`extract_binary`]) and must run here and report the expected version
//! ([`verify_version`]) before anything is replaced.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{CliError, ErrorKind};

/// Staged files in the install dir start with these prefixes (the first two are install.sh's too), followed by the pid
/// of the process that made them.
pub(super) const STAGE_PREFIXES: [&str; 3] = [
    ".breadboard.new.",
    ".breadboard.previous.",
    ".breadboard-upgrade.",
];

/// What the self-replace crate names its copy of the new binary while it puts it in place (`.<file stem>.__temp__`
/// and random letters): no pid in it, but the crate only runs under the install lock, so one found by the next
/// holder was left by a killed upgrade.
pub(super) const REPLACE_TEMP_PREFIX: &str = ".breadboard.__temp__";

/// The directory of the installed binary, where everything is staged.
pub(crate) fn dir_of(exe: &Path) -> &Path {
    exe.parent().unwrap_or(Path::new("/"))
}

/// A file in the install dir that is deleted on drop unless [`TempFile::keep`] is called.
pub(crate) struct TempFile {
    pub path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(crate) fn new(dir: &Path, prefix: &str, suffix: &str) -> TempFile {
        TempFile {
            path: dir.join(format!("{prefix}{}{suffix}", std::process::id())),
            keep: false,
        }
    }

    pub(crate) fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` exclusively, with `mode`; the error says which directory refused and why.
pub(crate) fn create_new(path: &Path, mode: u32) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| write_error(path, e))
}

/// An I/O error while writing into the install dir, explained: read-only and full disks get their own fix.
pub(crate) fn write_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    let dir = dir_of(path);
    let (what, hint) = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => (
            format!("the install directory {} is not writable ({e})", dir.display()),
            format!(
                "run breadboard upgrade as the user that owns {}, or reinstall into a directory you own: \
                 curl -fsSL <releases>/install.sh | env BREADBOARD_INSTALL_DIR=~/.breadboard/bin sh",
                dir.display()
            ),
        ),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => (
            format!("no space left to write {} ({e})", path.display()),
            format!("free some space on the filesystem of {}, then run breadboard upgrade again", dir.display()),
        ),
        _ => (
            format!("could not write {} ({e})", path.display()),
            "fix the cause above, then run breadboard upgrade again".to_owned(),
        ),
    };
    CliError::new(
        ErrorKind::Failure,
        format!("{what}; the installed breadboard was not changed"),
    )
    .hint(hint)
    .into()
}

/// Fails early, before any download, when the install dir cannot take new files (rustup `self_update_permitted`).
pub(crate) fn preflight_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = TempFile::new(dir, ".breadboard-upgrade.", ".probe");
    create_new(&probe.path, 0o600)?;
    Ok(())
}

/// Extracts the `breadboard` file at the root of `tarball` into `dest` (created 0755). Nothing else in the archive
/// is written anywhere, so paths or links in it cannot escape.
pub(crate) fn extract_binary(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(tarball)
        .with_context(|| format!("could not open {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Its size and sha256 matched the manifest: the release was published broken, a source problem (exit 6), not a
    // corrupted download (9).
    let bad = |why: String| -> anyhow::Error {
        CliError::new(
            ErrorKind::Source,
            format!(
                "cannot unpack {}: {why}; nothing was changed",
                tarball.display()
            ),
        )
        .hint(
            "the release artifact is malformed as published (it matches the manifest's sha256); report it, or pick \
             another version: breadboard upgrade --version V",
        )
        .into()
    };
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let name = path.to_string_lossy();
        if name != "breadboard" && name != "./breadboard" {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(bad("its breadboard entry is not a regular file".into()));
        }
        let mut out = create_new(dest, 0o755)?;
        // The umask filters the creation mode; a binary must be 0755 whatever it is (install.sh chmods too).
        out.set_permissions(perms_755())
            .map_err(|e| write_error(dest, e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(|e| write_error(dest, e))?;
        }
        out.sync_all().map_err(|e| write_error(dest, e))?;
        // Closed here, before anyone runs it: exec of a file still open for writing fails with ETXTBSY.
        drop(out);
        return Ok(());
    }
    Err(bad("it has no breadboard binary at its root".into()))
}

fn perms_755() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o755)
}

/// Runs `bin --version` (with a deadline) and returns what it printed, or why it did not run.
pub(crate) fn reported_version(bin: &Path) -> Result<String, String> {
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not answer --version within 30 s".into());
            }
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(format!("--version failed ({status}): {}", err.trim()));
    }
    Ok(out.trim().to_owned())
}

/// The staged binary must run here and say `breadboard <expected>` (catches a wrong-platform or mislabelled build).
pub(crate) fn verify_version(bin: &Path, expected: &str) -> anyhow::Result<()> {
    let want = format!("breadboard {expected}");
    match reported_version(bin) {
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(CliError::new(
            ErrorKind::Validation,
            format!("the downloaded binary reports {got:?}, expected {want:?}; nothing was changed"),
        )
        .hint("the release is mislabelled; report it, or pick another version: breadboard upgrade --version V")
        .into()),
        Err(why) => Err(CliError::new(
            ErrorKind::Validation,
            format!("the downloaded binary does not run here ({why}); nothing was changed"),
        )
        .hint("check that the release has a build for this platform, or pick another version: breadboard upgrade --version V")
        .into()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A shell script at `path`, mode 0755: a stand-in binary whose `--version` says what the test wants.
    pub(crate) fn script(path: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The names in `dir`, sorted.
    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_staged_binary_must_report_the_expected_version() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("breadboard");
        script(&bin, "echo 'breadboard 2.0.0'");
        verify_version(&bin, "2.0.0").unwrap();
        let err = verify_version(&bin, "3.0.0").unwrap_err();
        assert!(
            err.to_string().contains("reports \"breadboard 2.0.0\""),
            "{err}"
        );
        script(&bin, "exit 3");
        let err = verify_version(&bin, "2.0.0").unwrap_err();
        assert!(err.to_string().contains("does not run here"), "{err}");
        assert_eq!(
            err.downcast::<CliError>().unwrap().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn extract_takes_only_the_root_binary() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("a.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        ));
        for (name, body) in [("../evil", &b"no"[..]), ("breadboard", &b"#!/bin/sh\n"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, body)
                .unwrap_or_else(|_| {
                    // tar refuses to *write* `..`; append the raw name instead.
                    let mut h = tar::Header::new_old();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_size(body.len() as u64);
                    h.set_cksum();
                    builder.append(&h, body).unwrap();
                });
        }
        builder.into_inner().unwrap().finish().unwrap();
        let dest = dir.path().join("out");
        extract_binary(&tarball, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        assert!(!dir.path().parent().unwrap().join("evil").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );

        let empty = dir.path().join("empty.tar.gz");
        let b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&empty).unwrap(),
            flate2::Compression::fast(),
        ));
        b.into_inner().unwrap().finish().unwrap();
        let err = extract_binary(&empty, &dir.path().join("out2")).unwrap_err();
        assert!(err.to_string().contains("no breadboard binary"), "{err}");
        // A malformed artifact whose checksum matched: the release's fault (exit 6), not a corrupted download (9).
        assert_eq!(err.downcast::<CliError>().unwrap().kind, ErrorKind::Source);
        let garbage = dir.path().join("garbage.tar.gz");
        std::fs::write(&garbage, b"not a gzip stream").unwrap();
        let err = extract_binary(&garbage, &dir.path().join("out3")).unwrap_err();
        assert_eq!(err.downcast::<CliError>().unwrap().kind, ErrorKind::Source);
        assert!(!dir.path().join("out3").exists());
    }
}
