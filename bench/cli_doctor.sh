#!/usr/bin/env bash
# `breadboard engine doctor` on a healthy setup (issue 5; target < 1 s wall), with the engine installed and with it
# running, each with uv in view (BREADBOARD_UV) and without any (no BREADBOARD_UV, no uv on PATH: the dependency check
# then uses the pinned uv `engine install` set up under the home). Against the floor any doctor has to pay in the same
# run: one start of the engine venv's Python asking the engine its version (`python -m breadboard_engine version
# --json`, which doctor also runs), and with the engine stopped against importing Ray in the venv (doctor's slowest
# probe, which a running engine's own report of its Ray replaces).
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
# What a machine without uv runs: no BREADBOARD_UV, and a PATH without uv on it.
no_uv=(env -u BREADBOARD_UV PATH=/usr/bin:/bin)
# The fixture index (not --find-links): its links carry sha256, so uv's shared cache never serves a stale wheel
# of the same version built from an older engine/.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server -d "$root/target/fixtures" "$port" --bind 127.0.0.1 >/dev/null 2>&1 &
httpd=$!
cleanup() { "$bin" engine stop --force >/dev/null 2>&1 || true; kill "$httpd" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/simple/" >/dev/null && break; sleep 0.05; done
# Installed as a machine without uv installs: the CLI sets up its pinned uv from the same index first.
"${no_uv[@]}" "$bin" -q engine install --version 0.1.1 --index-url "http://127.0.0.1:$port/simple/" >/dev/null
py="$BREADBOARD_HOME/engine/current/bin/python"

# Doctor must find nothing wrong (not even a warning), or the timing would be of a different code path.
healthy() { # label, command...
  local label=$1
  shift
  "$@" engine doctor --json --strict >"$work/doctor.json" || { cat "$work/doctor.json"; exit 1; }
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2]+':', ' '.join(c['id']+'='+c['status'] for c in d['checks']))" \
    "$work/doctor.json" "$label" >&2
}
timed() { # name of the markdown table, then hyperfine's arguments
  local table=$1
  shift
  hyperfine --style basic -N --warmup 2 --runs "$runs" --export-markdown "$work/$table.md" \
    --export-json "$work/$table.json" "$@"
}

healthy "installed, uv in view" "$bin"
healthy "installed, no uv" "${no_uv[@]}" "$bin"
timed installed -n "doctor (installed, uv in view)" "$bin engine doctor --json" \
  -n "doctor (installed, no uv)" "${no_uv[*]} $bin engine doctor --json" \
  -n "python -c 'import ray'" "$py -c 'import ray'"

"$bin" -q engine start --port auto >/dev/null
healthy "running, uv in view" "$bin"
healthy "running, no uv" "${no_uv[@]}" "$bin"
timed running -n "doctor (running, uv in view)" "$bin engine doctor --json" \
  -n "doctor (running, no uv)" "${no_uv[*]} $bin engine doctor --json" \
  -n "python -m breadboard_engine version --json" "$py -m breadboard_engine version --json"
cat "$work/installed.md"
tail -n +3 "$work/running.md"
# Medians too: on a shared machine a few slow runs move the mean more than the median.
python3 - "$work/installed.json" "$work/running.json" <<'PY'
import json, sys
print("\n| Command | Median [ms] | Min [ms] | Max [ms] |\n|:---|---:|---:|---:|")
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        print(f"| `{r['command']}` | {r['median'] * 1000:.1f} | {r['min'] * 1000:.1f} | {r['max'] * 1000:.1f} |")
PY
