//! Supervisor: engine start | stop | restart | status | logs on the real engine (and a fake one for failure modes
//! the real engine cannot show: tests/fixtures/fake_engine.py).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A home with the engine installed; stops the instance and kills its session on drop, even after a failure.
pub struct Engine {
    pub ctx: TestContext,
    pub env: Vec<(String, String)>,
    /// The umask the CLI runs under, when a test must not depend on the runner's.
    pub umask: Option<libc::mode_t>,
}

impl Engine {
    pub fn new() -> Engine {
        let ctx = TestContext::new();
        ctx.install(&["--version", "0.1.1"]).success();
        Engine {
            ctx,
            env: vec![("BREADBOARD_RAY_START".into(), "off".into())],
            umask: None,
        }
    }

    /// A home without an installed engine, for the fake engine (BREADBOARD_ENGINE_CMD).
    pub fn fake(mode: &str) -> Engine {
        let ctx = TestContext::new();
        let script = repo_root().join("tests/fixtures/fake_engine.py");
        Engine {
            ctx,
            env: vec![
                (
                    "BREADBOARD_ENGINE_CMD".into(),
                    format!("python3 {}", script.display()),
                ),
                ("FAKE_ENGINE_MODE".into(), mode.into()),
            ],
            umask: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut c = self.ctx.command();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(mask) = self.umask {
            // Through sh, so the CLI (and what it spawns) inherits the umask; its own args follow as "$@".
            let mut wrapped = Command::new("sh");
            wrapped
                .arg("-c")
                .arg(format!("umask {mask:03o}; exec \"$0\" \"$@\""))
                .arg(c.get_program());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            if let Some(dir) = c.get_current_dir() {
                wrapped.current_dir(dir);
            }
            c = wrapped;
        }
        c
    }

    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.command());
        c.args(args).timeout(Duration::from_secs(120));
        c
    }

    pub fn start(&self) -> Value {
        let a = self
            .cmd(&["engine", "start", "--port", "auto", "--json"])
            .assert();
        let out = a.get_output().clone();
        assert!(
            out.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self) -> (i32, Value) {
        let out = self.cmd(&["engine", "status", "--json"]).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        )
    }

    pub fn registration(&self) -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(self.ctx.home.join("run/engine.json")).ok()?)
            .ok()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.ctx.home.join("run/engine.token")).unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let reg = self.registration();
        let _ = self
            .command()
            .args(["engine", "stop", "--force", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(sid) = reg.as_ref().and_then(|r| r["sid"].as_i64()) {
            kill_session(sid as i32);
        }
    }
}

pub fn kill_session(sid: i32) {
    for p in breadboard::os::procfs::session_members(sid, &[]) {
        let _ = breadboard::os::sys::kill(p, 9);
    }
}

/// Live processes of a session.
pub fn session(sid: i64) -> Vec<i32> {
    breadboard::os::procfs::session_members(sid as i32, &[])
}

pub fn health(url: &str, token: Option<&str>) -> Option<Value> {
    let u = url.trim_start_matches("http://");
    let (host, port) = u.rsplit_once(':')?;
    let c = breadboard::engine_client::EngineClient::new(
        host,
        port.parse().ok()?,
        token.map(str::to_owned),
        Duration::from_millis(500),
    )?;
    c.get_json::<Value>("/health").ok()
}

/// Supervisor processes of this test's home still alive (they run with the home as their working directory).
pub fn supervisors_of(e: &Engine) -> Vec<u32> {
    let home = e.ctx.home.display().to_string();
    processes_mentioning("__supervise")
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/cwd"))
                .is_ok_and(|cwd| cwd.display().to_string() == home)
        })
        .collect()
}

