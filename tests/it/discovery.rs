use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Without --python and without uv's discovery, PATH is searched python3.13 ... python3.10, python3; every candidate
/// is run, so a pyenv-style shim that fails is skipped; the path is stored as found (the symlink, not its target).
#[test]
fn path_discovery_skips_failing_shims_and_keeps_the_path_as_found() {
    let ctx = TestContext::new();
    let bin = ctx.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(
        &bin.join("python3.12"),
        "echo 'pyenv: python3.12: command not found' >&2; exit 127",
    );
    std::os::unix::fs::symlink(python311(), bin.join("python3")).unwrap();
    // A uv whose discovery finds nothing, so the PATH search runs; installing still goes through the real uv.
    let uv_wrapper = bin.join("uv-no-find");
    script(
        &uv_wrapper,
        &format!(
            "[ \"$1\" = python ] && exit 2\nexec {} \"$@\"",
            uv().display()
        ),
    );
    let url = index_url();
    let mut cmd = ctx.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.0",
        "--index-url",
        &url,
    ]);
    cmd.env_remove("BREADBOARD_PYTHON")
        .env("BREADBOARD_UV", &uv_wrapper)
        .env("PATH", &bin);
    cmd.assert().success();
    let json = ctx.list_json();
    assert_eq!(
        json["versions"][0]["receipt"]["python"]["path"],
        bin.join("python3").display().to_string()
    );
}

/// With uv present, `uv python find` picks the interpreter.
#[test]
fn uv_discovery_is_used_when_uv_is_present() {
    let found = std::process::Command::new(uv())
        .args(["python", "find", "--no-python-downloads", ">=3.10"])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    let version = std::process::Command::new(&found)
        .args(["-c", "import sys; print(sys.version_info[:2] == (3, 11))"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&version.stdout).trim() != "True" {
        // The fixture wheelhouse is cp311-only; another default Python cannot install it.
        eprintln!("skipped: uv finds {found}, not a Python 3.11");
        return;
    }
    let ctx = TestContext::new();
    let url = index_url();
    let mut cmd = ctx.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.0",
        "--index-url",
        &url,
    ]);
    cmd.env_remove("BREADBOARD_PYTHON");
    cmd.assert().success();
    assert_eq!(
        ctx.list_json()["versions"][0]["receipt"]["python"]["path"],
        found
    );
}
