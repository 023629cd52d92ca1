"""Captures golden/state_and_bus.jsonl from a real engine run: derived state answers and realtime bus messages.

    PYTHONPATH=engine/src .venv-dev/bin/python engine/tests/golden/regenerate_state_and_bus.py

Kept apart from regenerate.py (and its files) so that adding these did not rewrite the older corpus byte for byte.
One record per line, `{"schema", "request", "body"}`: `schema` names the definition in docs/protocol.schema.json
that `body` is an instance of; `request` says where it came from (`client` for what a client sends on the bus).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from conftest import Engine, turn_done, wait_until  # noqa: E402 - the harness lives next to this directory
from regenerate import TOKEN, chat_server, compact  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bb-golden-bus-"))
    chat = chat_server()
    env = {"BREADBOARD_OPENAI_BASE_URL": f"http://127.0.0.1:{chat.server_address[1]}/v1"}
    engine = Engine(work / "data", env=env, token=TOKEN)
    records: list[str] = []

    def record(schema: str, request: str, body) -> None:
        records.append(compact({"schema": schema, "request": request, "body": body}))

    def state(sid: str) -> None:
        path = f"/v1/sessions/{sid}/state"
        record("SessionState", f"GET {path}", engine.client().get(path).json())

    try:
        engine.start(ray="off")
        url = f"ws://127.0.0.1:{engine.port}/v1/realtime"
        with connect(url, additional_headers=engine.headers, open_timeout=20) as ws:

            def client(doc: dict) -> None:
                record("RealtimeClientMessage", "client", doc)
                ws.send(json.dumps(doc))

            def server() -> dict:
                doc = json.loads(ws.recv(timeout=30))
                record("RealtimeServerMessage", "GET /v1/realtime", doc)
                return doc

            client({"type": "ping", "id": 1})
            server()
            client({"type": "subscribe", "topics": ["sessions"]})
            server()
            openai_id = engine.create("hi", provider="openai", metadata={"model": "golden-model"})
            turn_done(engine, openai_id, 1)
            seen = [server() for _ in range(2)]  # created, then activity
            assert {m["payload"]["kind"] for m in seen} == {"created", "activity"}, seen
            state(openai_id)  # with usage
            client({"type": "subscribe", "topics": [f"session:{openai_id}", "weather"]})
            server()  # the session's snapshot
            server()  # the error about `weather`
            engine.send(openai_id, "again")
            while server()["payload"].get("type") != "run_finished":
                pass
            client({"type": "unsubscribe", "topics": [f"session:{openai_id}"]})
            r = engine.client().post(f"/v1/sessions/{openai_id}/command", json={"command": "close"})
            record("CommandResponse", f"POST /v1/sessions/{openai_id}/command", r.json())
            wait_until(lambda: server()["payload"]["kind"] == "status", what="the status event")
            # A turn in progress.
            slow = engine.create("", metadata={"echo_delay_ms": 100})
            engine.send(slow, "one two three four five six seven eight")
            engine.wait_seq(slow, 5)
            state(slow)
            engine.client().delete(f"/v1/sessions/{slow}")
            wait_until(lambda: server()["payload"]["kind"] == "deleted", what="the deleted event")
        engine.shutdown()
    finally:
        engine.stop_quietly()
        chat.shutdown()
    (HERE / "state_and_bus.jsonl").write_text("".join(line + "\n" for line in records))
    print(f"{len(records)} records in {HERE / 'state_and_bus.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
