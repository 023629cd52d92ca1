"""Engine identity. Imported by `version --json`, so it must stay free of heavy imports (no FastAPI, no Ray)."""

from importlib import metadata

PROTOCOL_VERSION = "1.0"
DIST_NAME = "breadboard-engine"

# What this engine offers beyond the base protocol; clients may branch on these instead of on versions.
CAPABILITIES = [
    "auth.bearer",
    "events.sse",
    "events.resume",
    "sessions.durable",
    "sessions.command",
    "sessions.input_id",
    "sessions.close",
    "sessions.state",
    "sessions.snapshots",
    "events.ordering",
    "realtime.ws",
    "serve.fd",
    "shutdown.http",
    "ray.local",
    "ray.cluster",
    "providers.echo",
    "providers.replay",
    "providers.openai",
    "providers.replay.dir",
    "limits.body",
    "transport.tls",
]


def engine_version() -> str:
    # Package metadata, never the environment: upstream reported BREADBOARD_ENGINE_VERSION and so lied to its clients.
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def identity_document() -> dict:
    return {
        "engine_version": engine_version(),
        "protocol_version": PROTOCOL_VERSION,
        "capabilities": list(CAPABILITIES),
    }
