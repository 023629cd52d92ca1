"""One session's append-only event log, `events.jsonl`, and its sidecar offset index, `events.idx`.

The log is the source of truth. The index holds where each seq's line ends (little-endian u64, entry n-1 for seq n),
so opening a session reads a few bytes at its end instead of the whole log, and memory per open session stays the
same however long it is. The index is a cache of the log, never fsynced: after a crash it may lag the log (the tail
past it is scanned and indexed on open) or run ahead of a log whose tail was lost (entries past the log's end are
dropped); an index that does not match its log at all is rebuilt from the log, in chunks.

Event ids are UUIDs (version 8) that carry their seq in the low 48 bits, so a resume by id reads one line; an id of an
older log (random UUIDv4) is searched backwards from the end, newest first.
"""

from __future__ import annotations

import collections
import json
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

READ_CHUNK = 1 << 20
ENTRY = struct.Struct("<Q")
INDEX_NAME = "events.idx"
SEQ_BITS = 48
SEQ_MASK = (1 << SEQ_BITS) - 1
TAIL_CHECK = 64  # lines at the end of a scanned log checked for a torn (unparseable) write


def new_event_id(seq: int) -> str:
    """A UUIDv8 with `seq` in its low 48 bits and 74 random bits (RFC 9562 version and variant set)."""
    high = int.from_bytes(os.urandom(8), "big")
    high = (high & ~(0xF << 12)) | (0x8 << 12)
    low = (0b10 << 62) | ((int.from_bytes(os.urandom(2), "big") & 0x3FFF) << SEQ_BITS) | (seq & SEQ_MASK)
    return str(uuid.UUID(int=(high << 64) | low))


def seq_of_event_id(event_id: str) -> int | None:
    """The seq a version-8 event id carries; None for any other string."""
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        return None
    return parsed.int & SEQ_MASK if parsed.version == 8 else None


