"""Linux process-table helpers (read from /proc, no dependencies)."""

from __future__ import annotations

import os


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    # Field 22 of stat is starttime; after the name, index 19 (state is field 3 -> index 0).
    return fields[19] if fields else None


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, starttime) of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if not fields or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        starts[int(entry)] = fields[19]
    found: list[tuple[int, str]] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append((pid, starts[pid]))
        stack.extend(children.get(pid, []))
    return found


def marked(name: str, value: str) -> list[tuple[int, str]]:
    """(pid, starttime) of every live process of our uid whose environment holds exactly `name=value`.

    The start time is read before the environment and checked again after it, so the pair always names the process
    whose environment was read, not one that reused its pid in between (the caller checks it once more before a kill).
    """
    needle = f"{name}={value}".encode()
    uid = os.getuid()
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = stat_fields(pid)
        if not fields or fields[0] == "Z":
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if needle in environ and start_time(pid) == fields[19]:
            found.append((pid, fields[19]))
    return found
