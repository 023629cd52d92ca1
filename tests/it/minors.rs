//! Small CLI behaviours at their edges: a huge last log line, a broken config under `engine list`, `--port 0`, a
//! relative BREADBOARD_HOME, a home that is a file, a SIGSTOPped engine.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::supervisor::{session, Engine};

#[test]
fn logs_tail_of_a_huge_last_line_is_bounded_and_says_it_was_cut() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.home.join("logs")).unwrap();
    let mut text = String::from("first line\nsecond line\n");
    text.push_str(&"x".repeat(32 * 1024 * 1024));
    text.push('\n');
    std::fs::write(ctx.home.join("logs/engine.log"), text).unwrap();
    let a = ctx.cmd(&["engine", "logs", "-n", "3"]).assert().success();
    let out = stdout(&a);
    assert!(out.len() < 16 * 1024, "{} bytes shown", out.len());
    assert!(
        out.contains("longer than 256 KiB") && out.contains("line cut:"),
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
    breadboard::sys::kill(sup, libc::SIGSTOP).unwrap();
    wait_for(
        "the supervisor to be stopped",
        Duration::from_secs(5),
        || breadboard::procfs::stat(sup).is_some_and(|s| s.state == 'T'),
    );
    let t0 = Instant::now();
    let a = e.cmd(&["engine", "stop"]).assert().success();
    let took = t0.elapsed();
    let err = stderr(&a);
    assert!(
        err.contains("stopped by a signal") && err.contains("SIGCONT"),
        "{err}"
    );
    assert!(!err.contains("ignored SIGTERM"), "{err}");
    // A graceful stop (the engine answers /v1/shutdown), not the 8 s + 8 s ladder; generous slack for a loaded box.
    assert!(took < Duration::from_secs(8), "{took:?}: {err}");
    wait_for("the session to end", Duration::from_secs(20), || {
        session(sid).is_empty()
    });
}
