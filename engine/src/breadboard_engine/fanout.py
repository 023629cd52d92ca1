"""Handing events to the clients that follow them: SSE followers of one session, and realtime bus connections.

Every client has a bounded queue and publishing never waits for one: a client that falls a whole queue behind is
disconnected (it resumes from its last id or seq), so a slow client slows nobody else and costs at most its queue.
"""

from __future__ import annotations

import asyncio
import json

END = object()
KICKED = object()


class Subscriber:
    """One SSE client."""

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

    def end(self, marker=END) -> None:
        if not self.offer(marker):
            drain(self.queue)
            self.queue.put_nowait(marker)


def drain(queue: asyncio.Queue) -> None:
    while not queue.empty():
        queue.get_nowait()


# -- the realtime bus ------------------------------------------------------------------------------------------------
SESSIONS_TOPIC = "sessions"
SESSION_TOPIC_PREFIX = "session:"
# WebSocket close codes of the bus (docs/protocol.md).
CLOSE_FELL_BEHIND = 4008
CLOSE_GOING_AWAY = 1001
STUCK_GRACE_S = 1.0  # how long a connection that fell behind may wait on its socket before its send is cancelled


def session_topic(session_id: str) -> str:
    return SESSION_TOPIC_PREFIX + session_id


def dumps(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def event_message(topic: str, line: bytes) -> str:
    """`event {topic, payload}` around an event's stored line, without parsing it again."""
    return '{"type":"event","topic":' + json.dumps(topic) + ',"payload":' + line.decode() + "}"


class Closing:
    """The last item of a connection's queue: close with `code`, after a final `error` when it fell behind."""

    __slots__ = ("code", "reason", "fell_behind")

    def __init__(self, code: int, reason: str, fell_behind: bool = False):
        self.code = code
        self.reason = reason
        self.fell_behind = fell_behind

    def error(self, conn: Connection, queue_size: int) -> str | None:
        if not self.fell_behind:
            return None
        message = (
            f"this connection fell {queue_size} messages behind and is closed; reconnect and subscribe again (a "
            "new snapshot brings each topic up to date; last_seq names the last event of each session topic sent)"
        )
        return dumps({"type": "error", "message": message, "last_seq": dict(conn.sent_seq)})


class Connection:
    """One WebSocket client of the bus: its topics, its queue of outgoing messages (text, topic, seq), and the last
    seq of each `session:<id>` topic handed to its socket."""

    __slots__ = ("queue", "topics", "sent_seq", "closing", "sender", "sending")

    def __init__(self, size: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=size)
        self.topics: set[str] = set()
        self.sent_seq: dict[str, int] = {}
        self.closing: Closing | None = None
        self.sender: asyncio.Task | None = None  # the task writing the queue to the socket
        self.sending = False  # it is waiting for the socket to take a message

    def offer(self, text: str, topic: str | None = None, seq: int | None = None) -> bool:
        if self.closing is not None:
            return True  # it is on its way out: nothing more to queue
        try:
            self.queue.put_nowait((text, topic, seq))
            return True
        except asyncio.QueueFull:
            return False

    def close(self, closing: Closing) -> None:
        """Ends the connection after what is queued, or at once (the queue dropped) when it fell behind."""
        if self.closing is not None:
            return
        self.closing = closing
        if closing.fell_behind or self.queue.full():
            drain(self.queue)
        self.queue.put_nowait(closing)


class Bus:
    """Topics and the connections subscribed to them. Runs on the loop only; `publish` never awaits."""

    def __init__(self, queue_size: int):
        self.queue_size = queue_size
        self.connections: set[Connection] = set()
        self.topics: dict[str, set[Connection]] = {}

    def connect(self) -> Connection:
        conn = Connection(self.queue_size)
        self.connections.add(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for topic in list(conn.topics):
            self.unsubscribe(conn, topic)

    def subscribe(self, conn: Connection, topic: str) -> None:
        conn.topics.add(topic)
        self.topics.setdefault(topic, set()).add(conn)

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        conn.topics.discard(topic)
        conn.sent_seq.pop(topic, None)
        subscribers = self.topics.get(topic)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self.topics[topic]

    def has(self, topic: str) -> bool:
        return topic in self.topics

    def send(self, conn: Connection, text: str, topic: str | None = None, seq: int | None = None) -> None:
        if not conn.offer(text, topic, seq):
            self.fell_behind(conn)

    def publish(self, topic: str, text: str, seq: int | None = None) -> None:
        for conn in list(self.topics.get(topic, ())):
            self.send(conn, text, topic, seq)

    def fell_behind(self, conn: Connection) -> None:
        # Out of every topic at once, its last seqs kept: the sender names them in the final error, once what it is
        # writing now is written.
        for topic in conn.topics:
            subscribers = self.topics.get(topic)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.topics[topic]
        conn.close(Closing(CLOSE_FELL_BEHIND, "fell behind", fell_behind=True))

        def cancel_if_stuck() -> None:
            # A peer that stopped reading holds the sender in its send forever; only cancelling that wait frees it
            # to send the final error and close.
            if conn.sending and conn.sender is not None and not conn.sender.done():
                conn.sender.cancel()

        asyncio.get_running_loop().call_later(STUCK_GRACE_S, cancel_if_stuck)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections):
            conn.close(Closing(code, reason))
