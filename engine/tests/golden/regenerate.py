"""Captures the golden corpus (this directory) from a real engine run.

    PYTHONPATH=engine/src .venv-dev/bin/python engine/tests/golden/regenerate.py

It starts the engine from engine/src (Ray off, a bearer token, the echo provider by default, a stand-in
OpenAI-compatible server on 127.0.0.1 for the `openai` provider), drives a few sessions through what the protocol can
say (turns, a stopped turn, a failed turn, a replay fixture with a type the protocol does not define, a turn cut off
by `kill -9`, a one-shot session) and the error answers, then writes:

- events.jsonl: every event of those sessions, each line the `data:` of an SSE frame byte for byte;
- responses.jsonl and errors.jsonl: one answer per line, `{"schema", "request", "status", "body"}`, where `schema`
  names the definition in docs/protocol.schema.json that `body` is an instance of (the body re-encoded compactly,
  its keys in the engine's order).

Ids, timestamps, pids and temp paths are kept as captured: the corpus is a fixture, regenerated only when the
protocol changes (then review the diff). The tests decode each line with the protocol models and check that it
re-encodes unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from conftest import Engine, turn_done, wait_until  # noqa: E402 - the harness lives next to this directory

TOKEN = "golden-corpus-token"


def compact(doc) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


class Recorder:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.responses: list[str] = []
        self.errors: list[str] = []

    def call(self, schema: str, method: str, path: str, body=None, auth: bool = True) -> dict:
        headers = self.engine.headers if auth else {}
        r = httpx.request(method, self.engine.url + path, json=body, headers=headers, timeout=30)
        doc = r.json()
        line = compact({"schema": schema, "request": f"{method} {path}", "status": r.status_code, "body": doc})
        (self.errors if r.status_code >= 400 else self.responses).append(line)
        return doc


def raw_events(engine: Engine, session_id: str) -> list[bytes]:
    """Every stored event of the session as the SSE stream carries it (the `data:` bytes)."""
    last = engine.client().get(f"/v1/sessions/{session_id}").json()["last_seq"]
    lines: list[bytes] = []
    url = f"{engine.url}/v1/sessions/{session_id}/events"
    with httpx.stream("GET", url, params={"replay": "true"}, headers=engine.headers, timeout=60) as r:
        buffer = b""
        for chunk in r.iter_bytes():
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if not line.startswith(b":"))
                if b"data" in fields:
                    assert int(fields[b"id"]) == json.loads(fields[b"data"])["seq"]
                    lines.append(fields[b"data"])
            if len(lines) >= last:
                break
    return lines


def chat_server() -> ThreadingHTTPServer:
    """Streams `echo of <input>` word by word in the chat-completions format, then a usage chunk."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for word in ("echo of " + body["messages"][-1]["content"]).split(" "):
                self.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': word + ' '}}]})}\n\n".encode())
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bb-golden-"))
    chat = chat_server()
    env = {"BREADBOARD_OPENAI_BASE_URL": f"http://127.0.0.1:{chat.server_address[1]}/v1"}
    engine = Engine(work / "data", env=env, token=TOKEN)
    try:
        engine.start(ray="off")
        rec = Recorder(engine)
        version = subprocess.run(
            [sys.executable, "-m", "breadboard_engine", "version", "--json"], capture_output=True, check=True, text=True
        )
        rec.responses.append(
            compact(
                {"schema": "VersionInfo", "request": "version --json", "status": 0, "body": json.loads(version.stdout)}
            )
        )
        rec.call("Health", "GET", "/health")
        rec.call("Ready", "GET", "/ready")

        # An interactive session: two echo turns, the mode and model commands, a stopped turn, a failed turn and a
        # replay fixture that emits a type the protocol does not define.
        chat_id = rec.call(
            "CreateSessionResponse", "POST", "/v1/sessions", {"task": "hello world", "metadata": {"echo_delay_ms": 5}}
        )["session_id"]
        turn_done(engine, chat_id, 1)
        rec.call("InputResponse", "POST", f"/v1/sessions/{chat_id}/input", {"content": "a second turn"})
        turn_done(engine, chat_id, 2)
        rec.call(
            "CommandResponse",
            "POST",
            f"/v1/sessions/{chat_id}/command",
            {"command": "set_mode", "payload": {"mode": "plan"}},
        )
        rec.call(
            "CommandResponse",
            "POST",
            f"/v1/sessions/{chat_id}/command",
            {"command": "set_model", "payload": {"model": "m-1"}},
        )
        before = engine.client().get(f"/v1/sessions/{chat_id}").json()["last_seq"]
        engine.send(chat_id, " ".join(f"word{i}" for i in range(2000)))
        engine.wait_seq(chat_id, before + 4)  # user_message, turn_start and two deltas: the turn is streaming
        rec.call("CommandResponse", "POST", f"/v1/sessions/{chat_id}/command", {"command": "stop"})
        stopped = turn_done(engine, chat_id, 3)[-1]["data"]
        assert stopped["type"] == "run_finished" and stopped["payload"]["reason"] == "stopped", stopped
        rec.call("CommandResponse", "POST", f"/v1/sessions/{chat_id}/command", {"command": "stop"})
        engine.send(chat_id, "replay:nonexistent-golden.jsonl")
        turn_done(engine, chat_id, 4)
        fixture = engine.data_dir / "replays" / "fixture.jsonl"
        fixture.parent.mkdir(exist_ok=True)
        fixture.write_text(
            '{"type": "tool_call", "payload": {"name": "ls", "args": {"path": "."}}}\n'
            '{"type": "assistant_message", "payload": {"text": "done", "message_id": "m-1", "source": "replay"}}\n'
        )
        engine.send(chat_id, "replay:fixture.jsonl")
        turn_done(engine, chat_id, 5)

        oneshot_id = engine.create("just once", metadata={"cli_session_kind": "oneshot"})
        engine.wait_status(oneshot_id, "completed")
        openai_id = engine.create("hi", provider="openai", metadata={"model": "golden-model"})
        turn_done(engine, openai_id, 1)

        # A turn cut off by kill -9: the next start closes it (error, completion and run_finished, `interrupted`).
        cut_id = engine.create("a b c d e f g h i j k l m n o p q r s t", metadata={"echo_delay_ms": 200})
        engine.wait_seq(cut_id, 3)
        engine.kill9()
        engine.start(ray="off")
        engine.wait_status(cut_id, "interrupted")

        rec.call("SessionList", "GET", "/v1/sessions")
        rec.call("SessionSummary", "GET", f"/v1/sessions/{chat_id}")
        rec.call("Status", "GET", "/v1/status")

        rec.call("ErrorBody", "GET", "/health", auth=False)
        rec.call("ErrorBody", "GET", "/v1/sessions/no-such-session")
        rec.call("ErrorBody", "GET", "/no/such/route")
        rec.call("ResumeWindowExceededBody", "GET", f"/v1/sessions/{chat_id}/events?from_id=100000")
        rec.call("ErrorBody", "POST", f"/v1/sessions/{oneshot_id}/input", {"content": "more"})
        rec.call("ErrorBody", "POST", f"/v1/sessions/{chat_id}/input", {"content": "  "})
        rec.call("ErrorBody", "POST", "/v1/sessions", {"task": "x", "provider": "nope"})
        rec.call("ErrorBody", "POST", f"/v1/sessions/{chat_id}/command", {"command": "set_model"})
        rec.call("ErrorBody", "POST", f"/v1/sessions/{chat_id}/command", {"command": "list_checkpoints"})
        rec.call("ErrorBody", "POST", f"/v1/sessions/{chat_id}/command", {"command": "frobnicate"})

        events = [line for sid in (chat_id, oneshot_id, openai_id, cut_id) for line in raw_events(engine, sid)]
        rec.call("ShutdownResponse", "POST", "/v1/shutdown")
        wait_until(lambda: engine.proc.poll() is not None, what="the engine to exit")
    finally:
        engine.stop_quietly()
        chat.shutdown()

    (HERE / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in events))
    (HERE / "responses.jsonl").write_text("".join(line + "\n" for line in rec.responses))
    (HERE / "errors.jsonl").write_text("".join(line + "\n" for line in rec.errors))
    print(f"{len(events)} events, {len(rec.responses)} responses, {len(rec.errors)} errors in {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
