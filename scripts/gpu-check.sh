#!/usr/bin/env bash
# Everything a GPU machine should check, in one run bounded to 8 minutes on
# 16 cores and one GPU (docs/training.md): build for the GPU present, the GPU
# tests, the trainer's step benchmark (tiny/small/base, fp32 and bf16) and
# kaiod's data-wait fraction feeding the GPU from a generated dataset.
# Writes gpu-check.json and gpu-check.txt under OUT_DIR (default $OUT, else
# gpu-check-out/). Without a GPU the GPU steps say "skipped: no GPU" and it
# still checks the build; it exits non-zero only when a build or test fails.
# KAIO_GPU_CHECK_DRY_RUN=1 on a machine without a GPU runs the benchmark and
# kaiod steps on the cpu backend at toy sizes instead: a check of the script.
# Usage: scripts/gpu-check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out="$(realpath -m "${1:-${OUT:-gpu-check-out}}")"
build="${KAIO_GPU_CHECK_BUILD:-build-gpu}"
jobs="$(nproc)"
start=$(date +%s)
deadline=$((start + 460))  # 8 minutes less a margin for the summary
mkdir -p "$out/logs"
steps_json="$out/steps.jsonl"
: >"$steps_json"
failed=0
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# The seconds a step may take: its own cap, or what is left before the deadline.
budget() { local left=$((deadline - $(date +%s))); ((left < $1)) && echo $((left > 5 ? left : 5)) || echo "$1"; }
# record NAME STATUS SECONDS [JSON-FIELDS]: one line of steps.jsonl.
record() {
  echo "{\"step\":\"$1\",\"status\":\"$2\",\"seconds\":$3${4:+,$4}}" >>"$steps_json"
  echo "gpu-check: $1: $2 ($3 s)"
}
# run NAME CAP CMD...: runs CMD under timeout into logs/NAME.log and records it.
run() {
  local name=$1 cap=$2 t0 rc status
  shift 2
  t0=$(date +%s)
  timeout --kill-after=10 "$(budget "$cap")" "$@" >"$out/logs/$name.log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status="failed (exit $rc)" ;; esac
  record "$name" "$status" $(($(date +%s) - t0))
  return $rc
}

vendor=none
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  vendor=cuda
elif [ -e /dev/kfd ]; then
  vendor=hip
fi
device="none"
[ $vendor = cuda ] && device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
[ $vendor = hip ] && command -v rocm-smi >/dev/null && device=$(rocm-smi --showproductname 2>/dev/null | grep -m1 -o 'MI[0-9A-Z]*' || echo hip)
# What the benchmark and kaiod run on, and at what sizes.
run_backend=$vendor
bench_cases=("tiny 16 64 8 10" "small 16 224 8 5" "base 16 224 4 3")
data_bytes=60000000
kaiod_train='"model": "small", "batch_size": 8, "bf16": true, "max_steps": 60'
kaiod_decode='"frames": 16, "stride": 16, "fps": 8, "size": 224'
if [ $vendor = none ] && [ "${KAIO_GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  run_backend=cpu
  bench_cases=("tiny 4 32 2 2")
  data_bytes=8000000
  kaiod_train='"model": "tiny", "batch_size": 4, "bf16": false, "max_steps": 8'
  kaiod_decode='"frames": 8, "stride": 8, "fps": 4, "size": 64'
  echo "gpu-check: dry run (KAIO_GPU_CHECK_DRY_RUN=1): the benchmark and kaiod on the cpu backend at toy sizes"
fi
echo "gpu-check: vendor $vendor, device $device, $jobs cores, out $out"

# 1. Build. With no GPU, both vendors' objects where their compilers exist (a
# compile check); with one, only its vendor.
case $vendor in
  cuda) flags=(-DKAIO_CUDA=ON -DKAIO_HIP=OFF) ;;
  hip) flags=(-DKAIO_HIP=ON -DKAIO_CUDA=OFF) ;;
  none) flags=() ;;
esac
targets=(test_gpu_smoke test_train_gpu test_train_overlap kaio_train_bench kaiod kaioctl kaio-hub kaio-mkdata)
run configure 120 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${flags[@]}" || failed=1
[ $failed = 0 ] && { run build-mkdata 120 cmake --build "$build" -j "$jobs" --target kaio-mkdata || failed=1; }
# The dataset for the data-wait run is generated while the rest builds.
data="$out/run/hub/kaio-check/clips"
if [ $failed = 0 ] && [ $run_backend != none ]; then
  rm -rf "$out/run"
  timeout 200 "$build/tools/kaio-mkdata/kaio-mkdata" --layout llava --out "$data" --seed 1 --clips-per-archive 20 \
    --seconds 8 --width 320 --height 240 --fps 15 --target-bytes "$data_bytes" >"$out/logs/mkdata.log" 2>&1 &
  pids+=($!)
fi
[ $failed = 0 ] && { run build 300 cmake --build "$build" -j "$jobs" --target "${targets[@]}" || failed=1; }

# 2. The GPU tests: every op forward and backward against the cpu backend, whole steps, fp32 and bf16.
if [ $failed = 1 ]; then
  record gpu-tests "skipped: the build failed" 0
elif [ $vendor = none ]; then
  record gpu-tests "skipped: no GPU" 0
else
  run gpu-tests 90 ctest --test-dir "$build" -R "gpu|Gpu" --output-on-failure --timeout 80 || failed=1
fi

