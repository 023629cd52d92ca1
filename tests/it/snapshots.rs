//! Snapshots of the human output (insta): status, doctor, the crash report and the main errors, exit code, stdout and
//! stderr together. Paths, pids, ports, times and durations are filtered, so a snapshot changes only when what a user
//! reads changes. A changed snapshot fails the test and leaves `<name>.snap.new` next to the old one (review with
//! `cargo insta review`, or rerun with `INSTA_UPDATE=always` and read the diff).

use std::time::Duration;

use crate::common::*;
use crate::supervisor::Engine;

/// `exit N`, then stdout and stderr, with the run's own values replaced by placeholders.
fn transcript(ctx: &TestContext, out: &std::process::Output) -> String {
    let text = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.replace(&ctx.dir.path().display().to_string(), "[TMP]")
        .replace(&repo_root().display().to_string(), "[REPO]")
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    for (pattern, with) in [
        // A log's tail is the engine's own output (uvicorn's lines, their number depends on timing): kept out.
        (
            r"(?s)─── last \d+ lines of engine\.log ───\n.*?\n  ───\n",
            "─── last [N] lines of engine.log ───\n  [LOG TAIL]\n  ───\n",
        ),
        (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?", "[TIME]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"\bport \d+", "port [PORT]"),
        (r"\bpid \d+", "pid [PID]"),
        (r"\bsupervisor \d+", "supervisor [PID]"),
        (r"\[\d+\]", "[[PID]]"),
        (r"\b\d+(\.\d+)?\s?(ms|s|m|h)\b", "[DURATION]"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[UUID]",
        ),
        (r"breadboard \d+\.\d+\.\d+\S*", "breadboard [VERSION]"),
    ] {
        s.add_filter(pattern, with);
    }
    s
}

fn snap(name: &str, ctx: &TestContext, out: &std::process::Output) {
    settings().bind(|| insta::assert_snapshot!(name, transcript(ctx, out)));
}

#[test]
fn errors_without_an_engine() {
    let ctx = TestContext::new();
    let run = |args: &[&str]| ctx.cmd(args).output().unwrap();
    snap(
        "status_nothing_installed",
        &ctx,
        &run(&["engine", "status"]),
    );
    snap("ask_nothing_installed", &ctx, &run(&["ask", "hello"]));
    // The doctor's report of a home that does not exist yet: one error (no engine), one warning (no home), and the
    // command that fixes each. On a port known to be free here, since 9099 may be taken on the machine.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    snap(
        "doctor_nothing_installed",
        &ctx,
        &ctx.cmd(&["engine", "doctor"])
            .env("BREADBOARD_CLI_PORT", &port)
            .output()
            .unwrap(),
    );
    snap(
        "start_port_zero",
        &ctx,
        &run(&["engine", "start", "--port", "0"]),
    );
    snap(
        "ask_without_a_prompt",
        &ctx,
        &ctx.cmd(&["ask"]).write_stdin("").output().unwrap(),
    );
    snap(
        "ask_url_with_credentials",
        &ctx,
        &run(&["ask", "--url", "https://me:hunter2@127.0.0.1:1", "hello"]),
    );
    // What a new user meets first, before anything is installed: each names the command that gets them further.
    snap("stop_nothing_running", &ctx, &run(&["engine", "stop"]));
    snap("logs_no_log_yet", &ctx, &run(&["engine", "logs"]));
    snap(
        "rollback_nothing_installed",
        &ctx,
        &run(&["engine", "rollback"]),
    );
    snap(
        "follow_nothing_installed",
        &ctx,
        &run(&["sessions", "follow", "some-session"]),
    );
    snap(
        "attach_remote_unreachable",
        &ctx,
        &run(&["sessions", "attach", "s1", "--url", "http://127.0.0.1:1"]),
    );
    std::fs::create_dir_all(&ctx.home).unwrap();
    std::fs::write(ctx.home.join("config.toml"), "[engine\nport = 1\n").unwrap();
    snap(
        "start_config_does_not_parse",
        &ctx,
        &run(&["engine", "start"]),
    );
    std::fs::write(
        ctx.home.join("config.toml"),
        "[engine]\nrestart = \"sometimes\"\n",
    )
    .unwrap();
    snap("start_config_bad_value", &ctx, &run(&["engine", "start"]));
}

#[test]
fn status_crash_report_and_client_errors_of_a_real_engine() {
    let e = Engine::new();
    let ctx = &e.ctx;
    let run = |args: &[&str]| e.cmd(args).output().unwrap();
    snap("status_installed_stopped", ctx, &run(&["engine", "status"]));
    e.start();
    snap("status_running", ctx, &run(&["engine", "status"]));
    snap(
        "sessions_show_unknown",
        ctx,
        &run(&["sessions", "show", "no-such-session"]),
    );
    let wrong = ctx.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let url = e.registration().unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    snap(
        "sessions_list_token_refused",
        ctx,
        &run(&[
            "sessions",
            "list",
            "--url",
            &url,
            "--token-file",
            wrong.to_str().unwrap(),
        ]),
    );

    // A blank BREADBOARD_API_TOKEN (an empty one counts as unset, as every variable) is left set by mistake:
    // ignored with a warning, never sent as a token.
    let mut empty = e.command();
    empty
        .env("BREADBOARD_API_TOKEN", "  ")
        .args(["sessions", "list", "--url", &url]);
    snap(
        "sessions_list_blank_token_variable",
        ctx,
        &empty.output().unwrap(),
    );

    // kill -9 of the engine (no automatic restart): the crash report, once, with the log's tail.
    let reg = e.registration().unwrap();
    breadboard::os::sys::kill(reg["pid"].as_i64().unwrap() as i32, 9).unwrap();
    // Polled on the record itself: a `status` here would already show (and so use up) the report.
    wait_for("the crash to be recorded", Duration::from_secs(20), || {
        ctx.home.join("run/last-exit.json").is_file()
            && !breadboard::os::procfs::alive(reg["supervisor_pid"].as_i64().unwrap() as i32)
    });
    let report = run(&["engine", "status"]);
    assert!(
        String::from_utf8_lossy(&report.stderr).contains("killed by SIGKILL (signal 9) after"),
        "the tail is the log's: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    snap("status_crash_report", ctx, &report);
    snap(
        "status_crash_report_second_time",
        ctx,
        &run(&["engine", "status"]),
    );
}
