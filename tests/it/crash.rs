//! Crash detection and the crash report/prompt; kill -9 of the engine and of the supervisor with Ray up; SIGHUP
//! of the launching terminal; --foreground with Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::supervisor::{session, Engine};

fn ready_json(e: &Engine) -> Option<Value> {
    let reg = e.registration()?;
    let url = reg["url"]
        .as_str()?
        .trim_start_matches("http://")
        .to_owned();
    let (host, port) = url.rsplit_once(':')?;
    let c = breadboard::engine_client::EngineClient::new(
        host,
        port.parse().ok()?,
        Some(e.token()),
        Duration::from_millis(500),
    )?;
    c.get_json::<Value>("/ready").ok()
}

fn wait_ray_connected(e: &Engine) {
    wait_for("ray connected", Duration::from_secs(90), || {
        ready_json(e).is_some_and(|r| r["ray"]["state"] == "connected")
    });
}

fn last_exit(e: &Engine) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(e.ctx.home.join("run/last-exit.json")).ok()?).ok()
}

#[test]
fn kill_9_of_engine_and_supervisor_with_ray_leaves_no_orphans() {
    let mut e = Engine::new();
    e.env = vec![("BREADBOARD_RAY_START".into(), "background".into())];
    e.start();
    wait_ray_connected(&e);
    let reg = e.registration().unwrap();
    let sid = reg["sid"].as_i64().unwrap();
    let pid = reg["pid"].as_i64().unwrap() as i32;
    assert!(
        session(sid).len() > 3,
        "ray processes expected in the session: {:?}",
        session(sid)
    );

    // kill -9 the engine: the supervisor records it and ends everything of the session.
    breadboard::os::sys::kill(pid, 9).unwrap();
    wait_for("session empty", Duration::from_secs(20), || {
        session(sid).is_empty()
    });
    let exit = last_exit(&e).unwrap();
    assert_eq!(exit["signal"], 9);
    assert_eq!(exit["stop_requested"], false);
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(14));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("SIGKILL")
            && err.contains("memory")
            && err.contains("0.1.1")
            && err.contains("engine.log"),
        "{err}"
    );
    assert!(!err.contains(e.token().trim()));
    // Shown once.
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(14));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("exited unexpectedly"));

    // kill -9 the supervisor: PDEATHSIG ends the engine; the lock is released; status says crashed at once.
    e.start();
    wait_ray_connected(&e);
    let reg = e.registration().unwrap();
    let sid = reg["sid"].as_i64().unwrap();
    let sup = reg["supervisor_pid"].as_i64().unwrap() as i32;
    let pid = reg["pid"].as_i64().unwrap() as i32;
    breadboard::os::sys::kill(sup, 9).unwrap();
    if LINUX_EXTRAS {
        wait_for("engine gone", Duration::from_secs(10), || {
            !breadboard::os::procfs::alive(pid)
        });
    }
    let out = e
        .cmd(&["engine", "status"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(14));
    assert!(String::from_utf8_lossy(&out.stderr).contains("supervisor was killed"));
    // The next command cleans what is left of that session (the engine's own reaper also ends its Ray).
    e.cmd(&["engine", "stop"]).assert().success();
    wait_for(
        "session empty after supervisor kill",
        Duration::from_secs(20),
        || session(sid).is_empty(),
    );
}

#[test]
fn engine_survives_sighup_of_the_launching_terminal() {
    let e = Engine::new();
    let t = Term::open(
        &e.command(),
        e.ctx.dir.path(),
        "hup",
        "engine start --port auto",
    );
    t.wait_for_text("EXIT=0");
    let pid = e.registration().unwrap()["pid"].as_i64().unwrap() as i32;
    drop(t); // kill-server: SIGHUP to the pane's processes
             // The hangup reached the terminal's processes once the script's shell is gone; the engine got it then or never.
    let script_path = e
        .ctx
        .dir
        .path()
        .join("hup.sh")
        .to_string_lossy()
        .into_owned();
    wait_for(
        "the terminal's shell to die of SIGHUP",
        Duration::from_secs(10),
        || processes_mentioning(&script_path).is_empty(),
    );
    assert!(breadboard::os::procfs::alive(pid));
    let (code, st) = e.status();
    assert_eq!(code, 0, "{st}");
}

