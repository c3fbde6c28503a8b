#!/usr/bin/env bash
# The demo: a generated LLaVA-Video-178K-style dataset served by kaio-hub on
# loopback, kaiod training the tiny model on it under a 200 MB budget, status
# printed as it goes, and a summary at the end. Works offline.
#   KAIO_DEMO_BYTES   size of the generated dataset (default 1 GB of mp4, encoded once)
#   KAIO_DEMO_SECONDS how long to let kaiod run before stopping it (default 300)
set -euo pipefail
build="${1:-build}"
cd "$(dirname "$0")/.."
bytes="${KAIO_DEMO_BYTES:-1000000000}"
seconds="${KAIO_DEMO_SECONDS:-300}"
run=demo-run
bin="$build"

mkdir -p "$run"
if [ ! -f "$run/hub/kaio-demo/llava-mini/.complete-$bytes" ]; then
  echo "demo: generating about $((bytes / 1000000)) MB of H.264 clips with kaio-mkdata (once)"
  rm -rf "$run/hub"
  "$bin/tools/kaio-mkdata/kaio-mkdata" --layout llava --out "$run/hub/kaio-demo/llava-mini" --seed 1 \
    --clips-per-archive 40 --seconds 8 --width 640 --height 360 --fps 30 --target-bytes "$bytes"
  touch "$run/hub/kaio-demo/llava-mini/.complete-$bytes"
fi
rm -rf "$run/cache" "$run/state" "$run/kaiod.sock"

"$bin/tools/kaio-hub/kaio-hub" --root "$run/hub" --port 8917 --cdn-port 0 > "$run/kaio-hub.log" 2>&1 &
hub=$!
"$bin/daemon/kaiod" --config configs/demo.json > "$run/kaiod.log" 2>&1 &
kaiod=$!
cleanup() { kill "$kaiod" 2>/dev/null || true; wait "$kaiod" 2>/dev/null || true; kill "$hub" 2>/dev/null || true; }
trap cleanup EXIT

export KAIO_SOCKET="$run/kaiod.sock"
peak=0
first_loss=""
start=$(date +%s)
last_print=0
while kill -0 "$kaiod" 2>/dev/null; do
  now=$(date +%s)
  used=$( (du -sB1 "$run/cache" "$run/state" 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
  if [ "$used" -gt "$peak" ]; then peak=$used; fi
  if [ $((now - last_print)) -ge 15 ] && "$bin/daemon/kaioctl" status > "$run/status.txt" 2>/dev/null; then
    echo "---- kaioctl status ($((now - start)) s)"; cat "$run/status.txt"; last_print=$now
  fi
  if [ -z "$first_loss" ] && "$bin/daemon/kaioctl" status --json > "$run/status.json" 2>/dev/null; then
    first_loss=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["train"]; print(t["loss"] if t["step"]>0 else "")' "$run/status.json")
  fi
  if "$bin/daemon/kaioctl" status --json > "$run/status.tmp" 2>/dev/null; then mv "$run/status.tmp" "$run/status.json"; fi
  if [ $((now - start)) -ge "$seconds" ]; then echo "demo: $seconds s are up, stopping kaiod (it checkpoints first)"; kill -TERM "$kaiod"; wait "$kaiod" || true; break; fi
  sleep 0.5
done
wait "$kaiod" 2>/dev/null || true
python3 - "$run/status.json" "$run/kaiod.log" "$peak" "${first_loss:-nan}" "$(( $(date +%s) - start ))" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1])); log = open(sys.argv[2]).read()
peak = int(sys.argv[3]); first = sys.argv[4]; wall = int(sys.argv[5])
deleted = sum(int(n) for n in re.findall(r"durable .*?, (\d+) clips deleted", log))
steps = re.findall(r"checkpoint step (\d+) durable .*?loss ([0-9.]+)", log)
last_step, last_loss = (steps[-1] if steps else ("0", "nan"))
final = re.findall(r"kaiod stopped: (\S+)", log)
samples = s["train"]["samples"]
print("==== demo summary")
print(f"final state      {final[-1] if final else s['state']}")
print(f"clips            {deleted} streamed, trained and deleted after their checkpoint")
print(f"peak disk        {peak/1e6:.1f} MB (du every 0.5 s) / budget {s['budget_bytes']/1e6:.0f} MB")
print(f"loss             {first} at the start -> {last_loss} at step {last_step}")
print(f"samples/s        {samples/max(wall,1):.1f} over {wall} s on {s['train']['backend']}")
PY
