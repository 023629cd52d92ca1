use std::path::Path;

use crate::common::*;

fn receipt(ctx: &TestContext, version: &str) -> serde_json::Value {
    let path = ctx
        .engine_dir()
        .join("versions")
        .join(version)
        .join("receipt.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A venv whose base interpreter was removed is detected; `install --force` rebuilds it from the receipt once the
/// interpreter is back, or with another `--python`. pip's `python -m venv` records the interpreter's directory as
/// `home` and symlinks `bin/python3` to the path it was started as, so removing our symlink breaks the venv.
#[test]
fn broken_venv_is_detected_and_rebuilt_pip() {
    let ctx = TestContext::new();
    let bin = ctx.dir.path().join("pybin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("python3");
    std::os::unix::fs::symlink(python311(), &link).unwrap();
    let link_s = link.to_str().unwrap();

    ctx.install(&[
        "--version",
        "0.1.0",
        "--python",
        link_s,
        "--installer",
        "pip",
    ])
    .success();
    // Stored as found, not resolved through the symlink.
    assert_eq!(receipt(&ctx, "0.1.0")["python"]["path"], link_s);

    std::fs::remove_file(&link).unwrap();
    let list = ctx.cmd(&["engine", "list"]).assert().success();
    assert!(
        stdout(&list).contains("(current, broken)"),
        "{}",
        stdout(&list)
    );
    assert!(
        stderr(&list).contains("was the underlying Python interpreter removed?"),
        "{}",
        stderr(&list)
    );

    let refused = ctx
        .cmd(&["engine", "install", "--version", "0.1.0"])
        .assert()
        .code(7);
    let err = stderr(&refused);
    assert!(err.contains("the venv of engine 0.1.0 is broken"), "{err}");
    assert!(
        err.contains("breadboard engine install --version 0.1.0 --force"),
        "{err}"
    );

    // The interpreter comes back: --force rebuilds from the receipt (same python path, same installer).
    std::os::unix::fs::symlink(python311(), &link).unwrap();
    let mut cmd = ctx.cmd(&["engine", "install", "--version", "0.1.0", "--force"]);
    cmd.env_remove("BREADBOARD_PYTHON");
    let rebuilt = cmd.assert().success();
    assert!(
        stdout(&rebuilt).starts_with("rebuilt breadboard-engine 0.1.0"),
        "{}",
        stdout(&rebuilt)
    );
    let r = receipt(&ctx, "0.1.0");
    assert_eq!(r["python"]["path"], link_s);
    assert_eq!(r["installer"], "pip");
    ctx.assert_current_complete("0.1.0");

    // Gone for good: --force with another --python (and uv, to be quick).
    std::fs::remove_file(&link).unwrap();
    let py = python311().to_str().unwrap();
    ctx.install(&[
        "--version",
        "0.1.0",
        "--force",
        "--python",
        py,
        "--installer",
        "uv",
    ])
    .success();
    assert_eq!(receipt(&ctx, "0.1.0")["python"]["path"], py);
    ctx.assert_current_complete("0.1.0");
}

/// uv also keeps the interpreter path unresolved (`pyvenv.cfg` home is the symlink's directory, `bin/python` links
/// to the symlink), so the same detection applies to uv-built venvs.
#[test]
fn broken_venv_is_detected_uv() {
    let ctx = TestContext::new();
    let bin = ctx.dir.path().join("pybin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("python3");
    std::os::unix::fs::symlink(python311(), &link).unwrap();
    ctx.install(&["--version", "0.1.0", "--python", link.to_str().unwrap()])
        .success();
    assert_eq!(
        std::fs::read_link(ctx.engine_dir().join("versions/0.1.0/bin/python")).unwrap(),
        Path::new(&link)
    );
    std::fs::remove_file(&link).unwrap();
    let json = ctx.list_json();
    assert!(
        json["versions"][0]["broken"]
            .as_str()
            .unwrap()
            .contains("broken symlink"),
        "{json}"
    );
    ctx.cmd(&["engine", "install", "--version", "0.1.0"])
        .assert()
        .code(7);
}
