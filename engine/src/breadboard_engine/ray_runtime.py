"""Where session turns run: a local Ray started by the engine, an existing Ray cluster, or (Ray off) a thread.

Every Ray call happens in a child process, the driver (ray_driver.py), never in the engine's own: connecting a
driver runs Ray's C++ set-up with the GIL held for seconds, which stalled every HTTP route while Ray started. The
engine talks to the driver over its stdin/stdout, one JSON line per message. A driver process also keeps Ray's
signal handlers out of the engine, and Ray's children take their PR_SET_PDEATHSIG from the driver's main thread,
which lives as long as Ray does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from . import private, providers
from .procs import descendants, start_time

log = logging.getLogger("breadboard_engine.ray")

# AF_UNIX socket paths are limited to 107 bytes and Ray appends about 60 ("session_<date>_<pid>/sockets/raylet").
MAX_RAY_TEMP_DIR = 40
SESSION_PREFIX = "session_"


def ray_temp_dir(data_dir: Path) -> Path:
    """Where a local Ray keeps its sessions and sockets: `<data>/ray` when short enough, else a directory in /tmp.
    Only a path: `prepare_ray_temp_dir` makes the /tmp one safe to use."""
    preferred = data_dir / "ray"
    if len(str(preferred)) <= MAX_RAY_TEMP_DIR:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path("/tmp") / f"bbray-{os.getuid()}-{digest}" / "ray"


def prepare_ray_temp_dir(data_dir: Path) -> Path:
    """Ray makes its temp dir 0777, so the directory holding it must be ours and private. `<data>/ray` sits in the
    (private) data dir. In /tmp, where anyone can create the predictable name first, the parent is used only when it
    is a real directory this user owns with mode 0700; otherwise a fresh one with a random name is made and its name
    kept in `<data>/ray_temp_dir` for the next start."""
    preferred = ray_temp_dir(data_dir)
    if preferred.parent == data_dir:
        preferred.mkdir(exist_ok=True)
        return preferred
    record = data_dir / "ray_temp_dir"
    candidates = []
    with contextlib.suppress(OSError, ValueError):
        recorded = Path(record.read_text().strip())
        if recorded.is_absolute() and len(str(recorded / "ray")) <= MAX_RAY_TEMP_DIR:
            candidates.append(recorded)
    candidates.append(preferred.parent)
    for base in candidates:
        why = private.claim_tmp_dir(base)
        if why is None:
            (base / "ray").mkdir(exist_ok=True)
            return base / "ray"
        log.warning("not using %s for Ray's temp dir: %s; using a new private directory instead", base, why)
    base = private.fresh_tmp_dir(f"bbray-{os.getuid()}-")
    aside = record.with_name(f".{record.name}.{os.getpid()}")
    aside.write_text(f"{base}\n")
    os.replace(aside, record)
    (base / "ray").mkdir()
    return base / "ray"


def remove_ray_session(session_dir: Path) -> None:
    """Delete a finished Ray session's directory (logs, sockets) and `session_latest` if it points there."""
    shutil.rmtree(session_dir, ignore_errors=True)
    latest = session_dir.parent / "session_latest"
    with contextlib.suppress(OSError):
        if os.readlink(latest) == str(session_dir):
            latest.unlink()


def prune_ray_sessions(temp_dir: Path) -> None:
    """Remove the session dirs earlier Rays left in our temp dir (killed, or from before sessions were removed at
    shutdown), except one a live process still names on its command line (a Ray that is still running)."""
    try:
        stale = [
            e.path for e in os.scandir(temp_dir) if e.name.startswith(SESSION_PREFIX) and e.name != "session_latest"
        ]
    except OSError:
        return
    stale = [p for p in stale if not os.path.islink(p)]
    if not stale:
        return
    in_use = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        in_use.update(p for p in stale if p in cmdline)
    removed = [p for p in stale if p not in in_use]
    for path in removed:
        remove_ray_session(Path(path))
    if removed:
        log.info("removed %d stale Ray session dir(s) from %s", len(removed), temp_dir)


