#!/usr/bin/env bash
# clang-tidy (.clang-tidy) on the C++ sources the newest commit touches, any
# warning an error. The whole tree takes too long on 2 cores for every run;
# KAIO_TIDY_BASE=<commit> checks everything changed since that commit.
set -euo pipefail
build="${1:-build}"
cd "$(dirname "$0")/../.."
if ! command -v clang-tidy >/dev/null; then
  echo "tidy: skipped: clang-tidy not installed"
  exit 0
fi
base="${KAIO_TIDY_BASE:-HEAD~1}"
if ! git rev-parse --verify -q "$base" >/dev/null; then
  echo "tidy: skipped: no commit $base to compare with (shallow clone?)"
  exit 0
fi
mapfile -t files < <(git diff --name-only --diff-filter=AM "$base" HEAD -- '*.cpp' | grep -v '^fuzz/' || true)
if [ "${#files[@]}" -eq 0 ]; then
  echo "tidy: no C++ sources changed since $base"
  exit 0
fi
start=$SECONDS
rc=0
out=$(clang-tidy -p "$build" --quiet --warnings-as-errors='*' "${files[@]}" 2>&1) || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "$out" | grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated' >&2
  echo "tidy: FAILED on the ${#files[@]} C++ sources changed since $base" >&2
  exit 1
fi
echo "tidy: ${#files[@]} C++ sources changed since $base are clean ($((SECONDS - start)) s)"
