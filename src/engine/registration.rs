//! `run/engine.json`: the running engine's registration (schema 1), written by the supervisor once it holds the
//! instance lock, 0600, atomically (tmp -> fsync -> rename). A missing file means "no info"; a corrupt one is
//! renamed aside to `engine.json.corrupt-<ts>` with a warning and treated as missing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;

pub(crate) const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Registration {
    pub schema: u32,
    pub instance_id: String,
    /// The supervisor (`breadboard __supervise`): session leader, parent and reaper of the engine.
    pub supervisor_pid: i32,
    pub supervisor_start_ticks: u64,
    /// Session id of everything the engine spawned; `None` in `--foreground` (the terminal's session is not ours).
    pub sid: Option<i32>,
    pub pid: i32,
    pub pid_start_ticks: u64,
    /// Process group of the engine (it leads its own).
    pub pgid: i32,
    pub boot_id: String,
    pub uid: u32,
    pub host: String,
    pub port: u16,
    /// `https://...` when the engine serves TLS (`tls`).
    pub url: String,
    /// The certificate and key files the engine serves TLS with; its certificate is the one its clients here trust.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    pub token_file: PathBuf,
    /// The version this CLI pinned (the current venv's receipt), `None` for an engine command override.
    pub engine_version: Option<String>,
    pub protocol_version: String,
    pub venv: Option<PathBuf>,
    /// The engine command (argv), for messages; never holds the token.
    pub command: Vec<String>,
    pub log_path: PathBuf,
    pub ray_address: Option<String>,
    pub ray_start: Option<String>,
    pub foreground: bool,
    pub cli_version: String,
    pub started_at: String,
    pub started_at_unix: f64,
    pub ready_at: Option<String>,
    pub stop_requested_at: Option<String>,
    /// The supervisor's restart policy (config `engine.restart`): `no` or `on-failure`.
    #[serde(default)]
    pub restart_policy: Option<String>,
    /// Automatic restarts made so far by the `on-failure` policy (the engine pid changes at each).
    #[serde(default)]
    pub restarts: u32,
    /// Set while the supervisor waits (backoff) to restart a crashed engine.
    #[serde(default)]
    pub restart_pending: Option<RestartPending>,
}

/// `engine start --ssl-certfile/--ssl-keyfile` (absolute paths).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

/// The supervisor is waiting to restart a crashed engine.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RestartPending {
    /// When the restart is due (RFC 3339, and unix seconds).
    pub at: String,
    pub at_unix: f64,
    /// How the engine ended ("exit code 1", "killed by SIGKILL (signal 9)").
    pub after: String,
}

/// A registration is a few hundred bytes; anything much larger is not one (and is never read into memory whole).
const MAX_BYTES: u64 = 1024 * 1024;

/// Why the registration file could not be used.
enum Unreadable {
    Missing,
    Bad(String),
}

/// The registration file's content, checked: a regular file of at most [`MAX_BYTES`], UTF-8, JSON of schema 1 with
/// a supervisor pid. Every other state (a directory, a symlink loop, permission denied, random bytes, another JSON
/// shape, a huge file) is `Bad`, which callers treat exactly like a corrupt file.
fn load(path: &Path) -> Result<Registration, Unreadable> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| Unreadable::Bad(why);
    // Non-blocking open: a FIFO put there would otherwise block the open (and every command) until a writer came.
    // A regular file ignores the flag.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unreadable::Missing),
        Err(e) => return Err(bad(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    if meta.len() > MAX_BYTES {
        return Err(bad(format!(
            "{} bytes, far more than a registration",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(bad("it is far larger than a registration".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
    match serde_json::from_str::<Registration>(&text) {
        Ok(r) if r.schema == SCHEMA && r.supervisor_pid > 0 => Ok(r),
        Ok(r) => Err(bad(format!("unsupported schema {} or no pid", r.schema))),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Reads the registration: `Ok(None)` when absent, or when unreadable in any way (then it is moved aside and a
/// warning printed), so a damaged file can never keep a running engine from being stopped or restarted.
pub(crate) fn read(
    paths: &Paths,
    printer: Option<&Printer>,
) -> anyhow::Result<Option<Registration>> {
    let path = paths.registration();
    match load(&path) {
        Ok(r) => Ok(Some(r)),
        Err(Unreadable::Missing) => Ok(None),
        Err(Unreadable::Bad(why)) => {
            set_aside(&path, &why, printer);
            Ok(None)
        }
    }
}

/// Reads without moving a corrupt file aside (for read-only commands racing a writer, e.g. `status`).
pub(crate) fn peek(paths: &Paths) -> Option<Registration> {
    load(&paths.registration()).ok()
}

/// The registration a live supervisor was started with (its spec, in its environment), for when the file was lost
/// or corrupted: what a restart should keep (port, Ray address). `pid` must be a verified supervisor of this home.
pub(crate) fn from_supervisor(pid: crate::os::sys::Pid) -> Option<Registration> {
    let json = crate::os::procfs::environ_var(pid, crate::supervisor::SPEC_ENV)?;
    serde_json::from_str::<Registration>(&json).ok()
}

fn set_aside(path: &Path, why: &str, printer: Option<&Printer>) {
    let aside = path.with_file_name(format!("engine.json.corrupt-{}", fsutil::unix_now() as u64));
    let moved = std::fs::rename(path, &aside);
    if let Some(p) = printer {
        match moved {
            Ok(()) => p.warn(&format!(
                "{} is unreadable ({why}); moved it to {} and ignored it",
                path.display(),
                aside.display()
            )),
            Err(e) => p.warn(&format!(
                "{} is unreadable ({why}) and could not be moved aside ({e}); ignoring it",
                path.display()
            )),
        }
    }
}

pub(crate) fn write(paths: &Paths, reg: &Registration) -> anyhow::Result<()> {
    paths.ensure_run_dir()?;
    fsutil::write_private(
        &paths.registration(),
        serde_json::to_string_pretty(reg)?.as_bytes(),
    )
}

pub(crate) fn remove(paths: &Paths) -> anyhow::Result<()> {
    fsutil::remove_file_if_exists(&paths.registration())
}

/// `run/stop-requested`: the id of the instance whose stop was asked for. `engine stop` writes it before any signal,
/// next to the registration's `stop_requested_at`; only the CLI writes it, so a registration the supervisor rewrites
/// (at an automatic restart) can never lose the request.
pub(crate) fn stop_intent_path(paths: &Paths) -> PathBuf {
    paths.run_dir().join("stop-requested")
}

pub(crate) fn request_stop(paths: &Paths, instance_id: &str) -> anyhow::Result<()> {
    paths.ensure_run_dir()?;
    fsutil::write_private(&stop_intent_path(paths), instance_id.as_bytes())
}

/// Whether a stop of `instance_id` was asked for (the intent file or the registration's marker).
pub(crate) fn stop_requested(paths: &Paths, instance_id: &str) -> bool {
    std::fs::read_to_string(stop_intent_path(paths)).is_ok_and(|s| s.trim() == instance_id)
        || peek(paths)
            .is_some_and(|r| r.instance_id == instance_id && r.stop_requested_at.is_some())
}

/// Removes the stop intent of `instance_id` (another instance's is left alone).
pub(crate) fn clear_stop_request(paths: &Paths, instance_id: &str) {
    let path = stop_intent_path(paths);
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == instance_id) {
        let _ = fsutil::remove_file_if_exists(&path);
    }
}

/// Reads the token of a registration (empty when the file is gone).
pub(crate) fn token(reg: &Registration) -> Option<String> {
    std::fs::read_to_string(&reg.token_file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}
