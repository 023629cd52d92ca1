"""Test harness: runs the real engine (`python -m breadboard_engine serve`) on 127.0.0.1 and talks HTTP to it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

DEADLINE_S = 60.0

# The suite must not depend on the developer's home: Ray reads ~/.ray (an auth token there switches token auth on)
# and RAY_* variables change how every Ray process behaves. This process (which runs `ray` itself in some tests), the
# engines and every Ray process they start get a private, empty HOME and no inherited RAY_*; done at import, before
# any test or fixture can spawn anything.
PRIVATE_HOME = Path(tempfile.mkdtemp(prefix="bb-test-home-"))
os.environ["HOME"] = str(PRIVATE_HOME)
for _name in [n for n in os.environ if n.startswith("RAY_")]:
    del os.environ[_name]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(PRIVATE_HOME, ignore_errors=True)


def wait_until(predicate, timeout: float = DEADLINE_S, interval: float = 0.02, what: str = "condition"):
    """Poll with a deadline (never a bare sleep as synchronisation)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


NOBODY = 65534


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """Run a command as the unprivileged user `nobody` (the suite runs as root in CI), to see what another local user
    can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


def shared_dir(prefix: str) -> Path:
    """A directory in /tmp that other users can traverse (pytest's tmp_path is not: its root is 0700), so that what
    they can reach below it is up to the engine."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


class Engine:
    """One engine process. The harness binds the port and hands the socket over with --fd, as the supervisor does."""

    def __init__(
        self,
        data_dir: Path,
        env: dict | None = None,
        token: str | None = None,
        args: list[str] | None = None,
        ca: Path | None = None,
    ):
        self.data_dir = data_dir
        self.token = token
        # Serving HTTPS (its args name the certificate): the CA that certificate is signed by, which clients trust.
        self.ca = ca
        self.extra_env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = data_dir.parent / f"engine-{id(self)}.log"

    def start(self, ray: str = "off", wait: bool = True) -> Engine:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BREADBOARD_", "RAY_"))}
        env.update({"BREADBOARD_DATA_DIR": str(self.data_dir), "BREADBOARD_RAY_START": ray})
        if self.token:
            token_file = self.data_dir.parent / "token"
            token_file.write_text(self.token)
            token_file.chmod(0o600)
            env["BREADBOARD_API_TOKEN_FILE"] = str(token_file)
        env.update(self.extra_env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "breadboard_engine", "serve", "--fd", str(listener.fileno()), *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            pass_fds=[listener.fileno()],
            start_new_session=True,
        )
        listener.close()
        if wait:
            self.wait_healthy()
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, verify=self.verify)

    def wait_healthy(self, timeout: float = 30.0) -> dict:
        def probe():
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                r = httpx.get(self.url + "/health", headers=self.headers, timeout=1.0, verify=self.verify)
                return r.json() if r.status_code == 200 else None
            except httpx.TransportError:
                return None

        return wait_until(probe, timeout, what="/health")

    def wait_ready(self, timeout: float = 120.0) -> dict:
        def probe():
            body = self.client().get("/ready").json()
            if body["ray"]["state"] == "failed":
                raise AssertionError(f"ray failed: {body['ray']}\n{self.log_text()}")
            return body if body["ready"] else None

        return wait_until(probe, timeout, interval=0.1, what="/ready")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def shutdown(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        try:
            self.client().post("/v1/shutdown")
        except httpx.TransportError:
            pass
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.shutdown(timeout=15)
            except (subprocess.TimeoutExpired, httpx.HTTPError):
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    # -- protocol helpers ----------------------------------------------------------------------------------------
    def create(self, task: str = "", **body) -> str:
        r = self.client().post("/v1/sessions", json={"task": task, **body})
        assert r.status_code == 200, r.text
        return r.json()["session_id"]

    def send(self, session_id: str, content: str) -> None:
        r = self.client().post(f"/v1/sessions/{session_id}/input", json={"content": content})
        assert r.status_code == 202, r.text

    def events(self, session_id: str, **params) -> list[dict]:
        """A finished-stream read: replays and returns when the server ends the stream."""
        headers = dict(self.headers)
        if "last_event_id" in params:
            headers["Last-Event-ID"] = str(params.pop("last_event_id"))
        with httpx.stream(
            "GET",
            f"{self.url}/v1/sessions/{session_id}/events",
            params=params,
            headers=headers,
            timeout=60,
            verify=self.verify,
        ) as r:
            assert r.status_code == 200, r.read()
            return [e for e in parse_sse(r.iter_bytes()) if "data" in e]

    def wait_status(self, session_id: str, *statuses: str, timeout: float = DEADLINE_S) -> dict:
        def probe():
            body = self.client().get(f"/v1/sessions/{session_id}").json()
            return body if body["status"] in statuses else None

        return wait_until(probe, timeout, what=f"session {session_id} status in {statuses}")

    def wait_seq(self, session_id: str, seq: int, timeout: float = DEADLINE_S) -> dict:
        def probe():
            body = self.client().get(f"/v1/sessions/{session_id}").json()
            return body if body["last_seq"] >= seq else None

        return wait_until(probe, timeout, what=f"session {session_id} to reach seq {seq}")


def parse_sse(chunks):
    """Yield SSE frames as dicts: {"id": str, "data": dict} for events, {"comment": str} for comments."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n\n" not in buffer:
            continue
        *complete, buffer = buffer.split(b"\n\n")
        for raw in complete:
            frame: dict = {}
            for line in raw.decode().split("\n"):
                if line.startswith(":"):
                    frame["comment"] = line[1:].strip()
                elif line.startswith("id: "):
                    frame["id"] = line[4:]
                elif line.startswith("data: "):
                    frame["data"] = json.loads(line[6:])
                else:
                    frame.setdefault("unknown", []).append(line)
            yield frame


@pytest.fixture
def engine_factory(tmp_path):
    engines: list[Engine] = []

    def make(data_dir: Path | None = None, **kwargs) -> Engine:
        engine = Engine(data_dir or tmp_path / "data", **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop_quietly()
    for data_dir in {engine.data_dir for engine in engines}:
        remove_ray_tmp_dir(data_dir)


def remove_ray_tmp_dir(data_dir: Path) -> None:
    """A data dir too long for Ray's sockets (pytest's tmp_path is) has Ray's temp dir in /tmp, which the engine keeps
    for its next start; the test is its last start."""
    if len(str(data_dir / "ray")) <= 40:
        return
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    candidates = [Path("/tmp") / f"bbray-{os.getuid()}-{digest}"]
    try:
        candidates.append(Path((data_dir / "ray_temp_dir").read_text().strip()))
    except OSError:
        pass
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def engine(engine_factory) -> Engine:
    return engine_factory().start()


def turn_done(engine: Engine, session_id: str, turns: int = 1) -> list[dict]:
    """Wait until `turns` turns have finished; return every stored event."""

    def probe():
        events = replay_all(engine, session_id)
        return events if sum(e["data"]["type"] == "run_finished" for e in events) >= turns else None

    return wait_until(probe, what=f"{turns} run_finished events")


def replay_all(engine: Engine, session_id: str) -> list[dict]:
    """All stored events, read as a replay that stops at the current end (from a finished or live session)."""
    last = engine.client().get(f"/v1/sessions/{session_id}").json()["last_seq"]
    if last == 0:
        return []
    return read_until_seq(engine, session_id, last, replay="true")


def read_until_seq(engine: Engine, session_id: str, seq: int, on_open=None, **params) -> list[dict]:
    """Follows until `seq`; `on_open` is called once the response headers are in (the follower is registered)."""
    headers = dict(engine.headers)
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    out = []
    with httpx.stream(
        "GET",
        f"{engine.url}/v1/sessions/{session_id}/events",
        params=params,
        headers=headers,
        timeout=60,
        verify=engine.verify,
    ) as r:
        assert r.status_code == 200, r.read()
        if on_open is not None:
            on_open()
        for frame in parse_sse(r.iter_bytes()):
            if "data" in frame:
                out.append(frame)
                if frame["data"]["seq"] >= seq:
                    break
    return out
