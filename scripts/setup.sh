#!/usr/bin/env bash
# Installs everything kaio needs to build, test, benchmark and run the demo on
# Debian 12 / Ubuntu. Idempotent: packages already present are left alone.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake pkg-config ccache git clang clang-format clang-tidy
  libclang-rt-14-dev libomp-dev
  libcurl4-openssl-dev libssl-dev libarchive-dev
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev ffmpeg
  libsqlite3-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libsystemd-dev systemd
  libcpp-httplib-dev dpkg-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev
  libopenmpi-dev openmpi-bin
  hipcc libamdhip64-dev
  curl time python3 python3-numpy python3-av python3-matplotlib python3-prometheus-client
  python3-torch python3-torchvision
  nodejs npm
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# node and npm may come from elsewhere (nodesource, nvm); only install if absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official Hub JavaScript client, used by the kaio-hub fidelity test.
here="$(cd "$(dirname "$0")/.." && pwd)"
if command -v npm >/dev/null && [ ! -d "$here/tests/tools/kaio-hub/node_modules/@huggingface/hub" ]; then
  (cd "$here/tests/tools/kaio-hub" && npm install --no-audit --no-fund --silent >/dev/null) \
    || echo "setup: npm install of @huggingface/hub failed; its test will be skipped"
fi
echo "setup: ok"
