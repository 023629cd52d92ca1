//! `breadboard engine logs [-f] [-n N]`: the engine log; `-f` follows it across rotation (reopens when the file
//! is replaced or truncated).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
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
    let token = std::fs::read_to_string(ctx.paths.token_file())
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
    for line in crash::log_tail(&path, args.lines, token.as_deref()) {
        if writeln!(out, "{line}").is_err() {
            return Ok(0);
        }
    }
    let _ = out.flush();
    if !args.follow {
        return Ok(0);
    }
    let mut file = File::open(&path).ok();
    let mut pos = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let mut ino = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map(|m| m.ino());
    let mut pending = Vec::new();
    loop {
        if let Some(f) = file.as_mut() {
            let _ = f.seek(SeekFrom::Start(pos));
            let mut buf = Vec::new();
            if let Ok(n) = f.read_to_end(&mut buf) {
                pos += n as u64;
                pending.extend_from_slice(&buf);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if writeln!(out, "{}", crash::redact(&text, token.as_deref())).is_err() {
                        return Ok(0);
                    }
                }
                let _ = out.flush();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotation: the path now names another file (or this one was truncated): finish, then reopen from 0.
        let meta = std::fs::metadata(&path).ok();
        let replaced = meta.as_ref().map(|m| m.ino()) != ino;
        let truncated = meta.as_ref().is_some_and(|m| m.len() < pos);
        if replaced || truncated {
            file = File::open(&path).ok();
            ino = meta.map(|m| m.ino());
            pos = 0;
        }
    }
}
