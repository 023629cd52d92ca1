//! The Config section: config.toml parses, has no unknown keys, and holds only values the commands accept.

use crate::config::Config;

use super::{Finding, Setup};

pub(super) const SECTION: &str = "Config";

pub(super) fn check(setup: &Setup) -> Finding {
    let file = setup.paths.config_file();
    match &setup.config {
        Ok(config) => {
            let invalid = invalid_values(config);
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
