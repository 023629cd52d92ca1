"""The realtime bus, GET /v1/realtime: a real WebSocket client (the `websockets` package) against the real engine."""

import contextlib
import json
import secrets
import socket
import threading
import time

import pytest
from conftest import replay_all, turn_done, wait_until
from protocol_check import check_body
from test_state import expected_fold, folded
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

TOKEN = "bus-token-0123456789"


def open_bus(engine, headers=None, subprotocols=None, sock=None, **kwargs):
    url = f"ws://127.0.0.1:{engine.port}/v1/realtime"
    if headers is None:
        headers = engine.headers
    return connect(
        url, additional_headers=headers, subprotocols=subprotocols, sock=sock, open_timeout=20, max_size=None, **kwargs
    )


def recv(ws, timeout: float = 30.0) -> dict:
    message = json.loads(ws.recv(timeout=timeout))
    check_body("RealtimeServerMessage", message)
    return message


def send(ws, doc: dict) -> None:
    check_body("RealtimeClientMessage", doc)
    ws.send(json.dumps(doc))


def until(ws, predicate, what: str, timeout: float = 30.0) -> tuple[dict, list[dict]]:
    """Reads until a message fits `predicate`; returns it and every message before it."""
    seen = []
    end = time.monotonic() + timeout
    while True:
        message = recv(ws, max(0.1, end - time.monotonic()))
        if predicate(message):
            return message, seen
        seen.append(message)
        if time.monotonic() > end:
            raise AssertionError(f"no {what} in {seen}")


