//! `breadboard engine doctor`: every way the setup can be broken, found and explained, each with the command that
//! fixes it. Anchors: flutter doctor (sections, [✓] [!] [✗], a summary), brew doctor (the fix on every finding),
//! rustup check (exit codes scripts rely on). Checks never change anything; repairs are separate and opt-in (`--fix`).
//!
//! Cheap checks run first and every probe that runs a process has a deadline, so a hung interpreter or engine can
//! never hang doctor. A broken setup (corrupt config, dangling venv) is a finding, never a crash of doctor itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::compat;
use crate::config::Config;
use crate::paths::Paths;
use crate::venv::installer;
use crate::venv::python;
use crate::venv::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Warn,
    Error,
}

/// A safe repair `--fix` may perform for a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Repair {
    /// chmod 700 a directory, 600 a file.
    ChmodPrivate(PathBuf),
    /// chmod go-rwx each path (owner bits kept: Ray's executables stay executable).
    MakePrivate(Vec<PathBuf>),
    CleanLeftovers,
    /// Clean up after a dead engine: its registration (`instance_id`), or a registration that does not parse
    /// (`None`). Re-checked under the control lock before anything is removed: an engine may have started since.
    RemoveStale {
        instance_id: Option<String>,
    },
    RebuildVenv {
        version: String,
    },
    /// SIGKILL the processes of an earlier engine of this home (found by their engine mark again, under the lock).
    EndLeftovers,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub id: &'static str,
    pub status: Status,
    pub title: String,
    pub detail: String,
    pub fix: Option<String>,
    #[serde(skip)]
    pub section: &'static str,
    #[serde(skip)]
    pub repair: Option<Repair>,
}

impl Finding {
    pub(crate) fn ok(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            id,
            status: Status::Ok,
            title: title.into(),
            detail: detail.into(),
            fix: None,
            section,
            repair: None,
        }
    }

    pub(crate) fn warn(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Warn,
            ..Finding::ok(section, id, title, detail)
        }
    }

    pub(crate) fn error(
        section: &'static str,
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Error,
            ..Finding::ok(section, id, title, detail)
        }
    }

    pub(crate) fn fix(mut self, command: impl Into<String>) -> Self {
        self.fix = Some(command.into());
        self
    }

    pub(crate) fn repair(mut self, repair: Repair) -> Self {
        self.repair = Some(repair);
        self
    }
}

/// Deadlines for the probes that run processes.
pub(crate) const QUICK: Duration = Duration::from_secs(5);
pub(crate) const SLOW: Duration = Duration::from_secs(30);

/// Runs `cmd` with stdin closed and output captured, killing it at the deadline.
pub(crate) fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run it: {e}"))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe while we wait.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it did not finish within {} s", deadline.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("could not wait for it: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Everything the checks look at, gathered once.
pub(crate) struct Setup<'a> {
    pub paths: &'a Paths,
    /// `Err` carries the parse error (with file, line and column).
    pub config: Result<Config, String>,
}

const SECTIONS: [&str; 7] = [
    "CLI",
    "Home",
    "Config",
    "Python",
    "Engine venv",
    "Ray",
    "Engine",
];

/// Every check, grouped by section. The instance is probed first (milliseconds): when the engine runs and reports
/// its Ray, that answer replaces importing Ray in a second process. The slow probes (each a Python process with a
/// deadline) run in parallel, so a healthy setup is checked in well under a second.
pub(crate) fn all_checks(setup: &Setup) -> Vec<Finding> {
    let runtime = runtime_checks(setup);
    let engine_has_ray = runtime
        .iter()
        .any(|f| f.id == "ray.engine" && f.status == Status::Ok);
    let mut out = vec![cli_version(setup.paths)];
    out.extend(home_checks(setup.paths));
    out.push(config_check(setup));
    out.push(uv_check(setup));
    let store = Store::new(setup.paths);
    let venv = venv_checks(setup.paths, &store);
    let usable = venv
        .iter()
        .any(|f| f.id == "venv.current" && f.status == Status::Ok);
    out.extend(venv);
    if usable {
        std::thread::scope(|scope| {
            let identity = scope.spawn(|| engine_identity_checks(&store));
            let deps = scope.spawn(|| store.current().map(|v| pip_check(&store, &v)));
            let ray = scope.spawn(|| ray_checks(setup, &store, !engine_has_ray));
            out.extend(identity.join().unwrap_or_default());
            out.extend(deps.join().ok().flatten());
            out.extend(ray.join().unwrap_or_default());
        });
    }
    out.extend(runtime);
    let rank = |f: &Finding| {
        SECTIONS
            .iter()
            .position(|s| *s == f.section)
            .unwrap_or(SECTIONS.len())
    };
    out.sort_by_key(rank); // stable: keeps each section's own order
    out
}

/// This binary and how it was installed: the same detection `breadboard upgrade` uses, so the two never disagree.
fn cli_version(paths: &Paths) -> Finding {
    use crate::selfupdate::install_receipt::{self, Foreign, InstallMethod};
    let Ok(exe) = std::env::current_exe() else {
        return Finding::warn(
            "CLI",
            "cli.version",
            format!("breadboard {}", crate::build_info::VERSION),
            "the path of this executable is unknown",
        );
    };
    let title = format!("breadboard {}", crate::build_info::VERSION);
    let range = format!(
        "engine range {}, protocol {}",
        compat::SUPPORTED_ENGINE,
        compat::PROTOCOL_VERSION
    );
    match install_receipt::detect(paths, &exe) {
        InstallMethod::PackageManager { manager, .. } => Finding::ok(
            "CLI",
            "cli.version",
            title,
            format!(
                "{} (installed with {manager}: upgrade with `{}`); {range}",
                exe.display(),
                install_receipt::package_manager_command(&manager, None)
            ),
        ),
        InstallMethod::SelfManaged { .. } => Finding::ok(
            "CLI",
            "cli.version",
            title,
            format!(
                "{} (installed by install.sh: `breadboard upgrade` updates it); {range}",
                exe.display()
            ),
        ),
        // A second copy shadowing the installed one is the classic "upgrade did nothing" trap.
        InstallMethod::Foreign {
            why: Foreign::OtherCopy { installed, .. },
            ..
        } if installed.exists() => Finding::warn(
            "CLI",
            "cli.version",
            format!("{title} is not the copy install.sh manages"),
            format!(
                "this is {}, install.sh installed {}; `breadboard upgrade` updates only that one",
                exe.display(),
                installed.display()
            ),
        )
        .fix(format!(
            "{} --version   # and put its directory first on PATH",
            installed.display()
        )),
        InstallMethod::Foreign { .. } => Finding::ok(
            "CLI",
            "cli.version",
            title,
            format!(
                "{} (installed by hand or by cargo: upgrade it the same way); {range}",
                exe.display()
            ),
        ),
    }
}

