"""A session's derived state (GET /v1/sessions/{id}/state), its snapshot file and the event log's offset index."""

import json
import uuid

from conftest import read_until_seq, replay_all, turn_done, wait_until
from protocol_check import check_body

SNAPSHOT_EVERY = "4"


def state(engine, sid) -> dict:
    r = engine.client().get(f"/v1/sessions/{sid}/state")
    assert r.status_code == 200, r.text
    check_body("SessionState", r.json())
    return r.json()


def expected_fold(events: list[dict]) -> dict:
    """The state's event-derived part, computed here from the events themselves (independently of the engine)."""
    conversation, turn, last_turn, turns = [], None, None, 0
    for event in events:
        kind, payload = event["type"], event["payload"]
        if kind in ("user_message", "assistant_message"):
            role = "user" if kind == "user_message" else "assistant"
            conversation.append((event["turn"], role, payload["text"], event["seq"]))
            if turn is not None and role == "assistant":
                turn["partial_text"] = ""
        elif kind == "turn_start":
            turns = event["turn"]
            turn = {"turn": event["turn"], "mode": payload["mode"], "partial_text": "", "started_seq": event["seq"]}
        elif kind == "assistant_delta" and turn is not None:
            turn["partial_text"] += payload["text"]
        elif kind == "run_finished":
            turn = None
            last_turn = {"completed": payload["completed"], "reason": payload["reason"], "turn": event["turn"]}
    return {"conversation": conversation, "turn_in_progress": turn, "last_turn": last_turn, "turns": turns}


def folded(doc: dict) -> dict:
    conversation = [(m["turn"], m["role"], m["text"], m["seq"]) for m in doc["conversation"]]
    return {"conversation": conversation, **{k: doc[k] for k in ("turn_in_progress", "last_turn", "turns")}}


def snapshot(engine, sid) -> dict:
    return json.loads((engine.data_dir / "sessions" / sid / "snapshot.json").read_text())


def test_state_is_the_fold_of_the_events_with_the_session_s_settings(engine):
    sid = engine.create("", provider="echo", metadata={"model": "m1"})
    r = engine.client().post(f"/v1/sessions/{sid}/input", json={"content": "first words", "input_id": "in-1"})
    assert r.status_code == 202
    turn_done(engine, sid, 1)
    engine.send(sid, "second turn")
    events = [e["data"] for e in turn_done(engine, sid, 2)]
    doc = state(engine, sid)
    assert doc["session_id"] == sid and doc["status"] == "running" and doc["provider"] == "echo"
    assert doc["model"] == "m1" and doc["mode"] is None
    assert doc["last_seq"] == events[-1]["seq"] == engine.client().get(f"/v1/sessions/{sid}").json()["last_seq"]
    assert [(m["turn"], m["role"], m["text"]) for m in doc["conversation"]] == [
        (1, "user", "first words"),
        (1, "assistant", "first words"),
        (2, "user", "second turn"),
        (2, "assistant", "second turn"),
    ]
    assert doc["conversation"][0]["input_id"] == "in-1"
    assert doc["turn_in_progress"] is None and doc["turns"] == 2
    assert doc["last_turn"] == {"completed": True, "reason": "completed", "turn": 2}
    assert doc["usage"] is None  # echo reports none
    assert folded(doc) == expected_fold(events)
    assert engine.client().get("/v1/sessions/nope/state").status_code == 404


def test_a_turn_in_progress_shows_its_partial_text(engine):
    words = " ".join(f"w{i}" for i in range(40))
    sid = engine.create("", metadata={"echo_delay_ms": 50})
    engine.send(sid, words)

    def mid_turn():
        doc = state(engine, sid)
        turn = doc["turn_in_progress"]
        return doc if turn is not None and len(turn["partial_text"]) > 3 else None

    doc = wait_until(mid_turn, what="a turn half streamed")
    events = [e["data"] for e in read_until_seq(engine, sid, doc["last_seq"], replay="true")]
    assert folded(doc) == expected_fold(events[: doc["last_seq"]])
    assert words.startswith(doc["turn_in_progress"]["partial_text"]) and doc["turn_in_progress"]["turn"] == 1