def _enable_cluster_token_auth() -> None:
    """Ray >= 2.5x clusters require a token by default, but a driver that joins one only sends it when
    RAY_AUTH_MODE=token; without it the join fails with "Authentication token is missing or incorrect"."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    default = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or default.exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def _use_own_token_auth(token_file: Path) -> None:
    """A local Ray's GCS and raylet listen on every interface (Ray maps 127.0.0.1 to the routable address on
    purpose), so it must require a token. Left alone, Ray >= 2.5x writes one to ~/.ray/auth_token, mode 0644, outside
    BREADBOARD_HOME and readable by every user; ours lives in the data dir, 0600, and reaches Ray's child processes
    through the environment. An explicit RAY_AUTH_MODE is the user's choice and is left alone."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if not _usable_token(token_file):
        # Missing, or empty after a kill or power loss mid-write (Ray then fails rather than falling back), or not
        # private: a fresh one, written aside and renamed so it is never seen half-written. The engine holds the data
        # dir's lock, so no other engine writes it meanwhile.
        token_file.parent.mkdir(parents=True, exist_ok=True)
        aside = token_file.with_name(f".{token_file.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(aside, token_file)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the file


def _usable_token(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        return st.st_uid == os.getuid() and st.st_mode & 0o077 == 0 and bool(f.read().strip())


class RayRuntime:
    def __init__(self, mode: str, address: str | None, data_dir: Path):
        self.start_mode = mode  # background | lazy | off
        self.address = address
        self.data_dir = data_dir
        self.temp_dir = None if address else ray_temp_dir(data_dir)
        self.token_file = data_dir / "ray_auth_token"
        self.state = "off" if mode == "off" else "pending"
        self.error: str | None = None
        self.nodes = 0
        self.started_at: float | None = None
        self.connected_at: float | None = None
        self.session_dir: str | None = None
        self._connected: asyncio.Future | None = None
        self._owner: asyncio.Task | None = None
        self._driver: asyncio.subprocess.Process | None = None
        self._turns: dict[int, asyncio.Queue] = {}
        self._next_turn = 0
        self._reaper: subprocess.Popen | None = None
        self._abandoned = False  # a stop ended a start still in ray.init

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background; returns at once. Idempotent."""
        if self.state != "pending":
            return
        self._connected = asyncio.get_running_loop().create_future()
        self.state = "starting"
        self.started_at = time.time()
        self._owner = asyncio.get_running_loop().create_task(self._own_driver())

    async def _own_driver(self) -> None:
        """Runs the driver process (ray_driver.py: Ray's GIL-heavy set-up happens there, never in this process) and
        hands what it says to the turns waiting for it."""
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_DISABLE_DASHBOARD", "1")
            # Ray's C++ failure-signal handler also takes SIGTERM in a driver: it dumps a stack and aborts.
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
            argv = [sys.executable, "-m", "breadboard_engine.ray_driver"]
            if self.address:
                _enable_cluster_token_auth()
                argv += ["--address", self.address]
            else:
                _use_own_token_auth(self.token_file)
                self.temp_dir = prepare_ray_temp_dir(self.data_dir)
                prune_ray_sessions(self.temp_dir)
                argv += ["--temp-dir", str(self.temp_dir)]
                self._start_reaper()
            self._driver = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26
            )
            first = json.loads(await self._driver.stdout.readline() or b'{"failed": "the Ray driver exited"}')
            if "failed" in first:
                raise RuntimeError(first["failed"])
            self.nodes = first["nodes"]
            self.session_dir = first.get("session_dir")
            if self.temp_dir is not None:
                os.chmod(self.temp_dir, private.DIR_MODE)  # Ray made it 0777; its parent is private already
            self.state = "connected"
            self.connected_at = time.time()
            log.info("ray connected (%s) in %.1fs", self.address or "local", self.connected_at - self.started_at)
            self._connected.set_result(True)
            if not self.address:
                self._record_for_reaper()
                # The raylet starts its agents a little after init returns; record them too.
                asyncio.get_running_loop().call_later(5.0, self._record_for_reaper)
            while line := await self._driver.stdout.readline():
                message = json.loads(line)
                queue = self._turns.get(message.get("id"))
                if queue is not None:
                    queue.put_nowait(message)
            await self._driver.wait()
            if self.state == "connected":
                raise RuntimeError(f"the Ray driver exited with {self._driver.returncode}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported through /ready and to every waiting turn
            if self._abandoned or self.state == "stopped":
                return  # the engine is stopping and ended this on purpose: not a failure to report
            self.state = "failed"
            self.error = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            log.error("ray failed to start: %s", self.error)
            if not self._connected.done():
                self._connected.set_exception(RuntimeError(f"Ray is unavailable: {self.error}"))
                self._connected.exception()  # mark retrieved: turns re-raise it themselves
        finally:
            for queue in self._turns.values():
                queue.put_nowait({"error": f"Ray is unavailable: {self.error or 'the engine is stopping'}"})

    def _start_reaper(self) -> None:
        # Ray's agents outlive a SIGKILLed driver (seen with ray 2.60: DashboardAgent and RuntimeEnvAgent reparent to
        # init). The reaper holds the read end of a pipe only we write to; when we die, it kills what we recorded.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "breadboard_engine.reaper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _record_for_reaper(self) -> None:
        if self._reaper is None or self._reaper.stdin is None or self._reaper.stdin.closed:
            return
        try:
            lines = "".join(f"{pid} {start}\n" for pid, start in descendants(os.getpid()) if pid != self._reaper.pid)
            self._reaper.stdin.write(lines.encode())
            self._reaper.stdin.flush()
        except (OSError, ValueError):
            pass

    async def ensure(self, timeout: float = 120.0) -> None:
        if self.state == "off":
            return
        if self.state == "pending":
            self.start()
        # asyncio.wait, not wait_for: before Python 3.12 wait_for can swallow a cancellation (a `stop`) that lands
        # just as the future completes.
        done, _ = await asyncio.wait({self._connected}, timeout=timeout)
        if not done:
            raise TimeoutError(f"Ray did not connect within {timeout:.0f}s")
        self._connected.result()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel work we started and stop (local) or disconnect from (cluster) Ray."""
        driver = self._driver
        if self.state == "starting" and self._owner is not None:
            self._abandon_start()
        elif driver is not None and driver.returncode is None:
            self.state = "stopped"
            driver.stdin.close()  # the driver cancels its turns, shuts Ray down and exits
            try:
                await asyncio.wait_for(driver.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("the Ray driver did not stop within %.0fs: killing it", timeout)
                driver.kill()
                await driver.wait()
        if self._owner is not None:
            self._owner.cancel()
            with contextlib.suppress(BaseException):
                await self._owner
        if self.session_dir is not None:
            # Ours alone (one engine per data dir) and finished: without this, one is left per start.
            await asyncio.to_thread(remove_ray_session, Path(self.session_dir))
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()  # nothing left to reap after a clean shutdown; the reaper exits
            try:
                await asyncio.to_thread(self._reaper.wait, 2)
            except subprocess.TimeoutExpired:
                pass

    def _abandon_start(self) -> None:
        """A stop while Ray is still starting: that takes many seconds on a loaded machine (a stop must not wait for
        it, docs/protocol.md), so end what it has spawned so far (all ours: the engine's own descendants) and let the
        engine exit."""
        self._abandoned = True
        log.warning("Ray was still starting: ending its processes instead of waiting for it")
        for pid, start in descendants(os.getpid()):
            if self._reaper is not None and pid == self._reaper.pid:
                continue
            if start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def status(self) -> dict:
        doc = {
            "available": self._importable(),
            "initialized": self.state == "connected",
            "state": self.state,
            "mode": "off" if self.start_mode == "off" else ("cluster" if self.address else "local"),
            "start": self.start_mode,
            "address": self.address,
            "nodes": self.nodes,
        }
        if self.temp_dir is not None and self.start_mode != "off":
            doc["temp_dir"] = str(self.temp_dir)
        if self.error:
            doc["error"] = self.error
        return doc

    @staticmethod
    def _importable() -> bool:
        if "ray" in sys.modules:
            return True
        import importlib.util

        return importlib.util.find_spec("ray") is not None

    # -- running turns ---------------------------------------------------------------------------------------------
    async def run_turn(self, provider: str, request: dict) -> AsyncIterator[list[dict]]:
        """Batches of events from one turn, as the provider produced them."""
        if self.state == "off":
            async with contextlib.aclosing(self._run_inline(provider, request)) as batches:
                async for batch in batches:
                    yield batch
            return
        await self.ensure()
        self._next_turn += 1
        turn_id = self._next_turn
        queue: asyncio.Queue = asyncio.Queue()
        self._turns[turn_id] = queue
        finished = False
        try:
            self._send({"op": "turn", "id": turn_id, "provider": provider, "request": request})
            while True:
                message = await queue.get()
                if "batch" in message:
                    yield message["batch"]
                elif "error" in message:
                    finished = True
                    raise RuntimeError(message["error"])
                else:
                    finished = True
                    return
        finally:
            self._turns.pop(turn_id, None)
            if not finished:  # the turn was cancelled (session deleted, engine stopping): stop the Ray task too
                self._send({"op": "cancel", "id": turn_id})

    def _send(self, op: dict) -> None:
        driver = self._driver
        if driver is None or driver.stdin is None or driver.stdin.is_closing():
            raise RuntimeError("Ray is unavailable: the engine is stopping")
        driver.stdin.write(json.dumps(op, separators=(",", ":")).encode() + b"\n")

    async def _run_inline(self, provider: str, request: dict) -> AsyncIterator[list[dict]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        cancelled = threading.Event()

        def work() -> None:
            batches = providers.turn_batches(provider, request)
            try:
                for batch in batches:
                    if cancelled.is_set():  # the turn was stopped or its session deleted: stop producing
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, batch)
                loop.call_soon_threadsafe(queue.put_nowait, done)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                batches.close()

        threading.Thread(target=work, daemon=True, name="turn-inline").start()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