fn home_checks(paths: &Paths) -> Vec<Finding> {
    let home = &paths.home;
    let mut out = Vec::new();
    if !home.exists() {
        out.push(
            Finding::warn(
                "Home",
                "home.dirs",
                "BREADBOARD_HOME does not exist yet",
                home.display().to_string(),
            )
            .fix("breadboard engine install"),
        );
        return out;
    }
    if !home.is_dir() {
        let e = crate::paths::home_not_a_dir(home);
        let mut f = Finding::error(
            "Home",
            "home.dirs",
            e.message.clone(),
            home.display().to_string(),
        );
        if let Some(h) = e.hint {
            f = f.fix(h);
        }
        out.push(f);
        return out;
    }
    let probe = home.join(format!(".doctor-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            out.push(Finding::ok(
                "Home",
                "home.dirs",
                "BREADBOARD_HOME is writable",
                home.display().to_string(),
            ));
        }
        Err(e) => out.push(
            Finding::error(
                "Home",
                "home.dirs",
                "BREADBOARD_HOME is not writable",
                format!("{}: {e}", home.display()),
            )
            .fix(crate::error::io_hint(&e).map_or_else(
                || format!("chown -R \"$(id -un)\" {}", home.display()),
                str::to_owned,
            )),
        ),
    }
    let run = paths.run_dir();
    if let Ok(meta) = std::fs::metadata(&run) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        let me = crate::sys::getuid();
        if meta.uid() != me {
            // Another user's run dir: its locks and token are not ours to trust (e.g. a home made by `sudo`).
            out.push(
                Finding::error(
                    "Home",
                    "home.run_dir",
                    "the run directory belongs to another user",
                    format!(
                        "{} is owned by uid {}, and you are uid {me}",
                        run.display(),
                        meta.uid()
                    ),
                )
                .fix(format!(
                    "sudo chown -R \"$(id -un)\" {}",
                    paths.home.display()
                )),
            );
        } else if mode & 0o077 != 0 {
            out.push(
                Finding::error(
                    "Home",
                    "home.run_dir",
                    "the run directory is readable by others",
                    format!(
                        "{} has mode {mode:o}; it holds the engine's token (want 700)",
                        run.display()
                    ),
                )
                .fix(format!("chmod 700 {}", run.display()))
                .repair(Repair::ChmodPrivate(run.clone())),
            );
        } else {
            out.push(Finding::ok(
                "Home",
                "home.run_dir",
                "the run directory is private",
                format!("{} (700)", run.display()),
            ));
        }
    }
    out.push(privacy_check(paths));
    out.push(index_check(paths));
    out.push(filesystem_check(home));
    out.push(disk_check(home));
    out
}

/// The session index is a cache of the event logs: the engine sets an unreadable one aside and rebuilds it when it
/// starts, so what doctor finds here is a warning, never data loss.
fn index_check(paths: &Paths) -> Finding {
    let data = paths.data_dir();
    let state = crate::session_index::inspect(&data);
    let index = data.join(crate::session_index::INDEX_FILE);
    if let Some(why) = state.unreadable {
        return Finding::warn(
            "Home",
            "data.index",
            "the session index is unreadable",
            format!(
                "{} {why}; the engine sets it aside and rebuilds it from the session logs when it starts (no \
                 session is lost, but rebuilt ones come back without their metadata)",
                index.display()
            ),
        )
        .fix("breadboard engine restart");
    }
    if let Some(newest) = state.set_aside.last() {
        return Finding::warn(
            "Home",
            "data.index",
            "the engine rebuilt an unreadable session index",
            format!(
                "{} earlier index(es) kept, the newest at {}; the sessions were rebuilt from their logs",
                state.set_aside.len(),
                newest.display()
            ),
        )
        .fix(format!(
            "rm {}/{}.corrupt-*   # once you no longer need them",
            data.display(),
            crate::session_index::INDEX_FILE
        ));
    }
    Finding::ok(
        "Home",
        "data.index",
        "the session index is readable",
        index.display().to_string(),
    )
}

/// At most this many entries are looked at under `data/` (Ray's temp dir can hold many): enough for every file a
/// home normally holds, and a bound on doctor's time.
const PRIVACY_SCAN_LIMIT: usize = 20_000;

