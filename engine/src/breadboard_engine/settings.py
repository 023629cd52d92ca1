"""Engine settings: command-line flags over environment over defaults.

The environment contract is shared with the upstream BreadBoard engine (BREADBOARD_CLI_HOST, BREADBOARD_CLI_PORT,
BREADBOARD_API_TOKEN, BREADBOARD_ALLOW_INSECURE_REMOTE); the rest is ours. Every name is listed in docs/protocol.md.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TRUTHY = {"1", "true", "yes", "on"}
RAY_START_MODES = ("background", "lazy", "off")
# A request body is JSON of a few fields; a prompt of a megabyte is already extreme.
MAX_BODY_BYTES = 1 << 20


class SettingsError(Exception):
    """A configuration the engine refuses to start with; the message says why and how to fix it."""


@dataclass
class Tls:
    certfile: Path
    keyfile: Path


@dataclass
class Settings:
    host: str
    port: int
    fd: int | None
    token: str | None
    data_dir: Path
    ray_address: str | None
    ray_start: str
    instance_id: str
    log_level: str
    keepalive_s: float
    client_queue: int
    fsync: str
    provider: str
    max_body_bytes: int
    replay_dir: Path
    snapshot_every: int = 1000
    realtime_queue: int = 1024
    state_cache: int = 64
    access_log: bool = False
    tls: Tls | None = None
    # Accepted but worth saying: the server logs these once logging is set up.
    warnings: list[str] = field(default_factory=list)

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_token() -> str | None:
    path = _env("BREADBOARD_API_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"cannot read the API token file {path}: {exc.strerror}.\n"
                "Fix the path in BREADBOARD_API_TOKEN_FILE, or unset it to run without a token on loopback."
            ) from exc
        if not token:
            raise SettingsError(f"the API token file {path} is empty.")
        return token
    return _env("BREADBOARD_API_TOKEN")


def _int(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(name: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def fd_bound_host(fd: int) -> tuple[str, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        host, port = sock.getsockname()[:2]
    finally:
        sock.close()
    return host, port


def load(args) -> Settings:
    fd = getattr(args, "fd", None)
    host = getattr(args, "host", None) or _env("BREADBOARD_CLI_HOST") or "127.0.0.1"
    port = getattr(args, "port", None)
    if port is None:
        port = _int("BREADBOARD_CLI_PORT", _env("BREADBOARD_CLI_PORT"), 9099)
    if fd is not None:
        try:
            host, port = fd_bound_host(fd)
        except OSError as exc:
            raise SettingsError(f"--fd {fd} is not a usable listening socket: {exc.strerror}") from exc

    warnings: list[str] = []
    tls = _tls(args, warnings)
    token = _read_token()
    if not is_loopback(host) and not token:
        allow = (_env("BREADBOARD_ALLOW_INSECURE_REMOTE") or "").lower() in TRUTHY
        if not allow:
            # Same wording as upstream, so users of either engine recognise it.
            raise SettingsError(
                "Refusing to start BreadBoard engine on a non-local bind without auth.\n"
                f"Host: {host}\n"
                "Set BREADBOARD_API_TOKEN_FILE (or BREADBOARD_API_TOKEN) to require a Bearer token for all requests, "
                "or bind locally (BREADBOARD_CLI_HOST=127.0.0.1).\n"
                "To override (unsafe), set BREADBOARD_ALLOW_INSECURE_REMOTE=1."
            )

    data_dir = getattr(args, "data_dir", None) or _env("BREADBOARD_DATA_DIR")
    if data_dir is None:
        home = _env("BREADBOARD_HOME") or str(Path.home() / ".breadboard")
        data_dir = str(Path(home) / "data")

    ray_address = getattr(args, "ray_address", None) or _env("BREADBOARD_RAY_ADDRESS")
    ray_start = getattr(args, "ray", None) or _env("BREADBOARD_RAY_START") or "background"
    if ray_start not in RAY_START_MODES:
        raise SettingsError(f"BREADBOARD_RAY_START must be one of {', '.join(RAY_START_MODES)}, got {ray_start!r}")

    fsync = _env("BREADBOARD_EVENTLOG_FSYNC") or "turn"
    if fsync not in ("always", "turn", "never"):
        raise SettingsError(f"BREADBOARD_EVENTLOG_FSYNC must be always, turn or never, got {fsync!r}")

    max_body = _int("BREADBOARD_MAX_BODY_BYTES", _env("BREADBOARD_MAX_BODY_BYTES"), MAX_BODY_BYTES)
    if max_body < 1:
        raise SettingsError(f"BREADBOARD_MAX_BODY_BYTES must be at least 1, got {max_body}")
    data_path = Path(data_dir).expanduser().absolute()
    replay_dir = Path(_env("BREADBOARD_REPLAY_DIR") or data_path / "replays").expanduser().absolute()

    snapshot_every = _int("BREADBOARD_SNAPSHOT_EVERY", _env("BREADBOARD_SNAPSHOT_EVERY"), 1000)
    if snapshot_every < 1:
        raise SettingsError(f"BREADBOARD_SNAPSHOT_EVERY must be at least 1, got {snapshot_every}")
    state_cache = _int("BREADBOARD_STATE_CACHE", _env("BREADBOARD_STATE_CACHE"), 64)
    if state_cache < 1:
        raise SettingsError(f"BREADBOARD_STATE_CACHE must be at least 1, got {state_cache}")
    realtime_queue = _int("BREADBOARD_REALTIME_QUEUE", _env("BREADBOARD_REALTIME_QUEUE"), 1024)
    if realtime_queue < 1:
        raise SettingsError(f"BREADBOARD_REALTIME_QUEUE must be at least 1, got {realtime_queue}")
    warnings.extend(superseded_upstream_settings(data_path))

    return Settings(
        host=host,
        port=port,
        fd=fd,
        token=token,
        data_dir=data_path,
        ray_address=ray_address,
        ray_start=ray_start,
        instance_id=_env("BREADBOARD_INSTANCE_ID") or str(uuid.uuid4()),
        log_level=(getattr(args, "log_level", None) or _env("BREADBOARD_CLI_LOG_LEVEL") or "info").lower(),
        keepalive_s=_float("BREADBOARD_SSE_KEEPALIVE_S", _env("BREADBOARD_SSE_KEEPALIVE_S"), 15.0),
        client_queue=_int("BREADBOARD_SSE_CLIENT_QUEUE", _env("BREADBOARD_SSE_CLIENT_QUEUE"), 16384),
        fsync=fsync,
        provider=_env("BREADBOARD_PROVIDER") or "echo",
        max_body_bytes=max_body,
        replay_dir=replay_dir,
        snapshot_every=snapshot_every,
        realtime_queue=realtime_queue,
        state_cache=state_cache,
        access_log=(_env("BREADBOARD_ACCESS_LOG") or "").lower() in TRUTHY,
        tls=tls,
        warnings=warnings,
    )


# Upstream's persistence switches. This engine always keeps what they switch on, so none of them changes anything;
# each one set is named once at start with what does its job here, so that it is never silently ignored.
UPSTREAM_PERSISTENCE = {
    "BREADBOARD_EVENTLOG_DIR": "event logs are always kept, in {sessions} (BREADBOARD_DATA_DIR/sessions, one "
    "<id>/events.jsonl per session as upstream's); set BREADBOARD_DATA_DIR to move them",
    "BREADBOARD_EVENTLOG_BOOTSTRAP": "every stored session is loaded at start, always",
    "BREADBOARD_EVENTLOG_REPLAY": "replay=true and resuming read the whole history from disk, always (no "
    "1000-event window)",
    "BREADBOARD_SESSION_INDEX": "the session index {index} is always kept (SQLite)",
}


def superseded_upstream_settings(data_dir: Path) -> list[str]:
    found = []
    for name, instead in UPSTREAM_PERSISTENCE.items():
        if _env(name) is not None:
            text = instead.format(sessions=data_dir / "sessions", index=data_dir / "sessions.sqlite3")
            found.append(f"{name} is upstream's and is superseded here: {text}")
    return found


def _tls(args, warnings: list[str]) -> Tls | None:
    """The certificate and key to serve HTTPS with, checked here so that a wrong file is a one-line error naming it
    rather than a traceback from inside uvicorn."""
    cert, cert_from = _path_setting(args, "ssl_certfile", "--ssl-certfile", "BREADBOARD_SSL_CERTFILE")
    key, key_from = _path_setting(args, "ssl_keyfile", "--ssl-keyfile", "BREADBOARD_SSL_KEYFILE")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (cert_from, "--ssl-keyfile") if key is None else (key_from, "--ssl-certfile")
        raise SettingsError(
            f"{given} is set but {missing} is not: serving TLS needs both the certificate and its private key "
            "(--ssl-certfile and --ssl-keyfile, or BREADBOARD_SSL_CERTFILE and BREADBOARD_SSL_KEYFILE)."
        )
    cert_text = _read_pem(cert, "TLS certificate")
    key_text = _read_pem(key, "TLS private key")

    mode = key.stat().st_mode
    if mode & stat.S_IROTH:
        # Anyone on the machine could read it and pose as this engine, or decrypt recorded traffic.
        raise SettingsError(
            f"the TLS private key {key} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"make it private: chmod 600 {key}"
        )
    if mode & stat.S_IRGRP:
        # Tolerated: a key shared with a group (Debian's ssl-cert) is a common, deliberate setup.
        warnings.append(
            f"the TLS private key {key} is readable by its group (mode {stat.S_IMODE(mode):04o}); "
            f"unless that is deliberate, chmod 600 {key}"
        )

    check = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        check.load_verify_locations(cadata=cert_text)
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(f"the TLS certificate file {cert} holds no PEM certificate.") from exc
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback, so an encrypted key fails here instead of prompting on the engine's terminal.
        server.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            raise SettingsError(f"the TLS private key {key} does not belong to the certificate {cert}.") from exc
        if "ENCRYPTED" in key_text:
            raise SettingsError(
                f"the TLS private key {key} is encrypted with a passphrase, which the engine cannot ask for; "
                f"store it decrypted and private instead: openssl pkey -in {key} -out NEW.key && chmod 600 NEW.key"
            ) from exc
        raise SettingsError(f"the TLS private key file {key} holds no usable PEM private key.") from exc
    return Tls(certfile=cert, keyfile=key)


def _path_setting(args, attr: str, flag: str, env: str) -> tuple[Path | None, str]:
    """The path from the flag, else from the environment, and which of the two it came from."""
    raw, source = getattr(args, attr, None), flag
    if not raw:
        raw, source = _env(env), env
    return (Path(raw).expanduser().absolute() if raw else None), source


def _read_pem(path: Path, what: str) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise SettingsError(f"cannot read the {what} file {path}: {exc.strerror}.") from exc
