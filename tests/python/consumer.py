"""A consumer for the tests: iterates KaioLoader and prints one JSON line per
batch (its windows, frame hashes, token), optionally under torch.distributed.
It does no training; it can sleep per step, commit, stop early and save or
load the loader's state.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import torch

import kaio.torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--consumer", required=True)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per step")
    p.add_argument("--commit-every", type=int, default=0)
    p.add_argument("--stop-after", type=int, default=0, help="steps (this run); 0: to the end")
    p.add_argument("--stop-in", help="E,S: stop after S steps of epoch E")
    p.add_argument("--epochs", type=int, default=0, help="epochs to run (0: until done)")
    p.add_argument("--state-in")
    p.add_argument("--state-out")
    p.add_argument("--hash", action="store_true", help="print each window's frames' sha256")
    p.add_argument("--dist", help="rank,world,port: torch.distributed with gloo on loopback")
    p.add_argument("--reconnect-timeout", type=float, default=60.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.dist:
        import torch.distributed as dist

        rank, world, port = (int(x) for x in a.dist.split(","))
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=world)

    ds = kaio.torch.KaioDataset(socket=a.socket, consumer=a.consumer, reconnect_timeout=a.reconnect_timeout)
    loader = kaio.torch.KaioLoader(ds, batch_size=a.batch_size, num_workers=a.workers)
    if a.state_in:
        with open(a.state_in) as f:
            loader.load_state_dict(json.load(f))
    steps = 0
    epochs = 0
    while not loader.done and not (a.epochs and epochs >= a.epochs):
        for batch in loader:
            m = batch["meta"]
            rec = {"step": steps + 1, "rank": ds.rank, "epoch": m["epoch"].tolist(), "index": m["index"].tolist(),
                   "global": m["global"].tolist(), "clip": m["clip"], "window": m["window"].tolist(),
                   "archive": m["archive"], "member": m["member"], "caption": batch["caption"],
                   "shape": list(batch["frames"].shape), "token": loader.state_dict()["token"]}
            if a.hash:
                rec["sha"] = [hashlib.sha256(f.numpy().tobytes()).hexdigest() for f in batch["frames"]]
            if a.dist:
                # A collective per step: a rank with fewer batches would hang here.
                t = torch.ones(1)
                torch.distributed.all_reduce(t)
                rec["reduced"] = t.item()
            steps += 1
            if a.commit_every and steps % a.commit_every == 0:
                loader.commit(loader.state_dict())
            print(json.dumps(rec), flush=True)
            if a.sleep:
                time.sleep(a.sleep)
            if a.stop_after and steps >= a.stop_after:
                break
            if a.stop_in:
                e, s = (int(x) for x in a.stop_in.split(","))
                if rec["epoch"][0] == e and rec["index"][-1] + 1 >= s * a.batch_size:
                    break
        else:
            epochs += 1
            if a.commit_every:
                loader.commit(loader.state_dict())  # the epoch's end: kaiod starts the next one after it
            print(json.dumps({"epoch_end": epochs, "token": loader.state_dict()["token"], "done": loader.done}),
                  flush=True)
            continue
        break
    state = loader.state_dict()
    if a.state_out:
        with open(a.state_out + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(a.state_out + ".tmp", a.state_out)
    print(json.dumps({"final": state["token"], "done": loader.done}), flush=True)
    if a.dist:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except kaio.torch.KaioError as e:
        print("consumer: %s" % e, file=sys.stderr)
        sys.exit(2)