/// Paths under the home that hold user data or runtime sockets and that other users can actually reach and read,
/// write or traverse: `data/` with everything in it (the session index and its `-wal`/`-shm`, each session's
/// `events.jsonl`, Ray's temp dir and sockets), `logs/` and its files, `run/`'s files (the run directory itself, the
/// token and the registration have their own findings), and config.toml when an index URL in it carries credentials.
/// A directory others cannot traverse closes everything below it, so the walk stops there: Ray makes its own session
/// directories 0777 inside the engine's private `data/ray`, and an old 0644 file in a 0700 `data/` is unreachable.
/// The home itself counts only when others can write to it (they could swap `data/` or `run/`): an open but
/// read-only home shows names, nothing private. Symlinks are not followed. Returns the too-open paths with their
/// modes, and how many entries were looked at.
pub(crate) fn too_open(paths: &Paths) -> (Vec<(PathBuf, u32)>, usize) {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut seen = 0usize;
    // The entry's metadata when it is a directory others can traverse (so what is below it is reachable too).
    let look = |path: &Path, open: &mut Vec<(PathBuf, u32)>, seen: &mut usize| -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        *seen += 1;
        if meta.file_type().is_symlink() {
            return false;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            open.push((path.to_owned(), mode));
        }
        meta.is_dir() && mode & 0o011 != 0
    };
    let Ok(home) = std::fs::symlink_metadata(&paths.home) else {
        return (open, seen);
    };
    seen += 1;
    let home_mode = home.permissions().mode() & 0o777;
    if home_mode & 0o022 != 0 {
        open.push((paths.home.clone(), home_mode));
    }
    if home_mode & 0o011 == 0 {
        return (open, seen);
    }
    if config_has_credentials(&paths.config_file()) {
        look(&paths.config_file(), &mut open, &mut seen);
    }
    let skip = [paths.token_file(), paths.registration()];
    for (dir, recurse) in [
        (paths.data_dir(), true),
        (paths.logs_dir(), false),
        (paths.run_dir(), false),
    ] {
        let reachable = if dir == paths.run_dir() {
            std::fs::symlink_metadata(&dir).is_ok_and(|m| {
                m.is_dir() && !m.file_type().is_symlink() && m.permissions().mode() & 0o011 != 0
            })
        } else {
            look(&dir, &mut open, &mut seen)
        };
        if !reachable {
            continue;
        }
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                if seen >= PRIVACY_SCAN_LIMIT {
                    return (open, seen);
                }
                let path = entry.path();
                if skip.contains(&path) {
                    continue;
                }
                if look(&path, &mut open, &mut seen) && recurse {
                    stack.push(path);
                }
            }
        }
    }
    (open, seen)
}

/// A URL with a user part (`https://user:token@host/...`): config.toml then holds a secret.
fn config_has_credentials(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.split("://").skip(1).any(|rest| {
            let authority = rest.split(['/', '"', '\'', ' ']).next().unwrap_or_default();
            authority.contains('@')
        })
    })
}

fn privacy_check(paths: &Paths) -> Finding {
    let (open, seen) = too_open(paths);
    if open.is_empty() {
        return Finding::ok(
            "Home",
            "home.private",
            "session data, logs and runtime files are private",
            format!(
                "{} entries under {} checked{}",
                seen,
                paths.home.display(),
                if seen >= PRIVACY_SCAN_LIMIT {
                    " (the first ones only)"
                } else {
                    ""
                }
            ),
        );
    }
    const SHOWN: usize = 8;
    let mut listed: Vec<String> = open
        .iter()
        .take(SHOWN)
        .map(|(p, mode)| format!("{} ({mode:o})", p.display()))
        .collect();
    if open.len() > SHOWN {
        listed.push(format!("and {} more", open.len() - SHOWN));
    }
    Finding::error(
        "Home",
        "home.private",
        "session data or runtime files are open to other users",
        format!(
            "other local users can read or change them (prompts, session history, Ray's sockets): {}",
            listed.join(", ")
        ),
    )
    .fix(format!(
        "breadboard engine doctor --fix   # or: chmod go-w {} && chmod -R go-rwx {} {} {}",
        paths.home.display(),
        paths.data_dir().display(),
        paths.logs_dir().display(),
        paths.run_dir().display()
    ))
    .repair(Repair::MakePrivate(open.into_iter().map(|(p, _)| p).collect()))
}

/// Network filesystems, by the names `/proc/mounts` and `statfs` give them.
const NETWORK_FILESYSTEMS: [&str; 8] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "9p",
    "webdav",
];

/// Locks need a local filesystem: flock over NFS or SMB is unreliable.
fn filesystem_check(path: &Path) -> Finding {
    let Some((fstype, point)) = filesystem_of(path) else {
        return Finding::ok(
            "Home",
            "home.local_fs",
            "filesystem not identified",
            "neither the mount table nor statfs named it",
        );
    };
    let at = point
        .as_ref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    if NETWORK_FILESYSTEMS.contains(&fstype.as_str()) {
        return Finding::warn(
            "Home",
            "home.local_fs",
            "BREADBOARD_HOME is on a network filesystem",
            format!(
                "{} is on {fstype}{at}; locks may not work there",
                path.display()
            ),
        )
        .fix("export BREADBOARD_HOME=/a/local/dir   # e.g. under /var/tmp or a local disk");
    }
    Finding::ok(
        "Home",
        "home.local_fs",
        "on a local filesystem",
        match &point {
            Some(p) => format!("{fstype} at {p}"),
            None => fstype,
        },
    )
}

/// The filesystem type holding `path` and, from Linux's mount table, its mount point; elsewhere (macOS, the
/// portable build) `statfs` gives the type alone.
fn filesystem_of(path: &Path) -> Option<(String, Option<String>)> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    #[cfg(linux_extras)]
    {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mount = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
                Some((point.replace("\\040", " "), fstype.to_owned()))
            })
            .filter(|(point, _)| canonical.starts_with(point))
            .max_by_key(|(point, _)| point.len());
        if let Some((point, fstype)) = mount {
            return Some((fstype, Some(point)));
        }
    }
    crate::sys::filesystem_type(&canonical).map(|t| (t, None))
}