def test_state_is_the_same_live_after_a_clean_restart_and_after_kill_9(engine_factory, tmp_path):
    env = {"BREADBOARD_SNAPSHOT_EVERY": SNAPSHOT_EVERY}
    first = engine_factory(env=env).start()
    closed = first.create("")
    idle = first.create("")
    for n in range(3):
        for sid in (closed, idle):
            first.send(sid, f"turn {n} of {sid[:4]}")
            turn_done(first, sid, n + 1)
    assert first.client().post(f"/v1/sessions/{closed}/command", json={"command": "close"}).status_code == 202
    live = {sid: state(first, sid) for sid in (closed, idle)}
    assert live[closed]["status"] == "stopped" and live[idle]["status"] == "running"
    assert first.shutdown() == 0

    second = engine_factory(tmp_path / "data", env=env).start()
    clean = {sid: state(second, sid) for sid in (closed, idle)}
    second.kill9()
    third = engine_factory(tmp_path / "data", env=env).start()
    killed = {sid: state(third, sid) for sid in (closed, idle)}

    assert clean[closed] == live[closed] and killed[closed] == live[closed]
    for after in (clean[idle], killed[idle]):
        # Its runner was alive when the engine stopped: the status says so; the history is the same.
        assert after["status"] == "interrupted"
        assert {**after, "status": "running"} == live[idle]


def test_kill_9_mid_turn_ends_the_cut_turn_in_the_state(engine_factory, tmp_path):
    first = engine_factory(env={"BREADBOARD_SNAPSHOT_EVERY": SNAPSHOT_EVERY}).start()
    sid = first.create("", metadata={"echo_delay_ms": 40})
    first.send(sid, " ".join(f"w{i}" for i in range(200)))
    wait_until(lambda: (state(first, sid)["turn_in_progress"] or {}).get("partial_text"), what="the turn streaming")
    first.kill9()
    second = engine_factory(tmp_path / "data").start()
    doc = state(second, sid)
    events = [e["data"] for e in replay_all(second, sid)]
    assert doc["turn_in_progress"] is None
    assert doc["last_turn"] == {"completed": False, "reason": "interrupted", "turn": 1}
    assert folded(doc) == expected_fold(events) and doc["last_seq"] == events[-1]["seq"]


def test_snapshots_every_n_events_and_at_close(engine_factory):
    engine = engine_factory(env={"BREADBOARD_SNAPSHOT_EVERY": SNAPSHOT_EVERY}).start()
    sid = engine.create("")
    engine.send(sid, "one two three four five six")
    turn_done(engine, sid, 1)
    last = state(engine, sid)["last_seq"]
    # Written in the background once 4 events have come since the last one (the turn made 11).
    path = engine.data_dir / "sessions" / sid / "snapshot.json"
    snap = wait_until(lambda: path.exists() and snapshot(engine, sid), what="a snapshot")
    assert snap["schema"] == 1 and snap["session_id"] == sid and 4 <= snap["seq"] <= last
    assert engine.client().post(f"/v1/sessions/{sid}/command", json={"command": "close"}).status_code == 202
    snap = snapshot(engine, sid)
    assert snap["seq"] == last and snap["event_id"] == replay_all(engine, sid)[-1]["data"]["id"]


def test_the_state_is_read_from_the_snapshot_not_from_the_log_before_it(engine_factory, tmp_path):
    """A doctored (but matching) snapshot shows through: the log before its seq is not read again."""
    first = engine_factory().start()
    sid = first.create("remember this", metadata={"cli_session_kind": "oneshot"})
    first.wait_status(sid, "completed")
    assert first.shutdown() == 0
    path = tmp_path / "data" / "sessions" / sid / "snapshot.json"
    doc = json.loads(path.read_text())
    doc["conversation"][0]["text"] = "from the snapshot"
    path.write_text(json.dumps(doc))
    second = engine_factory(tmp_path / "data").start()
    assert state(second, sid)["conversation"][0]["text"] == "from the snapshot"


