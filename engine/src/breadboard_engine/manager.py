"""Sessions: creation, commands, the event pipeline (log first, then fan-out), derived state and recovery.

The turn runner is in runner.py and the SSE stream in streaming.py; both go through this manager's `publish` and
`set_status`, the one place an event is numbered and a status change is announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from . import providers
from .errors import (
    CommandNotImplemented,
    InvalidCommand,
    ResumeWindowExceeded,
    SessionClosed,
    SessionNotFound,
    StorageFailed,
    why,
)
from .eventlog import EventLog, new_event_id
from .fanout import (
    CLOSE_GOING_AWAY,
    KICKED,
    SESSIONS_TOPIC,
    Bus,
    Connection,
    Subscriber,
    dumps,
    event_message,
    session_topic,
)
from .protocol import SessionSummary
from .ray_runtime import RayRuntime
from .settings import Settings
from .state import Fold, build_fold, snapshot_bytes, write_snapshot
from .store import CLOSED, LIVE, TOMBSTONE, SessionIndex, SessionRow, iso_now, open_index, remove_session_dir
from .version import PROTOCOL_VERSION

log = logging.getLogger("breadboard_engine.sessions")

KICK_GRACE_S = 1.0
ACTIVITY_EVERY_S = 1.0  # at most one `activity` per session per second on the `sessions` topic

# Commands upstream's session runner takes that this engine has no counterpart for yet (no checkpoints, permissions,
# skills or child sessions): they get 501, not 400, so a client can tell "not here" from "misspelt".
UPSTREAM_ONLY_COMMANDS = frozenset(
    {
        "list_checkpoints",
        "restore_checkpoint",
        "permission_decision",
        "respond_permission",
        "permission_response",
        "set_skills",
        "session_child_next",
        "session_child_previous",
        "session_parent",
        "run_tests",
        "apply_diff",
    }
)


def turn_id(session_id: str, turn: int) -> str:
    return f"{session_id}:turn:{turn}"


class Session:
    def __init__(self, row: SessionRow, root: Path, fsync: str):
        self.row = row
        self._root = root
        self._dir: Path | None = None
        self._fsync = fsync
        self._log: EventLog | None = None
        self.subscribers: set[Subscriber] = set()
        self.inputs: asyncio.Queue = asyncio.Queue()
        self.runner: asyncio.Task | None = None
        self.turn = 0
        self.next_step = 0  # the step id of the next event of the current turn
        self.in_turn = False
        self.idle = asyncio.Event()  # set while no turn runs
        self.idle.set()
        self.closing = False
        # The task streaming the current turn; the `stop` command cancels it and only it.
        self.turn_work: asyncio.Task | None = None
        self.plan: tuple[str, dict] = ("echo", {})  # provider and request of the current turn
        # The derived state, once something needed it; then kept current by every publish.
        self.fold: Fold | None = None
        self.fold_task: asyncio.Task | None = None
        self.snapshot_seq = 0  # seq of the snapshot on disk (0: none known)
        self.snapshot_task: asyncio.Task | None = None
        self.snapshot_again = False
        self.activity_at = 0.0
        self.activity_timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = self._root / self.row.id
        return self._dir

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = EventLog(self.dir / "events.jsonl", self._fsync)
            if self._log.repaired_bytes:
                log.warning(
                    "session %s: cut a torn tail of %d bytes from its event log", self.id, self._log.repaired_bytes
                )
            if self._log.index_rebuilt:
                log.info("session %s: rebuilt the offset index of its event log", self.id)
            self.row.last_seq = self._log.last_seq
            last = self._log.last_event() or {}
            self.turn = last.get("turn") or 0
            step = last.get("step_id")
            self.next_step = step + 1 if isinstance(step, int) else 0
        return self._log

    @property
    def oneshot(self) -> bool:
        meta = self.row.metadata or {}
        return meta.get("cli_session_kind") == "oneshot" or bool(meta.get("non_interactive_cli_session"))

    @property
    def streaming(self) -> bool:
        """Whether more events can come without a new input (a runner is alive)."""
        return self.runner is not None and not self.runner.done()

    def summary(self) -> dict:
        meta = self.row.metadata or {}
        summary = {
            "session_id": self.id,
            "status": self.row.status,
            "created_at": self.row.created_at,
            "last_activity_at": self.row.updated_at,
            "updated_at": self.row.updated_at,
            "model": meta.get("model"),
            "mode": meta.get("mode"),
            "provider": self.row.provider,
            "completion_summary": self.row.completion_summary,
            "reward_summary": None,
            "logging_dir": None,
            "metadata": meta,
            "last_seq": self.row.last_seq,
            "protocol_version": self.row.protocol_version,
            "config_hash": self.row.config_hash,
        }
        return SessionSummary.emit(summary)

    def state(self, fold: Fold) -> dict:
        """`GET /v1/sessions/{id}/state`: the fold, with the session's settings and status as they are now."""
        meta = self.row.metadata or {}
        return {
            "session_id": self.id,
            "status": self.row.status,
            "provider": self.row.provider,
            "model": meta.get("model"),
            "mode": meta.get("mode"),
            "last_seq": fold.seq,
            **fold.doc(),
        }


