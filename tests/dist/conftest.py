"""Distribution tests: a release tree with two CLI versions, served on 127.0.0.1, installed for real.

The two builds (scripts/dist --version OLD / NEW, each a cargo build with BREADBOARD_BUILD_VERSION) are the slow part.
They use scripts/dist's `fast` profile (unoptimised, no debug info, its own target dir) unless BREADBOARD_DIST_PROFILE
says otherwise: what these tests check is the packaging and the installers, not the optimiser. The finished tree
is cached under target/dist-test/<key>/, keyed by the profile and the sha256 of everything the binary is built from
(src/, Cargo.toml, Cargo.lock, build.rs) and of scripts/dist. A rerun with unchanged sources
reuses it; BREADBOARD_DIST_TEST_REBUILD=1 forces a rebuild. BREADBOARD_DIST_TEST_TREE=DIR uses a tree already built
with scripts/dist (both versions) instead. install.sh is always copied fresh into the served tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OLD = "0.1.0-test.1"
NEW = "0.1.1-test.1"
TARGET = "x86_64-unknown-linux-gnu"
# Enough for the installer and its helpers, nothing from the developer's PATH (no ~/.cargo/bin, no venv).
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
os.environ.setdefault("BREADBOARD_DIST_PROFILE", "fast")


def _source_key() -> str:
    h = hashlib.sha256(os.environ["BREADBOARD_DIST_PROFILE"].encode() + b"\0")
    files = sorted(p for p in (REPO / "src").rglob("*") if p.is_file())
    files += sorted(p for p in (REPO / "engine" / "src").rglob("*.py") if p.is_file())
    files += [REPO / name for name in ("Cargo.toml", "Cargo.lock", "build.rs", "scripts/dist", "engine/pyproject.toml")]
    for path in files:
        if path.is_file():
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _copy_tree(dest: Path) -> None:
    """Copies the release tree (built or cached) to `dest`. Concurrent test sessions on one checkout take turns
    under a lock: otherwise one session's cleanup deletes the tree another is building or copying."""
    given = os.environ.get("BREADBOARD_DIST_TEST_TREE")
    if given:
        shutil.copytree(given, dest)
        return
    cache_root = REPO / "target" / "dist-test"
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(REPO / "target" / "dist-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.copytree(_build_tree(cache_root), dest)


def _build_tree(cache_root: Path) -> Path:
    key = _source_key()
    tree = cache_root / key
    if (tree / ".complete").is_file() and not os.environ.get("BREADBOARD_DIST_TEST_REBUILD"):
        return tree
    if cache_root.is_dir():
        for old in cache_root.iterdir():  # one cached tree is enough
            shutil.rmtree(old, ignore_errors=True)
    building = cache_root / f".{key}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    # The engine wheel the release carries next to NEW's tarballs, built from engine/ as the release workflow does.
    wheels = building / ".engine-wheel"
    subprocess.run(
        [str(REPO / ".venv-dev" / "bin" / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(REPO / "engine")],
        check=True,
    )
    (wheel,) = wheels.glob("breadboard_engine-*.whl")
    for version in (OLD, NEW):
        extra = ["--engine-wheel", str(wheel)] if version == NEW else []
        subprocess.run(
            [str(REPO / "scripts" / "dist"), "--out", str(building), "--version", version, *extra], check=True
        )
    shutil.rmtree(wheels)
    # Sources edited during the build (a shared checkout): use the tree for this run, but do not cache it.
    if _source_key() == key:
        (building / ".complete").write_text(key + "\n")
    building.rename(tree)
    return tree


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@dataclass
class Release:
    """The served tree: root/rel is the scripts/dist output; tests may add sibling dirs (e.g. a tampered copy)."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    @property
    def tree(self) -> Path:
        return self.root / "rel"

    @property
    def releases_url(self) -> str:
        return f"{self.url}/rel"

    def tarball(self, version: str) -> Path:
        return self.tree / version / f"breadboard-{version}-{TARGET}.tar.gz"


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    root = tmp_path_factory.mktemp("served")
    _copy_tree(root / "rel")
    shutil.copy2(REPO / "install.sh", root / "rel" / "install.sh")

    requests: list[str] = []

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Release(root=root, url=f"http://127.0.0.1:{server.server_address[1]}", requests=requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A sandboxed environment: HOME in a temp dir, no BREADBOARD_* / XDG_* / npm_* from the caller."""
    env = {
        "HOME": str(home),
        "PATH": BASE_PATH,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    env.update(extra)
    return env