fn disk_check(path: &Path) -> Finding {
    let mut cmd = Command::new("df");
    cmd.args(["-Pk"]).arg(path);
    let avail_kib = run_with_deadline(cmd, QUICK).ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<u64>().ok())
            })
    });
    let Some(kib) = avail_kib else {
        return Finding::ok(
            "Home",
            "home.disk",
            "free disk space unknown",
            "`df` gave no answer",
        );
    };
    let mib = kib / 1024;
    let detail = format!("{mib} MiB free on the filesystem of {}", path.display());
    // An engine venv with Ray is about 400 MB; an upgrade builds a second one beside the first.
    if mib < 200 {
        Finding::error("Home", "home.disk", "almost no free disk space", detail)
            .fix("free some space, then: breadboard engine doctor")
    } else if mib < 1024 {
        Finding::warn(
            "Home",
            "home.disk",
            "low free disk space",
            format!("{detail}; an engine upgrade needs about 500 MiB"),
        )
        .fix("free some space before `breadboard engine upgrade`")
    } else {
        Finding::ok("Home", "home.disk", "enough free disk space", detail)
    }
}

/// The settings' values, checked by the same functions the commands use: a value they refuse is an error here
/// rather than a surprise at the next `start` or `install`.
fn invalid_values(config: &Config) -> Vec<(String, Option<String>)> {
    let errors = [
        crate::config::resolve_installer(None, config).err(),
        crate::engine::configured_port(config).err(),
        crate::engine::protocol_mode(None, config).err(),
        crate::engine::restart_policy(config).err(),
    ];
    errors
        .into_iter()
        .flatten()
        .map(|e| match e.downcast_ref::<crate::error::CliError>() {
            Some(ce) => (ce.message.clone(), ce.hint.clone()),
            None => (format!("{e:#}"), None),
        })
        .collect()
}

fn config_check(setup: &Setup) -> Finding {
    let file = setup.paths.config_file();
    let invalid = setup
        .config
        .as_ref()
        .map(invalid_values)
        .unwrap_or_default();
    match &setup.config {
        Ok(_) if !invalid.is_empty() => {
            let messages: Vec<&str> = invalid.iter().map(|(m, _)| m.as_str()).collect();
            // The commands' own hints, one per value (they name the setting, in config.toml or the environment).
            let fixes: Vec<String> = invalid
                .iter()
                .map(|(m, h)| h.clone().unwrap_or_else(|| format!("fix: {m}")))
                .collect();
            Finding::error(
                "Config",
                "config.parse",
                "settings hold values the commands refuse",
                messages.join("; "),
            )
            .fix(fixes.join("; "))
        }
        Ok(config) => {
            let unknown = config.unknown_keys();
            if unknown.is_empty() {
                let detail = if file.exists() {
                    file.display().to_string()
                } else {
                    "no config.toml (defaults)".into()
                };
                Finding::ok("Config", "config.parse", "config.toml is valid", detail)
            } else {
                Finding::warn(
                    "Config",
                    "config.parse",
                    "config.toml has unknown keys (ignored)",
                    format!("{}: {}", file.display(), unknown.join(", ")),
                )
                .fix(format!(
                    "remove or fix those keys in {} (see docs/cli.md)",
                    file.display()
                ))
            }
        }
        Err(why) => Finding::error(
            "Config",
            "config.parse",
            "config.toml does not parse",
            why.clone(),
        )
        .fix(format!(
            "fix the file, or move it aside to start from defaults: mv {0} {0}.bak",
            file.display()
        )),
    }
}

fn uv_check(setup: &Setup) -> Finding {
    if let Some(uv) = installer::find_uv() {
        return Finding::ok(
            "Python",
            "tools.uv",
            "uv is available",
            uv.display().to_string(),
        );
    }
    let pinned = crate::venv::uv::uv_path(&setup.paths.home);
    if pinned.is_file() {
        return Finding::ok(
            "Python",
            "tools.uv",
            "uv is available (the pinned one engine install set up)",
            pinned.display().to_string(),
        );
    }
    // The next install sets up the pinned uv by itself; only a configured pip keeps installs slow.
    let configured = crate::env_vars::get(crate::env_vars::BREADBOARD_INSTALLER).or_else(|| {
        setup
            .config
            .as_ref()
            .ok()
            .and_then(|c| c.engine.installer.clone())
    });
    let pip = configured.as_deref() == Some("pip");
    if pip {
        return Finding::warn(
            "Python",
            "tools.uv",
            "installs use pip (configured), much slower than uv",
            "[engine] installer or BREADBOARD_INSTALLER says pip",
        )
        .fix("breadboard engine install --installer uv   # sets up a pinned uv if none is found");
    }
    Finding::ok(
        "Python",
        "tools.uv",
        format!(
            "no uv found: the next engine install sets up uv {}",
            crate::venv::uv::UV_VERSION
        ),
        "looked in BREADBOARD_UV, PATH and the home's tools/",
    )
}

fn venv_checks(paths: &Paths, store: &Store) -> Vec<Finding> {
    let mut out = Vec::new();
    let leftovers: Vec<String> = store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.complete)
        .map(|v| v.version)
        .collect();
    if !leftovers.is_empty() {
        out.push(
            Finding::warn(
                "Engine venv",
                "venv.leftovers",
                "half-installed engine versions are left over",
                format!(
                    "{} under {} (an install was interrupted)",
                    leftovers.join(", "),
                    paths.versions_dir().display()
                ),
            )
            .fix("breadboard engine doctor --fix")
            .repair(Repair::CleanLeftovers),
        );
    }
    let Some(version) = store.current() else {
        out.push(
            Finding::error(
                "Engine venv",
                "venv.current",
                "no engine is installed",
                paths.current_link().display().to_string(),
            )
            .fix("breadboard engine install"),
        );
        return out;
    };
    if !store.is_complete(&version) {
        out.push(
            Finding::error(
                "Engine venv",
                "venv.current",
                format!("the current engine {version} has no receipt"),
                format!("{} is incomplete", store.dir(&version).display()),
            )
            .fix(format!(
                "breadboard engine install --force --version {version}"
            ))
            .repair(Repair::RebuildVenv { version }),
        );
        return out;
    }
    let receipt = match store.read_receipt(&version) {
        Ok(receipt) => receipt,
        Err(e) => {
            out.push(
                Finding::error(
                    "Engine venv",
                    "venv.current",
                    format!("the engine {version} receipt is corrupt"),
                    format!("{e:#}"),
                )
                .fix(format!(
                    "breadboard engine install --force --version {version}"
                ))
                .repair(Repair::RebuildVenv { version }),
            );
            return out;
        }
    };
    if let Err(why) = store.health(&version) {
        out.push(
            Finding::error(
                "Engine venv",
                "venv.current",
                format!("the engine {version} venv is broken"),
                why,
            )
            .fix(format!(
                "breadboard engine install --force --version {version}"
            ))
            .repair(Repair::RebuildVenv { version }),
        );
        return out;
    }
    out.push(Finding::ok(
        "Engine venv",
        "venv.current",
        format!("engine {version} is installed"),
        store.dir(&version).display().to_string(),
    ));
    if let Some(receipt) = receipt {
        out.push(base_python_check(
            &receipt.python.path,
            &receipt.python.version,
            &version,
        ));
    }
    out
}

