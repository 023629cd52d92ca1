//! Test harness: the real `breadboard` binary, a temp `BREADBOARD_HOME` per test, and a real PEP 503 index served
//! from `target/fixtures/` on 127.0.0.1 by a small std-thread HTTP server.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_breadboard");

/// Whether the binary under test has the Linux extras (child subreaper, parent-death signal, `/proc` readers); off
/// in the `portable-fallbacks` build, which runs what macOS runs.
pub const LINUX_EXTRAS: bool = !cfg!(feature = "portable-fallbacks");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn target_dir() -> PathBuf {
    repo_root().join("target")
}

/// Builds the fixtures once (the script is idempotent and returns at once when up to date), under a file lock so
/// parallel test processes and benchmarks do not race it.
pub fn fixtures() -> &'static Path {
    static FIXTURES: OnceLock<PathBuf> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let target = target_dir();
        std::fs::create_dir_all(&target).unwrap();
        let lock = File::create(target.join("fixtures.lock")).unwrap();
        lock.lock().unwrap();
        let status = Command::new(repo_root().join("scripts/fixtures"))
            .status()
            .expect("run scripts/fixtures");
        assert!(status.success(), "scripts/fixtures failed");
        let dir = target.join("fixtures");
        assert!(
            dir.join(".stamp").is_file(),
            "scripts/fixtures did not write {}",
            dir.join(".stamp").display()
        );
        dir
    })
}

pub fn wheelhouse() -> PathBuf {
    fixtures().join("wheelhouse")
}

pub fn uv() -> PathBuf {
    let uv = repo_root().join(".venv-dev/bin/uv");
    fixtures(); // builds .venv-dev too
    assert!(
        uv.is_file(),
        "{} is missing; run scripts/dev-env",
        uv.display()
    );
    uv
}

/// A Python 3.11 interpreter (the fixture wheelhouse holds cp311 wheels), as its real executable path.
pub fn python311() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        for candidate in ["python3.11", "python3"] {
            let Ok(out) = Command::new(candidate)
                .args([
                    "-c",
                    "import sys; print(sys.executable if sys.version_info[:2] == (3, 11) else '')",
                ])
                .output()
            else {
                continue;
            };
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
        panic!("the integration tests need Python 3.11 (the fixture wheels are cp311)");
    })
}

/// The index server, shared by all tests of the process. Returns the simple index URL.
pub fn index_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| format!("{}/simple/", serve(fixtures().to_owned(), FIXTURE_PORT)))
        .clone()
}

/// uv keys its wheel cache by index URL: a stable port keeps the shared test cache warm across runs instead of
/// adding a copy of every wheel per run. Falls back to any free port when it is taken (e.g. two runs at once).
const FIXTURE_PORT: u16 = 47653;

/// Serves `root` over HTTP/1.1 with `Connection: close`; directories serve their `index.html`.
pub fn serve(root: PathBuf, preferred_port: u16) -> String {
    let listener = TcpListener::bind(("127.0.0.1", preferred_port))
        .or_else(|_| TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &root);
            });
        }
    });
    format!("http://{addr}")
}

