"""`python -m breadboard_engine version` and the serve command's refusals."""

import json
import os
import subprocess
import sys


def run(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BREADBOARD_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=60)


def test_version_json_reports_package_metadata_without_heavy_imports():
    code = (
        "import sys; from breadboard_engine.__main__ import main; main(['version', '--json']); "
        "heavy = [m for m in ('ray', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "sys.stderr.write(','.join(heavy))"
    )
    # A version in the environment must never be reported (upstream did exactly that).
    result = run("-c", code, env={"BREADBOARD_ENGINE_VERSION": "9.9.9"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    from importlib.metadata import version

    assert doc["engine_version"] == version("breadboard-engine")
    assert doc["protocol_version"] == "1.0"
    assert {"sessions.durable", "sessions.command", "serve.fd"} <= set(doc["capabilities"])
    assert {"sessions.close", "sessions.state", "sessions.snapshots", "events.ordering", "realtime.ws"} <= set(
        doc["capabilities"]
    )
    assert result.stderr == "", f"version --json imported {result.stderr}"


def test_version_human():
    result = run("-m", "breadboard_engine", "version")
    assert result.returncode == 0
    assert result.stdout.startswith("breadboard-engine ") and "protocol 1.0" in result.stdout


def test_non_loopback_bind_without_token_is_refused(tmp_path):
    result = run("-m", "breadboard_engine", "serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Refusing to start BreadBoard engine on a non-local bind without auth" in result.stderr
    assert "BREADBOARD_API_TOKEN_FILE" in result.stderr
    assert result.stdout == ""


def test_unreadable_token_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    result = run(
        "-m", "breadboard_engine", "serve", "--port", "0", "--data-dir", str(tmp_path),
        env={"BREADBOARD_API_TOKEN_FILE": str(missing)},
    )  # fmt: skip
    assert result.returncode == 2
    assert str(missing) in result.stderr and "token file" in result.stderr


def test_bad_env_values_are_named(tmp_path):
    result = run(
        "-m", "breadboard_engine", "serve", "--port", "0", "--data-dir", str(tmp_path),
        env={"BREADBOARD_RAY_START": "sometimes"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "BREADBOARD_RAY_START" in result.stderr
