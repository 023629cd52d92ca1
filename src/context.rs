//! What every command gets (paths, the printer, the loaded config and the settings resolved from it, the
//! environment and the command's flags), built once by the CLI and passed down: the domain modules take it from
//! here, never from the CLI layer.

use crate::config::Config;
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;
use crate::printer::Printer;
use crate::settings::{ConfigSource, Env, Flags, Settings};

/// What every command gets: resolved paths, the printer, the loaded config and the resolved settings.
pub struct Ctx<'a> {
    pub paths: Paths,
    pub printer: &'a Printer,
    pub config: Config,
    /// Every setting with its origin: read `ctx.settings.x`, not the environment or `config`.
    pub(crate) settings: Settings,
}

impl<'a> Ctx<'a> {
    /// For commands that need only `run/` and the logs (stop, status, logs): a config.toml that does not parse is
    /// warned about and defaults are used, so a typo in it never keeps a running engine from being seen or stopped.
    pub fn load_lenient(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        Ctx::load_lenient_with(printer, &Flags::default())
    }

    pub fn load(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        Ctx::load_with(printer, &Flags::default())
    }

    /// As [`Ctx::load_lenient`], with the command's flags in the settings.
    pub(crate) fn load_lenient_with(
        printer: &'a Printer,
        flags: &Flags,
    ) -> anyhow::Result<Ctx<'a>> {
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
        Ok(Ctx::new(paths, printer, config, flags))
    }

    /// Loads the config (a config error stops the command) and resolves the settings with the command's flags.
    pub(crate) fn load_with(printer: &'a Printer, flags: &Flags) -> anyhow::Result<Ctx<'a>> {
        let paths = Paths::from_env()?;
        let config = Config::load(&paths.config_file(), printer)?;
        Ok(Ctx::new(paths, printer, config, flags))
    }

    /// Resolves the settings once; `-v` prints them with their origins.
    fn new(paths: Paths, printer: &'a Printer, config: Config, flags: &Flags) -> Ctx<'a> {
        let config_file = paths.config_file();
        let source = ConfigSource {
            config: &config,
            file: &config_file,
        };
        let settings = Settings::resolve(flags, &Env::process(), source, &paths.home);
        settings.print_verbose(printer);
        Ctx {
            paths,
            printer,
            config,
            settings,
        }
    }
}
