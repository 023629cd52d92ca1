"""Kills the engine's local Ray processes if the engine dies without shutting Ray down (e.g. kill -9).

Reads "<pid> <starttime>" lines on stdin from the engine; at end of file (the engine is gone, or closed the pipe after
a clean shutdown) it SIGKILLs every recorded process that is still the same process (start time checked, so a
reused pid is never signalled), then exits.
"""

from __future__ import annotations

import os
import signal
import sys

from .procs import start_time


def main() -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recorded: dict[int, str] = {}
    for line in sys.stdin.buffer:
        try:
            pid, start = line.split()
            recorded[int(pid)] = start.decode()
        except ValueError:
            continue
    for pid, start in recorded.items():
        if start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