fn base_python_check(path: &Path, pinned: &str, version: &str) -> Finding {
    let rebuild = format!("breadboard engine install --force --version {version}");
    if std::fs::symlink_metadata(path).is_ok() && std::fs::metadata(path).is_err() {
        return Finding::error(
            "Python",
            "python.interpreter",
            "the engine's base Python is a dangling link",
            format!(
                "{} points nowhere; was that Python removed?",
                path.display()
            ),
        )
        .fix(format!("{rebuild} --python /path/to/python3"));
    }
    match python::query(path) {
        Ok(found) => {
            let in_range =
                python::parse_minor(&found.version).is_some_and(|v| v >= python::MIN_PYTHON);
            if !in_range {
                Finding::error(
                    "Python",
                    "python.interpreter",
                    format!("Python {} is too old", found.version),
                    format!("{} (need 3.10 or newer)", path.display()),
                )
                .fix(format!("{rebuild} --python /path/to/python3.12"))
            } else if found.version != pinned {
                Finding::ok(
                    "Python",
                    "python.interpreter",
                    format!("Python {} (installed with {pinned})", found.version),
                    format!(
                        "{}: a patch upgrade, the venv keeps working",
                        path.display()
                    ),
                )
            } else {
                Finding::ok(
                    "Python",
                    "python.interpreter",
                    format!("Python {}", found.version),
                    path.display().to_string(),
                )
            }
        }
        Err(why) => Finding::error(
            "Python",
            "python.interpreter",
            "the engine's base Python does not run",
            format!("{}: {why}", path.display()),
        )
        .fix(format!("{rebuild} --python /path/to/python3")),
    }
}

fn venv_python(store: &Store, version: &str) -> PathBuf {
    store.dir(version).join("bin").join("python")
}

fn engine_identity_checks(store: &Store) -> Vec<Finding> {
    let Some(version) = store.current() else {
        return Vec::new();
    };
    let python = venv_python(store, &version);
    let rebuild = format!("breadboard engine install --force --version {version}");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "breadboard_engine", "version", "--json"]);
    // Every way the venv fails to answer has the same cure: rebuild it from its receipt.
    let broken = |title: &str, detail: String| {
        Finding::error("Engine venv", "venv.engine_version", title, detail)
            .fix(rebuild.clone())
            .repair(Repair::RebuildVenv {
                version: version.clone(),
            })
    };
    let finding = match run_with_deadline(cmd, SLOW) {
        Ok(output) if output.status.success() => {
            match serde_json::from_slice::<installer::EngineIdentity>(&output.stdout) {
                Ok(id)
                    if compat::parse_engine_version(&id.engine_version)
                        != compat::parse_engine_version(&version) =>
                {
                    broken(
                        "the installed engine is not the pinned version",
                        format!(
                            "the venv holds {} but its receipt pins {version}",
                            id.engine_version
                        ),
                    )
                }
                Ok(id) if !compat::protocol_compatible(&id.protocol_version) => Finding::error(
                    "Engine venv",
                    "venv.protocol",
                    format!("engine {version} speaks protocol {}", id.protocol_version),
                    format!("this CLI speaks {}", compat::PROTOCOL_VERSION),
                )
                .fix("breadboard engine install   # the newest engine this CLI supports"),
                Ok(id) => Finding::ok(
                    "Engine venv",
                    "venv.engine_version",
                    format!(
                        "breadboard-engine {} runs, protocol {}",
                        id.engine_version, id.protocol_version
                    ),
                    python.display().to_string(),
                ),
                Err(e) => broken(
                    "the engine's version document does not parse",
                    e.to_string(),
                ),
            }
        }
        Ok(output) => broken(
            "the engine does not start in its venv",
            format!(
                "`python -m breadboard_engine version` exited with {}: {}",
                output.status,
                first_line(&output.stderr)
            ),
        ),
        Err(why) => broken("the engine's Python does not run", why),
    };
    vec![finding]
}

