#!/usr/bin/env python3
"""Turns bench/e2e.sh's raw measurements into figures: prints one line per
figure, writes RESULTS/e2e.json (figures + the scale table) and RESULTS/e2e.png.

Usage: report.py RAW_DIR BUDGET_BYTES COMPARE_SCALE "SCALES" RESULTS_DIR

Pipeline efficiency: kaiod's samples/s over its whole run (windows trained /
wall time, start-up included) divided by the samples/s of its slowest stage
run alone on the same data: download alone (kaioctl fetch, same parallelism;
windows of the dataset / seconds), decode alone (kaio-decode-stage: the same
ArchiveDecoder and workers on archives already on disk) and train alone
(kaio_train_bench: the same model, batch and threads). 1.0 means the stages
overlap perfectly and the pipeline runs at its bottleneck's speed. On a
machine where decode and training share the same cores, each stage alone has
every core to itself, so 1.0 is out of reach there by construction.
"""
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw = pathlib.Path(sys.argv[1])
budget = int(sys.argv[2])
compare = sys.argv[3]
scales = sys.argv[4].split()
results = pathlib.Path(sys.argv[5])
MB, MiB = 1e6, 1024 * 1024


def load_jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def kaiod_run(scale):
    failed = raw / f"failed-{scale}x.txt"
    summary = json.load(open(raw / f"kaiod-{scale}x.summary.json"))
    log = open(raw / f"kaiod-{scale}x.log").read()
    windows = sum(int(w) for w in re.findall(r": (\d+) windows, \d+ bytes in ", log))
    steps = re.findall(r"training done: step (\d+)", log)
    files = re.search(r"pinned at \S+: (\d+) files", log)
    samples = load_jsonl(raw / f"kaiod-{scale}x.jsonl")
    last = [s["status"] for s in samples if "status" in s]
    total_files = last[-1]["files"]["total"] if last else (int(files.group(1)) if files else 0)
    return {"scale": scale, "failed": failed.read_text().strip() if failed.exists() else None, "wall": summary["wall_s"], "peak_disk": summary["peak_disk_bytes"],
            "final_disk": summary["final_disk_bytes"], "peak_rss": summary["peak_rss_bytes"], "windows": windows,
            "steps": int(steps[-1]) if steps else 0, "files": total_files, "samples": samples,
            "dataset": json.load(open(raw / f"dataset-{scale}x.json"))["bytes"]}


runs = {s: kaiod_run(s) for s in scales}
k = runs[compare]
base_summary = json.load(open(raw / "baseline.summary.json"))
base_out = json.loads(open(raw / "baseline.out").read().strip().splitlines()[-1])
stage_download = json.load(open(raw / "stage-download.json"))
stage_decode = json.load(open(raw / "stage-decode.json"))
stage_train = json.load(open(raw / "stage-train.json"))

figures, lines = [], []


def figure(name, kaio, peer, ratio, unit, goal, note=""):
    figures.append({"name": name, "kaio": kaio, "peer": peer, "ratio": ratio, "goal": goal, "unit": unit})
    peer_text = f", peer {peer} {unit}" if peer is not None else ""
    ratio_text = f", ratio {ratio}" if ratio is not None else ""
    kaio_text = "FAILED" if kaio is None else f"{kaio} {unit}"
    lines.append(f"{name}: kaio {kaio_text}{peer_text}{ratio_text}{' (' + note + ')' if note else ''}"
                 f"{' goal ' + goal if goal else ''}")


windows = stage_decode["windows"]
stage_sps = {
    "download": windows / stage_download["seconds"],
    "decode": windows / stage_decode["seconds"],
    "train": stage_train["samples_per_s"],
}
slowest = min(stage_sps, key=stage_sps.get)
alone = ", ".join(f"{n} {v:.1f}" for n, v in stage_sps.items())
peer_note = "peer: sequential Python, urllib + tarfile + PyAV + the same trainer step"
if k["failed"]:
    # Nothing to set against the baseline and the stages; they are still shown.
    figure(f"e2e_wall_{compare}x", None, round(base_summary["wall_s"], 1), None, "s", ">= 3 (ratio = peer / kaio)",
           f"kaiod FAILED: {k['failed']}; {peer_note}")
    figure("pipeline_efficiency", None, round(stage_sps[slowest], 1), None, "samples/s", ">= 0.9",
           f"kaiod FAILED; stages alone: {alone}")
else:
    if base_out["windows"] != k["windows"]:
        print(f"e2e warning: kaiod trained {k['windows']} windows, the baseline {base_out['windows']}", file=sys.stderr)
    figure(f"e2e_wall_{compare}x", round(k["wall"], 1), round(base_summary["wall_s"], 1),
           round(base_summary["wall_s"] / k["wall"], 2), "s", ">= 3 (ratio = peer / kaio)",
           f"{k['dataset'] / MB:.0f} MB, {k['windows']} windows, budget {budget / MB:.0f} MB; {peer_note}")
    figure(f"e2e_peak_disk_{compare}x", round(k["peak_disk"] / MB, 1), round(base_summary["peak_disk_bytes"] / MB, 1),
           round(k["peak_disk"] / max(base_summary["peak_disk_bytes"], 1), 2), "MB",
           f"<= budget {budget / MB:.0f} MB", "sampled every 20 ms under cache and state")
    figure(f"e2e_peak_rss_{compare}x", round(k["peak_rss"] / MiB, 1), round(base_summary["peak_rss_bytes"] / MiB, 1),
           round(k["peak_rss"] / max(base_summary["peak_rss_bytes"], 1), 2), "MiB", "<= 512 MiB",
           "peer: python + its trainer process")
    kaiod_sps = k["windows"] / k["wall"]
    figure("pipeline_efficiency", round(kaiod_sps, 1), round(stage_sps[slowest], 1),
           round(kaiod_sps / stage_sps[slowest], 2), "samples/s", ">= 0.9",
           f"peer: slowest stage alone, {slowest}; alone: {alone}")

