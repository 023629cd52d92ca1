"""What the engine keeps is private to the user: checked as another local user, whatever umask the engine had."""

import hashlib
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from conftest import NOBODY, as_nobody, shared_dir, turn_done

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from breadboard_engine import ray_runtime  # noqa: E402


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask():
    """The engine started by a caller with the usual 022 umask (a shell, install.sh, a service manager)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def private_paths(data: Path, sid: str) -> dict[Path, int]:
    return {
        data: 0o700,
        data / "sessions.sqlite3": 0o600,
        data / "sessions.sqlite3-wal": 0o600,
        data / "sessions.sqlite3-shm": 0o600,
        data / "sessions": 0o700,
        data / "sessions" / sid: 0o700,
        data / "sessions" / sid / "events.jsonl": 0o600,
    }


def test_session_data_is_private_to_the_user_and_open_paths_are_tightened(engine_factory, open_umask):
    base = shared_dir("bbpriv")
    try:
        home = base / "home"
        home.mkdir(mode=0o755)  # as install.sh or `mkdir -p` leaves a home
        (home / "control").write_text("readable")
        data = home / "data"
        data.mkdir(mode=0o755)
        engine = engine_factory(data).start()
        sid = engine.create("")
        engine.send(sid, "a secret prompt")
        turn_done(engine, sid)
        paths = private_paths(data, sid)
        assert {p: mode(p) for p in paths} == paths  # -wal and -shm exist: the index is open

        # As another user: the control file shows the check can succeed; nothing of the engine's can be reached.
        assert as_nobody("cat", str(home / "control")).returncode == 0
        events = data / "sessions" / sid / "events.jsonl"
        for target in (data / "sessions.sqlite3", data / "sessions.sqlite3-wal", events):
            denied = as_nobody("cat", str(target))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, (target, denied)
        assert as_nobody("ls", str(data / "sessions")).returncode != 0

        # What an older engine (or a hand-made home) left open is made private at the next start, and logged.
        assert engine.shutdown() == 0
        for path, want in paths.items():
            if path.exists():
                path.chmod(0o755 if want == 0o700 else 0o644)
        engine = engine_factory(data).start()
        for path, want in paths.items():
            if path.exists():
                assert mode(path) == want, path
        assert "private to this user" in engine.log_text() and str(data / "sessions.sqlite3") in engine.log_text()
        assert as_nobody("cat", str(data / "sessions" / sid / "events.jsonl")).returncode != 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def predictable_base(data: Path) -> Path:
    digest = hashlib.sha256(str(data).encode()).hexdigest()[:10]
    return Path("/tmp") / f"bbray-{os.getuid()}-{digest}"


def test_ray_temp_dir_in_tmp_is_never_someone_elses(tmp_path):
    """A data dir too long for Ray's sockets puts Ray's temp dir in /tmp: a predictable name another user can make
    first. Whatever sits there, the engine ends up in a private directory of its own."""
    data = tmp_path / ("long-" * 10) / "data"
    data.mkdir(parents=True)
    base = predictable_base(data)
    made: list[Path] = [base]
    try:
        # Squatted by another user, open to all.
        base.mkdir(mode=0o777)
        os.chown(base, NOBODY, NOBODY)
        base.chmod(0o777)
        temp = ray_runtime.prepare_ray_temp_dir(data)
        made.append(temp.parent)
        assert temp.parent != base and not str(temp).startswith(str(base) + "/")
        st = os.lstat(temp.parent)
        assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700 and stat.S_ISDIR(st.st_mode)
        assert len(str(temp)) <= 40
        # The next start reuses that private directory (recorded in the data dir) rather than making another.
        assert ray_runtime.prepare_ray_temp_dir(data) == temp

        # A symlink planted at the predictable name (pointing at a directory of ours) is not followed.
        base.rmdir()
        (data / "ray_temp_dir").unlink()
        target = tmp_path / "target"
        target.mkdir(mode=0o700)
        base.symlink_to(target)
        temp = ray_runtime.prepare_ray_temp_dir(data)
        made.append(temp.parent)
        assert temp.parent != base and not (target / "ray").exists()

        # Its own, but left open by an older engine: tightened and used.
        base.unlink()
        (data / "ray_temp_dir").unlink()
        base.mkdir(mode=0o755)
        base.chmod(0o755)
        assert ray_runtime.prepare_ray_temp_dir(data) == base / "ray"
        assert mode(base) == 0o700
    finally:
        for path in made:
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
