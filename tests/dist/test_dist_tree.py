"""scripts/dist: the release tree layout every channel reads (docs/distribution.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from conftest import NEW, OLD, REPO, TARGET, Release


def test_layout(release: Release) -> None:
    tree = release.tree
    assert (tree / "install.sh").is_file()
    for version in (OLD, NEW):
        vdir = tree / version
        name = f"breadboard-{version}-{TARGET}.tar.gz"
        # NEW carries the engine wheel built from engine/ (scripts/dist --engine-wheel), OLD none.
        wheels = [p.name for p in vdir.glob("breadboard_engine-*-py3-none-any.whl")]
        assert len(wheels) == (1 if version == NEW else 0), wheels
        assert sorted(p.name for p in vdir.iterdir()) == sorted([name, "SHA256SUMS", "manifest.json", *wheels])
        digest = hashlib.sha256((vdir / name).read_bytes()).hexdigest()
        sums = f"{digest}  {name}\n"
        engine = None
        if wheels:
            wheel_digest = hashlib.sha256((vdir / wheels[0]).read_bytes()).hexdigest()
            sums += f"{wheel_digest}  {wheels[0]}\n"
            engine = {
                "engine_version": wheels[0].split("-")[1],
                "name": wheels[0],
                "url": wheels[0],
                "sha256": wheel_digest,
                "size": (vdir / wheels[0]).stat().st_size,
            }
        assert (vdir / "SHA256SUMS").read_text() == sums

        manifest = json.loads((vdir / "manifest.json").read_text())
        assert manifest["schema"] == 1 and manifest["version"] == version
        assert manifest["released_at"].endswith("Z")
        assert manifest["artifacts"] == [
            {"target": TARGET, "name": name, "url": name, "sha256": digest, "size": (vdir / name).stat().st_size}
        ]
        assert manifest["engine"] == engine

        with tarfile.open(vdir / name) as tf:
            members = tf.getmembers()
        # The binary first and at the root (no ./ prefix), then the completions and man pages.
        assert members[0].name == "breadboard"
        assert members[0].isfile() and members[0].mode & 0o111 and members[0].uid == 0
        names = {m.name for m in members}
        assert {"completions/breadboard.bash", "completions/_breadboard", "completions/breadboard.fish"} <= names
        assert {"man/breadboard.1", "man/breadboard-ask.1", "man/breadboard-engine-start.1"} <= names
        assert all(m.uid == 0 and not m.name.startswith(("/", "./")) for m in members)

    # latest/ is a copy of the newest version.
    assert json.loads((tree / "latest" / "manifest.json").read_text())["version"] == NEW
    assert (tree / "latest" / "SHA256SUMS").read_bytes() == (tree / NEW / "SHA256SUMS").read_bytes()


def test_index_only_with_base_url(release: Release, tmp_path: Path) -> None:
    """The release workflow's merge step: re-index collected tarballs with absolute URLs, without building."""
    out = tmp_path / "dist"
    (out / NEW).mkdir(parents=True)
    shutil.copy2(release.tarball(NEW), out / NEW)
    # A second target's tarball collected from another runner (contents do not matter to the index).
    other = out / NEW / f"breadboard-{NEW}-aarch64-apple-darwin.tar.gz"
    other.write_bytes(b"not really a tarball")
    # The engine wheel, collected from the workflow's engine job.
    (wheel,) = release.tree.joinpath(NEW).glob("breadboard_engine-*.whl")
    shutil.copy2(wheel, out / NEW)
    base = "https://github.com/o/breadboard/releases/download/v{version}"
    r = subprocess.run(
        [str(REPO / "scripts" / "dist"), "--out", str(out), "--version", NEW, "--index-only", "--base-url", base],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / NEW)
    manifest = json.loads((out / NEW / "manifest.json").read_text())
    assert [a["target"] for a in manifest["artifacts"]] == ["aarch64-apple-darwin", TARGET]
    for a in manifest["artifacts"]:
        assert a["url"] == f"https://github.com/o/breadboard/releases/download/v{NEW}/{a['name']}"
    assert manifest["engine"]["url"] == f"https://github.com/o/breadboard/releases/download/v{NEW}/{wheel.name}"
    assert manifest["engine"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert len((out / NEW / "SHA256SUMS").read_text().splitlines()) == 3
    assert (out / "latest" / "manifest.json").is_file() and (out / "install.sh").is_file()


def test_bad_version_refused(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(REPO / "scripts" / "dist"), "--out", str(tmp_path), "--version", "1.0/../x", "--index-only"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "not a valid version" in r.stderr


def test_latest_is_the_newest_release_by_semver(tmp_path: Path) -> None:
    """latest/ follows semver: a pre-release sorts before its release, and 0.10.0 after 0.9.0."""
    out = tmp_path / "dist"
    for version in ("0.9.0", "0.10.0-rc.1", "0.10.0", "0.10.0-rc.2"):
        (out / version).mkdir(parents=True)
        (out / version / f"breadboard-{version}-{TARGET}.tar.gz").write_bytes(version.encode())
        r = subprocess.run(
            [str(REPO / "scripts" / "dist"), "--out", str(out), "--version", version, "--index-only"],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    assert json.loads((out / "latest" / "manifest.json").read_text())["version"] == "0.10.0"
    assert "latest is 0.10.0" in r.stderr


def test_unknown_profile_refused(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(REPO / "scripts" / "dist"), "--out", str(tmp_path), "--profile", "debug"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "unknown --profile 'debug' (release or fast)" in r.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_completions_and_man_pages_in_the_tarball_work(release: Release, tmp_path: Path) -> None:
    """The shipped completion scripts load in their shells and complete the real commands; the man page renders."""
    with tarfile.open(release.tarball(NEW)) as tf:
        tf.extractall(tmp_path, filter="data")
    comp = tmp_path / "completions"
    # bash: load the script and ask it to complete `breadboard eng` and `breadboard engine st`.
    script = f"""
source {comp / "breadboard.bash"}
COMP_WORDS=(breadboard eng); COMP_CWORD=1; _breadboard breadboard eng breadboard; echo "1:${{COMPREPLY[*]}}"
COMP_WORDS=(breadboard engine st); COMP_CWORD=2; _breadboard breadboard st engine; echo "2:${{COMPREPLY[*]}}"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert lines["1"].split() == ["engine"], r.stdout
    assert sorted(lines["2"].split()) == ["start", "status", "stop"], r.stdout
    # zsh and fish: the scripts parse; fish also completes the subcommands.
    r = subprocess.run(["zsh", "-n", str(comp / "_breadboard")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["fish", "--no-config", "-c", f"source {comp / 'breadboard.fish'}; complete -C 'breadboard eng'"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.split()[0] == "engine", (r.stdout, r.stderr)
    page = (tmp_path / "man" / "breadboard-engine-start.1").read_text()
    assert page.startswith(".ie \\n(.g .ds Aq") or ".TH breadboard-engine-start 1" in page, page[:200]
    assert "--port" in page.replace("\\-", "-")
