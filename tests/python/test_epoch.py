"""One epoch through the external backend with KaioLoader, num_workers 0 and 2.

Every window of every shard exactly once, in plan order (global index 0..N-1,
the same sequence for 0 and 2 workers), captions attached, frames identical
to the shard file's bytes; once both consumer groups commit the end of the
epoch, kaiod deletes the shards.
"""

import os

import harness as h


def run_consumer(a, kd, name, workers):
    c = h.test_consumer(a, kd, name, ["--workers", str(workers), "--batch-size", "4", "--hash", "--epochs", "1"])
    return h.records(c.finish(120))


def main():
    a, _, kd = h.start(epochs=1)
    h.log("kaiod up")
    runs = {}
    for workers in (0, 2):
        name = "w%d" % workers
        recs = run_consumer(a, kd, name, workers)
        h.log("consumer %s: %d records" % (name, len(recs)))
        runs[workers] = recs
    # Nothing is committed yet, so every shard is still on disk.
    shards = h.read_shards(kd.cache)
    h.check(shards, "no shard files under %s/work" % kd.cache)
    n = len(shards)
    for workers, recs in runs.items():
        batches = [r for r in recs if "step" in r]
        ends = [r for r in recs if "epoch_end" in r]
        h.check(len(ends) == 1 and ends[0]["token"] == {"epoch": 1, "window": 0},
                "workers %d: epoch end token %s, want epoch 1 window 0" % (workers, ends))
        glob = [g for r in batches for g in r["global"]]
        h.check(glob == list(range(n)),
                "workers %d: global indices %s, want 0..%d in order" % (workers, glob, n - 1))
        idx = [j for r in batches for j in r["index"]]
        h.check(idx == glob, "workers %d: world 1 has rank-local index == global: %s" % (workers, idx))
        keys = [(ar, me, w) for r in batches for ar, me, w in zip(r["archive"], r["member"], r["window"])]
        h.check(len(set(keys)) == len(keys), "workers %d: a window came twice" % workers)
        h.check(set(keys) == set(shards), "workers %d: windows delivered %d, shards hold %d; missing %s extra %s" % (
            workers, len(keys), n, sorted(set(shards) - set(keys))[:5], sorted(set(keys) - set(shards))[:5]))
        for r in batches:
            h.check(r["shape"][0] == len(r["global"]) and r["shape"][2:] == [32, 32, 3],
                    "batch shape %s (want [B, 8, 32, 32, 3])" % r["shape"])
            for ar, me, w, sha, cap in zip(r["archive"], r["member"], r["window"], r["sha"], r["caption"]):
                want = shards[(ar, me, w)]
                h.check(sha == want["sha"], "frames of %s %s window %d differ from the shard file" % (ar, me, w))
                h.check(cap == want["caption"], "caption of %s %s window %d: %r, shard has %r" % (
                    ar, me, w, cap, want["caption"]))
        h.check(sum(1 for r in batches for c in r["caption"] if c) == n,
                "workers %d: some windows have no caption" % workers)
    order0 = [(r["clip"], r["window"]) for r in runs[0] if "step" in r]
    order2 = [(r["clip"], r["window"]) for r in runs[2] if "step" in r]
    h.check(order0 == order2, "the plan order differs between 0 and 2 workers")
    h.log("%d windows checked against %d shards" % (n, len(os.listdir(os.path.join(kd.cache, "work")))))

    # Both groups commit the end of the epoch: the shards may go now.
    for name in ("w0", "w2"):
        h.commit_end(kd, name, {"epoch": 1, "window": 0})
    h.wait_until("shards deleted after both groups committed",
                 lambda: not [f for f in os.listdir(os.path.join(kd.cache, "work")) if f.endswith(".shard")], 30)
    kd.stop()
    h.log("ok")


if __name__ == "__main__":
    main()
