#!/usr/bin/env bash
# End to end: kaiod against the sequential Python baseline (bench/e2e/baseline.py)
# on the same generated dataset, served by the same kaio-hub on loopback, under
# the same budget; kaiod's pipeline efficiency; and the same kaiod run at 1x,
# 4x and 16x the dataset size under that one budget.
#
# Usage: bench/e2e.sh BUILD_DIR  -> bench/results/e2e.json, e2e.png, e2e/ (raw samples)
#   KAIO_BENCH_E2E_BASE    bytes of mp4 at 1x (default 24000000)
#   KAIO_BENCH_E2E_SCALES  sizes to run (default "1 4 16")
#   KAIO_BENCH_E2E_COMPARE the size the baseline, the stages alone and the plot use (default 4)
#   KAIO_BENCH_E2E_BUDGET  storage.budget in bytes for every run (default 24000000)
# The generated data is kept in BUILD_DIR/bench-e2e-data and reused by later runs.
set -euo pipefail
build="$(cd "${1:-build-release}" && pwd)"
cd "$(dirname "$0")/.."
root="$(pwd)"
base="${KAIO_BENCH_E2E_BASE:-24000000}"
scales="${KAIO_BENCH_E2E_SCALES:-1 4 16}"
compare="${KAIO_BENCH_E2E_COMPARE:-4}"
budget="${KAIO_BENCH_E2E_BUDGET:-24000000}"
python=/usr/bin/python3  # Debian's, where python3-av, numpy and matplotlib live

die() { echo "e2e bench: $*" >&2; exit 1; }
kaiod="$build/daemon/kaiod"
kaioctl="$build/daemon/kaioctl"
hub="$build/tools/kaio-hub/kaio-hub"
mkdata="$build/tools/kaio-mkdata/kaio-mkdata"
train_bench="$build/bench/train/kaio_train_bench"
train_pipe="$build/bench/e2e/kaio-train-pipe"
decode_stage="$build/bench/e2e/kaio-decode-stage"
for tool in "$kaiod" "$kaioctl" "$hub" "$mkdata" "$train_bench" "$train_pipe" "$decode_stage"; do
  [ -x "$tool" ] || die "missing $tool: build $build first (make bench does)"
done
"$python" -c "import av, numpy, matplotlib" 2>/dev/null || die "$python lacks av, numpy or matplotlib: run scripts/setup.sh"
case " $scales " in *" $compare "*) ;; *) die "KAIO_BENCH_E2E_COMPARE=$compare is not one of KAIO_BENCH_E2E_SCALES=\"$scales\"" ;; esac
max_scale=$(printf '%s\n' $scales | sort -n | tail -1)

results="$root/bench/results"
raw="$results/e2e"
mkdir -p "$raw"
rm -f "$raw"/*
work="$(mktemp -d /tmp/kaio-bench-e2e.XXXXXX)"
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- data: the largest size once (kept between runs), smaller ones are its
# first archives, hard-linked into their own repos.
data="$build/bench-e2e-data"
full_bytes=$((base * max_scale))
full="$data/full-$full_bytes"
# A larger dataset made earlier with the same settings starts with the same
# archives (kaio-mkdata is deterministic in its seed): use its first ones.
for f in "$data"/full-*/.complete; do
  [ -f "$f" ] || continue
  have="$(basename "$(dirname "$f")")"; have="${have#full-}"
  if [ "$have" -gt "$full_bytes" ] && [ ! -f "$full/.complete" ]; then full="$data/full-$have"; fi
done
if [ ! -f "$full/.complete" ]; then
  echo "e2e: generating $((full_bytes / 1000000)) MB of H.264 clips with kaio-mkdata (once; kept in $data)"
  rm -rf "$full"
  mkdir -p "$data"
  "$mkdata" --layout llava --out "$full" --seed 1 --clips-per-archive 4 --seconds 8 \
    --width 640 --height 360 --fps 30 --target-bytes "$full_bytes" > "$data/mkdata.log" 2>&1 \
    || { cat "$data/mkdata.log" >&2; die "kaio-mkdata failed"; }
  touch "$full/.complete"
