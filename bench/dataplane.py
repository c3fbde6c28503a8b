#!/usr/bin/env python3
"""The data plane against the way people feed PyTorch today.

kaio: kaiod (train.backend "external", decode.workers K) fetching from
kaio-hub on loopback and decoding, a KaioLoader with K workers, a loop that
does no work. Peer: a torch DataLoader with K workers decoding the same clips
from local mp4 files with PyAV at the same sampling (decode.fps, frames,
stride, size x size RGB), the same loop. Figures: windows/s delivered to the
loop, CPU seconds per window (kaiod and the consumer's processes together
for kaio), and the consumer's own CPU seconds per window. No timed asserts.

Usage: bench/dataplane.py BUILD_DIR  -> bench/results/dataplane.json
  KAIO_BENCH_DP_CLIPS (default 24), KAIO_BENCH_DP_WORKERS (default 2)
"""

import json
import os
import resource
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

FRAMES, STRIDE, FPS, SIZE, BATCH = 8, 8, 4.0, 64, 8


def cpu_of(pid):
    """utime + stime of a live process, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_kaio(a, hub, workers, torch):
    import harness as h
    import kaio.torch

    kd = h.Kaiod(a, hub, "kaiod", epochs=1, budget="2GB", batch_size=BATCH)
    cfg = json.load(open(kd.config))
    cfg["decode"].update({"frames": FRAMES, "stride": STRIDE, "fps": FPS, "size": SIZE, "workers": workers})
    json.dump(cfg, open(kd.config, "w"))
    t0 = time.monotonic()
    kd.start()
    c0 = own_cpu()
    ds = kaio.torch.KaioDataset(socket=kd.socket, consumer="bench", fields=("frames",))
    loader = kaio.torch.KaioLoader(ds, batch_size=BATCH, num_workers=workers)
    n = 0
    for batch in loader:
        n += batch["frames"].shape[0]
    elapsed = time.monotonic() - t0
    consumer_cpu = own_cpu() - c0
    kaiod_cpu = cpu_of(kd.proc.pid)
    loader.commit(loader.state_dict())
    kd.stop()
    return n, elapsed, kaiod_cpu + consumer_cpu, consumer_cpu


def peer_windows(path):
    """A clip's windows as PyAV decodes them: frames at t = k / FPS, SIZE x SIZE RGB."""
    import av
    import numpy as np

    picked = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        want = 0.0
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t + 1e-6 >= want:
                picked.append(frame.to_ndarray(width=SIZE, height=SIZE, format="rgb24"))
                want += 1.0 / FPS
    out = []
    for start in range(0, len(picked) - FRAMES + 1, STRIDE):
        out.append(np.stack(picked[start:start + FRAMES]))
    return out


def run_peer(files, workers, torch):
    import torch.utils.data as tud

    class Clips(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            k, n = (info.id, info.num_workers) if info else (0, 1)
            for i in range(k, len(files), n):
                for w in peer_windows(files[i]):
                    yield torch.from_numpy(w)

    t0, c0 = time.monotonic(), own_cpu()
    n = 0
    for batch in tud.DataLoader(Clips(), batch_size=BATCH, num_workers=workers):
        n += batch.shape[0]
    return n, time.monotonic() - t0, own_cpu() - c0


def main():
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("build")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    import harness as h

    clips = int(os.environ.get("KAIO_BENCH_DP_CLIPS", "24"))
    workers = int(os.environ.get("KAIO_BENCH_DP_WORKERS", "2"))
    work = tempfile.mkdtemp(prefix="kaio-bench-dp-")
    try:
        a = argparse.Namespace(build=os.path.abspath(args.build), work=work,
                               kaiod=os.path.join(args.build, "daemon", "kaiod"),
                               hub=os.path.join(args.build, "tools", "kaio-hub", "kaio-hub"),
                               mkdata=os.path.join(args.build, "tools", "kaio-mkdata", "kaio-mkdata"))
        key = "c%d-a4-s8-r1" % clips
        repo = os.path.join(a.build, "bench-dataplane-data", key)
        if not os.path.exists(os.path.join(repo, ".complete")):
            os.makedirs(os.path.dirname(repo), exist_ok=True)
            subprocess.run([a.mkdata, "--layout", "llava", "--out", repo, "--seed", "1", "--clips", str(clips),
                            "--clips-per-archive", "4", "--seconds", "8", "--width", "640", "--height", "360",
                            "--fps", "30"], check=True, stdout=subprocess.DEVNULL)
            open(os.path.join(repo, ".complete"), "w").close()
        # The peer reads the same clips as local files (extracted, untimed).
        local = os.path.join(work, "local")
        files = []
        for dirpath, _, names in sorted(os.walk(repo)):
            for name in sorted(names):
                if name.endswith(".tar.gz"):
                    with tarfile.open(os.path.join(dirpath, name)) as t:
                        t.extractall(local)
        for dirpath, _, names in sorted(os.walk(local)):
            files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".mp4")]

        hub = h.Hub(a, repo)
        kn, kt, kcpu, kcons = run_kaio(a, hub, workers, torch)
        pn, pt, pcpu = run_peer(files, workers, torch)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def r(x, d=3):
        return round(x, d)

    rows = [
        {"name": "data plane windows/s, %d workers, loop does no work (kaio cold: fetch+decode included)" % workers,
         "kaio": r(kn / kt, 1), "peer": r(pn / pt, 1), "ratio": r((kn / kt) / (pn / pt), 2), "unit": "windows/s",
         "goal": ">= 2.0"},
        {"name": "data plane CPU s per window (kaio: kaiod + consumer; peer: DataLoader + PyAV workers)",
         "kaio": r(kcpu / kn, 4), "peer": r(pcpu / pn, 4), "ratio": r((kcpu / kn) / (pcpu / pn), 2), "unit": "s",
         "goal": "<= 1.0"},
        {"name": "data plane consumer-side CPU s per window (KaioLoader and its workers)",
         "kaio": r(kcons / kn, 5), "peer": None, "ratio": None, "unit": "s", "goal": "small"},
    ]
    figures.emit("dataplane", rows, "windows: kaio %d in %.2f s, peer %d in %.2f s" % (kn, kt, pn, pt))

if __name__ == "__main__":
    main()
