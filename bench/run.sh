#!/usr/bin/env bash
# Runs every benchmark against its peer, side by side, and collects the figures.
# Each bench/<component>.sh prints "name: kaio X, peer Y, ratio Z" lines and
# writes bench/results/<component>.json.
set -uo pipefail
build="${1:-build-release}"
cd "$(dirname "$0")/.."
mkdir -p bench/results
status=0
# The 1-minute load average before and after each component, for the rows
# that do not record their own, and the share of CPU time the hypervisor gave
# to other guests while it ran (steal, which the load average does not show;
# bench/collect.py shows both beside the rows).
: > bench/results/loads.tsv
load() { cut -d' ' -f1 /proc/loadavg; }
cpu_ticks() { awk '/^cpu /{print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
component() {
  local name="$1"
  shift
  local before ticks_before steal
  before=$(load)
  ticks_before=$(cpu_ticks)
  "$@" || { echo "FAILED: $name"; status=1; }
  steal=$(echo "$ticks_before $(cpu_ticks)" | awk '{d = $4 - $2; print (d > 0 ? sprintf("%.2f", ($3 - $1) / d) : 0)}')
  printf '%s\t%s\t%s\t%s\n' "$name" "$before" "$(load)" "$steal" >> bench/results/loads.tsv
}
for script in bench/*.sh; do
  [ "$(basename "$script")" = run.sh ] && continue
  echo "== $script"
  # A failed run must not leave an older run's figures to be collected as if new.
  rm -f "bench/results/$(basename "$script" .sh).json"
  component "$(basename "$script" .sh)" bash "$script" "$build"
done
# The data plane (issue 16): Python, Debian's interpreter (python3-torch, python3-av).
echo "== bench/dataplane.py"
rm -f bench/results/dataplane.json
component dataplane /usr/bin/python3 bench/dataplane.py "$build"
# What the CPU side can feed a GPU, with a stand-in GPU trainer (issue 19).
echo "== bench/feed.py"
rm -f bench/results/feed.json
component feed /usr/bin/python3 bench/feed.py "$build"
echo "== bench/train_torch_e2e.py"
component train_torch_e2e /usr/bin/python3 bench/train_torch_e2e.py "$build"
python3 bench/collect.py bench/results
[ "$status" = 0 ] || echo "bench: some benchmarks FAILED (see above)"
exit $status
