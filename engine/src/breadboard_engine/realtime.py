"""`GET /v1/realtime`: the realtime bus over a WebSocket (see docs/protocol.md, "Realtime bus").

One JSON object per text frame, both ways. The client subscribes to topics (`sessions`, `session:<id>`); each answers
with its snapshot, then its events. Everything for one connection goes through its bounded queue, in order, and one
task writes it to the socket: a connection that falls a whole queue behind gets a final `error` naming the last seq
it was sent of each session topic and is closed with code 4008, without holding anyone else up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from .fanout import Closing, Connection, dumps
from .manager import SessionManager
from .protocol import RealtimeClientMessage, RealtimePing, RealtimeSubscribe

log = logging.getLogger("breadboard_engine.realtime")

SUBPROTOCOL = "breadboard.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."  # a browser's way to send the token (it cannot set Authorization)
# How long a connection that fell behind has to take its final error (its peer may have paused, not died); after
# that the socket is closed without it. Memory meanwhile is bounded: the queue is dropped at once.
FINAL_WAIT_S = 30.0


def offered_subprotocols(headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


async def serve(ws: WebSocket, manager: SessionManager) -> None:
    offered = offered_subprotocols(ws.headers)
    # The bearer value is a credential, never echoed: a client that sends one offers `breadboard.v1` with it (a
    # browser refuses a handshake whose answer names none of the protocols it offered).
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if manager.stopping:
        await ws.close(1001, "engine shutting down")
        return
    bus = manager.bus
    conn = bus.connect()
    sender = conn.sender = asyncio.ensure_future(_send(ws, conn, bus.queue_size))
    receiver = asyncio.ensure_future(_receive(ws, conn, manager))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        bus.disconnect(conn)
        for task in (receiver, sender):
            task.cancel()
        await asyncio.wait({sender, receiver})


async def _receive(ws: WebSocket, conn: Connection, manager: SessionManager) -> None:
    bus = manager.bus
    while True:
        try:
            text = await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        except KeyError:  # a binary frame: receive_text finds no "text"
            bus.send(conn, dumps({"type": "error", "message": "send text frames of JSON, not binary"}))
            continue
        try:
            message = RealtimeClientMessage.model_validate_json(text).root
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            detail = f"{first.get('msg')} at {where}" if where else str(first.get("msg"))
            bus.send(conn, dumps({"type": "error", "message": f"not a bus message ({detail})"}))
            continue
        if isinstance(message, RealtimePing):
            pong = {"type": "pong"} if message.id is None else {"type": "pong", "id": message.id}
            bus.send(conn, dumps(pong))
        elif isinstance(message, RealtimeSubscribe):
            for topic in message.topics:
                if topic in conn.topics:
                    continue
                refused = await manager.subscribe(conn, topic)
                if refused is not None:
                    bus.send(conn, dumps({"type": "error", "message": refused, "topic": topic}))
        else:
            for topic in message.topics:
                bus.unsubscribe(conn, topic)


async def _send(ws: WebSocket, conn: Connection, queue_size: int) -> None:
    while True:
        item = await conn.queue.get()
        if isinstance(item, Closing):
            await _close(ws, conn, item, queue_size)
            return
        text, topic, seq = item
        conn.sending = True
        try:
            await ws.send_text(text)
        except asyncio.CancelledError:
            if conn.closing is None:
                raise
            # It fell behind while this send waited on a peer that stopped reading: the bus cancelled the wait.
            await _close(ws, conn, conn.closing, queue_size)
            return
        except Exception:  # noqa: BLE001 - the peer is gone
            return
        finally:
            conn.sending = False
        if seq is not None:
            conn.sent_seq[topic] = seq


async def _close(ws: WebSocket, conn: Connection, closing: Closing, queue_size: int) -> None:
    error = closing.error(conn, queue_size)
    with contextlib.suppress(Exception):
        if error is not None:
            log.warning("a realtime connection fell %d messages behind and was closed (4008)", queue_size)
            await asyncio.wait_for(ws.send_text(error), FINAL_WAIT_S)
        await asyncio.wait_for(ws.close(closing.code, closing.reason), FINAL_WAIT_S)