# 3. The step benchmark: model frames size batch steps, fp32 and bf16.
if [ $failed = 1 ]; then
  record bench "skipped: the build or the GPU tests failed" 0
elif [ $run_backend = none ]; then
  record bench "skipped: no GPU" 0
else
  for c in "${bench_cases[@]}"; do
    read -r model frames size batch steps <<<"$c"
    for precision in fp32 bf16; do
      name="bench-$model-$precision"
      if run "$name" 45 "$build/bench/train/kaio_train_bench" "$model" "$frames" "$size" "$batch" "$steps" 0 \
        "$run_backend" "$precision"; then
        sed -i "s/\"$name\",\"status\":\"ok\"/&,\"result\":$(tail -1 "$out/logs/$name.log")/" "$steps_json"
      fi
    done
  done
  # The fused attention, forward and backward (docs/training.md, off by default), on the second case.
  read -r model frames size batch steps <<<"${bench_cases[1]:-${bench_cases[0]}}"
  name="bench-$model-bf16-fused-attention"
  if run "$name" 45 env KAIO_FUSED_ATTENTION=1 "$build/bench/train/kaio_train_bench" "$model" "$frames" "$size" \
    "$batch" "$steps" 0 "$run_backend" bf16; then
    sed -i "s/\"$name\",\"status\":\"ok\"/&,\"result\":$(tail -1 "$out/logs/$name.log")/" "$steps_json"
  fi
fi

# 4. kaiod feeding the GPU from its own pipeline: kaio-hub on loopback serves
# the generated dataset; kaiod trains `small` until train.max_steps and exits.
data_wait() {
  local port=18917 kaiod
  wait "${pids[0]}" || { echo "kaio-mkdata failed or timed out: see mkdata.log"; return 1; }
  cat >"$out/run/kaiod.json" <<EOF
{
  "source": {"endpoint": "http://127.0.0.1:$port", "repo": "kaio-check/clips", "revision": "main",
             "include": ["**/*.tar.gz"], "captions": ["**/*_cap_processed.json"]},
  "fetch": {"parallel_files": 4},
  "storage": {"cache_dir": "$out/run/cache", "state_dir": "$out/run/state", "budget": "2GB", "free_disk_floor": "1GB"},
  "decode": {$kaiod_decode, "workers": $((jobs > 4 ? jobs - 2 : 2))},
  "train": {"backend": "$run_backend", $kaiod_train, "checkpoint_every": 1000, "log_every": 10, "warmup_steps": 5},
  "control": {"socket": "$out/run/kaiod.sock"}
}
EOF
  "$build/tools/kaio-hub/kaio-hub" --root "$out/run/hub" --port $port --cdn-port 0 >"$out/logs/kaio-hub.log" 2>&1 &
  pids+=($!)
  timeout --kill-after=10 "$(budget 150)" "$build/daemon/kaiod" --config "$out/run/kaiod.json" \
    >"$out/logs/kaiod.log" 2>&1 &
  kaiod=$!
  pids+=("$kaiod")
  # The last status read before kaiod exits at max_steps is the figure.
  while kill -0 "$kaiod" 2>/dev/null; do
    KAIO_SOCKET="$out/run/kaiod.sock" "$build/daemon/kaioctl" status --json >"$out/run/status.tmp" 2>/dev/null &&
      mv "$out/run/status.tmp" "$out/run/status.json"
    sleep 1
  done
  wait "$kaiod"
}
if [ $failed = 1 ]; then
  record data-wait "skipped: the build or the GPU tests failed" 0
elif [ $run_backend = none ]; then
  record data-wait "skipped: no GPU" 0
else
  t0=$(date +%s)
  if data_wait >"$out/logs/data-wait.log" 2>&1; then status=ok; else status="failed (see logs/data-wait.log)"; fi
  fields=""
  [ -f "$out/run/status.json" ] &&
    fields="\"status_train\":$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["train"]))' "$out/run/status.json")"
  record data-wait "$status" $(($(date +%s) - t0)) "$fields"
fi

# The JSON file and the summary.
python3 - "$out" "$vendor" "$device" "$run_backend" $(($(date +%s) - start)) <<'PY'
import json, sys
out, vendor, device, backend, wall = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
steps = [json.loads(line) for line in open(f"{out}/steps.jsonl") if line.strip()]
json.dump({"vendor": vendor, "device": device, "backend": backend, "wall_seconds": wall, "steps": steps},
          open(f"{out}/gpu-check.json", "w"), indent=1)
lines = [f"gpu-check: {vendor} ({device}), benchmark and kaiod on {backend}, {wall} s"]
for s in steps:
    r = s.get("result")
    if r:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] >= 0 else "unknown"
        lines.append(f"  {s['step']:<34} {r['ms']:9.1f} ms a step  {r['tokens_per_s']:10.0f} tokens/s  "
                     f"{r['tflops']:7.2f} TFLOP/s  MFU {mfu}  (batch {r['batch']})")
    elif "status_train" in s:
        t = s["status_train"]
        lines.append(f"  {s['step']:<34} {s['status']}: wait_fraction {t.get('wait_fraction', 0):.3f} over "
                     f"{t.get('step', 0)} steps, {t.get('step_seconds', 0):.3f} s a step, MFU {t.get('mfu', -1)}")
    else:
        lines.append(f"  {s['step']:<34} {s['status']} ({s['seconds']} s)")
open(f"{out}/gpu-check.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
exit $failed
