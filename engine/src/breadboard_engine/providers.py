"""Turn providers: generators that turn one user input into engine events.

They run inside Ray workers (or inline when Ray is off), so they take plain data and yield plain dicts
`{"type": ..., "payload": ...}`. The session runner adds `user_message`/`turn_start` before and makes sure every turn
ends with `completion` and `run_finished`.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

REPLAY_PREFIXES = ("replay:", "@replay ", "/replay ")


def replay_path(content: str) -> str | None:
    for prefix in REPLAY_PREFIXES:
        if content.startswith(prefix):
            return content[len(prefix) :].strip()
    return None


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def short_error(exc: BaseException) -> str:
    """One line for a turn's error event: a Ray task's failure as its original exception (Ray's own text adds the
    remote traceback, with terminal colours), without escape codes, bounded."""
    cause = getattr(exc, "cause", None) if type(exc).__name__.startswith("RayTaskError") else None
    if isinstance(cause, BaseException):
        exc = cause
    text = ANSI_ESCAPE.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 500 else line[:497] + "..."


class ReplayRefused(ValueError):
    """A replay fixture outside the replay directory: a client must not make the engine read arbitrary files."""


def resolve_replay(path: str, root: Path) -> str:
    """The real path of a fixture named relative to `root` (or absolute, inside it). Symlinks are resolved first, so
    one inside the directory cannot point outside it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, path))
    if not path or os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise ReplayRefused(
            f"replay fixtures are read only from {root} (set BREADBOARD_REPLAY_DIR to change it); "
            f"{path!r} is not a file inside it"
        )
    return real


def echo(request: dict) -> Iterator[dict]:
    """Deterministic and offline: streams the input back word by word."""
    text = request["content"]
    delay = float(request.get("echo_delay_ms") or 0) / 1000.0
    message_id = str(uuid.uuid4())
    for piece in re.findall(r"\S+\s*|\s+", text):
        if delay:
            time.sleep(delay)
        yield {"type": "assistant_delta", "payload": {"text": piece, "message_id": message_id}}
    yield {"type": "assistant_message", "payload": {"text": text, "message_id": message_id, "source": "echo"}}


def replay(request: dict) -> Iterator[dict]:
    """Plays a JSONL fixture the way upstream's replay sessions do: {"type", "payload"|"data", "turn"?, "delay_ms"?}."""
    if "replay_refused" in request:
        raise RuntimeError(request["replay_refused"])
    path = Path(request["replay_path"])
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RuntimeError(f"cannot read replay fixture {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise RuntimeError(f"{path}:{number}: not valid JSON: {exc}") from None
        delay = item.get("delay_ms", item.get("delayMs")) or 0
        if delay:
            time.sleep(float(delay) / 1000.0)
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise RuntimeError(f'{path}:{number}: an event needs a "type"')
        # A fixture's own "turn" is not passed on: the turn is the engine's to number.
        yield {"type": item["type"], "payload": item.get("payload", item.get("data")) or {}}


def openai(request: dict) -> Iterator[dict]:
    """Any OpenAI-compatible /v1/chat/completions endpoint, streamed."""
    import httpx

    cfg = request["openai"]
    messages = [{"role": role, "content": text} for role, text in request.get("history", [])]
    messages.append({"role": "user", "content": request["content"]})
    headers = {"Content-Type": "application/json"}
    if cfg.get("api_key"):
        headers["Authorization"] = f"Bearer {cfg['api_key']}"
    body = {"model": cfg["model"], "messages": messages, "stream": True}
    message_id = str(uuid.uuid4())
    parts: list[str] = []
    usage = None
    url = cfg["base_url"].rstrip("/") + "/chat/completions"
    with httpx.Client(timeout=httpx.Timeout(cfg.get("timeout_s", 120.0), connect=10.0)) as client:
        with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                detail = response.read().decode(errors="replace")[:500]
                raise RuntimeError(f"{url} answered {response.status_code}: {detail}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        yield {"type": "assistant_delta", "payload": {"text": text, "message_id": message_id}}
    payload = {"text": "".join(parts), "message_id": message_id, "source": "openai", "model": cfg["model"]}
    if usage:
        payload["usage"] = usage
    yield {"type": "assistant_message", "payload": payload}


PROVIDERS = {"echo": echo, "replay": replay, "openai": openai}

BATCH_MAX = 512
_DONE = object()


def turn_batches(provider: str, request: dict) -> Iterator[list[dict]]:
    """The unit of Ray work for one turn.

    The provider runs in a thread and each yield hands over whatever it produced since the last one: a trickling LLM
    stream goes out event by event, a burst goes out in one batch instead of paying Ray's per-item cost each time.
    """
    import queue
    import threading

    pending: queue.Queue = queue.Queue()
    abandoned = threading.Event()  # the consumer is gone (the turn was stopped): stop the provider too

    worker_pid = os.getpid()

    def produce() -> None:
        events = PROVIDERS[provider](request)
        try:
            for step, event in enumerate(events):
                if abandoned.is_set():
                    return
                # Numbered where it is produced, so the order survives however the batches travel; the engine
                # places it in its turn (and the turn is the engine's, whatever a replay fixture says).
                event["step"] = step
                if event["type"] == "assistant_message":
                    # Where the turn ran: a Ray worker's pid, or the engine's own when Ray is off.
                    event["payload"].setdefault("worker_pid", worker_pid)
                pending.put(event)
            pending.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it in the Ray task
            pending.put(exc)
        finally:
            events.close()  # closes an open HTTP stream (openai) at once rather than at garbage collection

    threading.Thread(target=produce, daemon=True, name=f"provider-{provider}").start()
    try:
        while True:
            batch = [pending.get()]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            end = next((i for i, item in enumerate(batch) if item is _DONE or isinstance(item, BaseException)), None)
            if end is None:
                yield batch
                continue
            if end:
                yield batch[:end]
            if isinstance(batch[end], BaseException):
                raise batch[end]
            return
    finally:
        abandoned.set()
