#!/usr/bin/env bash
# Decode stage against its peers, in the same run on the same clips:
#   the ffmpeg command line (decode + fps sampling + center crop + scale to
#   224x224 rgb24, same thread count) and PyAV (python3-av) doing the same work.
# Figures (issue 19's goals): native fps; 30 -> 4 fps at 1 thread and at all
# cores (nproc: kaio decodes that many clips at once, like decode.workers; the
# peers get that many decoder threads); 30 -> 1 fps; 30 -> 4 fps per codec
# (H.264 with B-frames, HEVC, VP9, AV1, MPEG-4). Each comes twice: frames per
# wall second, and frames per CPU second (user + system), which other load on
# the machine moves far less; each records the 1-minute load average before
# and after its runs, and says whether its goal is met.
# Usage: bench/decode.sh BUILD_DIR   (writes bench/results/decode.json)
#   DECODE_BENCH_CLIPS (20 clips of 4 s), DECODE_BENCH_THREADS (all cores: nproc),
#   DECODE_BENCH_REPEAT (2: runs of each contender per figure, the best taken)
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
clips="${DECODE_BENCH_CLIPS:-20}"
all_cores="${DECODE_BENCH_THREADS:-$(nproc)}"
repeats="${DECODE_BENCH_REPEAT:-2}"
size=224
# Shards go to /dev/shm when it exists: the figure is the decode work, not the disk.
work="$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out" "$work/runs"

# A set of 640x360 30 fps H.264 clips (kaio-mkdata: libx264, B-frames, a
# keyframe every 2 s) as single MP4 files: $1 name, $2 clips, $3 seconds each.
make_set() {
  "$mkdata" --layout physicalai --out "$work/data-$1" --clips "$2" --clips-per-archive "$2" \
    --seconds "$3" --width 640 --height 360 --fps 30 --seed 1 > /dev/null 2>&1
  mkdir -p "$work/$1"
  python3 -m zipfile -e "$work/data-$1"/camera/*/*.zip "$work/$1"
  rm -rf "$work/data-$1"
}
# 4 s clips for native and 4 fps (one window of 16 frames each); 20 s clips
# (PhysicalAI's length) for 1 fps, where a 4 s clip gives no window.
make_set short "$clips" 4
make_set long 4 20

# The per-codec set: the first 4 short clips transcoded, a keyframe every 2 s
# as kaio-mkdata's, B-frames where the encoder makes them.
declare -A codec_args=(
  [hevc]="-c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=60:bframes=3 -pix_fmt yuv420p -tag:v hvc1"
  [vp9]="-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 1M -g 60"
  [av1]="-c:v libsvtav1 -preset 12 -b:v 600k -g 60"
  [mpeg4]="-c:v mpeg4 -q:v 3 -bf 2 -g 60"
)
codecs=(h264 hevc vp9 av1 mpeg4)
mkdir -p "$work/h264"
mapfile -t short_clips < <(ls "$work"/short/*.mp4)
cp "${short_clips[@]:0:4}" "$work/h264/"
for codec in hevc vp9 av1 mpeg4; do
  mkdir -p "$work/$codec"
  for clip in "$work"/h264/*.mp4; do
    # shellcheck disable=SC2086  # the arguments are words
    ffmpeg -hide_banner -loglevel error -nostdin -y -i "$clip" ${codec_args[$codec]} -an \
      "$work/$codec/$(basename "$clip")" > "$work/encode.log" 2>&1 ||
      { echo "encoding the $codec clips failed:" >&2; cat "$work/encode.log" >&2; exit 1; }
  done
done

now() { date +%s.%N; }
load() { cut -d' ' -f1 /proc/loadavg; }
clips_of() { ls "$work/$1"/*.mp4; }

# $1 set, $2 fps ("native" or a rate), $3 threads; prints {"frames", "seconds", "cpu_seconds"}.
# One ffmpeg process over all clips (concat demuxer), so process start-up is
# not counted against it.
ffmpeg_peer() {
  local fps_filter="" frames start end
  [ "$2" = native ] || fps_filter="fps=$2,"
  clips_of "$1" | sed "s/.*/file '&'/" > "$work/list.txt"
  start=$(now)
  frames=$(/usr/bin/time -f '%U %S' -o "$work/cpu.txt" \
             ffmpeg -hide_banner -nostdin -threads "$3" -filter_threads "$3" -f concat -safe 0 -i "$work/list.txt" \
             -vf "${fps_filter}crop='min(iw,ih)':'min(iw,ih)',scale=$size:$size:flags=bilinear" \
             -f rawvideo -pix_fmt rgb24 -y /dev/null 2>&1 | grep -o 'frame= *[0-9]*' | tail -1 | grep -o '[0-9]*')
  end=$(now)
  read -r user sys < "$work/cpu.txt"
  python3 -c "import json; print(json.dumps({'frames': $frames, 'seconds': $end - $start, 'cpu_seconds': $user + $sys}))"
}

# $1 set, $2 fps, $3 codec threads, $4 workers, [$5 --every-frame]; prints the bench's JSON.
kaio_run() {
  local files
  mapfile -t files < <(clips_of "$1")
  "$bench" --fps "$2" --threads "$3" --workers "$4" "${@:5}" --size "$size" "$work/out" "${files[@]}"
}

# Runs side by side are a group: begin GROUP, then one `measure LABEL
# COMMAND...` per run, then end_group. Each run's JSON goes to
# runs/GROUP.LABEL.REPEAT.json; each repeat appends the load average before
# and after the group's runs to runs/GROUP.load.
begin() { group="$1"; before=$(load); }
measure() { local label="$1"; shift; "$@" > "$work/runs/$group.$label.$repeat.json"; }
end_group() { echo "$before $(load)" >> "$work/runs/$group.load"; }
pyav_peer() {  # $1 set, $2 fps, $3 threads
  local files
  mapfile -t files < <(clips_of "$1")
  "$python" bench/decode/pyav_peer.py "$2" "$size" "$3" "${files[@]}"
}

t=$all_cores
all_groups() {
  begin native_1
  measure kaio kaio_run short native 1 1
  measure ffmpeg ffmpeg_peer short native 1
  end_group
  begin fps4_1
  measure kaio kaio_run short 4 1 1
  measure ffmpeg ffmpeg_peer short 4 1
  measure pyav pyav_peer short 4 1
  measure kaio_full kaio_run short 4 1 1 --every-frame
  end_group
  begin fps4_all
  measure kaio kaio_run short 4 1 "$t"
  measure ffmpeg ffmpeg_peer short 4 "$t"
  measure pyav pyav_peer short 4 "$t"
  end_group
  begin fps1_1
  measure kaio kaio_run long 1 1 1
  measure ffmpeg ffmpeg_peer long 1 1
  measure pyav pyav_peer long 1 1
  measure kaio_full kaio_run long 1 1 1 --every-frame
  end_group
  for codec in "${codecs[@]}"; do
    begin "codec_$codec"
    measure kaio kaio_run "$codec" 4 1 1
    measure ffmpeg ffmpeg_peer "$codec" 4 1
    measure pyav pyav_peer "$codec" 4 1
    measure kaio_full kaio_run "$codec" 4 1 1 --every-frame
    end_group
  done
}
# Each repeat runs every group once more, minutes after the last; the report
# takes each contender's best run (the one other load disturbed least).
for ((repeat = 1; repeat <= repeats; repeat++)); do all_groups; done

python3 bench/decode/report.py "$work/runs" "$t" bench/results/decode.json
