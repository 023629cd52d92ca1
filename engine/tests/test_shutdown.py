"""Graceful exits with streams open: POST /v1/shutdown, SIGTERM, SIGINT."""

import signal
import threading
import time

import httpx
import pytest
from conftest import parse_sse, wait_until


def open_followers(engine, sid, n=3):
    ended = []

    def follow():
        try:
            with httpx.stream("GET", f"{engine.url}/v1/sessions/{sid}/events", params={"from_id": 0}, timeout=60) as r:
                for _ in parse_sse(r.iter_bytes()):
                    pass
        except httpx.HTTPError:
            pass
        ended.append(True)

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, ended


def busy_session(engine):
    sid = engine.create("", metadata={"echo_delay_ms": 2})
    engine.send(sid, " ".join(f"w{i}" for i in range(5000)))  # ~10 s of streaming: still going when we stop
    engine.wait_seq(sid, 50)
    return sid


def test_http_shutdown_with_streams_open_exits_0_quickly(engine_factory, tmp_path):
    engine = engine_factory().start()
    sid = busy_session(engine)
    threads, ended = open_followers(engine, sid)
    wait_until(lambda: len(threads) == 3, what="followers")
    started = time.monotonic()
    r = engine.client().post("/v1/shutdown")
    assert r.status_code == 202 and r.json()["status"] == "shutting_down"
    assert engine.proc.wait(15) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"shutdown took {elapsed:.1f}s with streams open"
    for t in threads:
        t.join(10)
    assert len(ended) == 3
    # The cut turn is closed and the session resumable.
    engine = engine_factory(tmp_path / "data").start()
    summary = engine.client().get(f"/v1/sessions/{sid}").json()
    assert summary["status"] == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_streams_open_takes_the_graceful_path(engine_factory, sig):
    engine = engine_factory().start()
    sid = busy_session(engine)
    threads, ended = open_followers(engine, sid)
    started = time.monotonic()
    engine.proc.send_signal(sig)
    engine.proc.wait(15)
    assert time.monotonic() - started < 5
    assert "engine stopped" in engine.log_text(), engine.log_text()[-2000:]
    for t in threads:
        t.join(10)
    assert len(ended) == 3
