//! The engine's session index (`data/sessions.sqlite3`) as doctor sees it, without opening it as a database: the
//! index is a cache of the per-session event logs, so the engine rebuilds one it cannot read (keeping the bad file as
//! `sessions.sqlite3.corrupt-<unix seconds>`, with its `-wal`/`-shm` beside it). Doctor only reports what it finds.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

pub(crate) const INDEX_FILE: &str = "sessions.sqlite3";
const SET_ASIDE_PREFIX: &str = "sessions.sqlite3.corrupt-";

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexState {
    /// Why the current index is not a database, when it is not (a missing or empty file is fine: the engine
    /// creates it).
    pub unreadable: Option<String>,
    /// Indexes the engine set aside, oldest first (their `-wal`/`-shm` companions are not listed).
    pub set_aside: Vec<PathBuf>,
}

pub(crate) fn inspect(data_dir: &Path) -> IndexState {
    let mut state = IndexState {
        unreadable: header_problem(&data_dir.join(INDEX_FILE)),
        ..IndexState::default()
    };
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(rest) = name.strip_prefix(SET_ASIDE_PREFIX) {
                if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                    state.set_aside.push(entry.path());
                }
            }
        }
    }
    state.set_aside.sort();
    state
}

fn header_problem(path: &Path) -> Option<String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot be opened: {e}")),
    };
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Some(format!("cannot be read: {e}")),
        }
    }
    match got {
        0 => None,
        16 if &head == SQLITE_MAGIC => None,
        _ => Some("is not an SQLite database (its header is wrong)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_an_empty_file_and_no_file_are_readable_garbage_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(INDEX_FILE);
        assert_eq!(inspect(dir.path()), IndexState::default());
        std::fs::write(&index, b"").unwrap();
        assert_eq!(inspect(dir.path()).unreadable, None);
        let mut db = SQLITE_MAGIC.to_vec();
        db.extend_from_slice(&[0; 84]);
        std::fs::write(&index, &db).unwrap();
        assert_eq!(inspect(dir.path()).unreadable, None);
        std::fs::write(&index, b"this is not a database at all").unwrap();
        assert!(inspect(dir.path()).unreadable.is_some());
    }

    #[test]
    fn set_aside_indexes_are_listed_without_their_companions() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "sessions.sqlite3.corrupt-1700000000",
            "sessions.sqlite3.corrupt-1700000000-wal",
            "sessions.sqlite3.corrupt-1600000000",
            "sessions.sqlite3-wal",
            "sessions.sqlite3.corrupt-",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<String> = inspect(dir.path())
            .set_aside
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "sessions.sqlite3.corrupt-1600000000",
                "sessions.sqlite3.corrupt-1700000000"
            ]
        );
    }
}
