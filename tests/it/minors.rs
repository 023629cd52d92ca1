//! Small CLI behaviours at their edges: a huge last log line, a broken config under `engine list`, `--port 0`, a
//! relative BREADBOARD_HOME, a home that is a file, a SIGSTOPped engine.

use std::time::Duration;

use crate::common::*;
use crate::supervisor::{session, Engine};

#[test]
fn logs_tail_of_a_huge_last_line_is_bounded_and_says_it_was_cut() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.home.join("logs")).unwrap();
    let mut text = String::from("first line\nsecond line\n");
    text.push_str(&"x".repeat(32 * 1024 * 1024));
    text.push_str("the-real-end-of-the-line");
    text.push('\n');
    std::fs::write(ctx.home.join("logs/engine.log"), text).unwrap();
    let a = ctx.cmd(&["engine", "logs", "-n", "3"]).assert().success();
    let out = stdout(&a);
    assert!(out.len() < 16 * 1024, "{} bytes shown", out.len());
    assert!(
        out.contains("longer than 256 KiB")
            && out.contains("line cut:")
            && out.contains("the-real-end-of-the-line"),
        "{}",
        &out[..out.len().min(300)]
    );
    // Short lines are shown whole, the last n of them.
    std::fs::write(ctx.home.join("logs/engine.log"), "a\nb\nc\nd\n").unwrap();
    let a = ctx.cmd(&["engine", "logs", "-n", "3"]).assert().success();
    assert_eq!(stdout(&a), "b\nc\nd\n");
}

#[test]
fn list_warns_about_a_broken_config_and_port_0_is_a_usage_error_naming_auto() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(&ctx.home).unwrap();
    std::fs::write(ctx.home.join("config.toml"), "[engine\n").unwrap();
    let a = ctx.cmd(&["engine", "list"]).assert().success();
    assert!(
        stderr(&a).contains("config.toml") && stderr(&a).contains("using defaults"),
        "{}",
        stderr(&a)
    );
    std::fs::write(ctx.home.join("config.toml"), "[engine]\nport = 0\n").unwrap();
    let a = ctx.cmd(&["engine", "start"]).assert().code(3);
    assert!(stderr(&a).contains("engine.port = 0"), "{}", stderr(&a));
    std::fs::remove_file(ctx.home.join("config.toml")).unwrap();
    let a = ctx
        .cmd(&["engine", "start", "--port", "0"])
        .assert()
        .code(2);
    assert!(stderr(&a).contains("--port auto"), "{}", stderr(&a));
}

/// The relative home part is a guard, not a reproduction: the CLI already made the home absolute before. It stays that
/// way by design (docs/cli.md): the home is resolved once, where the command runs.
#[test]
fn a_relative_home_is_the_same_home_from_anywhere_and_a_file_home_says_so() {
    let e = Engine::fake("ok");
    let base = e.ctx.dir.path();
    std::fs::create_dir_all(base.join("elsewhere")).unwrap();
    // Started with a relative home from its parent directory...
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .env("BREADBOARD_HOME", "home")
        .current_dir(base)
        .assert()
        .success();
    let reg = e
        .registration()
        .expect("registered under the absolute home");
    assert_eq!(
        reg["token_file"].as_str().unwrap(),
        e.ctx.home.join("run/engine.token").display().to_string(),
        "{}",
        stderr(&a)
    );
    // ...it is the same engine for the same home named from elsewhere.
    e.cmd(&["engine", "status"])
        .env("BREADBOARD_HOME", "../home")
        .current_dir(base.join("elsewhere"))
        .assert()
        .success();
    let sid = reg["sid"].as_i64().unwrap();
    e.cmd(&["engine", "stop"]).assert().success();
    wait_for("the session to end", Duration::from_secs(20), || {
        session(sid).is_empty()
    });

    let file_home = base.join("a-file");
    std::fs::write(&file_home, "").unwrap();
    let a = e
        .cmd(&["engine", "start"])
        .env("BREADBOARD_HOME", &file_home)
        .assert()
        .code(3);
    let err = stderr(&a);
    assert!(
        err.contains("is a file, not a directory")
            && err.contains("BREADBOARD_HOME")
            && !err.contains("chown"),
        "{err}"
    );
}

