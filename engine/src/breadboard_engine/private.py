"""Keeping the data dir private to the user: prompts, session metadata and Ray's sockets live there.

`serve` sets a 0o077 umask before it creates anything, so new files are 0600 and new directories 0700 whatever the
caller's umask; what an older engine or a hand-made home left too open is tightened at start-up. Ray chmods every
directory it makes to 0777 on purpose (it expects several users to share /tmp/ray), so its temp dir always sits
inside a directory that is ours and 0700: the data dir, or a verified private directory in /tmp.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600

# What the engine keeps at the top of the data dir; everything else there (Ray's temp dir included) is under it.
INDEX_FILES = ("sessions.sqlite3", "sessions.sqlite3-wal", "sessions.sqlite3-shm")
TOP_FILES = (*INDEX_FILES, "engine.lock", "ray_auth_token", "ray_temp_dir")


class NotPrivate(Exception):
    """A path that should be ours and private is not (another owner, a symlink, or not a directory)."""


def _tighten(path: Path, mode: int, fixed: list[str]) -> None:
    """chmod `path` to `mode` when others have any access; never follows a symlink, never touches another's file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
        return
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, mode)
        fixed.append(f"{path} ({stat.S_IMODE(st.st_mode):04o})")


def tighten_data_dir(data_dir: Path) -> list[str]:
    """Make every path the engine keeps under the data dir private; returns the ones that were not (with their old
    mode), for the log."""
    fixed: list[str] = []
    _tighten(data_dir, DIR_MODE, fixed)
    for name in TOP_FILES:
        _tighten(data_dir / name, FILE_MODE, fixed)
    sessions = data_dir / "sessions"
    _tighten(sessions, DIR_MODE, fixed)
    try:
        entries = list(os.scandir(sessions))
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _tighten(Path(entry.path), DIR_MODE, fixed)
            _tighten(Path(entry.path) / "events.jsonl", FILE_MODE, fixed)
    _tighten(data_dir / "ray", DIR_MODE, fixed)  # Ray makes it 0777
    return fixed


def is_private_dir(path: Path) -> str | None:
    """None when `path` is a real directory (not a symlink) owned by this user with no access for others; else why
    not."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):04o}"
    return None


def claim_tmp_dir(path: Path) -> str | None:
    """Make `path` (in a shared, sticky dir like /tmp) a private directory of ours. Returns None when it is, or why it
    cannot be used: someone else may have created it first, and it must then never be used."""
    try:
        os.mkdir(path, DIR_MODE)
        return None
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        # Only this user (or root) can have made a directory that is ours: an earlier engine under another umask.
        _tighten(path, DIR_MODE, [])
    return is_private_dir(path)


def fresh_tmp_dir(prefix: str) -> Path:
    """A new private directory with an unpredictable name (mkdtemp creates it 0700, failing if the name exists)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
