#!/usr/bin/env bash
# Runs every benchmark against its peer, side by side, and collects the figures.
# Each bench/<component>.sh prints "name: kaio X, peer Y, ratio Z" lines and
# writes bench/results/<component>.json.
set -uo pipefail
build="${1:-build-release}"
cd "$(dirname "$0")/.."
mkdir -p bench/results
status=0
for script in bench/*.sh; do
  [ "$(basename "$script")" = run.sh ] && continue
  echo "== $script"
  bash "$script" "$build" || { echo "$script failed"; status=1; }
done
python3 bench/collect.py bench/results
exit $status