#[test]
fn stop_of_a_sigstopped_supervisor_continues_it_and_says_so() {
    let e = Engine::fake("ok");
    e.start();
    let reg = e.registration().unwrap();
    let sup = reg["supervisor_pid"].as_i64().unwrap() as i32;
    let sid = reg["sid"].as_i64().unwrap();
    breadboard::os::sys::kill(sup, libc::SIGSTOP).unwrap();
    wait_for(
        "the supervisor to be stopped",
        Duration::from_secs(5),
        || breadboard::os::procfs::stat(sup).is_some_and(|s| s.state == 'T'),
    );
    let a = e.cmd(&["engine", "stop"]).assert().success();
    let err = stderr(&a);
    assert!(
        err.contains("stopped by a signal") && err.contains("SIGCONT"),
        "{err}"
    );
    // A graceful stop (the engine answers /v1/shutdown), not the ladder that ends in killing its session.
    assert!(
        !err.contains("ignored SIGTERM") && !err.contains("killing its session"),
        "{err}"
    );
    wait_for("the session to end", Duration::from_secs(20), || {
        session(sid).is_empty()
    });
}

/// The engine mark names the home canonically, so a home spelled through a symlink, with `..` or a trailing `/` is
/// the same home when leftovers are looked for.
#[test]
fn leftovers_are_found_however_the_home_is_spelled() {
    let e = Engine::fake("ok");
    std::fs::create_dir_all(&e.ctx.home).unwrap();
    let base = e.ctx.dir.path();
    std::os::unix::fs::symlink(&e.ctx.home, base.join("link")).unwrap();
    let canonical = std::fs::canonicalize(&e.ctx.home).unwrap();
    let via_link = format!("{}/", base.join("link").display());
    e.cmd(&["engine", "start", "--port", "auto"])
        .env("BREADBOARD_HOME", &via_link)
        .assert()
        .success();
    let reg = e.registration().unwrap();
    let pid = reg["pid"].as_i64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mark = environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"BREADBOARD_ENGINE_MARK="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the engine carries the mark");
    assert_eq!(
        mark,
        format!(
            "{} {}",
            reg["instance_id"].as_str().unwrap(),
            canonical.display()
        )
    );
    e.cmd(&["engine", "stop"])
        .env("BREADBOARD_HOME", &via_link)
        .assert()
        .success();
    // A leftover of an earlier engine (marked canonically, as every engine now is) is found by another spelling.
    let mut left = std::process::Command::new("sleep")
        .arg("600")
        .env(
            "BREADBOARD_ENGINE_MARK",
            format!(
                "0f0f0f0f-dead-4bee-8eef-000000000001 {}",
                canonical.display()
            ),
        )
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let a = e
        .cmd(&["engine", "stop"])
        .env(
            "BREADBOARD_HOME",
            format!("{}/../link/", base.join("link").display()),
        )
        .assert()
        .success();
    assert!(stderr(&a).contains("leftover"), "{}", stderr(&a));
    wait_for("the leftover to end", Duration::from_secs(10), || {
        left.try_wait().unwrap().is_some()
    });
}

#[test]
fn a_fifo_as_the_registration_is_moved_aside_not_waited_on() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.home.join("run")).unwrap();
    let reg = ctx.home.join("run/engine.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&reg)
        .status()
        .unwrap()
        .success());
    let mut stop = ctx.cmd(&["engine", "stop"]);
    stop.timeout(Duration::from_secs(20));
    let a = stop.assert().success();
    assert!(
        !reg.symlink_metadata().is_ok_and(|m| !m.is_file()),
        "the FIFO was moved aside: {}",
        stderr(&a)
    );
}
