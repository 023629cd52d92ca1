//! `breadboard sessions list --watch`: the live session list over the engine's realtime bus. On a terminal the table
//! is redrawn in place (on the bus client's 100 ms tick, only when something changed); on a pipe every bus message of the `sessions` topic is one JSON
//! line (the snapshot too, so a reader can rebuild the list, and again after each reconnect). Disconnects are said
//! on stderr and retried; Ctrl-C ends the watch with 0.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::sessions_list::{provider_model, short_time};
use super::Ctx;
use crate::client::realtime::{watch_sessions, SessionsUpdate};
use crate::client::wire::Summary;
use crate::client::Client;

pub async fn run(
    ctx: &Ctx<'_>,
    client: &mut Client<'_>,
    status: Option<&str>,
) -> anyhow::Result<u8> {
    let terminal = std::io::stdout().is_terminal();
    let mut sessions: Vec<Value> = Vec::new();
    let mut dirty = false;
    let mut note: Option<String> = None;
    let mut disconnected = false;
    let printer = ctx.printer;
    let code = watch_sessions(client, |update| {
        say_outage(printer, &update, &mut disconnected);
        if !terminal {
            if let SessionsUpdate::Snapshot { raw, .. } | SessionsUpdate::Change { raw, .. } =
                &update
            {
                print_line(raw);
            }
            return;
        }
        match update {
            SessionsUpdate::Snapshot { list, .. } => {
                sessions = list;
                note = None;
            }
            SessionsUpdate::Change { change, .. } => change.apply_to(&mut sessions),
            SessionsUpdate::Disconnected(why) => {
                note = Some(format!("reconnecting: {why}"));
                // No ticks while disconnected: say it now.
                draw(&sessions, status, note.as_deref());
                return;
            }
            // Changes are drawn on the next tick: a burst of them costs one redraw.
            SessionsUpdate::Tick => {
                if dirty {
                    dirty = false;
                    draw(&sessions, status, note.as_deref());
                }
                return;
            }
        }
        dirty = true;
    })
    .await?;
    if terminal {
        draw(&sessions, status, None);
    }
    Ok(code)
}

/// One warning per outage, not one per attempt; its end is said too.
fn say_outage(printer: &crate::printer::Printer, update: &SessionsUpdate, disconnected: &mut bool) {
    match update {
        SessionsUpdate::Disconnected(why) if !*disconnected => {
            *disconnected = true;
            printer.warn(&format!(
                "lost the engine's realtime bus ({why}); reconnecting"
            ));
        }
        SessionsUpdate::Disconnected(why) => printer.debug(&format!("still reconnecting: {why}")),
        SessionsUpdate::Snapshot { .. } if *disconnected => {
            *disconnected = false;
            printer.info("reconnected to the engine's realtime bus: the list is fresh");
        }
        _ => {}
    }
}

fn print_line(value: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// The table of `sessions list`, from the top of the screen.
fn draw(sessions: &[Value], status: Option<&str>, note: Option<&str>) {
    let mut text = String::new();
    text.push_str(&format!(
        "{:<36}  {:<11}  {:<20}  {:<20}  {:<20}  {:>8}\n",
        "ID", "STATUS", "PROVIDER/MODEL", "CREATED", "LAST ACTIVITY", "LAST SEQ"
    ));
    let rows: Vec<Summary> = sessions
        .iter()
        .filter_map(|v| serde_json::from_value::<Summary>(v.clone()).ok())
        .filter(|s| status.is_none_or(|want| s.status == want))
        .collect();
    for s in &rows {
        text.push_str(&format!(
            "{:<36}  {:<11}  {:<20}  {:<20}  {:<20}  {:>8}\n",
            s.session_id,
            s.status,
            provider_model(s),
            short_time(&s.created_at),
            short_time(s.last_activity_at.as_deref().unwrap_or("")),
            s.last_seq
        ));
    }
    text.push_str(&format!(
        "\n{} session(s), live{} (Ctrl-C to stop)\n",
        rows.len(),
        note.map(|n| format!(" - {n}")).unwrap_or_default()
    ));
    // Overwritten in place from the top: each line cleared to its end, then the rest of the screen (a full-screen
    // clear would push every frame into the terminal's scrollback).
    let mut frame = String::from("\x1b[H");
    for line in text.lines() {
        frame.push_str(line);
        frame.push_str("\x1b[K\n");
    }
    frame.push_str("\x1b[J");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}
