//! What every command gets (paths, the printer, the loaded config), built once by the CLI and passed down: the
//! domain modules take it from here, never from the CLI layer.

use crate::config::Config;
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;
use crate::printer::Printer;

/// What every command gets: resolved paths, the printer and the loaded config.
pub struct Ctx<'a> {
    pub paths: Paths,
    pub printer: &'a Printer,
    pub config: Config,
}

impl<'a> Ctx<'a> {
    /// For commands that need only `run/` and the logs (stop, status, logs): a config.toml that does not parse is
    /// warned about and defaults are used, so a typo in it never keeps a running engine from being seen or stopped.
    pub fn load_lenient(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        let paths = Paths::from_env()?;
        let config = match Config::load(&paths.config_file(), printer) {
            Ok(config) => config,
            Err(e) => match e.downcast_ref::<CliError>() {
                Some(ce) if ce.kind == ErrorKind::Config => {
                    let hint = ce
                        .hint
                        .as_deref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    printer.warn(&format!(
                        "{}; using defaults for this command{hint}",
                        ce.message
                    ));
                    Config::default()
                }
                _ => return Err(e),
            },
        };
        Ok(Ctx {
            paths,
            printer,
            config,
        })
    }

    pub fn load(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        let paths = Paths::from_env()?;
        let config = Config::load(&paths.config_file(), printer)?;
        Ok(Ctx {
            paths,
            printer,
            config,
        })
    }
}
