"""HTTPS served by the engine itself: `serve --ssl-certfile/--ssl-keyfile`, on the socket a supervisor hands over, with
a throwaway CA made here by the openssl CLI and a server certificate for 127.0.0.1 signed by it."""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import parse_sse, replay_all

from breadboard_engine import settings
from breadboard_engine.version import identity_document

TOKEN = "tls-test-token"


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command line tool (Debian: apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(where: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", f"/CN=breadboard {name} CA", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        cwd=where,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem signs server.pem (for IP 127.0.0.1, key server.key); other.key belongs to no certificate; keys 0600."""
    where = tmp_path_factory.mktemp("pki")
    make_ca(where, "ca")
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=where,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=where,
    )  # fmt: skip
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key", cwd=where)
    openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "encrypted.key", cwd=where)
    (where / "junk.key").write_text("not a key\n")
    for key in where.glob("*.key"):
        key.chmod(0o600)
    return where


def tls_args(pki: Path, key: str = "server.key") -> list[str]:
    return ["--ssl-certfile", str(pki / "server.pem"), "--ssl-keyfile", str(pki / key)]


def test_https_on_the_handed_over_socket(engine_factory, pki, monkeypatch):
    # The harness binds the port and passes it with --fd, as the supervisor does.
    engine = engine_factory(token=TOKEN, args=tls_args(pki), ca=pki / "ca.pem").start()
    assert engine.url.startswith("https://")
    health = engine.client().get("/health")
    assert health.status_code == 200 and health.json()["pid"] == engine.proc.pid
    assert "serving HTTPS with the certificate" in engine.log_text()

    # Nothing vouches for the certificate without the test CA: not the system store, not an unrelated CA.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    stranger = ssl.create_default_context()
    stranger.load_verify_locations(cadata=stranger_ca(pki))
    for verify in (True, stranger):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(engine.url + "/health", headers=engine.headers, verify=verify, timeout=10)
    # Plain HTTP on the TLS port gets no answer: the token is never read off a cleartext connection.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{engine.port}/health", headers=engine.headers, timeout=10)
    # Still behind the token.
    assert httpx.get(engine.url + "/health", verify=engine.verify, timeout=10).status_code == 401

    # Events stream live over TLS: a follower sees the turn as it happens, up to its run_finished.
    sid = engine.create("")
    opened = threading.Event()
    live: list[dict] = []

    def follow():
        with httpx.stream(
            "GET", f"{engine.url}/v1/sessions/{sid}/events", headers=engine.headers, verify=engine.verify, timeout=60
        ) as r:
            assert r.status_code == 200
            opened.set()
            for frame in parse_sse(r.iter_bytes()):
                if "data" in frame:
                    live.append(frame["data"])
                    if frame["data"]["type"] == "run_finished":
                        return

    follower = threading.Thread(target=follow)
    follower.start()
    assert opened.wait(30), "the event stream did not open"
    engine.send(sid, "over tls")
    follower.join(60)
    assert not follower.is_alive(), "the stream did not reach run_finished"
    assert live and live[-1]["type"] == "run_finished"
    assert [e["seq"] for e in live] == list(range(1, len(live) + 1))
    # A replay over TLS gives the same events.
    assert [e["data"] for e in replay_all(engine, sid)] == live

    # An idle keep-alive connection in a client's pool does not hold the exit up until the graceful timeout.
    with engine.client() as idle:
        assert idle.get("/health").status_code == 200
        assert engine.shutdown() == 0
    assert "graceful shutdown exceeded" not in engine.log_text()


def stranger_ca(pki: Path) -> str:
    if not (pki / "stranger.pem").exists():
        make_ca(pki, "stranger")
    return (pki / "stranger.pem").read_text()


def test_version_reports_the_tls_capability():
    assert "transport.tls" in identity_document()["capabilities"]


def serve_fails(tmp_path: Path, args: list[str], env: dict | None = None) -> str:
    """Runs `serve` expecting it to refuse its settings; returns its stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BREADBOARD_")}
    clean.update({"BREADBOARD_DATA_DIR": str(tmp_path / "data"), "BREADBOARD_RAY_START": "off", **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-m", "breadboard_engine", "serve", "--port", "0", *args],
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Uvicorn running" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--ssl-certfile", "{pki}/server.pem"], {}, "--ssl-certfile is set but --ssl-keyfile is not"),
        ([], {"BREADBOARD_SSL_KEYFILE": "{pki}/server.key"}, "BREADBOARD_SSL_KEYFILE is set but --ssl-certfile"),
        (
            ["--ssl-certfile", "{pki}/missing.pem", "--ssl-keyfile", "{pki}/server.key"],
            {},
            "cannot read the TLS certificate file {pki}/missing.pem: No such file or directory",
        ),
        (
            ["--ssl-keyfile", "{pki}/missing.key"],
            {"BREADBOARD_SSL_CERTFILE": "{pki}/server.pem"},
            "cannot read the TLS private key file {pki}/missing.key",
        ),
        (
            ["--ssl-certfile", "{pki}/server.key", "--ssl-keyfile", "{pki}/server.key"],
            {},
            "the TLS certificate file {pki}/server.key holds no PEM certificate",
        ),
        (
            ["--ssl-certfile", "{pki}/server.pem", "--ssl-keyfile", "{pki}/other.key"],
            {},
            "the TLS private key {pki}/other.key does not belong to the certificate {pki}/server.pem",
        ),
        (
            ["--ssl-certfile", "{pki}/server.pem", "--ssl-keyfile", "{pki}/encrypted.key"],
            {},
            "the TLS private key {pki}/encrypted.key is encrypted with a passphrase",
        ),
        (
            ["--ssl-certfile", "{pki}/server.pem", "--ssl-keyfile", "{pki}/junk.key"],
            {},
            "the TLS private key file {pki}/junk.key holds no usable PEM private key",
        ),
    ],
    ids=[
        "cert-only",
        "key-only-env",
        "cert-missing",
        "key-missing",
        "cert-not-pem",
        "key-mismatch",
        "key-encrypted",
        "key-not-pem",
    ],  # fmt: skip
)
def test_bad_tls_settings_are_refused_naming_the_file(tmp_path, pki, args, env, expected):
    fill = lambda text: text.replace("{pki}", str(pki))  # noqa: E731
    err = serve_fails(tmp_path, [fill(a) for a in args], {k: fill(v) for k, v in env.items()})
    assert fill(expected) in err, err


def test_key_readable_by_everyone_is_refused(tmp_path, pki):
    key = tmp_path / "server.key"
    shutil.copy(pki / "server.key", key)
    key.chmod(0o644)
    err = serve_fails(tmp_path, ["--ssl-certfile", str(pki / "server.pem"), "--ssl-keyfile", str(key)])
    assert f"the TLS private key {key} is readable by every user (mode 0644)" in err
    assert f"chmod 600 {key}" in err


def test_key_readable_by_its_group_is_a_warning(tmp_path, pki, monkeypatch):
    key = tmp_path / "server.key"
    shutil.copy(pki / "server.key", key)
    key.chmod(0o640)
    for name in [n for n in os.environ if n.startswith("BREADBOARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BREADBOARD_DATA_DIR", str(tmp_path / "data"))
    loaded = settings.load(argparse.Namespace(ssl_certfile=str(pki / "server.pem"), ssl_keyfile=str(key)))
    assert loaded.tls == settings.Tls(certfile=pki / "server.pem", keyfile=key)
    assert len(loaded.warnings) == 1 and f"{key} is readable by its group (mode 0640)" in loaded.warnings[0]
