"""The engine's Ray driver: a child process that owns `ray.init` and every Ray call, so the engine never does.

Why a process: connecting a driver runs Ray's C++ core-worker set-up while holding the GIL (seconds on a loaded
machine), and in the engine's process that stalled every HTTP route, /health included. Here it stalls nobody.

Talks JSON lines: on stdin {"op": "turn", "id", "provider", "request"} and {"op": "cancel", "id"}; on stdout first
{"ready": true, "nodes"} (or {"failed": reason}), then {"id", "batch": [...]}, {"id", "done": true} or
{"id", "error": one line}. End of stdin (the engine stopped, or died) cancels what runs, shuts Ray down and exits.
Logs, tracebacks included, go to stderr: the engine's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from . import providers

TURN_CPUS = 0.25

log = logging.getLogger("breadboard_engine.ray_driver")
_out_lock = threading.Lock()


def emit(doc: dict) -> None:
    line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="breadboard_engine.ray_driver")
    parser.add_argument("--address", help="join this cluster; without it, start a local Ray")
    parser.add_argument("--temp-dir", help="the local Ray's temp dir")
    args = parser.parse_args(argv)
    # The engine decides when this process ends (end of stdin); a Ctrl-C to the terminal's process group is the
    # engine's to handle.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import ray

        kwargs = dict(
            include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, namespace="breadboard"
        )
        if args.address:
            ray.init(address=args.address, **kwargs)
        else:
            ray.init(address="local", _temp_dir=args.temp_dir, **kwargs)
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        remote = ray.remote(num_cpus=TURN_CPUS, max_retries=0)(providers.turn_batches)
    except BaseException as exc:  # noqa: BLE001 - reported to the engine, which reports it through /ready
        emit({"failed": f"{type(exc).__name__}: {providers.short_error(exc)}"})
        return 1
    session_dir = None
    if not args.address:
        session_dir = ray._private.worker._global_node.get_session_dir_path()
    emit({"ready": True, "nodes": nodes, "session_dir": session_dir})

    running: dict[int, object] = {}
    lock = threading.Lock()

    def run(turn_id: int, provider: str, request: dict) -> None:
        try:
            gen = remote.options(num_returns="streaming").remote(provider, request)
            with lock:
                running[turn_id] = gen
            for ref in gen:
                emit({"id": turn_id, "batch": ray.get(ref)})
            emit({"id": turn_id, "done": True})
        except Exception as exc:  # noqa: BLE001 - the turn's error, for its error event; the traceback to the log
            if not isinstance(exc, ray.exceptions.TaskCancelledError):
                log.warning("turn %d failed", turn_id, exc_info=exc)
            emit({"id": turn_id, "error": providers.short_error(exc)})
        finally:
            with lock:
                running.pop(turn_id, None)

    for line in sys.stdin:
        try:
            op = json.loads(line)
        except ValueError:
            continue
        if op.get("op") == "turn":
            threading.Thread(
                target=run, args=(op["id"], op["provider"], op["request"]), daemon=True, name=f"turn-{op['id']}"
            ).start()
        elif op.get("op") == "cancel":
            with lock:
                gen = running.get(op["id"])
            if gen is not None:
                cancel(ray, gen)
    with lock:
        pending = list(running.values())
    for gen in pending:
        cancel(ray, gen)
    ray.shutdown()
    return 0


def cancel(ray, gen) -> None:
    try:
        ray.cancel(gen, force=True)
    except Exception:  # noqa: BLE001 - best effort: the task may have finished meanwhile
        pass


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # Ray's atexit hooks alone take seconds; everything is shut down by now
