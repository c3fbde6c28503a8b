#!/usr/bin/env bash
# How long a new user waits: clones this repository's HEAD into DIR (default
# /tmp/kaio-first-demo), runs `make demo` there without a compiler cache, and
# prints when the build was done and when kaiod trained its first step.
# The packages must already be installed (scripts/setup.sh).
set -uo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-/tmp/kaio-first-demo}"
rm -rf "$dir" && git clone -q "$src" "$dir" && cd "$dir" || exit 1
out="$dir/make-demo.out"
t0=$(date +%s)
(CCACHE_DISABLE=1 KAIO_DEMO_SECONDS=60 make demo > "$out" 2>&1; echo "make demo rc $?" >> "$out") &
built="" stepped=""
while true; do
  now=$(( $(date +%s) - t0 ))
  if [ -z "$built" ] && grep -q "kaiod is running" "$out"; then built=$now; echo "kaiod started at $now s"; fi
  if [ -n "$built" ] && [ -z "$stepped" ]; then
    step=$(build-demo/daemon/kaioctl --socket demo-run/kaiod.sock status --json 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["train"]["step"])' 2>/dev/null)
    if [ "${step:-0}" -gt 0 ] 2>/dev/null; then stepped=$now; echo "first training step at $now s"; fi
  fi
  if grep -q "make demo rc" "$out"; then echo "make demo ended at $now s ($(tail -1 "$out"))"; break; fi
  if [ "$now" -gt 3600 ]; then echo "gave up after $now s; see $out"; break; fi
  sleep 2
done
grep "^kaio-mkdata" "$out" | tail -1
