#!/usr/bin/env bash
# Every fuzz target for KAIO_TEST_FUZZ_SECONDS (20) each, from the seed corpus and the
# kept regressions; `make fuzz` is the long form (an hour each).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: skipped: clang++ or libFuzzer (libclang-rt-14-dev) not installed"
  exit 0
fi
bash scripts/fuzz.sh "${KAIO_TEST_FUZZ_SECONDS:-20}"
