#!/usr/bin/env bash
# The parts of `make test` that are not ctest: short fuzz runs and sanitizer
# runs. Each step prints its figures; any failure fails the test command.
set -euo pipefail
build="${1:-build}"
cd "$(dirname "$0")/.."
for step in scripts/test-extra.d/*.sh; do
  [ -e "$step" ] || continue
  echo "== $step"
  bash "$step" "$build"
done
