"""Every route over real HTTP: identity, auth, sessions, errors."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
from conftest import parse_sse, turn_done, wait_until

ROUTES = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/status"),
    ("GET", "/v1/status"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/x"),
    ("DELETE", "/v1/sessions/x"),
    ("POST", "/v1/sessions/x/input"),
    ("POST", "/v1/sessions/x/command"),
    ("GET", "/v1/sessions/x/events"),
    ("POST", "/v1/shutdown"),
    ("GET", "/openapi.json"),
]


def test_health_identity_answers_fast_and_matches_process(engine_factory):
    spawned = time.monotonic()
    engine = engine_factory(env={"BREADBOARD_INSTANCE_ID": "inst-123"}).start(ray="background")
    elapsed = time.monotonic() - spawned
    health = engine.client().get("/health").json()
    assert health["status"] == "ok"
    assert health["protocol_version"] == "1.0"
    assert health["version"] == health["engine_version"]
    assert health["pid"] == engine.proc.pid
    assert health["instance_id"] == "inst-123"
    assert isinstance(health["started_at_unix"], float) and health["started_at"].endswith("Z")
    # /health must not wait for Ray (which takes seconds here); generous bound for a loaded 2-core CI machine.
    assert elapsed < 10, elapsed


def test_auth_on_every_route(engine_factory):
    engine = engine_factory(token="s3cret-token").start()
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            r = httpx.request(method, engine.url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json() == {"error": "unauthorized", "detail": "missing or wrong bearer token", "path": path}
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = httpx.get(engine.url + "/health", headers={"Authorization": f"{scheme} s3cret-token"})
        assert r.status_code == 200
    # The token never appears on the engine's command line.
    with open(f"/proc/{engine.proc.pid}/cmdline", "rb") as f:
        assert b"s3cret-token" not in f.read()
    with open(f"/proc/{engine.proc.pid}/environ", "rb") as f:
        assert b"s3cret-token" not in f.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_plain(tmp_path, *args, env=None):
    """The engine binding its own port (no --fd), with stdout and stderr kept apart."""
    out, err = open(tmp_path / "stdout", "wb"), open(tmp_path / "stderr", "wb")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BREADBOARD_")}
    full_env.update({"BREADBOARD_DATA_DIR": str(tmp_path / "data"), "BREADBOARD_RAY_START": "off", **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "breadboard_engine", "serve", *args], env=full_env, stdout=out, stderr=err
    )
    return proc


def test_remote_bind_allowed_with_token_and_stdout_stays_empty(tmp_path):
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    proc = serve_plain(
        tmp_path, "--host", "0.0.0.0", "--port", str(port), env={"BREADBOARD_API_TOKEN_FILE": str(token_file)}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(url + "/health", {"Authorization": "Bearer tok"}), 30, what="/health")
        assert httpx.get(url + "/health").status_code == 401
        r = httpx.post(url + "/v1/sessions", json={"task": "hi"}, headers={"Authorization": "Bearer tok"})
        assert r.status_code == 200
        assert httpx.post(url + "/v1/shutdown", headers={"Authorization": "Bearer tok"}).status_code == 202
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "stdout").read_bytes() == b"", "the engine wrote to stdout"
    assert b"engine stopped" in (tmp_path / "stderr").read_bytes()


def test_insecure_remote_override(tmp_path):
    port = free_port()
    proc = serve_plain(
        tmp_path, "--host", "0.0.0.0", "--port", str(port), env={"BREADBOARD_ALLOW_INSECURE_REMOTE": "1"}
    )
    try:
        wait_until(lambda: _ok(f"http://127.0.0.1:{port}/health"), 30, what="/health")
    finally:
        proc.terminate()
        proc.wait(30)


def _ok(url, headers=None):
    try:
        return httpx.get(url, headers=headers or {}, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_ready_and_status_shapes(engine):
    ready = engine.client().get("/ready").json()
    assert ready["ready"] is True and ready["ray"]["state"] == "off"
    status = engine.client().get("/v1/status").json()
    legacy = engine.client().get("/status").json()
    assert set(legacy) == set(status)
    for key in ("uptime_s", "ray", "eventlog", "sessions", "pid", "instance_id", "engine_version"):
        assert key in status
    assert set(status["ray"]) >= {"available", "initialized", "address", "nodes"}
    assert set(status["eventlog"]) >= {"dir", "sessions", "bytes"}
    assert set(status["sessions"]) >= {"total", "running"}
    assert status["eventlog"]["dir"] == str(engine.data_dir / "sessions")


def test_session_lifecycle(engine):
    c = engine.client()
    created = c.post("/v1/sessions", json={"task": "hello world", "metadata": {"cli_session_kind": "oneshot"}})
    assert created.status_code == 200
    body = created.json()
    assert set(body) >= {"session_id", "status", "created_at"}
    sid = body["session_id"]
    engine.wait_status(sid, "completed")
    events = turn_done(engine, sid)
    kinds = [e["data"]["type"] for e in events]
    assert kinds[:2] == ["user_message", "turn_start"]
    assert kinds[-3:] == ["assistant_message", "completion", "run_finished"]
    assert "".join(e["data"]["payload"]["text"] for e in events if e["data"]["type"] == "assistant_delta") == (
        "hello world"
    )
    assert [e["data"]["seq"] for e in events] == list(range(1, len(events) + 1))
    listed = c.get("/v1/sessions").json()
    assert [s["session_id"] for s in listed] == [sid]
    summary = c.get(f"/v1/sessions/{sid}").json()
    assert summary["status"] == "completed" and summary["last_seq"] == len(events)
    assert summary["metadata"]["cli_session_kind"] == "oneshot"
    # A finished one-shot session takes no more input.
    r = c.post(f"/v1/sessions/{sid}/input", json={"content": "more"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    session_dir = engine.data_dir / "sessions" / sid
    assert (session_dir / "events.jsonl").exists()
    assert c.delete(f"/v1/sessions/{sid}").status_code == 204
    assert c.get(f"/v1/sessions/{sid}").status_code == 404
    assert not session_dir.exists()
    assert c.get("/v1/sessions").json() == []


def test_interactive_session_waits_for_input(engine):
    sid = engine.create("")
    engine.wait_status(sid, "running")
    engine.send(sid, "one")
    turn_done(engine, sid, 1)
    engine.send(sid, "two three")
    events = turn_done(engine, sid, 2)
    turns = [e["data"]["turn"] for e in events if e["data"]["type"] == "turn_start"]
    assert turns == [1, 2]
    assert engine.client().get(f"/v1/sessions/{sid}").json()["status"] == "running"


def test_input_id_is_echoed_and_a_one_shot_is_final_when_its_run_finished_goes_out(engine):
    c = engine.client()
    sid = engine.create("")
    engine.wait_status(sid, "running")
    answer = c.post(f"/v1/sessions/{sid}/input", json={"content": "mine", "input_id": "in-7"})
    assert answer.status_code == 202 and answer.json() == {"status": "accepted", "input_id": "in-7"}
    plain = c.post(f"/v1/sessions/{sid}/input", json={"content": "theirs"})
    assert plain.json() == {"status": "accepted"}
    events = turn_done(engine, sid, 2)
    users = [e["data"]["payload"] for e in events if e["data"]["type"] == "user_message"]
    assert users == [{"text": "mine", "input_id": "in-7"}, {"text": "theirs"}]
    too_long = c.post(f"/v1/sessions/{sid}/input", json={"content": "x", "input_id": "i" * 129})
    assert too_long.status_code == 422

    # A client that reads a one-shot session when its run_finished arrives sees the final status, not "running".
    meta = {"cli_session_kind": "oneshot", "echo_delay_ms": 50}
    oneshot = c.post("/v1/sessions", json={"task": "one two three", "metadata": meta}).json()["session_id"]
    statuses = []
    with httpx.stream("GET", f"{engine.url}/v1/sessions/{oneshot}/events", headers=engine.headers, timeout=60) as r:
        for frame in parse_sse(r.iter_bytes()):
            if frame.get("data", {}).get("type") == "run_finished":
                statuses.append(c.get(f"/v1/sessions/{oneshot}").json()["status"])
                break
    assert statuses == ["completed"]


def test_error_envelopes(engine):
    c = engine.client()
    r = c.get("/v1/sessions/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "session not found", "path": "/v1/sessions/nope"}
    r = c.post("/v1/sessions", json={"config_path": "x"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert r.json()["detail"]["errors"][0]["loc"] == ["body", "task"]
    sid = engine.create("")
    for content in ("", "   ", "\n\t"):
        r = c.post(f"/v1/sessions/{sid}/input", json={"content": content})
        assert r.status_code == 422, r.text  # never 500 (upstream's bug)
        assert r.json()["error"] == "invalid_request"
    r = c.post("/v1/sessions/nope/input", json={"content": "hi"})
    assert r.status_code == 404
    r = c.post("/v1/sessions", json={"task": "x", "provider": "nonsense"})
    assert r.status_code == 400 and "unknown provider" in r.json()["detail"]
    r = c.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_replay_provider(engine):
    replays = engine.data_dir / "replays"  # the default replay directory
    replays.mkdir()
    fixture = replays / "fixture.jsonl"
    fixture.write_text(
        "# comment lines are skipped\n"
        '{"type": "assistant_message", "payload": {"text": "from the fixture"}}\n'
        '{"type": "tool_call", "data": {"name": "ls"}, "delay_ms": 5}\n'
    )
    for task in ("replay:fixture.jsonl", f"replay:{fixture}"):  # relative to the directory, or absolute inside it
        sid = engine.create(task, metadata={"cli_session_kind": "oneshot"})
        engine.wait_status(sid, "completed")
        events = turn_done(engine, sid)
        kinds = [e["data"]["type"] for e in events]
        assert kinds == ["user_message", "turn_start", "assistant_message", "tool_call", "completion", "run_finished"]
        assert events[3]["data"]["payload"] == {"name": "ls"}
        assert events[-1]["data"]["payload"]["reason"] == "replay"


def test_replay_of_missing_fixture_ends_the_turn_with_an_error(engine):
    sid = engine.create("replay:missing.jsonl", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "failed")
    events = turn_done(engine, sid)
    assert [e["data"]["type"] for e in events][-3:] == ["error", "completion", "run_finished"]
    message = events[-3]["data"]["payload"]["message"]
    assert (
        message
        == f"cannot read replay fixture {engine.data_dir / 'replays' / 'missing.jsonl'}: No such file or directory"
    )


def test_replay_reads_nothing_outside_its_directory(engine_factory, tmp_path):
    replays = tmp_path / "fixtures"
    replays.mkdir()
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"type": "assistant_message", "payload": {"text": "a secret"}}\n')
    (replays / "link.jsonl").symlink_to(secret)
    engine = engine_factory(env={"BREADBOARD_REPLAY_DIR": str(replays)}).start()
    c = engine.client()
    idle = engine.create("")
    for path in (str(secret), "../secret.jsonl", "link.jsonl", "/etc/passwd", ""):
        r = c.post("/v1/sessions", json={"task": f"replay:{path}"})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "invalid_request" and "BREADBOARD_REPLAY_DIR" in r.json()["detail"]
        r = c.post(f"/v1/sessions/{idle}/input", json={"content": f"/replay {path}"})
        assert r.status_code == 400 and r.json()["path"] == f"/v1/sessions/{idle}/input", (path, r.text)
    assert [s["session_id"] for s in c.get("/v1/sessions").json()] == [idle]  # the refused creates left nothing
    assert engine.client().get(f"/v1/sessions/{idle}").json()["last_seq"] == 0
    assert "a secret" not in (engine.data_dir / "sessions" / idle / "events.jsonl").read_text()


def test_request_bodies_are_limited(engine_factory):
    engine = engine_factory(env={"BREADBOARD_MAX_BODY_BYTES": "4096"}).start()
    c = engine.client()
    big = {"task": "x" * 5000}
    r = c.post("/v1/sessions", json=big)  # with Content-Length: refused before the body is read
    assert r.status_code == 413, r.text
    detail = "request body over 4096 bytes (BREADBOARD_MAX_BODY_BYTES)"
    assert r.json() == {"error": "too_large", "detail": detail, "path": "/v1/sessions"}

    def chunks():  # chunked, no Content-Length: counted as it arrives
        yield b'{"task": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    r = c.post("/v1/sessions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    sid = engine.create("")
    r = c.post(f"/v1/sessions/{sid}/input", json={"content": "z" * 5000})
    assert r.status_code == 413 and r.json()["path"] == f"/v1/sessions/{sid}/input"
    assert [s["session_id"] for s in c.get("/v1/sessions").json()] == [sid]
    assert c.post("/v1/sessions", json={"task": "small"}).status_code == 200  # under the limit: as before


def test_data_dir_layout(engine):
    sid = engine.create("hi", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "completed")
    assert (engine.data_dir / "sessions.sqlite3").exists()
    lines = (engine.data_dir / "sessions" / sid / "events.jsonl").read_text().splitlines()
    # user_message, turn_start, assistant_delta ("hi"), assistant_message, completion, run_finished
    assert [json.loads(line)["type"] for line in lines][-1] == "run_finished" and len(lines) == 6
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
