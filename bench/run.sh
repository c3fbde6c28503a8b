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
  # A failed run must not leave an older run's figures to be collected as if new.
  rm -f "bench/results/$(basename "$script" .sh).json"
  bash "$script" "$build" || { echo "FAILED: $script"; status=1; }
done
# The data plane (issue 16): Python, Debian's interpreter (python3-torch, python3-av).
echo "== bench/dataplane.py"
rm -f bench/results/dataplane.json
/usr/bin/python3 bench/dataplane.py "$build" || { echo "FAILED: bench/dataplane.py"; status=1; }
# What the CPU side can feed a GPU, with a stand-in GPU trainer (issue 19).
echo "== bench/feed.py"
rm -f bench/results/feed.json
/usr/bin/python3 bench/feed.py "$build" || { echo "FAILED: bench/feed.py"; status=1; }
echo "== bench/train_torch_e2e.py"
/usr/bin/python3 bench/train_torch_e2e.py "$build" || { echo "FAILED: bench/train_torch_e2e.py"; status=1; }
python3 bench/collect.py bench/results
[ "$status" = 0 ] || echo "bench: some benchmarks FAILED (see above)"
exit $status
