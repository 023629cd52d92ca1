"""A session's derived state: a fold over its events, and the snapshot file that saves replaying them.

`Fold` is a pure function of the events up to its `seq`: the conversation (user and assistant messages with their
turn), the turn in progress and its partial text, token usage summed over the turns that reported it, and how the
last turn ended. It is the same whether built live, event by event, or from `snapshot.json` plus the log's tail.

`snapshot.json` is a fold written atomically (temp file, fsync, rename, fsync of the directory) with the seq and the
event id it stands for. A snapshot that is missing, torn, from another schema, of another session, or ahead of or not
matching its log is ignored (and a new one written): the log is the source of truth, the snapshot a shortcut.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .eventlog import EventLog

log = logging.getLogger("breadboard_engine.state")

SNAPSHOT_NAME = "snapshot.json"
SNAPSHOT_SCHEMA = 1
# The event types that change a fold; a line of any other type only moves its seq (found without parsing it).
FOLDED = (b'"type":"user_message"', b'"type":"turn_start"', b'"type":"assistant_', b'"type":"run_finished"')


class Fold:
    __slots__ = ("seq", "event_id", "turns", "conversation", "turn", "usage", "last_turn")

    def __init__(self) -> None:
        self.seq = 0
        self.event_id: str | None = None
        self.turns = 0
        self.conversation: list[dict] = []
        self.turn: dict | None = None  # the turn in progress
        self.usage: dict | None = None
        self.last_turn: dict | None = None  # how the last finished turn ended

    def apply(self, event: dict) -> None:
        self.seq = event["seq"]
        self.event_id = event.get("id")
        kind = event.get("type")
        turn = event.get("turn")
        payload = event.get("payload") or {}
        if kind == "user_message":
            message = {"turn": turn, "role": "user", "text": payload.get("text", ""), "seq": self.seq}
            if payload.get("input_id") is not None:
                message["input_id"] = payload["input_id"]
            self.conversation.append(message)
        elif kind == "turn_start":
            self.turns = max(self.turns, turn or 0)
            self.turn = {"turn": turn, "mode": payload.get("mode"), "partial_text": "", "started_seq": self.seq}
        elif kind == "assistant_delta":
            if self.turn is not None and self.turn["turn"] == turn:
                self.turn["partial_text"] += payload.get("text", "")
        elif kind == "assistant_message":
            message = {"turn": turn, "role": "assistant", "text": payload.get("text", ""), "seq": self.seq}
            if payload.get("message_id") is not None:
                message["message_id"] = payload["message_id"]
            self.conversation.append(message)
            if self.turn is not None and self.turn["turn"] == turn:
                self.turn["partial_text"] = ""  # the whole text is in the conversation now
            self._add_usage(payload.get("usage"))
        elif kind == "run_finished":
            if self.turn is not None and self.turn["turn"] == turn:
                self.turn = None
            self.last_turn = {
                "completed": bool(payload.get("completed")),
                "reason": payload.get("reason"),
                "turn": turn,
            }

    def apply_line(self, seq: int, line: bytes) -> None:
        if any(marker in line for marker in FOLDED):
            self.apply(json.loads(line))
        else:
            self.seq = seq
            self.event_id = None  # read back from the log if a snapshot needs it

    def _add_usage(self, usage) -> None:
        if not isinstance(usage, dict):
            return
        total = dict(self.usage or {})
        for key, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
        self.usage = total

    def history(self) -> list[tuple[str, str]]:
        """The conversation as a provider takes it: (role, text)."""
        return [(m["role"], m["text"]) for m in self.conversation]

    def doc(self) -> dict:
        return {
            "turns": self.turns,
            "conversation": self.conversation,
            "turn_in_progress": self.turn,
            "usage": self.usage,
            "last_turn": self.last_turn,
        }

    @classmethod
    def from_doc(cls, doc: dict, seq: int, event_id: str | None) -> Fold:
        fold = cls()
        fold.seq = seq
        fold.event_id = event_id
        fold.turns = int(doc["turns"])
        fold.conversation = list(doc["conversation"])
        fold.turn = doc["turn_in_progress"]
        fold.usage = doc["usage"]
        fold.last_turn = doc["last_turn"]
        return fold


# -- snapshots -----------------------------------------------------------------------------------------------------
def snapshot_bytes(session_id: str, fold: Fold, events: EventLog) -> bytes:
    """The snapshot of `fold`, serialised now (on the loop), so that writing it elsewhere races nothing."""
    event_id = fold.event_id
    if event_id is None and fold.seq:
        line = events.line(fold.seq)
        event_id = json.loads(line).get("id") if line else None
        fold.event_id = event_id
    doc = {"schema": SNAPSHOT_SCHEMA, "session_id": session_id, "seq": fold.seq, "event_id": event_id, **fold.doc()}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def write_snapshot(directory: Path, data: bytes) -> None:
    """Atomic: a reader (or a crash) sees the old snapshot or the new one, never a mix."""
    path = directory / SNAPSHOT_NAME
    tmp = directory / f".{SNAPSHOT_NAME}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(directory: Path, session_id: str, events: EventLog) -> tuple[Fold | None, str | None]:
    """The snapshot's fold, or (None, why it was not usable); why is None when there is simply none."""
    path = directory / SNAPSHOT_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror}"
    try:
        doc = json.loads(raw)
    except ValueError:
        return None, "it is torn (not JSON)"
    if not isinstance(doc, dict) or doc.get("schema") != SNAPSHOT_SCHEMA:
        schema = doc.get("schema") if isinstance(doc, dict) else None
        return None, f"it has schema {schema!r}, this engine writes {SNAPSHOT_SCHEMA}"
    if doc.get("session_id") != session_id:
        return None, "it is another session's"
    seq = doc.get("seq")
    if not isinstance(seq, int) or seq < 0 or seq > events.last_seq:
        return None, f"it is at seq {seq}, past the log's end ({events.last_seq})"
    if seq:
        line = events.line(seq)
        if line is None or f'"id":"{doc.get("event_id")}"'.encode() not in line:
            return None, f"its event at seq {seq} is not the log's"
    try:
        return Fold.from_doc(doc, seq, doc.get("event_id")), None
    except (KeyError, TypeError, ValueError):
        return None, "its fields do not parse"


def build_fold(directory: Path, session_id: str, events: EventLog, upto: int) -> tuple[Fold, int | None]:
    """The fold at seq `upto`: the snapshot plus the log after it (the whole log when there is no usable snapshot).
    Returns (fold, the seq of the snapshot it started from, or None when there was none usable)."""
    fold, why = read_snapshot(directory, session_id, events)
    if why is not None:
        log.warning("session %s: ignored its snapshot (%s); rebuilding it from the event log", session_id, why)
    if fold is None or fold.seq > upto:
        fold, base = Fold(), None
    else:
        base = fold.seq
    for seq, line in events.read(fold.seq + 1, upto):
        fold.apply_line(seq, line)
    return fold, base
