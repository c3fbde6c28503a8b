"""2 ranks x 2 DataLoader workers under torch.distributed (gloo, loopback).

Epoch 0: the ranks' windows are disjoint, complete (less the dropped tail,
N mod 2), each rank in its rank-local order g = j*2 + r, equal counts (a
collective per step would hang otherwise). Epoch 1: stopped after 2 steps,
state saved and committed, then resumed with 1 worker per rank: the two
parts together are again disjoint and complete, nothing repeated.
"""

import os
import socket
import sys

import harness as h

WORLD = 2


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ranks(a, kd, tag, workers, extra):
    port = free_port()
    procs = []
    for r in range(WORLD):
        args = [sys.executable, os.path.join(h.HERE, "consumer.py"), "--socket", kd.socket, "--consumer", "ddp",
                "--workers", str(workers), "--batch-size", "2", "--dist", "%d,%d,%d" % (r, WORLD, port)]
        args += [x.replace("RANK", str(r)) for x in extra]
        procs.append(h.Consumer(args, os.path.join(a.work, "%s-rank%d.out" % (tag, r))))
    return [h.records(p.finish(180)) for p in procs]


def windows(recs, epoch):
    return [(g, c, w, j) for r in recs if "step" in r
            for g, c, w, j, e in zip(r["global"], r["clip"], r["window"], r["index"], r["epoch"]) if e == epoch]


def check_epoch(parts, epoch, n_expected=None):
    per_rank = [windows(p, epoch) for p in parts]
    counts = [len(p) for p in per_rank]
    h.check(len(set(counts)) == 1, "epoch %d: ranks got %s windows, want equal counts" % (epoch, counts))
    for r, ws in enumerate(per_rank):
        for g, c, w, j in ws:
            h.check(g == j * WORLD + r, "epoch %d rank %d: window j=%d has global %d, want %d" % (
                epoch, r, j, g, j * WORLD + r))
        js = [j for _, _, _, j in ws]
        h.check(js == list(range(len(js))), "epoch %d rank %d: rank-local indices %s not 0.. in order" % (epoch, r, js))
    all_g = sorted(g for ws in per_rank for g, _, _, _ in ws)
    h.check(all_g == list(range(len(all_g))), "epoch %d: global indices not disjoint and complete: %s" % (epoch, all_g))
    keys = [(c, w) for ws in per_rank for _, c, w, _ in ws]
    h.check(len(set(keys)) == len(keys), "epoch %d: a window went to two ranks" % epoch)
    return len(all_g)


def main():
    a = h.args()
    h.need_torch()
    import torch.distributed as dist
    if not dist.is_available():
        h.skip("torch.distributed is not available in this torch")
    repo = h.dataset(a)
    hub = h.Hub(a, repo)
    kd = h.Kaiod(a, hub, "kaiod", epochs=2).start()
    state = os.path.join(a.work, "state-rankRANK.json")
    # Epoch 0 whole, then 2 steps of epoch 1; commit at each step.
    first = ranks(a, kd, "2w", 2, ["--stop-in", "1,2", "--commit-every", "1", "--state-out", state])
    n0 = check_epoch(first, 0)
    h.log("epoch 0: %d windows over %d ranks, disjoint and complete" % (n0, WORLD))
    h.check(n0 >= 8, "epoch 0 had only %d windows" % n0)
    second = ranks(a, kd, "1w", 1, ["--state-in", state, "--commit-every", "1"])
    both = [f + s for f, s in zip(first, second)]
    n1 = check_epoch(both, 1)
    h.check(n1 == n0, "epoch 1 across the resume: %d windows, epoch 0 had %d" % (n1, n0))
    for r in range(WORLD):
        h.check(windows(first[r], 1), "rank %d: the first run did not reach epoch 1" % r)
        h.check(windows(second[r], 1), "rank %d: the resumed run had nothing of epoch 1" % r)
    h.log("epoch 1 resumed with 1 worker: %d windows, disjoint and complete" % n1)
    kd.stop()
    h.log("ok")


if __name__ == "__main__":
    main()
