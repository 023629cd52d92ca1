"""install.sh, for real: `curl -fsSL http://127.0.0.1:PORT/.../install.sh | sh` in a sandboxed HOME."""

from __future__ import annotations

import http.server
import io
import json
import os
import shlex
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import pytest
from conftest import BASE_PATH, NEW, OLD, REPO, TARGET, Release, clean_env

SHELLS = {
    "dash": "dash",
    "bash": "bash",
    "busybox": "busybox sh",
}
MARK = "# >>> breadboard >>>"

# Exit codes of install.sh (docs/distribution.md).
EX_USAGE, EX_PLATFORM, EX_NETWORK, EX_NOT_FOUND, EX_CHECKSUM, EX_VERIFY = 2, 3, 4, 5, 6, 7


def need(*tools: str) -> None:
    """Fail (never skip: a skipped test cannot catch anything) when a tool these tests drive is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"{' '.join(missing)} not installed: `scripts/test dist` installs it (as root on Debian), "
            f"or run: sudo apt-get install {' '.join(missing)}",
            pytrace=False,
        )


def run_pipe(
    release: Release,
    home: Path,
    *args: str,
    shell: str = "dash",
    env: dict[str, str] | None = None,
    releases_url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """curl ... | <shell> -s -- ARGS, as a user would type it."""
    need("curl", shell.split()[0])
    e = clean_env(home, BREADBOARD_RELEASES_URL=releases_url or release.releases_url)
    e.update(env or {})
    line = f"curl -fsSL {release.releases_url}/install.sh | {shell} -s -- {shlex.join(args)}"
    return subprocess.run(["/bin/sh", "-c", line], env=e, capture_output=True, text=True, timeout=120)


def run_script(home: Path, *args: str, env: dict[str, str] | None = None, shell: str = "dash"):
    """Run the repo's install.sh as a file (for cases where the pipe itself is not the point)."""
    e = clean_env(home)
    e.update(env or {})
    return subprocess.run(
        [*shell.split(), str(REPO / "install.sh"), *args], env=e, capture_output=True, text=True, timeout=120
    )


def bin_of(home: Path) -> Path:
    return home / ".breadboard" / "bin" / "breadboard"


def version_of(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def receipt(home: Path) -> dict:
    return json.loads((home / ".breadboard" / "install-receipt.json").read_text())


def snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in paths}


def tree_state(home: Path) -> dict[str, bytes | None]:
    """Every file under HOME (profiles, receipt, binaries), by content: what "untouched" is checked against."""
    return {
        str(p.relative_to(home)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(home.rglob("*"))
        if ".npm-cache" not in p.parts
    }


def path_farm(tmp_path: Path, name: str, *, drop: tuple[str, ...] = (), busybox_only: bool = False) -> Path:
    """A PATH directory of symlinks: the system's BASE_PATH tools minus DROP, or only busybox applets (an Alpine-like
    userland: tar, sha256sum, wget, awk, sed, ... all busybox)."""
    farm = tmp_path / name
    farm.mkdir()
    if busybox_only:
        need("busybox")
        bb = shutil.which("busybox")
        applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            (farm / applet).symlink_to(bb)
        return farm
    for d in BASE_PATH.split(":"):
        for exe in Path(d).iterdir():
            if exe.name not in drop and not (farm / exe.name).exists():
                (farm / exe.name).symlink_to(exe)
    return farm


@pytest.fixture
def old_install(release: Release, home: Path) -> dict[str, bytes | None]:
    """OLD installed with the PATH blocks in place; returns the state every failure must leave exactly as it was."""
    r = run_pipe(release, home, "--version", OLD)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {OLD}"
    return tree_state(home)


@pytest.fixture
def upgraded_install(release: Release, home: Path) -> dict[str, bytes | None]:
    """OLD, then NEW installed: a binary and a breadboard.previous that every failure must leave byte-identical."""
    for version in (OLD, NEW):
        r = run_pipe(release, home, "--version", version)
        assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home).with_name("breadboard.previous")) == f"breadboard {OLD}"
    return tree_state(home)