fn handle(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let rel = percent_decode(path.trim_start_matches('/'));
    let mut file = root.join(&rel);
    if rel.split('/').any(|c| c == "..") {
        file = root.join("\0invalid");
    }
    if file.is_dir() {
        file = file.join("index.html");
    }
    let mut out = stream;
    match std::fs::read(&file) {
        Ok(body) => {
            let ctype = if file.extension().is_some_and(|e| e == "html") {
                "text/html"
            } else {
                "application/octet-stream"
            };
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                out.write_all(&body)?;
            }
        }
        Err(_) => {
            out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
    }
    out.flush()
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One test's world: a temp dir holding `home/` (BREADBOARD_HOME) and scratch space.
pub struct TestContext {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
}

impl TestContext {
    pub fn new() -> TestContext {
        let base = target_dir().join("it-tmp");
        std::fs::create_dir_all(&base).unwrap();
        // Under target/ (same filesystem as the shared uv cache) so uv hardlinks instead of copying.
        let dir = tempfile::Builder::new()
            .prefix("t")
            .tempdir_in(base)
            .unwrap();
        let home = dir.path().join("home");
        TestContext { dir, home }
    }

    /// A scrubbed environment: no outside BREADBOARD_* settings, uv from the dev env, shared caches.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("BREADBOARD_") || key.starts_with("UV_") || key.starts_with("PIP_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("BREADBOARD_HOME", &self.home)
            .env("HOME", self.dir.path())
            .env("BREADBOARD_UV", uv())
            .env("BREADBOARD_PYTHON", python311())
            .env("UV_CACHE_DIR", target_dir().join("test-cache/uv"))
            .env("PIP_CACHE_DIR", target_dir().join("test-cache/pip"))
            .env("NO_COLOR", "1")
            // Output that depends on the terminal's width or the locale, or files under the user's XDG dirs, would
            // differ between machines: pinned for every test.
            .env("COLUMNS", "100")
            .env("LC_ALL", "C.UTF-8")
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg/config"))
            .env("XDG_DATA_HOME", self.dir.path().join("xdg/data"))
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg/cache"))
            .env("XDG_STATE_HOME", self.dir.path().join("xdg/state"))
            .env_remove("XDG_RUNTIME_DIR")
            .env("BREADBOARD_LOCK_TIMEOUT", "300")
            .current_dir(self.dir.path());
        cmd
    }

    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::from_std(self.command());
        cmd.args(args).timeout(Duration::from_secs(240));
        cmd
    }

    /// `engine install` from the local index with uv, plus `extra` args.
    pub fn install(&self, extra: &[&str]) -> assert_cmd::assert::Assert {
        let url = index_url();
        let mut args = vec!["engine", "install", "--index-url", url.as_str()];
        args.extend_from_slice(extra);
        self.cmd(&args).assert()
    }

    pub fn engine_dir(&self) -> PathBuf {
        self.home.join("engine")
    }

    pub fn link(&self, name: &str) -> Option<String> {
        let target = std::fs::read_link(self.engine_dir().join(name)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Installed version dirs with and without receipts.
    pub fn version_dirs(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = std::fs::read_dir(self.engine_dir().join("versions"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            e.path().join("receipt.json").is_file(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    pub fn list_json(&self) -> serde_json::Value {
        let out = self
            .cmd(&["engine", "list", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    }

    /// `current` resolves to a complete venv (receipt present) whose engine answers `version --json`.
    pub fn assert_current_complete(&self, version: &str) {
        assert_eq!(self.link("current").as_deref(), Some(version));
        let dir = self.engine_dir().join("current");
        assert!(dir.join("receipt.json").is_file(), "current has no receipt");
        let out = Command::new(dir.join("bin/python"))
            .args(["-m", "breadboard_engine", "version", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["engine_version"], version);
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

pub fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

/// Pids of live processes whose command line mentions `needle` (Linux /proc).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            // Zombies keep their cmdline empty; anything listed here is still running.
            out.push(pid);
        }
    }
    out
}

/// One HTTP/1.1 request (`Connection: close`) to `base` (`http://host:port`) with an optional bearer token and JSON
/// body: (status, body). De-chunks a chunked body; reads until the server closes (an SSE stream of a closed session
/// ends by itself). Panics on I/O errors: the tests only call it where an answer is expected.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use std::io::Read;
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", t.trim()))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_http(&raw).unwrap_or_else(|| panic!("{method} {path}: malformed response {raw:?}"))
}

/// Creates a session over the raw API (`create` is the POST /v1/sessions body) and posts `content` as its input:
/// its id. The engine's own requests, without the client under test.
pub fn session_with_input(base: &str, token: &str, create: &str, content: &str) -> String {
    let (code, body) = http(base, "POST", "/v1/sessions", Some(token), Some(create));
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let input = serde_json::json!({ "content": content }).to_string();
    let (code, body) = http(
        base,
        "POST",
        &format!("/v1/sessions/{id}/input"),
        Some(token),
        Some(&input),
    );
    assert_eq!(code, 202, "{body}");
    id
}

/// Reads an SSE stream (`GET path`, replayed from the start) until an event's data contains `until`, or panics at
/// `timeout`. Returns the `data:` payloads parsed as JSON. For live sessions, whose streams stay open.
pub fn sse_until(
    base: &str,
    path: &str,
    token: &str,
    until: &str,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    use std::io::Read;
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let deadline = Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let (_, body) = parse_http(&raw).unwrap_or_default();
        let events: Vec<serde_json::Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        if events.iter().any(|e| e.to_string().contains(until)) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {until:?} on {path}; got {body}"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("{path}: the stream ended before {until:?}: {body}"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{path}: {e}"),
        }
    }
}

/// Status and body of a raw HTTP/1.1 response (a chunked body de-chunked, a partial last chunk left out).
fn parse_http(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = &raw[split + 4..];
    let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, String::from_utf8_lossy(rest).into_owned()));
    }
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    Some((code, String::from_utf8_lossy(&out).into_owned()))
}

/// A real terminal: `breadboard <args>` in a tmux session on a tmux server of its own (`-L`, named after the
/// session), so no other tmux use can touch it; the server ends with the value.
pub struct Term(String);

impl Term {
    /// Runs `breadboard <args>` in `dir` with `cmd`'s environment, then prints `EXIT=<code>` and keeps the pane.
    pub fn open(cmd: &Command, dir: &Path, name: &str, args: &str) -> Term {
        // The shell's own Ctrl-C is trapped (not ignored: the command must get the default disposition), or it
        // would end with the command and take the pane with it; after the command, a Ctrl-C that comes late only
        // ends one `sleep` of the loop that keeps the pane open.
        let mut text = String::from("#!/bin/sh\ntrap : INT\n");
        for (k, v) in cmd.get_envs() {
            let k = k.to_string_lossy();
            match v {
                Some(v) => text.push_str(&format!("export {k}='{}'\n", v.to_string_lossy())),
                None => text.push_str(&format!("unset {k}\n")),
            }
        }
        text.push_str(&format!(
            "cd '{}'\n'{BIN}' {args}\necho EXIT=$?\nwhile :; do sleep 1; done\n",
            dir.display()
        ));
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let term = Term(format!("bbc{name}{}", std::process::id()));
        let size = ["-x", "200", "-y", "50"];
        let mut new = vec!["new-session", "-d", "-s", term.0.as_str()];
        new.extend(size);
        new.push(path.to_str().unwrap());
        let ok = term.tmux(&new);
        assert!(ok.status.success(), "{ok:?}");
        term
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux")
    }

    /// The pane and its scrollback, wrapped lines joined (trailing spaces kept).
    pub fn text(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-t", &self.0, "-S", "-500"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `cond` holds, or panics after 60 s showing it.
    pub fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            if cond(&text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for_text(&self, needle: &str) {
        self.wait(needle, |t| t.contains(needle));
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.0.as_str()];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }
}

/// The last line with anything on it.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim_end)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
