"""The control client (`engine status`, the supervisor's probes): its cost, against baselines in the same run.

Usage: .venv-dev/bin/python bench/control_client.py [--bin target/release/breadboard] [--baseline-bin OTHER]
                                                   [--runs 200]

Starts the real engine (this tree's, from the dev venv, as `BREADBOARD_ENGINE_CMD`; Ray off), plain HTTP, then over
TLS (the test certificate of tests/it/client_tls.rs), and times, interleaved, median and p95 of:
  - `breadboard engine status` (one GET /health and one GET /ready through the control client);
  - the same command of `--baseline-bin` when given (e.g. a build of an earlier commit);
  - `curl -s /health` with the token, the raw floor of one request from a fresh process.
Target: `engine status` <= 10 ms wall.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def summary(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(len(xs) * 0.95))]
    return f"{name:<34} median {statistics.median(xs) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms"


def tls_files(work: Path) -> tuple[Path, Path, Path]:
    """The test CA and the 127.0.0.1 certificate of tests/it/client_tls.rs."""
    text = (ROOT / "tests/it/client_tls.rs").read_text()

    def const(name: str) -> str:
        start = text.index(f'const {name}: &str = "') + len(f'const {name}: &str = "')
        return text[start : text.index('";', start)].replace("\\n", "\n")

    files = []
    for name, const_name in (("ca.pem", "TEST_CA"), ("srv.pem", "SERVER_CERT"), ("srv.key", "SERVER_KEY")):
        path = work / name
        path.write_text(const(const_name))
        path.chmod(0o600)
        files.append(path)
    return files[0], files[1], files[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/breadboard"))
    ap.add_argument("--baseline-bin")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bbctl."))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREADBOARD_", "SSL_CERT"))} | {
        "BREADBOARD_HOME": str(home),
        "BREADBOARD_ENGINE_CMD": f"{sys.executable} -m breadboard_engine serve",
        "BREADBOARD_RAY_START": "off",
        "NO_COLOR": "1",
    }
    binary = args.bin
    try:
        ca, cert, key = tls_files(work)
        for label, extra in (("http", []), ("https", ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)])):
            subprocess.run(
                [binary, "engine", "start", "--port", "auto", *extra], env=env, check=True, stdout=subprocess.DEVNULL
            )
            url = subprocess.run(
                [binary, "engine", "status", "--json"], env=env, capture_output=True, text=True, check=True
            ).stdout
            url = json.loads(url)["url"]
            token = (home / "run/engine.token").read_text()
            header = work / "auth"
            header.write_text(f"Authorization: Bearer {token}\n")
            rows = {"breadboard engine status": [binary, "engine", "status"]}
            if args.baseline_bin and label == "http":
                rows["baseline engine status"] = [args.baseline_bin, "engine", "status"]
            curl = ["curl", "-sf", "-H", f"@{header}", f"{url}/health"]
            if label == "https":
                curl[1:1] = ["--cacert", str(ca)]
            rows["curl /health"] = curl
            times: dict[str, list[float]] = {k: [] for k in rows}
            for cmd in rows.values():
                timed(cmd, env)  # warm the page cache
            for _ in range(args.runs):
                for name, cmd in rows.items():
                    times[name].append(timed(cmd, env))
            print(f"## {label} ({args.runs} runs each, interleaved)")
            for name, xs in times.items():
                print(summary(name, xs))
            base = statistics.median(times["curl /health"])
            ours = statistics.median(times["breadboard engine status"])
            print(f"ratio engine status / curl: {ours / base:.2f}")
            if "baseline engine status" in times:
                print(
                    f"ratio engine status / baseline: {ours / statistics.median(times['baseline engine status']):.2f}"
                )
            subprocess.run([binary, "engine", "stop"], env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(
            [binary, "engine", "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
