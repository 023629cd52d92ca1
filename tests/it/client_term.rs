//! The client in a real terminal (tmux): `sessions attach` (line editor, history, Ctrl-C stops a turn, Ctrl-D
//! detaches), Ctrl-C in `ask` (once: stop and exit 130; twice: at once), and the restart prompt of `sessions follow`
//! when the local engine dies.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::client::{run, slow_fixture, url_of};
use crate::common::*;
use crate::supervisor::Engine;

/// tmux on a server of the terminal's own (`-L` with the session's name), so no other tmux use can touch it.
fn tmux(session: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", session])
        .args(args)
        .output()
        .expect("tmux")
}

struct Term(String);

impl Term {
    /// Runs `breadboard <args>` in a new tmux session with the test's environment, then prints `EXIT=<code>`.
    fn open(e: &Engine, name: &str, args: &str) -> Term {
        // The shell's own Ctrl-C is trapped (not ignored: the command must get the default disposition), or it
        // would end with the command and take the pane with it.
        let mut text = String::from("#!/bin/sh\ntrap : INT\n");
        for (k, v) in e.command().get_envs() {
            let k = k.to_string_lossy();
            match v {
                Some(v) => text.push_str(&format!("export {k}='{}'\n", v.to_string_lossy())),
                None => text.push_str(&format!("unset {k}\n")),
            }
        }
        text.push_str(&format!(
            "cd '{}'\n'{BIN}' {args}\necho EXIT=$?\nsleep 120\n",
            e.ctx.dir.path().display()
        ));
        let path = e.ctx.dir.path().join(format!("{name}.sh"));
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let session = format!("bbc{name}{}", std::process::id());
        let ok = tmux(
            &session,
            &[
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                &session,
                path.to_str().unwrap(),
            ],
        );
        assert!(ok.status.success(), "{ok:?}");
        Term(session)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(
            &tmux(
                &self.0,
                &["capture-pane", "-p", "-J", "-t", &self.0, "-S", "-500"],
            )
            .stdout,
        )
        .into_owned()
    }

    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if cond(&text) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, needle: &str) {
        self.wait(needle, |t| t.contains(needle));
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.0.as_str()];
        args.extend_from_slice(keys);
        assert!(tmux(&self.0, &args).status.success());
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
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
    let t = Term::open(&e, "attach", "sessions attach --new");
    t.wait_for_text("Ctrl-D detaches");
    t.keys(&["hello attach", "Enter"]);
    t.wait("the answer", |s| s.matches("hello attach").count() >= 2);
    let id = newest_session(&e);
    t.keys(&[&slow, "Enter"]);
    t.wait_for_text("w3 ");
    t.keys(&["C-c"]);
    t.wait_for_text("(turn stopped)");
    assert!(!t.text().contains("w199"), "{}", t.text());
    // The history: Up Up brings back the first line.
    t.keys(&["Up", "Up", "Enter"]);
    t.wait("the recalled line's answer", |s| {
        s.matches("hello attach").count() >= 4
    });
    t.keys(&["C-d"]);
    t.wait_for_text("EXIT=0");
    assert!(t.text().contains("detached from session"), "{}", t.text());
    assert_eq!(status(&e, &id), "running", "the session stays");
    drop(t);

    // ask: the first Ctrl-C stops the turn, prints what had arrived and exits 130.
    let t = Term::open(&e, "ask1", &format!("ask '{slow}'"));
    t.wait_for_text("w2 ");
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=130");
    let text = t.text();
    assert!(
        text.contains("stopping the turn") && text.contains("w0 w1 w2"),
        "{text}"
    );
    let asked = newest_session(&e);
    assert_eq!(
        status(&e, &asked),
        "stopped",
        "the engine stopped the one-shot turn"
    );
    drop(t);
    // A second Ctrl-C exits at once.
    let t = Term::open(&e, "ask2", &format!("ask '{slow}'"));
    t.wait_for_text("w2 ");
    t.keys(&["C-c"]);
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=130");
    drop(t);

    // follow: the engine dies; the crash report, the prompt, Enter restarts it and the stream resumes.
    let t = Term::open(&e, "follow", &format!("sessions follow {id}"));
    t.wait_for_text("> hello attach");
    let reg = e.registration().unwrap();
    breadboard::sys::kill(reg["pid"].as_i64().unwrap() as i32, 9).unwrap();
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
}
