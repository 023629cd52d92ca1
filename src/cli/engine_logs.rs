//! `breadboard engine logs [-f] [-n N]`: the engine log; `-f` follows it across rotation (reopens when the file
//! is replaced or truncated).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use super::Ctx;
use crate::crash;
use crate::error::{CliError, ErrorKind};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written (Ctrl-C to stop)
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    pub lines: usize,
}

pub fn run(ctx: &Ctx, args: &LogsArgs) -> anyhow::Result<u8> {
    let path = ctx.paths.engine_log();
    let token: Option<String> = std::fs::read_to_string(ctx.paths.token_file())
        .ok()
        .map(|t| t.trim().to_owned());
    if !path.exists() && !args.follow {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!("no engine log yet ({})", path.display()),
        )
        .hint("breadboard engine start")
        .into());
    }
    let mut out = std::io::stdout().lock();
    if !args.follow {
        for line in crash::log_tail(&path, args.lines, token.as_deref()) {
            if writeln!(out, "{line}").is_err() {
                return Ok(0);
            }
        }
        let _ = out.flush();
        return Ok(0);
    }
    // The tail and the follow come from one read of one open file, so a line written between printing the tail and
    // starting to follow is neither lost nor shown twice.
    let (mut follower, tail) = Follower::with_tail(path, args.lines);
    for line in tail {
        if writeln!(
            out,
            "{}",
            crash::cap_line(&crash::redact(&line, token.as_deref()))
        )
        .is_err()
        {
            return Ok(0);
        }
    }
    let _ = out.flush();
    let mut token = token;
    loop {
        let (lines, rotated) = follower.poll();
        if rotated {
            // A new instance has a new token.
            if let Ok(t) = std::fs::read_to_string(ctx.paths.token_file()) {
                token = Some(t.trim().to_owned());
            }
        }
        for text in lines {
            if writeln!(
                out,
                "{}",
                crash::cap_line(&crash::redact(&text, token.as_deref()))
            )
            .is_err()
            {
                return Ok(0);
            }
        }
        if out.flush().is_err() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Follows a log file by path across rotation (rename + new file) and truncation.
struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of `file` already read.
    pos: u64,
    ino: Option<u64>,
    /// The start of a line whose newline has not been written yet.
    pending: Vec<u8>,
}

use crash::TAIL_WINDOW;

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
        };
        let mut lines = Vec::new();
        follower.read_available(&mut lines);
        if start > 0 {
            if lines.is_empty() {
                follower.pending.clear(); // one line longer than the window: no whole line to show
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
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.pos += n as u64;
            self.pending.extend_from_slice(&buf);
            while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
        }
    }
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
        crate::cli::supervise::rotate(&log);
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
