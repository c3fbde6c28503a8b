#!/usr/bin/env python3
"""examples/train_torch.py end to end through kaiod, under a budget a quarter
of the dataset's size.

kaiod (train.backend "external") fetches from kaio-hub on loopback, decodes
and budgets; the example trains on its data plane with 2 DataLoader workers,
checkpoints, commits, and kaiod deletes what the commits cover. Figures: the
peak disk under cache and state (du every 20 ms) and kaiod's peak reserved
bytes (its budget's own count, deleted-but-mapped shards included) against
the budget, the peak RSS of kaiod and of the consumer (the loop and its
workers together), steps and windows, wall time. No timed asserts.

Usage: bench/train_torch_e2e.py BUILD_DIR  -> bench/results/train_torch_e2e.json
  KAIO_BENCH_E2E_CLIPS (default 600: about 17 MB)
"""

import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import harness as h  # noqa: E402  (the Python tests' kaiod and kaio-hub helpers)


def du(*paths):
    total = 0
    for top in paths:
        for folder, _, files in os.walk(top):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    pass  # deleted between the listing and the stat
    return total


def rss_of_tree(pid):
    """Resident bytes of a process and its children (the DataLoader workers)."""
    total = 0
    for p in [pid] + children(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            direct = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return direct + [g for c in direct for g in children(c)]


def main():
    sys.argv[1:] = ["--build", sys.argv[1] if len(sys.argv) > 1 else "build-release"]
    a = h.args()
    h.need_torch()
    clips = int(os.environ.get("KAIO_BENCH_E2E_CLIPS", "600"))
    repo = h.dataset(a, clips=clips, per_archive=6)
    data_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(repo) for f in fs
                     if f.endswith(".tar.gz"))
    budget = max(data_bytes // 4, 4 << 20)
    hub = h.Hub(a, repo)
    kd = h.Kaiod(a, hub, "kaiod", epochs=1, budget=str(budget)).start()
    state_dir = os.path.join(kd.dir, "state")
    consumer = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "train_torch.py"), "--socket", kd.socket,
         "--ckpt-dir", os.path.join(a.work, "ckpt"), "--workers", "2", "--batch-size", "8",
         "--checkpoint-every", "4", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    peak = {"disk": 0, "kaiod_rss": 0, "consumer_rss": 0, "reserved": 0}
    done = threading.Event()

    def sample():
        n = 0
        while not done.is_set():
            n += 1
            if n % 25 == 0:  # status every 0.5 s: kaiod exits once done, so it is read while it runs
                st = kd.status()
                if st:
                    peak["reserved"] = max(peak["reserved"], st.get("peak_reserved_bytes", 0))
            peak["disk"] = max(peak["disk"], du(kd.cache, state_dir))
            peak["kaiod_rss"] = max(peak["kaiod_rss"], rss_of_tree(kd.proc.pid))
            peak["consumer_rss"] = max(peak["consumer_rss"], rss_of_tree(consumer.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    start = time.monotonic()
    sampler.start()
    lines = consumer.stdout.read().decode(errors="replace").splitlines()
    consumer.wait(timeout=1800)
    wall = time.monotonic() - start
    kd.proc.wait(timeout=120)  # kaiod stops once every epoch is committed
    done.set()
    sampler.join()
    steps = [ln for ln in lines if ln.startswith("step ")]
    h.check(consumer.returncode == 0, "train_torch.py failed:\n" + "\n".join(lines[-20:]))
    result = {"clips": clips, "dataset_bytes": data_bytes, "budget_bytes": budget, "peak_disk_bytes": peak["disk"],
              "peak_reserved_bytes": peak["reserved"], "kaiod_peak_rss_bytes": peak["kaiod_rss"],
              "consumer_peak_rss_bytes": peak["consumer_rss"], "steps": len(steps), "wall_s": round(wall, 1)}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "train_torch_e2e.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("train_torch e2e: dataset %.1f MB, budget %.1f MB: peak disk %.1f MB (du every 20 ms), peak reserved %s, "
          "kaiod RSS %.0f MB, consumer RSS %.0f MB (loop + 2 workers), %d steps in %.0f s"
          % (data_bytes / 1e6, budget / 1e6, peak["disk"] / 1e6,
             "%.1f MB" % (peak["reserved"] / 1e6) if peak["reserved"] else "-", peak["kaiod_rss"] / 1e6,
             peak["consumer_rss"] / 1e6, len(steps), wall))


if __name__ == "__main__":
    main()
