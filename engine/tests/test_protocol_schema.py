"""The committed schema is what the protocol models generate; the models hold the engine to it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from protocol_check import REGENERATE, SCHEMA_PATH, check_body, committed_schema

from breadboard_engine import protocol, version

ENGINE_SRC = Path(protocol.__file__).resolve().parent


def test_committed_schema_is_what_the_models_generate():
    generated = subprocess.run(
        [sys.executable, "-m", "breadboard_engine", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert generated == SCHEMA_PATH.read_text(), (
        f"docs/protocol.schema.json differs from what the protocol models generate: regenerate it with `{REGENERATE}` "
        "and commit it"
    )


def test_the_schema_is_valid_2020_12_and_names_the_protocol_version_once():
    schema = committed_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["ProtocolVersion"]["const"] == version.PROTOCOL_VERSION
    # version.py is the one place the version is written; everything else imports it.
    quoted = re.compile("[\"']" + re.escape(version.PROTOCOL_VERSION) + "[\"']")
    elsewhere = [p.name for p in ENGINE_SRC.glob("*.py") if p.name != "version.py" and quoted.search(p.read_text())]
    assert elsewhere == [], f"the protocol version is spelt out in {elsewhere}: import PROTOCOL_VERSION instead"


def test_the_engine_cannot_send_a_field_the_protocol_does_not_declare():
    body = {"status": "accepted", "detail": {"status": "ok", "stopped": True}}
    assert protocol.CommandResponse.emit(body) == body
    with pytest.raises(ValueError, match="detail.surprise"):
        protocol.CommandResponse.emit({"status": "accepted", "detail": {"status": "ok", "surprise": 1}})


def test_a_known_event_type_with_a_wrong_payload_does_not_decode():
    doc = {
        "id": "6f1c0f9e-4d5a-4b8e-9a43-1f0d8c1e2b3a",
        "seq": 2,
        "type": "turn_start",
        "session_id": "0d6f3c52-1e0b-4b4f-8d7e-5a2c9b1f4e6d",
        "turn": 1,
        "timestamp": 1796316587972,
        "timestamp_ms": 1796316587972,
        "protocol_version": "1.0",
        "payload": {"turn": "first"},
    }
    with pytest.raises(ValueError):
        protocol.Event.model_validate(doc)
    doc["type"] = "turn_started_v2"  # the same payload under a type this engine does not know passes through
    assert protocol.Event.model_validate(doc).payload == {"turn": "first"}


def test_version_json_is_a_version_info():
    out = subprocess.run(
        [sys.executable, "-m", "breadboard_engine", "version", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BREADBOARD_")},
    ).stdout
    check_body("VersionInfo", json.loads(out))
