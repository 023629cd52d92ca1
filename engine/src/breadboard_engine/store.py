"""Durable session storage: the SQLite index of sessions (each session's events: eventlog.py).

The event log is the source of truth. An event is written to `sessions/<id>/events.jsonl` (with one write(2) on an
O_APPEND descriptor, before any client sees it), so a process crash loses nothing a client was sent. The SQLite index
holds session metadata and is reconciled from the logs at start-up; `last_seq` there may lag the log after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .version import PROTOCOL_VERSION

TOMBSTONE = ".deleted"
CLOSED = ("completed", "failed", "stopped")  # a session with one of these statuses never runs again
LIVE = ("starting", "running")  # a runner owns the session


@dataclass
class SessionRow:
    id: str
    status: str
    created_at: str
    updated_at: str
    task: str = ""
    provider: str | None = None
    config_path: str | None = None
    config_hash: str | None = None
    metadata: dict = field(default_factory=dict)
    completion_summary: dict | None = None
    protocol_version: str = PROTOCOL_VERSION
    last_seq: int = 0


SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    config_hash TEXT,
    protocol_version TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    task TEXT NOT NULL DEFAULT '',
    provider TEXT,
    config_path TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    completion_summary TEXT
);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""
COLUMNS = (
    "id, status, created_at, updated_at, config_hash, protocol_version, last_seq, task, provider, config_path, "
    "metadata, completion_summary"
)


class SessionIndex:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # The event loop is the only writer; WAL + synchronous=NORMAL survives a process crash, and the logs are
        # what recovery trusts anyway.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # A damaged page would otherwise surface later, as a failed write in the middle of a session.
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self.db.executescript(SCHEMA)
            if self.db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                self.db.execute("INSERT INTO schema_version VALUES (1)")
        except BaseException:
            self.db.close()
            raise

    def upsert(self, row: SessionRow) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO sessions ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.status,
                row.created_at,
                row.updated_at,
                row.config_hash,
                row.protocol_version,
                row.last_seq,
                row.task,
                row.provider,
                row.config_path,
                json.dumps(row.metadata),
                json.dumps(row.completion_summary) if row.completion_summary is not None else None,
            ),
        )

    def delete(self, session_id: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def all(self) -> list[SessionRow]:
        rows = []
        for r in self.db.execute(f"SELECT {COLUMNS} FROM sessions ORDER BY created_at"):
            rows.append(
                SessionRow(
                    id=r[0],
                    status=r[1],
                    created_at=r[2],
                    updated_at=r[3],
                    config_hash=r[4],
                    protocol_version=r[5],
                    last_seq=r[6],
                    task=r[7],
                    provider=r[8],
                    config_path=r[9],
                    metadata=json.loads(r[10] or "{}"),
                    completion_summary=json.loads(r[11]) if r[11] else None,
                )
            )
        return rows

    def close(self) -> None:
        self.db.close()


CORRUPT_SUFFIX = ".corrupt-"


def open_index(path: Path) -> tuple[SessionIndex, list[SessionRow], tuple[Path, str] | None]:
    """The index and its rows. An index SQLite cannot read (not a database, a damaged page, rows that do not parse)
    is moved aside to `<name>.corrupt-<unix seconds>`, its -wal and -shm with it (named so that SQLite still pairs
    them), and a new empty one takes its place: the event logs are the source of truth, and the caller rebuilds the
    rows from them. Returns (index, rows, (where the bad one went, why) or None)."""
    try:
        index = SessionIndex(path)
        try:
            return index, index.all(), None
        except BaseException:
            index.close()
            raise
    except (sqlite3.DatabaseError, ValueError) as exc:
        aside = _set_aside(path)
        return SessionIndex(path), [], (aside, str(exc))


def _set_aside(path: Path) -> Path:
    stamp = int(time.time())
    while any(path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}{s}").exists() for s in ("", "-wal", "-shm")):
        stamp += 1  # never overwrite an earlier one
    aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path.with_name(path.name + suffix), aside.with_name(aside.name + suffix))
    return aside


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def remove_session_dir(path: Path) -> None:
    """Delete a session's files so that a crash half-way leaves a tombstone that the next start-up finishes."""
    if not path.exists():
        return
    (path / TOMBSTONE).touch()
    shutil.rmtree(path, ignore_errors=True)
