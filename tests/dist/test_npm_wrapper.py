"""The npm wrapper: packages built from the release tree, `npm pack`ed, installed globally into a temp prefix from
the tarballs, and run through the JS launcher.

Offline: npm's registry is a closed port on 127.0.0.1, so any registry request fails at once. No local registry is
needed: giving `npm install -g` the platform tarball next to the main one puts both in <prefix>/lib/node_modules,
where the main package's optionalDependency resolves (the same place `npm install -g breadboard-cli` from a registry
puts it, after os/cpu matching). The missing-platform case installs the main tarball alone: npm tries the (closed)
registry for the optional dependency, skips it, and the install still succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BASE_PATH, NEW, REPO, Release, clean_env

NODE_DIR = str(Path(shutil.which("node") or "/usr/bin/node").parent)
REPOSITORY = "https://github.com/example/breadboard"


@pytest.fixture(scope="session", autouse=True)
def node_and_npm() -> None:
    """Required, not skipped: a skipped test cannot catch anything."""
    missing = [t for t in ("node", "npm") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{' '.join(missing)} not installed: install Node.js 20+ with npm", pytrace=False)


@dataclass
class Packages:
    main: Path
    platform: Path


def npm_env(home: Path, closed_port: int, **extra: str) -> dict[str, str]:
    return clean_env(
        home,
        PATH=f"{NODE_DIR}:{BASE_PATH}",
        npm_config_registry=f"http://127.0.0.1:{closed_port}/",
        npm_config_cache=str(home / ".npm-cache"),
        npm_config_fetch_retries="0",
        npm_config_audit="false",
        npm_config_fund="false",
        npm_config_update_notifier="false",
        npm_config_loglevel="error",
        **extra,
    )


@pytest.fixture(scope="session")
def packages(release: Release, tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Packages:
    out = tmp_path_factory.mktemp("npm-out")
    home = tmp_path_factory.mktemp("npm-build-home")
    r = subprocess.run(
        ["node", str(REPO / "npm-wrapper" / "build.mjs"), "--dist", str(release.tree), "--version", NEW]
        + ["--out", str(out), "--repository", REPOSITORY, "--pack"],
        env=npm_env(home, closed_port),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    tgzs = [Path(line) for line in r.stdout.split()]
    assert [t.name for t in tgzs] == [f"breadboard-cli-linux-x64-{NEW}.tgz", f"breadboard-cli-{NEW}.tgz"]

    main = json.loads((out / "breadboard-cli" / "package.json").read_text())
    assert main["version"] == NEW
    assert main["optionalDependencies"] == {"breadboard-cli-linux-x64": NEW}  # exact version
    assert main["bin"] == {"breadboard": "bin/breadboard.js"}
    assert "scripts" not in main  # no postinstall at all
    plat = json.loads((out / "breadboard-cli-linux-x64" / "package.json").read_text())
    assert (plat["os"], plat["cpu"], plat["version"]) == (["linux"], ["x64"], NEW)
    assert plat["libc"] == ["glibc"]  # built from the -gnu tarball (the only one here): musl systems skip it
    assert "bin" not in plat  # only the main package links `breadboard`
    for pj in (main, plat):  # `npm publish --provenance` checks it against the building repository
        assert pj["repository"] == {"type": "git", "url": f"git+{REPOSITORY}.git"}
    return Packages(main=tgzs[1], platform=tgzs[0])


def npm_install(prefix: Path, home: Path, port: int, *tgzs: Path, ignore_scripts: bool = True) -> None:
    args = ["npm", "install", "-g", "--prefix", str(prefix)]
    if ignore_scripts:
        args.append("--ignore-scripts")
    r = subprocess.run([*args, *map(str, tgzs)], env=npm_env(home, port), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def prefix(packages: Packages, tmp_path_factory: pytest.TempPathFactory, closed_port: int) -> Path:
    """Both packages installed globally with --ignore-scripts."""
    p = tmp_path_factory.mktemp("npm-prefix")
    npm_install(p, tmp_path_factory.mktemp("npm-home"), closed_port, packages.main, packages.platform)
    return p


def launch(prefix: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = clean_env(home, PATH=f"{prefix / 'bin'}:{NODE_DIR}:{BASE_PATH}", **env)
    return subprocess.run(["breadboard", *args], env=e, capture_output=True, text=True, timeout=60)


def script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fake-breadboard"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return p


# ---------------------------------------------------------------------------------------------------------- tests


def test_installed_layout_and_version(prefix: Path, home: Path) -> None:
    assert (prefix / "bin" / "breadboard").resolve() == prefix / "lib/node_modules/breadboard-cli/bin/breadboard.js"
    binary = prefix / "lib/node_modules/breadboard-cli-linux-x64/bin/breadboard"
    assert os.access(binary, os.X_OK)
    r = launch(prefix, home, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"breadboard {NEW}\n"


def test_install_without_ignore_scripts(packages: Packages, tmp_path: Path, home: Path, closed_port: int) -> None:
    p = tmp_path / "prefix"
    npm_install(p, home, closed_port, packages.main, packages.platform, ignore_scripts=False)
    assert launch(p, home, "--version").stdout == f"breadboard {NEW}\n"


def test_real_binary_exit_code_and_stderr(prefix: Path, home: Path, tmp_path: Path) -> None:
    """`engine rollback` with an empty BREADBOARD_HOME: exit 1 ('nothing to roll back', docs/cli.md), passed through."""
    r = launch(prefix, home, "engine", "rollback", BREADBOARD_HOME=str(tmp_path / "bbhome"))
    assert r.returncode == 1
    assert "no previous engine version to roll back to" in r.stderr
    assert r.stdout == ""
    r = launch(prefix, home, "engine", "--no-such-flag")
    assert r.returncode == 2  # usage error


def test_args_stdin_and_env_marker(prefix: Path, home: Path, tmp_path: Path) -> None:
    fake = script(
        tmp_path,
        'for a in "$@"; do echo "arg:$a"; done; echo "by:$BREADBOARD_MANAGED_BY"; '
        'echo "root:$BREADBOARD_PACKAGE_ROOT"; echo "stdin:$(cat)"; echo err >&2',
    )
    e = clean_env(home, PATH=f"{prefix / 'bin'}:{NODE_DIR}:{BASE_PATH}", BREADBOARD_BINARY_PATH=str(fake))
    r = subprocess.run(
        ["breadboard", "a b", "", "--x=$HOME", "*"], env=e, input="hello", capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "arg:a b",
        "arg:",
        "arg:--x=$HOME",
        "arg:*",
        "by:npm",
        f"root:{prefix / 'lib/node_modules/breadboard-cli'}",
        "stdin:hello",
    ]
    assert r.stderr == "err\n"
    r = launch(prefix, home, BREADBOARD_BINARY_PATH=str(fake), npm_config_user_agent="pnpm/10.0.0 npm/? node/v20")
    assert "by:pnpm" in r.stdout.splitlines()


@pytest.mark.parametrize("code", [0, 3, 7, 100])
def test_exit_code_mirrored(prefix: Path, home: Path, tmp_path: Path, code: int) -> None:
    r = launch(prefix, home, BREADBOARD_BINARY_PATH=str(script(tmp_path, f"exit {code}")))
    assert r.returncode == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_child_killed_by_signal_is_mirrored(prefix: Path, home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    r = launch(prefix, home, BREADBOARD_BINARY_PATH=str(script(tmp_path, f"kill -{sig.name[3:]} $$; sleep 5")))
    assert r.returncode == -sig  # the launcher died by the same signal


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_forwarded(prefix: Path, home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    ready, got = tmp_path / "ready", tmp_path / "got"
    fake = script(
        tmp_path,
        f"trap 'echo INT > {got}; exit 42' INT\n"
        f"trap 'echo TERM > {got}; exit 43' TERM\n"
        f"trap 'echo HUP > {got}; exit 44' HUP\n"
        f"echo ready > {ready}\n"
        "while :; do sleep 0.05; done",
    )
    e = clean_env(home, PATH=f"{prefix / 'bin'}:{NODE_DIR}:{BASE_PATH}", BREADBOARD_BINARY_PATH=str(fake))
    # A new session: the signal reaches the launcher only, never the child directly, so the child's trap proves
    # the forwarding.
    proc = subprocess.Popen(["breadboard"], env=e, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, "the launcher exited early"
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got.read_text().strip() == sig.name[3:]
    assert code == {signal.SIGINT: 42, signal.SIGTERM: 43, signal.SIGHUP: 44}[sig]


def wait_until(what: str, ready, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_terminal_ctrl_c_reaches_the_binary_once(prefix: Path, home: Path, tmp_path: Path) -> None:
    """At a terminal, Ctrl-C sends SIGINT to the whole foreground process group, the binary included, so the launcher
    must not forward a second one (a second SIGINT means "stop now": breadboard's supervisor escalates to SIGKILL).
    The launcher runs as a session leader on a pty (setsid --ctty); the binary is a node script that logs every
    signal it is delivered."""
    setsid = shutil.which("setsid")
    assert setsid, "setsid (util-linux) is not installed"
    log = tmp_path / "signals"
    fake = tmp_path / "fake-breadboard.js"
    fake.write_text(
        "#!/usr/bin/env node\n"
        'const fs = require("fs");\n'
        f"const log = {json.dumps(str(log))};\n"
        'process.on("SIGINT", () => fs.appendFileSync(log, "SIGINT\\n"));\n'
        'process.on("SIGTERM", () => { fs.appendFileSync(log, "SIGTERM\\n"); process.exit(43); });\n'
        'fs.appendFileSync(log, "ready\\n");\n'
        "setInterval(() => {}, 1000);\n"
    )
    fake.chmod(0o755)

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    master, slave = os.openpty()
    e = clean_env(home, PATH=f"{prefix / 'bin'}:{NODE_DIR}:{BASE_PATH}", BREADBOARD_BINARY_PATH=str(fake))
    # Not a process group leader, so setsid execs in place: proc.pid is the launcher.
    proc = subprocess.Popen([setsid, "--ctty", "breadboard"], stdin=slave, stdout=slave, stderr=slave, env=e)
    os.close(slave)
    try:
        wait_until("the binary to start", lambda: lines() == ["ready"])
        os.write(master, b"\x03")  # the terminal's interrupt character: SIGINT to its foreground process group
        wait_until("the SIGINT to reach the binary", lambda: "SIGINT" in lines())
        # A barrier: the launcher handles its signals in order, so any SIGINT it were to forward reaches the binary
        # before this SIGTERM does.
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert lines() == ["ready", "SIGINT", "SIGTERM"]
    assert code == 43


def test_missing_platform_package(packages: Packages, tmp_path: Path, home: Path, closed_port: int) -> None:
    p = tmp_path / "prefix"
    npm_install(p, home, closed_port, packages.main)  # the optional dependency cannot be fetched: skipped
    assert not (p / "lib/node_modules/breadboard-cli-linux-x64").exists()
    r = launch(p, home, "--version")
    assert r.returncode == 1
    assert "the platform package breadboard-cli-linux-x64 is not installed" in r.stderr
    assert f"npm install -g breadboard-cli@{NEW} --include=optional" in r.stderr
    # ...and the second command it offers does fix it.
    npm_install(p, home, closed_port, packages.platform)
    assert launch(p, home, "--version").stdout == f"breadboard {NEW}\n"


def test_upgrade_defers_to_npm(prefix: Path, home: Path, release: Release) -> None:
    """`breadboard upgrade` through the launcher: the env marker tells the binary npm owns it, so it prints the npm
    command and touches nothing, before any request to the release server."""
    binary = prefix / "lib/node_modules/breadboard-cli-linux-x64/bin/breadboard"
    before_bytes = binary.read_bytes()
    before = len(release.requests)
    r = launch(prefix, home, "upgrade", BREADBOARD_RELEASES_URL=release.releases_url)
    assert r.returncode == 8, r.stderr  # not self-updatable (docs/cli.md)
    assert f"breadboard at {binary} is managed by npm" in r.stderr
    assert "npm install -g breadboard-cli@latest" in r.stderr
    assert release.requests[before:] == []
    assert binary.read_bytes() == before_bytes


def test_binary_path_that_does_not_exist(prefix: Path, home: Path, tmp_path: Path) -> None:
    r = launch(prefix, home, BREADBOARD_BINARY_PATH=str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "cannot run" in r.stderr and "ENOENT" in r.stderr