# Scale: the same run at every size under one budget; time per GB and RSS
# against the smallest size (linear time keeps the first at 1, flat RSS the second).
first = runs[scales[0]]
first_s_per_gb = first["wall"] / (first["dataset"] / 1e9)
table = {"columns": ["size", "dataset MB", "wall s", "windows", "peak disk MB", "budget MB", "peak RSS MiB",
                     "s per GB", "s per GB vs 1st"], "rows": []}
for s in scales:
    r = runs[s]
    s_per_gb = r["wall"] / (r["dataset"] / 1e9)
    wall = f"FAILED after {r['wall']:.0f} s: {r['failed']}" if r["failed"] else round(r["wall"], 1)
    table["rows"].append([f"{s}x", round(r["dataset"] / MB, 1), wall, r["windows"],
                          round(r["peak_disk"] / MB, 1), round(budget / MB, 1), round(r["peak_rss"] / MiB, 1),
                          None if r["failed"] else round(s_per_gb, 1),
                          None if r["failed"] or first["failed"] else round(s_per_gb / first_s_per_gb, 2)])
    if s != scales[0] and not r["failed"] and not first["failed"]:
        figure(f"scale_{s}x_s_per_GB", round(s_per_gb, 1), round(first_s_per_gb, 1),
               round(s_per_gb / first_s_per_gb, 2), "s/GB", "~1.0 (linear)", f"peer: the {scales[0]}x run")
        figure(f"scale_{s}x_peak_rss", round(r["peak_rss"] / MiB, 1), round(first["peak_rss"] / MiB, 1),
               round(r["peak_rss"] / first["peak_rss"], 2), "MiB", "~1.0 (flat), <= 512 MiB",
               f"peer: the {scales[0]}x run")
    figure(f"scale_{s}x_peak_disk", round(r["peak_disk"] / MB, 1), round(budget / MB, 1),
           round(r["peak_disk"] / budget, 2), "MB", "< 1.0 (peer: the budget)",
           f"FAILED: {r['failed']}" if r["failed"] else "")

for line in lines:
    print(line)
width = [max(len(str(c)) for c in col) for col in zip(table["columns"], *table["rows"])]
for row in [table["columns"], *table["rows"]]:
    print("  ".join(str(c).rjust(w) for c, w in zip(row, width)))


# ---- the plot of the comparison-size run over time
def rate(points):
    """Per-second rate between successive (t, counter) points."""
    return [((t0 + t1) / 2, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in zip(points, points[1:]) if t1 > t0]


def smooth(points, width=2):
    """Moving average over +-width points: 0.5 s samples of a step counter are jumpy."""
    out = []
    for i, (t, _) in enumerate(points):
        window = points[max(0, i - width):i + width + 1]
        out.append((t, sum(v for _, v in window) / len(window)))
    return out


def series(samples, key):
    return [(s["t"], key(s)) for s in samples if key(s) is not None]


def hub_bytes(s):
    return s.get("hub_bytes_sent")


def disk(s):
    return s.get("disk")


base_samples = load_jsonl(raw / "baseline.jsonl")
ks = k["samples"]
status = [(s["t"], s["status"]) for s in ks if "status" in s]
fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
ax = axes[0]
for samples, label, style in ((ks, "kaiod", "-"), (base_samples, "sequential Python baseline", ":")):
    pts = series(samples, disk)
    ax.plot([t for t, _ in pts], [v / MB for _, v in pts], style, label=label)
ax.axhline(budget / MB, color="red", linestyle="--", label=f"budget {budget / MB:.0f} MB")
ax.set_ylabel("disk used, MB")
ax.set_title(f"kaiod end to end, {k['dataset'] / MB:.0f} MB dataset ({compare}x), tiny model, cpu backend"
             + (" - FAILED: " + k["failed"][:60] if k["failed"] else ""))
ax.legend(loc="upper right", fontsize=8)
ax = axes[1]
for samples, label, style in ((ks, "kaiod", "-"), (base_samples, "sequential Python baseline", ":")):
    pts = rate(series(samples, hub_bytes))
    ax.plot([t for t, _ in pts], [v / MB for _, v in pts], style, label=label)
ax.set_ylabel("download, MB/s\n(kaio-hub bytes sent)")
ax.legend(loc="upper right", fontsize=8)
ax = axes[2]
pts = smooth(rate([(t, st["train"]["samples"]) for t, st in status]))
ax.plot([t for t, _ in pts], [v for _, v in pts], label="kaiod (status train.samples, 2.5 s average)")
ax.axhline(stage_sps["train"], color="gray", linestyle="--", label=f"trainer alone {stage_sps['train']:.0f}/s")
ax.set_ylabel("trainer samples/s")
ax.legend(loc="upper right", fontsize=8)
ax = axes[3]
ax.plot([t for t, _ in status], [st["train"]["wait_fraction"] for _, st in status], label="kaiod (cumulative)")
ax.set_ylabel("trainer wait fraction")
ax.set_ylim(0, 1)
ax.set_xlabel("seconds since start (each run from its own start)")
ax.legend(loc="upper right", fontsize=8)
fig.tight_layout()
fig.savefig(results / "e2e.png", dpi=100)

(results / "e2e.json").write_text(json.dumps({"figures": figures, "tables": {"e2e_scale": table},
                                              "plots": ["e2e.png"]}, indent=2) + "\n")
