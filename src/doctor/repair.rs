//! `engine doctor --fix`: the safe repairs the findings name, each performed and reported. Checks never change
//! anything; this is the one place where doctor does.

use anyhow::Context;

use super::{Finding, Repair, Status};
use crate::engine;
use crate::lock::ControlLock;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::venv::store::Store;

/// The safe repairs, each reported. File repairs run under the control lock; a venv rebuild runs this binary's own
/// `engine install --force` afterwards, which takes the lock itself.
pub(crate) fn repair(
    paths: &Paths,
    printer: &Printer,
    findings: &[Finding],
) -> anyhow::Result<Vec<String>> {
    let repairs = wanted(findings);
    if repairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut done = Vec::new();
    let mut report = |result: anyhow::Result<Option<String>>| match result {
        Ok(Some(what)) => {
            printer.info(&format!("fixed: {what}"));
            done.push(what);
        }
        Ok(None) => {}
        // One repair failing must not hide the others or the report: say it and go on.
        Err(e) => printer.warn(&format!("could not repair: {e:#}")),
    };
    {
        let _lock = ControlLock::acquire(paths, "breadboard engine doctor --fix", printer)?;
        for repair in &repairs {
            report(file_repair(paths, printer, repair));
        }
    }
    for repair in &repairs {
        if let Repair::RebuildVenv { version } = repair {
            report(rebuild(printer, version).map(Some));
        }
    }
    Ok(done)
}

/// The repairs of the findings that are not ok, each once, in the order the findings name them.
fn wanted(findings: &[Finding]) -> Vec<Repair> {
    let mut repairs: Vec<Repair> = Vec::new();
    for repair in findings
        .iter()
        .filter(|f| f.status != Status::Ok)
        .filter_map(|f| f.repair.clone())
    {
        if !repairs.contains(&repair) {
            repairs.push(repair);
        }
    }
    repairs
}

/// A repair of files under `run/` or `engine/`, with the control lock held; `None` when there was nothing to do.
fn file_repair(
    paths: &Paths,
    printer: &Printer,
    repair: &Repair,
) -> anyhow::Result<Option<String>> {
    match repair {
        Repair::ChmodPrivate(path) => chmod_private(path).map(Some),
        Repair::MakePrivate(list) => make_all_private(paths, list),
        Repair::CleanLeftovers => {
            Store::new(paths).clean_leftovers(printer)?;
            Ok(Some("removed half-installed engine versions".to_owned()))
        }
        Repair::RemoveStale { instance_id } => remove_stale(paths, printer, instance_id.as_ref()),
        // Done after the lock is released: the install it runs takes the lock itself.
        Repair::RebuildVenv { .. } => Ok(None),
        Repair::EndLeftovers => end_leftovers(paths, printer),
    }
}

fn chmod_private(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok(format!("chmod {mode:o} {}", path.display()))
}

fn make_all_private(paths: &Paths, list: &[std::path::PathBuf]) -> anyhow::Result<Option<String>> {
    let mut done = 0;
    for path in list {
        // The home only loses others' write bit: an open but read-only home is fine, and may be on purpose.
        let strip = if *path == paths.home { 0o022 } else { 0o077 };
        if make_private(path, strip).with_context(|| format!("chmod go-rwx {}", path.display()))? {
            done += 1;
        }
    }
    Ok((done > 0).then(|| format!("made {done} path(s) private to you (chmod go-rwx)")))
}

/// Cleans up after the dead instance the finding named, if it is still the one there.
fn remove_stale(
    paths: &Paths,
    printer: &Printer,
    instance_id: Option<&String>,
) -> anyhow::Result<Option<String>> {
    // The findings were made before the lock was ours (slow checks ran in between): an `engine start` may have
    // registered a live engine since. Look again, and clean only the same dead instance.
    let d = engine::diagnose(paths, Some(printer), true)?;
    if d.is_live() || d.stale().map(|r| &r.instance_id) != instance_id {
        printer.info("skipped the stale registration: an engine registered since doctor looked");
        return Ok(None);
    }
    engine::clean_stale(paths, d.stale(), printer);
    Ok(Some(match instance_id {
        Some(id) => format!("removed the stale registration of engine instance {id}"),
        None => "moved the corrupt engine registration aside".to_owned(),
    }))
}

fn end_leftovers(paths: &Paths, printer: &Printer) -> anyhow::Result<Option<String>> {
    // Looked at again under the lock: the running instance (if any) may have changed since.
    let live = match engine::diagnose(paths, None, false)? {
        engine::Diagnosis::Live(l) => Some(l.reg.instance_id),
        engine::Diagnosis::Unregistered => return Ok(None),
        _ => None,
    };
    let left = engine::marked_leftovers(paths, live.as_deref());
    engine::end_marked_leftovers(paths, printer, live.as_deref());
    Ok(Some(format!(
        "ended {} leftover process(es) of an earlier engine",
        left.len()
    )))
}

/// Takes the `strip` bits off `path` when it has any; true when it changed. Opened with O_NOFOLLOW and changed through
/// that descriptor, so a symlink swapped in since doctor looked is never followed. A socket (which cannot be opened)
/// is changed by path after a fresh lstat.
fn make_private(path: &std::path::Path, strip: u32) -> anyhow::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => {
            let mode = file.metadata()?.permissions().mode() & 0o7777;
            if mode & strip == 0 {
                return Ok(false);
            }
            file.set_permissions(std::fs::Permissions::from_mode(mode & !strip))?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(_) => make_private_by_path(path, strip),
    }
}

fn make_private_by_path(path: &std::path::Path, strip: u32) -> anyhow::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(false);
    };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || mode & strip == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !strip))?;
    Ok(true)
}

/// Rebuilds a venv from its receipt (same Python, installer and source) with this binary's own install.
fn rebuild(printer: &Printer, version: &str) -> anyhow::Result<String> {
    printer.info(&format!("rebuilding engine {version} from its receipt..."));
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["engine", "install", "--force", "--version", version])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        anyhow::bail!(
            "rebuilding engine {version} failed ({status}); run `breadboard engine install --force --version {version} -v`"
        );
    }
    Ok(format!(
        "rebuilt engine {version} (breadboard engine install --force --version {version})"
    ))
}
