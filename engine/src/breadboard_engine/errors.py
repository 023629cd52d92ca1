"""What the session layer raises; the HTTP layer maps each to its answer."""

from __future__ import annotations


class SessionNotFound(Exception):
    pass


class SessionClosed(Exception):
    pass


class StorageFailed(Exception):
    """The session could not be written to disk (disk full, data dir unwritable): nothing of it was kept."""


class InvalidCommand(Exception):
    """A command this engine does not know, or one whose payload is wrong (400)."""


class CommandNotImplemented(Exception):
    """An upstream command this engine knows but does not implement (501)."""


class ResumeWindowExceeded(Exception):
    def __init__(self, last_event_id: str, last_seq: int):
        super().__init__(last_event_id)
        self.last_event_id = last_event_id
        self.last_seq = last_seq


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)
