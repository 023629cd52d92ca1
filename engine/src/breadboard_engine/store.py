"""Durable session storage: one append-only JSONL event log per session plus a SQLite index.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .version import PROTOCOL_VERSION

READ_CHUNK = 1 << 20
TOMBSTONE = ".deleted"


class EventLog:
    """The events of one session, with the byte offset where each seq's line ends (seq n ends at ends[n-1])."""

    def __init__(self, path: Path, fsync: str):
        self.path = path
        self.fsync_policy = fsync
        self.ends: list[int] = []
        self.repaired_bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._load()
        # Opened at the first append and closed when the session closes: reading a session's history holds no
        # descriptor, so thousands of stored sessions cost no file handles.
        self.fd: int | None = None

    @property
    def last_seq(self) -> int:
        return len(self.ends)

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.path.touch(mode=0o600)
            return
        good = len(data)
        # A torn last line (crash mid-write, or power loss with the tail unflushed) is cut off, never fatal.
        if data and not data.endswith(b"\n"):
            good = data.rfind(b"\n") + 1
        while good > 0:
            start = data.rfind(b"\n", 0, good - 1) + 1
            try:
                json.loads(data[start:good])
                break
            except ValueError:
                good = start
        if good != len(data):
            self.repaired_bytes = len(data) - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        pos = data.find(b"\n", 0, good)
        while pos != -1:
            self.ends.append(pos + 1)
            pos = data.find(b"\n", pos + 1, good)

    def append(self, line: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        view = memoryview(line)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.ends.append(self.size + len(line))
        if self.fsync_policy == "always":
            os.fsync(self.fd)

    def sync(self) -> None:
        if self.fsync_policy != "never" and self.fd is not None:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def offset_of(self, seq: int) -> int:
        """Byte offset where the line of `seq` starts."""
        return 0 if seq <= 1 else self.ends[seq - 2]

    def read(self, first_seq: int, last_seq: int) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, json line without newline) for first_seq..last_seq, reading in large chunks."""
        if first_seq > last_seq:
            return
        start, end = self.offset_of(first_seq), self.ends[last_seq - 1]
        seq = first_seq
        carry = b""
        with open(self.path, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(READ_CHUNK, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()
                for line in lines:
                    yield seq, line
                    seq += 1

    def last_event(self) -> dict | None:
        if not self.ends:
            return None
        for _, line in self.read(self.last_seq, self.last_seq):
            return json.loads(line)
        return None

    def find_event_id(self, event_id: str) -> int | None:
        needle = f'"id":"{event_id}"'.encode()
        for seq, line in self.read(1, self.last_seq):
            if needle in line:
                return seq
        return None


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
