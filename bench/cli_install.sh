#!/usr/bin/env bash
# Warm-cache `breadboard engine install` with the uv back end versus the pip back end, against the fixture index
# (target/fixtures/simple) served on 127.0.0.1, and the first install of a machine without uv (no uv on PATH, no
# BREADBOARD_UV: the CLI sets up its pinned uv from the same index, then installs with it). Each timed run installs
# into a fresh BREADBOARD_HOME (so the uv set-up is timed every run); the caches (UV_CACHE_DIR, PIP_CACHE_DIR under
# target/bench-cache) are warmed by one untimed install first.
# Usage: bench/cli_install.sh [uv-runs] [pip-runs]     Needs hyperfine (apt-get install -y hyperfine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
uv_runs=${1:-5}
pip_runs=${2:-3}
cd "$root"
mkdir -p "$root/target"
flock "$root/target/fixtures.lock" scripts/fixtures   # same lock as the test harness
cargo build --release -q
bin="$root/target/release/breadboard"
py=$(python3.11 -c 'import sys; print(sys.executable)')
work=$(mktemp -d "$root/target/bench-install.XXXXXX")
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$root/target/fixtures" "$port" >/dev/null 2>&1 &
server_pid=$!
index="http://127.0.0.1:$port/simple/"
# Poll with a deadline until the server answers.
for _ in $(seq 100); do curl -fs "$index" >/dev/null && break; sleep 0.05; done
curl -fs "$index" >/dev/null || { echo "index server did not start" >&2; exit 1; }

export BREADBOARD_UV="$root/.venv-dev/bin/uv" BREADBOARD_PYTHON="$py" NO_COLOR=1
export UV_CACHE_DIR="$root/target/bench-cache/uv" PIP_CACHE_DIR="$root/target/bench-cache/pip"
install() { BREADBOARD_HOME="$work/$1" "$bin" -q engine install --index-url "$index" --installer "$1" >/dev/null; }
echo "warming caches" >&2
install uv && install pip

# Two hyperfine runs because hyperfine 1.15 (Debian) takes one --runs for all commands.
hyperfine --style basic --time-unit millisecond --export-markdown "$work/uv.md" --runs "$uv_runs" --prepare "rm -rf $work/uv" \
  -n "engine install (uv, warm cache)" \
  "BREADBOARD_HOME=$work/uv $bin -q engine install --index-url $index --installer uv"
hyperfine --style basic --time-unit millisecond --export-markdown "$work/pip.md" --runs "$pip_runs" --prepare "rm -rf $work/pip" \
  -n "engine install (pip, warm cache)" \
  "BREADBOARD_HOME=$work/pip $bin -q engine install --index-url $index --installer pip"
# No uv in view: what a user without uv gets by default (the pinned uv is fetched into the fresh home every run).
hyperfine --style basic --time-unit millisecond --export-markdown "$work/none.md" --runs "$uv_runs" --prepare "rm -rf $work/none" \
  -n "engine install (no uv on PATH: pinned uv set up, warm cache)" \
  "env -u BREADBOARD_UV PATH=/usr/bin:/bin BREADBOARD_HOME=$work/none $bin -q engine install --index-url $index"
cat "$work/uv.md"; tail -n +3 "$work/none.md"; tail -n +3 "$work/pip.md"
