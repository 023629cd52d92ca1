//! The client commands (`ask`, `sessions ...`): the real binary against the real engine over HTTP on 127.0.0.1.
//! One engine per test, reused across its assertions (echo and replay providers, Ray off).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::supervisor::Engine;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(e: &Engine, args: &[&str]) -> Out {
    let out = e.cmd(args).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A replay fixture in the engine's replay directory (the only one it reads them from): `lines` are JSONL records.
pub fn fixture(e: &Engine, name: &str, lines: &[Value]) -> String {
    let dir = e.ctx.home.join("data/replays");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join(name), text).unwrap();
    format!("replay:{name}")
}

/// A replay turn that streams `n` words, one every `delay_ms`.
pub fn slow_fixture(e: &Engine, n: usize, delay_ms: u64) -> String {
    let lines: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({"type": "assistant_delta", "payload": {"text": format!("w{i} ")}, "delay_ms": delay_ms})
        })
        .collect();
    fixture(e, "slow.jsonl", &lines)
}

pub fn url_of(e: &Engine) -> String {
    e.registration().unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The engine's stored events of a session (`data:` lines of a replay), as sent.
fn raw_events(e: &Engine, id: &str, upto: u64) -> Vec<String> {
    let url = url_of(e);
    let events = sse_until(
        &url,
        &format!("/v1/sessions/{id}/events?replay=true"),
        &e.token(),
        &format!("\"seq\":{upto},"),
        Duration::from_secs(30),
    );
    events.iter().map(|v| v.to_string()).collect()
}

fn summary(e: &Engine, id: &str) -> Value {
    let (code, body) = http(
        &url_of(e),
        "GET",
        &format!("/v1/sessions/{id}"),
        Some(&e.token()),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn lines_json(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}")))
        .collect()
}

#[test]
fn ask_and_sessions_against_the_real_engine() {
    let e = Engine::new();
    e.start();

    // ask: the answer on stdout, nothing else; a one-shot session that ended with its turn.
    let o = run(&e, &["ask", "hello there world"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "hello there world\n"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains('\x1b') && !o.stdout.contains('\x1b'));
    let list = run(&e, &["sessions", "list", "--json"]);
    let all: Value = serde_json::from_str(&list.stdout).unwrap();
    let oneshot = all[0].clone();
    assert_eq!(oneshot["metadata"]["cli_session_kind"], "oneshot", "{all}");
    assert_eq!(oneshot["status"], "completed");
    let oneshot_id = oneshot["session_id"].as_str().unwrap().to_owned();

    // --json: the engine's envelopes exactly as stored, one per line, ending with run_finished.
    let o = run(&e, &["ask", "--json", "two words"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let events = lines_json(&o.stdout);
    let seqs: Vec<u64> = events.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["type"], "run_finished");
    let id = events[0]["session_id"].as_str().unwrap();
    let stored = raw_events(&e, id, seqs.len() as u64);
    let printed: Vec<String> = events.iter().map(Value::to_string).collect();
    assert_eq!(printed, stored);
    let last_line = o.stdout.lines().last().unwrap();
    let (_, body) = http(
        &url_of(&e),
        "GET",
        &format!("/v1/sessions/{id}/events?replay=true"),
        Some(&e.token()),
        None,
    );
    assert!(
        body.contains(&format!("data: {last_line}\n")),
        "not byte-exact: {last_line}"
    );

    // stdin: `-` reads it; with a prompt argument an open stdin is never read (no hang).
    let mut child = e
        .command()
        .args(["ask", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from stdin\n");
    let mut child = e
        .command()
        .args(["ask", "argument wins"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _open_stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ask hung on an open stdin");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "argument wins\n");
    // No prompt at all (stdin at EOF): usage.
    let o = run(&e, &["ask"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("prompt"), "{}", o.stderr);

    // An interactive session: new, ask --continue, send --wait, show, follow.
    let o = run(&e, &["sessions", "new"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let sid = o.stdout.trim().to_owned();
    let o = run(&e, &["ask", "--continue", "first input"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "first input\n"),
        "{}",
        o.stderr
    );
    let o = run(&e, &["sessions", "send", &sid, "second input", "--wait"]);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "second input\n"),
        "{}",
        o.stderr
    );
    let o = run(&e, &["sessions", "show", &sid, "--json"]);
    let shown: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(shown["session"]["status"], "running");
    // Read from the engine's state route: one answer with the conversation, current to the session's last seq.
    assert_eq!(
        shown["state"]["last_seq"], shown["session"]["last_seq"],
        "{shown}"
    );
    assert_eq!(shown["state"]["turns"], 2, "{shown}");
    assert!(shown["state"]["turn_in_progress"].is_null(), "{shown}");
    let texts: Vec<(&str, &str)> = shown["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "first input"),
            ("assistant", "first input"),
            ("user", "second input"),
            ("assistant", "second input")
        ]
    );
    let last_seq = shown["session"]["last_seq"].as_u64().unwrap();
    let o = run(&e, &["sessions", "follow", &sid, "--json", "--until-idle"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let seqs: Vec<u64> = lines_json(&o.stdout)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>());
    let o = run(
        &e,
        &[
            "sessions",
            "follow",
            &sid,
            "--tail",
            "2",
            "--json",
            "--until-idle",
        ],
    );
    let seqs: Vec<u64> = lines_json(&o.stdout)
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [last_seq - 1, last_seq]);
    // --tail 0: none of the past (it printed everything before).
    let o = run(
        &e,
        &[
            "sessions",
            "follow",
            &sid,
            "--tail",
            "0",
            "--json",
            "--until-idle",
        ],
    );
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    let o = run(&e, &["sessions", "follow", &sid, "--until-idle"]);
    assert_eq!(
        o.stdout,
        "> first input\nfirst input\n> second input\nsecond input\n"
    );
    let o = run(&e, &["sessions", "list", "--status", "running"]);
    assert!(
        o.stdout.contains(&sid) && !o.stdout.contains(&oneshot_id),
        "{}",
        o.stdout
    );

    // A turn that fails (an error event): exit 20 with the engine's message.
    let boom = fixture(
        &e,
        "boom.jsonl",
        &[serde_json::json!({"type": "error", "payload": {"message": "boom from the fixture"}})],
    );
    let o = run(&e, &["ask", &boom]);
    assert_eq!(o.code, 20, "{}", o.stderr);
    assert!(o.stderr.contains("boom from the fixture"), "{}", o.stderr);

    // A one-shot session is not continued; a resume point the engine does not have is a 409.
    let o = run(&e, &["ask", "--session", &oneshot_id, "more"]);
    assert_eq!(o.code, 25, "{}", o.stderr);
    assert!(
        o.stderr.contains("one-shot") && o.stderr.contains("breadboard sessions new"),
        "{}",
        o.stderr
    );
    // A resume point past the session's end is a usage error naming the end, with or without --until-idle (the
    // latter used to exit 0 having printed nothing).
    for extra in [None, Some("--until-idle")] {
        let mut args = vec!["sessions", "follow", sid.as_str(), "--from-seq", "99999"];
        args.extend(extra);
        let o = run(&e, &args);
        assert_eq!((o.code, o.stdout.as_str()), (2, ""), "{}", o.stderr);
        assert!(
            o.stderr.contains(&format!(
                "--from-seq 99999 is past the end of session {sid}: its last seq is"
            )),
            "{}",
            o.stderr
        );
    }

    // --timeout stops the turn (exit 124); stop with no turn running says so.
    let slow = slow_fixture(&e, 100, 100);
    let o = run(&e, &["ask", "--timeout", "1", &slow]);
    assert_eq!(o.code, 124, "{}", o.stderr);
    assert!(o.stdout.starts_with("w0 "), "{}", o.stdout);
    assert!(o.stderr.contains("--timeout"), "{}", o.stderr);
    let o = run(&e, &["sessions", "stop", &sid]);
    // What happened is a status line on stderr; stdout carries results only.
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    assert_eq!(
        o.stderr.trim(),
        format!("no turn was in progress in session {sid}")
    );

    // rm: refused without a terminal and without --yes (nothing deleted), then deleted; then not found (22).
    let o = run(&e, &["sessions", "rm", &sid]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--yes"), "{}", o.stderr);
    assert_eq!(summary(&e, &sid)["status"], "running");
    let o = run(&e, &["sessions", "rm", &sid, "--yes"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("deleted session {sid}")),
        "{}",
        o.stderr
    );
    for args in [
        vec!["sessions", "show", &sid],
        vec!["sessions", "send", &sid, "x"],
        vec!["ask", "--continue", "x"],
    ] {
        let o = run(&e, &args);
        assert_eq!(o.code, 22, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("breadboard sessions list"),
            "{}",
            o.stderr
        );
    }
    std::fs::remove_file(e.ctx.home.join("state/last-session.json")).unwrap();
    let o = run(&e, &["ask", "--continue", "x"]);
    assert_eq!(o.code, 22, "{}", o.stderr);
    assert!(o.stderr.contains("breadboard sessions new"), "{}", o.stderr);

    // stop --close: the session ends for good (status stopped) and keeps its history; input is refused (25).
    let closing = run(&e, &["sessions", "new"]).stdout.trim().to_owned();
    let o = run(
        &e,
        &["sessions", "send", &closing, "before the close", "--wait"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(&e, &["sessions", "stop", &closing, "--close"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, ""), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("closed session {closing}: it keeps its history")),
        "{}",
        o.stderr
    );
    assert_eq!(summary(&e, &closing)["status"], "stopped");
    let o = run(&e, &["sessions", "send", &closing, "after"]);
    assert_eq!(o.code, 25, "{}", o.stderr);
    let o = run(&e, &["sessions", "show", &closing]);
    assert!(o.stdout.contains("before the close"), "{}", o.stdout);
    let o = run(&e, &["sessions", "stop", &closing, "--close"]);
    assert!(o.stderr.contains("was closed already"), "{}", o.stderr);

    // A token the engine refuses: exit 23 naming the file, never the token.
    let token_file = e.ctx.home.join("run/engine.token");
    let good = e.token();
    std::fs::write(&token_file, "not-the-token").unwrap();
    let o = run(&e, &["sessions", "list"]);
    std::fs::write(&token_file, &good).unwrap();
    assert_eq!(o.code, 23, "{}", o.stderr);
    assert!(
        o.stderr.contains(&token_file.display().to_string()) && !o.stderr.contains("not-the-token"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("breadboard engine restart"),
        "{}",
        o.stderr
    );

    // Remote: --url with the token from a file, from the environment, or none.
    let url = url_of(&e);
    let tf = e.ctx.dir.path().join("remote.token");
    std::fs::write(&tf, &good).unwrap();
    let o = run(
        &e,
        &[
            "ask",
            "--url",
            &url,
            "--token-file",
            tf.to_str().unwrap(),
            "over the url",
        ],
    );
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "over the url\n"),
        "{}",
        o.stderr
    );
    let mut c = e.cmd(&["sessions", "list", "--url", &url]);
    let out = c
        .env("BREADBOARD_API_TOKEN", "wrong-secret-value")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert!(
        err.contains("BREADBOARD_API_TOKEN") && !err.contains("wrong-secret-value"),
        "{err}"
    );
    let mut c = e.cmd(&["sessions", "list"]);
    let out = c.env("BREADBOARD_URL", &url).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    let o = run(
        &e,
        &[
            "sessions",
            "list",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
    );
    assert_eq!(o.code, 21, "{}", o.stderr);
    assert!(o.stderr.contains("could not reach"), "{}", o.stderr);

    // `[client] url` in config.toml points every command at that engine (here: one that is not there).
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let config = e.ctx.home.join("config.toml");
    let kept = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(&config, format!("{kept}\n[client]\nurl = \"{nowhere}\"\n")).unwrap();
    let o = run(&e, &["sessions", "list"]);
    assert_eq!(o.code, 21, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("could not reach the engine at {nowhere}")),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("unknown key"), "{}", o.stderr);
    // A [client] url that is not one is the config's fault (exit 3), named as the file's setting.
    std::fs::write(
        &config,
        format!("{kept}\n[client]\nurl = \"127.0.0.1:8\"\n"),
    )
    .unwrap();
    let o = run(&e, &["sessions", "list"]);
    std::fs::write(&config, kept).unwrap();
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("[client] url in config.toml is \"127.0.0.1:8\""),
        "{}",
        o.stderr
    );

    // Stopped engine: read-only commands and --no-start fail fast naming `engine start`; ask starts it.
    e.cmd(&["engine", "stop"]).assert().success();
    for args in [
        vec!["sessions", "list"],
        vec!["sessions", "show", &oneshot_id],
        vec!["sessions", "follow", &oneshot_id],
        vec!["ask", "--no-start", "hi"],
    ] {
        let o = run(&e, &args);
        assert_eq!(o.code, 21, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("breadboard engine start"),
            "{args:?}: {}",
            o.stderr
        );
    }
    let port = free_port().to_string();
    let mut c = e.cmd(&["ask", "started for me"]);
    let out = c.env("BREADBOARD_CLI_PORT", &port).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started for me\n");
    assert!(
        err.contains("starting it") && err.contains("engine.log"),
        "{err}"
    );
    assert!(
        !err.contains("Uvicorn"),
        "engine output belongs in its log: {err}"
    );
    assert!(url_of(&e).ends_with(&port));

    // The engine dies under a follower without a terminal and is not restarted: the crash report once, then exit
    // 21 after --timeout, naming where to resume.
    let live = run(&e, &["sessions", "new"]).stdout.trim().to_owned();
    assert_eq!(
        run(&e, &["sessions", "send", &live, "before", "--wait"]).code,
        0
    );
    // `engine restart` while a follower is frozen: it wakes up to a new instance with a new token on the same port,
    // takes them from the registration and resumes (it used to end with 'token refused').
    let (mut waking, waking_out, waking_err) = spawn_collected(
        &e,
        &["sessions", "follow", &live, "--json", "--timeout", "60"],
    );
    let finished = |c: &Collector| {
        c.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("run_finished"))
            .count()
    };
    wait_for("the follower's replay", Duration::from_secs(30), || {
        finished(&waking_out) >= 1
    });
    let pid = waking.id() as i32;
    breadboard::os::sys::kill(pid, libc::SIGSTOP).unwrap();
    let old_token = e.token();
    e.cmd(&["engine", "restart"]).assert().success();
    assert_ne!(
        e.token(),
        old_token,
        "a restart gives the engine a new token"
    );
    breadboard::os::sys::kill(pid, libc::SIGCONT).unwrap();
    assert_eq!(
        run(
            &e,
            &["sessions", "send", &live, "after the restart", "--wait"]
        )
        .code,
        0
    );
    wait_for(
        "the woken follower to print the next turn",
        Duration::from_secs(60),
        || finished(&waking_out) >= 2 || waking.try_wait().unwrap().is_some(),
    );
    assert!(
        waking.try_wait().unwrap().is_none(),
        "the follower ended: {}",
        waking_err.lines.lock().unwrap().join("\n")
    );
    breadboard::os::sys::kill(pid, libc::SIGKILL).unwrap();
    let _ = waking.wait();

    let (mut follower, out, err) = spawn_collected(
        &e,
        &["sessions", "follow", &live, "--json", "--timeout", "3"],
    );
    wait_for("the replay", Duration::from_secs(30), || {
        out.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("run_finished"))
    });
    let printed = out.seqs().last().copied().unwrap();
    // The same follow of a remote engine (--url): it retries with backoff and still gives up after --timeout.
    std::fs::write(&tf, e.token()).unwrap();
    let (mut remote, remote_out, remote_err) = spawn_collected(
        &e,
        &[
            "sessions",
            "follow",
            &live,
            "--json",
            "--timeout",
            "3",
            "--url",
            &url_of(&e),
            "--token-file",
            tf.to_str().unwrap(),
        ],
    );
    wait_for("the remote replay", Duration::from_secs(30), || {
        remote_out
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("run_finished"))
    });
    let pid = e.registration().unwrap()["pid"].as_i64().unwrap();
    breadboard::os::sys::kill(pid as i32, 9).unwrap();
    // Bounded: a follow that retries forever fails here instead of hanging the suite.
    wait_for(
        "the remote follower to give up",
        Duration::from_secs(60),
        || remote.try_wait().unwrap().is_some(),
    );
    let remote_text = remote_err.lines.lock().unwrap().join("\n");
    assert_eq!(remote.wait().unwrap().code(), Some(21), "{remote_text}");
    assert!(remote_text.contains("within 3s"), "{remote_text}");
    let status = follower.wait().unwrap();
    wait_for("its stderr", Duration::from_secs(10), || {
        err.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("hint:"))
    });
    let text = err.lines.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(21), "{text}");
    assert_eq!(text.matches("exited unexpectedly").count(), 1, "{text}");
    assert!(
        text.contains("within 3s") && text.contains(&format!("--from-seq {printed}")),
        "{text}"
    );
}

#[test]
fn not_installed_and_protocol_mismatch_name_their_fix() {
    let ctx = TestContext::new();
    for args in [
        vec!["ask", "hi"],
        vec!["sessions", "new"],
        vec!["sessions", "list"],
    ] {
        let out = ctx.cmd(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(21), "{args:?}: {err}");
        assert!(err.contains("breadboard engine install"), "{args:?}: {err}");
    }
    // A remote engine that speaks another protocol (and version): strict refuses with 24.
    let port = free_port();
    let mut fake = Command::new("python3")
        .arg(repo_root().join("tests/fixtures/fake_engine.py"))
        .env("FAKE_ENGINE_MODE", "protocol9")
        .env("BREADBOARD_CLI_PORT", port.to_string())
        .env_remove("BREADBOARD_API_TOKEN")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for("the fake engine", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = ctx
        .cmd(&["sessions", "list", "--url", &url])
        .output()
        .unwrap();
    let _ = fake.kill();
    let _ = fake.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(24), "{err}");
    assert!(
        err.contains("9.9") && err.contains("0.0.1") && err.contains("--protocol soft"),
        "{err}"
    );
}

/// Lines a child prints, collected by a thread.
pub struct Collector {
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub fn new(out: impl std::io::Read + Send + 'static) -> Collector {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Collector { lines }
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }
}

/// `breadboard ARGS` in the background, its stdout and stderr collected line by line.
pub fn spawn_collected(e: &Engine, args: &[&str]) -> (std::process::Child, Collector, Collector) {
    let mut child = e
        .command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Collector::new(child.stdout.take().unwrap());
    let err = Collector::new(child.stderr.take().unwrap());
    (child, out, err)
}

#[test]
fn follow_json_across_20_disconnects_prints_every_seq_once_in_order() {
    let mut e = Engine::new();
    std::fs::create_dir_all(&e.ctx.home).unwrap();
    std::fs::write(
        e.ctx.home.join("config.toml"),
        "[engine]\nrestart = \"on-failure\"\n",
    )
    .unwrap();
    e.env
        .push(("BREADBOARD_RESTART_BACKOFF_MS".into(), "100".into()));
    e.start();
    let url = url_of(&e);
    // A slow echo (20 ms a word), so that disconnects land in the middle of turns too.
    let (code, body) = http(
        &url,
        "POST",
        "/v1/sessions",
        Some(&e.token()),
        Some(r#"{"task": "", "metadata": {"echo_delay_ms": 20}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut follower, out, err) = spawn_collected(
        &e,
        &[
            "sessions",
            "follow",
            &id,
            "--json",
            "--from-seq",
            "0",
            "--timeout",
            "120",
        ],
    );
    let words = "a b c d e f g h i j k l m n o p q r s t";
    for i in 0..20 {
        let o = run(&e, &["sessions", "send", &id, &format!("turn {i} {words}")]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        // Cut the stream mid-turn: two kill -9s (the supervisor restarts the engine), otherwise restarts.
        wait_for("the turn to stream", Duration::from_secs(30), || {
            let turn = format!("\"turn\":{},", i + 1);
            out.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("\"type\":\"assistant_delta\"") && l.contains(&turn))
        });
        let pid = e.registration().unwrap()["pid"].as_i64().unwrap();
        if i == 4 || i == 14 {
            breadboard::os::sys::kill(pid as i32, 9).unwrap();
            wait_for("the supervisor's restart", Duration::from_secs(60), || {
                e.registration()
                    .is_some_and(|r| r["pid"].as_i64() != Some(pid))
                    && crate::supervisor::health(&url_of(&e), Some(&e.token())).is_some()
            });
        } else {
            e.cmd(&["engine", "restart"]).assert().success();
        }
    }
    let last = summary(&e, &id)["last_seq"].as_u64().unwrap();
    wait_for("the follower to catch up", Duration::from_secs(60), || {
        out.seqs().last().copied() == Some(last)
    });
    breadboard::os::sys::kill(follower.id() as i32, 2).unwrap();
    let status = follower.wait().unwrap();
    let stderr = err.lines.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(out.seqs(), (1..=last).collect::<Vec<_>>(), "{stderr}");
    // Each line is the stored envelope, and every turn, cut or not, was closed by the engine.
    let printed: Vec<Value> = out
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        printed
            .iter()
            .filter(|v| v["type"] == "run_finished")
            .count(),
        20
    );
    assert!(printed
        .iter()
        .any(|v| v["payload"]["reason"] == "interrupted"));
    assert!(
        stderr.contains("killed by SIGKILL"),
        "the crash report: {stderr}\n{}",
        std::fs::read_to_string(e.ctx.home.join("logs/engine.log")).unwrap_or_default()
    );
}

/// Two clients send the same text into one session at once, behind a turn still running: each streams its own turn
/// (found by the input_id the engine echoes), not the first turn with that text. Matching by text alone gave both
/// the first one.
#[test]
fn two_identical_inputs_at_once_each_stream_their_own_turn() {
    let e = Engine::new();
    e.start();
    let url = url_of(&e);
    let token = e.token();
    let (code, body) = http(
        &url,
        "POST",
        "/v1/sessions",
        Some(&token),
        Some(r#"{"config":{},"task":"","metadata":{"echo_delay_ms":40}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let sid = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A turn that keeps the session busy for a few seconds, so both inputs queue behind it.
    let blocker: String = (0..60).map(|i| format!("b{i} ")).collect();
    let o = run(&e, &["sessions", "send", &sid, blocker.trim()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let spawn = || {
        e.command()
            .args(["ask", "--session", &sid, "--json", "the same words"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let turns: Vec<u64> = [a, b]
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let events = lines_json(&String::from_utf8_lossy(&out.stdout));
            let user = events
                .iter()
                .find(|v| v["type"] == "user_message")
                .expect("a user_message");
            assert_eq!(user["payload"]["text"], "the same words");
            assert!(user["payload"]["input_id"].is_string(), "{user}");
            // Every event printed belongs to that one turn.
            let turn = user["turn"].as_u64().unwrap();
            assert!(
                events.iter().all(|v| v["turn"].as_u64() == Some(turn)),
                "{events:?}"
            );
            turn
        })
        .collect();
    assert_ne!(
        turns[0], turns[1],
        "both clients streamed turn {}",
        turns[0]
    );
}

/// An event whose data the client cannot read still moves the resume point (its SSE id is the seq): a closed
/// session's follow ends after its last seq instead of resuming before the unreadable event forever.
#[test]
fn an_unreadable_event_does_not_keep_a_closed_sessions_follow_reconnecting() {
    let ctx = TestContext::new();
    let port = free_port();
    let mut engine = std::process::Command::new("python3")
        .arg(repo_root().join("tests/fixtures/fake_engine.py"))
        .env("FAKE_ENGINE_MODE", "sessions")
        .env("BREADBOARD_CLI_PORT", port.to_string())
        .env_remove("BREADBOARD_API_TOKEN")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for("the fake engine", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = ctx
        .cmd(&[
            "sessions",
            "follow",
            "closed",
            "--json",
            "--url",
            &url,
            "--protocol",
            "soft",
        ])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let _ = engine.kill();
    let _ = engine.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Value> = lines_json(&String::from_utf8_lossy(&out.stdout));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2], "{lines:?}");
    assert_eq!(
        stderr
            .matches("skipped an event that is not a protocol 1.0 envelope")
            .count(),
        1,
        "{stderr}"
    );
}

/// A follow that resumes on a new local instance checks the handshake again: the engine restarted onto one that
/// speaks another protocol ends the follow with the protocol mismatch (strict mode), instead of reading its events
/// as protocol 1.0.
#[test]
fn a_follow_resumed_on_an_engine_of_another_protocol_stops_with_the_mismatch() {
    let e = Engine::fake("sessions");
    e.cmd(&["engine", "start", "--port", "auto"])
        .assert()
        .success();
    let (mut follow, out, err) = spawn_collected(&e, &["sessions", "follow", "live", "--json"]);
    wait_for("the live session's events", Duration::from_secs(30), || {
        out.lines.lock().unwrap().len() >= 2
    });
    // The restart itself is allowed the other protocol; the follower (strict by default) is not.
    let mut restart = e.cmd(&["engine", "restart", "--force", "--protocol", "soft"]);
    restart.env("FAKE_ENGINE_PROTOCOL", "9.9");
    restart.assert().success();
    let (status, err) = ended(&mut follow, &err, Duration::from_secs(30));
    assert_eq!(status.code(), Some(24), "{err}");
    assert!(
        err.contains("speaks protocol \"9.9\"") && err.contains("--protocol soft"),
        "{err}"
    );
    assert_eq!(
        out.lines.lock().unwrap().len(),
        2,
        "no event of the new engine is printed"
    );
}

/// A follower that resumes after an engine restart on a log that lost its tail (restored from an older copy): the
/// engine answers `409 resume_window_exceeded` to its Last-Event-ID, and the follow ends with exit 26, naming the
/// seq the engine has and the command that follows from there, instead of retrying forever.
#[test]
fn a_resume_point_the_engine_no_longer_has_ends_the_follow_with_exit_26() {
    let e = Engine::new();
    e.start();
    let id = run(&e, &["sessions", "new"]).stdout.trim().to_owned();
    let sent = run(&e, &["sessions", "send", &id, "one two three", "--wait"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    let last = summary(&e, &id)["last_seq"].as_u64().unwrap();
    assert!(last > 2, "{last}");
    let (mut follow, out, err) = spawn_collected(&e, &["sessions", "follow", &id, "--json"]);
    wait_for("every event printed", Duration::from_secs(30), || {
        out.lines.lock().unwrap().len() as u64 >= last
    });
    e.cmd(&["engine", "stop"]).assert().success();
    // Only the first two events survive; the offset index and the snapshot are caches of the log.
    let dir = e.ctx.home.join("data/sessions").join(&id);
    let log = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let kept: String = log.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("events.jsonl"), kept).unwrap();
    for cache in ["events.idx", "snapshot.json"] {
        let _ = std::fs::remove_file(dir.join(cache));
    }
    e.start();
    let (status, err) = ended(&mut follow, &err, Duration::from_secs(60));
    assert_eq!(status.code(), Some(26), "{err}");
    assert!(
        err.contains("(it has up to seq 2)")
            && err.contains(&format!("breadboard sessions follow {id} --from-seq 0")),
        "{err}"
    );
    assert_eq!(
        out.lines.lock().unwrap().len() as u64,
        last,
        "nothing printed twice"
    );
}

/// Waits (up to `timeout`) for a spawned command to end by itself: its exit status and its stderr.
fn ended(
    child: &mut std::process::Child,
    err: &Collector,
    timeout: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, err.lines.lock().unwrap().join("\n"));
        }
        assert!(
            Instant::now() < deadline,
            "it did not end within {timeout:?}: {:?}",
            err.lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
