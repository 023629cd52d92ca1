"""The `openai` provider against an OpenAI-compatible /v1/chat/completions stream served on 127.0.0.1.

The server here stands in for a real API (no network beyond loopback): it speaks the chat-completions streaming wire
format and records what it was sent, so the test checks both directions.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import replay_all, turn_done, wait_until


@pytest.fixture
def chat_server():
    requests: list[dict] = []
    hung_up = threading.Event()  # a client closed an "endless" stream

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if body["model"] == "broken":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b'{"error": "model exploded"}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if body["model"] == "endless":  # a model that talks until the client hangs up (at most a minute)
                give_up = time.monotonic() + 60
                try:
                    while time.monotonic() < give_up:
                        self.wfile.write(b'data: {"choices": [{"delta": {"content": "more "}}]}\n\n')
                        self.wfile.flush()
                        time.sleep(0.02)
                except OSError:
                    hung_up.set()
                return
            reply = "echo of " + body["messages"][-1]["content"]
            for word in reply.split(" "):
                chunk = {"choices": [{"delta": {"content": word + " "}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests, hung_up
    server.shutdown()


def test_openai_provider_streams_and_keeps_history(engine_factory, chat_server):
    base_url, requests, _ = chat_server
    env = {"BREADBOARD_OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test"}
    engine = engine_factory(env=env).start()
    sid = engine.create("hello model", provider="openai", metadata={"model": "tiny"})
    events = turn_done(engine, sid)
    deltas = [e["data"]["payload"]["text"] for e in events if e["data"]["type"] == "assistant_delta"]
    assert "".join(deltas) == "echo of hello model "
    message = next(e["data"]["payload"] for e in events if e["data"]["type"] == "assistant_message")
    assert message["model"] == "tiny" and message["usage"]["completion_tokens"] == 4
    assert requests[0]["path"] == "/v1/chat/completions" and requests[0]["auth"] == "Bearer sk-test"
    assert requests[0]["body"]["stream"] is True

    engine.send(sid, "second")
    turn_done(engine, sid, 2)
    history = requests[1]["body"]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[0]["content"] == "hello model" and history[2]["content"] == "second"


@pytest.mark.parametrize("snapshot", ["kept", "lost"])
def test_the_history_survives_a_restart_from_the_snapshot_or_the_log(engine_factory, chat_server, tmp_path, snapshot):
    base_url, requests, _ = chat_server
    env = {"BREADBOARD_OPENAI_BASE_URL": base_url}
    first = engine_factory(env=env).start()
    sid = first.create("first question", provider="openai", metadata={"model": "tiny"})
    turn_done(first, sid)
    assert first.shutdown() == 0
    if snapshot == "lost":
        (tmp_path / "data" / "sessions" / sid / "snapshot.json").unlink()
    second = engine_factory(tmp_path / "data", env=env).start()
    second.send(sid, "second question")
    turn_done(second, sid, 2)
    history = [(m["role"], m["content"]) for m in requests[-1]["body"]["messages"]]
    assert history == [
        ("user", "first question"),
        ("assistant", "echo of first question "),
        ("user", "second question"),
    ]
    usage = second.client().get(f"/v1/sessions/{sid}/state").json()["usage"]
    assert usage == {"prompt_tokens": 6, "completion_tokens": 8}  # summed over both turns


def test_openai_error_ends_the_turn_with_an_error_event(engine_factory, chat_server):
    base_url, _, _ = chat_server
    engine = engine_factory(env={"BREADBOARD_OPENAI_BASE_URL": base_url}).start()
    sid = engine.create("hi", provider="openai", metadata={"model": "broken", "cli_session_kind": "oneshot"})
    engine.wait_status(sid, "failed")
    events = turn_done(engine, sid)
    error = next(e["data"]["payload"] for e in events if e["data"]["type"] == "error")
    assert "500" in error["message"] and "model exploded" in error["message"]
    assert events[-1]["data"]["payload"]["completed"] is False


@pytest.mark.parametrize("ray", ["off", "background"])
def test_stop_hangs_up_on_the_model(engine_factory, chat_server, ray):
    """`stop` must end the provider's HTTP stream, not only stop relaying it (tokens cost money)."""
    base_url, _, hung_up = chat_server
    engine = engine_factory(env={"BREADBOARD_OPENAI_BASE_URL": base_url}).start(ray=ray)
    sid = engine.create("talk", provider="openai", metadata={"model": "endless"})
    wait_until(lambda: any(e["data"]["type"] == "assistant_delta" for e in replay_all(engine, sid)), what="tokens")
    r = engine.client().post(f"/v1/sessions/{sid}/command", json={"command": "stop"})
    assert r.json()["detail"]["stopped"] is True
    assert turn_done(engine, sid)[-1]["data"]["payload"]["reason"] == "stopped"
    wait_until(hung_up.is_set, 20, what="the engine to close the model's stream")
