//! `breadboard engine list` (alias `versions`): installed engine versions, which is current, and their receipts.
//! Reads only the filesystem (no Python, no network), so it stays in the low milliseconds.

use serde::Serialize;

use crate::paths::Paths;
use crate::printer::{Printer, Style};
use crate::venv::store::{Installed, Store};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON: {current, previous, versions: [{version, path, current, previous, complete, broken?, receipt?}]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ListJson {
    current: Option<String>,
    previous: Option<String>,
    versions: Vec<Installed>,
}

pub fn run(paths: &Paths, printer: &Printer, args: &ListArgs) -> anyhow::Result<u8> {
    // The listing needs no config, but a config.toml that does not parse is said here as by every command (a
    // warning on stderr), not silently passed over. Only when the file exists: the common case costs one stat.
    // With `-v`, loading it prints the settings as for every command.
    if printer.verbose() || paths.config_file().exists() {
        super::Ctx::load_lenient(printer)?;
    }
    let store = Store::new(paths);
    let versions = store.list()?;
    if args.json {
        printer.json(&ListJson {
            current: store.current(),
            previous: store.previous(),
            versions,
        });
        return Ok(0);
    }
    if versions.is_empty() {
        printer.info("no engine versions installed; install one with `breadboard engine install`");
        return Ok(0);
    }
    for item in &versions {
        printer.result(&line(printer, item));
        if let Some(why) = &item.broken {
            printer.warn(&format!(
                "engine {} is broken: {why}; rebuild it with `breadboard engine install --version {} --force`",
                item.version, item.version
            ));
        }
    }
    Ok(0)
}

/// One installed version: `*` and bold when current, its tags, and the receipt's interpreter, installer and time.
fn line(printer: &Printer, item: &Installed) -> String {
    let marker = if item.current { "*" } else { " " };
    let tags: Vec<&str> = [
        (item.current, "current"),
        (item.previous, "previous"),
        (!item.complete, "incomplete"),
        (item.broken.is_some(), "broken"),
    ]
    .into_iter()
    .filter_map(|(on, tag)| on.then_some(tag))
    .collect();
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!(" ({})", tags.join(", "))
    };
    let detail = item.receipt.as_ref().map_or_else(String::new, |r| {
        format!(
            "  python {} {}  {}  {}",
            r.python.version,
            r.python.path.display(),
            r.installer,
            r.installed_at
        )
    });
    let version = if item.current {
        printer.style(Style::Bold, &item.version)
    } else {
        item.version.clone()
    };
    format!("{marker} {version}{tags}{detail}")
}
