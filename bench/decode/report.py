#!/usr/bin/env python3
"""Turns bench/decode.sh's runs into figure lines and bench/results/decode.json.

RUNS_DIR holds GROUP.LABEL.REPEAT.json (one run: frames, seconds,
cpu_seconds, and for kaio decoded_frames) and GROUP.load (a line "before
after" per repeat: the 1-minute load average around the group's runs), for
the groups bench/decode.sh runs.
Usage: report.py RUNS_DIR ALL_CORES OUT_JSON
"""
import json
import pathlib
import sys

runs, all_cores, out = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
CODECS = [("h264", "H.264, B-frames"), ("hevc", "HEVC, B-frames"), ("vp9", "VP9"), ("av1", "AV1 (SVT-AV1)"),
          ("mpeg4", "MPEG-4 part 2, B-frames")]
PEERS = {"ffmpeg": "ffmpeg CLI", "pyav": "PyAV", "kaio_full": "kaio decoding every frame"}


def group(name):
    """{label: [run, ...], "load": [before the first run, after the last]}."""
    g = {}
    for f in sorted(runs.glob(name + ".*.*.json")):
        g.setdefault(f.name.split(".")[1], []).append(json.loads(f.read_text()))
    loads = [float(x) for x in (runs / (name + ".load")).read_text().split()]
    g["load"] = [loads[0], loads[-1]]
    return g


# Each contender's best of its runs: the one other load on the machine disturbed least.
def rate(runs_of):
    return max(r["frames"] / r["seconds"] for r in runs_of)


def cpu_rate(runs_of):
    return max(r["frames"] / r["cpu_seconds"] for r in runs_of)


def decoded(g, label):
    return g[label][0]["decoded_frames"]


def verdict(ratio, goal):
    """Judged on the ratio as printed (2 decimals), so that a printed 2.0 never reads "missed"."""
    return None if goal is None else ("met" if round(ratio, 2) >= goal else "missed")


def row(name, g, peer, goal, cpu=False):
    measure = cpu_rate if cpu else rate
    kaio, other = measure(g["kaio"]), measure(g[peer])
    ratio = kaio / other
    return {"name": name + ("_cpu" if cpu else ""), "runs": len(g["kaio"]), "kaio": round(kaio, 1),
            "peer": round(other, 1), "peer_is": PEERS[peer], "ratio": round(ratio, 2),
            "unit": "frames per CPU s" if cpu else "frames/s",
            "goal": None if goal is None else f">= {goal}", "verdict": verdict(ratio, goal), "load": g["load"]}


def both(name, g, peer, goal):
    return [row(name, g, peer, goal), row(name, g, peer, goal, cpu=True)]


native, fps4_1, fps4_all, fps1 = group("native_1"), group("fps4_1"), group("fps4_all"), group("fps1_1")
figures = (both("decode_native_ffmpeg_1thread", native, "ffmpeg", 1.0)
           + both("decode_30to4_ffmpeg_1thread", fps4_1, "ffmpeg", 2.0)
           + both("decode_30to4_pyav_1thread", fps4_1, "pyav", 2.5)
           + both("decode_30to4_ffmpeg_all_cores", fps4_all, "ffmpeg", 2.0)
           + both("decode_30to4_pyav_all_cores", fps4_all, "pyav", 2.5)
           + both("decode_30to1_ffmpeg_1thread", fps1, "ffmpeg", 4.0)
           + both("decode_30to1_pyav_1thread", fps1, "pyav", None))
# What the shortcuts (frames no sample needs are not decoded) save over kaio's own full decode.
for name, g in (("decode_30to4_shortcuts", fps4_1), ("decode_30to1_shortcuts", fps1)):
    r = row(name, g, "kaio_full", None)
    r["decoded"] = f"{decoded(g, 'kaio')} of {decoded(g, 'kaio_full')} frames"
    figures.append(r)
for r in figures:
    r["threads"] = all_cores if "_all_cores" in r["name"] else 1

columns = ["codec", "kaio frames/s", "ffmpeg CLI", "ratio", "PyAV", "ratio", "per CPU s: vs ffmpeg", "vs PyAV",
           "frames decoded", "goal >= 2 x ffmpeg", "load before / after"]
table = []
for codec, label in CODECS:
    g = group("codec_" + codec)
    wall = rate(g["kaio"]) / rate(g["ffmpeg"])
    table.append([label, round(rate(g["kaio"]), 1), round(rate(g["ffmpeg"]), 1), round(wall, 2),
                  round(rate(g["pyav"]), 1), round(rate(g["kaio"]) / rate(g["pyav"]), 2),
                  round(cpu_rate(g["kaio"]) / cpu_rate(g["ffmpeg"]), 2),
                  round(cpu_rate(g["kaio"]) / cpu_rate(g["pyav"]), 2),
                  f"{decoded(g, 'kaio')} of {decoded(g, 'kaio_full')}", verdict(wall, 2.0),
                  " / ".join(str(x) for x in g["load"])])

repeats = len(fps4_1["kaio"])
print(f"each figure: each contender's best of {repeats} run(s); all cores: {all_cores} threads")
for r in figures:
    goal = f" (goal {r['goal']}: {r['verdict']})" if r["goal"] else ""
    extra = f", {r['decoded']} decoded" if "decoded" in r else ""
    print(f"{r['name']}: kaio {r['kaio']} {r['unit']}, {r['peer_is']} {r['peer']}, ratio {r['ratio']}{goal}{extra} "
          f"(load {r['load'][0]} -> {r['load'][1]})")
name = "decode per codec, 30 -> 4 fps, 1 thread (up to 4 clips of 4 s, 640x360)"
print(name)
for line in table:
    print("  " + ", ".join(f"{c}: {v}" for c, v in zip(columns, line)))
peak = max(r["peak_rss_kb"] for g in (native, fps4_1, fps4_all, fps1) for r in g["kaio"])
print(f"peak RSS: kaio {peak / 1024:.1f} MiB")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"figures": figures, "tables": {name: {"columns": columns, "rows": table}}}, indent=2)
               + "\n")
