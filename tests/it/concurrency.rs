use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn spawn(ctx: &TestContext, args: &[&str]) -> std::process::Child {
    let mut cmd: Command = ctx.command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Two installs at once serialise on the control lock: the second says it waits, and for whom; both succeed.
#[test]
fn concurrent_installs_serialise() {
    let ctx = TestContext::new();
    let url = index_url();
    let first = spawn(&ctx, &["engine", "install", "--index-url", &url]);
    let holder = ctx.home.join("run/control.lock.holder");
    wait_for(
        "the first install to hold the lock",
        Duration::from_secs(30),
        || holder.is_file(),
    );
    let second = spawn(
        &ctx,
        &[
            "engine",
            "install",
            "--index-url",
            &url,
            "--version",
            "0.1.0",
        ],
    );
    let first_pid = first.id();
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let waited = String::from_utf8_lossy(&b.stderr);
    assert!(
        waited.contains(&format!(
            "waiting for pid {first_pid} (`breadboard engine install`) to release"
        )),
        "{waited}"
    );
    ctx.assert_current_complete("0.1.0");
    assert_eq!(ctx.link("previous").as_deref(), Some("0.1.1"));
    assert_eq!(
        ctx.version_dirs(),
        vec![("0.1.0".into(), true), ("0.1.1".into(), true)]
    );
}

#[test]
fn lock_timeout_is_exit_4() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.home.join("run")).unwrap();
    let lock = std::fs::File::create(ctx.home.join("run/control.lock")).unwrap();
    lock.lock().unwrap();
    let mut cmd = ctx.cmd(&["engine", "rollback"]);
    cmd.env("BREADBOARD_LOCK_TIMEOUT", "0.3");
    let assert = cmd.assert().code(4);
    let err = stderr(&assert);
    assert!(
        err.contains("waiting for another breadboard process"),
        "{err}"
    );
    assert!(err.contains("timed out after"), "{err}");
    assert!(err.contains("BREADBOARD_LOCK_TIMEOUT="), "{err}");
}

/// kill -9 of a first install: `current` stays absent; the next run removes the leftover and succeeds.
#[test]
fn kill_during_first_install() {
    let ctx = TestContext::new();
    let url = index_url();
    let mut child = spawn(&ctx, &["engine", "install", "--index-url", &url]);
    let cfg = ctx.engine_dir().join("versions/0.1.1/pyvenv.cfg");
    wait_for("the venv to be created", Duration::from_secs(60), || {
        cfg.is_file()
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // uv/pip children die with the CLI (PR_SET_PDEATHSIG) instead of writing on into the leftover dir.
    let home = ctx.home.display().to_string();
    wait_for(
        "the installer children to exit",
        Duration::from_secs(15),
        || processes_mentioning(&home).is_empty(),
    );
    assert_eq!(
        ctx.link("current"),
        None,
        "current must stay absent after a killed first install"
    );
    assert_eq!(ctx.version_dirs(), vec![("0.1.1".into(), false)]);

    let again = ctx.install(&[]).success();
    assert!(
        stderr(&again).contains("removing incomplete engine 0.1.1"),
        "{}",
        stderr(&again)
    );
    ctx.assert_current_complete("0.1.1");
    assert_eq!(ctx.version_dirs(), vec![("0.1.1".into(), true)]);
}

/// kill -9 of an upgrade: `current` keeps pointing at the old, complete venv.
#[test]
fn kill_during_upgrade() {
    let ctx = TestContext::new();
    ctx.install(&["--version", "0.1.0"]).success();
    let mut child = spawn(&ctx, &["engine", "upgrade"]);
    let site = ctx.engine_dir().join("versions/0.1.1/lib");
    wait_for(
        "the new venv to be populated",
        Duration::from_secs(60),
        || site.is_dir(),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever moment the kill hit, current is a complete venv: the old one, or the new one if it had committed.
    let current = ctx.link("current").unwrap();
    ctx.assert_current_complete(&current);

    ctx.cmd(&["engine", "upgrade"]).assert().success();
    ctx.assert_current_complete("0.1.1");
    assert!(
        ctx.version_dirs().iter().all(|(_, complete)| *complete),
        "{:?}",
        ctx.version_dirs()
    );
}
