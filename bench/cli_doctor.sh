#!/usr/bin/env bash
# `breadboard engine doctor` on a healthy setup with the engine running (issue 5; target < 1 s wall), against the
# floor any doctor has to pay in the same run: one start of the engine venv's Python asking the engine its version
# (`python -m breadboard_engine version --json`, which doctor also runs).
# Usage: bench/cli_doctor.sh [runs]   (builds the release binary; installs engine 0.1.1 from target/fixtures)
# Needs hyperfine (apt-get install -y hyperfine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-20}
cd "$root"
cargo build --release -q
bin="$root/target/release/breadboard"
mkdir -p "$root/target"
flock "$root/target/fixtures.lock" scripts/fixtures >/dev/null # same lock as the test harness
work=$(mktemp -d /tmp/bbdoctor.XXXXXX)
export BREADBOARD_HOME="$work/home" NO_COLOR=1  # Ray as by default (background)
export BREADBOARD_UV="$root/.venv-dev/bin/uv" UV_CACHE_DIR="$root/target/test-cache/uv"
# The fixture index (not --find-links): its links carry sha256, so uv's shared cache never serves a stale wheel
# of the same version built from an older engine/.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server -d "$root/target/fixtures" "$port" --bind 127.0.0.1 >/dev/null 2>&1 &
httpd=$!
cleanup() { "$bin" engine stop --force >/dev/null 2>&1 || true; kill "$httpd" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/simple/" >/dev/null && break; sleep 0.05; done
"$bin" -q engine install --version 0.1.1 --index-url "http://127.0.0.1:$port/simple/" >/dev/null
"$bin" -q engine start --port auto >/dev/null
py="$BREADBOARD_HOME/engine/current/bin/python"
# Doctor must find nothing wrong here, or the timing would be of a different code path.
"$bin" engine doctor --json >"$work/doctor.json" || { cat "$work/doctor.json"; exit 1; }
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(\"doctor checks:\", \" \".join(c[\"id\"]+\"=\"+c[\"status\"] for c in d[\"checks\"]))" "$work/doctor.json" >&2
hyperfine --style basic -N --warmup 2 --runs "$runs" --export-markdown "$work/doctor.md" \
  "$bin engine doctor --json" "$py -m breadboard_engine version --json"
cat "$work/doctor.md"
