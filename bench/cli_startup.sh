#!/usr/bin/env bash
# Process time of `breadboard --version` and `breadboard engine list` (two installed versions), against
# `node -e 0` as the baseline for the Node CLI breadboard replaces. Usage: bench/cli_startup.sh
# Needs hyperfine (apt-get install -y hyperfine) and node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$root/target"
flock "$root/target/fixtures.lock" scripts/fixtures   # same lock as the test harness
cargo build --release -q
bin="$root/target/release/breadboard"
home="$root/target/bench-startup-home"
export BREADBOARD_UV="$root/.venv-dev/bin/uv" UV_CACHE_DIR="$root/target/bench-cache/uv" NO_COLOR=1
BREADBOARD_PYTHON=$(python3.11 -c 'import sys; print(sys.executable)')
export BREADBOARD_PYTHON
if [ "$(BREADBOARD_HOME=$home "$bin" engine list --json | grep -c '"complete": true')" != 2 ]; then
  rm -rf "$home"
  for v in 0.1.0 0.1.1; do
    BREADBOARD_HOME=$home "$bin" -q engine install --find-links "$root/target/fixtures/wheelhouse" --version "$v" >/dev/null
  done
fi
export BREADBOARD_HOME=$home
hyperfine --style basic -N --warmup 20 --runs 300 --export-markdown "$root/target/bench-startup.md" \
  "$bin --version" "$bin engine list" "node -e 0"
cat "$root/target/bench-startup.md"
