"""Restart loses nothing: clean stops, kill -9 at random moments, torn tails, a lost index, interrupted deletes."""

import errno
import json
import os
import random
import sqlite3
import subprocess
import threading

import httpx
import pytest
from conftest import parse_sse, read_until_seq, replay_all, turn_done, wait_until


def raw_replay(engine, sid) -> bytes:
    with httpx.stream("GET", f"{engine.url}/v1/sessions/{sid}/events", params={"replay": "true"}, timeout=60) as r:
        data = b""
        last = engine.client().get(f"/v1/sessions/{sid}").json()["last_seq"]
        for chunk in r.iter_bytes():
            data += chunk
            if data.count(b"\n\n") >= last:
                return data
    return data


def test_clean_restart_keeps_sessions_events_and_resume(engine_factory, tmp_path):
    first = engine_factory().start()
    done = first.create("one shot", metadata={"cli_session_kind": "oneshot"})
    chat = first.create("")
    first.send(chat, "turn one")
    turn_done(first, chat, 1)
    first.send(chat, "turn two")
    turn_done(first, chat, 2)
    first.wait_status(done, "completed")
    before = {sid: raw_replay(first, sid) for sid in (done, chat)}
    assert first.shutdown() == 0

    second = engine_factory(tmp_path / "data").start()
    listed = {s["session_id"]: s for s in second.client().get("/v1/sessions").json()}
    assert set(listed) == {done, chat}
    assert listed[done]["status"] == "completed"
    assert listed[chat]["status"] == "interrupted"  # its runner was alive when the engine stopped
    for sid in (done, chat):
        assert raw_replay(second, sid) == before[sid], "replay after restart differs"
    # Resume by Last-Event-ID across the restart.
    resumed = second.events(done, last_event_id=3)
    assert resumed[0]["data"]["seq"] == 4
    # The interrupted conversation picks up again, numbering on.
    last_seq = listed[chat]["last_seq"]
    second.send(chat, "turn three")
    events = turn_done(second, chat, 3)
    third = [e for e in events if e["data"]["seq"] > last_seq]
    assert third[0]["data"]["seq"] == last_seq + 1
    assert third[0]["data"]["type"] == "user_message" and third[0]["data"]["turn"] == 3
    assert second.client().get(f"/v1/sessions/{chat}").json()["status"] == "running"


def follow_in_thread(engine, sid, received):
    after = engine.client().get(f"/v1/sessions/{sid}").json()["last_seq"]

    def run():
        try:
            url = f"{engine.url}/v1/sessions/{sid}/events"
            with httpx.stream("GET", url, params={"from_id": after}, timeout=60) as r:
                for frame in parse_sse(r.iter_bytes()):
                    if "data" in frame:
                        received.append(frame["data"])
        except httpx.HTTPError:
            pass  # the engine was killed under us: expected

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_kill_9_at_random_moments_loses_no_event_a_client_saw(engine_factory, tmp_path):
    rng = random.Random(20261123)
    data = tmp_path / "data"
    engine = engine_factory(data).start()
    # Words stream out one per millisecond, so the kill lands mid-turn (a turn of 4000 words takes > 4 s).
    sid = engine.create("", metadata={"echo_delay_ms": 1})
    seen_total: dict[int, dict] = {}
    for round_ in range(4):
        received: list[dict] = []
        t = follow_in_thread(engine, sid, received)
        engine.send(sid, " ".join(f"r{round_}w{i}" for i in range(4000)))
        kill_at = rng.randint(5, 3000)
        wait_until(lambda: len(received) >= kill_at, 60, interval=0.001, what=f"{kill_at} events")  # noqa: B023
        engine.kill9()
        t.join(10)
        for event in received:
            seen_total[event["seq"]] = event

        engine = engine_factory(data).start()
        stored = {f["data"]["seq"]: f["data"] for f in replay_all(engine, sid)}
        assert list(stored) == list(range(1, len(stored) + 1)), "seqs are not contiguous after recovery"
        for seq, event in seen_total.items():
            assert stored.get(seq) == event, f"event {seq} a client received is missing or changed after kill -9"
        summary = engine.client().get(f"/v1/sessions/{sid}").json()
        assert summary["status"] == "interrupted"
        tail = [stored[s]["type"] for s in sorted(stored)[-3:]]
        assert tail == ["error", "completion", "run_finished"], tail
        assert stored[max(stored)]["payload"]["reason"] == "interrupted"
    # And the session still works.
    last = engine.client().get(f"/v1/sessions/{sid}").json()["last_seq"]
    engine.send(sid, "after all that")
    events = read_until_seq(engine, sid, last + 8, from_id=last)  # 3 words: 8 events
    assert events[-1]["data"]["type"] == "run_finished" and events[-1]["data"]["payload"]["completed"] is True


