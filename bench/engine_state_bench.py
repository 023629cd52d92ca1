#!/usr/bin/env python3
"""Engine benchmarks (issue 11): derived state, opening long sessions, start-up with many sessions, the realtime bus.

Usage: .venv-dev/bin/python bench/engine_state_bench.py [--quick] [--json] [--only state,rss,spawn,bus]

Same-run baselines and ratios, as bench/engine_bench.py (whose process helpers this reuses). Large sessions are
written straight to disk in the engine's format (events.jsonl plus its SQLite row; no offset index, no snapshot: the
engine builds those itself on first open, as for a log an older engine wrote): going through HTTP would take hours.

1. state  GET /v1/sessions/{id}/state of a 100,000-event session vs a 1,000-event one. Both have the same
          conversation (10 turns, the same texts); the larger one has 99,000 more events that do not change it
          (`tool_call` events, as an agent's tool use makes), so the ratio shows what the event count costs. Three
          numbers each: `first` (the first request after start: no snapshot yet, the whole log folded once and a
          snapshot written), `cold` (the first request after a restart: snapshot plus the log's tail), `warm` (the
          median of later requests: the state is kept current in memory). Targets: cold and warm <= 1.5x, <= 20 ms.
          Also reported, untargeted: `warm` of a 100,000-event echo session of 100 turns (a conversation 100x as
          long: the answer grows with the conversation, by design).
2. rss    engine RSS growth (VmHWM, the peak, minus VmRSS before) to open + follow from the end a 1,000,000-event
          session (GET .../events with no replay on an interrupted session: the stream stays open), vs a
          1,000-event one. Target: <= 20 MB.
3. spawn  spawn to the first 200 on /health with 1,000 stored sessions of 1,000 events each vs an empty data dir
          (Ray off, runs interleaved). Target: <= 1.2x.
4. bus    100 WebSocket clients subscribed to `sessions` (asyncio, one process); a `close` command makes a status
          change; latency from sending the command to each client reading its `status` event. p95 over rounds x
          clients. Then the same with one more client that never reads (a 4 KiB receive window). Targets: p95 <= 50
          ms; the stalled client moves the others' p95 by <= 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_bench as eb  # noqa: E402 - the shared process helpers

TARGETS = {"state_ratio": 1.5, "state_ms": 20.0, "rss_mb": 20.0, "spawn_ratio": 1.2, "bus_p95_ms": 50.0}


def write_padded_session(data_dir: Path, turns: int, per_turn: int, status: str = "completed") -> str:
    """`turns` echo turns of 10 words each, each padded with tool_call events to `per_turn` events."""
    from breadboard_engine.store import SessionIndex, SessionRow, iso_now

    sid = str(uuid.uuid4())
    directory = data_dir / "sessions" / sid
    directory.mkdir(parents=True)
    now_ms = int(time.time() * 1000)
    seq = 0
    with open(directory / "events.jsonl", "wb", buffering=1 << 20) as out:

        def emit(kind: str, turn: int, payload: dict) -> None:
            nonlocal seq
            seq += 1
            out.write(eb.event_line(sid, seq, kind, turn, payload, now_ms + seq) + b"\n")

        for turn in range(1, turns + 1):
            words = [f"word{turn}_{i} " for i in range(10)]
            mid = str(uuid.uuid4())
            emit("user_message", turn, {"text": f"turn {turn}: say ten words"})
            emit("turn_start", turn, {"turn": turn, "mode": "echo"})
            for i in range(per_turn - 15):
                emit("tool_call", turn, {"name": "read_file", "call_id": f"c{turn}_{i}", "args": {"path": "x.py"}})
            for w in words:
                emit("assistant_delta", turn, {"text": w, "message_id": mid})
            emit("assistant_message", turn, {"text": "".join(words), "message_id": mid, "source": "echo"})
            emit("completion", turn, {"summary": {"completed": True, "reason": "completed"}, "mode": "echo"})
            emit("run_finished", turn, {"eventCount": per_turn, "completed": True, "reason": "completed",
                                        "logging_dir": None})  # fmt: skip
    now = iso_now()
    index = SessionIndex(data_dir / "sessions.sqlite3")
    index.upsert(SessionRow(id=sid, status=status, created_at=now, updated_at=now, provider="echo", last_seq=seq))
    index.close()
    return sid


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def get_ms(port: int, path: str) -> float:
    t = time.perf_counter()
    status, body = eb.request(port, "GET", path)
    elapsed = (time.perf_counter() - t) * 1000
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body}")
    return elapsed


def bench_state(work: Path, runs: int) -> dict:
    data = work / "state-data"
    small = write_padded_session(data, 10, 100)
    large = write_padded_session(data, 10, 10_000)
    long_sid, _ = eb.write_session(data, 100_000)  # 100 echo turns of 995 words: a long conversation
    warm_up = write_padded_session(data, 1, 15)  # asked first after each start: first-request costs land on it
    out: dict = {}
    child, port = eb.start_engine(work, data, "off")
    try:
        get_ms(port, f"/v1/sessions/{warm_up}/state")
        for name, sid in (("small", small), ("large", large), ("long", long_sid)):
            out[f"{name}_first_ms"] = get_ms(port, f"/v1/sessions/{sid}/state")
        # The snapshots are written in the background: wait for them before restarting.
        for sid in (small, large, long_sid):
            wait_for(lambda s=sid: (data / "sessions" / s / "snapshot.json").exists(), 30, "a snapshot")
    finally:
        child.stop(port)
    cold: dict[str, list[float]] = {"small": [], "large": []}
    warm: dict[str, list[float]] = {"small": [], "large": [], "long": []}
    for _ in range(runs):
        child, port = eb.start_engine(work, data, "off")
        try:
            get_ms(port, f"/v1/sessions/{warm_up}/state")
            order = [("small", small), ("large", large)]
            for name, sid in order if _ % 2 == 0 else order[::-1]:
                cold[name].append(get_ms(port, f"/v1/sessions/{sid}/state"))
            for _i in range(20):
                for name, sid in (("small", small), ("large", large), ("long", long_sid)):
                    warm[name].append(get_ms(port, f"/v1/sessions/{sid}/state"))
        finally:
            child.stop(port)
    for name in cold:
        out[f"{name}_cold_ms"] = statistics.median(cold[name])
    for name in warm:
        out[f"{name}_warm_ms"] = statistics.median(warm[name])
    out["cold_ratio"] = out["large_cold_ms"] / out["small_cold_ms"]
    out["warm_ratio"] = out["large_warm_ms"] / out["small_warm_ms"]
    return out


def vm(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def follow_rss(work: Path, data: Path, sid: str) -> float:
    """MB the engine's peak RSS grows by to open and follow `sid` from its end."""
    child, port = eb.start_engine(work, data, "off")
    try:
        eb.request(port, "GET", "/v1/sessions")
        before = vm(child.proc.pid, "VmRSS")
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            status, summary = eb.request(port, "GET", f"/v1/sessions/{sid}")
            assert summary["status"] == "interrupted", summary
            peak = vm(child.proc.pid, "VmHWM")
        return (peak - before) / 1e6
    finally:
        child.stop(port)


