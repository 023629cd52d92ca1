"""Kills the engine's local Ray processes if the engine dies without shutting Ray down (e.g. kill -9).

Reads "<pid> <starttime>" lines on stdin from the engine; at end of file (the engine is gone, or closed the pipe after
a clean shutdown) it SIGKILLs every recorded process that is still the same process (start time checked, so a
reused pid is never signalled), then every process carrying this engine's mark (BREADBOARD_ENGINE_MARK, set by the
CLI's supervisor on the engine and inherited by everything it starts): Ray workers started after the last record are
found that way, whoever their parent is now. The engine itself (our parent) and this process are spared, then it
exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .procs import marked, start_time

MARK = "BREADBOARD_ENGINE_MARK"


def _kill(pid: int, start: str) -> None:
    if start_time(pid) == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def main() -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine = os.getppid()
    spared = {engine, os.getpid()}
    recorded: dict[int, str] = {}
    for line in sys.stdin.buffer:
        try:
            pid, start = line.split()
            recorded[int(pid)] = start.decode()
        except ValueError:
            continue
    for pid, start in recorded.items():
        if pid not in spared:
            _kill(pid, start)
    mark = os.environ.get(MARK)
    if mark and sys.platform.startswith("linux"):
        # Twice: a process forked by one that was being killed can appear between the scan and its kill.
        for _ in range(2):
            for pid, start in marked(MARK, mark):
                if pid not in spared:
                    _kill(pid, start)
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