def test_torn_last_line_is_repaired(engine_factory, tmp_path):
    data = tmp_path / "data"
    engine = engine_factory(data).start()
    sid = engine.create("some words here", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "completed")
    good = replay_all(engine, sid)
    engine.kill9()
    log = data / "sessions" / sid / "events.jsonl"
    intact = log.read_bytes()
    with open(log, "ab") as f:
        f.write(b'{"id":"torn","seq":%d,"type":"assistant_de' % (len(good) + 1))
    engine = engine_factory(data).start()
    assert [f["data"] for f in replay_all(engine, sid)] == [f["data"] for f in good]
    assert log.read_bytes() == intact
    assert "torn tail" in engine.log_text()


def test_lost_index_is_rebuilt_from_the_logs(engine_factory, tmp_path):
    data = tmp_path / "data"
    engine = engine_factory(data).start()
    sids = [engine.create(f"task {i}", metadata={"cli_session_kind": "oneshot"}) for i in range(3)]
    for sid in sids:
        engine.wait_status(sid, "completed")
    assert engine.shutdown() == 0
    with sqlite3.connect(data / "sessions.sqlite3") as db:
        db.execute("DELETE FROM sessions")
    engine = engine_factory(data).start()
    listed = {s["session_id"] for s in engine.client().get("/v1/sessions").json()}
    assert listed == set(sids)
    for sid in sids:
        assert replay_all(engine, sid)[-1]["data"]["type"] == "run_finished"


