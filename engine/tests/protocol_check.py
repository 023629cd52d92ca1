"""Checks one wire object against the contract twice: the committed JSON Schema and the protocol models."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema  # a dependency of Ray, so it is in every engine venv

from breadboard_engine import protocol

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json"
REGENERATE = "PYTHONPATH=engine/src .venv-dev/bin/python -m breadboard_engine schema > docs/protocol.schema.json"


@cache
def committed_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = committed_schema()
    assert name in schema["$defs"], f"docs/protocol.schema.json has no definition {name}"
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": schema["$defs"]})


def model(name: str):
    found = getattr(protocol, name, None)
    assert found is not None and name in committed_schema()["$defs"], f"no protocol model {name}"
    return found


def compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def check_event(line: bytes) -> protocol.Event:
    """An event line as the engine sent it: valid by the schema (by its type's definition when the type is known),
    decoded by the models with no field they do not declare, and re-encoded to the same bytes."""
    doc = json.loads(line)
    validator("Event").validate(doc)
    event = protocol.Event.model_validate_json(line)
    if event.type in protocol.EVENT_PAYLOADS:
        validator("KnownEvent").validate(doc)
        assert protocol.undeclared_fields(event) == [], f"undeclared fields in {line!r}"
    else:
        assert isinstance(event.payload, dict)
    assert protocol.encode(event) == line
    return event


def check_body(name: str, body) -> None:
    """A JSON answer of the engine (decoded): valid by definition `name`, and re-encoded by its model unchanged."""
    validator(name).validate(body)
    decoded = model(name).model_validate(body)
    assert protocol.undeclared_fields(decoded) == [], f"{name}: undeclared fields in {body}"
    assert protocol.encode(decoded) == compact(body), f"{name} does not re-encode unchanged"
