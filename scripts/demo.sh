#!/usr/bin/env bash
# The demo: a generated LLaVA-Video-178K-style dataset served by kaio-hub on
# loopback, kaiod training the tiny model on it under a budget a third of its
# size, status printed as it goes, and a summary at the end. Works offline.
#   KAIO_DEMO_BYTES   size of the generated dataset (default 300 MB of mp4, made once)
#   KAIO_DEMO_SECONDS how long to let kaiod run before stopping it (default 300)
#   KAIO_DEMO_FRESH=1 start training over (the default carries on from the last run's state)
set -euo pipefail
build="${1:-build}"
jobs="${2:-$(nproc)}"
cd "$(dirname "$0")/.."
bytes="${KAIO_DEMO_BYTES:-300000000}"
seconds="${KAIO_DEMO_SECONDS:-300}"
run=demo-run
bin="$build"
port=8917
generator="" hub="" kaiod=""
cleanup() {
  if [ -n "$kaiod" ]; then kill "$kaiod" 2>/dev/null || true; wait "$kaiod" 2>/dev/null || true; fi
  for pid in $generator $hub; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# The data is generated while kaiod, kaioctl and kaio-hub build: on 2 cores
# that overlap is what brings a fresh clone to training within 10 minutes.
cmake --build "$build" -j "$jobs" --target kaio-mkdata
mkdir -p "$run"
data="$run/hub/kaio-demo/llava-mini"
if [ ! -f "$data/.complete-$bytes" ]; then
  echo "demo: generating $((bytes / 1000000)) MB of H.264 clips (320x240, 15 fps) with kaio-mkdata while the rest builds, once"
  rm -rf "$run/hub" "$run/cache" "$run/state"
  "$bin/tools/kaio-mkdata/kaio-mkdata" --layout llava --out "$data" --seed 1 --clips-per-archive 40 \
    --seconds 8 --width 320 --height 240 --fps 15 --target-bytes "$bytes" --progress &
  generator=$!
fi
cmake --build "$build" -j "$jobs" --target kaiod kaioctl kaio-hub
if [ -n "$generator" ]; then
  echo "demo: built; waiting for kaio-mkdata to finish the data"
  wait "$generator" || { echo "demo: kaio-mkdata failed; see the lines above" >&2; exit 1; }
  generator=""
  touch "$data/.complete-$bytes"
fi
if [ "${KAIO_DEMO_FRESH:-0}" = 1 ]; then
  echo "demo: starting over (KAIO_DEMO_FRESH=1): the last run's cache and state are removed"
  rm -rf "$run/cache" "$run/state"
elif [ -d "$run/state" ]; then
  echo "demo: carrying on from the last run's state in $run/state (KAIO_DEMO_FRESH=1 make demo starts over)"
else
  echo "demo: starting a new run in $run/"
fi
rm -f "$run/kaiod.sock"

"$bin/tools/kaio-hub/kaio-hub" --root "$run/hub" --port "$port" --cdn-port 0 > "$run/kaio-hub.log" 2>&1 &
hub=$!
# kaiod would retry on its own, but a demo that starts with connection errors reads as broken.
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$hub" 2>/dev/null || { echo "demo: kaio-hub did not start; see $run/kaio-hub.log" >&2; exit 1; }
  sleep 0.1
done

"$bin/daemon/kaiod" --config configs/demo.json > "$run/kaiod.log" 2>&1 &
kaiod=$!
export KAIO_SOCKET="$run/kaiod.sock"
echo "demo: kaiod is running (log: $run/kaiod.log). Watch it from another terminal with"
echo "        $bin/daemon/kaioctl --socket $run/kaiod.sock status --watch"
echo "demo: it stops by itself after $seconds s (KAIO_DEMO_SECONDS); Ctrl-C stops it sooner, and both checkpoint first"

peak=0
first_loss=""
start=$(date +%s)
last_print=0
stopped_by_demo=0
while kill -0 "$kaiod" 2>/dev/null; do
  now=$(date +%s)
  used=$( (du -sB1 "$run/cache" "$run/state" 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
  if [ "$used" -gt "$peak" ]; then peak=$used; fi
  if "$bin/daemon/kaioctl" status --json > "$run/status.tmp" 2>/dev/null; then
    mv "$run/status.tmp" "$run/status.json"
    if [ -z "$first_loss" ]; then
      first_loss=$(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["train"]; print(t["loss"] if t["step"]>0 else "")' "$run/status.json")
    fi
    if [ $((now - last_print)) -ge 15 ]; then
      echo "---- kaioctl status ($((now - start)) s)"
      "$bin/daemon/kaioctl" status 2>/dev/null || true
      last_print=$now
    fi
  fi
  if [ $((now - start)) -ge "$seconds" ]; then
    echo "demo: $seconds s are up, stopping kaiod (it checkpoints first)"
    stopped_by_demo=1
    kill -TERM "$kaiod"
    break
  fi
  sleep 0.5
done
rc=0
wait "$kaiod" 2>/dev/null || rc=$?
kaiod=""
python3 - "$run" "$peak" "${first_loss:-}" "$(( $(date +%s) - start ))" "$stopped_by_demo" "$rc" <<'PY'
import json, os, re, sys
run, peak, first, wall, by_demo, rc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6])
s = json.load(open(os.path.join(run, "status.json")))
log = open(os.path.join(run, "kaiod.log")).read()
deleted = sum(int(n) for n in re.findall(r"durable .*?, (\d+) clips deleted", log))
steps = re.findall(r"checkpoint step (\d+) durable .*?loss ([0-9.]+)", log)
last_step, last_loss = steps[-1] if steps else ("-", "-")
if rc != 0:
    ending = f"stopped with an error (exit {rc}): {s.get('last_error') or 'see the log'}"
elif s.get("state") == "done":
    ending = "done: every epoch trained"
elif by_demo:
    ending = f"stopped by the demo after {wall} s; make demo carries on from here"
else:
    ending = "stopped"
first = f"{float(first):.4f}" if first else "-"
ckdir = os.path.join(run, "state", "checkpoints")
checkpoints = sorted((f for f in os.listdir(ckdir) if f.endswith(".kaiockpt")), key=lambda f: int(re.sub(r"\D", "", f) or 0)) if os.path.isdir(ckdir) else []
files = s.get("files", {})
print("==== demo summary")
print(f"kaiod            {ending}")
print(f"clips            {deleted} streamed, trained and deleted after their checkpoint")
print(f"files            {files.get('done', '-')} done of {files.get('total', '-')}")
print(f"peak disk        {peak/1e6:.1f} MB (du every 0.5 s) / budget {s['budget_bytes']/1e6:.0f} MB")
print(f"loss             {first} at the first step -> {last_loss} at step {last_step} (last checkpoint)")
print(f"samples/s        {s['train']['samples']/max(wall,1):.1f} over {wall} s on {s['train']['backend']}")
print(f"log              {run}/kaiod.log")
print(f"checkpoint       {os.path.join(ckdir, checkpoints[-1]) if checkpoints else '-'}")
PY
