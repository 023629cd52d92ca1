"""POST /v1/sessions/{id}/command: upstream's set_mode/set_model/stop, its unknown-command 400, and 501 for the
upstream commands this engine has no counterpart for."""

import threading

import pytest
from conftest import replay_all, turn_done, wait_until


def command(engine, sid, name, payload=None):
    return engine.client().post(f"/v1/sessions/{sid}/command", json={"command": name, "payload": payload})


def test_set_mode_and_model_answer_like_upstream_and_survive_a_restart(engine_factory, tmp_path):
    engine = engine_factory(tmp_path / "data").start()
    sid = engine.create("")
    r = command(engine, sid, "set_mode", {"mode": "plan"})
    assert r.status_code == 202
    assert r.json() == {"status": "accepted", "detail": {"status": "ok", "mode": "plan"}}
    r = command(engine, sid, "set_model", {"model": "gpt-test"})
    assert r.json()["detail"] == {"status": "ok", "model": "gpt-test"}
    summary = engine.client().get(f"/v1/sessions/{sid}").json()
    assert (summary["mode"], summary["model"]) == ("plan", "gpt-test")
    assert engine.shutdown() == 0
    engine = engine_factory(tmp_path / "data").start()
    summary = engine.client().get(f"/v1/sessions/{sid}").json()
    assert (summary["mode"], summary["model"]) == ("plan", "gpt-test")


