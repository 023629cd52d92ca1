//! `sessions list --watch`: the live list over the real engine's realtime bus (a WebSocket on 127.0.0.1), across an
//! engine restart.

use std::time::Duration;

use serde_json::Value;

use crate::client::{run, spawn_collected};
use crate::common::*;
use crate::supervisor::Engine;

fn messages(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn watch_prints_changes_live_and_resubscribes_after_an_engine_restart() {
    let e = Engine::new();
    e.start();
    let (mut child, out, err) = spawn_collected(&e, &["sessions", "list", "--watch"]);
    let seen = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        wait_for(what, Duration::from_secs(60), || {
            messages(&out.lines.lock().unwrap()).iter().any(pred)
        })
    };
    seen("the first snapshot", &|m| {
        m["type"] == "snapshot" && m["topic"] == "sessions" && m["payload"] == serde_json::json!([])
    });

    let new = run(&e, &["sessions", "new"]);
    assert_eq!(new.code, 0, "{}", new.stderr);
    let id = new.stdout.trim().to_owned();
    seen("the created event", &|m| {
        m["type"] == "event"
            && m["payload"]["kind"] == "created"
            && m["payload"]["session_id"] == id.as_str()
    });

    // A restart drops the bus: the watcher reconnects to the new instance (new token) and replaces its list with
    // a fresh snapshot that has the session.
    let snapshots_before = messages(&out.lines.lock().unwrap())
        .iter()
        .filter(|m| m["type"] == "snapshot")
        .count();
    e.cmd(&["engine", "restart"]).assert().success();
    wait_for(
        "a snapshot after the restart",
        Duration::from_secs(60),
        || {
            let all = messages(&out.lines.lock().unwrap());
            let snaps: Vec<&Value> = all.iter().filter(|m| m["type"] == "snapshot").collect();
            snaps.len() > snapshots_before
                && snaps.last().unwrap()["payload"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["session_id"] == id.as_str())
        },
    );
    assert!(
        err.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("lost the engine's realtime bus")),
        "{:?}",
        err.lines.lock().unwrap()
    );

    let rm = run(&e, &["sessions", "rm", &id, "--yes"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    seen("the deleted event", &|m| {
        m["payload"]["kind"] == "deleted" && m["payload"]["session_id"] == id.as_str()
    });

    // Ctrl-C ends the watch with 0; every stdout line was one bus message.
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    for m in messages(&out.lines.lock().unwrap()) {
        assert_eq!(m["topic"], "sessions", "{m}");
    }
}
