#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for SECONDS each (default 3600) and
# prints one line per target. Builds build-fuzz with clang (-fsanitize=fuzzer,
# address,undefined). Each run starts from a fresh copy of fuzz/corpus/<target>
# plus fuzz/regressions/<target> inside build-fuzz, so the repository is never
# modified. Exits non-zero when any target crashed, naming the input that did;
# keep it with `cp INPUT fuzz/regressions/<target>/` once the bug is fixed.
#   FUZZ_TARGETS="archive config"  only these targets
#   FUZZ_JOBS=2                    targets run at once (default: 2, at most nproc)
#   FUZZ_BUILD=build-fuzz          build folder
set -euo pipefail
seconds="${1:-3600}"
cd "$(dirname "$0")/.."
build="${FUZZ_BUILD:-build-fuzz}"
jobs="${FUZZ_JOBS:-$(( $(nproc) < 2 ? 1 : 2 ))}"

if ! command -v clang++ >/dev/null || ! command -v clang >/dev/null; then
  echo "fuzz: clang++ not found (scripts/setup.sh installs it)" >&2
  exit 2
fi
targets="${FUZZ_TARGETS:-$(sed -n 's/^kaio_add_fuzzer(\([a-z_0-9]*\) .*/\1/p' fuzz/CMakeLists.txt | tr '\n' ' ')}"

echo "fuzz: building ${targets} in ${build}"
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKAIO_FUZZ=ON \
  -DKAIO_SANITIZE=address,undefined -DKAIO_HIP=OFF -DKAIO_CUDA=OFF -DKAIO_WERROR=OFF >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
build_targets=()
for t in $targets; do build_targets+=("fuzz_$t"); done
build_start=$SECONDS
cmake --build "$build" -j "$jobs" --target "${build_targets[@]}" >"$build/fuzz-build.log" 2>&1 \
  || { tail -50 "$build/fuzz-build.log"; exit 1; }
echo "fuzz: built in $((SECONDS - build_start)) s; running each target for ${seconds} s, ${jobs} at a time"

run_one() {
  local t="$1" work="$build/fuzz-run/$1"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/crashes"
  cp -r "fuzz/corpus/$t/." "$work/corpus/"
  [ -d "fuzz/regressions/$t" ] && find "fuzz/regressions/$t" -type f ! -name 'README*' -exec cp {} "$work/corpus/" \;
  local start=$SECONDS rc=0
  # -timeout: one input running longer is a hang; -rss_limit_mb: one using more is a leak or a bomb.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="print_stacktrace=1" \
    "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  local runs corpus crashes
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  corpus=$(find "$work/corpus" -type f | wc -l)
  crashes=$(find "$work/crashes" -type f | wc -l)
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  local line="fuzz $t: ${runs:-?} runs in $took s, $crashes crashes, corpus $corpus"
  if [ "$crashes" -gt 0 ]; then
    local input
    input=$(find "$work/crashes" -type f | head -1)
    line="$line; crashing input: ${input:-none saved, see $work/log} (log: $work/log)"
  fi
  echo "$line" >"$work/summary"
}

pids=()
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$t" &
  pids+=($!)
done
wait || true

failed=0
for t in $targets; do
  line=$(cat "$build/fuzz-run/$t/summary" 2>/dev/null || echo "fuzz $t: no result")
  echo "$line"
  case "$line" in *" 0 crashes,"*) ;; *) failed=1 ;; esac
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED; reproduce with $build/fuzz/fuzz_TARGET INPUT" >&2
  for t in $targets; do
    case "$(cat "$build/fuzz-run/$t/summary" 2>/dev/null)" in *" 0 crashes,"*) ;; *) grep -m3 -E "ERROR|runtime error|fuzz property|terminate" "$build/fuzz-run/$t/log" >&2 || true ;; esac
  done
  exit 1
fi
