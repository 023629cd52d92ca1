//! The Config section: config.toml parses, has no unknown keys, and holds only values the commands accept; and
//! where each setting that is not at its default came from (flag, environment, config file).

use crate::config::Config;
use crate::settings::Settings;

use super::{Finding, Setup};

pub(super) const SECTION: &str = "Config";

pub(super) fn check(setup: &Setup) -> Finding {
    let file = setup.paths.config_file();
    match &setup.config {
        Ok(config) => {
            let invalid = invalid_values(&setup.settings);
            if invalid.is_empty() {
                keys_check(config, &file)
            } else {
                refused(&invalid)
            }
        }
        Err(why) => Finding::error(
            SECTION,
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

/// The settings' values, checked as the commands read them: a value they refuse is an error here rather than a
/// surprise at the next `start`, `install` or `ask`.
fn invalid_values(settings: &Settings) -> Vec<(String, Option<String>)> {
    let errors = [
        settings.installer.get().err(),
        settings.port.get().err(),
        settings.protocol.get().err(),
        settings.restart.get().err(),
        settings.tls.files().err(),
        settings.client_url.get().err(),
        settings.lock_timeout.get().err(),
    ];
    errors
        .into_iter()
        .flatten()
        .map(|e| (e.message, e.hint))
        .collect()
}

/// Where the settings that are not at their default came from; the list is the detail (`-v`, `--json`).
pub(super) fn origins(setup: &Setup) -> Finding {
    let set: Vec<String> = setup
        .settings
        .entries()
        .into_iter()
        .filter(|e| e.origin != "default")
        .map(|e| format!("{} = {} ({})", e.key, e.value, e.origin))
        .collect();
    let title = match set.len() {
        0 => "every setting is at its default".to_owned(),
        1 => "1 setting is set; the rest are defaults".to_owned(),
        n => format!("{n} settings are set; the rest are defaults"),
    };
    Finding::ok(SECTION, "config.settings", title, set.join("; "))
}

fn refused(invalid: &[(String, Option<String>)]) -> Finding {
    let messages: Vec<&str> = invalid.iter().map(|(m, _)| m.as_str()).collect();
    // The commands' own hints, one per value (they name the setting, in config.toml or the environment).
    let fixes: Vec<String> = invalid
        .iter()
        .map(|(m, h)| h.clone().unwrap_or_else(|| format!("fix: {m}")))
        .collect();
    Finding::error(
        SECTION,
        "config.parse",
        "settings hold values the commands refuse",
        messages.join("; "),
    )
    .fix(fixes.join("; "))
}

/// Unknown keys are ignored, so a misspelt setting silently does nothing: worth a warning.
fn keys_check(config: &Config, file: &std::path::Path) -> Finding {
    let unknown = config.unknown_keys();
    if unknown.is_empty() {
        let detail = if file.exists() {
            file.display().to_string()
        } else {
            "no config.toml (defaults)".into()
        };
        return Finding::ok(SECTION, "config.parse", "config.toml is valid", detail);
    }
    Finding::warn(
        SECTION,
        "config.parse",
        "config.toml has unknown keys (ignored)",
        format!("{}: {}", file.display(), unknown.join(", ")),
    )
    .fix(format!(
        "remove or fix those keys in {} (see docs/cli.md)",
        file.display()
    ))
}
