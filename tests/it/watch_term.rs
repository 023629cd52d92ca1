//! `sessions list --watch` in a real terminal (tmux): the table is redrawn in place as sessions come and go, and
//! Ctrl-C ends it with 0.

use crate::client::run;
use crate::common::*;
use crate::supervisor::Engine;

#[test]
fn watch_redraws_the_table_in_place_in_a_terminal() {
    let e = Engine::new();
    e.start();
    let t = Term::open(
        &e.command(),
        e.ctx.dir.path(),
        "watch",
        "sessions list --watch",
    );
    t.wait("the empty table", |s| {
        s.contains("LAST SEQ") && s.contains("0 session(s), live")
    });
    let new = run(&e, &["sessions", "new"]);
    assert_eq!(new.code, 0, "{}", new.stderr);
    let id = new.stdout.trim().to_owned();
    t.wait("the new session's row", |s| {
        s.contains(&id) && s.contains("1 session(s), live")
    });
    // Redrawn, not appended: the header is on the screen once.
    let screen = t.text();
    assert_eq!(screen.matches("LAST SEQ").count(), 1, "{screen}");
    assert!(
        !screen.contains("\"type\""),
        "no JSON lines on a terminal: {screen}"
    );

    let rm = run(&e, &["sessions", "rm", &id, "--yes"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    t.wait("the row gone", |s| {
        !s.contains(&id) && s.contains("0 session(s), live")
    });
    t.keys(&["C-c"]);
    t.wait_for_text("EXIT=0");
}
