//! The engine log as `engine logs` shows it: its last lines, and following it as it is written, across rotation
//! (a new file under the same name) and truncation. Every shown line has the instance's token redacted and is capped.
//! Reading lives here, beside the rest of what the CLI knows of the instance; writing and rotating is the
//! supervisor's (`supervisor/log.rs`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::crash::{self, TAIL_WINDOW};
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;

/// How often a followed log is looked at again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The last `n` lines of the engine log, redacted and capped; an error (with the command that makes one) when there
/// is no log yet.
pub(crate) fn read_log(paths: &Paths, n: usize) -> anyhow::Result<Vec<String>> {
    let path = paths.engine_log();
    if !path.exists() {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!("no engine log yet ({})", path.display()),
        )
        .hint("breadboard engine start")
        .into());
    }
    Ok(crash::log_tail(&path, n, read_token(paths).as_deref()))
}

/// Follows the engine log: `show` gets its last `n` lines, then every batch written since (possibly none), until it
/// returns false (its reader went away). The log need not exist yet.
pub(crate) fn follow_log(paths: &Paths, n: usize, mut show: impl FnMut(&[String]) -> bool) {
    let mut token = read_token(paths);
    // The tail and the follow come from one read of one open file, so a line written between showing the tail and
    // starting to follow is neither lost nor shown twice.
    let (mut follower, tail) = Follower::with_tail(paths.engine_log(), n);
    if !show(&for_display(tail, token.as_deref())) {
        return;
    }
    loop {
        let (lines, rotated) = follower.poll();
        if rotated {
            // A new instance has a new token.
            if let Some(t) = read_token(paths) {
                token = Some(t);
            }
        }
        if !show(&for_display(lines, token.as_deref())) {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The running (or last) instance's token, which no shown line may carry.
fn read_token(paths: &Paths) -> Option<String> {
    std::fs::read_to_string(paths.token_file())
        .ok()
        .map(|t| t.trim().to_owned())
}

fn for_display(lines: Vec<String>, token: Option<&str>) -> Vec<String> {
    lines
        .iter()
        .map(|l| crash::cap_line(&crash::redact(l, token)))
        .collect()
}

/// Follows a log file by path across rotation (rename + new file) and truncation.
struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of `file` already read.
    pos: u64,
    ino: Option<u64>,
    /// The start of a line whose newline has not been written yet, at most [`PENDING_MAX`] bytes of it.
    pending: Vec<u8>,
    /// Bytes of that line dropped beyond `limit` (a huge line being written costs no more memory).
    dropped: u64,
    /// How much of an unfinished line is kept: the whole tail window for the first read (its lines are shown
    /// whole, then capped for display), [`PENDING_MAX`] while following.
    limit: usize,
}

/// Kept of an unfinished line: under [`crash::MAX_LINE`], so the note of what was dropped fits in a shown line.
const PENDING_MAX: usize = crash::MAX_LINE - 64;

impl Follower {
    /// Opens `path` and reads its last `n` complete lines; following continues from exactly where that read ended.
    fn with_tail(path: PathBuf, n: usize) -> (Follower, Vec<String>) {
        let file = File::open(&path).ok();
        let meta = file.as_ref().and_then(|f| f.metadata().ok());
        // A window that does not start at the file's start begins one byte early, on the previous line's last
        // byte: its first "line" is then either a cut line or empty (the window began exactly at a line start), and
        // is dropped either way.
        let start = meta
            .as_ref()
            .map_or(0, |m| m.len().saturating_sub(TAIL_WINDOW + 1));
        let mut follower = Follower {
            path,
            file,
            pos: start,
            ino: meta.map(|m| m.ino()),
            pending: Vec::new(),
            dropped: 0,
            limit: TAIL_WINDOW as usize + 1,
        };
        let mut lines = Vec::new();
        follower.read_available(&mut lines);
        follower.limit = PENDING_MAX;
        if start > 0 {
            if lines.is_empty() {
                follower.pending.clear(); // one line longer than the window: no whole line to show
                follower.dropped = 0;
            } else {
                lines.remove(0);
            }
        }
        let tail = lines.split_off(lines.len().saturating_sub(n));
        (follower, tail)
    }

    /// The complete lines written since the last poll, and whether the file was rotated. On a rotation the old file
    /// (still open) is read to its end first, so the lines written just before the rotation are not lost.
    fn poll(&mut self) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        let meta = std::fs::metadata(&self.path).ok();
        let replaced = meta.as_ref().map(|m| m.ino()) != self.ino;
        let truncated = !replaced && meta.as_ref().is_some_and(|m| m.len() < self.pos);
        if replaced {
            self.read_available(&mut lines);
            // The old file is complete: a last line without its newline is still a line.
            if !self.pending.is_empty() {
                lines.push(String::from_utf8_lossy(&self.pending).into_owned());
                self.pending.clear();
                self.dropped = 0;
            }
            self.file = File::open(&self.path).ok();
            self.ino = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.ino());
            self.pos = 0;
        } else if truncated {
            self.pos = 0;
            self.pending.clear();
            self.dropped = 0;
        }
        self.read_available(&mut lines);
        (lines, replaced || truncated)
    }

    fn read_available(&mut self, lines: &mut Vec<String>) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        // In chunks, so a huge amount written at once is never all in memory.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.pos += n as u64;
            let mut chunk = &buf[..n];
            while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                keep(
                    &mut self.pending,
                    &mut self.dropped,
                    self.limit,
                    &chunk[..i],
                );
                let mut line = String::from_utf8_lossy(&self.pending).into_owned();
                if self.dropped > 0 {
                    line.push_str(&format!("... [line cut: {} more bytes]", self.dropped));
                }
                lines.push(line);
                self.pending.clear();
                self.dropped = 0;
                chunk = &chunk[i + 1..];
            }
            keep(&mut self.pending, &mut self.dropped, self.limit, chunk);
        }
    }
}

