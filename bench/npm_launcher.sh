#!/usr/bin/env bash
# What the npm channel costs per command (issue 6): `breadboard --version` through the npm launcher
# (node + bin/breadboard.js + the platform package's binary) against the same binary run directly, and against
# `node -e 0` (the floor of any Node launcher), in one hyperfine run.
# Usage: bench/npm_launcher.sh [runs]   (builds a release tree with scripts/dist; needs node, npm and hyperfine)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-100}
work=$(mktemp -d /tmp/bbnpm.XXXXXX)
trap 'rm -rf "$work"' EXIT
version=0.1.0-bench.1
"$root/scripts/dist" --out "$work/dist" --version "$version" >/dev/null
# A closed registry port: npm must not reach out for anything (the tarballs are local).
export npm_config_registry=http://127.0.0.1:9/ npm_config_cache="$work/npm-cache" npm_config_audit=false \
  npm_config_fund=false npm_config_update_notifier=false npm_config_loglevel=error
node "$root/npm-wrapper/build.mjs" --dist "$work/dist" --version "$version" --out "$work/npm" --pack >"$work/tgzs"
# shellcheck disable=SC2046 # one tarball path per line, no spaces (mktemp path)
npm install -g --ignore-scripts --prefix "$work/prefix" $(cat "$work/tgzs") >/dev/null
launcher="$work/prefix/bin/breadboard"
binary=$(find "$work/prefix/lib/node_modules" -path '*breadboard-cli-linux-x64/bin/breadboard' | head -n1)
[ "$("$launcher" --version)" = "breadboard $version" ] || { echo "launcher does not run $version" >&2; exit 1; }
hyperfine --style basic -N --warmup 10 --runs "$runs" --export-markdown "$work/npm.md" \
  "$launcher --version" "$binary --version" "node -e 0"
cat "$work/npm.md"
