"""Runs the engine: settings, logging, the store, Ray in the background, uvicorn, and a clean exit.

Shutdown paths, all ending in the same place (streams closed, runners stopped, sessions left resumable, Ray we
started shut down): POST /v1/shutdown (exit 0), SIGTERM or SIGINT (uvicorn's graceful path; a second SIGINT forces).
Open SSE streams and realtime bus connections are closed *before* uvicorn waits for connections, so they never hold
the exit up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time

import uvicorn

from .version import PROTOCOL_VERSION

STARTED_AT = time.time()

log = logging.getLogger("breadboard_engine")


def _logging_config(level: str) -> dict:
    # Everything to stderr: a supervisor routes it to the log file, and nothing may land on a client's stdout.
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    fmt = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": fmt},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "breadboard_engine": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def serve(args) -> int:
    from . import private
    from .settings import SettingsError, load

    # Before anything is created: every file and directory the engine (and the Ray it starts) makes is private to
    # the user, whatever umask the caller had.
    os.umask(private.UMASK)

    try:
        settings = load(args)
    except SettingsError as exc:
        print(f"breadboard-engine: {exc}", file=sys.stderr)
        return 2

    holder = claim_data_dir(settings.data_dir)
    if holder is not None:
        print(f"breadboard-engine: {holder}", file=sys.stderr)
        return 1

    from .app import create_app
    from .manager import SessionManager
    from .ray_runtime import RayRuntime

    ray = RayRuntime(settings.ray_start, settings.ray_address, settings.data_dir)
    manager = SessionManager(settings, ray)
    server_box: dict = {}

    def request_exit() -> None:
        manager.begin_shutdown()
        server = server_box.get("server")
        if server is not None:
            server.should_exit = True

    @contextlib.asynccontextmanager
    async def lifespan(app):
        fixed = private.tighten_data_dir(settings.data_dir)
        if fixed:
            log.warning(
                "made %d path(s) in %s private to this user (other users could read them): %s",
                len(fixed),
                settings.data_dir,
                ", ".join(fixed[:10]) + (", ..." if len(fixed) > 10 else ""),
            )
        try:
            manager.open()
        except Exception as exc:  # noqa: BLE001 - a store that cannot open is fatal, with a message that says where
            log.error("cannot open the session store in %s: %s", settings.data_dir, exc)
            raise
        starter = asyncio.get_running_loop().create_task(start_ray_when_serving(server_box, ray))
        log.info(
            "engine %s (protocol %s) instance %s, data %s, ray %s",
            app.version,
            PROTOCOL_VERSION,
            settings.instance_id,
            settings.data_dir,
            settings.ray_address or settings.ray_start,
        )
        yield
        starter.cancel()
        await manager.shutdown()
        await ray.shutdown()
        log.info("engine stopped")

    app = create_app(settings, manager, ray, STARTED_AT, request_exit)
    app.router.lifespan_context = lifespan

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        fd=settings.fd,
        log_config=_logging_config(settings.log_level),
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
        lifespan="on",
        server_header=False,
        ssl_certfile=settings.tls.certfile if settings.tls else None,
        ssl_keyfile=settings.tls.keyfile if settings.tls else None,
    )
    # uvicorn.Config has set logging up by now.
    for warning in settings.warnings:
        log.warning("%s", warning)
    if settings.tls is not None:
        log.info("serving HTTPS with the certificate %s", settings.tls.certfile)
    server = EngineServer(config, request_exit)
    server_box["server"] = server
    try:
        server.run()
    except KeyboardInterrupt:
        code = 130
    else:
        code = 0 if server.started else 1
    # Everything is closed and synced by now. Skip interpreter teardown: Ray's atexit hooks alone take seconds.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_DATA_DIR_LOCK: int | None = None  # held, never closed: the kernel releases it when this process ends


def claim_data_dir(data_dir) -> str | None:
    """One engine per data dir: two would interleave their writes to the same event logs and index. Returns why the
    dir cannot be claimed, or None once it is ours (the lock file also names our pid, for that message)."""
    import fcntl

    global _DATA_DIR_LOCK
    path = data_dir / "engine.lock"
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return f"cannot use the data dir {data_dir}: {exc.strerror} ({exc.filename})"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return (
            f"the data dir {data_dir} is in use by another engine (pid {other}); stop that one first "
            f"(`breadboard engine stop`), or give this one its own --data-dir"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _DATA_DIR_LOCK = fd
    return None


class EngineServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit):
        super().__init__(config)
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None):
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def shutdown(self, sockets=None):
        if self.config.is_ssl:
            # Closing a TLS connection waits for the peer's close_notify, which an idle keep-alive connection in a
            # client's pool never sends: the exit would wait out the whole graceful timeout. Nothing is in flight on
            # an idle connection, so drop those at once (the condition is uvicorn's own test for "idle").
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                transport = getattr(connection, "transport", None)
                if transport is not None and (cycle is None or cycle.response_complete):
                    transport.abort()
        await super().shutdown(sockets)

    def handle_exit(self, sig, frame):
        # Runs in a signal handler: hand the stream closing to the loop rather than touching queues here.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)


async def start_ray_when_serving(server_box: dict, ray) -> None:
    """A local Ray costs seconds of CPU: start it only once the port is open, so /health is never held up."""
    if ray.start_mode != "background":
        return
    while not getattr(server_box.get("server"), "started", False):  # noqa: ASYNC110 - uvicorn exposes a flag only
        await asyncio.sleep(0.02)
    ray.start()