def dead_pid() -> int:
    """A pid no process has: a child that exited and was reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def stub_dir(tmp_path: Path, **scripts: str) -> Path:
    d = tmp_path / "stubs"
    d.mkdir(exist_ok=True)
    for name, body in scripts.items():
        p = d / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    return d


# ---------------------------------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("shell", list(SHELLS))
def test_curl_pipe_sh_twice_one_block_per_profile(release: Release, home: Path, shell: str) -> None:
    (home / ".zshrc").write_text("# my zshrc, no newline at the end")
    (home / ".bash_profile").write_text("# login bash reads this instead of .profile\n")
    (home / ".config" / "fish").mkdir(parents=True)  # fish configured (not installed): its conf.d gets a file
    first, second = (run_pipe(release, home, shell=SHELLS[shell]) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"

    fish = home / ".config" / "fish" / "conf.d" / "breadboard.fish"
    profiles = [home / ".profile", home / ".bashrc", home / ".bash_profile", home / ".zshrc", fish]
    # What it changed, and the line to run now.
    for r in (first, second):
        assert f"installed breadboard {NEW} ({TARGET}) to {bin_of(home)}" in r.stderr
        assert f"  wrote {home / '.breadboard' / 'install-receipt.json'}" in r.stderr
        assert f"  export PATH='{bin_of(home).parent}':\"$PATH\"" in r.stderr
    for p in profiles:
        assert f"  added PATH block to {p}" in first.stderr
    assert "PATH block" not in second.stderr
    assert f"already set up (unchanged): {' '.join(map(str, profiles))}" in second.stderr

    for p in profiles:
        text = p.read_text()
        assert text.count(MARK) == 1, (p, text)
        assert text.count("# <<< breadboard <<<") == 1
    assert (home / ".zshrc").read_text().startswith("# my zshrc, no newline at the end\n")
    assert f"set -gx PATH '{bin_of(home).parent}' $PATH" in fish.read_text()

    rec = receipt(home)
    assert rec["schema"] == 1
    assert rec["method"] == "install.sh"
    assert rec["version"] == NEW
    assert rec["target"] == TARGET
    assert rec["binary_path"] == str(bin_of(home).resolve())
    assert rec["install_dir"] == str(bin_of(home).parent)
    assert rec["modify_path"] is True
    assert sorted(rec["rc_files"]) == sorted(str(p) for p in profiles)
    assert rec["releases_url"] == release.releases_url
    assert rec["installed_at"].endswith("Z")
    # Nothing left behind: no temp dirs, no lock, no staged binaries.
    assert sorted(p.name for p in (home / ".breadboard").iterdir()) == ["bin", "install-receipt.json"]
    assert sorted(p.name for p in bin_of(home).parent.iterdir()) == ["breadboard"]


# How each shell starts, and which of our files it reads: (argv, what it reads).
STARTUP = {
    "dash login": (["dash", "-l", "-c"], ".profile"),
    "busybox sh login": (["busybox", "sh", "-l", "-c"], ".profile"),
    "bash login": (["bash", "-l", "-c"], ".bash_profile (it exists, so bash skips .profile)"),
    "bash interactive": (["bash", "-i", "-c"], ".bashrc"),
    "zsh interactive": (["zsh", "-i", "-c"], ".zshrc"),
    "fish": (["fish", "-c"], "conf.d/breadboard.fish"),
}


def test_new_shells_find_it(release: Release, home: Path) -> None:
    """The blocks work where it counts: a fresh login or interactive shell of each kind finds the installed
    binary (started with only the system PATH, as a new terminal would be)."""
    need("zsh", "fish", "busybox")
    (home / ".bash_profile").write_text("# bash login shells read this one\n")
    r = run_pipe(release, home)
    assert r.returncode == 0, r.stderr
    for name, (argv, reads) in STARTUP.items():
        r = subprocess.run(
            [*argv, "command -v breadboard && breadboard --version"],
            env=clean_env(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.split() == [str(bin_of(home)), "breadboard", NEW], f"{name} (reads {reads}): {r.stderr}"


@pytest.mark.parametrize(
    ("login", "run"), [("/bin/bash", ["dash", "-c"]), ("/usr/bin/fish", ["fish", "--no-config", "-c"])]
)
def test_printed_line_works_in_this_shell(release: Release, home: Path, tmp_path: Path, login: str, run: list) -> None:
    """The line printed for the current shell ($SHELL) puts the install dir on PATH, quoting and all (a space and a
    single quote in the dir)."""
    need(run[0])
    dest = tmp_path / "it's here"
    r = run_pipe(release, home, env={"SHELL": login, "BREADBOARD_INSTALL_DIR": str(dest)})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    line = lines[lines.index("New shells find breadboard on PATH. To use it in this shell now, run:") + 1].strip()
    r = subprocess.run([*run, f"{line}; command -v breadboard"], env=clean_env(home), capture_output=True, text=True)
    assert r.stdout.strip() == str(dest / "breadboard"), (line, r.stderr)


def test_block_is_rewritten_in_place(release: Release, home: Path) -> None:
    """A stale block (install dir moved) is replaced where it stands, the user's lines around it are kept."""
    (home / ".profile").write_text(f"before\n{MARK}\nexport PATH=/old:$PATH\n# <<< breadboard <<<\nafter\n")
    r = run_pipe(release, home)
    assert r.returncode == 0, r.stderr
    lines = (home / ".profile").read_text().splitlines()
    assert lines[0] == "before" and lines[-1] == "after"
    assert lines.count(MARK) == 1
    assert "/old" not in "\n".join(lines)
    assert f"updated PATH block in {home / '.profile'}" in r.stderr


