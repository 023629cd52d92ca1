#!/usr/bin/env python3
"""Client benchmarks (`breadboard ask` / `sessions follow`), each against a baseline measured in the same run.

Usage: .venv-dev/bin/python bench/client_bench.py [--bin target/release/breadboard] [--only ask,follow,resume,rss]
                                                  [--runs N] [--baseline-bin OTHER_BREADBOARD]

The engine is the checkout's (`python -m breadboard_engine serve` from this python, Ray off), started by
`breadboard engine start` in a temp BREADBOARD_HOME (BREADBOARD_ENGINE_CMD), so the client finds it as a user's.

1. ask     wall time of `breadboard ask "hello world"` (a one-shot echo turn against a warm engine), vs the same
           requests by curl: `curl POST /v1/sessions` then `curl -N .../events?from_id=0` (the stream of a one-shot
           session ends with its turn). Runs interleaved; medians. Target: ask <= 1.1 x curl + 5 ms.
2. follow  `breadboard sessions follow ID --json > /dev/null` of a finished 100,000-event session vs
           `curl -sN .../events?from_id=0 > /dev/null`. Target: >= 0.8 x curl's events/s and >= 100,000 events/s.
3. resume  `engine.restart = "on-failure"`, a follower (`sessions follow --json`) on an idle session, `kill -9` of
           the engine; from the restarted engine's /health answering (polled every 2 ms) the bench posts an input
           and measures the time to the follower's first new line. The same input's events reach a raw SSE client
           connected at that moment (baseline: how long the engine itself takes). Target: <= 200 ms.
4. rss     peak RSS (getrusage of the child) of `sessions follow ID --json > /dev/null` over a 1,000,000-event
           session. Target: <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import free_port, log, write_session  # noqa: E402  (the engine's on-disk format, directly)


class Home:
    def __init__(self, binary: Path, work: Path, config: str = ""):
        self.bin = str(binary)
        self.home = work / "home"
        (self.home).mkdir(parents=True)
        if config:
            (self.home / "config.toml").write_text(config)
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BREADBOARD_")} | {
            "BREADBOARD_HOME": str(self.home),
            "BREADBOARD_ENGINE_CMD": f"{sys.executable} -m breadboard_engine serve",
            "BREADBOARD_RAY_START": "off",
            "BREADBOARD_CLI_PORT": str(self.port),
            "BREADBOARD_RESTART_BACKOFF_MS": "100",
            "NO_COLOR": "1",
        }

    @property
    def data(self) -> Path:
        return self.home / "data"

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True, **kw)

    def start(self) -> None:
        r = self.run("engine", "start")
        if r.returncode != 0:
            raise RuntimeError(r.stderr)

    def stop(self) -> None:
        self.run("engine", "stop")

    def token(self) -> str:
        return (self.home / "run/engine.token").read_text().strip()

    def reg(self) -> dict:
        return json.loads((self.home / "run/engine.json").read_text())

    def curl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        # The token goes in a header file, never on the command line.
        hdr = self.home / "curl-headers"
        hdr.write_text(f"Authorization: Bearer {self.token()}\n")
        return subprocess.run(["curl", "-s", "-H", f"@{hdr}", *args], capture_output=True, **kw)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_ask(b: Path, work: Path, runs: int) -> dict:
    h = Home(b, work / "ask")
    h.start()
    try:

        def ask() -> float:
            t = time.perf_counter()
            r = h.run("ask", "hello world")
            dt = time.perf_counter() - t
            assert r.returncode == 0 and r.stdout == "hello world\n", r
            return dt

        def raw() -> float:
            t = time.perf_counter()
            r = h.curl(
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                '{"task":"hello world","metadata":{"cli_session_kind":"oneshot"}}',
                h.url("/v1/sessions"),
            )
            sid = json.loads(r.stdout)["session_id"]
            r = h.curl("-N", h.url(f"/v1/sessions/{sid}/events?from_id=0"))
            dt = time.perf_counter() - t
            assert b'"run_finished"' in r.stdout, r
            return dt

        for _ in range(3):
            ask(), raw()
        a, c = [], []
        for _ in range(runs):
            a.append(ask())
            c.append(raw())
        am, cm = median(a), median(c)
        limit = 1.1 * cm + 0.005
        log(
            f"ask: breadboard {am * 1000:.1f} ms, curl {cm * 1000:.1f} ms (median of {runs}); "
            f"target <= {limit * 1000:.1f} ms: {'ok' if am <= limit else 'MISSED'}"
        )
        return {"ask_ms": am * 1000, "curl_ms": cm * 1000, "ratio": am / cm, "target_ms": limit * 1000}
    finally:
        h.stop()


def bench_follow(b: Path, work: Path, runs: int, baseline: Path | None = None, n: int = 100_000) -> dict:
    h = Home(b, work / "follow")
    sid, _ = write_session(h.data, n)
    h.start()
    try:

        def follow(binary: str = h.bin) -> float:
            t = time.perf_counter()
            with open(os.devnull, "wb") as null:
                r = subprocess.run(
                    [binary, "sessions", "follow", sid, "--json"], env=h.env, stdout=null, stderr=subprocess.PIPE
                )
            dt = time.perf_counter() - t
            assert r.returncode == 0, r.stderr
            return dt

        def curl() -> float:
            t = time.perf_counter()
            r = h.curl("-N", "-o", os.devnull, h.url(f"/v1/sessions/{sid}/events?from_id=0"))
            dt = time.perf_counter() - t
            assert r.returncode == 0
            return dt

        follow(), curl()  # the engine loads the log once
        f, c, old = [], [], []
        for _ in range(runs):
            f.append(follow())
            c.append(curl())
            if baseline:
                old.append(follow(str(baseline)))
        fe, ce = n / median(f), n / median(c)
        ok = fe >= 0.8 * ce and fe >= 100_000
        log(
            f"follow: breadboard {fe:,.0f} events/s, curl {ce:,.0f} events/s ({fe / ce:.2f}x) over {n:,} events; "
            f"target >= 0.8x and >= 100,000/s: {'ok' if ok else 'MISSED'}"
        )
        out = {"follow_eps": fe, "curl_eps": ce, "ratio": fe / ce}
        if baseline:
            oe = n / median(old)
            log(f"follow: baseline binary {baseline}: {oe:,.0f} events/s ({oe / ce:.2f}x curl)")
            out |= {"baseline_eps": oe, "baseline_ratio": oe / ce}
        return out
    finally:
        h.stop()


def health_ok(port: int, token: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(
                f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def post(port: int, token: str, path: str, body: dict) -> None:
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        s.recv(4096)


def bench_resume(b: Path, work: Path, runs: int) -> dict:
    h = Home(b, work / "resume", config='[engine]\nrestart = "on-failure"\n')
    h.start()
    samples = []
    try:
        sid = h.run("sessions", "new").stdout.strip()
        follower = subprocess.Popen(
            [h.bin, "sessions", "follow", sid, "--json"], env=h.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        os.set_blocking(follower.stdout.fileno(), False)
        token = h.token()
        # Crash-loop detection gives up after 3 crashes within 60 s: at most 2 kills per minute.
        for i in range(runs):
            if i and i % 2 == 0:
                time.sleep(61)
            pid = h.reg()["pid"]
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    if h.reg()["pid"] != pid and health_ok(h.port, token):
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.002)
            t_health = time.perf_counter()
            while follower.stdout.read() not in (None, b""):
                pass
            post(h.port, token, f"/v1/sessions/{sid}/input", {"content": f"resume {i}"})
            buf = b""
            while b"\n" not in buf:
                chunk = follower.stdout.read()
                if chunk:
                    buf += chunk
                time.sleep(0.0005)
            samples.append(time.perf_counter() - t_health)
            log(f"resume run {i + 1}/{runs}: {samples[-1] * 1000:.1f} ms from /health answering to the first event")
            time.sleep(0.5)
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=10)
    finally:
        h.stop()
    m = median(samples)
    log(
        f"resume: median {m * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms; target <= 200 ms: "
        f"{'ok' if m <= 0.2 else 'MISSED'}"
    )
    return {"resume_ms_median": m * 1000, "resume_ms_max": max(samples) * 1000}


def bench_rss(b: Path, work: Path, n: int = 1_000_000) -> dict:
    h = Home(b, work / "rss")
    log(f"rss: writing a {n:,}-event session ...")
    sid, _ = write_session(h.data, n)
    h.start()
    try:
        # GNU time reports the peak of the process it execs; a child forked from this (large) Python process
        # would have this process's pages counted in its own ru_maxrss until its exec.
        with open(os.devnull, "wb") as null:
            t = time.perf_counter()
            r = subprocess.run(
                ["/usr/bin/time", "-f", "%M", h.bin, "sessions", "follow", sid, "--json"],
                env=h.env,
                stdout=null,
                stderr=subprocess.PIPE,
                text=True,
            )
            dt = time.perf_counter() - t
        assert r.returncode == 0, r.stderr
        peak_kb = int(r.stderr.strip().splitlines()[-1])
    finally:
        h.stop()
    log(
        f"rss: peak {peak_kb / 1024:.1f} MB following {n:,} events ({n / dt:,.0f} events/s); target <= 20 MB: "
        f"{'ok' if peak_kb <= 20 * 1024 else 'MISSED'}"
    )
    return {"rss_mb": peak_kb / 1024, "eps": n / dt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/breadboard"))
    ap.add_argument("--only", default="ask,follow,resume,rss")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline-bin", help="another breadboard binary whose follow is measured in the same run")
    args = ap.parse_args()
    b = Path(args.bin).resolve()
    log(f"machine: {platform.platform()}, {os.cpu_count()} cpus; binary {b}")
    out = {}
    with tempfile.TemporaryDirectory(prefix="bbclient-bench-") as tmp:
        work = Path(tmp)
        only = args.only.split(",")
        if "rss" in only:
            out["rss"] = bench_rss(b, work)
        if "ask" in only:
            out["ask"] = bench_ask(b, work, args.runs)
        if "follow" in only:
            out["follow"] = bench_follow(
                b, work, max(3, args.runs // 4), Path(args.baseline_bin).resolve() if args.baseline_bin else None
            )
        if "resume" in only:
            out["resume"] = bench_resume(b, work, min(args.runs, 4))
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
