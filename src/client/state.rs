//! The last interactive session used from this CLI (for `ask --continue`), in `state/last-session.json` under
//! BREADBOARD_HOME, together with the engine it lives on (`local`, or a remote URL).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Endpoint;
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;

#[derive(Debug, Serialize, Deserialize)]
struct LastSession {
    engine: String,
    session_id: String,
}

fn path(paths: &Paths) -> PathBuf {
    paths.home.join("state").join("last-session.json")
}

fn engine_key(endpoint: &Endpoint) -> String {
    if endpoint.is_local() {
        "local".to_owned()
    } else {
        endpoint.base.clone()
    }
}

/// Remembers `id` as the last interactive session (best effort: failing to write it never fails the command).
pub fn remember(paths: &Paths, endpoint: &Endpoint, id: &str) {
    let doc = LastSession {
        engine: engine_key(endpoint),
        session_id: id.to_owned(),
    };
    let file = path(paths);
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string(&doc) {
        let _ = crate::fsutil::write_atomic(&file, text.as_bytes());
    }
}

/// The session `--continue` continues on this engine.
pub fn recall(paths: &Paths, endpoint: &Endpoint) -> anyhow::Result<String> {
    let file = path(paths);
    let doc = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<LastSession>(&t).ok());
    match doc {
        Some(d) if d.engine == engine_key(endpoint) => Ok(d.session_id),
        Some(d) => Err(CliError::new(
            ErrorKind::SessionNotFound,
            format!(
                "the last interactive session ({}) is on {}, not on {}",
                d.session_id,
                if d.engine == "local" { "the local engine" } else { &d.engine },
                endpoint.describe()
            ),
        )
        .hint("name it: breadboard ask --session ID \"...\" (breadboard sessions list shows them)")
        .into()),
        None => Err(CliError::new(
            ErrorKind::SessionNotFound,
            "there is no interactive session to continue (one-shot `ask` sessions end with their turn and are not continued)",
        )
        .hint("start one: breadboard sessions new (or breadboard sessions attach --new)")
        .into()),
    }
}