def test_no_modify_path_leaves_profiles_byte_identical(release: Release, home: Path) -> None:
    (home / ".profile").write_text("# profile\n")
    (home / ".bashrc").write_text("alias x=y")
    (home / ".zshrc").write_bytes(b"\x00binary-ish\n")
    watched = [
        home / ".profile",
        home / ".bashrc",
        home / ".zshrc",
        home / ".bash_profile",
        home / ".config" / "fish" / "conf.d" / "breadboard.fish",
    ]
    before = snapshot(watched)
    r = run_pipe(release, home, "--no-modify-path", shell="bash")
    assert r.returncode == 0, r.stderr
    assert snapshot(watched) == before
    assert "PATH was not modified" in r.stderr
    rec = receipt(home)
    assert rec["modify_path"] is False and rec["rc_files"] == []
    # The environment variable works the same.
    r = run_pipe(release, home, env={"BREADBOARD_NO_MODIFY_PATH": "1"})
    assert r.returncode == 0, r.stderr
    assert snapshot(watched) == before


def test_version_pin_then_upgrade_keeps_previous(release: Release, home: Path) -> None:
    r = run_pipe(release, home, "--version", OLD)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {OLD}"
    assert receipt(home)["version"] == OLD
    r = run_pipe(release, home, "-y")
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"
    assert version_of(bin_of(home).with_name("breadboard.previous")) == f"breadboard {OLD}"
    # Reinstalling the same version keeps the real previous one.
    r = run_pipe(release, home, "--version", f"v{NEW}")
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home).with_name("breadboard.previous")) == f"breadboard {OLD}"


def test_download_url_and_install_dir(release: Release, home: Path, tmp_path: Path) -> None:
    """BREADBOARD_DOWNLOAD_URL (one version's directory) wins; BREADBOARD_INSTALL_DIR moves the binary."""
    dest = tmp_path / "opt bin"  # a space, to exercise the quoting of the PATH block
    r = run_pipe(
        release,
        home,
        env={"BREADBOARD_DOWNLOAD_URL": f"{release.releases_url}/{OLD}/", "BREADBOARD_INSTALL_DIR": str(dest)},
    )
    assert r.returncode == 0, r.stderr
    assert version_of(dest / "breadboard") == f"breadboard {OLD}"
    assert receipt(home)["install_dir"] == str(dest)
    r = subprocess.run(
        ["dash", "-c", ". ~/.profile && command -v breadboard"], env=clean_env(home), capture_output=True, text=True
    )
    assert r.stdout.strip() == str(dest / "breadboard")


def test_warns_about_a_shadowing_npm_install(release: Release, home: Path, tmp_path: Path) -> None:
    npm_bin = tmp_path / "npm-prefix" / "bin"
    pkg_bin = tmp_path / "npm-prefix" / "lib" / "node_modules" / "breadboard-cli" / "bin"
    npm_bin.mkdir(parents=True)
    pkg_bin.mkdir(parents=True)
    (pkg_bin / "breadboard.js").write_text("#!/bin/sh\n")
    (pkg_bin / "breadboard.js").chmod(0o755)
    (npm_bin / "breadboard").symlink_to("../lib/node_modules/breadboard-cli/bin/breadboard.js")
    r = run_pipe(release, home, env={"PATH": f"{npm_bin}:{BASE_PATH}"})
    assert r.returncode == 0, r.stderr
    assert f"warning: {npm_bin / 'breadboard'} comes first on PATH" in r.stderr
    assert "npm uninstall -g breadboard-cli" in r.stderr