pub fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn start_status_logs_stop_on_the_real_engine() {
    let e = Engine::new();
    let t0 = Instant::now();
    let started = e.start();
    eprintln!("start took {:?}", t0.elapsed());
    let url = started["url"].as_str().unwrap().to_owned();
    let pid = started["pid"].as_i64().unwrap();
    assert_eq!(started["action"], "started");
    assert_eq!(started["engine_version"], "0.1.1");

    // Registration and token: 0600, the token never printed, the engine answers with our identity.
    use std::os::unix::fs::PermissionsExt;
    for f in ["run/engine.json", "run/engine.token"] {
        let mode = std::fs::metadata(e.ctx.home.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let reg = e.registration().unwrap();
    let token = e.token();
    assert_eq!(reg["pid"].as_i64(), Some(pid));
    assert!(
        !reg["command"].to_string().contains(&token),
        "token in argv"
    );
    assert!(health(&url, None).is_none(), "health must need the token");
    let h = health(&url, Some(&token)).unwrap();
    assert_eq!(h["instance_id"], reg["instance_id"]);
    let engine_cmdline = breadboard::os::procfs::cmdline(pid as i32).unwrap();
    assert!(engine_cmdline.contains("--fd"), "{engine_cmdline}");
    assert!(!engine_cmdline.contains(&token));

    // status: running, exit 0, fast path.
    let (code, st) = e.status();
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["state"], "running");
    assert_eq!(st["pid"].as_i64(), Some(pid));
    assert_eq!(st["engine_version"], "0.1.1");
    // The engine's own values (its /ready), not a display string.
    assert_eq!(
        (st["ray"]["mode"].as_str(), &st["ray"]["start"]),
        (Some("off"), &Value::Null),
        "{st}"
    );
    let human = e.cmd(&["engine", "status"]).assert().success();
    assert!(stdout(&human).contains("running at"), "{}", stdout(&human));

    // Idempotent start: same pid, exit 0.
    let again = e.start();
    assert_eq!(again["action"], "already_running");
    assert_eq!(again["pid"].as_i64(), Some(pid));

    // logs -n: the engine's lines, never the token.
    let logs = e.cmd(&["engine", "logs", "-n", "50"]).assert().success();
    let text = stdout(&logs);
    assert!(text.contains("Uvicorn running"), "{text}");
    assert!(!text.contains(&token));
    for a in [&human, &logs] {
        assert!(!stderr(a).contains(&token));
    }

    // stop: exit 0, nothing of the session left, the port free, registration gone.
    let sid = reg["sid"].as_i64().unwrap();
    let t0 = Instant::now();
    let stop = e.cmd(&["engine", "stop"]).assert().success();
    eprintln!("stop took {:?}", t0.elapsed());
    assert!(
        stdout(&stop).contains("engine stopped"),
        "{}",
        stdout(&stop)
    );
    assert!(session(sid).is_empty(), "left: {:?}", session(sid));
    assert!(!breadboard::os::procfs::port_listening(port_of(&url)));
    assert!(e.registration().is_none());
    let exit: Value = serde_json::from_str(
        &std::fs::read_to_string(e.ctx.home.join("run/last-exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exit["stop_requested"], true);

    // stop again: idempotent; status: stopped (10), no crash report.
    let again = e.cmd(&["engine", "stop"]).assert().success();
    assert!(stdout(&again).contains("not running"));
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")));

    // Next start rotates the log.
    e.start();
    assert!(e.ctx.home.join("logs/engine.log.1").is_file());
    // logs -f follows: it prints the existing tail and keeps running.
    let mut follow = e
        .command()
        .args(["engine", "logs", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("logs -f prints the existing tail");
    // A line appended after it started following shows up: it follows rather than exiting at the end.
    let marker = format!("follow-marker-{}", std::process::id());
    {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(e.ctx.home.join("logs/engine.log"))
            .unwrap();
        writeln!(log, "{marker}").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(&marker) => {
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(seen, "logs -f did not show a line appended while following");
    assert!(follow.try_wait().unwrap().is_none(), "logs -f exited");
    let _ = follow.kill();
    let _ = follow.wait();
    // restart: a new instance on the same port.
    let before = e.registration().unwrap();
    let r = e.cmd(&["engine", "restart", "--json"]).assert().success();
    let restarted: Value = serde_json::from_slice(&r.get_output().stdout).unwrap();
    assert_eq!(restarted["action"], "restarted");
    assert_ne!(restarted["instance_id"], before["instance_id"]);
    assert_eq!(restarted["url"], before["url"]);
    assert!(session(before["sid"].as_i64().unwrap()).is_empty());
}

#[test]
fn port_held_by_another_process_fails_fast_naming_it() {
    let e = Engine::fake("stubborn");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let t0 = Instant::now();
    let a = e
        .cmd(&["engine", "start", "--port", &port])
        .assert()
        .code(1);
    // Well under the 60 s handshake timeout: it failed on the bind, not by waiting (slack for a loaded CI box).
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let err = stderr(&a);
    assert!(err.contains(&format!("port {port}")), "{err}");
    // The portable build has no source for a listener's pid, and says so instead of guessing.
    let holder = if LINUX_EXTRAS {
        format!("pid {}", std::process::id())
    } else {
        breadboard::os::procfs::UNNAMED_HOLDER.to_owned()
    };
    assert!(err.contains(&holder), "{err}");
    assert!(e.registration().is_none());
    assert!(processes_mentioning("__supervise")
        .iter()
        .all(|p| !breadboard::os::procfs::cmdline(*p as i32)
            .unwrap_or_default()
            .contains(e.ctx.home.to_str().unwrap())));
}

#[test]
fn stop_ends_an_engine_that_ignores_shutdown_and_sigterm() {
    let e = Engine::fake("stubborn");
    let started = e.start();
    let reg = e.registration().unwrap();
    let sid = reg["sid"].as_i64().unwrap();
    // The stubborn engine spawned a SIGTERM-ignoring child in its own session... no: its own process *group*
    // via start_new_session, which is a new session: it is still our descendant (subreaper).
    assert!(health(started["url"].as_str().unwrap(), Some(&e.token())).is_some());
    let t0 = Instant::now();
    let a = e
        .cmd(&["engine", "stop", "--timeout", "4"])
        .assert()
        .success();
    let took = t0.elapsed();
    // Bounded by --timeout 4 (the default ladder is 20 s), plus slack for a loaded CI box.
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(stdout(&a).contains("killed"), "{}", stdout(&a));
    assert!(stderr(&a).contains("SIGTERM"), "{}", stderr(&a));
    assert!(session(sid).is_empty());
    let leftovers: Vec<u32> = processes_mentioning("time.sleep(1000)")
        .into_iter()
        .filter(|p| {
            breadboard::os::procfs::stat(*p as i32).is_some_and(|s| {
                s.ppid == reg["supervisor_pid"].as_i64().unwrap() as i32
                    || s.ppid == reg["pid"].as_i64().unwrap() as i32
            })
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!breadboard::os::procfs::port_listening(port_of(
        started["url"].as_str().unwrap()
    )));
}

#[test]
fn handshake_strict_fails_soft_warns_and_host_refused() {
    let e = Engine::fake("protocol9");
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(1);
    let err = stderr(&a);
    assert!(
        err.contains("9.9") && err.contains("1.0") && err.contains("--protocol soft"),
        "{err}"
    );
    assert!(e.registration().is_none());
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .env("BREADBOARD_PROTOCOL_STRICT", "0")
        .assert()
        .success();
    assert!(stderr(&a).contains("warning"), "{}", stderr(&a));
    let (code, st) = e.status();
    assert_eq!(
        (code, st["state"].as_str()),
        (13, Some("incompatible")),
        "{st}"
    );
    e.cmd(&["engine", "stop"]).assert().success();

    let a = e
        .cmd(&["engine", "start", "--port", "auto", "--host", "0.0.0.0"])
        .assert()
        .code(2);
    assert!(stderr(&a).contains("--allow-remote"), "{}", stderr(&a));
}

#[test]
fn early_exit_shows_the_crash_report_with_a_likely_cause() {
    let e = Engine::fake("import_error");
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(1);
    let err = stderr(&a);
    assert!(
        err.contains("exited unexpectedly") && err.contains("exit code 1"),
        "{err}"
    );
    assert!(
        err.contains("ModuleNotFoundError") && err.contains("broken"),
        "{err}"
    );
    assert!(err.contains("engine.log"), "{err}");
    // Shown once: status afterwards reports stopped-with-crash without repeating the report.
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("exited unexpectedly"));
}

#[test]
fn eight_concurrent_starts_make_exactly_one_engine() {
    let e = Engine::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            e.command()
                .args(["engine", "start", "--port", "auto", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push((
            v["instance_id"].as_str().unwrap().to_owned(),
            v["pid"].as_i64().unwrap(),
        ));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let home = e.ctx.home.display().to_string();
    let sups: Vec<u32> = processes_mentioning("__supervise")
        .into_iter()
        .filter(|p| {
            breadboard::os::procfs::cmdline(*p as i32)
                .unwrap_or_default()
                .contains(&home)
        })
        .collect();
    assert_eq!(sups.len(), 1, "{sups:?}");
    let engines: Vec<u32> = processes_mentioning("breadboard_engine")
        .into_iter()
        .filter(|p| {
            breadboard::os::procfs::cmdline(*p as i32)
                .unwrap_or_default()
                .contains(&home)
                && !sups.contains(p)
        })
        .collect();
    assert_eq!(engines.len(), 1, "{engines:?}");
}

#[test]
fn stale_and_corrupt_registration_and_corrupt_config() {
    let e = Engine::new();
    // A stale engine.json naming a live unrelated process (a session leader, like a supervisor would be).
    let mut sleeper = Command::new("setsid")
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();
    let spid = sleeper.id() as i64;
    wait_for("sleep to exist", Duration::from_secs(5), || {
        breadboard::os::procfs::alive(spid as i32)
    });
    std::fs::create_dir_all(e.ctx.home.join("run")).unwrap();
    let fake = serde_json::json!({
        "schema": 1, "instance_id": "stale-instance", "supervisor_pid": spid, "supervisor_start_ticks": 1,
        "sid": spid, "pid": spid, "pid_start_ticks": 1, "pgid": spid, "boot_id": "other-boot", "uid": 0,
        "host": "127.0.0.1", "port": 1, "url": "http://127.0.0.1:1", "token_file": "/nonexistent",
        "engine_version": "0.1.1", "protocol_version": "1.0", "venv": null, "command": [], "log_path": "/nonexistent",
        "ray_address": null, "ray_start": null, "foreground": false, "cli_version": "0", "started_at": "x",
        "started_at_unix": 0.0, "ready_at": "x", "stop_requested_at": null
    });
    std::fs::write(e.ctx.home.join("run/engine.json"), fake.to_string()).unwrap();
    let (code, _) = e.status();
    assert!(code == 14 || code == 10, "status {code}");
    e.cmd(&["engine", "stop"]).assert().success();
    assert!(
        breadboard::os::procfs::alive(spid as i32),
        "the unrelated process was signalled"
    );
    std::fs::write(e.ctx.home.join("run/engine.json"), fake.to_string()).unwrap();
    e.start();
    assert!(
        breadboard::os::procfs::alive(spid as i32),
        "the unrelated process was signalled"
    );
    e.cmd(&["engine", "stop"]).assert().success();
    assert!(breadboard::os::procfs::alive(spid as i32));
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // Empty and truncated engine.json: status says stopped; start moves it aside with a warning and proceeds.
    for junk in ["", "{\"schema\": 1, \"inst"] {
        std::fs::write(e.ctx.home.join("run/engine.json"), junk).unwrap();
        let (code, _) = e.status();
        assert_eq!(code, 10);
        let a = e
            .cmd(&["engine", "start", "--port", "auto"])
            .assert()
            .success();
        assert!(
            stderr(&a).contains("engine.json.corrupt-"),
            "{}",
            stderr(&a)
        );
        e.cmd(&["engine", "stop"]).assert().success();
    }

    // A config.toml that does not parse: start exits 3 naming line and column, nothing started. status, stop and
    // logs need only run/ and warn: a typo in the config never keeps a running engine from being seen or stopped.
    e.start();
    std::fs::write(e.ctx.home.join("config.toml"), "[protocol]\nmode = \n").unwrap();
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(3);
    assert!(stderr(&a).contains("line 2"), "{}", stderr(&a));
    for (args, code) in [
        (&["engine", "status"][..], 0),
        (&["engine", "logs", "-n", "1"][..], 0),
        (&["engine", "stop"][..], 0),
        (&["engine", "status"][..], 10),
    ] {
        let a = e.cmd(args).assert().code(code);
        assert!(
            stderr(&a).contains("line 2") && stderr(&a).contains("using defaults for this command"),
            "{}",
            stderr(&a)
        );
    }
    // Not even text: the same error, with the same way out.
    std::fs::write(e.ctx.home.join("config.toml"), b"\xff\n").unwrap();
    let a = e.cmd(&["engine", "install"]).assert().code(3);
    assert!(
        stderr(&a).contains("is not UTF-8 text") && stderr(&a).contains(".bak"),
        "{}",
        stderr(&a)
    );
    std::fs::write(
        e.ctx.home.join("config.toml"),
        "[protocol]\nmode = \"sloppy\"\n",
    )
    .unwrap();
    e.cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(3);
    assert!(e.registration().is_none());
}

/// An index with the fixture wheels plus a broken 0.1.2 (its `serve` exits 1 at once; `version --json` works, so
/// it installs). Separate from the shared index so other tests still see 0.1.1 as the newest in range.
fn broken_index() -> String {
    let root = target_dir().join("it-tmp/broken-index");
    let lock = std::fs::File::create(target_dir().join("broken-index.lock")).unwrap();
    lock.lock().unwrap();
    let wheel_name = "breadboard_engine-0.1.2-py3-none-any.whl";
    // Rebuilt whenever the shared fixtures are (their index pins the wheels' hashes).
    let stamp = std::fs::read_to_string(fixtures().join(".stamp")).unwrap_or_default();
    let fresh = std::fs::read_to_string(root.join(".stamp")).is_ok_and(|s| s == stamp);
    if !fresh || !root.join("wheelhouse").join(wheel_name).is_file() {
        let _ = std::fs::remove_dir_all(&root);
        let src = root.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let engine = repo_root().join("engine");
        assert!(Command::new("cp")
            .args(["-r"])
            .arg(engine.join("src"))
            .arg(engine.join("pyproject.toml"))
            .arg(engine.join("README.md"))
            .arg(&src)
            .status()
            .unwrap()
            .success());
        let pyproject = std::fs::read_to_string(src.join("pyproject.toml")).unwrap();
        let re: String = pyproject
            .lines()
            .map(|l| {
                if l.starts_with("version = ") {
                    "version = \"0.1.2\"".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(src.join("pyproject.toml"), re + "\n").unwrap();
        let main = src.join("src/breadboard_engine/__main__.py");
        let text = std::fs::read_to_string(&main).unwrap();
        let text = text.replacen(
            "import sys\n",
            "import sys\nif len(sys.argv) > 1 and sys.argv[1] == \"serve\":\n    print(\"ImportError: broken 0.1.2 (test fixture)\", file=sys.stderr)\n    sys.exit(1)\n",
            1,
        );
        std::fs::write(&main, text).unwrap();
        let wh = root.join("wheelhouse");
        std::fs::create_dir_all(&wh).unwrap();
        let st = Command::new(repo_root().join(".venv-dev/bin/python"))
            .args([
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-build-isolation",
                "--no-deps",
                "-w",
            ])
            .arg(&wh)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        for entry in std::fs::read_dir(wheelhouse()).unwrap().flatten() {
            let _ = std::os::unix::fs::symlink(entry.path(), wh.join(entry.file_name()));
        }
        assert!(Command::new("cp")
            .arg("-r")
            .arg(fixtures().join("simple"))
            .arg(&root)
            .status()
            .unwrap()
            .success());
        let idx = root.join("simple/breadboard-engine/index.html");
        let html = std::fs::read_to_string(&idx).unwrap().replace(
            "</body>",
            &format!("<a href=\"../../wheelhouse/{wheel_name}\">{wheel_name}</a>\n</body>"),
        );
        std::fs::write(&idx, html).unwrap();
        std::fs::write(root.join(".stamp"), &stamp).unwrap();
    }
    format!("{}/simple/", serve(root, 0))
}

#[test]
fn upgrade_of_a_running_engine_rolls_back_when_the_new_version_fails() {
    let url = broken_index();
    let e = Engine {
        ctx: TestContext::new(),
        env: vec![("BREADBOARD_RAY_START".into(), "off".into())],
        umask: None,
    };
    e.cmd(&[
        "engine",
        "install",
        "--version",
        "0.1.1",
        "--index-url",
        &url,
    ])
    .assert()
    .success();
    let before = e.start();
    let a = e.cmd(&["engine", "upgrade"]).assert().code(1);
    let err = stderr(&a);
    assert!(
        err.contains("rolling back to 0.1.1") && err.contains("engine.log.1"),
        "{err}"
    );
    assert!(err.contains("exit code 1"), "{err}");
    assert_eq!(e.ctx.link("current").as_deref(), Some("0.1.1"));
    let (code, st) = e.status();
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["engine_version"], "0.1.1");
    assert_eq!(st["url"], before["url"]);
    assert_ne!(st["instance_id"], before["instance_id"]);
    let failed = std::fs::read_to_string(e.ctx.home.join("logs/engine.log.1")).unwrap();
    assert!(failed.contains("broken 0.1.2"), "{failed}");
}

// ---------------------------------------------------------------------------------------------------------------
// Restart policy `engine.restart = "on-failure"`: backoff, crash-loop detection (`errored`), stops never restarted.

/// Turns the restart policy on, with a short first backoff so the tests take seconds, not minutes.
fn on_failure(e: &mut Engine, backoff_ms: u64) {
    std::fs::create_dir_all(&e.ctx.home).unwrap();
    std::fs::write(
        e.ctx.home.join("config.toml"),
        "[engine]\nrestart = \"on-failure\"\n",
    )
    .unwrap();
    e.env.push((
        "BREADBOARD_RESTART_BACKOFF_MS".into(),
        backoff_ms.to_string(),
    ));
}

fn engine_log(e: &Engine) -> String {
    std::fs::read_to_string(e.ctx.home.join("logs/engine.log")).unwrap_or_default()
}

fn session_ids(url: &str, token: &str) -> Vec<String> {
    let (code, body) = http(url, "GET", "/v1/sessions", Some(token), None);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

fn create_session(url: &str, token: &str, doc: Value) -> String {
    let (code, body) = http(
        url,
        "POST",
        "/v1/sessions",
        Some(token),
        Some(&doc.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["session_id"].as_str().unwrap().to_owned()
}

fn session_status(url: &str, token: &str, id: &str) -> String {
    let (code, body) = http(url, "GET", &format!("/v1/sessions/{id}"), Some(token), None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["status"].as_str().unwrap_or("").to_owned()
}

/// The events of a closed session (its stream ends after the replay).
fn events(url: &str, token: &str, id: &str) -> Vec<Value> {
    let (code, body) = http(
        url,
        "GET",
        &format!("/v1/sessions/{id}/events?replay=true"),
        Some(token),
        None,
    );
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Pids of the fake engine's children (`exit_after` mode) that belong to this test's home.
fn fake_children(e: &Engine) -> Vec<u32> {
    let home = e.ctx.home.display().to_string();
    processes_mentioning("fake-engine-child")
        .into_iter()
        .filter(|p| {
            breadboard::os::procfs::cmdline(*p as i32)
                .unwrap_or_default()
                .contains(&home)
        })
        .collect()
}

#[test]
fn on_failure_restarts_a_kill_9ed_engine_keeping_its_sessions_and_stop_is_final() {
    let mut e = Engine::new();
    on_failure(&mut e, 200);
    let started = e.start();
    let url = started["url"].as_str().unwrap().to_owned();
    let token = e.token();
    let reg = e.registration().unwrap();
    let (sup, sid, pid) = (
        reg["supervisor_pid"].as_i64().unwrap(),
        reg["sid"].as_i64().unwrap(),
        reg["pid"].as_i64().unwrap(),
    );
    assert_eq!(reg["restart_policy"], "on-failure");

    // Sessions before the crash: one finished turn, one idle session waiting for input.
    let done = create_session(
        &url,
        &token,
        serde_json::json!({"task": "before the crash", "metadata": {"cli_session_kind": "oneshot"}}),
    );
    wait_for("the first turn", Duration::from_secs(30), || {
        session_status(&url, &token, &done) == "completed"
    });
    let idle = create_session(&url, &token, serde_json::json!({"task": ""}));

    let t0 = Instant::now();
    breadboard::os::sys::kill(pid as i32, 9).unwrap();
    // The same supervisor restarts it: a new engine pid with the same instance answers /health.
    wait_for(
        "the restarted engine to answer",
        Duration::from_secs(30),
        || {
            e.registration().is_some_and(|r| {
                r["pid"].as_i64() != Some(pid)
                    && health(&url, Some(&token)).is_some_and(|h| h["pid"] == r["pid"])
            })
        },
    );
    eprintln!("kill -9 to restarted and healthy: {:?}", t0.elapsed());
    let after = e.registration().unwrap();
    let new_pid = after["pid"].as_i64().unwrap();
    assert!(breadboard::os::procfs::alive(new_pid as i32));
    assert!(!breadboard::os::procfs::alive(pid as i32));
    assert_eq!(after["supervisor_pid"].as_i64(), Some(sup));
    assert_eq!(after["instance_id"], reg["instance_id"]);
    assert_eq!(after["restarts"], 1);
    let h = health(&url, Some(&token)).unwrap();
    assert_eq!(h["instance_id"], reg["instance_id"]);
    assert_eq!(h["pid"].as_i64(), Some(new_pid));

    // Durability: both sessions are still there; the finished one kept its events.
    let ids = session_ids(&url, &token);
    assert!(
        ids.contains(&done) && ids.contains(&idle),
        "{ids:?} lacks {done} or {idle}"
    );
    assert!(events(&url, &token, &done)
        .iter()
        .any(|ev| ev["type"] == "assistant_message"));
    // The idle session was live when the engine died: the restarted engine marks it interrupted (resumable).
    assert_eq!(session_status(&url, &token, &idle), "interrupted");

    // The crash was recorded as one (signal 9, no stop asked), and status reports the restart.
    let exit: Value = serde_json::from_str(
        &std::fs::read_to_string(e.ctx.home.join("run/last-exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            exit["signal"].as_i64(),
            exit["stop_requested"].as_bool(),
            exit["pid"].as_i64()
        ),
        (Some(9), Some(false), Some(pid)),
        "{exit}"
    );
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (0, Some("running")), "{st}");
    assert_eq!(st["pid"].as_i64(), Some(new_pid));
    assert_eq!(st["supervisor_pid"].as_i64(), Some(sup));
    assert_eq!(st["restarts"], 1, "{st}");
    assert_eq!(st["last_exit"]["signal"], 9, "{st}");
    assert!(
        st["detail"]
            .as_str()
            .unwrap_or("")
            .contains("restarted 1 time"),
        "{st}"
    );
    let log = engine_log(&e);
    assert!(log.contains("restarting the engine in 0.2s"), "{log}");

    // A requested stop is final: exit 0, the supervisor gone, nothing restarted, status stopped.
    e.cmd(&["engine", "stop"]).assert().success();
    assert!(!breadboard::os::procfs::alive(sup as i32));
    assert!(session(sid).is_empty(), "left: {:?}", session(sid));
    let exit: Value = serde_json::from_str(
        &std::fs::read_to_string(e.ctx.home.join("run/last-exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exit["stop_requested"], true, "{exit}");
    assert_eq!(exit["pid"].as_i64(), Some(new_pid), "{exit}");
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")), "{st}");
    let log = engine_log(&e);
    assert!(!log.contains("automatic restart 2"), "{log}");
    assert!(!breadboard::os::procfs::port_listening(port_of(&url)));
}

#[test]
fn crash_loop_ends_in_errored_with_its_report_and_start_begins_afresh() {
    let mut e = Engine::fake("exit_after");
    on_failure(&mut e, 100);
    let t0 = Instant::now();
    let started = e.start();
    let reg = e.registration().unwrap();
    let sup = reg["supervisor_pid"].as_i64().unwrap() as i32;
    let sid = reg["sid"].as_i64().unwrap();
    let id = started["instance_id"].as_str().unwrap().to_owned();

    // Each engine exits 1 a second after it starts: restarted twice, then the third crash within 60 s gives up.
    wait_for("the supervisor to give up", Duration::from_secs(30), || {
        !breadboard::os::procfs::alive(sup)
    });
    eprintln!("start to errored: {:?}", t0.elapsed());
    let log = engine_log(&e);
    // Exponential backoff: 0.1 s, then 0.2 s; never a third restart.
    let first = log.find("restarting the engine in 0.1s").expect(&log);
    let second = log.find("restarting the engine in 0.2s").expect(&log);
    assert!(first < second, "{log}");
    assert!(log.contains("automatic restart 2"), "{log}");
    assert!(!log.contains("automatic restart 3"), "{log}");
    assert!(log.contains("3 crashes within 60 s"), "{log}");

    // No orphans: the session is empty, and every child the engines spawned in sessions of their own is gone.
    assert!(session(sid).is_empty(), "left: {:?}", session(sid));
    assert!(fake_children(&e).is_empty(), "{:?}", fake_children(&e));

    // status: errored (15), the crash-loop detail, and the last crash's report once.
    let out = e.cmd(&["engine", "status", "--json"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(15), "{err}");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["state"], "errored");
    assert_eq!(st["exit_code"], 15);
    assert_eq!(st["instance_id"], id.as_str());
    let detail = st["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 crashes within 60 s")
            && detail.contains("after 2 restarts")
            && detail.contains("exit code 1"),
        "{detail}"
    );
    let cl = &st["last_exit"]["crash_loop"];
    assert_eq!(cl["crashes"], 3, "{st}");
    assert_eq!(cl["history"].as_array().map(Vec::len), Some(3), "{st}");
    assert_eq!(st["last_exit"]["restarts"], 2, "{st}");
    assert_eq!(st["last_exit"]["exit_code"], 1, "{st}");
    assert!(
        err.contains("kept crashing")
            && err.contains("3 crashes within 60 s")
            && err.contains("exit code 1")
            && err.contains("exiting 1 on purpose")
            && err.contains("engine.log"),
        "{err}"
    );
    assert!(!err.contains(e.token().trim()), "token in the report");
    // Once per crash: the second status reports the state, not the report again.
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(15));
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(human.contains("engine: errored"), "{human}");
    assert!(err.contains("3 crashes within 60 s"), "{err}");
    assert!(err.contains("breadboard engine start"), "{err}");
    assert!(!err.contains("kept crashing"), "{err}");

    // start after errored: a fresh instance (this time the engine stays up), restarts counted from 0.
    e.env.push(("FAKE_ENGINE_EXIT_AFTER".into(), "1000".into()));
    let again = e.start();
    assert_eq!(again["action"], "started");
    assert_ne!(again["instance_id"], id.as_str());
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (0, Some("running")), "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    e.cmd(&["engine", "stop"]).assert().success();
    assert!(fake_children(&e).is_empty(), "{:?}", fake_children(&e));
}

#[test]
fn a_stop_while_a_restart_is_pending_is_never_restarted() {
    let mut e = Engine::fake("exit_after");
    // A long backoff: the stop lands while the supervisor waits to restart.
    on_failure(&mut e, 20_000);
    e.start();
    let reg = e.registration().unwrap();
    let sup = reg["supervisor_pid"].as_i64().unwrap() as i32;
    let sid = reg["sid"].as_i64().unwrap();
    wait_for(
        "the crash and a pending restart",
        Duration::from_secs(20),
        || {
            e.registration()
                .is_some_and(|r| !r["restart_pending"].is_null())
        },
    );
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (11, Some("starting")), "{st}");
    assert!(
        st["detail"]
            .as_str()
            .unwrap_or("")
            .contains("the supervisor restarts it in"),
        "{st}"
    );
    let t0 = Instant::now();
    let a = e.cmd(&["engine", "stop"]).assert().success();
    // Well under the 20 s backoff: the stop did not wait for the pending restart.
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(stdout(&a).contains("engine stopped"), "{}", stdout(&a));
    assert!(!breadboard::os::procfs::alive(sup));
    assert!(session(sid).is_empty(), "left: {:?}", session(sid));
    assert!(fake_children(&e).is_empty(), "{:?}", fake_children(&e));
    assert!(e.registration().is_none());
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")), "{st}");
    let log = engine_log(&e);
    assert!(
        log.contains("stop requested while waiting to restart: not restarting"),
        "{log}"
    );
    assert!(!log.contains("automatic restart"), "{log}");
}

// ---------------------------------------------------------------------------------------------------------------
// --ray-address: join an existing Ray cluster, show it in status, leave it running at stop.

/// A Ray head started with the installed engine venv's own `ray` (so the cluster's workers can import
/// `breadboard_engine`), in a session of its own (`setsid`) with a short temp dir (Ray's socket paths are length
/// limited). Drop ends exactly this cluster, even after a failed assertion: every process of its session and any
/// process naming its temp dir. Never `ray stop --force`: it ends every Ray of this user on the machine, including
/// the local Rays of tests running in parallel.
struct RayHead {
    sid: i32,
    address: String,
    ray: std::path::PathBuf,
    home: std::path::PathBuf,
    temp: tempfile::TempDir,
}

impl RayHead {
    fn start(e: &Engine) -> RayHead {
        let ray = e.ctx.home.join("engine/current/bin/ray");
        assert!(ray.is_file(), "{} is missing", ray.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let temp = tempfile::Builder::new()
            .prefix("bbr")
            .tempdir_in("/tmp")
            .unwrap();
        let mut cmd = Command::new("setsid");
        cmd.arg(&ray).args([
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            &format!("--port={port}"),
            "--num-cpus=1",
            "--include-dashboard=false",
            &format!("--temp-dir={}", temp.path().display()),
            "--disable-usage-stats",
        ]);
        for (k, _) in std::env::vars() {
            if k.starts_with("RAY_") {
                cmd.env_remove(k);
            }
        }
        // The engine runs with the same HOME, so it finds the cluster's auth token if Ray writes one.
        cmd.env("HOME", e.ctx.dir.path())
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let head = RayHead {
            sid: child.id() as i32,
            address: format!("127.0.0.1:{port}"),
            ray,
            home: e.ctx.dir.path().to_owned(),
            temp,
        };
        // `ray start` returns once the head's daemons are up.
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ray start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        head
    }

    /// The cluster's GCS server and raylet, with their start times (to tell "still the same process").
    fn daemons(&self) -> Vec<(i32, u64)> {
        let temp = self.temp.path().display().to_string();
        processes_mentioning(&temp)
            .into_iter()
            .filter_map(|p| {
                let cmd = breadboard::os::procfs::cmdline(p as i32)?;
                (cmd.contains("gcs_server") || cmd.contains("raylet/raylet")).then(|| {
                    (
                        p as i32,
                        breadboard::os::procfs::start_ticks(p as i32).unwrap_or(0),
                    )
                })
            })
            .collect()
    }

    /// `ray status --address` answers: the cluster serves.
    fn answers(&self) -> bool {
        let mut cmd = Command::new(&self.ray);
        for (k, _) in std::env::vars() {
            if k.starts_with("RAY_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["status", "--address", &self.address])
            .env("HOME", &self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let temp = self.temp.path().display().to_string();
        let mut victims: Vec<i32> = breadboard::os::procfs::session_members(self.sid, &[]);
        victims.extend(processes_mentioning(&temp).into_iter().map(|p| p as i32));
        for p in &victims {
            let _ = breadboard::os::sys::kill(*p, 9);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && victims.iter().any(|p| breadboard::os::procfs::alive(*p))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn ray_address_joins_an_external_cluster_and_stop_leaves_it_running() {
    // Engine::new runs with BREADBOARD_RAY_START=off: joining a cluster overrides it, with a warning.
    let e = Engine::new();
    let t0 = Instant::now();
    let head = RayHead::start(&e);
    eprintln!("ray head up in {:?}", t0.elapsed());
    let cluster = head.daemons();
    assert!(
        cluster.len() >= 2,
        "no gcs_server/raylet found for {}",
        head.temp.path().display()
    );

    let t1 = Instant::now();
    let a = e
        .cmd(&[
            "engine",
            "start",
            "--port",
            "auto",
            "--ray-address",
            &head.address,
            "--json",
        ])
        .assert();
    let out = a.get_output().clone();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stderr(&a).contains("BREADBOARD_RAY_START=off is ignored"),
        "{}",
        stderr(&a)
    );
    let started: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = started["url"].as_str().unwrap().to_owned();
    let token = e.token();
    let reg = e.registration().unwrap();
    assert_eq!(reg["ray_address"], head.address.as_str());
    let engine_sid = reg["sid"].as_i64().unwrap();
    wait_for(
        "the engine to join the cluster",
        Duration::from_secs(60),
        || {
            let (code, body) = http(&url, "GET", "/ready", Some(&token), None);
            code == 200
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|v| v["ray"]["state"] == "connected")
        },
    );
    eprintln!("engine joined the cluster in {:?}", t1.elapsed());

    // status shows the cluster: mode, address, and the engine's live view of it.
    let (code, st) = e.status();
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["ray"]["mode"], "cluster", "{st}");
    assert_eq!(st["ray"]["address"], head.address.as_str(), "{st}");
    assert_eq!(st["ray"]["state"], "connected", "{st}");
    assert!(st["ray"]["nodes"].as_u64() >= Some(1), "{st}");
    let human = e.cmd(&["engine", "status"]).assert().success();
    let text = format!("{}{}", stdout(&human), stderr(&human));
    assert!(
        text.contains(&format!(
            "ray: cluster {} (connected, 1 node)",
            head.address
        )),
        "{text}"
    );

    // A turn runs on the cluster: a session waiting for input, then input; its events until run_finished.
    let id = create_session(&url, &token, serde_json::json!({"task": ""}));
    let (code, body) = http(
        &url,
        "POST",
        &format!("/v1/sessions/{id}/input"),
        Some(&token),
        Some(r#"{"content": "hello from the cluster"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let evs = sse_until(
        &url,
        &format!("/v1/sessions/{id}/events?replay=true"),
        &token,
        "run_finished",
        Duration::from_secs(60),
    );
    let msg = evs
        .iter()
        .find(|ev| ev["type"] == "assistant_message")
        .unwrap_or_else(|| panic!("no assistant_message in {evs:?}"));
    assert!(
        msg["payload"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("hello from the cluster"),
        "{msg}"
    );
    let finished = evs.iter().find(|ev| ev["type"] == "run_finished").unwrap();
    assert_eq!(finished["payload"]["completed"], true, "{evs:?}");
    let worker = msg["payload"]["worker_pid"].as_i64().unwrap() as i32;
    assert_ne!(i64::from(worker), reg["pid"].as_i64().unwrap());
    // The worker belongs to the external cluster (its session), not to the engine's.
    match breadboard::os::procfs::stat(worker) {
        Some(w) => assert_eq!(w.sid, head.sid, "worker {worker} is not the cluster's"),
        None => eprintln!("worker {worker} already exited; its session is not checked"),
    }
    // And the engine started no Ray of its own.
    let own_ray: Vec<i32> = session(engine_sid)
        .into_iter()
        .filter(|p| {
            breadboard::os::procfs::cmdline(*p)
                .unwrap_or_default()
                .contains("raylet")
        })
        .collect();
    assert!(
        own_ray.is_empty(),
        "the engine started a local Ray: {own_ray:?}"
    );

    // stop ends the engine and leaves the cluster alone.
    e.cmd(&["engine", "stop"]).assert().success();
    assert!(
        session(engine_sid).is_empty(),
        "left: {:?}",
        session(engine_sid)
    );
    let still: Vec<(i32, u64)> = cluster
        .iter()
        .copied()
        .filter(|(p, t)| breadboard::os::procfs::same_process(*p, *t))
        .collect();
    assert_eq!(still, cluster, "stopping the engine stopped the cluster");
    assert!(
        head.answers(),
        "ray status --address {} failed",
        head.address
    );
    eprintln!("ray test wall time {:?}", t0.elapsed());
}

#[test]
fn on_failure_does_not_retry_a_start_that_fails_before_ready() {
    let mut e = Engine::fake("import_error");
    on_failure(&mut e, 100);
    let t0 = Instant::now();
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(1);
    let took = t0.elapsed();
    let err = stderr(&a);
    assert!(
        err.contains("exited unexpectedly") && err.contains("ModuleNotFoundError"),
        "{err}"
    );
    assert!(
        err.contains("the engine exited before it was ready"),
        "{err}"
    );
    // Not retried, and not waited on: the supervisor saw the stop intent during its backoff and exited.
    // Well under the 60 s handshake timeout.
    assert!(took < Duration::from_secs(20), "start took {took:?}");
    let log = engine_log(&e);
    assert!(!log.contains("automatic restart"), "{log}");
    assert!(e.registration().is_none());
    let left = supervisors_of(&e);
    assert!(left.is_empty(), "supervisor left: {left:?}");
    let out = e.cmd(&["engine", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("exited unexpectedly"));
}

// ---------------------------------------------------------------------------------------------------------------
// Hosts, usage errors before side effects, uninstall under a running engine, failed stops, foreground mode.

#[test]
fn localhost_registers_the_bound_address_and_a_running_engine_refuses_uninstall_and_remote_hosts() {
    let e = Engine::new();
    let a = e
        .cmd(&[
            "engine",
            "start",
            "--host",
            "localhost",
            "--port",
            "auto",
            "--json",
        ])
        .assert();
    let out = a.get_output().clone();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = started["url"].as_str().unwrap().to_owned();
    let pid = started["pid"].as_i64().unwrap();
    // Registered (and so reached) by the address the socket is bound to, never by a name that may resolve to ::1.
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let reg = e.registration().unwrap();
    assert_eq!(reg["host"], "127.0.0.1", "{reg}");
    assert_eq!(reg["url"], url.as_str());
    let version = e.cmd(&["--version"]).assert().success();
    assert_eq!(
        format!("breadboard {}", reg["cli_version"].as_str().unwrap()),
        stdout(&version).trim()
    );
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (0, Some("running")), "{st}");

    // A non-loopback --host without --allow-remote is a usage error even while an engine runs (start and restart),
    // and nothing is touched.
    for verb in ["start", "restart"] {
        let a = e
            .cmd(&["engine", verb, "--host", "0.0.0.0", "--port", "auto"])
            .assert()
            .code(2);
        assert!(stderr(&a).contains("--allow-remote"), "{}", stderr(&a));
        assert_eq!(e.registration().unwrap()["pid"].as_i64(), Some(pid));
    }

    // uninstall (with or without --purge --yes) refuses while the engine runs, and removes nothing.
    assert!(e.ctx.home.join("data").is_dir());
    for args in [
        &["engine", "uninstall"][..],
        &["engine", "uninstall", "--purge", "--yes"][..],
    ] {
        let a = e.cmd(args).assert().code(1);
        let err = stderr(&a);
        assert!(
            err.contains("an engine is running") && err.contains("hint: breadboard engine stop"),
            "{err}"
        );
        assert_eq!(e.ctx.version_dirs(), vec![("0.1.1".to_owned(), true)]);
        assert_eq!(e.ctx.link("current").as_deref(), Some("0.1.1"));
        assert!(e.ctx.home.join("data").is_dir());
    }
    let (code, st) = e.status();
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid));

    // Once stopped, it goes through.
    e.cmd(&["engine", "stop"]).assert().success();
    e.cmd(&["engine", "uninstall", "--purge", "--yes"])
        .assert()
        .success();
    assert!(e.ctx.version_dirs().is_empty());
    assert!(!e.ctx.home.join("data").exists());
}

#[test]
fn bracketed_ipv6_loopback_is_accepted_and_bind_errors_say_what_to_do() {
    let e = Engine::fake("ok");
    let started = {
        let a = e
            .cmd(&[
                "engine", "start", "--host", "[::1]", "--port", "auto", "--json",
            ])
            .assert();
        let out = a.get_output().clone();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let url = started["url"].as_str().unwrap();
    assert!(url.starts_with("http://[::1]:"), "{url}");
    assert_eq!(e.registration().unwrap()["host"], "::1");
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (0, Some("running")), "{st}");
    e.cmd(&["engine", "stop"]).assert().success();

    // An address that is not this machine's: exit 1 with the question to ask, before anything is spawned.
    let a = e
        .cmd(&[
            "engine",
            "start",
            "--host",
            "192.0.2.1",
            "--allow-remote",
            "--port",
            "auto",
        ])
        .assert()
        .code(1);
    let err = stderr(&a);
    assert!(
        err.contains("could not bind 192.0.2.1")
            && err.contains("hint: is 192.0.2.1 an address of this machine?"),
        "{err}"
    );
    assert!(e.registration().is_none());
}

#[test]
fn a_lost_token_file_is_named_by_status_and_restart_recovers() {
    let e = Engine::new();
    e.start();
    std::fs::remove_file(e.ctx.home.join("run/engine.token")).unwrap();
    let (code, st) = e.status();
    let detail = st["detail"].as_str().unwrap_or_default();
    assert_eq!(code, 12, "{st}");
    assert!(
        detail.contains("run/engine.token is missing or empty")
            && detail.contains("breadboard engine restart"),
        "{st}"
    );
    e.cmd(&["engine", "restart"]).assert().success();
    assert_eq!(e.status().0, 0);
    e.cmd(&["engine", "stop"]).assert().success();
}

#[test]
fn a_registration_corrupted_under_a_running_engine_still_lets_stop_end_it() {
    let e = Engine::fake("ok");
    e.start();
    let reg = e.registration().unwrap();
    let (pid, sid) = (
        reg["pid"].as_i64().unwrap() as i32,
        reg["sid"].as_i64().unwrap(),
    );
    let sup = reg["supervisor_pid"].as_i64().unwrap();
    std::fs::write(e.ctx.home.join("run/engine.json"), "{not json").unwrap();
    let (code, st) = e.status();
    let detail = st["detail"].as_str().unwrap_or_default();
    assert_eq!(code, 11, "{st}");
    assert!(
        detail.contains(&format!("supervisor pid {sup}"))
            && detail.contains("breadboard engine stop"),
        "{st}"
    );
    let a = e.cmd(&["engine", "stop"]).assert().success();
    assert!(
        stderr(&a).contains("missing or unreadable"),
        "{}",
        stderr(&a)
    );
    wait_for(
        "the engine's session to end",
        Duration::from_secs(20),
        || session(sid).is_empty(),
    );
    assert!(!breadboard::os::procfs::alive(pid));
    assert!(supervisors_of(&e).is_empty());
    let (code, _) = e.status();
    assert_eq!(code, 10);

    assert!(
        !e.ctx.home.join("run/engine.token").exists(),
        "the dead instance's token was left"
    );

    // restart keeps the port, recovered from the supervisor's own spec.
    let port = e.start()["url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(e.ctx.home.join("run/engine.json"), "{not json").unwrap();
    let a = e.cmd(&["engine", "restart", "--json"]).assert().success();
    let restarted: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert!(
        restarted["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}")),
        "{restarted}"
    );

    // --force: the whole session at once, supervisor first (no stop intent can be recorded without a registration).
    let sid = e.registration().unwrap()["sid"].as_i64().unwrap();
    std::fs::remove_file(e.ctx.home.join("run/engine.json")).unwrap();
    let a = e.cmd(&["engine", "stop", "--force"]).assert().success();
    assert!(stdout(&a).contains("killed"), "{}", stdout(&a));
    wait_for("the session to end", Duration::from_secs(10), || {
        session(sid).is_empty()
    });
    assert_eq!(e.status().0, 10);
}

#[test]
fn a_lost_registration_of_an_engine_that_ignores_sigterm_ends_in_a_session_kill() {
    let e = Engine::fake("stubborn");
    e.start();
    let sid = e.registration().unwrap()["sid"].as_i64().unwrap();
    std::fs::write(e.ctx.home.join("run/engine.json"), "").unwrap();
    let t0 = Instant::now();
    let a = e
        .cmd(&["engine", "stop", "--timeout", "3"])
        .assert()
        .success();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(stdout(&a).contains("killed"), "{}", stdout(&a));
    assert!(stderr(&a).contains("killing its session"), "{}", stderr(&a));
    wait_for("the session to end", Duration::from_secs(10), || {
        session(sid).is_empty()
    });
    assert!(supervisors_of(&e).is_empty());
}

#[test]
fn install_rollback_and_start_under_a_running_engine_say_what_they_did_not_change() {
    let e = Engine::new();
    e.start();
    let pid = e.registration().unwrap()["pid"].as_i64().unwrap();
    let a = e.ctx.install(&["--version", "0.1.0"]).success();
    let err = stderr(&a);
    assert!(
        err.contains(&format!("the running engine (pid {pid}) is still 0.1.1; to use 0.1.0, run `breadboard engine restart`")),
        "{err}"
    );
    // Back to the version it runs: nothing to say.
    let a = e.cmd(&["engine", "rollback"]).assert().success();
    assert!(!stderr(&a).contains("still"), "{}", stderr(&a));
    // A start that finds it running does not apply a different port, and says so.
    let port = e.registration().unwrap()["port"].as_u64().unwrap();
    let other = (port + 1).to_string();
    let a = e
        .cmd(&["engine", "start", "--port", &other])
        .assert()
        .success();
    assert!(
        stdout(&a).contains("engine already running"),
        "{}",
        stdout(&a)
    );
    assert!(
        stderr(&a).contains(&format!("--port {other} (it uses {port}) was not applied")),
        "{}",
        stderr(&a)
    );
    let a = e.cmd(&["engine", "rollback"]).assert().success();
    assert!(
        stderr(&a).contains("is still 0.1.1; to use 0.1.0"),
        "{}",
        stderr(&a)
    );
    e.cmd(&["engine", "stop"]).assert().success();
}

#[test]
fn a_read_only_home_still_sees_its_engine_and_says_what_it_cannot_do() {
    let e = Engine::fake("ok");
    e.start();
    // A read-only bind mount of the home in a private mount namespace (CI runs as root); the touch proves it is
    // read-only before the command runs.
    let on_read_only_home = |args: &[&str]| {
        let template = e.command();
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind -o ro "$BREADBOARD_HOME" "$BREADBOARD_HOME" || exit 98
               touch "$BREADBOARD_HOME/probe" 2>/dev/null && exit 99
               exec "$0" "$@""#,
        ])
        .arg(template.get_program())
        .args(args);
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().unwrap()
    };
    let out = on_read_only_home(&["engine", "status", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        (out.status.code(), doc["state"].as_str()),
        (Some(0), Some("running")),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // What cannot work there says why and what to do, and doctor's fix is not a chown.
    let out = on_read_only_home(&["engine", "restart"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hint: that file system is mounted read-only"),
        "{err}"
    );
    let out = on_read_only_home(&["engine", "doctor", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let dirs = doc["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|f| f["id"] == "home.dirs"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        dirs["fix"].as_str().unwrap_or("").contains("read-only"),
        "{dirs}"
    );
    e.cmd(&["engine", "stop"]).assert().success();
}

#[test]
fn a_supervisor_that_cannot_take_the_instance_lock_is_reported_as_such() {
    let e = Engine::fake("ok");
    // An instance lock that cannot be opened: the supervisor exits 3 without starting an engine.
    std::fs::create_dir_all(e.ctx.home.join("run/engine.lock")).unwrap();
    let a = e
        .cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .code(1);
    let err = stderr(&a);
    assert!(
        err.contains("the supervisor could not take the instance lock")
            && err.contains("run/engine.lock")
            && err.contains("could not open the instance lock"),
        "{err}"
    );
    assert!(!err.contains("supervisor was killed"), "{err}");
    assert!(!err.contains("exited unexpectedly"), "{err}");
    assert!(e.registration().is_none());
    let left = supervisors_of(&e);
    assert!(left.is_empty(), "supervisor left: {left:?}");
}

#[test]
fn a_stop_that_leaves_the_port_listening_fails_naming_the_holder() {
    let e = Engine::fake("ok");
    let started = e.start();
    let port = port_of(started["url"].as_str().unwrap());
    // Someone else listens on the engine's port (on ::1; the engine is on 127.0.0.1), and outlives the stop.
    let holder = std::net::TcpListener::bind(("::1", port)).unwrap();
    let me = std::process::id();
    let a = e.cmd(&["engine", "stop"]).assert().code(1);
    let err = stderr(&a);
    if LINUX_EXTRAS {
        assert!(
            err.contains(&format!("port {port} is still listening, held by pid {me}"))
                && err.contains("every process of the engine ended")
                && err.contains(&format!("hint: end it (kill {me}; kill -9 {me}")),
            "{err}"
        );
    } else {
        assert!(
            err.contains(&format!(
                "port {port} is still listening (by a process: {})",
                breadboard::os::procfs::UNNAMED_HOLDER
            )) && err.contains("every process of the engine ended"),
            "{err}"
        );
    }
    // The engine itself is gone, and that was a requested stop, not a crash.
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")), "{st}");
    assert!(e.registration().is_none());
    drop(holder);
    let a = e.cmd(&["engine", "stop"]).assert().success();
    assert!(stdout(&a).contains("not running"), "{}", stdout(&a));
    assert!(
        !stderr(&a).contains("exited unexpectedly"),
        "{}",
        stderr(&a)
    );
}

/// Runs `engine start --foreground` (plus `extra`) to its end; (exit code, stderr).
fn foreground_until_exit(e: &Engine, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["engine", "start", "--foreground", "--port", "auto"];
    args.extend_from_slice(extra);
    let out = e
        .cmd(&args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn foreground_handshake_failures_stop_the_engine_as_a_requested_stop() {
    // restart = "on-failure": a stop the CLI decided on must not be restarted (or end in a crash loop).
    let mut e = Engine::fake("protocol9");
    on_failure(&mut e, 100);
    let (code, err) = foreground_until_exit(&e, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("error: handshake failed")
            && err.contains("9.9")
            && err.contains("--protocol soft"),
        "{err}"
    );
    assert!(!err.contains("automatic restart"), "{err}");
    assert!(!err.contains("the engine exited"), "{err}");
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")), "{st}");
    let exit: Value = serde_json::from_str(
        &std::fs::read_to_string(e.ctx.home.join("run/last-exit.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exit["stop_requested"], true, "{exit}");
    assert!(e.registration().is_none());
    assert!(!e.ctx.home.join("run/stop-requested").exists());

    // The same for an engine that never answers within --timeout.
    e.env.push(("FAKE_ENGINE_MODE".into(), "no_health".into()));
    let (code, err) = foreground_until_exit(&e, &["--timeout", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("error: the engine did not answer its handshake within 1s"),
        "{err}"
    );
    assert!(!err.contains("automatic restart"), "{err}");
    let (code, st) = e.status();
    assert_eq!((code, st["state"].as_str()), (10, Some("stopped")), "{st}");
}

#[test]
fn foreground_json_prints_one_start_document_once_ready() {
    use std::io::BufRead;
    let e = Engine::fake("ok");
    let mut child = e
        .command()
        .args([
            "engine",
            "start",
            "--foreground",
            "--port",
            "auto",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The document arrives while the engine runs (from the ready hook), not at exit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let doc: Value = loop {
        assert!(
            Instant::now() < deadline,
            "no JSON document on stdout; got {text:?}"
        );
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    break v;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("stdout closed before a JSON document: {e}; got {text:?}"),
        }
    };
    let reg = e.registration().unwrap();
    assert!(!reg["ready_at"].is_null(), "{reg}");
    assert_eq!(doc["action"], "started", "{doc}");
    assert_eq!(doc["url"], reg["url"], "{doc}");
    assert_eq!(doc["pid"], reg["pid"], "{doc}");
    assert_eq!(doc["supervisor_pid"].as_i64(), Some(i64::from(child.id())));
    assert_eq!(doc["instance_id"], reg["instance_id"], "{doc}");
    breadboard::os::sys::kill(child.id() as i32, 2).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(0));
    assert!(
        rest.is_empty(),
        "more than one document on stdout: {rest:?}"
    );
    let (code, st) = e.status();
    assert_eq!(code, 10, "{st}");
}

#[test]
fn upgrade_uses_the_configured_protocol_mode_and_leaves_a_foreground_engine_running() {
    let e = Engine {
        ctx: TestContext::new(),
        env: vec![("BREADBOARD_RAY_START".into(), "off".into())],
        umask: None,
    };
    e.ctx.install(&["--version", "0.1.0"]).success();

    // The restart of a running engine takes the protocol mode from the configuration, like `engine start`: an
    // invalid one fails (exit 3) before anything is installed or stopped.
    let started = e.start();
    std::fs::write(
        e.ctx.home.join("config.toml"),
        "[protocol]\nmode = \"sloppy\"\n",
    )
    .unwrap();
    let a = e.cmd(&["engine", "upgrade"]).assert().code(3);
    assert!(stderr(&a).contains("protocol.mode"), "{}", stderr(&a));
    assert_eq!(e.ctx.link("current").as_deref(), Some("0.1.0"));
    assert_eq!(e.registration().unwrap()["pid"], started["pid"]);
    std::fs::remove_file(e.ctx.home.join("config.toml")).unwrap();
    // With a valid mode it restarts the running engine onto the new version; stdout has the one result line (the
    // install), the restart is progress on stderr.
    let a = e.cmd(&["engine", "upgrade"]).assert().success();
    let out = stdout(&a);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("0.1.1"), "{out}");
    assert!(stderr(&a).contains("engine restarted at"), "{}", stderr(&a));
    let (_, st) = e.status();
    assert_eq!(st["engine_version"], "0.1.1", "{st}");
    assert_ne!(st["pid"], started["pid"], "{st}");
    e.cmd(&["engine", "stop"]).assert().success();
    e.cmd(&["engine", "rollback"]).assert().success();
    assert_eq!(e.ctx.link("current").as_deref(), Some("0.1.0"));

    // A foreground engine is not replaced by a detached one: the upgrade installs and says to restart it.
    let mut child = e
        .command()
        .args(["engine", "start", "--foreground", "--port", "auto"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the foreground engine", Duration::from_secs(60), || {
        e.registration().is_some_and(|r| !r["ready_at"].is_null())
    });
    let before = e.registration().unwrap();
    let a = e.cmd(&["engine", "upgrade"]).assert().success();
    let err = stderr(&a);
    assert!(
        err.contains("runs in the foreground, so it was not restarted")
            && err.contains("breadboard engine start --foreground"),
        "{err}"
    );
    e.ctx.assert_current_complete("0.1.1");
    let after = e.registration().unwrap();
    assert_eq!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(
        after["supervisor_pid"].as_i64(),
        Some(i64::from(child.id()))
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the foreground engine exited"
    );
    // Still the old version, now not the pinned one.
    let (code, st) = e.status();
    assert_eq!(
        (code, st["state"].as_str()),
        (13, Some("incompatible")),
        "{st}"
    );
    breadboard::os::sys::kill(child.id() as i32, 2).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn every_unreadable_registration_under_a_running_engine_is_set_aside_and_stop_ends_it() {
    let e = Engine::fake("ok");
    let reg_path = e.ctx.home.join("run/engine.json");
    let random: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "bytes that are not UTF-8",
            Box::new(move |p| std::fs::write(p, &random).unwrap()),
        ),
        (
            "a directory",
            Box::new(|p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            }),
        ),
        (
            "a symlink to itself (unopenable, as permission denied is for a non-root user)",
            Box::new(|p| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("engine.json", p).unwrap();
            }),
        ),
        (
            "JSON of another shape",
            Box::new(|p| std::fs::write(p, r#"["schema", 1]"#).unwrap()),
        ),
        (
            "a huge file",
            Box::new(|p| {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(64 * 1024 * 1024).unwrap();
            }),
        ),
    ];
    for (what, damage) in &cases {
        e.start();
        let sid = e.registration().unwrap()["sid"].as_i64().unwrap();
        damage(&reg_path);
        let a = e.cmd(&["engine", "stop"]).assert();
        let err = stderr(&a);
        assert!(
            a.get_output().status.success(),
            "{what}: stop failed: {err}"
        );
        assert!(err.contains("unreadable"), "{what}: {err}");
        wait_for(
            &format!("{what}: the engine's session to end"),
            Duration::from_secs(20),
            || session(sid).is_empty(),
        );
        assert_eq!(e.status().0, 10, "{what}");
    }
    // The fix doctor suggests, `engine restart`, works on such a registration too, and `start` says what it found.
    e.start();
    std::fs::write(&reg_path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let a = e.cmd(&["engine", "start"]).assert().code(1);
    assert!(
        !stderr(&a).contains("stream did not contain") && stderr(&a).contains("no registration"),
        "{}",
        stderr(&a)
    );
    std::fs::write(&reg_path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    e.cmd(&["engine", "restart"]).assert().success();
    assert_eq!(e.status().0, 0);
}

#[test]
fn a_busy_engine_is_reported_busy_and_an_idempotent_start_waits_for_it() {
    let mut e = Engine::fake("ok");
    let stall = e.ctx.dir.path().join("stall");
    e.env.push((
        "FAKE_ENGINE_HEALTH_STALL".into(),
        stall.display().to_string(),
    ));
    let started = e.start();
    // Slower than one probe (500 ms), well within what status and start now wait for.
    std::fs::write(&stall, "1.2").unwrap();
    let (code, st) = e.status();
    assert_eq!(
        code, 0,
        "a busy engine that answers in 1.2 s is running: {st}"
    );
    let a = e.cmd(&["engine", "start", "--json"]).assert().success();
    let again: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(again["pid"], started["pid"], "{again}");
    assert!(stderr(&a).contains("busy"), "{}", stderr(&a));
    assert_eq!(doctor_health(&e)["status"], "ok");
    // Busy beyond every budget: said as busy, never as unreachable; start gives up after its --timeout.
    std::fs::write(&stall, "30").unwrap();
    let (code, st) = e.status();
    let detail = st["detail"].as_str().unwrap_or_default();
    assert_eq!(code, 12, "{st}");
    assert!(
        detail.contains("answered nothing within") && !detail.contains("not reachable"),
        "{st}"
    );
    let t0 = Instant::now();
    let a = e
        .cmd(&["engine", "start", "--timeout", "2"])
        .assert()
        .code(1);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let err = stderr(&a);
    assert!(
        err.contains("busy") && !err.contains("not reachable"),
        "{err}"
    );
    // Doctor says busy (a warning), never "does not answer" with a restart as the fix.
    let health = doctor_health(&e);
    assert_eq!(health["status"], "warn", "{health}");
    assert!(
        health["title"].as_str().unwrap().contains("busy"),
        "{health}"
    );
    std::fs::remove_file(&stall).unwrap();
    e.cmd(&["engine", "stop"]).assert().success();
}

fn doctor_health(e: &Engine) -> Value {
    let out = e.cmd(&["engine", "doctor", "--json"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "engine.health")
        .unwrap_or_else(|| panic!("no engine.health in {doc}"))
        .clone()
}

#[test]
fn engine_command_as_an_argv_list_and_as_a_shell_snippet_both_run_the_real_engine() {
    let e = Engine::new();
    let python = e.ctx.engine_dir().join("current/bin/python");
    let workdir = e.ctx.dir.path().join("work dir");
    std::fs::create_dir(&workdir).unwrap();
    let forms = [
        format!(
            "[engine]\ncommand = [{:?}, \"-m\", \"breadboard_engine\", \"serve\"]\n",
            python.display().to_string()
        ),
        // Shell syntax, as written: a `cd` first, then the engine.
        format!(
            "[engine]\ncommand = {:?}\n",
            format!(
                "cd '{}' && {} -m breadboard_engine serve",
                workdir.display(),
                python.display()
            )
        ),
    ];
    for (i, config) in forms.iter().enumerate() {
        std::fs::write(e.ctx.home.join("config.toml"), config).unwrap();
        let started = e.start();
        let url = started["url"].as_str().unwrap().to_owned();
        let (code, st) = e.status();
        assert_eq!(code, 0, "form {i}: {st}");
        let h = health(&url, Some(&e.token())).unwrap();
        let engine_pid = h["pid"].as_i64().unwrap() as i32;
        let cmdline = breadboard::os::procfs::cmdline(engine_pid).unwrap();
        assert!(
            cmdline.contains("breadboard_engine serve"),
            "form {i}: {cmdline}"
        );
        if i == 1 {
            assert_eq!(
                std::fs::read_link(format!("/proc/{engine_pid}/cwd")).unwrap(),
                workdir,
                "the snippet's cd took effect"
            );
        }
        let sid = e.registration().unwrap()["sid"].as_i64().unwrap();
        e.cmd(&["engine", "stop"]).assert().success();
        wait_for(
            &format!("form {i}: the engine's session to end"),
            Duration::from_secs(20),
            || session(sid).is_empty(),
        );
        assert!(!breadboard::os::procfs::alive(engine_pid), "form {i}");
    }
}

#[test]
fn an_engine_command_override_runs_under_the_users_umask() {
    // Files another engine (or an agent it runs) writes into the user's project are the user's usual mode: the CLI
    // does not impose the engine's private umask on an override (the engine's own `serve` sets that itself).
    let mut e = Engine::fake("ok");
    let seen = e.ctx.dir.path().join("umask.txt");
    let script = repo_root().join("tests/fixtures/fake_engine.py");
    e.env[0].1 = format!(
        "umask > {} && exec python3 {}",
        seen.display(),
        script.display()
    );
    e.umask = Some(0o022);
    e.start();
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "0022");
    e.cmd(&["engine", "stop"]).assert().success();
}