/// Adds `bytes` to the unfinished line `pending`, up to `limit` bytes; the rest is only counted in `dropped`.
fn keep(pending: &mut Vec<u8>, dropped: &mut u64, limit: usize, bytes: &[u8]) {
    let room = limit.saturating_sub(pending.len()).min(bytes.len());
    pending.extend_from_slice(&bytes[..room]);
    *dropped += (bytes.len() - room) as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &std::path::Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_huge_line_being_written_is_held_bounded_and_shown_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        append(&log, "start\n");
        let (mut f, _) = Follower::with_tail(log.clone(), 1);
        append(&log, &"y".repeat(1024 * 1024));
        let (lines, _) = f.poll();
        assert!(lines.is_empty());
        assert!(
            f.pending.len() <= PENDING_MAX,
            "{} bytes held",
            f.pending.len()
        );
        append(&log, "\nnext\n");
        let (lines, _) = f.poll();
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(
            lines[0].len() < crash::MAX_LINE
                && lines[0].ends_with(&format!(
                    "[line cut: {} more bytes]",
                    1024 * 1024 - PENDING_MAX
                )),
            "{}",
            &lines[0][lines[0].len() - 60..]
        );
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn follows_across_rotation_without_losing_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        append(&log, "older\nalready shown\n");
        let (mut f, tail) = Follower::with_tail(log.clone(), 1);
        assert_eq!(tail, ["already shown"]);
        assert_eq!(f.poll(), (vec![], false));
        append(&log, "one\ntwo (partial");
        assert_eq!(f.poll(), (vec!["one".to_owned()], false));
        // Written just before the rotation, between two polls: must still be shown, before the new file's lines.
        append(&log, ")\nlast before rotation\nno newline");
        crate::supervisor::rotate(&log);
        append(&log, "first after rotation\n");
        let (lines, rotated) = f.poll();
        assert!(rotated);
        assert_eq!(
            lines,
            [
                "two (partial)",
                "last before rotation",
                "no newline",
                "first after rotation"
            ]
        );
        append(&log, "more\n");
        assert_eq!(f.poll(), (vec!["more".to_owned()], false));
    }

    #[test]
    fn follows_truncation_and_a_file_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        let (mut f, tail) = Follower::with_tail(log.clone(), 10);
        assert!(tail.is_empty());
        assert_eq!(f.poll(), (vec![], false));
        append(&log, "born\n");
        assert_eq!(f.poll(), (vec!["born".to_owned()], true));
        std::fs::write(&log, "").unwrap();
        append(&log, "x\n");
        assert_eq!(f.poll(), (vec!["x".to_owned()], true));
    }

    #[test]
    fn tail_of_a_huge_log_skips_the_cut_line_and_keeps_a_partial_last_line_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        let filler = "x".repeat(999);
        let mut text = String::new();
        for i in 0..600 {
            text.push_str(&format!("{i:04}{filler}\n"));
        }
        text.push_str("partial");
        append(&log, &text);
        let (mut f, tail) = Follower::with_tail(log.clone(), 3);
        let heads: Vec<&str> = tail.iter().map(|l| &l[..4]).collect();
        assert_eq!(heads, ["0597", "0598", "0599"]);
        let (_, all) = Follower::with_tail(log.clone(), usize::MAX);
        assert!(all.iter().all(|l| l.len() == 1003), "a cut line was shown");
        append(&log, " line\n");
        assert_eq!(f.poll(), (vec!["partial line".to_owned()], false));
    }

    #[test]
    fn a_window_that_starts_exactly_at_a_line_start_keeps_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("engine.log");
        // 1 + 1 + TAIL_WINDOW bytes: the window [len - TAIL_WINDOW, len) begins exactly at line "b...".
        let body = "b".repeat(TAIL_WINDOW as usize - 1);
        append(&log, &format!("a\n{body}\n"));
        let (_, tail) = Follower::with_tail(log.clone(), 5);
        assert_eq!(tail, std::slice::from_ref(&body));
        // One more byte in front: now the window cuts "xa" and only the whole line remains too.
        let log2 = dir.path().join("engine2.log");
        append(&log2, &format!("xa\n{body}\n"));
        assert_eq!(Follower::with_tail(log2, 5).1, [body]);
    }
}
