"""Where session turns run: a local Ray started by the engine, an existing Ray cluster, or (Ray off) a thread.

Ray is started from one long-lived owner thread, for two reasons found the hard way:
- Ray's child processes (gcs_server, raylet) get PR_SET_PDEATHSIG tied to the *thread* that spawned them, so a
  short-lived init thread that exits takes the whole local cluster down with it (prctl(2); supervisors.md C0).
- `ray.init` on the main thread replaces the process's SIGTERM handler with one that skips uvicorn's graceful
  shutdown; off the main thread it leaves signals to us ("SIGTERM handler is not set because current thread is not
  the main thread").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
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
TURN_CPUS = 0.25


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remote = None
        self._inflight: set = set()
        self._reaper: subprocess.Popen | None = None
        self._abandoned = False  # a stop ended a start still in ray.init

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background; returns at once. Idempotent."""
        if self.state != "pending":
            return
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        self.state = "starting"
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._own_ray, name="ray-owner", daemon=True)
        self._thread.start()

    def _own_ray(self) -> None:
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_DISABLE_DASHBOARD", "1")
            # Ray's C++ failure-signal handler also takes SIGTERM in the driver: it dumps a stack and aborts
            # (SIGABRT), so the graceful SIGTERM path (docs/protocol.md) was lost as soon as Ray was up.
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
            # Before the import: Ray reads these once.
            if self.address:
                _enable_cluster_token_auth()
            else:
                _use_own_token_auth(self.token_file)
            import ray

            kwargs = dict(
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                namespace="breadboard",
            )
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                self.temp_dir = prepare_ray_temp_dir(self.data_dir)
                self._start_reaper()
                ray.init(address="local", _temp_dir=str(self.temp_dir), **kwargs)
                os.chmod(self.temp_dir, private.DIR_MODE)  # Ray made it 0777; its parent is private already
            self.nodes = len([n for n in ray.nodes() if n.get("Alive")])
            self._remote = ray.remote(num_cpus=TURN_CPUS, max_retries=0)(providers.turn_batches)
            self.state = "connected"
            self.connected_at = time.time()
            log.info("ray connected (%s) in %.1fs", self.address or "local", self.connected_at - self.started_at)
            self._resolve(None)
            if not self.address:
                self._record_for_reaper()
                # The raylet starts its agents a little after init returns; record them too.
                if not self._stop.wait(5.0):
                    self._record_for_reaper()
            self._stop.wait()
            ray.shutdown()
            self.state = "stopped"
        except BaseException as exc:  # noqa: BLE001 - reported through /ready and to every waiting turn
            if self._abandoned:
                return  # the engine is stopping and killed this start on purpose: not a failure to report
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("ray failed to start: %s", self.error)
            self._resolve(exc)

    def _resolve(self, exc: BaseException | None) -> None:
        def settle() -> None:
            if self._connected.done():
                return
            if exc is None:
                self._connected.set_result(True)
            else:
                self._connected.set_exception(RuntimeError(f"Ray is unavailable: {self.error}"))
                self._connected.exception()  # mark retrieved: turns re-raise it themselves

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:
            pass  # loop already closed at shutdown

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
        if self._reaper is None or self._reaper.stdin is None:
            return
        try:
            lines = "".join(f"{pid} {start}\n" for pid, start in descendants(os.getpid()) if pid != self._reaper.pid)
            self._reaper.stdin.write(lines.encode())
            self._reaper.stdin.flush()
        except OSError:
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

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel work we started and stop (local) or disconnect from (cluster) Ray. Blocking; call off the loop."""
        for gen in list(self._inflight):
            self._cancel(gen)
        self._stop.set()
        if self._thread is not None and self.state == "starting":
            self._abandon_start()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()  # nothing left to reap after a clean ray.shutdown(); the reaper exits
            try:
                self._reaper.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass

    def _abandon_start(self) -> None:
        """A stop while ray.init is still running: it cannot be interrupted and takes many seconds on a loaded
        machine (a stop must not wait for it, docs/protocol.md), so end what it has spawned so far (all ours: the
        engine's own descendants) and let the engine exit. The owner thread is a daemon; it dies with the process."""
        self._thread.join(0.2)
        if not self._thread.is_alive() or self.state != "starting":
            return  # it finished starting meanwhile: the normal shutdown (join) applies
        self._abandoned = True
        log.warning("Ray was still starting: ending its processes instead of waiting for it")
        for pid, start in descendants(os.getpid()):
            if start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self._thread = None

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
        gen = self._remote.options(num_returns="streaming").remote(provider, request)
        self._inflight.add(gen)
        finished = False
        try:
            async for ref in gen:
                yield await ref
            finished = True
        finally:
            self._inflight.discard(gen)
            if not finished:  # the turn was cancelled (session deleted, engine stopping): stop the Ray task too
                self._cancel(gen)

    @staticmethod
    def _cancel(gen) -> None:
        import ray

        try:
            ray.cancel(gen, force=True)
        except Exception:  # noqa: BLE001 - best effort: the task may have finished meanwhile
            pass

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
