//! How the engine ended (`run/last-exit.json`, written by the supervisor), and the crash report shown once per
//! crash by any command that finds the engine died without being asked to (status, start, later client commands).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::registration::Registration;
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::{Printer, Style};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct LastExit {
    pub instance_id: String,
    pub pid: i32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub uptime_s: f64,
    pub stop_requested: bool,
    pub ended_at: String,
    pub ended_at_unix: f64,
    /// Filled in when the CLI found the engine gone without a record (the supervisor itself was killed).
    #[serde(default)]
    pub supervisor_lost: bool,
    /// Restarts the `on-failure` policy had made before this exit (0: this was the first engine of the instance).
    #[serde(default)]
    pub restarts: u32,
    /// Set when the supervisor gave up restarting (state `errored`): the crashes that made the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_loop: Option<CrashLoop>,
}

/// A crash loop: `crashes` exits without a stop request within `window_s` seconds; the supervisor gave up.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct CrashLoop {
    pub crashes: u32,
    pub window_s: u64,
    pub gave_up_at: String,
    /// How each crash of the window ended, oldest first: "exit code 1 after 1.2s at <time>".
    pub history: Vec<String>,
}

impl CrashLoop {
    /// One line: "3 crashes within 60 s; restart = \"on-failure\" gave up after 2 restarts".
    pub(crate) fn summary(&self, restarts: u32) -> String {
        format!(
            "crash loop: {} crashes within {} s; restart = \"on-failure\" gave up after {restarts} restart{}",
            self.crashes,
            self.window_s,
            if restarts == 1 { "" } else { "s" }
        )
    }
}

pub(crate) fn read(paths: &Paths) -> Option<LastExit> {
    serde_json::from_str(&std::fs::read_to_string(paths.last_exit()).ok()?).ok()
}

pub(crate) fn write(paths: &Paths, exit: &LastExit) -> anyhow::Result<()> {
    fsutil::write_private(
        &paths.last_exit(),
        serde_json::to_string_pretty(exit)?.as_bytes(),
    )
}

/// Whether the crash of `instance_id` was already shown.
pub(crate) fn acknowledged(paths: &Paths, instance_id: &str) -> bool {
    std::fs::read_to_string(paths.crash_ack()).is_ok_and(|s| s.trim() == instance_id)
}

pub(crate) fn acknowledge(paths: &Paths, instance_id: &str) {
    let _ = fsutil::write_private(&paths.crash_ack(), instance_id.as_bytes());
}

impl LastExit {
    /// "exit code 1", "killed by SIGKILL (signal 9)", ...
    pub(crate) fn how(&self) -> String {
        if self.supervisor_lost {
            return "the supervisor was killed (no exit status recorded)".to_owned();
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!(
                "killed by {} (signal {s}){}",
                crate::os::sys::signal_name(s),
                if self.core_dumped {
                    ", core dumped"
                } else {
                    ""
                }
            ),
            _ => "unknown".to_owned(),
        }
    }
}

/// The last `n` lines of the log, with the token (and any bearer header) redacted.
pub(crate) fn log_tail(path: &Path, n: usize, token: Option<&str>) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    // Only the end of the file is read, into a bounded buffer: a log whose last line is hundreds of MB costs no more
    // than one of short lines.
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    // One byte early: the window's first piece is then a cut line, or empty when the window began at a line start.
    let start = len.saturating_sub(TAIL_WINDOW + 1);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(TAIL_WINDOW + 1).read_to_end(&mut bytes).is_err()
    {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    if start > 0 && !lines.is_empty() {
        if lines.len() == 1 {
            out.push(format!(
                "[the last line is longer than {} KiB; its end follows]",
                TAIL_WINDOW / 1024
            ));
        } else {
            lines.remove(0);
        }
    }
    let cut_first = out.len();
    out.extend(
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| cap_line(&redact(l, token))),
    );
    // The window holds only the end of that huge line: what is shown of it is its end, as the note says.
    if cut_first == 1 {
        if let Some(last) = lines.last() {
            out[1] = cap_line_end(&redact(last, token));
        }
    }
    out
}

/// `line`, cut to its last [`MAX_LINE`] bytes (on a character boundary) after a note of how much was left out.
fn cap_line_end(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_owned();
    }
    let mut cut = line.len() - MAX_LINE;
    while !line.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[line cut: {cut} bytes before] ...{}", &line[cut..])
}

/// How far back from a log's end its tail is looked for: enough for any sensible `-n`, bounded for a huge log.
pub(crate) const TAIL_WINDOW: u64 = 256 * 1024;

/// Lines longer than this are shown cut, saying how much was left out.
pub(crate) const MAX_LINE: usize = 8 * 1024;

/// `line`, cut to [`MAX_LINE`] bytes (on a character boundary) with a note of what was left out.
pub(crate) fn cap_line(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_owned();
    }
    let mut cut = MAX_LINE;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}... [line cut: {} more bytes]",
        &line[..cut],
        line.len() - cut
    )
}

pub(crate) fn redact(line: &str, token: Option<&str>) -> String {
    let mut out = line.to_owned();
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        out = out.replace(t, "[REDACTED]");
    }
    // Any bearer credential, whatever its value.
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("bearer ") {
        let rest_start = i + 7;
        let end = out[rest_start..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map_or(out.len(), |e| rest_start + e);
        out.replace_range(rest_start..end, "[REDACTED]");
    }
    out
}

