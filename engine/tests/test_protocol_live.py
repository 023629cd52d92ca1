"""A live engine's every event and answer against the committed schema and the protocol models.

The engine's per-event path builds its envelopes as plain dicts: building them through the models costs about 15 us
more per event (2.7 times the dict and json.dumps alone) and cut the fan-out throughput of bench/engine_bench.py by
roughly 40%. This test is what holds those dicts to the contract.
"""

from __future__ import annotations

import json
import threading

import httpx
from conftest import turn_done, wait_until
from protocol_check import check_body, check_event


class RawFollower(threading.Thread):
    """Follows a session's stream from its start and keeps each event's `data:` bytes as they arrived."""

    def __init__(self, engine, session_id: str, enough):
        super().__init__(daemon=True)
        self.url = f"{engine.url}/v1/sessions/{session_id}/events"
        self.headers = engine.headers
        self.enough = enough  # called with the lines so far: True ends the read
        self.lines: list[bytes] = []
        self.opened = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.url, params={"replay": "true"}, headers=self.headers, timeout=60) as r:
            self.opened.set()
            buffer = b""
            for chunk in r.iter_bytes():
                buffer += chunk
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    for line in frame.split(b"\n"):
                        if line.startswith(b"data: "):
                            self.lines.append(line[6:])
                if self.enough(self.lines):
                    break
        self.done.set()


def answer(client: httpx.Client, schema: str, method: str, path: str, status: int, body=None):
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    check_body(schema, r.json())
    return r.json()


def raw_replay(engine, session_id: str) -> list[bytes]:
    last = engine.client().get(f"/v1/sessions/{session_id}").json()["last_seq"]
    follower = RawFollower(engine, session_id, lambda lines: len(lines) >= last)
    follower.run()
    return follower.lines


def test_every_event_and_answer_of_a_live_engine_matches_the_schema(engine_factory, tmp_path):
    engine = engine_factory(token="protocol-live-token").start()
    client = engine.client()
    for schema, path in [("Health", "/health"), ("Ready", "/ready"), ("Status", "/status")]:
        answer(client, schema, "GET", path, 200)
    unauthorized = httpx.get(engine.url + "/health", timeout=10)
    assert unauthorized.status_code == 401
    check_body("ErrorBody", unauthorized.json())

    created = answer(
        client, "CreateSessionResponse", "POST", "/v1/sessions", 200, {"task": "", "metadata": {"echo_delay_ms": 2}}
    )
    sid = created["session_id"]
    follower = RawFollower(engine, sid, lambda lines: sum(b'"type":"run_finished"' in x for x in lines) >= 4)
    follower.start()
    assert follower.opened.wait(30)
    # Replay fixtures are read only from the engine's replay directory.
    fixture = engine.data_dir / "replays" / "fixture.jsonl"
    fixture.parent.mkdir(exist_ok=True)
    fixture.write_text('{"type": "tool_call", "payload": {"name": "ls"}}\n')

    answer(client, "InputResponse", "POST", f"/v1/sessions/{sid}/input", 202, {"content": "hello there"})
    turn_done(engine, sid, 1)
    long_input = " ".join(f"w{i}" for i in range(3000))
    answer(client, "InputResponse", "POST", f"/v1/sessions/{sid}/input", 202, {"content": long_input})
    wait_until(lambda: sum(b"assistant_delta" in line for line in follower.lines) > 20, what="the long turn streaming")
    stop = answer(client, "CommandResponse", "POST", f"/v1/sessions/{sid}/command", 202, {"command": "stop"})
    assert stop["detail"]["stopped"] is True
    engine.send(sid, "replay:nonexistent-fixture.jsonl")
    engine.send(sid, "replay:fixture.jsonl")
    assert follower.done.wait(60), "the follower did not see the four turns end"
    for command in ({"command": "set_mode", "payload": {"mode": "plan"}}, {"command": "stop"}):
        answer(client, "CommandResponse", "POST", f"/v1/sessions/{sid}/command", 202, command)

    live = follower.lines
    assert {json.loads(line)["payload"].get("reason") for line in live} >= {"completed", "stopped", "error", "replay"}
    # What a follower got live is what the log replays, byte for byte.
    assert raw_replay(engine, sid) == live

    # A turn cut off by kill -9: the next start closes it with the `interrupted` events.
    cut = engine.create("a b c d e f g h", metadata={"echo_delay_ms": 500})
    engine.wait_seq(cut, 3)
    engine.kill9()
    engine.start(ray="off")
    engine.wait_status(cut, "interrupted")
    cut_events = raw_replay(engine, cut)
    assert json.loads(cut_events[-1])["payload"]["reason"] == "interrupted"

    for line in live + cut_events:
        check_event(line)

    client = engine.client()
    answer(client, "SessionList", "GET", "/v1/sessions", 200)
    answer(client, "SessionSummary", "GET", f"/v1/sessions/{sid}", 200)
    answer(client, "SessionState", "GET", f"/v1/sessions/{sid}/state", 200)
    answer(client, "SessionState", "GET", f"/v1/sessions/{cut}/state", 200)
    answer(client, "CommandResponse", "POST", f"/v1/sessions/{sid}/command", 202, {"command": "close"})
    errors = [
        ("ErrorBody", "GET", "/v1/sessions/nope/state", 404, None),
        ("ErrorBody", "POST", f"/v1/sessions/{sid}/input", 409, {"content": "after close"}),
        ("ErrorBody", "GET", "/v1/sessions/nope", 404, None),
        ("ResumeWindowExceededBody", "GET", f"/v1/sessions/{sid}/events?from_id=999999", 409, None),
        ("ErrorBody", "POST", f"/v1/sessions/{sid}/input", 422, {"content": ""}),
        ("ErrorBody", "POST", f"/v1/sessions/{sid}/command", 400, {"command": "frobnicate"}),
        ("ErrorBody", "POST", f"/v1/sessions/{sid}/command", 501, {"command": "set_skills"}),
        # The summary reports metadata.model as a string: another type is refused where it comes in.
        ("ErrorBody", "POST", "/v1/sessions", 422, {"task": "", "metadata": {"model": 4}}),
    ]
    for schema, method, path, status, body in errors:
        answer(client, schema, method, path, status, body)
    answer(client, "SessionList", "GET", "/v1/sessions", 200)
    answer(client, "ShutdownResponse", "POST", "/v1/shutdown", 202)
