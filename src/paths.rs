//! Every path under `BREADBOARD_HOME`. Resolved once in `cli::run` and passed down, so no module invents its own.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{CliError, ErrorKind};

#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    /// The home, made canonical once here (see [`canonical_home`]) so everything below, the registration, the
    /// engine's environment and the mark its processes carry included, names the same home however it was spelled
    /// and from any directory. One that exists but is not a directory is refused at once, with the way out.
    pub fn from_env() -> anyhow::Result<Paths> {
        let paths = Paths::from_env_unchecked()?;
        if !paths.home.is_dir() && paths.home.symlink_metadata().is_ok() {
            return Err(home_not_a_dir(&paths.home).into());
        }
        Ok(paths)
    }

    fn from_env_unchecked() -> anyhow::Result<Paths> {
        let Some((home, _)) = crate::settings::requested_home(&crate::settings::Env::process())
        else {
            return Err(CliError::new(
                ErrorKind::Config,
                "neither BREADBOARD_HOME nor HOME is set",
            )
            .hint("export BREADBOARD_HOME=/path/to/breadboard-home")
            .into());
        };
        Ok(Paths {
            home: canonical_home(&home)?,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    pub fn engine_dir(&self) -> PathBuf {
        self.home.join("engine")
    }
    /// One venv per installed engine version: `engine/versions/<version>/`.
    pub fn versions_dir(&self) -> PathBuf {
        self.engine_dir().join("versions")
    }
    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.versions_dir().join(version)
    }
    /// Symlink to the active version's directory (relative, so a moved home keeps working).
    pub fn current_link(&self) -> PathBuf {
        self.engine_dir().join("current")
    }
    /// Symlink to the version `engine rollback` returns to.
    pub fn previous_link(&self) -> PathBuf {
        self.engine_dir().join("previous")
    }
    /// Locks and runtime state; created 0700 because later issues keep tokens here.
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    pub fn control_lock(&self) -> PathBuf {
        self.run_dir().join("control.lock")
    }
    pub fn control_lock_holder(&self) -> PathBuf {
        self.run_dir().join("control.lock.holder")
    }
    /// Instance lock: held by the supervisor exactly as long as the engine (and anything it spawned) lives.
    pub fn engine_lock(&self) -> PathBuf {
        self.run_dir().join("engine.lock")
    }
    /// The running engine's registration (0600).
    pub fn registration(&self) -> PathBuf {
        self.run_dir().join("engine.json")
    }
    /// The engine's bearer token (0600); never in argv or output.
    pub fn token_file(&self) -> PathBuf {
        self.run_dir().join("engine.token")
    }
    /// How the last engine ended, written by the supervisor.
    pub fn last_exit(&self) -> PathBuf {
        self.run_dir().join("last-exit.json")
    }
    /// Instance id of the last crash already shown to the user (so a crash report is shown once).
    pub fn crash_ack(&self) -> PathBuf {
        self.run_dir().join("last-exit.ack")
    }
    pub fn engine_log(&self) -> PathBuf {
        self.logs_dir().join("engine.log")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    /// The engine's data dir (sessions, Ray temp). Only `engine uninstall --purge` deletes it.
    pub fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    /// The directories under the home that hold user data or runtime state, private to the user (0700): `data/`
    /// (sessions, Ray's sockets), `logs/` and `run/` (locks, registration, token).
    pub fn private_dirs(&self) -> [PathBuf; 3] {
        [self.data_dir(), self.logs_dir(), self.run_dir()]
    }

    /// Creates the home 0700 when it does not exist yet (see [`ensure_private_home`]).
    pub fn ensure_home(&self) -> anyhow::Result<()> {
        ensure_private_home(&self.home)
    }

    pub fn ensure_run_dir(&self) -> anyhow::Result<PathBuf> {
        self.ensure_home()?;
        let dir = self.run_dir();
        ensure_private_dir(&dir)?;
        Ok(dir)
    }

    /// Before an engine starts: the private directories exist and are 0700. One found looser (made by an older
    /// version, by hand, or under a permissive umask) is tightened, and the user is told, since other users could
    /// read what it held until now. A home found open is only reported: it may be shared on purpose, and with its
    /// private directories closed it exposes no session data. Another user's directory is left alone (doctor says).
    pub fn ensure_private(&self, printer: &crate::printer::Printer) -> anyhow::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        self.ensure_home()?;
        let me = crate::os::sys::getuid();
        for dir in self.private_dirs() {
            let before = std::fs::metadata(&dir).ok();
            ensure_private_dir(&dir)?;
            if let Some(meta) = before.filter(|m| m.uid() == me) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    printer.warn(&format!(
                        "{} was mode {mode:o}, open to other users; made it private (700)",
                        dir.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// `logs/`, created 0700 (the engine's and the installer's logs can hold prompts and index URLs).
    pub fn ensure_logs_dir(&self) -> anyhow::Result<()> {
        self.ensure_home()?;
        ensure_private_dir(&self.logs_dir())
    }

    pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))
    }
}

/// Creates a BREADBOARD_HOME 0700 when it does not exist yet (its parents as usual), so nothing under it is ever
/// reachable by other users, whatever the umask. An existing home is left as it is.
pub(crate) fn ensure_private_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if home.is_dir() {
        return Ok(());
    }
    if home.symlink_metadata().is_ok() {
        return Err(home_not_a_dir(home).into());
    }
    if let Some(parent) = home.parent() {
        Paths::ensure_dir(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(home) {
        Ok(()) => std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not set permissions of {}", home.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && home.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("could not create {}", home.display())),
    }
}

/// The error for a BREADBOARD_HOME that exists but is a file (or a dangling symlink), not a directory.
pub(crate) fn home_not_a_dir(home: &Path) -> CliError {
    CliError::new(
        ErrorKind::Config,
        format!(
            "BREADBOARD_HOME {} is {}, not a directory",
            home.display(),
            if home.is_file() {
                "a file"
            } else {
                "not a directory (a dangling symlink?)"
            }
        ),
    )
    .hint(format!(
        "move it out of the way (mv {0} {0}.bak), or point BREADBOARD_HOME at a directory",
        home.display()
    ))
}

/// Creates `dir` (and parents) and makes it 0700: DirBuilder's mode is filtered by the umask and ignored for an
/// existing dir, so the mode is set explicitly. One that is not this user's (or a symlink, or a symlink to one that
/// is not) is refused: whoever owns it can replace the registration and the token in it, and so point the CLI and its
/// bearer token at a server of theirs.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    let link = std::fs::symlink_metadata(dir)
        .with_context(|| format!("could not read {}", dir.display()))?;
    let meta =
        std::fs::metadata(dir).with_context(|| format!("could not read {}", dir.display()))?;
    let me = crate::os::sys::getuid();
    for m in [&link, &meta] {
        if m.uid() != me {
            return Err(CliError::new(
                ErrorKind::Config,
                format!(
                    "{} belongs to another user (uid {}, you are uid {me}); refusing to keep private files there",
                    dir.display(),
                    m.uid()
                ),
            )
            .hint(format!("sudo chown -R \"$(id -un)\" {}", dir.display()))
            .into());
        }
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not set permissions of {}", dir.display()))?;
    }
    Ok(())
}

/// `path` made absolute (against the working directory), with symlinks, `.`, `..` and a trailing `/` resolved, so
/// every spelling of one home is the same path. A part that does not exist yet (a home about to be created) is
/// appended to its longest existing ancestor, canonicalised.
pub(crate) fn canonical_home(path: &Path) -> anyhow::Result<PathBuf> {
    use std::path::Component;
    let abs = absolute(path)?;
    let mut existing = abs.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                match Path::new(part).components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::Normal(p)) => out.push(p),
                    _ => {}
                }
            }
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            // `..` as the last part: file_name() is None; keep it for the lexical pass.
            (Some(parent), None) if existing.ends_with("..") => {
                rest.push("..".into());
                existing = parent.to_owned();
            }
            _ => return Ok(abs),
        }
    }
}

/// Makes `path` absolute against the working directory without resolving symlinks.
pub(crate) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("could not make {} absolute", path.display()))
}
