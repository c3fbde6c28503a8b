#!/usr/bin/env bash
# The sanitizer runs in their short form (scripts/sanitize.sh --ci says which
# tests and why); `make sanitize` runs the whole suite under ASan+UBSan and
# every concurrent test under TSan.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang++ >/dev/null; then
  echo "sanitize: skipped: clang++ not installed"
  exit 0
fi
bash scripts/sanitize.sh --ci
