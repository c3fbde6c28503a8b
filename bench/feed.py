#!/usr/bin/env python3
"""What the CPU side can feed a fast GPU (issue 19), with the GPU stood in for.

Three runs on one kaio-mkdata dataset (640x360 30 fps clips in tar.gz) served
by kaio-hub on loopback, decoded at the shipped LLaVA-Video config's sampling
(16 frames, stride 16, 4 fps, 224x224):

  feed     kaiod (train.backend "external", decode.workers = every core) and a
           consumer that does no work: windows/s delivered, and windows per
           CPU second of kaiod (the feed rate per core).
  standin  the same kaiod and a stand-in GPU trainer: the consumer sleeps a
           fixed step time per batch (no CPU), as a GPU step would. Figures:
           windows/s, the fraction of the time the stand-in waited for data,
           and the stage overlap (windows/s over the slower of the feed run's
           rate and the stand-in's batch per step, as bench/e2e.sh's pipeline
           efficiency).
  loop     the sequential Python loop people write today, with the same
           stand-in: download an archive (urllib), extract it (tarfile),
           decode its clips (PyAV, bench/e2e/baseline.py's decode_clip), sleep
           the step time per batch, delete, next archive.

The stand-in step time defaults to the batch's share of what kaiod fed in the
feed run, times 1.25 (a GPU a little slower than the feed), so that a pipeline
that overlaps its stages keeps it busy; KAIO_BENCH_FEED_STEP_S sets it.

The cores that keep a GPU at the `small` model's step rate fed: the model's
FLOPs per window (train/throughput.h's step_flops, from kaio_train_bench) at an assumed 40% of an
H200's 989 dense bf16 TFLOP/s, divided by the feed rate per core. No GPU step
was measured (no device was lent); the assumption is printed with the figure.

Usage: bench/feed.py BUILD_DIR -> bench/results/feed.json
  KAIO_BENCH_FEED_CLIPS (default 48), KAIO_BENCH_FEED_SECONDS (clip length,
  default 16: 4 windows a clip), KAIO_BENCH_FEED_BATCH (default 8)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import figures  # bench/figures.py, beside this script

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "bench", "e2e"))

SPEC = {"frames": 16, "stride": 16, "fps": 4.0, "size": 224, "codec_threads": 1}
ASSUMED_GPU_FLOPS = 0.40 * 989e12  # 40% MFU of an H200's dense bf16 peak: an assumption, not a measurement


def cpu_of(pid):
    """utime + stime of a live process, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average():
    return round(os.getloadavg()[0], 2)