#[test]
fn crash_prompt_in_a_real_terminal_answered_both_ways() {
    let e = Engine::new();
    for (answer, expect_exit) in [("n", "EXIT=14"), ("", "EXIT=0")] {
        e.start();
        let reg = e.registration().unwrap();
        let id = reg["instance_id"].as_str().unwrap().to_owned();
        breadboard::os::sys::kill(reg["pid"].as_i64().unwrap() as i32, 9).unwrap();
        wait_for("crash recorded", Duration::from_secs(10), || {
            last_exit(&e).is_some_and(|x| x["instance_id"] == id.as_str())
                && !breadboard::os::procfs::alive(reg["supervisor_pid"].as_i64().unwrap() as i32)
        });
        let t = Term::open(
            &e.command(),
            e.ctx.dir.path(),
            &format!("prompt{}", answer.len()),
            "engine status",
        );
        t.wait_for_text("Restart the engine now? [Y/n]");
        let text = t.text();
        assert!(
            text.contains("exited unexpectedly") && text.contains("SIGKILL"),
            "{text}"
        );
        if answer.is_empty() {
            t.keys(&["Enter"]);
        } else {
            t.keys(&[answer, "Enter"]);
        }
        t.wait_for_text(expect_exit);
        let (code, st) = e.status();
        if answer.is_empty() {
            assert_eq!(code, 0, "restarted: {st}\n{}", t.text());
            assert_ne!(st["instance_id"].as_str(), Some(id.as_str()));
        } else {
            assert_eq!(code, 14, "{st}");
            assert!(t.text().contains("not restarted"));
        }
    }
}

