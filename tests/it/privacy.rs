//! Session data and runtime files are private to the user, however the home was made: checked as another local
//! user (`nobody`, through setpriv: the suite runs as root).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::supervisor::Engine;

/// Runs `sh -c script` as uid/gid 65534 with no supplementary groups; true when it exits 0.
fn as_nobody(script: &str) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setpriv (util-linux) is needed for this test")
        .success()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn doctor_check(ctx: &TestContext, extra: &[&str], id: &str) -> Value {
    let mut args = vec!["engine", "doctor", "--json"];
    args.extend_from_slice(extra);
    let out = ctx.cmd(&args).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc}"))
        .clone()
}

#[test]
fn nobody_cannot_read_a_prompt_after_a_real_turn() {
    // A home made as install.sh used to make it (mkdir -p under umask 022), in a directory other users can
    // traverse (the test's temp dir stands for the user's home directory).
    let ctx = TestContext::new();
    chmod(ctx.dir.path(), 0o755);
    std::fs::create_dir(&ctx.home).unwrap();
    chmod(&ctx.home, 0o755);
    ctx.install(&["--version", "0.1.1"]).success();
    let e = Engine {
        ctx,
        env: vec![("BREADBOARD_RAY_START".into(), "off".into())],
        // The runner's umask must not decide the outcome: the usual permissive one, as install.sh's test forces.
        umask: Some(0o022),
    };
    let started = e.start();
    let url = started["url"].as_str().unwrap().to_owned();
    let token = e.token();
    let secret = "prompt-only-its-owner-may-read-7f3a";
    // In the session's task (the index) and in its prompt (the event log).
    let id = session_with_input(&url, &token, &format!(r#"{{"task": "{secret}"}}"#), secret);
    sse_until(
        &url,
        &format!("/v1/sessions/{id}/events?replay=true"),
        &token,
        "run_finished",
        Duration::from_secs(60),
    );
    // The prompt is in the data files (root sees it), and nobody can reach any of them.
    let home = e.ctx.home.display().to_string();
    let grep = format!("grep -rqa {secret} {home}");
    assert!(
        Command::new("sh")
            .args(["-c", &grep])
            .status()
            .unwrap()
            .success(),
        "the prompt should be on disk"
    );
    assert!(!as_nobody(&grep), "nobody can read the prompt under {home}");
    assert!(
        !as_nobody(&format!("ls {home}/data")),
        "nobody can list data/"
    );
    assert!(
        as_nobody(&format!("ls {home}")),
        "the home itself was left as made"
    );
    // Even a home made open by hand (as an older install.sh did) is closed again where it matters by start.
    e.cmd(&["engine", "stop"]).assert().success();
    for d in ["", "data", "logs", "run"] {
        chmod(&e.ctx.home.join(d), 0o755);
    }
    let a = e.cmd(&["engine", "start"]).assert().success();
    assert!(
        stderr(&a).contains("made it private (700)"),
        "{}",
        stderr(&a)
    );
    for d in ["data", "logs", "run"] {
        assert_eq!(mode(&e.ctx.home.join(d)), 0o700, "{d}");
    }
    assert!(!as_nobody(&grep), "nobody can read the prompt under {home}");
}

/// A regression guard, not a reproduction: the CLI already made a new home 0700 before privacy was hardened. It
/// keeps it that way for the commands that create the home first.
#[test]
fn a_new_home_stays_private_regression_guard() {
    let ctx = TestContext::new();
    chmod(ctx.dir.path(), 0o755);
    let a = ctx.cmd(&["engine", "stop"]).assert().success();
    assert_eq!(mode(&ctx.home), 0o700, "{}", stderr(&a));
}

#[test]
fn doctor_reports_an_open_home_and_fix_makes_it_private() {
    let ctx = TestContext::new();
    chmod(ctx.dir.path(), 0o755);
    let h = &ctx.home;
    // A home made by hand under umask 022, with the engine's files as an older engine left them.
    for d in [
        "data/sessions/s1",
        "data/ray/session_1/sockets",
        "logs",
        "run",
    ] {
        std::fs::create_dir_all(h.join(d)).unwrap();
    }
    let files = [
        "data/sessions.sqlite3",
        "data/sessions.sqlite3-wal",
        "data/sessions.sqlite3-shm",
        "data/sessions/s1/events.jsonl",
        "data/ray/session_1/sockets/raylet",
        "logs/engine.log",
        "logs/engine.log.1",
        "run/last-exit.json",
        "config.toml",
    ];
    for f in files {
        std::fs::write(h.join(f), "secret prompt\n").unwrap();
        chmod(&h.join(f), 0o644);
    }
    // config.toml counts when it holds a secret: an index URL with credentials.
    std::fs::write(
        h.join("config.toml"),
        "[engine]\nindex_url = \"https://me:s3cret@index.example/simple/\"\n",
    )
    .unwrap();
    for d in [
        "",
        "data",
        "data/sessions",
        "data/sessions/s1",
        "logs",
        "run",
    ] {
        chmod(&h.join(d), 0o755);
    }
    chmod(&h.join("data/ray"), 0o777);
    let sqlite = h.join("data/sessions.sqlite3").display().to_string();
    assert!(as_nobody(&format!("cat {sqlite}")), "the setup is open");

    let found = doctor_check(&ctx, &[], "home.private");
    assert_eq!(found["status"], "error", "{found}");
    let detail = found["detail"].as_str().unwrap();
    for f in [
        "sessions.sqlite3-wal (644)",
        "data/ray (777)",
        "data (755)",
        "config.toml (644)",
    ] {
        assert!(detail.contains(f), "{f}: {found}");
    }
    assert_eq!(doctor_check(&ctx, &[], "home.run_dir")["status"], "error");

    doctor_check(&ctx, &["--fix"], "home.private");
    for f in files {
        assert_eq!(mode(&h.join(f)), 0o600, "{f}");
    }
    for d in ["data", "data/ray", "data/sessions/s1", "logs", "run"] {
        assert_eq!(mode(&h.join(d)), 0o700, "{d:?}");
    }
    // A home open only for reading shows names, nothing private: left as the user made it.
    assert_eq!(mode(h), 0o755);
    assert!(!as_nobody(&format!("cat {sqlite}")));
    let after = doctor_check(&ctx, &[], "home.private");
    assert_eq!(after["status"], "ok", "{after}");
}

#[test]
fn doctor_does_not_flag_what_a_closed_directory_hides() {
    // What a healthy home looks like after a Ray turn: an open home (made by hand), its private directories 0700,
    // and below them what Ray and older engines leave open (Ray's session dirs 0777, an old 0644 index).
    let ctx = TestContext::new();
    chmod(ctx.dir.path(), 0o755);
    let h = &ctx.home;
    for d in ["data/ray/session_1/sockets", "logs", "run"] {
        std::fs::create_dir_all(h.join(d)).unwrap();
    }
    std::fs::write(h.join("data/sessions.sqlite3"), "old index\n").unwrap();
    chmod(&h.join("data/sessions.sqlite3"), 0o644);
    chmod(&h.join("data/ray/session_1"), 0o777);
    chmod(&h.join("data/ray/session_1/sockets"), 0o777);
    for d in ["data", "data/ray", "logs", "run"] {
        chmod(&h.join(d), 0o700);
    }
    chmod(h, 0o755);
    let found = doctor_check(&ctx, &[], "home.private");
    assert_eq!(found["status"], "ok", "{found}");
    // An open ray dir makes what is below it reachable again: then it is flagged.
    chmod(&h.join("data/ray"), 0o755);
    chmod(&h.join("data"), 0o755);
    let found = doctor_check(&ctx, &[], "home.private");
    assert_eq!(found["status"], "error", "{found}");
    assert!(
        found["detail"]
            .as_str()
            .unwrap()
            .contains("session_1 (777)"),
        "{found}"
    );
    // A home others can write to lets them swap data/ or run/: flagged.
    for d in ["data", "data/ray"] {
        chmod(&h.join(d), 0o700);
    }
    chmod(h, 0o777);
    let found = doctor_check(&ctx, &[], "home.private");
    assert_eq!(found["status"], "error", "{found}");
    assert!(
        found["detail"].as_str().unwrap().contains("(777)"),
        "{found}"
    );
}

#[test]
fn a_run_directory_of_another_user_is_refused() {
    // Another local user pre-created run/ (e.g. a home under /tmp): they could rewrite the registration there and
    // receive the bearer token. The CLI refuses to use it and says how to take it back.
    let ctx = TestContext::new();
    std::fs::create_dir(&ctx.home).unwrap();
    chmod(&ctx.home, 0o700);
    let run = ctx.home.join("run");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o777);
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let a = ctx.cmd(&["engine", "stop"]).assert().code(3);
    let err = stderr(&a);
    assert!(err.contains("belongs to another user"), "{err}");
    assert!(err.contains("chown"), "{err}");
    assert_eq!(mode(&run), 0o777, "left as it was");
    // Likewise a symlink to it.
    std::fs::rename(&run, ctx.home.join("theirs")).unwrap();
    std::os::unix::fs::symlink(ctx.home.join("theirs"), &run).unwrap();
    let a = ctx.cmd(&["engine", "stop"]).assert().code(3);
    assert!(
        stderr(&a).contains("belongs to another user"),
        "{}",
        stderr(&a)
    );
}
