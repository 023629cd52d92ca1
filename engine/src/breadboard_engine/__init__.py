"""BreadBoard engine: protocol 1.0 over HTTP + SSE, durable sessions, session work on Ray."""

from .version import PROTOCOL_VERSION, engine_version

__all__ = ["PROTOCOL_VERSION", "engine_version"]