#[test]
fn foreground_runs_attached_and_ctrl_c_stops_it_cleanly() {
    let e = Engine::new();
    let child = e
        .command()
        .args(["engine", "start", "--foreground", "--port", "auto"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("ready", Duration::from_secs(60), || {
        e.registration().is_some_and(|r| !r["ready_at"].is_null())
    });
    let reg = e.registration().unwrap();
    let pid = reg["pid"].as_i64().unwrap() as i32;
    assert_eq!(reg["supervisor_pid"].as_i64(), Some(i64::from(child.id())));
    let (code, _) = e.status();
    assert_eq!(code, 0);
    breadboard::os::sys::kill(child.id() as i32, 2).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("Uvicorn running"),
        "engine logs go to the terminal: {err}"
    );
    assert!(out.stdout.is_empty());
    assert!(!breadboard::os::procfs::alive(pid));
    let (code, st) = e.status();
    assert_eq!(code, 10, "{st}");
}

#[test]
fn uninstall_purge_asks_in_a_real_terminal_and_no_keeps_everything() {
    let e = Engine::new(); // installed, not started
    let data = e.ctx.home.join("data");
    std::fs::create_dir_all(data.join("sessions")).unwrap();
    std::fs::write(data.join("sessions/keep.txt"), b"user data").unwrap();
    for (answer, expect_exit) in [("n", "EXIT=2"), ("y", "EXIT=0")] {
        let t = Term::open(
            &e.command(),
            e.ctx.dir.path(),
            &format!("purge{answer}"),
            "engine uninstall --purge",
        );
        t.wait_for_text("This cannot be undone.");
        t.keys(&[answer, "Enter"]);
        t.wait_for_text(expect_exit);
        if answer == "n" {
            assert!(t.text().contains("nothing was removed"), "{}", t.text());
            assert_eq!(
                std::fs::read(data.join("sessions/keep.txt")).unwrap(),
                b"user data"
            );
            assert!(
                e.ctx.home.join("engine/current").exists(),
                "the venv stays too"
            );
        } else {
            assert!(!data.exists(), "{}", t.text());
            assert!(!e.ctx.home.join("engine/current").exists());
        }
    }
}

fn marked(e: &Engine) -> Vec<i32> {
    breadboard::os::procfs::marked_processes("BREADBOARD_ENGINE_MARK", &e.ctx.home)
        .into_iter()
        .map(|m| m.pid)
        .collect()
}

#[test]
fn kill_9_of_a_foreground_engine_leaves_no_ray_worker_behind() {
    let mut e = Engine::new();
    e.env = vec![("BREADBOARD_RAY_START".into(), "background".into())];
    let mut fg = e
        .command()
        .args(["engine", "start", "--foreground", "--port", "auto"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the registration", Duration::from_secs(60), || {
        e.registration().is_some_and(|r| r["ready_at"].is_string())
    });
    wait_ray_connected(&e);
    // The engine's reaper records Ray's processes at connect and 5 s later; the point is a worker started after
    // both, so the turn waits until Ray has been up longer than that.
    let connected = std::time::Instant::now();
    wait_for("Ray up for 6 s", Duration::from_secs(10), || {
        connected.elapsed() >= Duration::from_secs(6)
    });
    let reg = e.registration().unwrap();
    let url = reg["url"].as_str().unwrap().to_owned();
    let token = e.token();
    let turn = || -> i32 {
        let id = session_with_input(&url, &token, r#"{"task": ""}"#, "hello");
        let evs = sse_until(
            &url,
            &format!("/v1/sessions/{id}/events?replay=true"),
            &token,
            "run_finished",
            Duration::from_secs(90),
        );
        evs.iter()
            .find(|ev| ev["type"] == "assistant_message")
            .and_then(|m| m["payload"]["worker_pid"].as_i64())
            .unwrap_or_else(|| panic!("no worker pid in {evs:?}")) as i32
    };
    let worker = turn();
    assert_ne!(i64::from(worker), reg["pid"].as_i64().unwrap());
    // Several slow turns at once (0.25 CPU each): Ray starts workers beyond those it started with, after the
    // reaper's last record. The kill comes while they run.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let id = session_with_input(
            &url,
            &token,
            r#"{"task": "", "metadata": {"echo_delay_ms": 500}}"#,
            "a slow turn of many words that runs for a while yet",
        );
        sessions.push(id);
    }
    for id in &sessions {
        sse_until(
            &url,
            &format!("/v1/sessions/{id}/events?replay=true"),
            &token,
            "assistant_delta",
            Duration::from_secs(90),
        );
    }
    let before = marked(&e);
    // Everything the engine started, whoever is its parent now: its tree under the foreground CLI, and what carries
    // its mark (Ray's re-parented daemons and workers).
    let mut tree = breadboard::os::procfs::descendants(fg.id() as i32);
    tree.extend(
        before
            .iter()
            .filter(|p| !tree.contains(p))
            .collect::<Vec<_>>(),
    );
    let named: Vec<(i32, String)> = tree
        .iter()
        .map(|p| (*p, breadboard::os::procfs::cmdline(*p).unwrap_or_default()))
        .collect();
    eprintln!("before the kill: {named:?}");
    // Ray's workers running the turns now (the first turn's worker may have been retired by Ray since).
    let workers: Vec<i32> = named
        .iter()
        .filter(|(_, cmd)| cmd.starts_with("ray::turn_batches"))
        .map(|(p, _)| *p)
        .collect();

    breadboard::os::sys::kill(fg.id() as i32, 9).unwrap();
    fg.wait().unwrap();
    if !LINUX_EXTRAS {
        // No parent-death signal (macOS, the portable build): the engine outlives its foreground supervisor until
        // the next command ends everything carrying its mark.
        e.cmd(&["engine", "stop"]).assert().success();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<(i32, String)> = tree
            .iter()
            .filter(|p| breadboard::os::procfs::alive(**p))
            .map(|p| (*p, breadboard::os::procfs::cmdline(*p).unwrap_or_default()))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of the engine outlived it: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!breadboard::os::procfs::alive(worker));
    assert!(!workers.is_empty(), "no Ray worker ran a turn: {named:?}");
    assert!(
        workers.iter().all(|w| before.contains(w)),
        "every worker carries the engine mark: workers {workers:?}, marked {before:?}"
    );
    wait_for(
        "every process of the engine to end",
        Duration::from_secs(30),
        || marked(&e).is_empty(),
    );
    // After a real Ray turn the home holds Ray's session dirs (0777 by Ray's choice) inside the engine's private
    // data/ray: nothing another user can reach, so doctor has nothing to report about it.
    let out = e.cmd(&["engine", "doctor", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let private = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "home.private")
        .unwrap_or_else(|| panic!("no home.private in {doc}"));
    assert_eq!(private["status"], "ok", "{private}");
}

#[test]
fn leftovers_of_an_earlier_engine_are_found_by_their_mark_and_stop_ends_them() {
    let e = Engine::fake("ok");
    let spawn_marked = |home: &std::path::Path| {
        Command::new("sleep")
            .arg("600")
            .env(
                "BREADBOARD_ENGINE_MARK",
                format!("0f0f0f0f-dead-4bee-8eef-000000000000 {}", home.display()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut ours = spawn_marked(&e.ctx.home);
    let other_home = e.ctx.dir.path().join("other-home");
    let mut theirs = spawn_marked(&other_home);
    let pid = ours.id() as i32;

    let out = e.cmd(&["engine", "doctor", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "engine.orphans")
        .unwrap_or_else(|| panic!("no engine.orphans in {doc}"));
    let detail = found["detail"].as_str().unwrap();
    assert_eq!(found["status"], "error", "{found}");
    assert!(
        detail.contains(&e.ctx.home.display().to_string())
            && detail.contains(&pid.to_string())
            && !detail.contains(&theirs.id().to_string()),
        "{found}"
    );
    let a = e.cmd(&["engine", "stop"]).assert().success();
    assert!(stderr(&a).contains("leftover"), "{}", stderr(&a));
    wait_for("the leftover to end", Duration::from_secs(10), || {
        ours.try_wait().unwrap().is_some()
    });
    assert!(
        breadboard::os::procfs::alive(theirs.id() as i32),
        "another home's process is left alone"
    );
    let _ = theirs.kill();
    let _ = theirs.wait();
}
