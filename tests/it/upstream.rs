//! An engine that is not ours, supervised through `BREADBOARD_ENGINE_CMD`: a stand-in that answers exactly as the
//! upstream BreadBoard engine does (its `/health` shape, no instance id, no `/v1/shutdown`, its own bind from
//! `BREADBOARD_CLI_PORT`). Start, status, restart, stop and the crash report work with it, and a start that fails
//! leaves nothing running while every "stopped" it prints is true.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::supervisor::{supervisors_of, Engine};

/// This home's stand-in engines and supervisors still alive.
fn left_running(e: &Engine) -> Vec<u32> {
    let home = format!("BREADBOARD_HOME={}", e.ctx.home.display());
    let mut left: Vec<u32> = processes_mentioning("fake_engine.py")
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == home.as_bytes()))
        })
        .collect();
    left.extend(supervisors_of(e));
    left
}

/// Runs a command that must succeed; its `--json` document.
fn succeeds(e: &Engine, args: &[&str]) -> Value {
    let out = e.cmd(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn an_engine_without_our_identity_field_starts_restarts_stops_and_crashes_cleanly() {
    let mut e = Engine::fake("upstream");
    // A proxy in the environment (a dead one) must not be used for the engine on loopback.
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        e.env.push((var.into(), "http://127.0.0.1:1".into()));
    }
    let started = succeeds(
        &e,
        &[
            "engine",
            "start",
            "--port",
            "auto",
            "--timeout",
            "20",
            "--json",
        ],
    );
    let pid = started["pid"].as_i64().unwrap();

    let (code, status) = e.status();
    assert_eq!(
        (code, status["state"].as_str()),
        (0, Some("running")),
        "{status}"
    );
    assert_eq!(status["pid"].as_i64(), Some(pid));

    let restarted = succeeds(&e, &["engine", "restart", "--timeout", "20", "--json"]);
    let new_pid = restarted["pid"].as_i64().unwrap();
    assert_ne!(new_pid, pid);
    assert!(
        !breadboard::os::procfs::alive(pid as i32),
        "the old engine survived the restart"
    );

    // kill -9: the crash report names how it ended.
    let _ = breadboard::os::sys::kill(new_pid as i32, 9);
    wait_for("status to see the crash", Duration::from_secs(20), || {
        e.status().1["state"] == "crashed"
    });
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{err}");
    assert!(err.contains("SIGKILL"), "{err}");

    // Started again, and stopped: there is no /v1/shutdown, so SIGTERM ends it, and nothing is left.
    e.cmd(&["engine", "start", "--port", "auto", "--timeout", "20"])
        .assert()
        .success();
    let out = e.cmd(&["engine", "stop"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped"),
        "{err}"
    );
    assert_eq!(left_running(&e), Vec::<u32>::new(), "{err}");
    assert_eq!(e.status().0, 10);
}

#[test]
fn a_start_that_fails_its_handshake_leaves_nothing_running() {
    // An engine that speaks another protocol: the strict handshake stops it, and says so truly.
    let mut e = Engine::fake("upstream");
    e.env.push(("FAKE_ENGINE_PROTOCOL".into(), "9.9".into()));
    let out = e
        .cmd(&["engine", "start", "--port", "auto", "--timeout", "20"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the engine was stopped"), "{err}");
    wait_for(
        "nothing left of the failed start",
        Duration::from_secs(10),
        || left_running(&e).is_empty(),
    );

    // An engine whose /health names another process is never taken for ours: the start times out, and what it
    // started is stopped by signals (it is not asked over HTTP), which the message says only because it is true.
    e.env.retain(|(k, _)| k != "FAKE_ENGINE_PROTOCOL");
    e.env.push(("FAKE_ENGINE_REPORTED_PID".into(), "1".into()));
    let out = e
        .cmd(&["engine", "start", "--port", "auto", "--timeout", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not answer its handshake within 3s; it was stopped"),
        "{err}"
    );
    assert_eq!(left_running(&e), Vec::<u32>::new(), "{err}");
    let (code, status) = e.status();
    assert_eq!(code, 10, "{status}");
}
