//! Every path under `BREADBOARD_HOME`. Resolved once in `cli::run` and passed down, so no module invents its own.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::env_vars;
use crate::error::{CliError, ErrorKind};

#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    pub fn from_env() -> anyhow::Result<Paths> {
        if let Some(home) = env_vars::get(env_vars::BREADBOARD_HOME) {
            return Ok(Paths {
                home: absolute(Path::new(&home))?,
            });
        }
        let Some(user_home) = env_vars::get(env_vars::HOME) else {
            return Err(CliError::new(
                ErrorKind::Config,
                "neither BREADBOARD_HOME nor HOME is set",
            )
            .hint("export BREADBOARD_HOME=/path/to/breadboard-home")
            .into());
        };
        Ok(Paths {
            home: PathBuf::from(user_home).join(".breadboard"),
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

    pub fn ensure_run_dir(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.run_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        // DirBuilder's mode is filtered by the umask and ignored for an existing dir: set it explicitly.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not set permissions of {}", dir.display()))?;
        Ok(dir)
    }

    pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))
    }
}

/// Makes `path` absolute against the working directory without resolving symlinks.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("could not make {} absolute", path.display()))
}
