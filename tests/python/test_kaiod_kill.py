"""kill -9 of kaiod while a consumer (2 DataLoader workers) runs.

The consumer says on stderr that it waits for kaiod (bounded), and once kaiod
is started again it continues: every window of each epoch exactly once, in
plan order (global 0..N-1), nothing lost or repeated, and the end committed.
"""

import os

import harness as h


def main():
    a, _, kd = h.start(epochs=2)
    c = h.test_consumer(a, kd, "k9", ["--workers", "2", "--batch-size", "2", "--commit-every", "2", "--sleep", "0.1",
                                      "--reconnect-timeout", "60"], os.path.join(a.work, "consumer.out"))
    c.wait_line("step 3", lambda l: l.startswith('{"step": 3,'), 120)
    kd.kill9()
    h.log("kaiod killed after the consumer's step 3")
    h.wait_until("the consumer's message that it waits for kaiod",
                 lambda: "waiting up to" in c.stderr(), 60, c.proc)
    h.check(c.proc.poll() is None, "the consumer ended while kaiod was down")
    kd.start()
    h.log("kaiod started again")
    recs = h.records(c.finish(180))
    waits = [l for l in c.stderr().splitlines() if "waiting up to" in l]
    h.log("consumer said: %s" % waits[0])
    batches = [r for r in recs if "step" in r]
    final = [r for r in recs if "final" in r]
    h.check(final and final[0]["final"] == {"epoch": 2, "window": 0} and final[0]["done"],
            "consumer ended at %s, want epoch 2 window 0 and done" % final)
    for e in range(2):
        g = [x for r in batches for x, ep in zip(r["global"], r["epoch"]) if ep == e]
        h.check(g == list(range(len(g))) and len(g) > 0,
                "epoch %d: global indices %s, want 0..N-1 once each in order" % (e, g))
    n = len([1 for r in batches for ep in r["epoch"] if ep == 0])
    h.check(n == len([1 for r in batches for ep in r["epoch"] if ep == 1]), "epochs differ in length")
    h.commit_end(kd, "k9", {"epoch": 2, "window": 0})  # the consumer committed it: a no-op, or kaiod is done
    kd.stop()
    h.log("ok: %d windows per epoch, none lost or repeated across the kaiod restart" % n)


if __name__ == "__main__":
    main()