def small_model_flops_per_window(build):
    """The trainer's own count (train/throughput.h's step_flops) for `small`
    on one window of the shipped config, from kaio_train_bench."""
    out = subprocess.run([os.path.join(build, "bench", "train", "kaio_train_bench"), "small", str(SPEC["frames"]),
                          str(SPEC["size"]), "1", "0", "1", "cpu"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["flops_per_window"]


def run_kaiod(a, hub, batch, step_s):
    """kaiod + a consumer sleeping step_s per batch (0: no work). Returns
    windows, wall seconds from kaiod's start, seconds the consumer waited for
    data after its first batch, kaiod's CPU seconds, load average."""
    import harness as h
    import kaio.torch

    name = "kaiod-%s" % ("standin" if step_s else "feed")
    kd = h.Kaiod(a, hub, name, epochs=1, budget="2GB", batch_size=batch)
    cfg = json.load(open(kd.config))
    cfg["decode"].update({k: SPEC[k] for k in ("frames", "stride", "fps", "size", "codec_threads")})
    cfg["decode"]["workers"] = os.cpu_count()
    json.dump(cfg, open(kd.config, "w"))
    t0 = time.monotonic()
    kd.start()
    ds = kaio.torch.KaioDataset(socket=kd.socket, consumer="bench", fields=("frames",))
    loader = kaio.torch.KaioLoader(ds, batch_size=batch, num_workers=0)
    n, waited, first = 0, 0.0, None
    it = iter(loader)
    while True:
        w0 = time.monotonic()
        try:
            b = next(it)
        except StopIteration:
            break
        if first is not None:
            waited += time.monotonic() - w0
        else:
            first = time.monotonic()
        n += b["frames"].shape[0]
        if step_s:
            time.sleep(step_s)
    wall = time.monotonic() - t0
    busy = time.monotonic() - (first or t0)
    cpu = cpu_of(kd.proc.pid)
    load = load_average()
    loader.commit(loader.state_dict())
    kd.stop()
    return {"windows": n, "wall_s": wall, "after_first_s": busy, "waited_s": waited, "kaiod_cpu_s": cpu, "load": load}


def run_loop(hub, work, batch, step_s):
    """The sequential loop, one archive at a time, with the same stand-in."""
    import baseline

    cache = os.path.join(work, "loop")
    files = sorted((f for f in baseline.list_files(hub.url, "kaio-test/data", "main") if f["path"].endswith(".tar.gz")),
                   key=lambda f: f["path"])
    t0 = time.monotonic()
    n, pending = 0, 0
    for f in files:
        os.makedirs(cache, exist_ok=True)
        archive = os.path.join(cache, "archive.tar.gz")
        baseline.download(hub.url, "kaio-test/data", "main", f["path"], archive)
        with tarfile.open(archive) as t:
            t.extractall(cache, **baseline.SAFE_EXTRACT)
        for dirpath, _, names in sorted(os.walk(cache)):
            for m in sorted(names):
                if not m.endswith(".mp4"):
                    continue
                for _ in baseline.decode_clip(os.path.join(dirpath, m), SPEC):
                    n += 1
                    pending += 1
                    if pending == batch:
                        time.sleep(step_s)
                        pending = 0
        shutil.rmtree(cache)
    if pending:
        time.sleep(step_s)
    return {"windows": n, "wall_s": time.monotonic() - t0, "load": load_average()}


def dataset(a, clips, seconds):
    repo = os.path.join(a.build, "bench-feed-data", "c%d-a4-s%d-r5" % (clips, seconds))
    if not os.path.exists(os.path.join(repo, ".complete")):
        os.makedirs(os.path.dirname(repo), exist_ok=True)
        subprocess.run([a.mkdata, "--layout", "llava", "--out", repo, "--seed", "5", "--clips", str(clips),
                        "--clips-per-archive", "4", "--seconds", str(seconds), "--width", "640", "--height", "360",
                        "--fps", "30"], check=True, stdout=subprocess.DEVNULL)
        open(os.path.join(repo, ".complete"), "w").close()
    return repo


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    build = os.path.abspath(p.parse_args().build)
    flops_per_window = small_model_flops_per_window(build)  # before the runs: a missing tool fails at once
    import torch

    torch.set_num_threads(1)
    import harness as h

    clips = int(os.environ.get("KAIO_BENCH_FEED_CLIPS", "48"))
    seconds = int(os.environ.get("KAIO_BENCH_FEED_SECONDS", "16"))
    batch = int(os.environ.get("KAIO_BENCH_FEED_BATCH", "8"))
    work = tempfile.mkdtemp(prefix="kaio-bench-feed-")
    try:
        a = argparse.Namespace(build=build, work=work, kaiod=os.path.join(build, "daemon", "kaiod"),
                               hub=os.path.join(build, "tools", "kaio-hub", "kaio-hub"),
                               mkdata=os.path.join(build, "tools", "kaio-mkdata", "kaio-mkdata"))
        hub = h.Hub(a, dataset(a, clips, seconds))
        feed = run_kaiod(a, hub, batch, 0)
        feed_rate = feed["windows"] / feed["after_first_s"]
        step_s = float(os.environ.get("KAIO_BENCH_FEED_STEP_S", "0") or 0) or 1.25 * batch / feed_rate
        standin = run_kaiod(a, hub, batch, step_s)
        loop = run_loop(hub, work, batch, step_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def r(x, d=3):
        return round(x, d)

    per_core = feed["windows"] / feed["kaiod_cpu_s"]
    gpu_windows_per_s = ASSUMED_GPU_FLOPS / flops_per_window
    kaio_rate = standin["windows"] / standin["wall_s"]
    loop_rate = loop["windows"] / loop["wall_s"]
    wait = standin["waited_s"] / standin["after_first_s"]
    # Stage overlap as in bench/e2e.sh: the pipeline's rate, start-up included,
    # over its slower stage alone (the feed, or the stand-in's batch per step).
    feed_alone, standin_alone = feed["windows"] / feed["wall_s"], batch / step_s
    slowest_alone = min(feed_alone, standin_alone)
    rows = [
        {"name": "feed: windows/s delivered to a consumer doing no work, %d decode workers (16x224x224 at 4 fps)"
                 % os.cpu_count(), "kaio": r(feed_rate, 2), "peer": None, "ratio": None, "unit": "windows/s",
         "load": feed["load"]},
        {"name": "feed per core: windows per CPU second of kaiod (fetch, extract, decode, shard writes)",
         "kaio": r(per_core, 2), "peer": None, "ratio": None, "unit": "windows/CPU s", "load": feed["load"]},
        {"name": "cores to feed the small model at an assumed %.0f TFLOP/s (40%% of an H200's bf16 peak; "
                 "no GPU step measured): %.0f windows/s" % (ASSUMED_GPU_FLOPS / 1e12, gpu_windows_per_s),
         "kaio": r(gpu_windows_per_s / per_core, 1), "peer": None, "ratio": None, "unit": "cores", "load": None},
        {"name": "stand-in GPU (%.3f s per batch of %d, no CPU): windows/s, kaiod against the sequential Python loop"
                 % (step_s, batch), "kaio": r(kaio_rate, 2), "peer": r(loop_rate, 2),
         "ratio": r(kaio_rate / loop_rate, 2), "unit": "windows/s", "goal": ">= 3.0",
         "load": [standin["load"], loop["load"]]},
        {"name": "stand-in GPU: stage overlap, kaiod's windows/s over its slower stage alone (feed %.2f, "
                 "stand-in %.2f windows/s)" % (feed_alone, standin_alone),
         "kaio": r(kaio_rate, 2), "peer": r(slowest_alone, 2), "ratio": r(kaio_rate / slowest_alone, 2),
         "unit": "windows/s", "goal": ">= 0.9", "load": standin["load"]},
        {"name": "stand-in GPU: fraction of the time after the first batch spent waiting for data (kaiod)",
         "kaio": r(wait, 3), "peer": None, "ratio": None, "unit": "fraction", "goal": "< 0.05",
         "load": standin["load"]},
    ]
    figures.emit("feed", rows, "windows: feed %d in %.1f s (kaiod CPU %.1f s), stand-in %d in %.1f s, "
                 "loop %d in %.1f s" % (feed["windows"], feed["wall_s"], feed["kaiod_cpu_s"], standin["windows"], standin["wall_s"],
        loop["windows"], loop["wall_s"]))

if __name__ == "__main__":
    main()
