"""The golden corpus (real engine output, see golden/regenerate.py) decodes and re-encodes unchanged.

A client's wire types are checked against the same files, so both sides agree on bytes the engine really sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from protocol_check import check_body, check_event

from breadboard_engine import protocol

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_golden_events_decode_and_re_encode_unchanged():
    lines = (GOLDEN / "events.jsonl").read_bytes().splitlines()
    events = [check_event(line) for line in lines]
    types = {e.type for e in events}
    # The corpus must keep showing every type the engine emits, a type it does not know, and the optional fields.
    assert set(protocol.EVENT_PAYLOADS) <= types
    assert types - set(protocol.EVENT_PAYLOADS), "no event of an unknown type in the corpus"
    payloads = [e.payload for e in events if not isinstance(e.payload, dict)]
    for kind, field in [
        (protocol.AssistantMessagePayload, "usage"),
        (protocol.ErrorPayload, "reason"),
        (protocol.CompletionPayload, "mode"),
    ]:
        have = {field in p.model_fields_set for p in payloads if isinstance(p, kind)}
        assert have == {True, False}, f"the corpus should have {kind.__name__} with and without {field}"


@pytest.mark.parametrize("name", ["responses.jsonl", "errors.jsonl"])
def test_golden_answers_decode_and_re_encode_unchanged(name):
    records = [json.loads(line) for line in (GOLDEN / name).read_text().splitlines()]
    assert records
    for record in records:
        check_body(record["schema"], record["body"])
    if name == "errors.jsonl":
        assert {r["status"] for r in records} >= {400, 401, 404, 409, 422, 501}


def test_golden_state_and_bus_messages_decode_and_re_encode_unchanged():
    records = [json.loads(line) for line in (GOLDEN / "state_and_bus.jsonl").read_text().splitlines()]
    kinds = set()
    for record in records:
        check_body(record["schema"], record["body"])
        body = record["body"]
        if record["schema"] == "RealtimeServerMessage":
            topic = body.get("topic", "") if body["type"] != "error" else ""
            what = body["payload"].get("kind") or "event" if body["type"] == "event" else None
            kinds.add((body["type"], "session:" if topic.startswith("session:") else topic, what))
            if body["type"] == "event" and topic.startswith("session:"):
                check_event(json.dumps(body["payload"], separators=(",", ":"), ensure_ascii=False).encode())
        elif record["schema"] == "RealtimeClientMessage":
            kinds.add(("client", body["type"], None))
        else:
            kinds.add((record["schema"], None, None))
    # Every message kind of the bus, and the state with and without a turn in progress and usage.
    assert kinds >= {
        ("client", "ping", None),
        ("client", "subscribe", None),
        ("client", "unsubscribe", None),
        ("pong", "", None),
        ("snapshot", "sessions", None),
        ("snapshot", "session:", None),
        ("event", "session:", "event"),
        ("error", "", None),
        ("SessionState", None, None),
        ("CommandResponse", None, None),
    } | {("event", "sessions", kind) for kind in ("created", "status", "activity", "deleted")}, kinds
    states = [r["body"] for r in records if r["schema"] == "SessionState"]
    assert {s["turn_in_progress"] is None for s in states} == {True, False}
    assert {s["usage"] is None for s in states} == {True, False}