/// `pip check` of the venv's dependencies. uv-built venvs have no pip, so uv does it there.
fn pip_check(store: &Store, version: &str) -> Finding {
    let python = venv_python(store, version);
    // pip check reads only metadata: a package deleted with its dist-info left behind passes it, and then the
    // engine fails to import. Looking the engine's modules up (without importing them) costs one Python start.
    if let Some(missing) = missing_modules(&python) {
        return Finding::error(
            "Engine venv",
            "venv.pip_check",
            format!("the venv is missing modules the engine imports: {missing}"),
            "their package metadata may still be there, so `pip check` alone would not see it",
        )
        .fix(format!(
            "breadboard engine install --force --version {version}"
        ))
        .repair(Repair::RebuildVenv {
            version: version.to_owned(),
        });
    }
    // uv's check takes milliseconds where pip's takes over a second; uv-built venvs have no pip at all.
    let cmd = if let Some(uv) = installer::installed_uv(&store.paths().home) {
        let mut c = Command::new(uv);
        c.args(["pip", "check", "--python"]).arg(&python);
        c
    } else if store.dir(version).join("bin").join("pip").exists() {
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "check", "--disable-pip-version-check"]);
        c
    } else {
        return Finding::warn(
            "Engine venv",
            "venv.pip_check",
            "dependency check skipped (its modules are present)",
            "the venv has no pip and uv is not available to check its requirements",
        );
    };
    match run_with_deadline(cmd, SLOW) {
        Ok(out) if out.status.success() => Finding::ok(
            "Engine venv",
            "venv.pip_check",
            "dependencies are consistent",
            "pip check: no broken requirements",
        ),
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Finding::error(
                "Engine venv",
                "venv.pip_check",
                "the venv has broken requirements",
                text.trim().lines().take(5).collect::<Vec<_>>().join("; "),
            )
            .fix(format!(
                "breadboard engine install --force --version {version}"
            ))
            .repair(Repair::RebuildVenv {
                version: version.to_owned(),
            })
        }
        Err(why) => Finding::warn(
            "Engine venv",
            "venv.pip_check",
            "dependency check did not finish",
            why,
        ),
    }
}

/// The top-level modules the engine imports that its venv cannot find, space-separated; `None` when all are there
/// (or the probe itself could not run: the engine-version check reports a Python that does not run).
fn missing_modules(python: &Path) -> Option<String> {
    const MODULES: [&str; 6] = [
        "breadboard_engine",
        "fastapi",
        "uvicorn",
        "pydantic",
        "ray",
        "httpx",
    ];
    let mut cmd = Command::new(python);
    cmd.args([
        "-I",
        "-c",
        "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))",
    ])
    .args(MODULES);
    let out = run_with_deadline(cmd, SLOW)
        .ok()
        .filter(|o| o.status.success())?;
    let missing = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!missing.is_empty()).then_some(missing)
}

fn ray_checks(setup: &Setup, store: &Store, import: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(version) = store.current() else {
        return out;
    };
    let mut cmd = Command::new(venv_python(store, &version));
    cmd.args(["-c", "import ray; print(ray.__version__)"]);
    let imported = if import {
        run_with_deadline(cmd, SLOW)
    } else {
        Err(String::new())
    };
    match imported {
        Err(why) if why.is_empty() => {} // the running engine reported its Ray instead (ray.engine)
        Ok(o) if o.status.success() => out.push(Finding::ok(
            "Ray",
            "ray.import",
            format!("Ray {} imports", first_line(&o.stdout)),
            "in the engine venv",
        )),
        Ok(o) => out.push(
            Finding::error(
                "Ray",
                "ray.import",
                "Ray does not import in the engine venv",
                first_line(&o.stderr),
            )
            .fix(format!(
                "breadboard engine install --force --version {version}"
            ))
            .repair(Repair::RebuildVenv {
                version: version.clone(),
            }),
        ),
        Err(why) => out.push(Finding::warn(
            "Ray",
            "ray.import",
            "importing Ray did not finish",
            why,
        )),
    }
    let data = setup.paths.data_dir();
    let temp = data.join("ray");
    out.push(if temp.as_os_str().len() <= 40 {
        Finding::ok("Ray", "ray.temp_dir", "Ray's temp dir is short enough for Unix sockets", temp.display().to_string())
    } else {
        Finding::ok(
            "Ray",
            "ray.temp_dir",
            "Ray's temp dir moves to /tmp",
            format!("{} is longer than 40 bytes (Unix socket paths are limited to 107), so the engine keeps Ray's sockets in a private directory of its own under /tmp (recorded in <data>/ray_temp_dir)", temp.display()),
        )
    });
    // The same source `engine start` uses (config; a --ray-address flag is per start and not known here).
    let address = setup
        .config
        .as_ref()
        .ok()
        .and_then(|c| c.ray.address.clone())
        .filter(|a| !a.is_empty());
    if let Some(address) = address {
        out.push(cluster_check(&address));
    }
    out
}

fn cluster_check(address: &str) -> Finding {
    use std::net::ToSocketAddrs;
    let reachable = address
        .trim_start_matches("ray://")
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| {
            let addr = addrs.next().ok_or_else(|| "no address".to_owned())?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| e.to_string())
        });
    match reachable {
        Ok(_) => Finding::ok("Ray", "ray.cluster", "the Ray cluster answers", address.to_owned()),
        Err(why) => Finding::error("Ray", "ray.cluster", "the configured Ray cluster does not answer", format!("{address}: {why}"))
            .fix("start the cluster (`ray start --head`), or remove ray.address from config.toml to use a local Ray"),
    }
}

