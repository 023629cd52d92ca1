#!/usr/bin/env python3
"""/health latency while a local Ray starts, against the same probe on an engine with Ray off.

Usage: .venv-dev/bin/python bench/health_during_ray.py [--runs N] [--json]

Each run starts `python -m breadboard_engine serve` in a fresh data dir and, from its first 200 on /health, sends
GET /health over one kept-alive HTTP/1.1 connection every 10 ms (the probe waits for each answer: a stalled answer is
one long sample, never hidden by overlapping requests). Subject: BREADBOARD_RAY_START=background, sampled from the
first 200 until 2 s after the engine logs "ray connected" (the whole of Ray's start). Baseline:
BREADBOARD_RAY_START=off, sampled for the same number of seconds as the subject run before it. Runs alternate
subject/baseline so the machine's load moves both alike. Reported: p50, p99 and max latency of every sample of each
side, and the ratio of the p99s, over the samples a client probing every 10 ms would have seen (coordinated-omission
correction: a stalled answer also counts for the probes it held back).
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import log, report, start_engine  # noqa: E402

INTERVAL_S = 0.010
AFTER_CONNECT_S = 2.0
TARGET_P99_S = 0.100


def probe_until(port: int, done) -> list[float]:
    """GET /health every INTERVAL_S over one connection until done() is true; each sample's latency in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples: list[float] = []
    try:
        while not done():
            started = time.perf_counter()
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/health answered {resp.status}")
            samples.append(time.perf_counter() - started)
            time.sleep(max(0.0, INTERVAL_S - (time.perf_counter() - started)))
    finally:
        conn.close()
    return samples


def ray_connected(log_path: Path, offset: int) -> bool:
    """Whether the engine logged "ray connected" after `offset` (the log file is shared by the runs)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return b"ray connected" in f.read()
    except OSError:
        return False


def one_run(work: Path, ray: str, duration: float | None) -> tuple[list[float], float]:
    data = Path(tempfile.mkdtemp(prefix="bbh", dir="/tmp"))  # short: Ray's temp dir goes under it
    log_path = work / f"engine-{ray}.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    child, port = start_engine(work, data, ray)
    started = time.monotonic()
    connected: list[float] = []

    def done() -> bool:
        now = time.monotonic()
        if duration is not None:
            return now - started >= duration
        if child.proc.poll() is not None:
            raise RuntimeError(f"engine exited with {child.proc.returncode}")
        if not connected and ray_connected(log_path, offset):
            connected.append(now)
        if now - started > 180:
            raise RuntimeError("Ray did not connect within 180 s")
        return bool(connected) and now - connected[0] >= AFTER_CONNECT_S

    try:
        samples = probe_until(port, done)
    finally:
        leaked = child.stop(port)
        shutil.rmtree(data, ignore_errors=True)
        if leaked:
            log(f"  ! leaked processes killed: {leaked}")
    return samples, time.monotonic() - started


def pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def corrected(xs: list[float]) -> list[float]:
    """What a client probing every INTERVAL_S would have seen: while one answer stalls for L seconds, the probes it
    held back would each have waited out the rest of the stall (coordinated-omission correction, as HdrHistogram's
    recordValueWithExpectedInterval). Without it, a 2 s stall counts as one sample and hides below the p99."""
    out = list(xs)
    for x in xs:
        k = 1
        while x - k * INTERVAL_S > INTERVAL_S:
            out.append(x - k * INTERVAL_S)
            k += 1
    return out


def summary(raw: list[float]) -> dict:
    xs = corrected(raw)
    return {
        "requests": len(raw),
        "samples": len(xs),
        "p50_ms": statistics.median(xs) * 1000,
        "p99_ms": pct(xs, 99) * 1000,
        "max_ms": max(xs) * 1000,
        "over_100ms": sum(1 for x in xs if x > TARGET_P99_S),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="subject/baseline pairs (default 3)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the table to stderr)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bb-health-bench-"))
    load_before = os.getloadavg()
    subject: list[float] = []
    baseline: list[float] = []
    per_run = []
    try:
        for run in range(args.runs):
            s, seconds = one_run(work, "background", None)
            b, _ = one_run(work, "off", seconds)
            subject += s
            baseline += b
            per_run.append({"ray_s": seconds, "subject_max_ms": max(s) * 1000, "baseline_max_ms": max(b) * 1000})
            slowest = f"max {max(s) * 1000:.0f} ms (ray) / {max(b) * 1000:.0f} ms (off)"
            log(f"run {run + 1}: {seconds:.1f} s sampled, {slowest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {
        "command": " ".join([".venv-dev/bin/python", "bench/health_during_ray.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load_before},
        "ray_starting": summary(subject),
        "ray_off": summary(baseline),
        "runs": per_run,
    }
    res["machine"]["loadavg_after"] = os.getloadavg()
    res["p99_ratio"] = res["ray_starting"]["p99_ms"] / res["ray_off"]["p99_ms"]
    lines = [
        "| /health while | requests | samples | p50 | p99 | max | > 100 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (("a local Ray starts", "ray_starting"), ("Ray off (baseline)", "ray_off")):
        r = res[key]
        lines.append(
            f"| {name} | {r['requests']} | {r['samples']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms "
            f"| {r['max_ms']:.0f} ms | {r['over_100ms']} |"
        )
    met = "met" if res["ray_starting"]["p99_ms"] <= TARGET_P99_S * 1000 else "NOT met"
    text = "\n".join(lines) + (
        f"\np99 ratio {res['p99_ratio']:.2f}x; target p99 <= {TARGET_P99_S * 1000:.0f} ms while Ray starts: {met}"
        f"\nmachine: {res['machine']['cpus']} cpus, python {res['machine']['python']}, load avg before "
        f"{load_before[0]:.2f} / after {res['machine']['loadavg_after'][0]:.2f} (1 min)"
    )
    return report(text, res, args.json)


if __name__ == "__main__":
    sys.exit(main())