fi
mapfile -t archives < <(cd "$full" && ls */*.tar.gz | sort -V)
[ "${#archives[@]}" -gt 0 ] || die "no archives in $full"
have_bytes="${full##*/full-}"
for s in $scales; do
  # The first archives that add up to s x base (in proportion to the whole set).
  n=$(( (${#archives[@]} * s * base + have_bytes - 1) / have_bytes ))
  [ "$n" -ge 1 ] || n=1
  repo_dir="$work/hub/bench/e2e-${s}x"
  for a in "${archives[@]:0:$n}"; do
    mkdir -p "$repo_dir/$(dirname "$a")"
    ln "$full/$a" "$repo_dir/$a" 2>/dev/null || cp "$full/$a" "$repo_dir/$a"
  done
  echo "{\"archives\": $n, \"bytes\": $(cd "$repo_dir" && stat -c %s */*.tar.gz | awk '{s+=$1} END {print s}')}" > "$raw/dataset-${s}x.json"
done

"$hub" --root "$work/hub" --port 0 --port-file "$work/port" > "$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 600); do [ -s "$work/port" ] && break; kill -0 "$hub_pid" 2>/dev/null || break; sleep 0.1; done
[ -s "$work/port" ] || { cat "$work/hub.log" >&2; die "kaio-hub did not start"; }
endpoint="http://127.0.0.1:$(cut -d' ' -f1 "$work/port")"

# The bench config: tiny model on the cpu backend, one epoch, every core for
# the trainer, two decode workers, the budget given in bytes.
write_config() {  # write_config SCALE DIR -> DIR/kaiod.json
  "$python" - "$endpoint" "$1" "$2" "$budget" <<'PY'
import json, sys
endpoint, scale, d, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = {
    "source": {"endpoint": endpoint, "repo": f"bench/e2e-{scale}x", "include": ["**/*.tar.gz"]},
    "fetch": {"parallel_files": 2, "stall_timeout": "10s"},
    "storage": {"cache_dir": f"{d}/cache", "state_dir": f"{d}/state", "budget": budget, "free_disk_floor": "100MB"},
    "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 64, "workers": 2, "codec_threads": 1},
    "train": {"backend": "cpu", "model": "tiny", "batch_size": 8, "lr": 0.001, "warmup_steps": 20,
              "checkpoint_every": 25, "epochs": 1, "seed": 1, "threads": 0},
    "control": {"socket": f"{d}/kaiod.sock"},
    # debug: bench/e2e/report.py counts the windows from the per-clip lines.
    "log": {"level": "debug"},
}
json.dump(config, open(f"{d}/kaiod.json", "w"), indent=1)
PY
}

# A run that fails or stalls (no progress for 60 s) is reported and the other
# sizes still run; the script exits 1 at the end.
failed=0
run_kaiod() {  # run_kaiod SCALE -> $raw/kaiod-SCALEx.{jsonl,summary.json,log}
  local s=$1 d="$work/kaiod-${s}x" log="$raw/kaiod-${s}x.log"
  mkdir -p "$d"
  write_config "$s" "$d"
  "$kaiod" --check-config "$d/kaiod.json" > /dev/null || die "kaiod rejects the bench config $d/kaiod.json"
  echo "e2e: kaiod at ${s}x ($(du -sm "$work/hub/bench/e2e-${s}x" | cut -f1) MB, budget $((budget / 1000000)) MB)"
  if ! "$python" bench/e2e/monitor.py --out "$raw/kaiod-${s}x.jsonl" --summary "$raw/kaiod-${s}x.summary.json" \
      --dir "$d/cache" --dir "$d/state" --hub "$endpoint" --kaioctl "$kaioctl" --socket "$d/kaiod.sock" \
      --stall-seconds 60 -- "$kaiod" --config "$d/kaiod.json" 2> "$log"; then
    why="$(grep -h '^monitor: ' "$log" | tail -1 || true)"  # none when kaiod itself died
    echo "${why:-kaiod exited with an error: $(tail -1 "$log")}" > "$raw/failed-${s}x.txt"
    echo "e2e bench: FAILED: kaiod at ${s}x: $(cat "$raw/failed-${s}x.txt") (log: $log)" >&2
    failed=1
  elif ! grep -q "training done" "$log"; then
    echo "kaiod exited without finishing its epoch" > "$raw/failed-${s}x.txt"
    echo "e2e bench: FAILED: kaiod at ${s}x exited without finishing its epoch (log: $log)" >&2
    failed=1
  fi
  rm -rf "$d/cache" "$d/state"
}

for s in $scales; do run_kaiod "$s"; done

# ---- the sequential baseline at the comparison size
d="$work/baseline"
mkdir -p "$d"
write_config "$compare" "$d"
echo "e2e: sequential Python baseline at ${compare}x"
"$python" bench/e2e/monitor.py --out "$raw/baseline.jsonl" --summary "$raw/baseline.summary.json" \
  --dir "$d/cache" --dir "$d/state" --hub "$endpoint" \
  -- "$python" bench/e2e/baseline.py "$d/kaiod.json" "$train_pipe" "$d" > "$raw/baseline.out" 2> "$raw/baseline.log" \
  || { tail -20 "$raw/baseline.log" >&2; die "the baseline failed (log: $raw/baseline.log)"; }
rm -rf "$d/cache" "$d/state"

# ---- each of kaiod's stages alone on the same data (pipeline efficiency)
d="$work/stages"
mkdir -p "$d"
write_config "$compare" "$d"
echo "e2e: stages alone at ${compare}x: download, decode, train"
now() { date +%s.%N; }
t0=$(now)
"$kaioctl" fetch --repo "bench/e2e-${compare}x" --include '**/*.tar.gz' --out "$d/files" --endpoint "$endpoint" \
  --parallel 2 --log-level warn || die "download alone (kaioctl fetch) failed"
t1=$(now)
echo "{\"seconds\": $("$python" -c "print(round($t1 - $t0, 4))")}" > "$raw/stage-download.json"
mapfile -t local_archives < <(cd "$d/files" && ls */*.tar.gz | sort -V)
"$decode_stage" "$d/kaiod.json" "$d/work" "${local_archives[@]/#/$d/files/}" > "$raw/stage-decode.json" \
  || die "decode alone (kaio-decode-stage) failed"
windows=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['windows'])" "$raw/stage-decode.json")
steps=$(( (windows + 7) / 8 ))
"$train_bench" tiny 8 64 8 "$(( steps < 40 ? steps : 40 ))" 0 cpu > "$raw/stage-train.json" || die "train alone (kaio_train_bench) failed"
rm -rf "$d"

"$python" bench/e2e/report.py "$raw" "$budget" "$compare" "$scales" "$results" || die "report failed"
[ "$failed" = 0 ] || die "some kaiod runs failed or stalled: $(cat "$raw"/failed-*.txt | tr '\n' ' ')"