/// The checks of the running (or dead) instance: registration, the engine's answer, leftovers, crashes, the port.
/// Read-only: nothing is moved aside or killed here (`engine stop` and `--fix` do that).
pub(crate) fn runtime_checks(setup: &Setup) -> Vec<Finding> {
    use crate::engine::{self, Probe};
    use crate::procfs;

    let paths = setup.paths;
    let mut out = Vec::new();
    for (id, path, what) in [
        ("run.token_mode", paths.token_file(), "the engine token"),
        (
            "run.registration_mode",
            paths.registration(),
            "the engine registration",
        ),
    ] {
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            out.push(if mode & 0o077 != 0 {
                Finding::error(
                    "Engine",
                    id,
                    format!("{what} is readable by others"),
                    format!("{} has mode {mode:o} (want 600)", path.display()),
                )
                .fix(format!("chmod 600 {}", path.display()))
                .repair(Repair::ChmodPrivate(path.clone()))
            } else {
                Finding::ok(
                    "Engine",
                    id,
                    format!("{what} is private"),
                    format!("{} (600)", path.display()),
                )
            });
        }
    }
    let probe = match engine::probe(paths, None, false) {
        Ok(probe) => probe,
        Err(e) => {
            out.push(
                Finding::error(
                    "Engine",
                    "engine.registration",
                    "the engine registration cannot be read",
                    format!("{e:#}"),
                )
                .fix("breadboard engine stop   # clears it"),
            );
            return out;
        }
    };
    let live = match &probe {
        Probe::Live { reg: Some(r), .. } => Some(r.instance_id.clone()),
        _ => None,
    };
    out.extend(orphans_check(
        paths,
        live.as_deref(),
        matches!(probe, Probe::Live { reg: None, .. }),
    ));
    match probe {
        Probe::Down { stale: None, crash } => {
            if std::fs::metadata(paths.registration()).is_ok() {
                out.push(
                    Finding::error(
                        "Engine",
                        "engine.registration",
                        "the engine registration is corrupt",
                        paths.registration().display().to_string(),
                    )
                    .fix("breadboard engine stop   # moves it aside")
                    .repair(Repair::RemoveStale { instance_id: None }),
                );
            } else {
                out.push(Finding::ok(
                    "Engine",
                    "engine.registration",
                    "the engine is not running",
                    "no registration",
                ));
            }
            out.extend(crash.map(|c| crash_finding(paths, &c)));
            out.push(match setup.config.as_ref().map(engine::configured_port) {
                Ok(Ok(port)) => port_check(port),
                // A config that does not parse is its own finding; check the default port meanwhile.
                Err(_) => port_check(engine::DEFAULT_PORT),
                Ok(Err(e)) => Finding::error(
                    "Engine",
                    "engine.port",
                    "the configured port is not valid",
                    format!("{e:#}"),
                )
                .fix(format!("unset {}", crate::env_vars::BREADBOARD_CLI_PORT)),
            });
        }
        Probe::Down {
            stale: Some(reg),
            crash,
        } => {
            let leftovers = leftover_processes(&reg);
            let mut stale = Finding::warn(
                "Engine",
                "engine.registration",
                "a stale engine registration is left behind",
                format!(
                    "{} names supervisor pid {} and engine pid {}, but no supervisor holds the instance lock",
                    paths.registration().display(),
                    reg.supervisor_pid,
                    reg.pid
                ),
            )
            .fix("breadboard engine stop   # cleans it up; a live unrelated process with that pid is never signalled");
            if leftovers.is_empty() {
                stale = stale.repair(Repair::RemoveStale {
                    instance_id: Some(reg.instance_id.clone()),
                });
            }
            out.push(stale);
            if !leftovers.is_empty() {
                let listed: Vec<String> = leftovers
                    .iter()
                    .map(|p| {
                        format!(
                            "{p} ({})",
                            procfs::cmdline(*p)
                                .unwrap_or_default()
                                .chars()
                                .take(60)
                                .collect::<String>()
                        )
                    })
                    .collect();
                out.push(
                    Finding::error(
                        "Engine",
                        "engine.leftovers",
                        "processes of an earlier engine are still running",
                        listed.join(", "),
                    )
                    .fix("breadboard engine stop"),
                );
            }
            out.extend(crash.map(|c| crash_finding(paths, &c)));
            out.push(port_check(reg.port));
        }
        Probe::Live { reg: None, .. } => out.push(
            Finding::error(
                "Engine",
                "engine.registration",
                "a supervisor holds the instance lock but wrote no registration",
                paths.engine_lock().display().to_string(),
            )
            .fix("breadboard engine restart"),
        ),
        Probe::Live {
            reg: Some(reg),
            health,
        } => {
            // A busy engine (connected, no answer within the quick probe) gets a longer look before it is judged.
            let health = engine::health_patiently(&reg, health, DOCTOR_HEALTH_PATIENCE);
            out.push(Finding::ok(
                "Engine",
                "engine.registration",
                "the engine registration is live",
                format!(
                    "supervisor pid {}, engine pid {}",
                    reg.supervisor_pid, reg.pid
                ),
            ));
            let answer = engine::answer(paths, &reg, health);
            if matches!(
                answer,
                engine::Answer::Ready(_) | engine::Answer::Incompatible(..)
            ) {
                out.push(engine_ray(&reg));
            }
            out.push(match answer {
                engine::Answer::Stranger(h) => Finding::error(
                    "Engine",
                    "engine.health",
                    "another process answers on the engine's port",
                    format!("{} answers as pid {} instance {}, the registration says pid {} instance {}", reg.url, h.pid, h.instance_id, reg.pid, reg.instance_id),
                )
                .fix("breadboard engine restart"),
                engine::Answer::Ready(h) => Finding::ok(
                    "Engine",
                    "engine.health",
                    format!("the engine answers at {}", reg.url),
                    format!("engine {} (protocol {}), pid {}", h.engine_version, h.protocol_version, h.pid),
                ),
                engine::Answer::Incompatible(h, problems) => {
                    if compat::protocol_compatible(&h.protocol_version) {
                        Finding::warn("Engine", "engine.health", "the running engine is not the pinned version", problems.join("; "))
                            .fix("breadboard engine restart   # to apply the upgrade")
                    } else {
                        Finding::error("Engine", "engine.health", "the running engine is incompatible", problems.join("; "))
                            .fix("breadboard engine restart")
                    }
                }
                // Slow because it is stopped (SIGSTOP, Ctrl-Z), not busy: it will never answer by itself.
                engine::Answer::Busy(e)
                    if crate::procfs::stat(reg.pid).is_some_and(|s| s.state == 'T' || s.state == 't') =>
                {
                    Finding::error(
                        "Engine",
                        "engine.health",
                        "the engine does not answer /health",
                        format!("{}: {e}; pid {} is stopped by a signal (SIGSTOP or Ctrl-Z)", reg.url, reg.pid),
                    )
                    .fix("breadboard engine restart")
                }
                engine::Answer::Busy(e) => Finding::warn(
                    "Engine",
                    "engine.health",
                    "the engine is running but busy",
                    format!("{}: {e}", reg.url),
                )
                .fix("breadboard engine logs -n 100   # what it is doing; restart only if it stays busy"),
                engine::Answer::TokenRefused(e) | engine::Answer::NotAnswering(e) => Finding::error(
                    "Engine",
                    "engine.health",
                    "the engine does not answer /health",
                    format!("{}: {e}", reg.url),
                )
                .fix("breadboard engine restart"),
                engine::Answer::NoAddress => Finding::error("Engine", "engine.health", "the engine's address does not resolve", format!("{}:{}", reg.host, reg.port))
                    .fix("breadboard engine restart"),
            });
        }
    }
    out
}