/// A likely cause recognisable from the exit and the log tail.
pub(crate) fn likely_cause(exit: &LastExit, tail: &[String]) -> Option<String> {
    let text = tail.join("\n");
    if text.contains("ModuleNotFoundError") || text.contains("ImportError") {
        return Some("the engine venv is broken (an import failed): reinstall it with `breadboard engine install --force`".into());
    }
    if text.contains("Address already in use") || text.contains("address already in use") {
        return Some(
            "the port is in use by another process: pick another with `--port` or stop it".into(),
        );
    }
    if text.contains("MemoryError") || exit.signal == Some(9) {
        return Some("killed by SIGKILL: possibly out of memory (check `dmesg` for the OOM killer), or killed by hand".into());
    }
    if text.contains("AF_UNIX path") {
        return Some(
            "Ray's temp dir path is too long for a Unix socket: use a shorter BREADBOARD_HOME"
                .into(),
        );
    }
    if text.contains("raylet") && text.contains("fail") {
        return Some("Ray failed to start: see the Ray logs under the data dir".into());
    }
    if exit.signal == Some(11) || exit.signal == Some(6) {
        return Some("the engine crashed in native code (segfault/abort)".into());
    }
    None
}

/// The crash report, on stderr.
pub(crate) fn report(
    printer: &Printer,
    paths: &Paths,
    reg: Option<&Registration>,
    exit: &LastExit,
) {
    let token = reg.and_then(crate::engine::registration::token);
    let log = reg.map_or_else(|| paths.engine_log(), |r| r.log_path.clone());
    let tail = log_tail(&log, 30, token.as_deref());
    let mut out = Vec::new();
    out.push(match &exit.crash_loop {
        None => printer.style(Style::Red, "✗ breadboard engine exited unexpectedly"),
        Some(_) => printer.style(
            Style::Red,
            "✗ breadboard engine kept crashing: restarts stopped (state errored)",
        ),
    });
    out.push(format!(
        "  instance {}  pid {}  uptime {}  ended {}",
        exit.instance_id,
        exit.pid,
        human_duration(exit.uptime_s),
        exit.ended_at
    ));
    out.push(format!("  exit: {}, no stop was requested", exit.how()));
    out.extend(restart_lines(exit));
    out.extend(reg.map(what_ran));
    out.push(format!("  log: {}", log.display()));
    out.push(format!(
        "  ─── last {} lines of {} ───",
        tail.len(),
        log.file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    ));
    for l in &tail {
        out.push(format!("  {l}"));
    }
    out.push("  ───".to_owned());
    if let Some(cause) = likely_cause(exit, &tail) {
        out.push(format!("  likely cause: {cause}"));
    }
    out.push(if exit.crash_loop.is_some() {
        "  next: breadboard engine logs -n 200 | breadboard engine doctor | breadboard engine start (starts afresh)"
            .to_owned()
    } else {
        "  next: breadboard engine start | breadboard engine logs -n 200 | breadboard engine status"
            .to_owned()
    });
    printer.info_always(&out.join("\n"));
}

/// What the restart policy had done before this end: the crash loop that stopped it, or how often it restarted.
fn restart_lines(exit: &LastExit) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cl) = &exit.crash_loop {
        out.push(format!("  {}", cl.summary(exit.restarts)));
        out.extend(cl.history.iter().map(|h| format!("    - {h}")));
    } else if exit.restarts > 0 {
        out.push(format!(
            "  the on-failure policy had restarted it {} time{} before",
            exit.restarts,
            if exit.restarts == 1 { "" } else { "s" }
        ));
    }
    out
}

/// The engine that ran: its version, protocol and venv (or its command, for an override).
fn what_ran(r: &Registration) -> String {
    format!(
        "  engine {} · protocol {} · venv {}",
        r.engine_version.as_deref().unwrap_or("(command override)"),
        r.protocol_version,
        r.venv
            .as_ref()
            .map_or_else(|| r.command.join(" "), |v| v.display().to_string())
    )
}

pub(crate) fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{:.1}s", secs.max(0.0)),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_token_and_bearer() {
        assert_eq!(redact("tok abc123 x", Some("abc123")), "tok [REDACTED] x");
        assert_eq!(
            redact("Authorization: Bearer zzz\"", None),
            "Authorization: Bearer [REDACTED]\""
        );
    }

    #[test]
    fn crash_loop_summary_and_older_records_parse() {
        let cl = CrashLoop {
            crashes: 3,
            window_s: 60,
            ..Default::default()
        };
        assert_eq!(
            cl.summary(2),
            "crash loop: 3 crashes within 60 s; restart = \"on-failure\" gave up after 2 restarts"
        );
        assert!(cl.summary(1).ends_with("after 1 restart"));
        // A record written before restarts/crash_loop existed still reads (as a plain crash).
        let old: LastExit = serde_json::from_str(
            r#"{"instance_id":"i","pid":1,"exit_code":1,"signal":null,"core_dumped":false,"uptime_s":1.0,
                "stop_requested":false,"ended_at":"t","ended_at_unix":1.0}"#,
        )
        .unwrap();
        assert_eq!((old.restarts, old.crash_loop.is_none()), (0, true));
    }

    #[test]
    fn causes() {
        let e = LastExit {
            signal: Some(9),
            ..Default::default()
        };
        assert!(likely_cause(&e, &[]).unwrap().contains("memory"));
        let e = LastExit {
            exit_code: Some(1),
            ..Default::default()
        };
        assert!(likely_cause(&e, &["ModuleNotFoundError: x".into()])
            .unwrap()
            .contains("broken"));
    }
}
