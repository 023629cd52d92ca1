//! The engine half of `breadboard upgrade`: `<bin> engine upgrade`, run by a given breadboard binary (the new one
//! after an upgrade, so its engine range applies, and so do the steps a new release adds), only when an engine is
//! installed.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::paths::Paths;
use crate::printer::Printer;
use crate::venv::store::Store;

pub(crate) struct EngineStep {
    installed: bool,
    flags: Vec<String>,
    json: bool,
}

pub(crate) enum EngineOutcome {
    NoEngine,
    Ran {
        code: u8,
        json: Option<serde_json::Value>,
    },
}

impl EngineStep {
    /// `flags`: the output settings of this command (`--quiet`, `--color=...`), which the child gets too.
    pub(crate) fn new(paths: &Paths, flags: Vec<String>, json: bool) -> EngineStep {
        let store = Store::new(paths);
        let installed = store.current().is_some_and(|c| store.is_complete(&c));
        EngineStep {
            installed,
            flags,
            json,
        }
    }

    pub(crate) fn run(
        &self,
        printer: &Printer,
        bin: &Path,
        check: bool,
    ) -> anyhow::Result<EngineOutcome> {
        if !self.installed {
            return Ok(EngineOutcome::NoEngine);
        }
        let mut cmd = Command::new(bin);
        cmd.args(&self.flags).args(["engine", "upgrade"]);
        if check {
            cmd.arg("--check");
        }
        if self.json {
            cmd.arg("--json").stdout(Stdio::piped());
        }
        printer.debug(&format!(
            "running {} {} engine upgrade",
            bin.display(),
            self.flags.join(" ")
        ));
        let child = cmd
            .spawn()
            .with_context(|| format!("could not run {} engine upgrade", bin.display()))?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("could not wait for {} engine upgrade", bin.display()))?;
        // Killed by a signal: no exit code; report a plain failure.
        let code = out
            .status
            .code()
            .map_or(1, |c| u8::try_from(c).unwrap_or(1));
        // The first JSON document on its stdout (a restart of a running engine adds a plain line after it).
        let json = if self.json {
            serde_json::Deserializer::from_slice(&out.stdout)
                .into_iter::<serde_json::Value>()
                .next()
                .and_then(Result::ok)
        } else {
            None
        };
        Ok(EngineOutcome::Ran { code, json })
    }
}
