"""kill -9 of the consumer (examples/train_torch.py) at progress points.

An uninterrupted run (0 workers) against one kaiod; against a second kaiod
with fresh state, a run killed with SIGKILL after it printed given steps and
started again from its own checkpoint each time (2 workers, then 1, then 2).
The last word on every step (a step after the last checkpoint is trained
again) gives every window exactly once, in the uninterrupted run's order,
with the same loss at every step; kaiod's committed token ends at the end.
"""

import os
import re
import sys

import harness as h

EPOCHS = 2


def example(a, kd, tag, workers, ckpt, trace):
    return h.Consumer([sys.executable, os.path.join(h.SOURCE, "examples", "train_torch.py"), "--socket", kd.socket,
                       "--consumer", "clipnet", "--ckpt-dir", ckpt, "--workers", str(workers), "--batch-size", "4",
                       "--checkpoint-every", "3", "--trace", trace, "--threads", "1"],
                      os.path.join(a.work, tag + ".out"))


def replay(trace):
    """{step: (loss, windows)}: the last word on each step."""
    steps = {}
    for line in open(trace):
        m = re.match(r"step (\d+) loss (\S+) windows (.*)$", line.strip())
        h.check(m, "bad trace line %r" % line)
        steps[int(m.group(1))] = (m.group(2), m.group(3).split())
    return steps


def main():
    a = h.args()
    h.need_torch()
    repo = h.dataset(a)
    hub = h.Hub(a, repo)

    ref_kd = h.Kaiod(a, hub, "kaiod-ref", epochs=EPOCHS).start()
    ref_trace = os.path.join(a.work, "ref.trace")
    ref = example(a, ref_kd, "ref", 0, os.path.join(a.work, "ckpt-ref"), ref_trace)
    lines = ref.finish(180)
    h.check(lines and lines[-1].startswith("done:"), "uninterrupted run did not end with done: %s" % lines[-3:])
    ref_kd.stop()
    want = replay(ref_trace)
    h.log("uninterrupted: %d steps" % len(want))
    h.check(len(want) >= 8, "only %d steps in the uninterrupted run" % len(want))

    kd = h.Kaiod(a, hub, "kaiod-kill", epochs=EPOCHS).start()
    trace = os.path.join(a.work, "kill.trace")
    ckpt = os.path.join(a.work, "ckpt-kill")
    # Kill points: after a checkpoint's step plus one (work to redo), and in
    # the second epoch; then run to the end.
    kill_after = [4, len(want) * 3 // 4]
    workers = [2, 1, 2]
    kills = 0
    for life, w in enumerate(workers):
        c = example(a, kd, "life%d" % life, w, ckpt, trace)
        if life < len(kill_after):
            target = kill_after[life]
            line = c.wait_line("step %d of life %d" % (target, life),
                               lambda l: l.startswith("step ") and int(l.split()[1]) >= target, 180)
            c.kill9()
            kills += 1
            h.log("life %d killed after %r" % (life, line))
        else:
            lines = c.finish(180)
            h.check(lines[-1].startswith("done:"), "last life did not end with done: %s" % lines[-3:])
            resumed = [l for l in lines if l.startswith("resumed at step")]
            h.check(resumed, "the last life did not resume from a checkpoint")
    got = replay(trace)
    h.check(sorted(got) == sorted(want), "steps %s, uninterrupted %s" % (sorted(got), sorted(want)))
    for step in sorted(want):
        h.check(got[step][1] == want[step][1], "step %d trained windows %s, uninterrupted %s" % (
            step, got[step][1], want[step][1]))
        h.check(got[step][0] == want[step][0], "step %d loss %s, uninterrupted %s" % (step, got[step][0], want[step][0]))
    windows = [w for s in sorted(got) for w in got[s][1]]
    per_epoch = len(windows) // EPOCHS
    for e in range(EPOCHS):
        ep = windows[e * per_epoch:(e + 1) * per_epoch]
        h.check(len(set(ep)) == len(ep), "epoch %d has a window twice" % e)
    st = kd.status()
    if st and "consumers" in st:
        h.log("kaiod consumers: %s" % st["consumers"])
    kd.stop()
    h.log("ok: %d kills, %d steps, losses equal" % (kills, len(got)))


if __name__ == "__main__":
    main()
