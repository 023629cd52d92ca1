//! The engine's output: copied into `logs/engine.log` (rotated when it passes the size cap, five kept) by the
//! detached supervisor, or to the terminal by `engine start --foreground`; the supervisor's own lines go the same way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::fsutil;
use crate::os::sys;

/// Where the engine's output goes.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The log file, rotated when it passes `max_bytes`.
    Log(Arc<Mutex<RotatingLog>>),
    /// The terminal (foreground).
    Stderr,
}

impl Sink {
    pub(crate) fn line(&self, msg: &str) {
        let line = format!(
            "{} breadboard-supervisor[{}]: {msg}\n",
            fsutil::now_rfc3339(),
            sys::getpid()
        );
        self.write(line.as_bytes());
    }
    pub(super) fn write(&self, bytes: &[u8]) {
        match self {
            Sink::Log(log) => {
                if let Ok(mut l) = log.lock() {
                    l.write(bytes);
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(bytes);
            }
        }
    }
}

pub(crate) struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    max_bytes: u64,
}

impl RotatingLog {
    pub(crate) fn open(path: PathBuf) -> RotatingLog {
        let max_bytes = *crate::settings::without_flags(&Default::default())
            .log_max_bytes
            .get()
            .unwrap_or(&crate::settings::DEFAULT_LOG_MAX_BYTES);
        let file = open_log(&path).ok();
        RotatingLog {
            path,
            file,
            max_bytes,
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
            if f.metadata().is_ok_and(|m| m.len() > self.max_bytes) {
                rotate(&self.path);
                self.file = open_log(&self.path).ok();
            }
        }
    }
}

pub(crate) const KEEP_LOGS: usize = 5;

/// `engine.log` -> `.1` -> ... -> `.5` (the oldest is dropped).
pub(crate) fn rotate(path: &std::path::Path) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
    let _ = std::fs::remove_file(name(KEEP_LOGS));
    for i in (1..KEEP_LOGS).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(path, name(1));
}

pub(crate) fn open_log(path: &std::path::Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