class SessionManager:
    def __init__(self, settings: Settings, ray: RayRuntime):
        from .runner import TurnRunner

        self.settings = settings
        self.ray = ray
        self.sessions: dict[str, Session] = {}
        self.index: SessionIndex | None = None
        self.store_open = False
        self.stopping = False
        self.bus = Bus(settings.realtime_queue)
        self.runner = TurnRunner(self)
        # Sessions holding their derived state in memory, least recently used first: at most `state_cache` of the
        # ones nobody is using keep it (a live session, or one watched on the bus, always does).
        self._folds: OrderedDict[str, None] = OrderedDict()

    # -- start-up and recovery -------------------------------------------------------------------------------------
    def open(self) -> None:
        root = self.settings.sessions_dir
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.settings.data_dir / "sessions.sqlite3"
        self.index, found, corrupt = open_index(path)
        if corrupt is not None:
            aside, reason = corrupt
            log.error(
                "the session index %s could not be read (%s): moved it aside to %s and rebuilt it from the event logs",
                path,
                reason,
                aside,
            )
        rows = {row.id: row for row in found}
        # Plain strings, not Paths, in this loop: it runs once per stored session before the port opens.
        base = str(root)
        for entry in sorted(os.listdir(base)):
            directory = os.path.join(base, entry)
            if os.path.exists(os.path.join(directory, TOMBSTONE)):  # a delete that a crash interrupted: finish it
                self.index.delete(entry)
                rows.pop(entry, None)
                remove_session_dir(Path(directory))
            elif entry not in rows and os.path.exists(os.path.join(directory, "events.jsonl")):
                if os.stat(os.path.join(directory, "events.jsonl")).st_size == 0:
                    # A create cut off before its row was written (a crash, a full disk): nothing to keep.
                    remove_session_dir(Path(directory))
                    continue
                rows[entry] = self._rehydrate(entry, Path(directory))
        for row in rows.values():
            session = Session(row, root, self.settings.fsync)
            self.sessions[row.id] = session
            if row.status in LIVE:
                self._mark_interrupted(session)
        self.store_open = True

    def _rehydrate(self, session_id: str, directory: Path) -> SessionRow:
        """A log without an index row (the index was lost): rebuild the row from the log."""
        events = EventLog(directory / "events.jsonl", "never")
        first = next((json.loads(line) for _, line in events.read(1, 1)), None)
        events.close()
        created = iso_from_ms(first["timestamp_ms"]) if first else iso_now()
        row = SessionRow(id=session_id, status="running", created_at=created, updated_at=created)
        if first and first.get("type") == "user_message":
            row.task = first["payload"].get("text", "")
        self.index.upsert(row)
        return row

    def _mark_interrupted(self, session: Session) -> None:
        """The engine stopped (or died) while this session's runner was alive."""
        last = session.log.last_event()
        if last is not None and last.get("type") != "run_finished" and last.get("type") != "turn_end":
            # Close the cut turn so a client waiting for run_finished is not left hanging.
            turn = last.get("turn") or session.turn
            reason = "interrupted"
            self.publish(session, "error", {"message": "the engine stopped during this turn", "reason": reason}, turn)
            self.publish(session, "completion", {"summary": {"completed": False, "reason": reason}}, turn)
            finished = {"eventCount": 0, "completed": False, "reason": reason, "logging_dir": None}
            self.publish(session, "run_finished", finished, turn)
            session.log.sync()
        self.set_status(session, "interrupted")
        session.log.close()  # no runner now; the next input reopens it

    # -- sessions --------------------------------------------------------------------------------------------------
    def create(self, task: str, config_path: str | None, metadata: dict | None, provider: str | None) -> Session:
        if provider is not None and provider not in ("echo", "openai", "replay"):
            raise ValueError(f"unknown provider {provider!r} (known: echo, openai, replay)")
        self.check_replay(task)
        now = iso_now()
        metadata = dict(metadata or {})
        if config_path:
            metadata.setdefault("config_path", config_path)
        config = json.dumps({"config_path": config_path, "provider": provider, "model": metadata.get("model")})
        row = SessionRow(
            id=str(uuid.uuid4()),
            status="starting",
            created_at=now,
            updated_at=now,
            task=task,
            provider=provider,
            config_path=config_path,
            config_hash=hashlib.sha256(config.encode()).hexdigest()[:16],
            metadata=metadata,
        )
        session = Session(row, self.settings.sessions_dir, self.settings.fsync)
        session.fold = Fold()  # a new session's state is known: it is empty
        self._keep_fold(session)
        first_input = task if task.strip() else None
        try:
            session.log  # noqa: B018 - creates the directory and the (empty) log before the row exists
            self.set_status(session, "running", announce=False)
            if first_input is not None:
                # The first events are written before the answer, so a log that cannot be written is this
                # request's error, not a session left behind with nothing in it.
                self.runner.begin_turn(session, first_input)
        except (OSError, sqlite3.Error) as exc:
            self._forget_failed_create(session)
            raise StorageFailed(f"cannot store the new session in {self.settings.data_dir}: {why(exc)}") from exc
        self.sessions[row.id] = session
        self._announce(session, "created")
        self.runner.start(session, first_input, begun=True)
        return session

    def _forget_failed_create(self, session: Session) -> None:
        if session._log is not None:
            session._log.close()
        with contextlib.suppress(OSError, sqlite3.Error):
            self.index.delete(session.id)
        with contextlib.suppress(OSError):  # an unwritable dir: the next start removes the empty leftover
            remove_session_dir(session.dir)

    def check_replay(self, content: str) -> None:
        path = providers.replay_path(content)
        if path is not None:
            providers.resolve_replay(path, self.settings.replay_dir)

    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    def list(self) -> list[Session]:
        return sorted(self.sessions.values(), key=lambda s: s.row.created_at)

    def post_input(self, session_id: str, content: str, input_id: str | None = None) -> None:
        session = self.get(session_id)
        if session.row.status in CLOSED:
            raise SessionClosed(f"session is {session.row.status}")
        if session.closing:
            raise SessionClosed("session is closing")
        self.check_replay(content)
        if session.streaming:
            session.inputs.put_nowait((content, input_id))
        else:  # interrupted by a restart: pick the conversation up again
            self.set_status(session, "running")
            self.runner.start(session, content, input_id=input_id)

    async def command(self, session_id: str, name: str, payload: dict) -> dict:
        """Upstream's `POST /v1/sessions/{id}/command`: returns the `detail` of the 202 answer."""
        session = self.get(session_id)
        if name in ("set_model", "set_mode"):
            key = name.removeprefix("set_")
            value = payload.get(key)
            if not isinstance(value, str) or not value.strip():
                raise InvalidCommand(f"{name} needs payload.{key}, a non-empty string")
            if session.row.status in CLOSED:
                raise SessionClosed(f"session is {session.row.status}")
            session.row.metadata = {**(session.row.metadata or {}), key: value}
            self.set_status(session, session.row.status)  # persists the metadata
            return {"status": "ok", key: value}
        if name == "stop":
            return {"status": "ok", "stopped": self._stop_turn(session)}
        if name == "close":
            return await self.close(session)
        if name in UPSTREAM_ONLY_COMMANDS:
            raise CommandNotImplemented(name)
        raise InvalidCommand(f"Unsupported command: {name}")

    def _stop_turn(self, session: Session) -> bool:
        work = session.turn_work
        stopping = work is not None and not work.done()
        if stopping:
            work.cancel()
        return stopping

    async def close(self, session: Session) -> dict:
        """Ends the session for good and keeps its history: a running turn is stopped (and ends with its
        `run_finished`), inputs still queued behind it are dropped, the status becomes `stopped`, and every stream of
        it ends. Closing a closed session changes nothing."""
        if session.row.status in CLOSED or session.closing:
            return {"status": "ok", "closed": False, "stopped": False}
        session.closing = True
        stopped = self._stop_turn(session)
        await session.idle.wait()
        if session.row.status not in CLOSED:  # a one-shot session's runner may have ended it meanwhile
            self.set_status(session, "stopped")
        await self._stop_runner(session)
        self.close_streams(session)
        if session._log is not None:
            session._log.sync()
            session._log.close()
        await self.save_snapshot(session)
        return {"status": "ok", "closed": True, "stopped": stopped}

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        await self._stop_runner(session)
        self.close_streams(session)
        if session.snapshot_task is not None:
            await asyncio.wait({session.snapshot_task})
        (session.dir / TOMBSTONE).touch()
        self.index.delete(session.id)
        if session._log is not None:
            session._log.close()
        del self.sessions[session.id]
        topic = session_topic(session.id)
        gone = dumps({"type": "error", "message": "the session was deleted", "topic": topic})
        for conn in list(self.bus.topics.get(topic, ())):
            self.bus.send(conn, gone)
            self.bus.unsubscribe(conn, topic)
        self.bus.publish(SESSIONS_TOPIC, self._change("deleted", session))
        await asyncio.to_thread(remove_session_dir, session.dir)

    async def _stop_runner(self, session: Session) -> None:
        if session.runner is not None and not session.runner.done():
            session.runner.cancel()
            try:
                await session.runner
            except asyncio.CancelledError:
                pass

    # -- events ----------------------------------------------------------------------------------------------------
    def publish(self, session: Session, kind: str, payload: dict, turn: int | None, step: int | None = None) -> None:
        """Append to the log, then hand to followers. Runs on the loop with no await: seq order is write order.

        An event of a turn carries `turn_id` and `step_id` (its index within the turn: the engine's own events
        numbered in order, a provider's by the step it was produced at), so a consumer can order and deduplicate
        without trusting arrival order."""
        events = session.log
        seq = events.last_seq + 1
        now_ms = int(time.time() * 1000)
        envelope = {
            "id": new_event_id(seq),
            "seq": seq,
            "type": kind,
            "session_id": session.id,
            "turn": turn,
            "timestamp": now_ms,
            "timestamp_ms": now_ms,
            "protocol_version": PROTOCOL_VERSION,
            "payload": payload,
        }
        if turn is not None:
            step = session.next_step if step is None else step
            session.next_step = step + 1
            envelope["turn_id"] = turn_id(session.id, turn)
            envelope["step_id"] = step
        line = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        events.append(line + b"\n")
        session.row.last_seq = seq
        if session.fold is not None:
            session.fold.apply(envelope)
            if seq - session.snapshot_seq >= self.settings.snapshot_every:
                self._snapshot_soon(session)
        if session.subscribers:
            frame = b"id: %d\ndata: %s\n\n" % (seq, line)
            for sub in list(session.subscribers):
                if not sub.offer(frame):
                    self._kick(session, sub)
        topic = session_topic(session.id)
        if self.bus.has(topic):
            self.bus.publish(topic, event_message(topic, line), seq)
        if self.bus.has(SESSIONS_TOPIC):
            self._activity(session)

    def _kick(self, session: Session, sub: Subscriber) -> None:
        """Disconnect a follower that fell a whole queue behind; it resumes from its last id."""
        session.subscribers.discard(sub)
        log.warning("session %s: a follower fell %d events behind and was disconnected", session.id, sub.queue.qsize())
        sub.kicked = True
        sub.end(KICKED)
        task = sub.task

        def cancel_if_stuck() -> None:
            # A client that stopped reading blocks its response in send(); only cancelling frees it.
            if task is not None and not task.done():
                task.cancel()

        asyncio.get_running_loop().call_later(KICK_GRACE_S, cancel_if_stuck)

    def close_streams(self, session: Session) -> None:
        """End every SSE stream of the session (its followers see the end of the stream)."""
        for sub in list(session.subscribers):
            sub.end()
        session.subscribers.clear()

    def set_status(self, session: Session, status: str, announce: bool = True) -> None:
        changed = status != session.row.status
        session.row.status = status
        session.row.updated_at = iso_now()
        self.index.upsert(session.row)
        if changed and announce:
            self._announce(session, "status")

    def resolve_resume(self, session: Session, last_event_id: str | None) -> int:
        """The seq a stream resumes after. A resume point that does not exist is a 409."""
        events = session.log
        if last_event_id is None:
            return 0
        value = last_event_id.strip()
        if value.isdigit():
            seq = int(value)
            if seq <= events.last_seq:
                return seq
        else:
            found = events.find_event_id(value)
            if found is not None:
                return found
        raise ResumeWindowExceeded(last_event_id, events.last_seq)

    # -- derived state and snapshots -------------------------------------------------------------------------------
    async def fold(self, session: Session) -> Fold:
        """The session's derived state, current to its last event. Built once (snapshot plus the log's tail, in a
        thread), then kept current by `publish`."""
        if session.fold is not None:
            self._keep_fold(session)
            return session.fold
        if session.fold_task is None:
            session.fold_task = asyncio.ensure_future(self._build_fold(session))
        return await asyncio.shield(session.fold_task)

    async def _build_fold(self, session: Session) -> Fold:
        try:
            events = session.log
            fold, base = await asyncio.to_thread(build_fold, session.dir, session.id, events, events.last_seq)
            # What was appended meanwhile, on the loop with no await: from here on `publish` keeps it current.
            for seq, line in events.read(fold.seq + 1, events.last_seq):
                fold.apply_line(seq, line)
            session.fold = fold
            session.snapshot_seq = base or 0
            if fold.seq and (base is None or fold.seq - base >= self.settings.snapshot_every):
                self._snapshot_soon(session)
            self._keep_fold(session)
            return fold
        finally:
            session.fold_task = None

    def _keep_fold(self, session: Session) -> None:
        """Marks the session's state as just used, and lets go of the least recently used states beyond the cache
        that no live session or bus subscriber needs. A state let go is on disk first (its snapshot), so the next
        read is the snapshot plus the log's tail."""
        self._folds[session.id] = None
        self._folds.move_to_end(session.id)
        over = len(self._folds) - self.settings.state_cache
        for sid in list(self._folds):
            if over <= 0:
                break
            other = self.sessions.get(sid)
            if other is None or other.fold is None:
                del self._folds[sid]
                over -= 1
                continue
            if other is session or other.streaming or other.in_turn or self.bus.has(session_topic(sid)):
                continue
            if other.fold.seq > other.snapshot_seq:
                self._snapshot_soon(other)
            other.fold = None
            del self._folds[sid]
            over -= 1

    def states_in_memory(self) -> int:
        return sum(1 for s in self.sessions.values() if s.fold is not None)

    def _snapshot_soon(self, session: Session) -> None:
        """Write the snapshot in a thread; one write at a time per session (a request meanwhile writes again after)."""
        if session.snapshot_task is not None:
            session.snapshot_again = True
            return
        data = snapshot_bytes(session.id, session.fold, session.log)
        session.snapshot_seq = session.fold.seq
        session.snapshot_again = False
        task = asyncio.ensure_future(asyncio.to_thread(write_snapshot, session.dir, data))
        session.snapshot_task = task

        def done(task: asyncio.Task) -> None:
            session.snapshot_task = None
            if not task.cancelled() and task.exception() is not None:
                log.warning("session %s: cannot write its snapshot: %s", session.id, why(task.exception()))
            elif session.snapshot_again and session.id in self.sessions and session.fold is not None:
                self._snapshot_soon(session)

        task.add_done_callback(done)

    async def save_snapshot(self, session: Session) -> None:
        """A snapshot current to the last event, on disk before this returns (at close and at shutdown)."""
        if session.snapshot_task is not None:
            await asyncio.wait({session.snapshot_task})
        if session.fold is not None and session.fold.seq > session.snapshot_seq:
            self._snapshot_soon(session)
            if session.snapshot_task is not None:
                await asyncio.wait({session.snapshot_task})

    async def state(self, session_id: str) -> dict:
        session = self.get(session_id)
        return session.state(await self.fold(session))

    # -- the realtime bus ------------------------------------------------------------------------------------------
    def _change(self, kind: str, session: Session, **fields) -> str:
        payload = {"kind": kind, "session_id": session.id, **fields}
        if kind in ("created", "status"):
            payload["summary"] = session.summary()
        return dumps({"type": "event", "topic": SESSIONS_TOPIC, "payload": payload})

    def _announce(self, session: Session, kind: str) -> None:
        if self.bus.has(SESSIONS_TOPIC):
            self.bus.publish(SESSIONS_TOPIC, self._change(kind, session))

    def _activity(self, session: Session) -> None:
        if session.activity_timer is not None:
            return  # one is due: it will carry the latest seq
        loop = asyncio.get_running_loop()
        wait = session.activity_at + ACTIVITY_EVERY_S - loop.time()
        if wait <= 0:
            self._send_activity(session)
        else:
            session.activity_timer = loop.call_later(wait, self._send_activity, session)

    def _send_activity(self, session: Session) -> None:
        session.activity_timer = None
        if session.id in self.sessions:  # not before it is announced `created`
            session.activity_at = asyncio.get_running_loop().time()
            change = self._change("activity", session, last_seq=session.row.last_seq, last_activity_at=iso_now())
            self.bus.publish(SESSIONS_TOPIC, change)

    async def subscribe(self, conn: Connection, topic: str) -> str | None:
        """Subscribes `conn` to `topic` and queues the topic's snapshot; returns why not, or None. The snapshot and
        the subscription are taken with no await in between: every later event is queued after the snapshot, none
        is in it twice."""
        if topic == SESSIONS_TOPIC:
            self.bus.subscribe(conn, topic)
            summaries = [s.summary() for s in self.list()]
            self.bus.send(conn, dumps({"type": "snapshot", "topic": topic, "payload": summaries}))
            return None
        session_id = topic.removeprefix("session:") if topic.startswith("session:") else None
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            known = "unknown topic" if session_id is None else "no such session"
            return f"{known}: {topic!r} (topics: `sessions`, `session:<id>`)"
        fold = await self.fold(session)
        if session.id not in self.sessions or conn.closing is not None:
            return f"no such session: {topic!r}"
        self.bus.subscribe(conn, topic)
        state = session.state(fold)
        self.bus.send(conn, dumps({"type": "snapshot", "topic": topic, "payload": state}), topic, fold.seq)
        return None

    # -- shutdown --------------------------------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """No new work, and every stream and bus connection ends now (before the server waits for connections)."""
        self.stopping = True
        for session in self.sessions.values():
            self.close_streams(session)
        self.bus.close_all(CLOSE_GOING_AWAY, "engine shutting down")

    async def shutdown(self) -> None:
        """Close every stream, stop runners, and leave each session resumable (interrupted) on disk."""
        self.begin_shutdown()
        live = [s for s in self.sessions.values() if s.streaming]
        for session in live:
            await self._stop_runner(session)
        for session in live:
            if session.row.status in LIVE:
                self._mark_interrupted(session)
        for session in self.sessions.values():
            await self.save_snapshot(session)
            if session._log is not None:
                session._log.sync()
                session._log.close()
        if self.index is not None:
            self.index.close()

    def status(self) -> dict:
        total_bytes = 0
        root = self.settings.sessions_dir
        try:
            for entry in os.scandir(root):
                try:
                    total_bytes += os.stat(os.path.join(entry.path, "events.jsonl")).st_size
                except OSError:
                    pass
        except OSError:
            pass
        return {
            "eventlog": {
                "enabled": True,
                "dir": str(root),
                "sessions": len(self.sessions),
                "bytes": total_bytes,
                "fsync": self.settings.fsync,
            },
            "sessions": {
                "total": len(self.sessions),
                "running": sum(1 for s in self.sessions.values() if s.in_turn),
                "live": sum(1 for s in self.sessions.values() if s.streaming),
                "states_in_memory": self.states_in_memory(),
            },
        }


def iso_from_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"
