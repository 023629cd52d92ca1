"""The event stream: framing, seq, replay and resume, keepalive, followers, ends."""

import socket
import threading
import time

import httpx
from conftest import parse_sse, read_until_seq, replay_all, turn_done, wait_until


def finished_session(engine, text="alpha beta gamma delta"):
    sid = engine.create(text, metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "completed")
    return sid, turn_done(engine, sid)


def test_framing_is_id_and_data_only(engine):
    sid, _ = finished_session(engine)
    with httpx.stream("GET", f"{engine.url}/v1/sessions/{sid}/events", params={"replay": "true"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read()
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""  # ends on a frame boundary
    for number, frame in enumerate(frames[:-1], 1):
        lines = frame.split(b"\n")
        assert lines[0] == b"id: %d" % number
        assert lines[1].startswith(b"data: {") and len(lines) == 2  # no event: line, one data line


def test_envelope_fields(engine):
    sid, events = finished_session(engine)
    for frame in events:
        env = frame["data"]
        assert set(env) == {"id", "seq", "type", "session_id", "turn", "timestamp", "timestamp_ms",
                            "protocol_version", "payload", "turn_id", "step_id"}  # fmt: skip
        assert frame["id"] == str(env["seq"])
        assert env["session_id"] == sid and env["protocol_version"] == "1.0" and env["turn"] == 1
        assert env["timestamp"] == env["timestamp_ms"]
        assert env["turn_id"] == f"{sid}:turn:1"
    # The step ids number the turn's events from 0, in order, once each.
    assert [frame["data"]["step_id"] for frame in events] == list(range(len(events)))


def test_stream_on_finished_session_ends_after_replay(engine):
    sid, events = finished_session(engine)
    started = time.monotonic()
    assert [e["data"]["seq"] for e in engine.events(sid, replay="true")] == [e["data"]["seq"] for e in events]
    # Without replay there is nothing to send, and the stream must still end (upstream hangs here).
    assert engine.events(sid) == []
    assert time.monotonic() - started < 10


def test_resume_variants(engine):
    sid, events = finished_session(engine, "w1 w2 w3 w4 w5 w6 w7")
    last = len(events)
    seqs = lambda frames: [f["data"]["seq"] for f in frames]  # noqa: E731
    assert seqs(engine.events(sid, last_event_id=6)) == list(range(7, last + 1))
    assert seqs(engine.events(sid, from_id=6)) == list(range(7, last + 1))
    assert seqs(engine.events(sid, from_seq=6)) == list(range(7, last + 1))
    assert seqs(engine.events(sid, from_id=7, limit=1)) == [last]
    assert seqs(engine.events(sid, replay="true", limit=2)) == [last - 1, last]
    assert seqs(engine.events(sid, from_id=events[6]["data"]["id"])) == list(range(8, last + 1))  # by uuid
    assert seqs(engine.events(sid, from_id=0)) == list(range(1, last + 1))
    assert engine.events(sid, from_id=last) == []
    # from_id wins over Last-Event-ID, as upstream.
    r = httpx.get(
        f"{engine.url}/v1/sessions/{sid}/events", params={"from_id": last - 1}, headers={"Last-Event-ID": "1"}
    )
    assert [f["data"]["seq"] for f in parse_sse([r.content]) if "data" in f] == [last]


def test_resume_point_that_does_not_exist_is_409(engine):
    sid, events = finished_session(engine)
    for point in ("999", "not-an-event-id"):
        r = httpx.get(f"{engine.url}/v1/sessions/{sid}/events", headers={"Last-Event-ID": point})
        assert r.status_code == 409
        assert r.json()["error"] == "resume_window_exceeded"
        assert r.json()["last_seq"] == len(events)
    assert httpx.get(f"{engine.url}/v1/sessions/nope/events").status_code == 404


def test_replay_is_not_limited_to_a_window(engine):
    words = " ".join(f"w{i}" for i in range(3000))
    sid, events = finished_session(engine, words)
    assert len(events) > 3000
    again = engine.events(sid, from_id=1)
    assert [e["data"]["seq"] for e in again] == list(range(2, len(events) + 1))


def test_live_followers_see_identical_streams_and_keepalives(engine_factory):
    engine = engine_factory(env={"BREADBOARD_SSE_KEEPALIVE_S": "0.2"}).start()
    sid = engine.create("")
    engine.wait_status(sid, "running")
    received: list[list[dict]] = [[] for _ in range(3)]
    comments: list[int] = [0, 0, 0]
    connected = threading.Barrier(4)

    def follow(i):
        with httpx.stream("GET", f"{engine.url}/v1/sessions/{sid}/events", timeout=30) as r:
            connected.wait()
            for frame in parse_sse(r.iter_bytes()):
                if "comment" in frame:
                    comments[i] += 1
                if "data" in frame:
                    received[i].append(frame)
                    if frame["data"]["type"] == "run_finished" and frame["data"]["turn"] == 2:
                        return

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    connected.wait(timeout=30)
    wait_until(lambda: all(c > 0 for c in comments), 10, what="keepalive comments on idle streams")
    engine.send(sid, "first turn")
    engine.send(sid, "second turn here")
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    stored = replay_all(engine, sid)
    for stream in received:
        assert [f["data"] for f in stream] == [f["data"] for f in stored]


def test_follower_without_replay_starts_at_the_live_edge(engine):
    sid = engine.create("")
    engine.send(sid, "before")
    before = turn_done(engine, sid)
    box = {}
    opened = threading.Event()

    def follow():
        box["events"] = read_until_seq(engine, sid, 2 * len(before), on_open=opened.set)

    t = threading.Thread(target=follow)
    t.start()
    # The engine registers a follower before its response starts: once the headers are in, nothing is missed.
    assert opened.wait(30), "the stream did not open"
    engine.send(sid, "after")
    t.join(60)
    assert box["events"][0]["data"]["seq"] == len(before) + 1
    assert box["events"][0]["data"]["payload"]["text"] == "after"


def _connected(engine, sid):
    # The status endpoint counts live sessions; followers are not exposed, so check the socket table instead.
    port = engine.port
    established = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
                established += 1
    return established >= 1


def test_slow_client_is_disconnected_without_slowing_others(engine_factory):
    engine = engine_factory(env={"BREADBOARD_SSE_CLIENT_QUEUE": "2048"}).start()
    sid = engine.create("")
    engine.wait_status(sid, "running")
    # The slow client: a raw socket with a tiny receive buffer that reads nothing until the end.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", engine.port))
    slow.sendall(f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    fast: list[dict] = []
    ready = threading.Event()

    def follow():
        with httpx.stream("GET", f"{engine.url}/v1/sessions/{sid}/events", timeout=60) as r:
            ready.set()
            for frame in parse_sse(r.iter_bytes()):
                if "data" in frame:
                    fast.append(frame)
                    if frame["data"]["type"] == "run_finished":
                        return

    t = threading.Thread(target=follow)
    t.start()
    ready.wait(30)
    wait_until(lambda: _connected(engine, sid), 10, what="followers connected")
    words = 20000
    engine.send(sid, " ".join(f"word{i}" for i in range(words)))
    t.join(120)
    assert not t.is_alive()
    assert len(fast) == words + 5 and fast[-1]["data"]["seq"] == words + 5
    # The slow one was cut off: reading now drains what was buffered, then the server's close (EOF).
    slow.settimeout(30)
    data = b""
    while chunk := slow.recv(65536):
        data += chunk
    frames = [f for f in parse_sse([data.split(b"\r\n\r\n", 1)[1]]) if "data" in f]
    assert frames, "the slow client got nothing at all"
    assert frames[-1]["data"]["seq"] < words + 5, "the slow client was not disconnected"
    # It resumes from its last id and gets the rest.
    rest = read_until_seq(engine, sid, words + 5, last_event_id=frames[-1]["data"]["seq"])
    assert rest[0]["data"]["seq"] == frames[-1]["data"]["seq"] + 1 and rest[-1]["data"]["seq"] == words + 5