/// How long doctor waits for a busy engine's `/health` (e.g. while a local Ray connects) before calling it busy.
const DOCTOR_HEALTH_PATIENCE: Duration = Duration::from_secs(3);

/// Processes of an earlier engine of this home that outlived it (e.g. Ray workers after a `kill -9` of `engine start
/// --foreground`), found by the engine mark in their environment, whoever their parent is now. Not judged while a
/// supervisor holds the lock without a registration: its engine's are indistinguishable then.
fn orphans_check(paths: &Paths, live: Option<&str>, unknown_live: bool) -> Option<Finding> {
    if unknown_live {
        return None;
    }
    let left = crate::engine::marked_leftovers(paths, live);
    if left.is_empty() {
        return None;
    }
    let listed: Vec<String> = left
        .iter()
        .map(|m| {
            let cmd: String = crate::procfs::cmdline(m.pid)
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect();
            format!("{} ({cmd})", m.pid)
        })
        .collect();
    Some(
        Finding::error(
            "Engine",
            "engine.orphans",
            format!(
                "{} process(es) of an earlier engine of this home are still running",
                left.len()
            ),
            format!("{}: {}", paths.home.display(), listed.join(", ")),
        )
        .fix(if live.is_some() {
            "breadboard engine doctor --fix   # ends them; the running engine is left alone"
        } else {
            "breadboard engine stop   # ends them"
        })
        .repair(Repair::EndLeftovers),
    )
}

/// The running engine's own view of Ray (`/v1/status`): connected, still starting, or failed and why.
fn engine_ray(reg: &crate::registration::Registration) -> Finding {
    let status = crate::engine::client_for(reg, Duration::from_secs(2))
        .ok_or_else(|| "no token".to_owned())
        .and_then(|c| {
            c.get_json::<serde_json::Value>("/v1/status")
                .map_err(|e| e.to_string())
        });
    let ray = match status {
        Ok(doc) => doc["ray"].clone(),
        Err(why) => {
            return Finding::warn(
                "Ray",
                "ray.engine",
                "the engine's Ray state is unknown",
                why,
            )
        }
    };
    let state = ray["state"].as_str().unwrap_or("?");
    let detail = format!(
        "{} Ray, state {state}{}",
        ray["mode"].as_str().unwrap_or("?"),
        ray["address"]
            .as_str()
            .map(|a| format!(", cluster {a}"))
            .unwrap_or_default()
    );
    match state {
        "connected" | "pending" | "off" | "starting" => {
            Finding::ok("Ray", "ray.engine", "the engine's Ray is usable", detail)
        }
        _ => Finding::error(
            "Ray",
            "ray.engine",
            "the engine's Ray failed",
            format!("{detail}: {}", ray["error"].as_str().unwrap_or("no detail")),
        )
        .fix("breadboard engine logs -n 50   # then: breadboard engine restart"),
    }
}

fn crash_finding(paths: &Paths, exit: &crate::crash::LastExit) -> Finding {
    let seen = crate::crash::acknowledged(paths, &exit.instance_id);
    let detail = format!(
        "{} at {}; log: {}",
        exit.how(),
        exit.ended_at,
        paths.engine_log().display()
    );
    if seen {
        Finding::ok(
            "Engine",
            "engine.crash",
            "the last engine crash was already reported",
            detail,
        )
    } else {
        Finding::warn(
            "Engine",
            "engine.crash",
            "the engine died without being asked to stop",
            detail,
        )
        .fix("breadboard engine status   # the crash report; then: breadboard engine start")
    }
}

/// Processes still in a dead instance's session: same guards as `engine stop` (our boot, session leader gone,
/// started after the supervisor), so an unrelated process that reuses a pid is never reported as ours.
fn leftover_processes(reg: &crate::registration::Registration) -> Vec<crate::sys::Pid> {
    use crate::procfs;
    let Some(sid) = reg.sid else {
        return Vec::new();
    };
    if reg.boot_id != procfs::boot_id() || procfs::alive(sid) || sid != reg.supervisor_pid {
        return Vec::new();
    }
    procfs::session_members(sid, &[])
        .into_iter()
        .filter(|p| procfs::start_ticks(*p).is_some_and(|t| t >= reg.supervisor_start_ticks))
        .collect()
}

fn port_check(port: u16) -> Finding {
    match crate::procfs::port_owner(port) {
        Some((pid, cmd)) => Finding::warn(
            "Engine",
            "engine.port",
            format!("port {port} is in use by another process"),
            format!("pid {pid}: {}", cmd.chars().take(100).collect::<String>()),
        )
        .fix(format!(
            "breadboard engine start --port auto   # or stop pid {pid}"
        )),
        None if crate::procfs::port_listening(port) => Finding::warn(
            "Engine",
            "engine.port",
            format!("port {port} is in use"),
            format!("by another process ({})", crate::procfs::UNNAMED_HOLDER),
        )
        .fix("breadboard engine start --port auto"),
        None => Finding::ok(
            "Engine",
            "engine.port",
            format!("port {port} is free"),
            String::new(),
        ),
    }
}