def test_the_token_comes_in_the_header_or_as_a_subprotocol_never_echoed(engine_factory):
    engine = engine_factory(token=TOKEN).start()
    for headers, protocols in [
        ({}, None),  # none
        ({"Authorization": "Bearer wrong"}, None),
        ({}, ["breadboard.v1", "bearer.wrong"]),
        ({}, ["breadboard.v1", f"bearer.{TOKEN}x"]),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            open_bus(engine, headers=headers, subprotocols=protocols)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"] == "unauthorized"
    # In the URL it is no credential at all.
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{engine.port}/v1/realtime?token={TOKEN}", open_timeout=20)

    with open_bus(engine) as ws:  # the Authorization header
        assert ws.subprotocol is None
        send(ws, {"type": "ping", "id": 1})
        assert recv(ws) == {"type": "pong", "id": 1}
    with open_bus(engine, headers={}, subprotocols=["breadboard.v1", f"bearer.{TOKEN}"]) as ws:  # a browser's way
        assert ws.subprotocol == "breadboard.v1"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "breadboard.v1"
        assert TOKEN not in str(ws.response.headers)
        send(ws, {"type": "ping"})
        assert recv(ws) == {"type": "pong"}


def test_a_bad_message_gets_an_error_and_the_connection_stays(engine):
    with open_bus(engine) as ws:
        ws.send("not json")
        assert recv(ws)["type"] == "error"
        ws.send(json.dumps({"type": "shout"}))
        assert "not a bus message" in recv(ws)["message"]
        ws.send(b"\x00binary")
        assert "text frames" in recv(ws)["message"]
        send(ws, {"type": "subscribe", "topics": ["weather", "session:nope"]})
        errors = [recv(ws), recv(ws)]
        assert [(e["type"], e["topic"]) for e in errors] == [("error", "weather"), ("error", "session:nope")]
        send(ws, {"type": "ping"})
        assert recv(ws) == {"type": "pong"}


def test_the_sessions_topic_snapshot_then_created_status_activity_deleted(engine):
    old = engine.create("")
    with open_bus(engine) as ws:
        send(ws, {"type": "subscribe", "topics": ["sessions"]})
        snap = recv(ws)
        assert snap["type"] == "snapshot" and snap["topic"] == "sessions"
        assert [s["session_id"] for s in snap["payload"]] == [old]

        sid = engine.create("hello there", metadata={"cli_session_kind": "oneshot"})
        created, _ = until(ws, lambda m: m["payload"]["kind"] == "created", "created")
        assert created["topic"] == "sessions" and created["payload"]["session_id"] == sid
        assert created["payload"]["summary"]["status"] == "running"
        status, before = until(ws, lambda m: m["payload"]["kind"] == "status", "status")
        assert status["payload"]["summary"]["status"] == "completed"
        activity = [m for m in before if m["payload"]["kind"] == "activity"]
        if not activity:  # throttled: it comes at most a second after the first
            activity = [until(ws, lambda m: m["payload"]["kind"] == "activity", "activity")[0]]
        assert activity[0]["payload"]["session_id"] == sid

        # Activity is throttled: a long burst of events makes a few, not one per event.
        many = " ".join(f"w{i}" for i in range(400))
        engine.send(old, many)
        last = turn_done(engine, old)[-1]["data"]["seq"]
        final, before = until(
            ws,
            lambda m: m["payload"]["kind"] == "activity" and m["payload"]["last_seq"] == last,
            "the last activity",
        )
        assert len(before) + 1 < 20, before

        assert engine.client().delete(f"/v1/sessions/{sid}").status_code == 204
        deleted, _ = until(ws, lambda m: m["payload"]["kind"] == "deleted", "deleted")
        assert deleted["payload"] == {"kind": "deleted", "session_id": sid}
        send(ws, {"type": "unsubscribe", "topics": ["sessions"]})
        engine.create("")
        send(ws, {"type": "ping"})
        assert recv(ws) == {"type": "pong"}  # nothing about the new session came in between


def test_a_session_topic_is_its_state_then_every_later_event_once_under_concurrent_appends(engine):
    sid = engine.create("", metadata={"echo_delay_ms": 5})
    turns = 4
    for n in range(turns):
        engine.send(sid, " ".join(f"t{n}w{i}" for i in range(150)))
    got: list = []
    errors: list = []

    def subscriber(delay: float):
        try:
            time.sleep(delay)  # staggered on purpose: each subscribes somewhere else in the stream
            with open_bus(engine) as ws:
                send(ws, {"type": "subscribe", "topics": [f"session:{sid}"]})
                snap = recv(ws)
                assert snap["type"] == "snapshot" and snap["topic"] == f"session:{sid}"
                events = []
                while not events or events[-1]["turn"] < turns or events[-1]["type"] != "run_finished":
                    message = recv(ws)
                    assert message["type"] == "event" and message["topic"] == f"session:{sid}"
                    events.append(message["payload"])
                got.append((snap["payload"], events))
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    # The turns stream for about 3 s (600 words, 5 ms each): the subscribers come in over the first 1.6 s.
    threads = [threading.Thread(target=subscriber, args=(i * 0.2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    stored = [e["data"] for e in turn_done(engine, sid, turns)]
    assert len(got) == 8
    mid_stream = 0
    for state, events in got:
        first = state["last_seq"] + 1
        assert [e["seq"] for e in events] == list(range(first, stored[-1]["seq"] + 1)), "a gap or a duplicate"
        assert events == stored[first - 1 :]
        assert folded(state) == expected_fold(stored[: state["last_seq"]])
        mid_stream += 0 < state["last_seq"] < stored[-1]["seq"]
    assert mid_stream > 0, "no subscriber landed mid-stream: the test showed nothing"


def test_a_client_that_stops_reading_is_cut_off_with_its_last_seq_and_the_others_get_everything(engine_factory):
    with contextlib.ExitStack() as stack:
        stalled_client_case(engine_factory, stack)


def stalled_client_case(engine_factory, stack):
    # A queue longer than a provider's batch (512 events come in one go), far shorter than the stream.
    engine = engine_factory(env={"BREADBOARD_REALTIME_QUEUE": "600"}).start()
    # Words at 1 ms each: a pace a client that reads keeps up with (a provider that streams as fast as the loop
    # can go outruns any client).
    sid = engine.create("", metadata={"echo_delay_ms": 1})
    topic = f"session:{sid}"
    turns = 12
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the stall reaches the engine fast
    sock.connect(("127.0.0.1", engine.port))
    stalled = stack.enter_context(open_bus(engine, sock=sock))
    send(stalled, {"type": "subscribe", "topics": [topic]})
    healthy_seqs: list = []
    healthy = stack.enter_context(open_bus(engine))
    send(healthy, {"type": "subscribe", "topics": [topic, "sessions"]})
    assert recv(healthy)["type"] == "snapshot"

    def read_healthy():
        while True:
            message = json.loads(healthy.recv(timeout=120))
            if message["type"] == "event" and message["topic"] == topic:
                healthy_seqs.append(message["payload"]["seq"])
                if message["payload"]["type"] == "run_finished" and message["payload"]["turn"] == turns:
                    return

    reader = threading.Thread(target=read_healthy)
    reader.start()
    for _ in range(turns):  # random words: the bus compresses (permessage-deflate), repeated ones would vanish
        engine.send(sid, " ".join(secrets.token_urlsafe(1500) for _ in range(450)))
    wait_until(lambda: "fell 600 messages behind" in engine.log_text(), what="the stalled client cut off")
    reader.join(180)
    last_stored = turn_done(engine, sid, turns)[-1]["data"]["seq"]
    # The others were not held up: everything reaches the healthy one, in order, once.
    assert healthy_seqs == list(range(1, last_stored + 1))
    assert engine.log_text().count("fell 600 messages behind") == 1
    healthy.close()

    # The stalled one, reading again: contiguous events, then the error naming the last one, then close 4008.
    first = recv(stalled)
    assert first["type"] == "snapshot"
    seq, last = first["payload"]["last_seq"], None
    while True:
        try:
            message = recv(stalled)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4008, closed
            break
        if message["type"] == "error":
            last = message
            continue
        assert last is None, "nothing after the final error"
        seq += 1
        assert message["payload"]["seq"] == seq
    assert last is not None and last["last_seq"] == {topic: seq} and "fell 600 messages behind" in last["message"]
    assert seq < last_stored


def test_shutdown_closes_the_bus_with_going_away(engine):
    with open_bus(engine) as ws:
        send(ws, {"type": "subscribe", "topics": ["sessions"]})
        recv(ws)
        engine.client().post("/v1/shutdown")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                recv(ws)
        assert closed.value.rcvd.code == 1001
    assert engine.proc.wait(30) == 0


def test_the_recovery_sweep_shows_in_the_sessions_snapshot(engine_factory, tmp_path):
    first = engine_factory().start()
    sid = first.create("", metadata={"echo_delay_ms": 30})
    first.send(sid, " ".join(["slow"] * 100))
    wait_until(lambda: len(replay_all(first, sid)) > 4, what="the turn streaming")
    first.kill9()
    second = engine_factory(tmp_path / "data").start()
    with open_bus(second) as ws:
        send(ws, {"type": "subscribe", "topics": ["sessions", f"session:{sid}"]})
        sessions, state = recv(ws), recv(ws)
        assert [s["status"] for s in sessions["payload"]] == ["interrupted"]
        assert state["payload"]["status"] == "interrupted"
        assert state["payload"]["last_turn"]["reason"] == "interrupted"
        second.send(sid, "again")  # the next input resumes it: announced
        status, _ = until(ws, lambda m: m["topic"] == "sessions" and m["payload"]["kind"] == "status", "status")
        assert status["payload"]["summary"]["status"] == "running"
