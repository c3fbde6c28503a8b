#!/usr/bin/env bash
# Renders docs/architecture.dot to docs/architecture.svg (committed, so CI
# needs no graphviz). Run after changing the .dot file.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dot >/dev/null; then
  echo "architecture-picture: graphviz's dot not found (apt-get install graphviz)" >&2
  exit 2
fi
dot -Tsvg docs/architecture.dot -o docs/architecture.svg
echo "architecture-picture: wrote docs/architecture.svg"