def bench_rss(work: Path, runs: int) -> dict:
    data = work / "rss-data"
    huge, _ = eb.write_session(data, 1_000_000)
    small, _ = eb.write_session(data, 1_000)
    for sid in (huge, small):  # a session an engine was running when it stopped: following it stays live
        mark_interrupted(data, sid)
    out: dict = {"huge_mb": [], "small_mb": []}
    for _ in range(runs):
        for name, sid in (("small_mb", small), ("huge_mb", huge)):
            # Each run opens the log as for the first time (no offset index yet: it is built by scanning the log).
            (data / "sessions" / sid / "events.idx").unlink(missing_ok=True)
            out[name].append(follow_rss(work, data, sid))
    return {"huge_mb": max(out["huge_mb"]), "small_mb": max(out["small_mb"]), "log_bytes": log_size(data, huge)}


def log_size(data: Path, sid: str) -> int:
    return (data / "sessions" / sid / "events.jsonl").stat().st_size


def mark_interrupted(data: Path, sid: str) -> None:
    import sqlite3

    db = sqlite3.connect(data / "sessions.sqlite3")
    db.execute("UPDATE sessions SET status = 'interrupted' WHERE id = ?", (sid,))
    db.commit()
    db.close()


def bench_spawn(work: Path, runs: int) -> dict:
    full, empty = work / "spawn-full", work / "spawn-empty"
    empty.mkdir()
    for _ in range(1000):
        write_padded_session(full, 1, 1000)
    times: dict[str, list[float]] = {"full": [], "empty": []}
    for i in range(runs + 1):
        for name, data in (("full", full), ("empty", empty)) if i % 2 == 0 else (("empty", empty), ("full", full)):
            port = eb.free_port()
            child = eb.Child(
                f"engine-{name}",
                [eb.PY, "-m", "breadboard_engine", "serve", "--port", str(port)],
                eb.engine_env(data, "off"),
                work,
                work / f"engine-spawn-{name}.log",
            )
            t = child.wait_health(port)
            status, listing = eb.request(port, "GET", "/v1/sessions")
            assert len(listing) == (1000 if name == "full" else 0), len(listing)
            child.stop(port)
            if i:  # the first round warms byte-code caches
                times[name].append(t)
    return {
        "full_s": statistics.median(times["full"]),
        "empty_s": statistics.median(times["empty"]),
        "ratio": statistics.median(times["full"]) / statistics.median(times["empty"]),
    }


async def bus_rounds(port: int, clients: int, rounds: int, stalled: bool) -> list[float]:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/v1/realtime"
    conns = [await connect(url, max_size=None) for _ in range(clients)]
    stuck = None
    if stalled:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        stuck = await connect(url, sock=sock, max_size=None, max_queue=1)
        await stuck.send(json.dumps({"type": "subscribe", "topics": ["sessions"]}))
    for ws in conns:
        await ws.send(json.dumps({"type": "subscribe", "topics": ["sessions"]}))
        assert json.loads(await ws.recv())["type"] == "snapshot"
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(rounds):
            status, created = await loop.run_in_executor(None, eb.request, port, "POST", "/v1/sessions", {"task": ""})
            sid = created["session_id"]

            async def status_of(ws, sid=sid) -> float:
                while True:
                    message = json.loads(await ws.recv())
                    payload = message.get("payload") or {}
                    if payload.get("kind") == "status" and payload.get("session_id") == sid:
                        return time.perf_counter()

            waits = [asyncio.ensure_future(status_of(ws)) for ws in conns]
            await asyncio.sleep(0.05)  # the `created` events are read by now
            t0 = time.perf_counter()
            body = {"command": "close"}
            await loop.run_in_executor(None, eb.request, port, "POST", f"/v1/sessions/{sid}/command", body)
            done = await asyncio.gather(*waits)
            latencies.extend((t - t0) * 1000 for t in done)
    finally:
        for ws in conns:
            await ws.close()
        if stuck is not None:
            stuck.transport.abort()
    return latencies


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18]


def bench_bus(work: Path, runs: int, clients: int = 100) -> dict:
    data = work / "bus-data"
    child, port = eb.start_engine(work, data, "off")
    try:
        plain: list[float] = []
        with_stalled: list[float] = []
        for i in range(runs):
            for stalled in (False, True) if i % 2 == 0 else (True, False):
                lat = asyncio.run(bus_rounds(port, clients, 10, stalled))
                (with_stalled if stalled else plain).extend(lat)
    finally:
        child.stop(port)
    return {
        "p95_ms": p95(plain),
        "p50_ms": statistics.median(plain),
        "stalled_p95_ms": p95(with_stalled),
        "stalled_ratio": p95(with_stalled) / p95(plain),
        "samples": len(plain),
    }


def table(res: dict) -> str:
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    rows = [f"machine: {machine}"]
    if "state" in res:
        s = res["state"]
        rows.append(
            f"state: 1,000 events  first {s['small_first_ms']:.1f} ms, cold {s['small_cold_ms']:.2f} ms, "
            f"warm {s['small_warm_ms']:.2f} ms"
        )
        rows.append(
            f"state: 100,000 events first {s['large_first_ms']:.1f} ms, cold {s['large_cold_ms']:.2f} ms, "
            f"warm {s['large_warm_ms']:.2f} ms  -> cold {s['cold_ratio']:.2f}x, warm {s['warm_ratio']:.2f}x "
            f"(target <= {TARGETS['state_ratio']}x, <= {TARGETS['state_ms']} ms)"
        )
        rows.append(
            f"state: 100,000 events, 100 turns (conversation 100x): first {s['long_first_ms']:.1f} ms, "
            f"warm {s['long_warm_ms']:.2f} ms (untargeted)"
        )
    if "rss" in res:
        r = res["rss"]
        rows.append(
            f"rss: open + follow from the end, 1,000,000 events ({r['log_bytes'] / 1e6:.0f} MB log): peak growth "
            f"{r['huge_mb']:.1f} MB; 1,000 events: {r['small_mb']:.1f} MB (target <= {TARGETS['rss_mb']} MB)"
        )
    if "spawn" in res:
        p = res["spawn"]
        rows.append(
            f"spawn to /health: 1,000 sessions x 1,000 events {p['full_s'] * 1000:.0f} ms, empty "
            f"{p['empty_s'] * 1000:.0f} ms -> {p['ratio']:.2f}x (target <= {TARGETS['spawn_ratio']}x)"
        )
    if "bus" in res:
        b = res["bus"]
        rows.append(
            f"bus: status change to 100 `sessions` subscribers: p50 {b['p50_ms']:.1f} ms, p95 {b['p95_ms']:.1f} ms "
            f"(target <= {TARGETS['bus_p95_ms']} ms); with one stalled subscriber p95 {b['stalled_p95_ms']:.1f} ms "
            f"-> {b['stalled_ratio']:.2f}x (target <= 1.10x); {b['samples']} samples each"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs instead of 10")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="state,rss,spawn,bus")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 10)
    work = Path(tempfile.mkdtemp(prefix="bb-state-bench-"))
    res: dict = {}
    try:
        for name in args.only.split(","):
            eb.log(f"== {name}")
            fn = {"state": bench_state, "rss": bench_rss, "spawn": bench_spawn, "bus": bench_bus}[name]
            res[name] = fn(work, runs)
            eb.log(table({name: res[name]}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return eb.report(table(res), res, args.json)


if __name__ == "__main__":
    sys.exit(main())
