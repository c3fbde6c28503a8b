#!/usr/bin/env bash
# Download speed of `kaioctl fetch` against `curl -o` from a local kaio-hub,
# split downloading against a per-connection throttle, and its peak RSS.
# usage: bench/fetch.sh BUILD_DIR   (KAIO_BENCH_FETCH_SIZE bytes, default 1 GB;
#        KAIO_BENCH_THROTTLE bytes/s per connection, default 20 MB/s)
set -euo pipefail
build="$(cd "${1:-build-release}" && pwd)"
cd "$(dirname "$0")/.."
size="${KAIO_BENCH_FETCH_SIZE:-1000000000}"
throttle="${KAIO_BENCH_THROTTLE:-20000000}"
split=4
hub="$build/tools/kaio-hub/kaio-hub"
fetch=("$build/daemon/kaioctl" fetch)
work="$(mktemp -d /tmp/kaio-bench-fetch.XXXXXX)"
hub_pid=""
cleanup() {
  # Under set -e a failing `wait` (the hub dies of the signal) would end the
  # trap before rm and turn a good run into exit 143.
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/root/bench/data" bench/results
head -c "$size" /dev/urandom > "$work/root/bench/data/big.bin"
throttled_size=$((throttle * 10))  # about 10 s for one throttled connection
head -c "$throttled_size" /dev/urandom > "$work/root/bench/data/throttled.bin"

start_hub() {  # start_hub [extra kaio-hub flags...]
  [ -n "$hub_pid" ] && kill "$hub_pid" && wait "$hub_pid" 2>/dev/null || true
  rm -f "$work/port"
  "$hub" --root "$work/root" --port 0 --port-file "$work/port" "$@" >/dev/null &
  hub_pid=$!
  for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
  port="$(cut -d' ' -f1 "$work/port")"
  url="http://127.0.0.1:$port"
}
now() { date +%s.%N; }
mbps() { python3 -c "print(round($1 / ($3 - $2) / 1e6, 1))"; }

start_hub
t0=$(now)
/usr/bin/time -v -o "$work/time.txt" "${fetch[@]}" --repo bench/data --include big.bin --out "$work/kaio" --endpoint "$url" --log-level warn
t1=$(now)
curl -sSfL -o "$work/curl.bin" "$url/datasets/bench/data/resolve/main/big.bin"
t2=$(now)
# kaio fsyncs before it reports a file done; the same durability for curl:
curl -sSfL -o "$work/curl2.bin" "$url/datasets/bench/data/resolve/main/big.bin" && sync "$work/curl2.bin"
t3=$(now)
cmp -s "$work/kaio/big.bin" "$work/curl.bin" || { echo "fetch bench: downloads differ"; exit 1; }
kaio=$(mbps "$size" "$t0" "$t1")
peer=$(mbps "$size" "$t1" "$t2")
ratio=$(python3 -c "print(round($kaio / $peer, 2))")
echo "download: kaio $kaio MB/s, peer $peer MB/s, ratio $ratio"
durable_peer=$(mbps "$size" "$t2" "$t3")
durable_ratio=$(python3 -c "print(round($kaio / $durable_peer, 2))")
echo "download_durable: kaio $kaio MB/s, peer $durable_peer MB/s (curl -o then sync), ratio $durable_ratio"
rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
rss_mb=$(python3 -c "print(round($rss_kb / 1024, 1))")
echo "download_peak_rss: kaio $rss_mb MiB for a $size-byte file"
rm -rf "$work/kaio" "$work/curl.bin" "$work/curl2.bin"

start_hub --faults "{\"throttle_bps\": $throttle}"
t0=$(now)
"${fetch[@]}" --repo bench/data --include throttled.bin --out "$work/kaio" --endpoint "$url" --split "$split" --split-min-size 1MB --log-level warn
t1=$(now)
split_kaio=$(mbps "$throttled_size" "$t0" "$t1")
split_peer=$(python3 -c "print(round($throttle / 1e6, 1))")
split_ratio=$(python3 -c "print(round($split_kaio / $split_peer, 2))")
split_goal=$(python3 -c "print(0.8 * $split)")
echo "download_split: kaio $split_kaio MB/s, peer $split_peer MB/s (one throttled connection), ratio $split_ratio (goal >= $split_goal with $split parts)"

cat > bench/results/fetch.json <<JSON
[
  {"name": "download MB/s", "kaio": $kaio, "peer": $peer, "ratio": $ratio, "goal": ">= 0.9"},
  {"name": "download_durable MB/s (peer: curl -o then sync)", "kaio": $kaio, "peer": $durable_peer, "ratio": $durable_ratio, "goal": ">= 0.9"},
  {"name": "download_split MB/s (${split} parts, ${split_peer} MB/s per connection)", "kaio": $split_kaio, "peer": $split_peer, "ratio": $split_ratio, "goal": ">= $split_goal"},
  {"name": "download peak RSS MiB ($size B file)", "kaio": $rss_mb, "peer": null, "ratio": null, "goal": "flat"}
]
JSON