def read_json(path):
    """The file's JSON, or None while it is missing or (the damaged one, not yet replaced) does not parse."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def damage(kind: str, path, doc: dict) -> None:
    if kind == "missing":
        path.unlink()
    elif kind == "torn":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "other schema":
        path.write_text(json.dumps({**doc, "schema": 999}))
    elif kind == "ahead of the log":
        path.write_text(json.dumps({**doc, "seq": doc["seq"] + 100}))
    elif kind == "not this log's":
        path.write_text(json.dumps({**doc, "event_id": str(uuid.uuid4())}))


def test_a_missing_torn_or_foreign_snapshot_is_ignored_and_rebuilt(engine_factory, tmp_path):
    env = {"BREADBOARD_SNAPSHOT_EVERY": SNAPSHOT_EVERY}
    first = engine_factory(env=env).start()
    sid = first.create("")
    first.send(sid, "alpha beta gamma")
    turn_done(first, sid, 1)
    assert first.client().post(f"/v1/sessions/{sid}/command", json={"command": "close"}).status_code == 202
    before = state(first, sid)
    assert first.shutdown() == 0
    path = tmp_path / "data" / "sessions" / sid / "snapshot.json"
    good = json.loads(path.read_text())
    for kind in ("missing", "torn", "other schema", "ahead of the log", "not this log's"):
        damage(kind, path, good)
        engine = engine_factory(tmp_path / "data", env=env).start()
        assert state(engine, sid) == before, kind
        # Rebuilt from the log and written again, whole and current.
        assert wait_until(lambda: read_json(path) == good, what=f"rebuilt ({kind})")
        if kind != "missing":
            assert "ignored its snapshot" in engine.log_text(), kind
        assert engine.shutdown() == 0


def test_the_offset_index_is_rebuilt_or_repaired_from_the_log(engine_factory, tmp_path):
    first = engine_factory().start()
    sid = first.create("one two three", metadata={"cli_session_kind": "oneshot"})
    first.wait_status(sid, "completed")
    before = replay_all(first, sid)
    assert first.shutdown() == 0
    index = tmp_path / "data" / "sessions" / sid / "events.idx"
    assert index.stat().st_size == 8 * len(before)
    good = index.read_bytes()
    for broken in (b"", b"\x00" * len(good), good + (10**9).to_bytes(8, "little"), good[:-8], good[:-3]):
        index.write_bytes(broken)
        engine = engine_factory(tmp_path / "data").start()
        assert replay_all(engine, sid) == before
        assert engine.events(sid, from_id=before[2]["data"]["id"])[0]["data"]["seq"] == 4  # resume by id
        assert engine.shutdown() == 0
        assert index.read_bytes() == good


def test_resume_by_the_id_of_an_event_stored_before_ids_carried_their_seq(engine_factory, tmp_path):
    first = engine_factory().start()
    sid = first.create("a b c d e", metadata={"cli_session_kind": "oneshot"})
    first.wait_status(sid, "completed")
    assert first.shutdown() == 0
    log = tmp_path / "data" / "sessions" / sid / "events.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:  # as an older engine wrote them: random UUIDv4 ids
        line["id"] = str(uuid.uuid4())
    log.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    second = engine_factory(tmp_path / "data").start()
    assert [e["data"]["seq"] for e in second.events(sid, from_id=lines[4]["id"])] == list(range(6, len(lines) + 1))
    assert second.client().get(f"/v1/sessions/{sid}/events", params={"from_id": str(uuid.uuid4())}).status_code == 409


def test_a_replay_fixture_cannot_move_its_events_to_another_turn(engine):
    replays = engine.data_dir / "replays"
    replays.mkdir()
    (replays / "turns.jsonl").write_text(
        '{"type": "assistant_message", "turn": 99, "payload": {"text": "mine"}}\n'
        '{"type": "tool_call", "turn": 7, "data": {"name": "ls"}}\n'
    )
    sid = engine.create("replay:turns.jsonl", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "completed")
    events = [e["data"] for e in turn_done(engine, sid)]
    assert {e["turn"] for e in events} == {1}
    assert {e["turn_id"] for e in events} == {f"{sid}:turn:1"}
    assert [e["step_id"] for e in events] == list(range(len(events)))


def test_upstream_persistence_settings_are_named_once_as_superseded(engine_factory):
    env = {
        "BREADBOARD_EVENTLOG_DIR": "/tmp/elsewhere",
        "BREADBOARD_EVENTLOG_BOOTSTRAP": "1",
        "BREADBOARD_EVENTLOG_REPLAY": "1",
        "BREADBOARD_SESSION_INDEX": "1",
    }
    engine = engine_factory(env=env).start()
    engine.create("hi")
    text = engine.log_text()
    for name in env:
        assert text.count(f"{name} is upstream's and is superseded here") == 1, (name, text)
    assert f"kept, in {engine.data_dir / 'sessions'}" in text
    quiet = engine_factory(engine.data_dir.parent / "other").start()
    assert "superseded" not in quiet.log_text()


def test_idle_sessions_let_go_of_their_state_beyond_the_cache_and_read_it_back_the_same(engine_factory):
    """BREADBOARD_STATE_CACHE bounds how many idle sessions hold their derived state in memory; a state let go is
    read back from its snapshot and the log, equal to what it was."""
    engine = engine_factory(env={"BREADBOARD_STATE_CACHE": "2"}).start()
    ids = [engine.create(f"turn of session {i}", metadata={"cli_session_kind": "oneshot"}) for i in range(5)]
    for sid in ids:
        engine.wait_status(sid, "completed")
    first = {sid: state(engine, sid) for sid in ids}

    def counts():
        r = engine.client().get("/v1/status")
        assert r.status_code == 200, r.text
        return r.json()["sessions"]

    assert counts()["states_in_memory"] <= 2, counts()
    again = {sid: state(engine, sid) for sid in reversed(ids)}
    assert again == first
    assert counts()["states_in_memory"] <= 2, counts()
    # A live session (a runner waiting for input) keeps its state whatever the cache says.
    live = [engine.create("") for _ in range(3)]
    for sid in live:
        state(engine, sid)
    assert counts()["states_in_memory"] >= 3, counts()