def test_bad_commands_get_the_error_envelope(engine):
    sid = engine.create("")
    r = command(engine, sid, "bogus")
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_request",
        "detail": "Unsupported command: bogus",
        "path": f"/v1/sessions/{sid}/command",
    }
    r = command(engine, sid, "set_mode", {"mode": "  "})
    assert r.status_code == 400 and "payload.mode" in r.json()["detail"]
    r = command(engine, sid, "set_model")
    assert r.status_code == 400 and "payload.model" in r.json()["detail"]
    r = command(engine, sid, "list_checkpoints")
    assert r.status_code == 501 and r.json()["error"] == "not_implemented"
    r = engine.client().post(f"/v1/sessions/{sid}/command", json={"payload": {}})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert command(engine, "nope", "stop").status_code == 404
    done = engine.create("x", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(done, "completed")
    r = command(engine, done, "set_mode", {"mode": "plan"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"


def long_turn(engine, sid):
    """A turn that streams for ~10 s (5000 words, 2 ms apart): still going when we stop it."""
    engine.send(sid, " ".join(f"w{i}" for i in range(5000)))
    wait_until(lambda: any(e["data"]["type"] == "assistant_delta" for e in replay_all(engine, sid)), what="the turn")


@pytest.mark.parametrize("ray", ["off", "background"])
def test_stop_ends_the_turn_not_the_session(engine_factory, ray):
    engine = engine_factory().start(ray=ray)
    if ray != "off":
        engine.wait_ready()
    sid = engine.create("", metadata={"echo_delay_ms": 2})
    assert command(engine, sid, "stop").json()["detail"] == {"status": "ok", "stopped": False}  # nothing to stop
    long_turn(engine, sid)
    r = command(engine, sid, "stop")
    assert r.status_code == 202 and r.json()["detail"] == {"status": "ok", "stopped": True}
    events = turn_done(engine, sid, 1)
    kinds = [e["data"]["type"] for e in events]
    assert kinds[-2:] == ["completion", "run_finished"], kinds[-5:]
    assert (kinds.count("completion"), kinds.count("run_finished")) == (1, 1), kinds
    assert events[-1]["data"]["payload"]["reason"] == "stopped"
    assert events[-2]["data"]["payload"]["summary"] == {"completed": False, "reason": "stopped"}
    deltas = sum(k == "assistant_delta" for k in kinds)
    assert 0 < deltas < 5000, deltas
    # Nothing more arrives for the stopped turn, and the session takes the next input.
    last = events[-1]["data"]["seq"]
    assert engine.client().get(f"/v1/sessions/{sid}").json()["status"] == "running"
    engine.send(sid, "after stop")
    events = turn_done(engine, sid, 2)
    after = [e["data"] for e in events if e["data"]["seq"] > last]
    assert after[0]["type"] == "user_message" and after[0]["turn"] == 2, after[:2]
    assert after[-1]["type"] == "run_finished" and after[-1]["payload"]["reason"] == "completed"
    assert "".join(e["payload"]["text"] for e in after if e["type"] == "assistant_delta") == "after stop"


def test_a_stopped_oneshot_session_ends_stopped(engine):
    sid = engine.create(
        " ".join(f"w{i}" for i in range(5000)), metadata={"cli_session_kind": "oneshot", "echo_delay_ms": 2}
    )
    wait_until(lambda: any(e["data"]["type"] == "assistant_delta" for e in replay_all(engine, sid)), what="the turn")
    assert command(engine, sid, "stop").json()["detail"]["stopped"] is True
    engine.wait_status(sid, "stopped")
    assert turn_done(engine, sid)[-1]["data"]["payload"]["reason"] == "stopped"


def test_stop_racing_a_delete_leaves_the_engine_working(engine):
    """The delete cancels the runner while the stop cancels the turn: neither may be swallowed."""
    sid = engine.create("", metadata={"echo_delay_ms": 2})
    long_turn(engine, sid)
    answers = {}

    def stop():
        answers["stop"] = command(engine, sid, "stop").status_code

    thread = threading.Thread(target=stop)
    thread.start()
    assert engine.client().delete(f"/v1/sessions/{sid}").status_code == 204
    thread.join(30)
    assert answers["stop"] in (202, 404), answers
    assert engine.client().get(f"/v1/sessions/{sid}").status_code == 404
    # The engine still runs turns.
    other = engine.create("still here", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(other, "completed")


def test_close_ends_the_session_and_keeps_its_history(engine):
    sid = engine.create("")
    engine.send(sid, "kept words")
    before = turn_done(engine, sid, 1)
    r = command(engine, sid, "close")
    assert r.status_code == 202
    assert r.json() == {"status": "accepted", "detail": {"status": "ok", "closed": True, "stopped": False}}
    assert engine.client().get(f"/v1/sessions/{sid}").json()["status"] == "stopped"
    r = engine.client().post(f"/v1/sessions/{sid}/input", json={"content": "more"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert command(engine, sid, "set_model", {"model": "m"}).status_code == 409
    assert replay_all(engine, sid) == before  # the history stays, nothing was added
    assert engine.events(sid) == []  # a stream of a closed session ends
    assert engine.client().get(f"/v1/sessions/{sid}/state").json()["status"] == "stopped"
    assert command(engine, sid, "close").json()["detail"] == {"status": "ok", "closed": False, "stopped": False}


def test_close_stops_a_running_turn_which_still_ends_with_run_finished(engine):
    sid = engine.create("", metadata={"echo_delay_ms": 2})
    long_turn(engine, sid)
    engine.send(sid, "queued behind the long turn")
    r = command(engine, sid, "close")
    assert r.json()["detail"] == {"status": "ok", "closed": True, "stopped": True}
    events = [e["data"] for e in replay_all(engine, sid)]
    assert events[-1]["type"] == "run_finished" and events[-1]["payload"]["reason"] == "stopped"
    assert [e["turn"] for e in events if e["type"] == "user_message"] == [1]  # the queued input never ran
    assert engine.client().get(f"/v1/sessions/{sid}").json()["status"] == "stopped"


def test_closing_an_interrupted_session_after_a_restart(engine_factory, tmp_path):
    first = engine_factory().start()
    sid = first.create("one turn")
    turn_done(first, sid, 1)
    assert first.shutdown() == 0
    second = engine_factory(tmp_path / "data").start()
    assert second.client().get(f"/v1/sessions/{sid}").json()["status"] == "interrupted"
    assert command(second, sid, "close").json()["detail"]["closed"] is True
    assert second.shutdown() == 0
    third = engine_factory(tmp_path / "data").start()
    assert third.client().get(f"/v1/sessions/{sid}").json()["status"] == "stopped"
