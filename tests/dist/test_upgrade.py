"""`breadboard upgrade`, for real: install OLD with install.sh, then let the installed binary replace itself with NEW
from the release tree served on 127.0.0.1, roll back, refuse tampered or foreign installs, and run the engine step
with the new binary (against the offline engine wheels of scripts/fixtures)."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import io
import json
import os
import pty
import select
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NEW, OLD, REPO, TARGET, Release, clean_env

# Exit codes of `breadboard upgrade` (docs/cli.md).
EX_FAILURE, EX_USAGE, EX_LOCK, EX_SOURCE, EX_NOT_SELF_UPDATABLE, EX_INTEGRITY, EX_AVAILABLE = 1, 2, 4, 6, 8, 9, 100
EX_VALIDATION = 7  # the new binary does not run, or reports another version


def unavailable(why: str) -> None:
    """Skip on a developer machine that lacks what a test needs; in CI (CI set) fail: a skipped test catches nothing."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(why)


def bin_of(home: Path) -> Path:
    return home / ".breadboard" / "bin" / "breadboard"


def receipt_path(home: Path) -> Path:
    return home / ".breadboard" / "install-receipt.json"


def version_of(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def install(release: Release, home: Path, version: str = OLD) -> Path:
    """install.sh --version V (as a file: the pipe is test_install_sh's business). Returns the installed binary."""
    r = subprocess.run(
        ["dash", str(REPO / "install.sh"), "--version", version, "--no-modify-path", "-q"],
        env=clean_env(home, BREADBOARD_RELEASES_URL=release.releases_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {version}"
    return bin_of(home)


def bb(binary: Path, home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a breadboard binary the way a user would, without a terminal (so --yes is implied)."""
    return subprocess.run(
        [str(binary), *args],
        env=clean_env(home, NO_COLOR="1", **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def tampered_copy(release: Release, name: str) -> Path:
    """A copy of NEW's release directory beside the served tree, to corrupt."""
    bad = release.root / f"{name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(release.tree / NEW, bad)
    return bad


# ---------------------------------------------------------------------------------------------------- happy paths


def test_upgrade_check_rollback(release: Release, home: Path) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()

    # No BREADBOARD_RELEASES_URL here: the receipt remembers where install.sh got it.
    r = bb(exe, home, "upgrade", "--check")
    assert r.returncode == EX_AVAILABLE, r.stderr
    assert r.stdout == f"breadboard upgrade available: {OLD} -> {NEW}\n"

    before = len(release.requests)
    r = bb(exe, home, "upgrade", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["cli"] == {
        "action": "upgraded",
        "from": OLD,
        "to": NEW,
        "path": str(exe),
        "previous_path": str(exe.with_name("breadboard.previous")),
    }
    assert doc["engine_step"] == "no_engine" and doc["engine"] is None
    assert "no engine is installed; skipping the engine step" in r.stderr
    assert release.requests[before:] == [
        "/rel/latest/manifest.json",
        f"/rel/latest/breadboard-{NEW}-{TARGET}.tar.gz",
    ]

    assert version_of(exe) == f"breadboard {NEW}"
    previous = exe.with_name("breadboard.previous")
    assert previous.read_bytes() == old_bytes
    rec = json.loads(receipt_path(home).read_text())
    assert rec["version"] == NEW and rec["target"] == TARGET
    assert rec["updated_by"] == "breadboard upgrade"
    assert rec["binary_path"] == str(exe.resolve()) and rec["method"] == "install.sh"
    assert rec["releases_url"] == release.releases_url  # fields it does not own are kept
    # No staged files, no lock left behind.
    assert listing(exe.parent) == ["breadboard", "breadboard.previous"]
    assert listing(home / ".breadboard") == ["bin", "install-receipt.json"]

    r = bb(exe, home, "upgrade", "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"breadboard {NEW} is up to date\n"
    r = bb(exe, home, "upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"breadboard {NEW} is up to date\n"

    new_bytes = exe.read_bytes()
    r = bb(exe, home, "upgrade", "--rollback")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"rolled breadboard back {NEW} -> {OLD} at {exe}")
    assert exe.read_bytes() == old_bytes
    assert version_of(exe) == f"breadboard {OLD}"
    assert previous.read_bytes() == new_bytes  # a second rollback would undo the first
    assert json.loads(receipt_path(home).read_text())["version"] == OLD
    assert listing(exe.parent) == ["breadboard", "breadboard.previous"]


def test_explicit_version_downgrades_and_bad_versions(release: Release, home: Path) -> None:
    exe = install(release, home, NEW)
    env = {"BREADBOARD_RELEASES_URL": release.releases_url}
    r = bb(exe, home, "upgrade", "--version", f"v{OLD}", "--cli-only", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"downgraded breadboard {NEW} -> {OLD} at {exe}")
    assert version_of(exe) == f"breadboard {OLD}"
    assert "engine step" not in r.stderr  # --cli-only

    before = exe.read_bytes()
    r = bb(exe, home, "upgrade", "--version", "9.9.9", env=env)
    assert r.returncode == EX_SOURCE, r.stderr
    assert "breadboard version 9.9.9 does not exist" in r.stderr
    # One version's directory (BREADBOARD_DOWNLOAD_URL) cannot give another version.
    r = bb(exe, home, "upgrade", "--version", NEW, env={"BREADBOARD_DOWNLOAD_URL": f"{release.releases_url}/{OLD}"})
    assert r.returncode == EX_SOURCE, r.stderr
    assert f"is the manifest of breadboard {OLD}, not of the requested {NEW}" in r.stderr
    r = bb(exe, home, "upgrade", "--version", "latest", env=env)
    assert r.returncode == EX_USAGE, r.stderr
    assert "is not a release version" in r.stderr
    assert exe.read_bytes() == before


def test_upgrade_through_a_symlink(release: Release, home: Path, tmp_path: Path) -> None:
    """Run through a (relative) symlink elsewhere on PATH, upgrade replaces the file it points to, where the receipt
    says the install is, and the link stays a link; --rollback too."""
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    links = tmp_path / "links"
    links.mkdir()
    link = links / "breadboard"
    link.symlink_to(os.path.relpath(exe, links))
    target = os.readlink(link)
    r = bb(link, home, "upgrade", "--cli-only", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["cli"]
    assert doc["path"] == str(exe) and doc["previous_path"] == str(exe.with_name("breadboard.previous"))
    assert link.is_symlink() and os.readlink(link) == target
    assert version_of(link) == f"breadboard {NEW}"
    assert exe.with_name("breadboard.previous").read_bytes() == old_bytes
    assert listing(links) == ["breadboard"]
    assert listing(exe.parent) == ["breadboard", "breadboard.previous"]
    r = bb(link, home, "upgrade", "--rollback")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == target
    assert exe.read_bytes() == old_bytes
    assert listing(exe.parent) == ["breadboard", "breadboard.previous"]


def test_no_previous_binary_to_roll_back_to(release: Release, home: Path) -> None:
    exe = install(release, home)
    r = bb(exe, home, "upgrade", "--rollback")
    assert r.returncode == EX_FAILURE
    assert f"there is no previous breadboard at {exe.with_name('breadboard.previous')}" in r.stderr


def test_asks_on_a_terminal_and_declining_changes_nothing(release: Release, home: Path) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(
            [str(exe), "upgrade"],
            env=clean_env(home, NO_COLOR="1"),
            stdin=slave,
            stderr=slave,
            stdout=subprocess.PIPE,
            text=True,
        )
        seen = b""
        deadline = time.monotonic() + 60
        while b"[Y/n]" not in seen:
            assert time.monotonic() < deadline, f"no prompt within 60 s: {seen!r}"
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        assert f"upgrade breadboard {OLD} -> {NEW} at {exe}?".encode() in seen
        os.write(master, b"n\n")
        out, _ = p.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == EX_USAGE
    assert out == ""
    assert exe.read_bytes() == old_bytes
    # CI=true never asks, terminal or not.
    master, slave = pty.openpty()
    try:
        r = subprocess.run(
            [str(exe), "upgrade", "--cli-only"],
            env=clean_env(home, NO_COLOR="1", CI="true"),
            stdin=slave,
            stderr=slave,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 0
    assert version_of(exe) == f"breadboard {NEW}"


def dead_pid() -> int:
    """A pid no process has: a child that exited and was reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_shares_install_sh_lock(release: Release, home: Path, tmp_path: Path) -> None:
    """install.sh's lock: stale locks (a dead holder; no pid file and older than a few seconds; a dead waiter's
    claim) are taken over at once (BREADBOARD_LOCK_TIMEOUT=0: any wait fails), and the leftovers of dead installs
    are removed; a live holder is waited for, and if it replaced the binary meanwhile, this upgrade changes
    nothing."""
    exe = install(release, home)
    state = home / ".breadboard"
    lock = state / "install.lock"
    dead = dead_pid()
    r = bb(exe, home, "upgrade", "--check")  # read-only: no lock
    assert r.returncode == EX_AVAILABLE
    for stale in ("dead holder", "no pid file", "dead claimant"):
        lock.mkdir()
        if stale == "dead holder":
            (lock / "pid").write_text(f"{dead}\n")
        else:
            (lock / ("junk" if stale == "no pid file" else f"pid.taken.{dead}")).write_text("1\n")
            old = time.time() - 60
            os.utime(lock, (old, old))
        (state / f"install.lock.tmp.{dead}").mkdir()
        (exe.parent / f".breadboard.new.{dead}").write_text("half a binary")
        # The self-replace crate's copy, left by an upgrade killed mid-swap (its name carries no pid).
        (exe.parent / ".breadboard.__temp__q7XkP2").write_text("half a binary")
        r = bb(exe, home, "upgrade", "--cli-only", env={"BREADBOARD_LOCK_TIMEOUT": "0"})
        assert r.returncode == 0, (stale, r.stderr)
        assert "removed a stale install lock: " in r.stderr, r.stderr
        assert version_of(exe) == f"breadboard {NEW}"
        assert listing(state) == ["bin", "install-receipt.json"]
        assert listing(exe.parent) == ["breadboard", "breadboard.previous"]
        r = bb(exe, home, "upgrade", "--rollback")
        assert r.returncode == 0, r.stderr

    # A live holder (this test): waited for, then named with the command that removes the lock.
    lock.mkdir()
    (lock / "pid").write_text(f"{os.getpid()}\n")
    r = bb(exe, home, "upgrade", "--cli-only", env={"BREADBOARD_LOCK_TIMEOUT": "0.3"})
    assert r.returncode == EX_LOCK, r.stderr
    assert f"(pid {os.getpid()}) still holds {lock} after 0.3s" in r.stderr
    assert f"(check: ps -p {os.getpid()}), remove the lock: rm -rf '{lock}'" in r.stderr
    shutil.rmtree(lock)
    assert version_of(exe) == f"breadboard {OLD}"

    old_bytes = exe.read_bytes()
    # A live holder (this test) keeps the lock while the upgrade waits.
    lock.mkdir()
    (lock / "pid").write_text(f"{os.getpid()}\n")
    err = tmp_path / "stderr"
    with open(err, "w") as errf:
        p = subprocess.Popen(
            [str(exe), "upgrade", "--cli-only"],
            env=clean_env(home, NO_COLOR="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
        )
        deadline = time.monotonic() + 60
        while "waiting for another breadboard install or upgrade" not in err.read_text():
            assert p.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        # Meanwhile "the other install" replaces the binary (as install.sh would: a new file renamed over it).
        staged = exe.with_name(".breadboard.new.test")
        shutil.copy2(exe.with_name("breadboard.previous"), staged)
        staged.rename(exe)
        new_bytes = exe.read_bytes()
        # Released as install.sh and breadboard release it: renamed away first, then removed. A lock emptied in
        # place (rmtree) is free for an instant, and the waiting upgrade may take it and be done before the rmdir.
        released = lock.with_name("install.lock.released")
        lock.rename(released)
        shutil.rmtree(released)
        out, _ = p.communicate(timeout=120)
    assert p.returncode == EX_FAILURE, err.read_text()
    assert f"{exe} was replaced by another install or upgrade while this one waited" in err.read_text()
    assert out == ""
    assert exe.read_bytes() == new_bytes != old_bytes
    assert not lock.exists()


def test_concurrent_upgrades_against_a_stale_lock(release: Release, home: Path, tmp_path: Path) -> None:
    """Two upgrades at once find a stale lock: one takes it over and upgrades, the other waits its turn and then
    finds the binary replaced, so it changes nothing (exit 1). Both going ahead would both exit 0."""
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    lock = home / ".breadboard" / "install.lock"
    lock.mkdir()
    (lock / "pid").write_text(f"{dead_pid()}\n")
    procs = [
        subprocess.Popen(
            [str(exe), "upgrade", "--cli-only"],
            env=clean_env(home, NO_COLOR="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _ in results) == [0, EX_FAILURE], results
    loser = next(err for code, err in results if code == EX_FAILURE)
    assert "was replaced by another install or upgrade while this one waited" in loser
    assert version_of(exe) == f"breadboard {NEW}"
    assert exe.with_name("breadboard.previous").read_bytes() == old_bytes
    assert listing(home / ".breadboard") == ["bin", "install-receipt.json"]
    assert listing(exe.parent) == ["breadboard", "breadboard.previous"]


# ------------------------------------------------------------------------------------------------------- integrity


@pytest.mark.parametrize("what", ["tarball", "manifest-sha", "short-file"])
def test_tampered_release_is_refused_old_binary_intact(release: Release, home: Path, what: str) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    old_receipt = receipt_path(home).read_bytes()

    bad = tampered_copy(release, f"tampered-{what}")
    tb = bad / release.tarball(NEW).name
    if what == "tarball":
        data = bytearray(tb.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tb.write_bytes(bytes(data))
    elif what == "manifest-sha":
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["artifacts"][0]["sha256"] = "0" * 64
        (bad / "manifest.json").write_text(json.dumps(manifest))
    else:  # the server has only part of the file: fewer bytes than the manifest's size
        tb.write_bytes(tb.read_bytes()[:100_000])

    r = bb(exe, home, "upgrade", env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_INTEGRITY, r.stderr
    expected = {
        "tarball": "checksum mismatch",
        "manifest-sha": f"the manifest says sha256 {'0' * 64}",
        "short-file": "incomplete download",
    }[what]
    assert expected in r.stderr
    assert "nothing was changed" in r.stderr and "hint: run breadboard upgrade again" in r.stderr
    assert exe.read_bytes() == old_bytes
    assert version_of(exe) == f"breadboard {OLD}"
    assert receipt_path(home).read_bytes() == old_receipt
    assert listing(exe.parent) == ["breadboard"]


@pytest.mark.parametrize("what", ["not a tarball", "no binary at the root"])
def test_malformed_artifact_matching_its_checksum_is_a_source_error(release: Release, home: Path, what: str) -> None:
    """An artifact published broken (its size and sha256 match the manifest, so the download is fine) is the
    release's fault: exit 6, not 9 (which means the download did not match)."""
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    bad = tampered_copy(release, f"malformed-{what.replace(' ', '-')}")
    tb = bad / release.tarball(NEW).name
    if what == "not a tarball":
        tb.write_bytes(b"this is not a gzip stream\n" * 100)
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("bin/breadboard")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        tb.write_bytes(buf.getvalue())
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = hashlib.sha256(tb.read_bytes()).hexdigest()
    manifest["artifacts"][0]["size"] = tb.stat().st_size
    (bad / "manifest.json").write_text(json.dumps(manifest))
    r = bb(exe, home, "upgrade", env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_SOURCE, r.stderr
    assert "cannot unpack" in r.stderr and "nothing was changed" in r.stderr
    assert "the release artifact is malformed as published" in r.stderr
    if what == "no binary at the root":
        assert "it has no breadboard binary at its root" in r.stderr
    assert exe.read_bytes() == old_bytes
    assert listing(exe.parent) == ["breadboard"]


def test_a_binary_that_fails_once_in_place_is_put_back(release: Release, home: Path) -> None:
    """The staged binary answers --version right, then the same file, swapped in, does not (here: a script that
    answers once): the replaced binary is put back byte-identical, and the receipt is not touched."""
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    old_receipt = receipt_path(home).read_bytes()
    bad = tampered_copy(release, "answers-once")
    tb = bad / release.tarball(NEW).name
    script = (
        "#!/bin/sh\n"
        'if [ "$1" = --version ] && [ ! -e "$HOME/answered" ]; then\n'
        f'  : >"$HOME/answered"; echo "breadboard {NEW}"; exit 0\n'
        "fi\n"
        "echo 'not this time' >&2; exit 1\n"
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("breadboard")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    tb.write_bytes(buf.getvalue())
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = hashlib.sha256(tb.read_bytes()).hexdigest()
    manifest["artifacts"][0]["size"] = tb.stat().st_size
    (bad / "manifest.json").write_text(json.dumps(manifest))
    r = bb(exe, home, "upgrade", "--cli-only", env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_VALIDATION, r.stderr
    assert (home / "answered").exists()  # the staged copy did answer
    assert f"{exe} was put back" in r.stderr and "not this time" in r.stderr
    assert exe.read_bytes() == old_bytes
    assert version_of(exe) == f"breadboard {OLD}"
    assert receipt_path(home).read_bytes() == old_receipt
    assert listing(exe.parent) == ["breadboard"]


def test_refused_urls_say_where_they_came_from(release: Release, home: Path) -> None:
    """A refused URL from the receipt names the receipt and the variable that overrides it; a refused artifact URL
    names itself, the manifest that listed it, and why (exit 6: the release's fault)."""
    exe = install(release, home)
    rp = receipt_path(home)
    original = rp.read_text()
    rec = json.loads(original)
    rec["releases_url"] = "http://192.0.2.1/rel"  # TEST-NET-1: would hang if anything tried to connect
    rp.write_text(json.dumps(rec))
    r = bb(exe, home, "upgrade", "--check")
    assert r.returncode == EX_USAGE, r.stderr
    assert f"refusing http://192.0.2.1/rel (releases_url in {rp}): plain http is accepted only for loopback" in r.stderr
    assert f"hint: set releases_url in {rp} to an https:// URL, or override it for this run: " in r.stderr
    assert "BREADBOARD_RELEASES_URL=https://... breadboard upgrade" in r.stderr
    # The variable overrides it indeed.
    r = bb(exe, home, "upgrade", "--check", env={"BREADBOARD_RELEASES_URL": release.releases_url})
    assert r.returncode == EX_AVAILABLE, r.stderr
    rp.write_text(original)

    bad = tampered_copy(release, "http-artifact")
    manifest = json.loads((bad / "manifest.json").read_text())
    name = manifest["artifacts"][0]["name"]
    manifest["artifacts"][0]["url"] = f"http://192.0.2.1/{name}"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    before = len(release.requests)
    r = bb(exe, home, "upgrade", env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_SOURCE, r.stderr
    assert (
        f"refusing the artifact URL http://192.0.2.1/{name}, which {release.url}/{bad.name}/manifest.json lists "
        f"for {name}: plain http is accepted only for loopback hosts"
    ) in r.stderr
    assert "hint: the release manifest must list https:// artifact URLs" in r.stderr
    assert release.requests[before:] == [f"/{bad.name}/manifest.json"]
    assert version_of(exe) == f"breadboard {OLD}"


class _CutOffHandler(http.server.BaseHTTPRequestHandler):
    """Serves a manifest whose tarball announces its full length, then stops halfway and closes."""

    manifest: bytes
    tarball: bytes

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.endswith("manifest.json"):
            body, length = self.manifest, len(self.manifest)
        else:
            body, length = self.tarball[: len(self.tarball) // 2], len(self.tarball)
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def cut_off_server(release: Release) -> Iterator[str]:
    handler = type(
        "H",
        (_CutOffHandler,),
        {
            "manifest": (release.tree / NEW / "manifest.json").read_bytes(),
            "tarball": release.tarball(NEW).read_bytes(),
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_cut_off_midway(release: Release, home: Path, cut_off_server: str) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    r = bb(exe, home, "upgrade", env={"BREADBOARD_DOWNLOAD_URL": cut_off_server})
    assert r.returncode == EX_SOURCE, r.stderr
    assert "broke off after" in r.stderr and "nothing was changed" in r.stderr
    assert exe.read_bytes() == old_bytes
    assert listing(exe.parent) == ["breadboard"]


# ------------------------------------------------------------------------------------- unwritable install dirs


def can_mount() -> bool:
    """Private mount namespaces (root, or CAP_SYS_ADMIN): a real read-only or full filesystem."""
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


def run_in_private_mounts(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs `script` (sh) in its own mount namespace: its mounts vanish when it exits, whatever happens."""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-eu", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_read_only_install_dir(release: Release, home: Path, tmp_path: Path) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    env = clean_env(home, NO_COLOR="1", OUT=str(out), DIR=str(exe.parent))
    before = len(release.requests)
    if can_mount():
        # Root ignores file modes, so a mode change would prove nothing: a read-only bind mount refuses even root.
        r = run_in_private_mounts(
            'mount --bind "$DIR" "$DIR"; mount -o remount,bind,ro "$DIR"\n'
            'set +e; "$DIR/breadboard" upgrade </dev/null >"$OUT/stdout" 2>"$OUT/stderr"; echo $? >"$OUT/rc"',
            env,
        )
        assert r.returncode == 0, r.stderr
    else:
        if os.geteuid() == 0:
            unavailable("needs a private mount namespace (unshare -m) when run as root")
        exe.parent.chmod(0o555)
        try:
            p = bb(exe, home, "upgrade")
        finally:
            exe.parent.chmod(0o755)
        (out / "rc").write_text(f"{p.returncode}\n")
        (out / "stderr").write_text(p.stderr)
        (out / "stdout").write_text(p.stdout)
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == str(EX_FAILURE), stderr
    assert f"the install directory {exe.parent} is not writable" in stderr
    assert "the installed breadboard was not changed" in stderr
    assert "hint: run breadboard upgrade as the user that owns" in stderr
    assert (out / "stdout").read_text() == ""
    assert release.requests[before:] == []  # refused before any download
    assert exe.read_bytes() == old_bytes
    assert version_of(exe) == f"breadboard {OLD}"
    assert listing(exe.parent) == ["breadboard"]


def test_full_disk(release: Release, home: Path, tmp_path: Path) -> None:
    if not can_mount():
        unavailable("needs a private mount namespace (unshare -m) for a small tmpfs")
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    # Room for the installed binary plus 512 KiB: the download (a few MB) runs out of space halfway.
    size_kib = len(old_bytes) // 1024 + 512 + 64
    env = clean_env(home, NO_COLOR="1", OUT=str(out), DIR=str(exe.parent), SIZE=f"{size_kib}k")
    r = run_in_private_mounts(
        'cp -p "$DIR/breadboard" "$OUT/bin"\n'
        'mount -t tmpfs -o size="$SIZE" tmpfs "$DIR"\n'
        'cp -p "$OUT/bin" "$DIR/breadboard"\n'
        'set +e; "$DIR/breadboard" upgrade </dev/null >"$OUT/stdout" 2>"$OUT/stderr"; echo $? >"$OUT/rc"\n'
        'cp -p "$DIR/breadboard" "$OUT/after"; "$DIR/breadboard" --version >"$OUT/version"; ls -A "$DIR" >"$OUT/ls"',
        env,
    )
    assert r.returncode == 0, r.stderr
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == str(EX_FAILURE), stderr
    assert "no space left to write" in stderr and "No space left on device" in stderr
    assert "the installed breadboard was not changed" in stderr
    assert f"hint: free some space on the filesystem of {exe.parent}" in stderr
    assert (out / "after").read_bytes() == old_bytes
    assert (out / "version").read_text().strip() == f"breadboard {OLD}"
    assert (out / "ls").read_text().split() == ["breadboard"]  # the partial download was removed


# ----------------------------------------------------------------------------------------- who owns this copy


def test_npm_managed_copy_defers_to_npm(release: Release, home: Path) -> None:
    exe = install(release, home)
    old_bytes = exe.read_bytes()
    before = len(release.requests)
    npm = {"BREADBOARD_MANAGED_BY": "npm", "BREADBOARD_RELEASES_URL": release.releases_url}
    r = bb(exe, home, "upgrade", env=npm)
    assert r.returncode == EX_NOT_SELF_UPDATABLE, r.stderr
    assert f"breadboard at {exe} is managed by npm" in r.stderr
    assert "hint: npm install -g breadboard-cli@latest" in r.stderr
    assert r.stdout == ""
    r = bb(exe, home, "upgrade", "--version", NEW, env=npm)
    assert r.returncode == EX_NOT_SELF_UPDATABLE
    assert f"hint: npm install -g breadboard-cli@{NEW}" in r.stderr
    # The engine is breadboard's own, not npm's: --engine-only goes ahead (here: nothing installed to upgrade).
    r = bb(exe, home, "upgrade", "--engine-only", env=npm)
    assert r.returncode == EX_FAILURE
    assert "no engine is installed" in r.stderr and "hint: breadboard engine install" in r.stderr
    assert release.requests[before:] == []  # not a single request
    # --check replaces nothing, so it answers for any copy, naming the package manager's command alongside.
    r = bb(exe, home, "upgrade", "--check", env={**npm, "BREADBOARD_MANAGED_BY": "pnpm"})
    assert r.returncode == EX_AVAILABLE, r.stderr
    assert r.stdout.strip() == f"breadboard upgrade available: {OLD} -> {NEW}"
    assert "pnpm add -g breadboard-cli@latest" in r.stderr
    assert exe.read_bytes() == old_bytes
    assert listing(exe.parent) == ["breadboard"]


def test_copy_the_receipt_does_not_name_is_refused(release: Release, home: Path, tmp_path: Path) -> None:
    exe = install(release, home)
    other = tmp_path / "elsewhere" / "breadboard"
    other.parent.mkdir()
    shutil.copy2(exe, other)
    before = len(release.requests)
    r = bb(other, home, "upgrade")
    assert r.returncode == EX_NOT_SELF_UPDATABLE, r.stderr
    assert f"breadboard at {other} is not the copy install.sh installed, which is {exe}" in r.stderr
    assert f"hint: upgrade that copy with `{exe} upgrade`" in r.stderr
    # --check answers all the same, from the release source that install recorded in its receipt.
    r = bb(other, home, "upgrade", "--check")
    assert r.returncode == EX_AVAILABLE, r.stderr
    assert r.stdout.strip() == f"breadboard upgrade available: {OLD} -> {NEW}"
    assert f"is not the copy install.sh installed, which is {exe}" in r.stderr
    before = len(release.requests)

    # No receipt at all (another BREADBOARD_HOME, or a cargo-built binary): refused, naming where it looked.
    elsewhere = tmp_path / "other-home"
    r = bb(other, home, "upgrade", env={"BREADBOARD_HOME": str(elsewhere)})
    assert r.returncode == EX_NOT_SELF_UPDATABLE, r.stderr
    assert f"no install receipt at {elsewhere / 'install-receipt.json'}" in r.stderr
    assert release.requests[before:] == []
    # --check still answers (rustup `check`), with the refusal as a warning: it replaces nothing.
    r = bb(
        other,
        home,
        "upgrade",
        "--check",
        env={"BREADBOARD_HOME": str(elsewhere), "BREADBOARD_RELEASES_URL": release.releases_url},
    )
    assert r.returncode == EX_AVAILABLE, r.stderr
    assert r.stdout.strip() == f"breadboard upgrade available: {OLD} -> {NEW}"
    assert f"no install receipt at {elsewhere / 'install-receipt.json'}" in r.stderr
    assert other.read_bytes() == exe.read_bytes()
    assert version_of(exe) == f"breadboard {OLD}"


def test_plain_http_off_loopback_is_refused(release: Release, home: Path) -> None:
    exe = install(release, home)
    # 192.0.2.1 (TEST-NET-1) would hang if anything tried to connect; the refusal comes first.
    for var in ("BREADBOARD_RELEASES_URL", "BREADBOARD_DOWNLOAD_URL"):
        r = bb(exe, home, "upgrade", "--check", env={var: "http://192.0.2.1/rel"})
        assert r.returncode == EX_USAGE, r.stderr
        assert f"refusing http://192.0.2.1/rel (from {var})" in r.stderr


# -------------------------------------------------------------------------------------------------- engine step


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """scripts/fixtures' offline wheels (engine 0.1.0/0.1.1/0.2.0 and dependencies), built once under the same
    lock file the Rust harness uses."""
    target = REPO / "target"
    target.mkdir(exist_ok=True)
    with open(target / "fixtures.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([str(REPO / "scripts" / "fixtures")], check=True)
    return target / "fixtures" / "wheelhouse"


def python311() -> str:
    """The real 3.11 interpreter (the fixture wheels are cp311), not a pyenv shim."""
    for candidate in ("python3.11", "python3"):
        exe = shutil.which(candidate)
        if exe is None:
            continue
        r = subprocess.run(
            [exe, "-c", "import sys; print(sys.executable if sys.version_info[:2] == (3, 11) else '')"],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    unavailable("the engine step test needs Python 3.11 (the fixture wheels are cp311)")


def engine_env() -> dict[str, str]:
    return {
        "BREADBOARD_UV": str(REPO / ".venv-dev" / "bin" / "uv"),
        "BREADBOARD_PYTHON": python311(),
        "UV_CACHE_DIR": str(REPO / "target" / "test-cache" / "uv"),
        "PIP_CACHE_DIR": str(REPO / "target" / "test-cache" / "pip"),
        "BREADBOARD_LOCK_TIMEOUT": "300",
    }


def test_upgrade_runs_the_new_binary_for_the_engine(release: Release, wheelhouse: Path, tmp_path: Path) -> None:
    # Under target/ (the uv cache's filesystem) so uv hardlinks the engine's wheels instead of copying them.
    base = REPO / "target" / "it-tmp"
    base.mkdir(parents=True, exist_ok=True)
    home = Path(os.path.realpath(base)) / f"upgrade-{tmp_path.name}-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    try:
        exe = install(release, home)
        env = engine_env()
        r = bb(exe, home, "engine", "install", "--version", "0.1.0", "--find-links", str(wheelhouse), env=env)
        assert r.returncode == 0, r.stderr
        engine_dir = home / ".breadboard" / "engine"
        assert os.readlink(engine_dir / "current").endswith("0.1.0")

        r = bb(exe, home, "upgrade", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"upgraded breadboard {OLD} -> {NEW}")
        assert version_of(exe) == f"breadboard {NEW}"
        # The engine step ran with the remembered source (find-links) and moved to the newest engine in range...
        assert os.path.basename(os.readlink(engine_dir / "current")) == "0.1.1"
        assert os.path.basename(os.readlink(engine_dir / "previous")) == "0.1.0"
        engine_receipt = json.loads((engine_dir / "versions" / "0.1.1" / "receipt.json").read_text())
        assert engine_receipt["source"]["kind"] == "find_links"
        # ...and it was the new binary that ran it.
        assert engine_receipt["cli_version"] == NEW

        # Everything is current now; the engine half of --check ran too (its source is the offline wheelhouse).
        r = bb(exe, home, "upgrade", "--check", "--json", env=env)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["upgrade_available"] is False
        assert doc["cli"] == {"current": NEW, "latest": NEW, "upgrade_available": False}
        assert doc["engine"]["current"] == "0.1.1"

        # An npm-managed copy still upgrades its engine, without asking the release server anything.
        before = len(release.requests)
        npm = {**env, "BREADBOARD_MANAGED_BY": "npm"}
        r = bb(exe, home, "upgrade", "--engine-only", "--check", env=npm)
        assert r.returncode == 0, r.stderr
        assert "engine 0.1.1 is up to date" in r.stdout
        assert release.requests[before:] == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_engine_step_failure_keeps_the_new_binary(release: Release, wheelhouse: Path, tmp_path: Path) -> None:
    base = REPO / "target" / "it-tmp"
    base.mkdir(parents=True, exist_ok=True)
    home = Path(os.path.realpath(base)) / f"upgrade-fail-{tmp_path.name}-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    try:
        exe = install(release, home)
        env = engine_env()
        # The engine's remembered source is a wheel dir that is gone by the time of the upgrade.
        links = home / "wheels"
        shutil.copytree(wheelhouse, links, copy_function=os.link)
        r = bb(exe, home, "engine", "install", "--version", "0.1.0", "--find-links", str(links), env=env)
        assert r.returncode == 0, r.stderr
        shutil.rmtree(links)

        r = bb(exe, home, "upgrade", "--json", env=env)
        assert r.returncode == EX_SOURCE, r.stderr
        assert f"breadboard was upgraded to {NEW}, but the engine step" in r.stderr
        assert "hint: fix the cause shown above, then run: breadboard upgrade --engine-only" in r.stderr
        doc = json.loads(r.stdout)
        assert doc["cli"]["action"] == "upgraded" and doc["engine_step"] == "failed"
        assert version_of(exe) == f"breadboard {NEW}"
        engine_dir = home / ".breadboard" / "engine"
        assert os.path.basename(os.readlink(engine_dir / "current")) == "0.1.0"
    finally:
        shutil.rmtree(home, ignore_errors=True)
