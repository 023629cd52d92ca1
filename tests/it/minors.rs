//! Small CLI behaviours at their edges: a huge last log line, a broken config under `engine list`, `--port 0`, a
//! relative BREADBOARD_HOME, a home that is a file, a SIGSTOPped engine.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::supervisor::{session, Engine};

#[test]
fn logs_tail_of_a_huge_last_line_is_bounded_and_says_it_was_cut() {
    let ctx = TestContext::new();
    std::fs::create_dir_all(ctx.home.join("logs")).unwrap();
    let mut text = String::from("first line\nsecond line\n");
    text.push_str(&"x".repeat(32 * 1024 * 1024));
    text.push('\n');
    std::fs::write(ctx.home.join("logs/engine.log"), text).unwrap();
    let a = ctx.cmd(&["engine", "logs", "-n", "3"]).assert().success();
    let out = stdout(&a);
    assert!(out.len() < 16 * 1024, "{} bytes shown", out.len());
    assert!(
        out.contains("longer than 256 KiB") && out.contains("line cut:"),
        "{}",
        &out[..out.len().min(300)]
    );
    // Short lines are shown whole, the last n of them.
    std::fs::write(ctx.home.join("logs/engine.log"), "a\nb\nc\nd\n").unwrap();
    let a = ctx.cmd(&["engine", "logs", "-n", "3"]).assert().success();
    assert_eq!(stdout(&a), "b\nc\nd\n");
}
