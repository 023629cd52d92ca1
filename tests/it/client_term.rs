//! The client in a real terminal (tmux): `sessions attach` (line editor, history, Ctrl-C stops a turn, Ctrl-D
//! detaches), Ctrl-C in `ask` (once: stop and exit 130; twice: at once), and the restart prompt of `sessions follow`
//! when the local engine dies.

use std::time::Duration;

use serde_json::Value;

use crate::client::{run, slow_fixture, url_of};
use crate::common::*;
use crate::supervisor::Engine;

fn open(e: &Engine, name: &str, args: &str) -> Term {
    Term::open(&e.command(), e.ctx.dir.path(), name, args)
}

/// The line editor shows its prompt with nothing typed: it reads the terminal raw now. Keys sent before that would
/// be echoed by the terminal's cooked mode too, and the echo would count as text the test waits for.
fn editor_ready(pane: &str) -> bool {
    last_line(pane) == ">"
}

fn status(e: &Engine, id: &str) -> String {
    let (code, body) = http(
        &url_of(e),
        "GET",
        &format!("/v1/sessions/{id}"),
        Some(&e.token()),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn newest_session(e: &Engine) -> String {
    let all: Value = serde_json::from_str(&run(e, &["sessions", "list", "--json"]).stdout).unwrap();
    all.as_array().unwrap().last().unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn attach_ask_ctrl_c_and_the_restart_prompt_in_a_real_terminal() {
    let e = Engine::new();
    e.start();
    let slow = slow_fixture(&e, 200, 100);

    // attach --new: a line is an input, its answer streams below; Ctrl-C stops the turn; history; Ctrl-D detaches.
    let t = open(&e, "attach", "sessions attach --new");
    t.wait("the editor", |s| {
        s.contains("Ctrl-D detaches") && editor_ready(s)
    });
    t.keys(&["hello attach", "Enter"]);
    // The typed line and its answer, then the prompt again once the turn is over.
    t.wait("the answer", |s| {
        s.matches("hello attach").count() >= 2 && editor_ready(s)
    });
    let id = newest_session(&e);
    t.keys(&[&slow, "Enter"]);
    t.wait_for_text("w3 ");
    t.keys(&["C-c"]);
    t.wait("the stop", |s| {
        s.contains("(turn stopped)") && editor_ready(s)
    });
    assert!(!t.text().contains("w199"), "{}", t.text());
    // The history: Up Up brings back the first line.
    t.keys(&["Up", "Up", "Enter"]);
    t.wait("the recalled line's answer", |s| {
        s.matches("hello attach").count() >= 4 && editor_ready(s)
    });
    t.keys(&["C-d"]);
    t.wait_for_text("EXIT=0");
    assert!(t.text().contains("detached from session"), "{}", t.text());
    assert_eq!(status(&e, &id), "running", "the session stays");
    drop(t);

    // ask: the first Ctrl-C stops the turn, prints what had arrived and exits 130.
    let t = open(&e, "ask1", &format!("ask '{slow}'"));
    t.wait_for_text("w2 ");
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=130");
    let text = t.text();
    assert!(
        text.contains("stopping the turn") && text.contains("w0 w1 w2"),
        "{text}"
    );
    // The engine closes the session a moment after the turn's last event (which ended the client): poll.
    let asked = newest_session(&e);
    wait_for(
        "the engine to close the stopped one-shot session",
        Duration::from_secs(30),
        || status(&e, &asked) == "stopped",
    );
    drop(t);
    // A second Ctrl-C exits at once.
    let t = open(&e, "ask2", &format!("ask '{slow}'"));
    t.wait_for_text("w2 ");
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=130");
    drop(t);

    // follow: the engine dies; the crash report, the prompt, Enter restarts it and the stream resumes.
    let t = open(&e, "follow", &format!("sessions follow {id}"));
    t.wait_for_text("> hello attach");
    let reg = e.registration().unwrap();
    breadboard::os::sys::kill(reg["pid"].as_i64().unwrap() as i32, 9).unwrap();
    t.wait_for_text("restart the engine? [Y/n]");
    let text = t.text();
    assert!(
        text.contains("exited unexpectedly") && text.contains("SIGKILL"),
        "{text}"
    );
    t.keys(&["Enter"]);
    t.wait_for_text("engine started at");
    let o = run(
        &e,
        &["sessions", "send", &id, "after the restart", "--wait"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    t.wait_for_text("> after the restart");
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=0");
    assert_eq!(
        t.text().matches("exited unexpectedly").count(),
        1,
        "{}",
        t.text()
    );
    drop(t);

    // Ctrl-C at the prompt answers it: no restart, the follow ends (it was swallowed by a blocking read before).
    let t = open(&e, "follow2", &format!("sessions follow {id}"));
    t.wait_for_text("> after the restart");
    let reg = e.registration().unwrap();
    breadboard::os::sys::kill(reg["pid"].as_i64().unwrap() as i32, 9).unwrap();
    t.wait_for_text("restart the engine? [Y/n]");
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=0");
    assert!(t.text().contains("detached from session"), "{}", t.text());
    let (code, _) = e.status();
    assert_eq!(code, 14, "the engine stays crashed: nothing restarted it");
}

/// The fake engine accepts `stop` but never answers it: one Ctrl-C cannot end `ask` before the client's 60 s read
/// timeout, so only the second one can, at once. The bound (20 s) leaves a wide margin for a loaded machine while
/// staying far below the 60 s the old code waited.
#[test]
fn a_second_ctrl_c_quits_ask_while_its_stop_is_unanswered() {
    let e = Engine::fake("sessions");
    e.start();
    let t = open(&e, "askhung", "ask 'hello hung'");
    t.wait_for_text("partial answer");
    t.keys(&["C-c"]);
    t.wait_for_text("stopping the turn");
    let sent = std::time::Instant::now();
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=130");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "took {:?}:\n{}",
        sent.elapsed(),
        t.text()
    );
    assert!(t.text().contains("partial answer"), "{}", t.text());
}