class EventLog:
    def __init__(self, path: Path, fsync: str):
        self.path = path
        self.index_path = path.with_name(INDEX_NAME)
        self.fsync_policy = fsync
        self.repaired_bytes = 0
        self.index_rebuilt = False
        self._count = 0
        self._size = 0
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._load()
        # Opened at the first append and closed when the session closes: reading a session's history holds no
        # descriptor, so thousands of stored sessions cost no file handles.
        self.fd: int | None = None
        self.index_fd: int | None = None

    @property
    def last_seq(self) -> int:
        return self._count

    @property
    def size(self) -> int:
        return self._size

    # -- opening ---------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            self.path.touch(mode=0o600)
            size = 0
        entries, indexed_end = self._trusted_index(size)
        with open(self.index_path, "r+b" if self.index_path.exists() else "w+b") as index:
            index.truncate(entries * ENTRY.size)
            index.seek(entries * ENTRY.size)
            count, good = self._index_tail(index, entries, indexed_end, size)
            index.truncate(count * ENTRY.size)
        os.chmod(self.index_path, 0o600)
        if good != size:
            self.repaired_bytes = size - good
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        self._count = count
        self._size = good

    def _trusted_index(self, size: int) -> tuple[int, int]:
        """How many index entries fit the log (and where the last of them ends): the last entry must end inside the
        log, on a newline, after a line whose seq is that entry's."""
        try:
            with open(self.index_path, "rb") as f:
                entries = os.fstat(f.fileno()).st_size // ENTRY.size
                # Entries past the log's end: the log lost its tail (power loss), the index did not.
                while entries > 0:
                    end = self._entry(f, entries - 1)
                    if end <= size:
                        break
                    entries -= 1
                if entries == 0:
                    return 0, 0
                end = self._entry(f, entries - 1)
                start = self._entry(f, entries - 2) if entries > 1 else 0
        except FileNotFoundError:
            self.index_rebuilt = size > 0
            return 0, 0
        with open(self.path, "rb") as log:
            log.seek(start)
            line = log.read(end - start)
        try:
            if line.endswith(b"\n") and json.loads(line).get("seq") == entries:
                return entries, end
        except (ValueError, AttributeError):
            pass
        self.index_rebuilt = True  # not this log's index: rebuilt from the log
        return 0, 0

    @staticmethod
    def _entry(f, n: int) -> int:
        f.seek(n * ENTRY.size)
        return ENTRY.unpack(f.read(ENTRY.size))[0]

    def _index_tail(self, index, count: int, start: int, size: int) -> tuple[int, int]:
        """Indexes the lines after `start`, read in chunks; returns the entry count and where the good part of the
        log ends. A torn last line (crash mid-write, or power loss with the tail unflushed) is cut off, never
        fatal."""
        recent: collections.deque[int] = collections.deque([start], maxlen=TAIL_CHECK + 1)
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < size:
                chunk = f.read(min(READ_CHUNK, size - pos))
                if not chunk:
                    break
                batch = []
                found = chunk.find(b"\n")
                while found != -1:
                    batch.append(pos + found + 1)
                    found = chunk.find(b"\n", found + 1)
                pos += len(chunk)
                if batch:
                    index.write(b"".join(ENTRY.pack(end) for end in batch))
                    recent.extend(batch)
                    count += len(batch)
            # The last complete lines must parse (a write torn inside a line): walk back over any that do not.
            while len(recent) > 1:
                f.seek(recent[-2])
                try:
                    json.loads(f.read(recent[-1] - recent[-2]))
                    break
                except ValueError:
                    recent.pop()
                    count -= 1
        return count, recent[-1]

    # -- writing ---------------------------------------------------------------------------------------------------
    def append(self, line: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self.index_fd = os.open(self.index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        view = memoryview(line)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self._size += len(line)
        self._count += 1
        os.write(self.index_fd, ENTRY.pack(self._size))
        if self.fsync_policy == "always":
            os.fsync(self.fd)

    def sync(self) -> None:
        if self.fsync_policy != "never" and self.fd is not None:
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        if self.index_fd is not None:
            fd, self.index_fd = self.index_fd, None
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------------------------------
    def _ends(self, first_seq: int, last_seq: int) -> tuple[int, int]:
        """Byte offsets where the line of `first_seq` starts and the line of `last_seq` ends."""
        with open(self.index_path, "rb") as f:
            start = 0 if first_seq <= 1 else self._entry(f, first_seq - 2)
            end = self._entry(f, last_seq - 1)
        return start, end

    def offset_of(self, seq: int) -> int:
        """Byte offset where the line of `seq` starts."""
        return 0 if seq <= 1 else self._ends(seq - 1, seq - 1)[1]

    def read(self, first_seq: int, last_seq: int) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, json line without newline) for first_seq..last_seq, reading in large chunks."""
        first_seq = max(first_seq, 1)
        last_seq = min(last_seq, self._count)
        if first_seq > last_seq:
            return
        start, end = self._ends(first_seq, last_seq)
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

    def line(self, seq: int) -> bytes | None:
        for _, line in self.read(seq, seq):
            return line
        return None

    def last_event(self) -> dict | None:
        line = self.line(self._count) if self._count else None
        return json.loads(line) if line is not None else None

    def find_event_id(self, event_id: str) -> int | None:
        needle = f'"id":"{event_id}"'.encode()
        seq = seq_of_event_id(event_id)
        if seq is not None:
            line = self.line(seq) if 1 <= seq <= self._count else None
            return seq if line is not None and needle in line else None
        return self._search_backwards(needle)

    def _search_backwards(self, needle: bytes) -> int | None:
        """The seq of the newest line holding `needle`, read from the end in chunks (ids of logs written before ids
        carried their seq)."""
        end = self._size
        with open(self.path, "rb") as f:
            while end > 0:
                start = max(0, end - READ_CHUNK)
                f.seek(start)
                chunk = f.read(end - start + len(needle))  # overlaps the previous chunk by the needle's length
                found = chunk.rfind(needle)
                if found != -1:
                    return json.loads(self._line_around(f, start + found)).get("seq")
                end = start
        return None

    @staticmethod
    def _line_around(f, pos: int) -> bytes:
        begin = pos
        while begin > 0:
            step = min(4096, begin)
            f.seek(begin - step)
            cut = f.read(step).rfind(b"\n")
            if cut != -1:
                begin = begin - step + cut + 1
                break
            begin -= step
        f.seek(begin)
        return f.readline()
