#!/usr/bin/env bash
# Decode stage against its peers, in the same run on the same clips:
#   the ffmpeg command line (decode + fps sampling + center crop + scale to
#   rgb24, same thread count) and PyAV (python3-av) doing the same work.
# Each figure comes twice: frames per wall second, and frames per CPU second
# (user + system), which other load on the machine moves far less.
# Usage: bench/decode.sh BUILD_DIR   (writes bench/results/decode.json)
set -euo pipefail
build="${1:?usage: bench/decode.sh BUILD_DIR}"
cd "$(dirname "$0")/.."
bench="$build/bench/decode/kaio-decode-bench"
mkdata="$build/tools/kaio-mkdata/kaio-mkdata"
for tool in "$bench" "$mkdata"; do
  [ -x "$tool" ] || { echo "missing $tool: build the kaio-decode-bench and kaio-mkdata targets" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (Debian package time): it measures the ffmpeg peer's CPU time" >&2; exit 1; }
python=/usr/bin/python3  # Debian's, where python3-av and python3-numpy live
threads="${DECODE_BENCH_THREADS:-1}"
clips="${DECODE_BENCH_CLIPS:-20}"
size=224
# Shards go to /dev/shm when it exists: the figure is the decode work, not the disk.
work="$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 20 clips of 640x360 at 30 fps, 4 s each, as single MP4 files.
"$mkdata" --layout physicalai --out "$work/data" --clips "$clips" --clips-per-archive "$clips" \
  --seconds 4 --width 640 --height 360 --fps 30 --seed 1 > /dev/null
mkdir -p "$work/clips" "$work/out"
python3 -m zipfile -e "$work"/data/camera/*/*.zip "$work/clips"
mapfile -t files < <(ls "$work"/clips/*.mp4)

now() { date +%s.%N; }

# One ffmpeg process over all clips (concat demuxer), so process start-up is
# not counted against it.
printf "file '%s'\n" "${files[@]}" > "$work/list.txt"
ffmpeg_peer() {  # $1: fps filter ("" for native); prints {"frames", "seconds", "cpu_seconds"}
  local fps_filter="$1" frames start end
  start=$(now)
  frames=$(/usr/bin/time -f '%U %S' -o "$work/cpu.txt" \
             ffmpeg -hide_banner -nostdin -threads "$threads" -filter_threads 1 -f concat -safe 0 -i "$work/list.txt" \
             -vf "${fps_filter}crop='min(iw,ih)':'min(iw,ih)',scale=$size:$size:flags=bilinear" \
             -f rawvideo -pix_fmt rgb24 -y /dev/null 2>&1 | grep -o 'frame= *[0-9]*' | tail -1 | grep -o '[0-9]*')
  end=$(now)
  read -r user sys < "$work/cpu.txt"
  python3 -c "import json; print(json.dumps({'frames': $frames, 'seconds': $end - $start, 'cpu_seconds': $user + $sys}))"
}

kaio_run() {  # $1: --fps value; prints the bench's JSON
  "$bench" --fps "$1" --threads "$threads" --size "$size" "$work/out" "${files[@]}"
}

kaio_native=$(kaio_run native)
kaio_4=$(kaio_run 4)
peer_native=$(ffmpeg_peer "")
peer_4=$(ffmpeg_peer "fps=4,")
pyav_4=$("$python" bench/decode/pyav_peer.py 4 "$size" "$threads" "${files[@]}")

python3 - "$kaio_native" "$kaio_4" "$peer_native" "$peer_4" "$pyav_4" <<'PY'
import json, pathlib, sys
kn, k4, pn, p4, py4 = sys.argv[1:6]
kn, k4, py4 = json.loads(kn), json.loads(k4), json.loads(py4)
pn, p4 = json.loads(pn), json.loads(p4)
rate = lambda d: d["frames"] / d["seconds"]
# Frames per CPU second: the work each one does, whatever else the machine runs.
cpu_rate = lambda d: d["frames"] / d["cpu_seconds"]
rows = [
    ("decode_native", rate(kn), rate(pn), 1.0),
    ("decode_30to4", rate(k4), rate(p4), 1.5),
    ("decode_vs_pyav", rate(k4), rate(py4), 2.0),
    ("decode_native_cpu", cpu_rate(kn), cpu_rate(pn), 1.0),
    ("decode_30to4_cpu", cpu_rate(k4), cpu_rate(p4), 1.5),
    ("decode_vs_pyav_cpu", cpu_rate(k4), cpu_rate(py4), 2.0),
]
out = []
for name, kaio, peer, goal in rows:
    ratio = kaio / peer
    unit = "frames per CPU s" if name.endswith("_cpu") else "frames/s"
    print(f"{name}: kaio {kaio:.1f} {unit}, peer {peer:.1f}, ratio {ratio:.2f} (goal >= {goal})")
    out.append({"name": name, "kaio": round(kaio, 1), "peer": round(peer, 1), "ratio": round(ratio, 2), "goal": f">= {goal}"})
print(f"peak RSS: kaio {max(kn['peak_rss_kb'], k4['peak_rss_kb']) / 1024:.1f} MiB")
pathlib.Path("bench/results").mkdir(parents=True, exist_ok=True)
pathlib.Path("bench/results/decode.json").write_text(json.dumps(out, indent=2) + "\n")
PY
