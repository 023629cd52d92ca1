"""Sessions: creation, turns, the event pipeline (log first, then fan-out) and recovery after a restart."""

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
from collections.abc import AsyncIterator
from pathlib import Path

from . import providers
from .protocol import SessionSummary
from .ray_runtime import RayRuntime
from .settings import Settings
from .store import TOMBSTONE, EventLog, SessionIndex, SessionRow, iso_now, open_index, remove_session_dir
from .version import PROTOCOL_VERSION

log = logging.getLogger("breadboard_engine.sessions")

CLOSED = ("completed", "failed", "stopped")  # will never run again
ONESHOT_STATUS = {"completed": "completed", "stopped": "stopped"}  # a one-shot session's status by its turn's end
LIVE = ("starting", "running")  # a runner owns the session
REPLAY_BLOCK = 4096  # events read from disk per hop to the reader thread
KICK_GRACE_S = 1.0
WRITE_CAP = 64 * 1024
_END = object()
_KICKED = object()


class SessionNotFound(Exception):
    pass


class SessionClosed(Exception):
    pass


class StorageFailed(Exception):
    """The session could not be written to disk (disk full, data dir unwritable): nothing of it was kept."""


class InvalidCommand(Exception):
    """A command this engine does not know, or one whose payload is wrong (400)."""


class CommandNotImplemented(Exception):
    """An upstream command this engine knows but does not implement (501)."""


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


class ResumeWindowExceeded(Exception):
    def __init__(self, last_event_id: str, last_seq: int):
        super().__init__(last_event_id)
        self.last_event_id = last_event_id
        self.last_seq = last_seq


class Subscriber:
    """One SSE client. Its queue is bounded: a client that falls that far behind is disconnected, not waited for."""

    __slots__ = ("queue", "kicked", "task")

    def __init__(self, size: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=size)
        self.kicked = False
        self.task: asyncio.Task | None = None

    def offer(self, frame) -> bool:
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            return False

    def end(self, marker=_END) -> None:
        if not self.offer(marker):
            self._drain()
            self.queue.put_nowait(marker)

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class Session:
    def __init__(self, row: SessionRow, directory: Path, fsync: str):
        self.row = row
        self.dir = directory
        self._fsync = fsync
        self._log: EventLog | None = None
        self.subscribers: set[Subscriber] = set()
        self.inputs: asyncio.Queue = asyncio.Queue()
        self.runner: asyncio.Task | None = None
        self.turn = 0
        self.in_turn = False
        self.history: list[tuple[str, str]] | None = None
        # The task streaming the current turn; the `stop` command cancels it and only it.
        self.turn_work: asyncio.Task | None = None
        self.plan: tuple[str, dict] = ("echo", {})  # provider and request of the current turn

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = EventLog(self.dir / "events.jsonl", self._fsync)
            if self._log.repaired_bytes:
                log.warning(
                    "session %s: cut a torn tail of %d bytes from its event log", self.id, self._log.repaired_bytes
                )
            self.row.last_seq = self._log.last_seq
            last = self._log.last_event()
            self.turn = (last or {}).get("turn") or 0
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


class SessionManager:
    def __init__(self, settings: Settings, ray: RayRuntime):
        self.settings = settings
        self.ray = ray
        self.sessions: dict[str, Session] = {}
        self.index: SessionIndex | None = None
        self.store_open = False
        self.stopping = False

    # -- start-up and recovery -------------------------------------------------------------------------------------
    def open(self) -> None:
        root = self.settings.sessions_dir
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.settings.data_dir / "sessions.sqlite3"
        self.index, found, corrupt = open_index(path)
        if corrupt is not None:
            aside, why = corrupt
            log.error(
                "the session index %s could not be read (%s): moved it aside to %s and rebuilt it from the event logs",
                path,
                why,
                aside,
            )
        rows = {row.id: row for row in found}
        for entry in sorted(os.listdir(root)):
            directory = root / entry
            if (directory / TOMBSTONE).exists():  # a delete that a crash interrupted: finish it
                self.index.delete(entry)
                rows.pop(entry, None)
                remove_session_dir(directory)
            elif entry not in rows and (directory / "events.jsonl").exists():
                if os.stat(directory / "events.jsonl").st_size == 0:
                    # A create cut off before its row was written (a crash, a full disk): nothing to keep.
                    remove_session_dir(directory)
                    continue
                rows[entry] = self._rehydrate(entry, directory)
        for row in rows.values():
            session = Session(row, root / row.id, self.settings.fsync)
            self.sessions[row.id] = session
            if row.status in LIVE:
                self._mark_interrupted(session)
        self.store_open = True

    def _rehydrate(self, session_id: str, directory: Path) -> SessionRow:
        """A log without an index row (the index was lost): rebuild the row from the log."""
        events = EventLog(directory / "events.jsonl", "never")
        first = next((json.loads(line) for _, line in events.read(1, min(1, events.last_seq))), None)
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
            self._publish(session, "error", {"message": "the engine stopped during this turn", "reason": reason}, turn)
            self._publish(session, "completion", {"summary": {"completed": False, "reason": reason}}, turn)
            finished = {"eventCount": 0, "completed": False, "reason": reason, "logging_dir": None}
            self._publish(session, "run_finished", finished, turn)
            session.log.sync()
        self._set_status(session, "interrupted")
        session.log.close()  # no runner now; the next input reopens it

    # -- sessions --------------------------------------------------------------------------------------------------
    def create(self, task: str, config_path: str | None, metadata: dict | None, provider: str | None) -> Session:
        if provider is not None and provider not in ("echo", "openai", "replay"):
            raise ValueError(f"unknown provider {provider!r} (known: echo, openai, replay)")
        self._check_replay(task)
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
        session = Session(row, self.settings.sessions_dir / row.id, self.settings.fsync)
        first_input = task if task.strip() else None
        try:
            session.log  # noqa: B018 - creates the directory and the (empty) log before the row exists
            self._set_status(session, "running")
            if first_input is not None:
                # The first events are written before the answer, so a log that cannot be written is this
                # request's error, not a session left behind with nothing in it.
                self._begin_turn(session, first_input)
        except (OSError, sqlite3.Error) as exc:
            self._forget_failed_create(session)
            raise StorageFailed(f"cannot store the new session in {self.settings.data_dir}: {_why(exc)}") from exc
        self.sessions[row.id] = session
        session.runner = asyncio.get_running_loop().create_task(self._run(session, first_input, begun=True))
        return session

    def _forget_failed_create(self, session: Session) -> None:
        if session._log is not None:
            session._log.close()
        with contextlib.suppress(OSError, sqlite3.Error):
            self.index.delete(session.id)
        with contextlib.suppress(OSError):  # an unwritable dir: the next start removes the empty leftover
            remove_session_dir(session.dir)

    def _check_replay(self, content: str) -> None:
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
        self._check_replay(content)
        if session.streaming:
            session.inputs.put_nowait((content, input_id))
        else:  # interrupted by a restart: pick the conversation up again
            self._start_runner(session, content, input_id)

    def command(self, session_id: str, name: str, payload: dict) -> dict:
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
            self._set_status(session, session.row.status)  # persists the metadata
            return {"status": "ok", key: value}
        if name == "stop":
            work = session.turn_work
            stopping = work is not None and not work.done()
            if stopping:
                work.cancel()
            return {"status": "ok", "stopped": stopping}
        if name in UPSTREAM_ONLY_COMMANDS:
            raise CommandNotImplemented(name)
        raise InvalidCommand(f"Unsupported command: {name}")

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        await self._stop_runner(session)
        self._close_streams(session)
        (session.dir / TOMBSTONE).touch()
        self.index.delete(session.id)
        if session._log is not None:
            session._log.close()
        del self.sessions[session.id]
        await asyncio.to_thread(remove_session_dir, session.dir)

    # -- the runner ------------------------------------------------------------------------------------------------
    def _start_runner(self, session: Session, first_input: str, input_id: str | None) -> None:
        self._set_status(session, "running")
        session.runner = asyncio.get_running_loop().create_task(self._run(session, first_input, input_id=input_id))

    async def _run(
        self, session: Session, first_input: str | None, begun: bool = False, input_id: str | None = None
    ) -> None:
        outcome = "completed"
        try:
            if first_input is not None:
                outcome = await self._turn(session, first_input, begun, input_id)
            if session.oneshot:
                self._set_status(session, ONESHOT_STATUS.get(outcome, "failed"))
                return
            while True:
                content, input_id = await session.inputs.get()
                await self._turn(session, content, input_id=input_id)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a bug (or a full disk) in the runner must not take the engine down
            log.exception("session %s: runner failed", session.id)
            try:
                self._set_status(session, "failed")
            except (OSError, sqlite3.Error) as exc:
                log.error("session %s: cannot record that it failed: %s", session.id, exc)
        finally:
            self._close_streams(session)
            if session.row.status in CLOSED:
                session.log.sync()
                session.log.close()

    def _plan(self, session: Session, content: str) -> tuple[str, dict]:
        meta = session.row.metadata or {}
        request: dict = {"content": content, "echo_delay_ms": meta.get("echo_delay_ms")}
        path = providers.replay_path(content)
        if path is not None:
            try:
                request["replay_path"] = providers.resolve_replay(path, self.settings.replay_dir)
            except providers.ReplayRefused as exc:  # checked when posted; the directory changed since
                request["replay_refused"] = str(exc)
            return "replay", request
        provider = session.row.provider or self.settings.provider
        if provider == "openai":
            if session.history is None:
                session.history = history_from_log(session.log)
            request["history"] = list(session.history)
            request["openai"] = {
                "base_url": os.environ.get("BREADBOARD_OPENAI_BASE_URL")
                or os.environ.get("OPENAI_BASE_URL")
                or "https://api.openai.com/v1",
                "api_key": os.environ.get("BREADBOARD_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"),
                "model": meta.get("model") or os.environ.get("BREADBOARD_OPENAI_MODEL") or "gpt-4o-mini",
            }
        return provider, request

    def _begin_turn(self, session: Session, content: str, input_id: str | None = None) -> None:
        session.log  # noqa: B018 - loads the turn counter after a restart
        session.turn += 1
        session.in_turn = True
        session.plan = self._plan(session, content)
        message = {"text": content} if input_id is None else {"text": content, "input_id": input_id}
        self._publish(session, "user_message", message, session.turn)
        self._publish(session, "turn_start", {"turn": session.turn, "mode": session.plan[0]}, session.turn)

    async def _turn(self, session: Session, content: str, begun: bool = False, input_id: str | None = None) -> str:
        """Runs one turn (its first two events already written when `begun`); returns how it ended: completed,
        stopped (the `stop` command) or error."""
        if not begun:
            self._begin_turn(session, content, input_id)
        turn = session.turn
        provider, request = session.plan
        count, error, reply = 2, None, None
        seen: set[str] = set()

        async def stream() -> None:
            nonlocal count, reply
            # aclosing: a stop that lands between batches cleans up (cancels the Ray task) now, not at GC time.
            async with contextlib.aclosing(self.ray.run_turn(provider, request)) as batches:
                async for batch in batches:
                    for event in batch:
                        kind = event["type"]
                        seen.add(kind)
                        payload = event.get("payload") or {}
                        if kind == "assistant_message":
                            reply = payload.get("text")
                        self._publish(session, kind, payload, event.get("turn", turn))
                        count += 1
                    # Let followers drain between batches: a burst published in one go would overflow every queue.
                    await asyncio.sleep(0)

        work = session.turn_work = asyncio.ensure_future(stream())
        try:
            # asyncio.wait, not `await work`: it raises CancelledError only when the runner itself is cancelled
            # (delete, shutdown), so a `stop` (which cancels `work` alone) is told apart without flags.
            await asyncio.wait({work})
        except asyncio.CancelledError:
            work.cancel()
            await asyncio.wait({work})  # its cleanup (the Ray task cancelled) finishes before the runner ends
            session.turn_work = None
            session.in_turn = False
            raise
        session.turn_work = None
        stopped = work.cancelled()
        if not stopped and work.exception() is not None:
            exc = work.exception()
            error = providers.short_error(exc)
            # The traceback is for the log; the event carries one plain line a client can show.
            log.warning("session %s: turn %d failed: %s", session.id, turn, error, exc_info=exc)
            self._publish(session, "error", {"message": error}, turn)
            count += 1
        completed = error is None and "error" not in seen and not stopped
        if stopped:
            reason = "stopped"
        elif not completed:
            reason = "error"
        else:
            reason = "replay" if provider == "replay" else "completed"
        if "completion" not in seen:
            summary = {"completed": completed, "reason": reason}
            self._publish(session, "completion", {"summary": summary, "mode": provider}, turn)
            count += 1
        outcome = "stopped" if stopped else ("completed" if completed else "error")
        if session.oneshot:
            # Final before run_finished goes out: a client that reads the session on that event sees how it ended.
            self._set_status(session, ONESHOT_STATUS.get(outcome, "failed"))
        if "run_finished" not in seen:
            finished = {"eventCount": count + 1, "completed": completed, "reason": reason, "logging_dir": None}
            self._publish(session, "run_finished", finished, turn)
        session.row.completion_summary = {"completed": completed, "reason": reason, "turn": turn}
        if session.history is not None:
            session.history.append(("user", content))
            if reply is not None:
                session.history.append(("assistant", reply))
        session.in_turn = False
        self._set_status(session, session.row.status)  # persists last_seq and the summary
        if self.settings.fsync == "turn":
            await asyncio.to_thread(session.log.sync)
        return outcome

    async def _stop_runner(self, session: Session) -> None:
        if session.runner is not None and not session.runner.done():
            session.runner.cancel()
            try:
                await session.runner
            except asyncio.CancelledError:
                pass

    # -- events ----------------------------------------------------------------------------------------------------
    def _publish(self, session: Session, kind: str, payload: dict, turn: int | None) -> None:
        """Append to the log, then hand to followers. Runs on the loop with no await: seq order is write order."""
        events = session.log
        seq = events.last_seq + 1
        now_ms = int(time.time() * 1000)
        envelope = {
            "id": str(uuid.uuid4()),
            "seq": seq,
            "type": kind,
            "session_id": session.id,
            "turn": turn,
            "timestamp": now_ms,
            "timestamp_ms": now_ms,
            "protocol_version": PROTOCOL_VERSION,
            "payload": payload,
        }
        line = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        events.append(line + b"\n")
        session.row.last_seq = seq
        if session.subscribers:
            frame = b"id: %d\ndata: %s\n\n" % (seq, line)
            for sub in list(session.subscribers):
                if not sub.offer(frame):
                    self._kick(session, sub)

    def _kick(self, session: Session, sub: Subscriber) -> None:
        """Disconnect a follower that fell a whole queue behind; it resumes from its last id."""
        session.subscribers.discard(sub)
        log.warning("session %s: a follower fell %d events behind and was disconnected", session.id, sub.queue.qsize())
        sub.kicked = True
        sub.end(_KICKED)
        task = sub.task

        def cancel_if_stuck() -> None:
            # A client that stopped reading blocks its response in send(); only cancelling frees it.
            if task is not None and not task.done():
                task.cancel()

        asyncio.get_running_loop().call_later(KICK_GRACE_S, cancel_if_stuck)

    def _close_streams(self, session: Session) -> None:
        for sub in list(session.subscribers):
            sub.end()
        session.subscribers.clear()

    def _set_status(self, session: Session, status: str) -> None:
        session.row.status = status
        session.row.updated_at = iso_now()
        self.index.upsert(session.row)

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

    def follow(self, session: Session, after: int, replay: bool, limit: int | None) -> AsyncIterator[bytes]:
        """SSE frames: the stored events after `after` (when replaying), then live ones until the session stops.

        The follower is registered here, before the response starts, not when its body is first iterated: the
        response headers go out before that, and a client that saw them and then sent an input would have missed
        that input's first events."""
        events = session.log
        sub = Subscriber(self.settings.client_queue)
        # Register and take the snapshot with no await in between: every event is either replayed or queued.
        snapshot = events.last_seq
        # Only a closed session's stream ends after its replay; an interrupted one can take input again.
        live = session.row.status not in CLOSED and not self.stopping
        if live:
            session.subscribers.add(sub)
        return self._stream(session, sub, snapshot, live, after, replay, limit)

    async def _stream(
        self, session: Session, sub: Subscriber, snapshot: int, live: bool, after: int, replay: bool, limit: int | None
    ) -> AsyncIterator[bytes]:
        events = session.log
        sub.task = asyncio.current_task()
        try:
            first = after + 1 if replay else snapshot + 1
            if limit is not None and limit > 0:
                first = max(first, snapshot - limit + 1)
            while first <= snapshot:
                last = min(snapshot, first + REPLAY_BLOCK - 1)
                yield await asyncio.to_thread(read_frames, events, first, last)
                first = last + 1
            if not live:
                return
            keepalive = self.settings.keepalive_s
            while True:
                item = sub.queue.get_nowait() if not sub.queue.empty() else None
                if item is None:
                    try:
                        item = (
                            await asyncio.wait_for(sub.queue.get(), keepalive)
                            if keepalive > 0
                            else await sub.queue.get()
                        )
                    except asyncio.TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                if item is _END or item is _KICKED:
                    return
                # Coalesce what is queued into one write, capped: after a kick, uvicorn can only close() the
                # transport, which keeps unsent bytes until the peer reads; the cap bounds what a stuck peer pins.
                frames, size = [item], len(item)
                while size < WRITE_CAP and not sub.queue.empty():
                    nxt = sub.queue.get_nowait()
                    if nxt is _END or nxt is _KICKED:
                        yield b"".join(frames)
                        return
                    frames.append(nxt)
                    size += len(nxt)
                yield b"".join(frames)
        finally:
            session.subscribers.discard(sub)

    # -- shutdown --------------------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Close every stream, stop runners, and leave each session resumable (interrupted) on disk."""
        self.stopping = True
        for session in self.sessions.values():
            self._close_streams(session)
        live = [s for s in self.sessions.values() if s.streaming]
        for session in live:
            await self._stop_runner(session)
        for session in live:
            if session.row.status in LIVE:
                self._mark_interrupted(session)
        for session in self.sessions.values():
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
            },
        }


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


def read_frames(events: EventLog, first: int, last: int) -> bytes:
    return b"".join(b"id: %d\ndata: %s\n\n" % (seq, line) for seq, line in events.read(first, last))


def history_from_log(events: EventLog) -> list[tuple[str, str]]:
    history: list[tuple[str, str]] = []
    for _, line in events.read(1, events.last_seq):
        if b'"type":"user_message"' in line or b'"type":"assistant_message"' in line:
            event = json.loads(line)
            role = "user" if event["type"] == "user_message" else "assistant"
            history.append((role, event["payload"].get("text", "")))
    return history


def iso_from_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"
