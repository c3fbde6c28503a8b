#!/usr/bin/env bash
# Fails when a tracked C++ source differs from .clang-format; `make format` fixes it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "format: clang-format not found (scripts/setup.sh installs it)" >&2
  exit 2
fi
bad=()
while IFS= read -r f; do
  clang-format "$f" | cmp -s - "$f" || bad+=("$f")
done < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' '*.hip')
if [ "${#bad[@]}" -gt 0 ]; then
  echo "format: ${#bad[@]} files differ from .clang-format (run make format):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "format: every tracked C++ source matches .clang-format"
