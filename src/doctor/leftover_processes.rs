//! The Engine section's look for processes that outlived their engine: Ray workers after a `kill -9`, a session
//! whose leader is gone. Found and named here; `engine stop` and `--fix` end them.

use crate::engine::registration::Registration;
use crate::engine::{self, Diagnosis};
use crate::os::procfs;
use crate::os::sys::Pid;
use crate::paths::Paths;

use super::runtime::SECTION;
use super::{Finding, Repair};

/// Processes of an earlier engine of this home that outlived it (e.g. Ray workers after a `kill -9` of `engine start
/// --foreground`), found by the engine mark in their environment, whoever their parent is now. Not judged while a
/// supervisor holds the lock without a registration: its engine's are indistinguishable then.
pub(super) fn orphans_check(paths: &Paths, diagnosis: &Diagnosis) -> Option<Finding> {
    let live = match diagnosis {
        Diagnosis::Unregistered => return None,
        Diagnosis::Live(l) => Some(l.reg.instance_id.as_str()),
        _ => None,
    };
    let left = engine::marked_leftovers(paths, live);
    if left.is_empty() {
        return None;
    }
    let listed: Vec<String> = left.iter().map(|m| described(m.pid)).collect();
    Some(
        Finding::error(
            SECTION,
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

/// The processes still in a dead instance's session, when there are any.
pub(super) fn of_dead_instance(reg: &Registration) -> Option<Finding> {
    let left = engine::session_leftovers(reg);
    if left.is_empty() {
        return None;
    }
    let listed: Vec<String> = left.into_iter().map(described).collect();
    Some(
        Finding::error(
            SECTION,
            "engine.leftovers",
            "processes of an earlier engine are still running",
            listed.join(", "),
        )
        .fix("breadboard engine stop"),
    )
}

/// A pid with the start of its command line: enough to recognise it, short enough for one line of the report.
fn described(pid: Pid) -> String {
    let cmd: String = procfs::cmdline(pid)
        .unwrap_or_default()
        .chars()
        .take(60)
        .collect();
    format!("{pid} ({cmd})")
}
