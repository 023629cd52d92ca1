"""The SSE event stream of one session: the stored events after a resume point, then live ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .eventlog import EventLog
from .fanout import END, KICKED, Subscriber
from .store import CLOSED

if TYPE_CHECKING:
    from .manager import Session, SessionManager

REPLAY_BLOCK = 4096  # events read from disk per hop to the reader thread
WRITE_CAP = 64 * 1024


def follow(
    manager: SessionManager, session: Session, after: int, replay: bool, limit: int | None
) -> AsyncIterator[bytes]:
    """SSE frames: the stored events after `after` (when replaying), then live ones until the session stops.

    The follower is registered here, before the response starts, not when its body is first iterated: the response
    headers go out before that, and a client that saw them and then sent an input would have missed that input's
    first events."""
    events = session.log
    sub = Subscriber(manager.settings.client_queue)
    # Register and take the snapshot with no await in between: every event is either replayed or queued.
    snapshot = events.last_seq
    # Only a closed session's stream ends after its replay; an interrupted one can take input again.
    live = session.row.status not in CLOSED and not session.closing and not manager.stopping
    if live:
        session.subscribers.add(sub)
    return _stream(session, sub, snapshot, live, after, replay, limit, manager.settings.keepalive_s)


async def _stream(
    session: Session,
    sub: Subscriber,
    snapshot: int,
    live: bool,
    after: int,
    replay: bool,
    limit: int | None,
    keepalive: float,
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
        while True:
            item = sub.queue.get_nowait() if not sub.queue.empty() else None
            if item is None:
                try:
                    item = (
                        await asyncio.wait_for(sub.queue.get(), keepalive) if keepalive > 0 else await sub.queue.get()
                    )
                except asyncio.TimeoutError:
                    yield b": keepalive\n\n"
                    continue
            if item is END or item is KICKED:
                return
            # Coalesce what is queued into one write, capped: after a kick, uvicorn can only close() the transport,
            # which keeps unsent bytes until the peer reads; the cap bounds what a stuck peer pins.
            frames, size = [item], len(item)
            while size < WRITE_CAP and not sub.queue.empty():
                nxt = sub.queue.get_nowait()
                if nxt is END or nxt is KICKED:
                    yield b"".join(frames)
                    return
                frames.append(nxt)
                size += len(nxt)
            yield b"".join(frames)
    finally:
        session.subscribers.discard(sub)


def read_frames(events: EventLog, first: int, last: int) -> bytes:
    return b"".join(b"id: %d\ndata: %s\n\n" % (seq, line) for seq, line in events.read(first, last))