def test_interrupted_delete_is_finished_at_start(engine_factory, tmp_path):
    data = tmp_path / "data"
    engine = engine_factory(data).start()
    keep = engine.create("keep", metadata={"cli_session_kind": "oneshot"})
    gone = engine.create("gone", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(gone, "completed")
    engine.wait_status(keep, "completed")
    assert engine.shutdown() == 0
    (data / "sessions" / gone / ".deleted").touch()  # as if a DELETE was cut off by a crash
    engine = engine_factory(data).start()
    assert [s["session_id"] for s in engine.client().get("/v1/sessions").json()] == [keep]
    assert not (data / "sessions" / gone).exists()


def test_event_log_lines_are_the_sse_payloads(engine):
    sid = engine.create("a b c", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(sid, "completed")
    lines = (engine.data_dir / "sessions" / sid / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [f["data"] for f in replay_all(engine, sid)]


def test_stored_sessions_hold_no_file_descriptors(engine):
    sids = [engine.create(f"task {i}", metadata={"cli_session_kind": "oneshot"}) for i in range(30)]
    for sid in sids:
        engine.wait_status(sid, "completed")
        replay_all(engine, sid)  # reading history must not pin a descriptor either

    def open_logs():
        fd_dir = f"/proc/{engine.proc.pid}/fd"
        targets = []
        for fd in os.listdir(fd_dir):
            try:
                targets.append(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                pass
        return [t for t in targets if t.endswith("events.jsonl")]

    wait_until(lambda: not open_logs(), 10, what="event logs of closed sessions to be closed")
    live = engine.create("")
    engine.send(live, "x")
    turn_done(engine, live)
    assert len(open_logs()) == 1  # only the live session's log is open for appends


def test_a_second_engine_on_the_same_data_dir_is_refused(engine_factory, tmp_path):
    first = engine_factory(tmp_path / "data").start()
    second = engine_factory(tmp_path / "data").start(wait=False)
    assert second.proc.wait(30) == 1
    assert f"in use by another engine (pid {first.proc.pid})" in second.log_text(), second.log_text()
    assert first.client().get("/health").status_code == 200


def test_corrupt_index_is_set_aside_and_rebuilt_from_the_logs(engine_factory, tmp_path):
    data = tmp_path / "data"
    engine = engine_factory(data).start()
    sids = [engine.create(f"task {i}", metadata={"cli_session_kind": "oneshot"}) for i in range(2)]
    chat = engine.create("")
    engine.send(chat, "turn one")
    turn_done(engine, chat)
    for sid in sids:
        engine.wait_status(sid, "completed")
    sids.append(chat)
    before = {sid: [f["data"] for f in replay_all(engine, sid)] for sid in sids}
    assert engine.shutdown() == 0
    index = data / "sessions.sqlite3"
    garbage = os.urandom(8192)
    index.write_bytes(garbage)  # "file is not a database"

    engine = engine_factory(data).start()
    listed = {s["session_id"] for s in engine.client().get("/v1/sessions").json()}
    assert listed == set(sids)
    for sid in sids:
        assert [f["data"] for f in replay_all(engine, sid)] == before[sid]
    aside = [p for p in data.iterdir() if p.name.startswith("sessions.sqlite3.corrupt-")]
    assert [p.read_bytes() for p in aside if p.name.split("-")[-1].isdigit()] == [garbage], aside
    line = next(x for x in engine.log_text().splitlines() if "could not be read" in x)
    assert str(index) in line and str(aside[0]) in line and "rebuilt it from the event logs" in line
    # The rebuilt index is a working one: new sessions are kept across the next restart.
    extra = engine.create("after the rebuild", metadata={"cli_session_kind": "oneshot"})
    engine.wait_status(extra, "completed")

    # A garbage write-ahead log (left by a kill -9, then damaged) loses nothing either.
    engine.kill9()
    wal = data / "sessions.sqlite3-wal"
    assert wal.exists()
    wal.write_bytes(os.urandom(wal.stat().st_size or 4096))
    engine = engine_factory(data).start()
    listed = {s["session_id"] for s in engine.client().get("/v1/sessions").json()}
    assert listed == {*sids, extra}
    assert replay_all(engine, extra)[-1]["data"]["type"] == "run_finished"


def test_a_full_disk_refuses_a_create_with_the_envelope_and_leaves_nothing(engine_factory, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    engines = []
    try:
        data = disk / "data"
        engine = engine_factory(data).start()
        engines.append(engine)
        kept = engine.create("before the disk filled", metadata={"cli_session_kind": "oneshot"})
        engine.wait_status(kept, "completed")
        filler = disk / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        for _ in range(3):
            r = engine.client().post(
                "/v1/sessions", json={"task": "hello", "metadata": {"cli_session_kind": "oneshot"}}
            )
            assert r.status_code == 507, r.text
            body = r.json()
            assert body["error"] == "internal" and body["path"] == "/v1/sessions"
            assert body["detail"].startswith(f"cannot store the new session in {data}: "), body
        assert [s["session_id"] for s in engine.client().get("/v1/sessions").json()] == [kept]
        filler.unlink()
        assert engine.shutdown() == 0
        engine = engine_factory(data).start()
        engines.append(engine)
        assert [s["session_id"] for s in engine.client().get("/v1/sessions").json()] == [kept]
        assert sorted(os.listdir(data / "sessions")) == [kept]
        assert engine.shutdown() == 0
    finally:
        for engine in engines:
            engine.stop_quietly()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