@pytest.mark.parametrize("wget", ["gnu", "busybox"])
def test_wget_only(release: Release, home: Path, tmp_path: Path, wget: str) -> None:
    """No curl on PATH: the installer downloads with wget (GNU, or busybox's applet)."""
    need("wget", "busybox")
    farm = path_farm(tmp_path, "nocurl", drop=("curl", "wget"))
    if wget == "busybox":
        (farm / "wget").symlink_to(shutil.which("busybox"))
    else:
        (farm / "wget").symlink_to(shutil.which("wget"))
    script = (REPO / "install.sh").read_text()
    e = clean_env(home, PATH=str(farm), BREADBOARD_RELEASES_URL=release.releases_url)
    r = subprocess.run(["dash", "-s", "--", "--version", OLD], input=script, env=e, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {OLD}"
    assert f"/rel/{OLD}/breadboard-{OLD}-{TARGET}.tar.gz" in release.requests
    # wget's 404 is told apart from other failures too.
    r = subprocess.run(["dash", "-s", "--", "--version", "7.7.7"], input=script, env=e, capture_output=True, text=True)
    assert r.returncode == EX_NOT_FOUND, r.stderr
    assert "version 7.7.7 does not exist" in r.stderr


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: what the https tests' clients are told to trust."""
    need("openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def serve(server: http.server.ThreadingHTTPServer) -> Iterator[int]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_http_elsewhere(release: Release) -> Iterator[int]:
    """The release tree over plain http on 127.0.0.2: loopback to the kernel, but not a host install.sh accepts
    plain http from (only 127.0.0.1, localhost and [::1] are)."""

    def handler(*args: object, **kwargs: object) -> http.server.SimpleHTTPRequestHandler:
        return QuietHandler(*args, directory=str(release.root), **kwargs)  # type: ignore[arg-type]

    yield from serve(http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


def redirecting_https(cert: tuple[Path, Path], root: Path) -> http.server.ThreadingHTTPServer:
    """An https server on 127.0.0.1: /direct/<path> serves ROOT/<path>, anything else redirects to its `to` + path."""

    class Redirect(QuietHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.startswith("/direct/"):
                self.path = self.path.removeprefix("/direct")
                super().do_GET()
                return
            self.send_response(302)
            self.send_header("Location", self.server.to + self.path)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return server


@pytest.mark.parametrize("downloader", ["curl", "GNU wget", "busybox wget"])
@pytest.mark.parametrize("target", ["plain http elsewhere", "https"])
def test_https_redirect_to_plain_http_is_refused(
    release: Release,
    home: Path,
    tmp_path: Path,
    tls_cert: tuple[Path, Path],
    plain_http_elsewhere: int,
    old_install: dict,
    downloader: str,
    target: str,
) -> None:
    """An https release URL that redirects to plain http off loopback is refused by every downloader, before
    anything it fetched is used: curl by --proto =https, wget (GNU: --https-only covers recursive downloads only;
    busybox) by the Location headers it printed. An https-to-https redirect (how GitHub serves release assets)
    installs: the https setup itself works."""
    need("wget", "busybox")
    if downloader == "curl":
        farm = path_farm(tmp_path, "dl")
    else:
        farm = path_farm(tmp_path, "dl", drop=("curl", "wget"))
        (farm / "wget").symlink_to(shutil.which("wget" if downloader == "GNU wget" else "busybox"))
    wgetrc = tmp_path / "wgetrc"
    wgetrc.write_text(f"ca_certificate = {tls_cert[0]}\n")
    # Each client trusts the test certificate: curl, GNU wget, and busybox wget's openssl s_client helper.
    trust = {"CURL_CA_BUNDLE": str(tls_cert[0]), "WGETRC": str(wgetrc), "SSL_CERT_FILE": str(tls_cert[0])}
    server = redirecting_https(tls_cert, release.root)
    for port in serve(server):
        to = f"https://localhost:{port}/direct" if target == "https" else f"http://127.0.0.2:{plain_http_elsewhere}"
        server.to = to  # type: ignore[attr-defined]
        url = f"https://localhost:{port}/rel/{OLD}"
        e = clean_env(home, PATH=str(farm), BREADBOARD_DOWNLOAD_URL=url, **trust)
        r = subprocess.run(["dash", str(REPO / "install.sh")], env=e, capture_output=True, text=True, timeout=120)
    if target == "https":
        assert r.returncode == 0, r.stderr
        assert version_of(bin_of(home)) == f"breadboard {OLD}"
        return
    assert r.returncode == EX_NETWORK, r.stderr
    assert (
        f"refusing the download of {url}/manifest.json: the server redirected to {to}/rel/{OLD}/manifest.json"
        in r.stderr
    )
    assert "plain http is accepted only for loopback hosts" in r.stderr
    assert tree_state(home) == old_install


def test_busybox_userland(release: Release, home: Path, tmp_path: Path) -> None:
    """An Alpine-like system: busybox sh, and every tool (wget, tar, sha256sum, awk, sed, mktemp, od, ...) a busybox
    applet. No curl, no ldd."""
    farm = path_farm(tmp_path, "busybox-only", busybox_only=True)
    script = (REPO / "install.sh").read_text()
    e = clean_env(home, PATH=str(farm), SHELL=str(farm / "sh"), BREADBOARD_RELEASES_URL=release.releases_url)
    r = subprocess.run([str(farm / "sh"), "-s"], input=script, env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"
    assert (home / ".profile").read_text().count(MARK) == 1
    r = subprocess.run([str(farm / "sh"), "-l", "-c", "command -v breadboard"], env=e, capture_output=True, text=True)
    assert r.stdout.strip() == str(bin_of(home)), r.stderr


def test_no_sha256_tool_fails_closed(release: Release, home: Path, tmp_path: Path, old_install: dict) -> None:
    """Without sha256sum, shasum or openssl nothing can be verified, so nothing is installed."""
    farm = path_farm(tmp_path, "nosha", drop=("sha256sum", "shasum", "openssl"))
    r = run_pipe(release, home, env={"PATH": str(farm)})
    assert r.returncode == EX_CHECKSUM, r.stderr
    assert "no sha256 tool found (sha256sum, shasum or openssl)" in r.stderr
    assert tree_state(home) == old_install


@pytest.mark.parametrize("shell", list(SHELLS))
def test_truncated_download_runs_nothing(release: Release, home: Path, shell: str) -> None:
    """`curl | sh` cut short (a dropped connection) runs no part of the installer: it is all inside main(), called
    on the last line. Cut mid-function, between functions, and inside that last line."""
    need(shell.split()[0])
    text = (REPO / "install.sh").read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    assert last.endswith('main "$@"')
    start_of_last = len(text.rstrip("\n")) - len(last)
    cuts = [len(text) // 4, len(text) // 2, 3 * len(text) // 4, start_of_last, start_of_last + len(last) - 3]
    before = len(release.requests)
    for cut in cuts:
        e = clean_env(home, BREADBOARD_RELEASES_URL=release.releases_url)
        r = subprocess.run([*SHELLS[shell].split(), "-s"], input=text[:cut], env=e, capture_output=True, text=True)
        assert list(home.iterdir()) == [], (cut, r.stderr)
        assert "installed breadboard" not in r.stderr
    assert release.requests[before:] == []


def test_archive_offline(release: Release, home: Path, tmp_path: Path, closed_port: int) -> None:
    offline = {"BREADBOARD_RELEASES_URL": f"http://127.0.0.1:{closed_port}"}  # any download would fail
    src = tmp_path / "with-sums"
    shutil.copytree(release.tree / OLD, src)
    r = run_script(home, "--archive", str(src / release.tarball(OLD).name), "--no-modify-path", env=offline)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {OLD}"
    assert receipt(home)["version"] == OLD

    # FILE.sha256 beside a lone tarball.
    lone = tmp_path / "lone"
    lone.mkdir()
    tb = lone / release.tarball(NEW).name
    shutil.copy2(release.tarball(NEW), tb)
    sums = (release.tree / NEW / "SHA256SUMS").read_text().split()[0]
    (lone / (tb.name + ".sha256")).write_text(f"{sums}  {tb.name}\n")
    r = run_script(home, f"--archive={tb}", "-q", "--no-modify-path", env=offline)
    assert r.returncode == 0, r.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"

    # No checksum anywhere: refused.
    (lone / (tb.name + ".sha256")).unlink()
    r = run_script(home, "--archive", str(tb), env=offline)
    assert r.returncode == EX_CHECKSUM
    assert "no checksum" in r.stderr


# ------------------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("what", ["tarball", "sums"])
def test_tampered_release_is_refused_old_install_intact(
    release: Release, home: Path, what: str, old_install: dict
) -> None:
    bad = release.root / f"tampered-{what}-{os.getpid()}-{id(home)}"
    shutil.copytree(release.tree / NEW, bad)
    tb = bad / release.tarball(NEW).name
    if what == "tarball":
        data = bytearray(tb.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tb.write_bytes(bytes(data))
    else:
        sums = bad / "SHA256SUMS"
        sums.write_text("0" * 64 + sums.read_text()[64:])
    actual = sha256(tb.read_bytes()).hexdigest()
    expected = (bad / "SHA256SUMS").read_text().split()[0]

    r = run_pipe(release, home, env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_CHECKSUM, r.stderr
    assert "checksum mismatch" in r.stderr
    assert expected in r.stderr and actual in r.stderr
    assert tree_state(home) == old_install
    assert version_of(bin_of(home)) == f"breadboard {OLD}"


def test_binary_reporting_the_wrong_version_is_refused(release: Release, home: Path, upgraded_install: dict) -> None:
    """A release whose NEW tarball holds (with a correct checksum) a binary that is really OLD: it runs, reports
    the wrong version, and is not installed; the binary and breadboard.previous stay byte-identical."""
    bad = release.root / f"wrong-version-{os.getpid()}-{id(home)}"
    bad.mkdir()
    name = release.tarball(NEW).name
    shutil.copy2(release.tarball(OLD), bad / name)
    (bad / "SHA256SUMS").write_text(f"{sha256((bad / name).read_bytes()).hexdigest()}  {name}\n")
    r = run_pipe(release, home, "--version", NEW, env={"BREADBOARD_DOWNLOAD_URL": f"{release.url}/{bad.name}"})
    assert r.returncode == EX_VERIFY, r.stderr
    assert f"expected 'breadboard {NEW}', got: breadboard {OLD}" in r.stderr
    assert "nothing was installed" in r.stderr
    assert tree_state(home) == upgraded_install


def release_of_script(release: Release, version: str, body: str) -> str:
    """A release dir (served) whose only build is the shell script BODY as `breadboard`, with a correct SHA256SUMS;
    returns its URL (for BREADBOARD_DOWNLOAD_URL)."""
    d = release.root / f"script-{version}-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    name = f"breadboard-{version}-{TARGET}.tar.gz"
    data = f"#!/bin/sh\n{body}\n".encode()
    with tarfile.open(d / name, "w:gz") as tar:
        info = tarfile.TarInfo("breadboard")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    (d / "SHA256SUMS").write_text(f"{sha256((d / name).read_bytes()).hexdigest()}  {name}\n")
    return f"{release.url}/{d.name}"


def test_failure_after_the_swap_puts_everything_back(
    release: Release, home: Path, tmp_path: Path, upgraded_install: dict
) -> None:
    """The new binary passes its check in the staging file, then fails the one after the swap (here: a script that
    answers --version correctly once only): the replaced binary is put back, breadboard.previous and everything else
    under HOME are byte-identical, and no staged file is left."""
    count = tmp_path / "version-calls"
    url = release_of_script(
        release,
        "9.9.9",
        f'n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) >{count}; [ "$n" = 0 ] && echo "breadboard 9.9.9"',
    )
    r = run_pipe(release, home, "--version", "9.9.9", env={"BREADBOARD_DOWNLOAD_URL": url})
    assert r.returncode == EX_VERIFY, r.stderr
    assert f"the installed {bin_of(home)} does not run or reports the wrong version" in r.stderr
    assert "the binary it replaced was put back" in r.stderr
    assert count.read_text().strip() == "2"  # checked staged, then installed
    assert tree_state(home) == upgraded_install
    assert version_of(bin_of(home)) == f"breadboard {NEW}"


def test_missing_version_is_a_404(release: Release, home: Path, old_install: dict) -> None:
    r = run_pipe(release, home, "--version", "9.9.9")
    assert r.returncode == EX_NOT_FOUND, r.stderr
    assert "breadboard version 9.9.9 does not exist" in r.stderr
    assert f"{release.releases_url}/9.9.9/SHA256SUMS returned 404 Not Found" in r.stderr
    assert tree_state(home) == old_install


def test_network_error(release: Release, home: Path, closed_port: int, old_install: dict) -> None:
    r = run_pipe(release, home, releases_url=f"http://127.0.0.1:{closed_port}")
    assert r.returncode == EX_NETWORK, r.stderr
    assert f"network error while downloading http://127.0.0.1:{closed_port}/latest/manifest.json" in r.stderr
    assert tree_state(home) == old_install


def test_plain_http_refused_for_non_loopback(release: Release, home: Path) -> None:
    cases = [
        ("BREADBOARD_RELEASES_URL", "http://192.0.2.1/releases"),
        ("BREADBOARD_DOWNLOAD_URL", "http://192.0.2.1/releases/1.0.0"),
        ("BREADBOARD_RELEASES_URL", "http://localhost.example/releases"),
        ("BREADBOARD_RELEASES_URL", "http://127.0.0.1:80@192.0.2.1/releases"),  # the host is 192.0.2.1
    ]
    for var, url in cases:
        # 192.0.2.1 (TEST-NET-1) would hang if anything tried to connect; the refusal comes first.
        r = run_script(home, env={var: url})
        assert r.returncode == EX_USAGE
        assert f"refusing {url} (from {var}): plain http" in r.stderr
        assert f"use an https:// URL, or unset {var}" in r.stderr
    assert not (home / ".breadboard").exists()


@pytest.mark.parametrize(
    ("system", "machine", "fetches"),
    [("FreeBSD", "amd64", False), ("Linux", "riscv64", False), ("Linux", "aarch64", True)],
)
def test_unsupported_platform(
    release: Release, home: Path, tmp_path: Path, system: str, machine: str, fetches: bool, old_install: dict
) -> None:
    stubs = stub_dir(
        tmp_path, uname=f'case "$1" in -s) echo {system} ;; -m) echo {machine} ;; *) echo {system} ;; esac'
    )
    before = len(release.requests)
    r = run_pipe(release, home, env={"PATH": f"{stubs}:{BASE_PATH}"})
    assert r.returncode == EX_PLATFORM, r.stderr
    assert "unsupported platform" in r.stderr
    assert f"{system}/{machine}" in r.stderr
    if fetches:  # a known platform this release has no build for: the error names what it ships
        assert f"it ships: {TARGET}" in r.stderr
    else:  # fails before any download; only the pipe's own fetch of install.sh hit the server
        assert "x86_64-unknown-linux-musl" in r.stderr and "aarch64-apple-darwin" in r.stderr
        assert [p for p in release.requests[before:] if not p.endswith("/install.sh")] == []
    assert tree_state(home) == old_install


def test_quiet_prints_nothing(release: Release, home: Path) -> None:
    r = run_pipe(release, home, "-q", shell="bash")
    assert r.returncode == 0
    assert r.stderr == "" and r.stdout == ""
    assert version_of(bin_of(home)) == f"breadboard {NEW}"


def test_the_home_it_creates_is_private_whatever_the_umask(release: Release, home: Path) -> None:
    """A new BREADBOARD_HOME is 0700 even under umask 022 (it holds session data and the token); its parent is
    created as usual."""
    bb_home = home / "deep" / "bbhome"
    r = subprocess.run(
        ["sh", "-c", f"umask 022; exec sh {shlex.quote(str(REPO / 'install.sh'))} -q --no-modify-path"],
        env=clean_env(home, BREADBOARD_RELEASES_URL=release.releases_url, BREADBOARD_HOME=str(bb_home)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert bb_home.stat().st_mode & 0o777 == 0o700
    assert (home / "deep").stat().st_mode & 0o777 == 0o755


def test_help_and_bad_usage(home: Path) -> None:
    r = run_script(home, "--help")
    assert r.returncode == 0
    for flag in ("--version", "--archive", "--no-modify-path", "--engine", "-q", "-y"):
        assert flag in r.stdout
    r = run_script(home, "--bogus")
    assert r.returncode == EX_USAGE and "unknown option: --bogus" in r.stderr
    r = run_script(home, "--version", "1.0;rm -rf /")
    assert r.returncode == EX_USAGE and "not a valid version" in r.stderr


def test_engine_flag_runs_engine_install(release: Release, home: Path, closed_port: int) -> None:
    """--engine runs `breadboard engine install`; its failure (here: an unreachable index) is reported with its
    exit code, and the binary stays installed."""
    r = run_pipe(
        release,
        home,
        "--engine",
        "--no-modify-path",
        env={"BREADBOARD_INDEX_URL": f"http://127.0.0.1:{closed_port}/simple/", "BREADBOARD_LOCK_TIMEOUT": "5"},
    )
    assert r.returncode not in (0, 1), r.stderr
    assert "running: breadboard engine install" in r.stderr
    assert "'breadboard engine install' failed" in r.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"


def test_concurrent_installs_serialise(release: Release, home: Path) -> None:
    """Three installers at once, against a stale lock (its holder is dead): one takes it over, the others wait their
    turn; each exits 0 and the binary is one whole release."""
    lock = home / ".breadboard" / "install.lock"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{dead_pid()}\n")
    e = clean_env(home, BREADBOARD_RELEASES_URL=release.releases_url)
    procs = [
        subprocess.Popen(
            ["dash", str(REPO / "install.sh"), "--version", v, "-q"], env=e, stderr=subprocess.PIPE, text=True
        )
        for v in (OLD, NEW, OLD)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert version_of(bin_of(home)) in (f"breadboard {OLD}", f"breadboard {NEW}")
    assert (home / ".profile").read_text().count(MARK) == 1
    assert sorted(p.name for p in (home / ".breadboard").iterdir()) == ["bin", "install-receipt.json"]
    assert sorted(p.name for p in bin_of(home).parent.iterdir()) == ["breadboard", "breadboard.previous"]


@pytest.mark.parametrize("stale", ["dead holder", "no pid file", "dead claimant"])
def test_stale_lock_is_taken_over_at_once(release: Release, home: Path, stale: str) -> None:
    """A lock whose holder is gone, one with no pid file older than a few seconds (an installer killed between
    making it and writing its pid), and one left by a waiter killed while taking a stale lock over, are taken over
    without waiting (BREADBOARD_LOCK_TIMEOUT=0: any wait fails). Leftovers of dead installs are removed; a live
    one's are not."""
    state = home / ".breadboard"
    lock = state / "install.lock"
    lock.mkdir(parents=True)
    dead = dead_pid()
    if stale == "dead holder":
        (lock / "pid").write_text(f"{dead}\n")
    elif stale == "dead claimant":
        (lock / f"pid.taken.{dead}").write_text("1\n")
    if stale != "dead holder":
        old = time.time() - 60
        os.utime(lock, (old, old))
    (state / f"install.lock.tmp.{dead}").mkdir()  # killed between mkdir and writing its pid
    (state / f"install.lock.old.{dead}").mkdir()
    bindir = bin_of(home).parent
    bindir.mkdir()
    (bindir / f".breadboard.new.{dead}").write_text("half a binary")
    (bindir / f".breadboard-upgrade.{dead}.tar.gz").write_text("half a download")
    live = bindir / f".breadboard.new.{os.getpid()}"  # this test is alive: its file is not a leftover
    live.write_text("in progress")
    r = run_pipe(release, home, env={"BREADBOARD_LOCK_TIMEOUT": "0"})
    assert r.returncode == 0, r.stderr
    assert "removed a stale install lock: " in r.stderr
    assert "waiting for" not in r.stderr
    assert version_of(bin_of(home)) == f"breadboard {NEW}"
    assert sorted(p.name for p in state.iterdir()) == ["bin", "install-receipt.json"]
    assert sorted(p.name for p in bindir.iterdir()) == sorted(["breadboard", live.name])


def test_live_lock_is_waited_for_then_named_with_the_fix(release: Release, home: Path, old_install: dict) -> None:
    """A live holder is waited for until BREADBOARD_LOCK_TIMEOUT; the error names it and the exact command."""
    lock = home / ".breadboard" / "install.lock"
    lock.mkdir()
    (lock / "pid").write_text(f"{os.getpid()}\n")
    r = run_pipe(release, home, env={"BREADBOARD_LOCK_TIMEOUT": "1"})
    assert r.returncode == 1, r.stderr
    assert f"waiting for another breadboard install or upgrade to finish (lock {lock}, pid {os.getpid()})" in r.stderr
    assert f"(pid {os.getpid()}) still holds {lock} after 1 s" in r.stderr
    assert f"(check: ps -p {os.getpid()}), remove the lock: rm -rf '{lock}'" in r.stderr
    assert (lock / "pid").read_text() == f"{os.getpid()}\n"
    shutil.rmtree(lock)
    assert tree_state(home) == old_install
    r = run_script(home, env={"BREADBOARD_LOCK_TIMEOUT": "soon"})
    assert r.returncode == EX_USAGE and "BREADBOARD_LOCK_TIMEOUT=soon is not a number of seconds" in r.stderr


# Sourced install.sh, one lock round: take the lock (giving up at once rather than waiting), check nobody else is
# inside, release. Several at once against one stale lock must never overlap.
LOCK_RACER = r"""
BREADBOARD_INSTALLER_NO_MAIN=1 . "$1"
BB_QUIET=1
BB_LOCK_TIMEOUT=0
take_lock "$2"
if mkdir "$2/inside" 2>/dev/null; then
    echo "held $$" >>"$3"
    i=0
    while [ $i -lt 20 ]; do i=$((i + 1)); : >"$2/work.$$"; rm -f "$2/work.$$"; done
    rmdir "$2/inside"
else
    echo "OVERLAP $$" >>"$3"
fi
cleanup
"""


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_concurrent_takeovers_of_a_stale_lock_never_overlap(home: Path, tmp_path: Path, shell: str) -> None:
    """Six installers find the same stale lock at once, 40 times over: exactly one holds it each time. (The former
    "rm -rf the stale lock, then mkdir" let a slow waiter remove the lock a fast one had just made: both went ahead,
    about nine rounds in ten.)"""
    need(SHELLS[shell].split()[0])
    racer = tmp_path / "racer.sh"
    racer.write_text(LOCK_RACER)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "log"
    log.touch()
    dead = dead_pid()
    for _ in range(40):
        (state / "install.lock").mkdir()
        (state / "install.lock" / "pid").write_text(f"{dead}\n")
        racers = [
            subprocess.Popen(
                [*SHELLS[shell].split(), str(racer), str(REPO / "install.sh"), str(state), str(log)],
                env=clean_env(home),
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for p in racers:
            _, err = p.communicate(timeout=60)
            assert p.returncode in (0, 1), err  # 1: gave up waiting (BB_LOCK_TIMEOUT=0)
        assert list(state.iterdir()) == [], "a lock or a temp dir was left behind"
    lines = log.read_text().splitlines()
    assert [line for line in lines if line.startswith("OVERLAP")] == []
    assert len(lines) >= 40


# ------------------------------------------------------------------------------------------ sourced unit checks


@pytest.mark.parametrize(
    ("system", "machine", "translated", "ldd", "expected"),
    [
        ("Linux", "x86_64", "", "ldd (GNU libc) 2.36", "x86_64-unknown-linux-musl x86_64-unknown-linux-gnu"),
        ("Linux", "aarch64", "", "musl libc (aarch64)", "aarch64-unknown-linux-musl"),
        ("Linux", "arm64", "", "musl libc", "aarch64-unknown-linux-musl"),
        ("Linux", "x86_64", "", "", "x86_64-unknown-linux-musl x86_64-unknown-linux-gnu"),  # no answer from ldd
        ("Darwin", "x86_64", "0", "", "x86_64-apple-darwin"),
        ("Darwin", "x86_64", "1", "", "aarch64-apple-darwin"),  # Rosetta shell on Apple silicon
        ("Darwin", "arm64", "", "", "aarch64-apple-darwin"),
        ("FreeBSD", "amd64", "", "", ""),
    ],
)
def test_detect_targets(
    home: Path, tmp_path: Path, system: str, machine: str, translated: str, ldd: str, expected: str
) -> None:
    sysctl = f"echo {translated}" if translated else "exit 1"
    stubs = stub_dir(
        tmp_path,
        uname=f'case "$1" in -s) echo {system} ;; -m) echo {machine} ;; esac',
        sysctl=sysctl,
        ldd=f"echo '{ldd}' >&2; exit 1",  # musl's ldd exits 1 on --version
    )
    e = clean_env(home, PATH=f"{stubs}:{BASE_PATH}", BREADBOARD_INSTALLER_NO_MAIN="1")
    r = subprocess.run(
        ["dash", "-c", '. "$1"; detect_targets', "sh", str(REPO / "install.sh")], env=e, capture_output=True, text=True
    )
    if expected:
        # The host's /lib/ld-musl-* (absent here) would also mark musl; this checks the ldd path.
        assert r.stdout.strip() == expected, r.stderr
        assert r.returncode == 0
    else:
        assert r.returncode == 1 and r.stdout == ""


def test_manifest_version_parsing(home: Path, tmp_path: Path) -> None:
    compact = tmp_path / "compact.json"
    compact.write_text('{"schema":1,"artifacts":[{"target":"x","url":"u"}],"version":"1.2.3-rc.1"}')
    e = clean_env(home, BREADBOARD_INSTALLER_NO_MAIN="1")
    r = subprocess.run(
        ["dash", "-c", '. "$1"; manifest_version "$2"', "sh", str(REPO / "install.sh"), str(compact)],
        env=e,
        capture_output=True,
        text=True,
    )
    assert r.stdout.strip() == "1.2.3-rc.1"


def test_shellcheck_and_syntax() -> None:
    need("dash", "bash", "busybox", "shellcheck")
    for shell in SHELLS.values():
        subprocess.run([*shell.split(), "-n", str(REPO / "install.sh")], check=True)
    r = subprocess.run(
        ["shellcheck", str(REPO / "install.sh"), str(REPO / "scripts" / "dist")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout
