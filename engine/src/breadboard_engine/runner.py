"""The turn runner: one task per live session that takes its inputs in order and runs each as a turn on Ray."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from . import providers
from .store import CLOSED

if TYPE_CHECKING:
    from .manager import Session, SessionManager

log = logging.getLogger("breadboard_engine.sessions")

ONESHOT_STATUS = {"completed": "completed", "stopped": "stopped"}  # a one-shot session's status by its turn's end
# A turn's step ids: its user_message is 0, its turn_start 1, the provider's events follow from 2 in the order the
# provider produced them; the engine's closing events (error, completion, run_finished) come after those.
PROVIDER_FIRST_STEP = 2


class TurnRunner:
    def __init__(self, manager: SessionManager):
        self.manager = manager

    def start(
        self, session: Session, first_input: str | None, begun: bool = False, input_id: str | None = None
    ) -> None:
        session.runner = asyncio.get_running_loop().create_task(self._run(session, first_input, begun, input_id))

    async def _run(self, session: Session, first_input: str | None, begun: bool, input_id: str | None) -> None:
        manager = self.manager
        outcome = "completed"
        try:
            if first_input is not None:
                outcome = await self._turn(session, first_input, begun, input_id)
            if session.oneshot:
                manager.set_status(session, ONESHOT_STATUS.get(outcome, "failed"))
                return
            while not session.closing:
                content, input_id = await session.inputs.get()
                if session.closing:  # `close` came while this input waited: it is dropped
                    break
                await self._turn(session, content, input_id=input_id)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a bug (or a full disk) in the runner must not take the engine down
            log.exception("session %s: runner failed", session.id)
            try:
                manager.set_status(session, "failed")
            except (OSError, sqlite3.Error) as exc:
                log.error("session %s: cannot record that it failed: %s", session.id, exc)
        finally:
            manager.close_streams(session)
            if session.row.status in CLOSED:
                session.log.sync()
                session.log.close()
                asyncio.ensure_future(manager.save_snapshot(session))

    def _plan(self, session: Session, content: str) -> tuple[str, dict]:
        meta = session.row.metadata or {}
        request: dict = {"content": content, "echo_delay_ms": meta.get("echo_delay_ms")}
        path = providers.replay_path(content)
        if path is not None:
            try:
                request["replay_path"] = providers.resolve_replay(path, self.manager.settings.replay_dir)
            except providers.ReplayRefused as exc:  # checked when posted; the directory changed since
                request["replay_refused"] = str(exc)
            return "replay", request
        provider = session.row.provider or self.manager.settings.provider
        if provider == "openai":
            # The conversation so far, from the derived state (snapshot plus the log's tail), never the whole log.
            request["history"] = session.fold.history()
            request["openai"] = {
                "base_url": os.environ.get("BREADBOARD_OPENAI_BASE_URL")
                or os.environ.get("OPENAI_BASE_URL")
                or "https://api.openai.com/v1",
                "api_key": os.environ.get("BREADBOARD_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"),
                "model": meta.get("model") or os.environ.get("BREADBOARD_OPENAI_MODEL") or "gpt-4o-mini",
            }
        return provider, request

    def begin_turn(self, session: Session, content: str, input_id: str | None = None) -> None:
        """The turn's first two events. Needs `session.fold` (the caller built it)."""
        session.log  # noqa: B018 - loads the turn counter after a restart
        session.turn += 1
        session.in_turn = True
        session.idle.clear()
        session.next_step = 0
        session.plan = self._plan(session, content)
        message = {"text": content} if input_id is None else {"text": content, "input_id": input_id}
        self.manager.publish(session, "user_message", message, session.turn)
        self.manager.publish(session, "turn_start", {"turn": session.turn, "mode": session.plan[0]}, session.turn)

    async def _turn(self, session: Session, content: str, begun: bool = False, input_id: str | None = None) -> str:
        """Runs one turn (its first two events already written when `begun`); returns how it ended: completed,
        stopped (the `stop` command) or error."""
        manager = self.manager
        if not begun:
            await manager.fold(session)
            self.begin_turn(session, content, input_id)
        turn = session.turn
        provider, request = session.plan
        count, error = 2, None
        seen: set[str] = set()

        async def stream() -> None:
            nonlocal count
            # aclosing: a stop that lands between batches cleans up (cancels the Ray task) now, not at GC time.
            async with contextlib.aclosing(manager.ray.run_turn(provider, request)) as batches:
                async for batch in batches:
                    for event in batch:
                        step = PROVIDER_FIRST_STEP + event.get("step", count - PROVIDER_FIRST_STEP)
                        if step < session.next_step:
                            continue  # delivered twice: the step says so, whatever the order it came in
                        kind = event["type"]
                        seen.add(kind)
                        # The turn is the engine's: a provider (a replay fixture) cannot move an event elsewhere.
                        manager.publish(session, kind, event.get("payload") or {}, turn, step)
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
            session.idle.set()
            raise
        session.turn_work = None
        stopped = work.cancelled()
        if not stopped and work.exception() is not None:
            exc = work.exception()
            error = providers.short_error(exc)
            # The traceback is for the log; the event carries one plain line a client can show.
            log.warning("session %s: turn %d failed: %s", session.id, turn, error, exc_info=exc)
            manager.publish(session, "error", {"message": error}, turn)
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
            manager.publish(session, "completion", {"summary": summary, "mode": provider}, turn)
            count += 1
        outcome = "stopped" if stopped else ("completed" if completed else "error")
        if session.oneshot:
            # Final before run_finished goes out: a client that reads the session on that event sees how it ended.
            manager.set_status(session, ONESHOT_STATUS.get(outcome, "failed"))
        if "run_finished" not in seen:
            finished = {"eventCount": count + 1, "completed": completed, "reason": reason, "logging_dir": None}
            manager.publish(session, "run_finished", finished, turn)
        session.row.completion_summary = {"completed": completed, "reason": reason, "turn": turn}
        session.in_turn = False
        session.idle.set()
        manager.set_status(session, session.row.status)  # persists last_seq and the summary
        if manager.settings.fsync == "turn":
            await asyncio.to_thread(session.log.sync)
        return outcome
